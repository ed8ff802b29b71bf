package discord

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/subrole/subrole"
)

// JoinRecorder is where member joins go; *subrole.Service implements it.
type JoinRecorder interface {
	// MemberJoined records a join and decides the member's outreach.
	MemberJoined(ctx context.Context, j subrole.MemberJoin) (subrole.JoinOutcome, error)
	// BeginJoinCatchUp and CatchUpJoins find the joins a new gateway
	// session missed, against the member list.
	BeginJoinCatchUp(ctx context.Context) (subrole.JoinCatchUp, error)
	CatchUpJoins(ctx context.Context, c subrole.JoinCatchUp, members []subrole.MemberJoin) (int, error)
}

// Outreach is the Discord side of member outreach: it reports members who
// join the guild (GUILD_MEMBER_ADD, which needs the Server Members intent)
// to the core, and sends the core's outreach DMs. It implements
// subrole.Messenger.
type Outreach struct {
	// Bot is the Discord session. Required.
	Bot *Bot
	// Joins receives member joins. Nil ignores them (the Messenger side
	// still works).
	Joins JoinRecorder
	// Logger receives logs. Nil discards them.
	Logger *slog.Logger

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
	// stopCtx ends a catch-up in progress at Close.
	stopCtx context.Context
	stop    context.CancelFunc
	// catchUpMu runs catch-ups one at a time.
	catchUpMu sync.Mutex
}

var _ subrole.Messenger = (*Outreach)(nil)

func (o *Outreach) log() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o.Logger
}

// Attach adds the gateway handlers to the session: GUILD_MEMBER_ADD, and
// READY, which starts a catch-up of the joins a lost session missed. Call
// it before Bot.Open.
func (o *Outreach) Attach() {
	o.Bot.Session.AddHandler(func(_ *discordgo.Session, m *discordgo.GuildMemberAdd) {
		if m.Member == nil || m.User == nil || m.GuildID != o.Bot.GuildID || o.Joins == nil || !o.enter() {
			return
		}
		defer o.inflight.Done()
		o.joined(subrole.MemberJoin{DiscordUserID: m.User.ID, Bot: m.User.Bot, JoinedAt: m.JoinedAt})
	})
	// READY starts a new session (a RESUME is answered with RESUMED and
	// the missed events instead): whatever happened since the last one
	// was not delivered.
	o.Bot.Session.AddHandler(func(_ *discordgo.Session, _ *discordgo.Ready) {
		if o.Joins == nil || !o.enter() {
			return
		}
		o.mu.Lock()
		if o.stop == nil {
			o.stopCtx, o.stop = context.WithCancel(context.Background())
		}
		ctx := o.stopCtx
		o.mu.Unlock()
		go func() {
			defer o.inflight.Done()
			o.catchUp(ctx)
		}()
	})
}

// enter reports whether a handler may run, counting it in inflight.
func (o *Outreach) enter() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	o.inflight.Add(1)
	return true
}

// catchUp lists the members once a new session is READY and hands them to
// the core, which records as joins those who joined while no session was
// there to hear it. A failure is retried with backoff for a while; after
// that the next session tries again (the watermark has not moved).
func (o *Outreach) catchUp(ctx context.Context) {
	o.catchUpMu.Lock() // two READYs in a row: one catch-up after the other
	defer o.catchUpMu.Unlock()
	log := o.log().With("guild", o.Bot.GuildID)
	wait := time.Second
	for attempt := 1; ; attempt++ {
		queued, listed, err := o.catchUpOnce(ctx)
		switch {
		case err == nil:
			if listed {
				log.Info("discord: new gateway session: checked the member list for joins missed without one", "queued", queued)
			}
			return
		case ctx.Err() != nil:
			return
		case attempt == 5:
			log.Error("discord: catching up on the joins missed without a gateway session failed; the next session tries again", "err", err)
			return
		}
		log.Warn("discord: catching up on missed joins failed; retrying", "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		wait *= 4
	}
}

// catchUpOnce runs one catch-up and reports how many joins it queued
// outreach for, and whether it listed the members at all.
func (o *Outreach) catchUpOnce(ctx context.Context) (int, bool, error) {
	c, err := o.Joins.BeginJoinCatchUp(ctx)
	if err != nil || !c.Needed {
		return 0, false, err
	}
	var members []subrole.MemberJoin
	after := ""
	for {
		page, err := o.Bot.Session.GuildMembers(o.Bot.GuildID, after, 1000, discordgo.WithContext(ctx))
		if err != nil {
			return 0, false, fmt.Errorf("discord: list members of guild %s: %w", o.Bot.GuildID, err)
		}
		for _, m := range page {
			if m.User == nil {
				continue
			}
			after = m.User.ID
			if m.JoinedAt.After(c.Since) {
				members = append(members, subrole.MemberJoin{DiscordUserID: m.User.ID, Bot: m.User.Bot, JoinedAt: m.JoinedAt})
			}
		}
		if len(page) < 1000 {
			break
		}
	}
	queued, err := o.Joins.CatchUpJoins(ctx, c, members)
	return queued, true, err
}

// joined hands a join to the core, retrying a failed commit a few times:
// the gateway does not deliver the event again.
func (o *Outreach) joined(j subrole.MemberJoin) {
	log := o.log().With("discord_user", j.DiscordUserID, "guild", o.Bot.GuildID)
	wait := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := o.Joins.MemberJoined(ctx, j)
		cancel()
		if err == nil {
			log.Debug("discord: member joined", "outreach", string(out))
			return
		}
		if attempt == 3 {
			log.Error("discord: recording a member's join failed; they get no welcome DM", "err", err)
			return
		}
		time.Sleep(wait)
		wait *= 2
	}
}

// Close stops handling joins, ends a catch-up in progress and waits for
// the joins being recorded.
func (o *Outreach) Close() {
	o.mu.Lock()
	o.closed = true
	if o.stop != nil {
		o.stop()
	}
	o.mu.Unlock()
	o.inflight.Wait()
}

// SendOutreach DMs a member the message of kind k (OutreachText). A member
// who does not accept DMs fails with an error wrapping subrole.ErrDMClosed
// (and ErrDMClosed); a rate limit with a *subrole.RetryAfterError.
func (o *Outreach) SendOutreach(ctx context.Context, discordUserID string, k subrole.OutreachKind) error {
	text := OutreachText(k, o.Bot.GuildID)
	if text == "" {
		return fmt.Errorf("discord: no outreach message of kind %q", k)
	}
	err := o.Bot.DM(ctx, discordUserID, text)
	var rl *discordgo.RateLimitError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrDMClosed):
		return fmt.Errorf("%w: %w", subrole.ErrDMClosed, err)
	case errors.As(err, &rl):
		return &subrole.RetryAfterError{After: rl.RetryAfter, Err: err}
	}
	return err
}

// InGuild reports whether the user is a member of the guild now
// (GET /guilds/{guild}/members/{user}).
func (o *Outreach) InGuild(ctx context.Context, discordUserID string) (bool, error) {
	_, err := o.Bot.Session.GuildMember(o.Bot.GuildID, discordUserID, discordgo.WithContext(ctx))
	switch c := code(err); {
	case err == nil:
		return true, nil
	case c == discordgo.ErrCodeUnknownMember, c == discordgo.ErrCodeUnknownUser:
		return false, nil
	}
	var rl *discordgo.RateLimitError
	if errors.As(err, &rl) {
		return false, &subrole.RetryAfterError{After: rl.RetryAfter, Err: err}
	}
	return false, fmt.Errorf("discord: read member %s: %w", discordUserID, err)
}

// OutreachText is the DM of each outreach kind ("" for an unknown kind).
// guildID makes a link that opens the server, which works whenever it is
// clicked (a /link button's state would have expired).
func OutreachText(k subrole.OutreachKind, guildID string) string {
	server := "https://discord.com/channels/" + guildID
	switch k {
	case subrole.OutreachWelcome:
		return "Welcome to the server!\n" +
			"If you subscribe to the channel on Twitch, link your Twitch account and your subscriber role arrives by itself " +
			"within seconds, then follows your subscription (a new tier, a resub, an ending sub) without anyone having to check.\n" +
			"To link, run **/link** in the server (<" + server + ">) and press the button. " +
			"It takes a minute; the server only learns your Twitch account and whether you subscribe."
	case subrole.OutreachFollowUp:
		return "A reminder from the server: your Twitch account is not linked yet, so subscriber roles cannot reach you.\n" +
			"Run **/link** in the server (<" + server + ">) whenever you like and press the button. This is the only reminder."
	case subrole.OutreachRelink:
		return "Please relink your Twitch account this month: run **/link** in the server (<" + server + ">) and press the button.\n" +
			"The server cannot check subscriptions with Twitch by itself at the moment; relinking keeps your subscriber roles right."
	}
	return ""
}
