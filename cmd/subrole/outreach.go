package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord"
	"github.com/subrole/subrole/twitch"
)

// outreach is member outreach wired together: the Discord adapter reports
// joins to the core and sends its DMs; the core's RunOutreach schedules them.
type outreach struct {
	svc         *subrole.Service
	discord     *discord.Outreach
	broadcaster *twitch.Broadcaster
}

// newOutreach wires outreach; attach its gateway handler before the bot opens.
func newOutreach(log *slog.Logger, svc *subrole.Service, bot *discord.Bot, broadcaster *twitch.Broadcaster) *outreach {
	return &outreach{svc: svc, broadcaster: broadcaster, discord: &discord.Outreach{Bot: bot, Joins: svc, Logger: log}}
}

// run sends the outreach DMs until ctx is done.
func (o *outreach) run(ctx context.Context) error {
	return o.svc.RunOutreach(ctx, subrole.OutreachRunner{Messenger: o.discord, BroadcasterConnected: o.broadcasterConnected})
}

// broadcasterConnected reports whether reconcile passes can run: the
// broadcaster has authorized subrole with the subscriptions scope. Twitch
// being unreachable for a moment counts as connected: it is no reason to
// ask every member to relink.
func (o *outreach) broadcasterConnected(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	o.broadcaster.Token(ctx) // loads the stored token, refreshes it if due
	switch o.broadcaster.Status().State {
	case twitch.StateNotConnected, twitch.StateRevoked, twitch.StateMissingScope:
		return false
	}
	return true
}
