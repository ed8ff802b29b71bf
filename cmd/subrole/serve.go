package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord"
	"github.com/subrole/subrole/eventsub"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch"
)

// hooks let the demo, tests and benchmarks observe the running service
// without changing its wiring.
type hooks struct {
	// listener, if set, is used instead of listening on SUBROLE_LISTEN.
	listener net.Listener
	// opened is called with the store once it is open (benchmarks and
	// drills inspect the inbox and outbox through it).
	opened func(*store.Store)
	// started is called with the core service before the listener serves.
	started func(*subrole.Service)
	// listening is called with the HTTP address once the listener is open.
	listening func(addr string)
	// applied is called after the role applier handles a member.
	applied func(discord.Applied)
	// acmeClient, if set, talks to the ACME CA (tests trust their
	// in-process CA with it).
	acmeClient *http.Client
	// timeouts, if not zero, replace the server timeouts (slow-client tests).
	timeouts serverTimeouts
	// now, if set, is the core's clock (outreach tests pin it).
	now func() time.Time
}

// newLogger returns the service logger described by cfg.
func newLogger(cfg *config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the service until ctx is done: it opens the store, checks and
// connects Discord, and serves HTTP. Any start-up failure is returned before
// the listener opens.
func serve(ctx context.Context, cfg *config, log *slog.Logger, h hooks) (err error) {
	db, err := store.Open(cfg.Data, store.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := db.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()

	if h.opened != nil {
		h.opened(db)
	}
	fe, err := newFrontend(ctx, cfg, log, db, h) // the guard with its bans, the certificate source
	if err != nil {
		return err
	}
	heal := newHealing() // EventSub subscriptions and reconcile (eventsub_sync.go)
	svc := subrole.NewService(subrole.Config{Store: db, Policy: cfg.Policy, Logger: log, OnRevocation: heal.revoked,
		Outreach: cfg.Outreach, Now: h.now})

	bot, err := discord.New(ctx, discord.Config{
		Token:        cfg.DiscordToken,
		GuildID:      cfg.DiscordGuildID,
		Origin:       cfg.DiscordURL,
		ManagedRoles: cfg.roleVars,
		Logger:       log,
	})
	if err != nil {
		return err
	}
	lk, err := newLinking(ctx, cfg, log, svc, db, bot, fe.badState, fe.connectStarted)
	if err != nil {
		return err
	}
	if err := heal.setup(ctx, cfg, log, db, svc, lk, bot); err != nil {
		return err
	}
	lk.commands.Attach() // before Open: READY carries the application id
	out := newOutreach(log, svc, bot, lk.broadcaster)
	out.discord.Attach() // member joins
	// On the normal path it is closed below, before the bot; this is for
	// the early returns after Open (a catch-up started by READY must not
	// outlive the store). Close is idempotent.
	defer out.discord.Close()
	if err := bot.Open(); err != nil {
		return err
	}
	regCtx, cancelReg := context.WithTimeout(ctx, 15*time.Second)
	err = lk.commands.Register(regCtx)
	cancelReg()
	if err != nil {
		bot.Close()
		return err
	}
	defer bot.Close()
	log.Info("discord: connected", "bot", bot.User.Username, "guild", cfg.DiscordGuildID)

	applier := &discord.Applier{Bot: bot, Outbox: svc, Logger: log, OnApplied: h.applied}
	webhook := &eventsub.Handler{
		Secret:         cfg.EventSubSecret,
		PreviousSecret: cfg.EventSubSecretPrevious, // during a rotation, until no subscription uses it
		AcceptPrevious: heal.acceptPrevious,
		BroadcasterID:  cfg.TwitchBroadcasterID,
		ClientID:       cfg.TwitchClientID,
		Sink:           svc,
		Logger:         log,
		OnVerified:     fe.guard.Verified,  // Twitch: never limited or banned
		OnRejected:     fe.webhookRejected, // bad signatures count toward a ban
	}

	// The listeners of SUBROLE_TLS's mode, every one behind the guard.
	fe.adminMore = func(bans http.Handler) http.Handler { // "subrole reconcile", "eventsub sync", "import", "export"
		return linksAPI(svc, log, heal.adminAPI(bans))
	}
	ready := readiness{bot: bot, broadcaster: lk.broadcaster, front: fe, heal: heal}
	lk.dashboardStatus = func() []string { return append(heal.dashboardStatus(), ready.warnings()...) }
	addr, err := fe.listen(routes(log, webhook, ready, lk.mount))
	if err != nil {
		return err
	}
	if h.started != nil {
		h.started(svc)
	}
	if h.listening != nil {
		h.listening(addr)
	}

	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	errc := make(chan error, 1) // the first fatal error stops the service
	start := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(work); err != nil && !errors.Is(err, context.Canceled) {
				err = fmt.Errorf("%s: %w", name, err)
				select {
				case errc <- err:
				default: // already stopping for another error
					log.Error("worker failed while stopping", "err", err)
				}
			}
		})
	}
	start("core", svc.Run)
	start("discord applier", applier.Run)
	start("twitch broadcaster token", lk.broadcaster.Run)
	// The certificate is obtained (or loaded) before anything makes Twitch
	// call us: creating EventSub subscriptions must wait for fe.tlsReady().
	start("certificates", fe.runCerts)
	start("eventsub subscriptions", func(ctx context.Context) error { return heal.runEventSub(ctx, fe.tlsReady()) })
	start("reconcile", heal.runReconcile)
	start("dashboard feed", lk.pages.RunFeed)
	start("outreach", out.run)
	fe.serve(errc)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-errc:
		log.Error("stopping after a fatal error", "err", err)
	}
	// Stop taking events first, then let the workers finish what is in flight.
	// The wait outlasts the longest request: an OAuth callback may take
	// web's 10 s timeout plus 3 s to revoke a refused token.
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	lk.pages.EndStreams() // live dashboard feeds never end by themselves
	if serr := fe.shutdown(shutdownCtx); serr != nil {
		log.Warn("http: shutdown", "err", serr)
	}
	stopWork()
	wg.Wait()
	lk.close() // interactions in flight and link summaries, before the bot and the store close
	out.discord.Close()
	return err
}

// readiness reports whether the service can do its job.
type readiness struct {
	bot         *discord.Bot
	broadcaster *twitch.Broadcaster
	front       *frontend // the TLS certificate
	heal        *healing  // EventSub subscriptions, reconcile
}

// warnings returns what works only in part: the service is ready (members
// can link, events are applied), but an operator should act.
func (r readiness) warnings() []string {
	var out []string
	if r.broadcaster != nil {
		if p := r.broadcaster.Status().Problem(); p != "" {
			out = append(out, p)
		}
	}
	if w := r.front.readyWarning(); w != "" {
		out = append(out, w)
	}
	return append(out, r.heal.warnings()...)
}

// problems returns what keeps the service from being ready, or nil.
func (r readiness) problems() []string {
	var out []string
	if r.bot != nil && !r.bot.Connected() {
		out = append(out, "discord gateway not connected")
	}
	if p := r.front.readyProblem(); p != "" {
		out = append(out, p)
	}
	return out
}
