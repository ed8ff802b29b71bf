package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch"
	"github.com/subrole/subrole/web"
)

// linking is member linking wired together: the Twitch client, Discord's
// OAuth2 (which confirms in the member's browser who ran /link), the
// broadcaster's token, the OAuth pages and the slash commands.
type linking struct {
	twitch      *twitch.Client
	discord     *discord.OAuth
	broadcaster *twitch.Broadcaster
	pages       *web.Handler
	commands    *discord.Commands
	// onBroadcasterConnected, if set before serving, runs after the
	// broadcaster authorized subrole (EventSub re-sync, reconcile).
	onBroadcasterConnected func()
	// dashboardStatus, if set before serving, gives the dashboard's status
	// lines (EventSub, readiness warnings).
	dashboardStatus func() []string
	// dms are the link summaries being sent, waited for by close; once
	// dmsClosed is set (under dmsMu) no new one starts.
	dmsMu     sync.Mutex
	dmsClosed bool
	dms       sync.WaitGroup
}

// sendDM runs send in the background unless close has begun, and reports
// whether it did.
func (lk *linking) sendDM(send func()) bool {
	lk.dmsMu.Lock()
	defer lk.dmsMu.Unlock()
	if lk.dmsClosed {
		return false
	}
	lk.dms.Go(send)
	return true
}

// close stops the interaction handlers and waits for link summaries being
// sent, so nothing uses the session or the store after they close. A
// callback that completes a link after this (only if the HTTP shutdown gave
// up waiting for it) sends no summary.
func (lk *linking) close() {
	lk.commands.Close()
	lk.dmsMu.Lock()
	lk.dmsClosed = true
	lk.dmsMu.Unlock()
	lk.dms.Wait()
}

// newLinking wires member linking. onBadRequest, if set, receives every
// refused callback (the ban layer). It reads the Discord application's id
// and checks SUBROLE_DISCORD_CLIENT_SECRET with Discord: a rejected secret
// stops the start.
func newLinking(ctx context.Context, cfg *config, log *slog.Logger, svc *subrole.Service, db *store.Store, bot *discord.Bot,
	onBadRequest func(*http.Request, string), onConnect func(*http.Request)) (*linking, error) {
	tc, err := twitch.New(twitch.Config{
		ClientID:     cfg.TwitchClientID,
		ClientSecret: cfg.TwitchClientSecret,
		AuthURL:      cfg.TwitchAuthURL,
		APIURL:       cfg.TwitchAPIURL,
		// Helix's window lasts a minute: a reconcile of 100,000s of
		// subscribers (800 requests a minute) waits it out rather than fail.
		// Members' own checks use their own tokens and never wait.
		MaxRateWait: 70 * time.Second,
		Now:         svc.Now,
		Logger:      log,
	})
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	dc, err := discord.NewOAuth(octx, discord.OAuthConfig{Origin: cfg.DiscordURL, BotToken: cfg.DiscordToken,
		ClientSecret: cfg.DiscordClientSecret})
	if err != nil {
		return nil, err
	}
	lk := &linking{twitch: tc, discord: dc}
	notifier := &discord.Notifier{Bot: bot, Audit: svc.RecordAudit, Logger: log}
	pages, err := web.New(web.Config{
		Core:          svc,
		Discord:       dc,
		Twitch:        tc,
		PublicURL:     cfg.PublicURL.String(),
		BroadcasterID: cfg.TwitchBroadcasterID,
		RoleNames:     bot.RoleNames,
		OnBadRequest:  onBadRequest,
		OnConnect:     onConnect,
		OnLinked: func(res subrole.LinkResult, _ string) {
			if !cfg.LinkDM {
				return
			}
			sent := lk.sendDM(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				notifier.Linked(ctx, res)
			})
			if !sent {
				log.Warn("discord: shutting down; the link summary DM is not sent", "discord_user", res.Link.DiscordUserID)
			}
		},
		OnBroadcasterConnected: func(tok subrole.BroadcasterToken) {
			lk.broadcaster.Connected(tok)
			if lk.onBroadcasterConnected != nil {
				lk.onBroadcasterConnected()
			}
		},
		Logger: log,

		Dashboard:      svc,
		DashboardUsers: cfg.DashboardUsers,
		AuditCommitted: db.AuditCommitted(),
		DashboardStatus: func() []string {
			if lk.dashboardStatus == nil {
				return nil
			}
			return lk.dashboardStatus()
		},
	})
	if err != nil {
		return nil, err
	}
	lk.pages = pages
	switch err := dc.CheckSecret(octx, pages.DiscordRedirectURI()); {
	case errors.Is(err, discord.ErrOAuthInvalidClient):
		return nil, fmt.Errorf("SUBROLE_DISCORD_CLIENT_SECRET: Discord rejected the client id %s with this secret (%v): "+
			"copy the Client Secret from the Discord Developer Portal > your application > OAuth2", dc.ClientID(), err)
	case err != nil:
		log.Warn("discord: could not check SUBROLE_DISCORD_CLIENT_SECRET at start; a wrong one shows when members /link", "err", err)
	}
	lk.broadcaster = twitch.NewBroadcaster(twitch.BroadcasterConfig{
		Client:        tc,
		Store:         db,
		BroadcasterID: cfg.TwitchBroadcasterID,
		ConnectURL:    pages.ConnectURL(),
		Now:           svc.Now,
		Logger:        log,
	})
	lk.commands = &discord.Commands{
		Bot:     bot,
		Members: svc,
		Links:   pages,
		Resync: func(ctx context.Context, discordUserID string) (subrole.Member, error) {
			return svc.Resync(ctx, lk.broadcaster, discordUserID)
		},
		Logger: log,
	}
	return lk, nil
}

// mount adds the pages' routes to mux-style registration.
func (lk *linking) mount(handle func(path string, h http.HandlerFunc, methods ...string)) {
	handle(web.LinkStartPath, lk.pages.LinkStart, http.MethodGet)
	handle(web.DiscordCallbackPath, lk.pages.DiscordCallback, http.MethodGet)
	handle(web.CallbackPath, lk.pages.Callback, http.MethodGet)
	handle(web.ConnectPath, lk.pages.Connect, http.MethodGet)
	handle(web.StylePath, lk.pages.Style, http.MethodGet, http.MethodHead)
	handle(web.DashboardPath, lk.pages.Dashboard, http.MethodGet)
	handle(web.DashboardLoginPath, lk.pages.DashboardLogin, http.MethodGet)
	handle(web.DashboardLogoutPath, lk.pages.DashboardLogout, http.MethodPost)
	handle(web.DashboardEventsPath, lk.pages.DashboardEvents, http.MethodGet)
	handle(web.ScriptPath, lk.pages.Script, http.MethodGet, http.MethodHead)
}
