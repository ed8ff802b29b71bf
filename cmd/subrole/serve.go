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
)

// hooks let the demo, tests and benchmarks observe the running service
// without changing its wiring.
type hooks struct {
	// listener, if set, is used instead of listening on SUBROLE_LISTEN.
	listener net.Listener
	// started is called with the core service before the listener serves.
	started func(*subrole.Service)
	// listening is called with the HTTP address once the listener is open.
	listening func(addr string)
	// applied is called after the role applier handles a member.
	applied func(discord.Applied)
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

	svc := subrole.NewService(subrole.Config{Store: db, Policy: cfg.Policy, Logger: log})

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
	if err := bot.Open(); err != nil {
		return err
	}
	defer bot.Close()
	log.Info("discord: connected", "bot", bot.User.Username, "guild", cfg.DiscordGuildID)

	applier := &discord.Applier{Bot: bot, Outbox: svc, Logger: log, OnApplied: h.applied}
	webhook := &eventsub.Handler{
		Secret:        cfg.EventSubSecret,
		BroadcasterID: cfg.TwitchBroadcasterID,
		ClientID:      cfg.TwitchClientID,
		Sink:          svc,
		Logger:        log,
	}

	ln := h.listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("SUBROLE_LISTEN: %w", err)
		}
	}
	if h.started != nil {
		h.started(svc)
	}
	srv := &http.Server{
		Handler:           routes(log, webhook, readiness{bot: bot}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	log.Info("http: listening", "addr", ln.Addr().String(), "public_url", cfg.PublicURL.String(),
		"eventsub_callback", cfg.publicURL("/twitch_eventsub"))
	if h.listening != nil {
		h.listening(ln.Addr().String())
	}

	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	start := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(work); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}
	start("core", svc.Run)
	start("discord applier", applier.Run)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-errc:
		log.Error("stopping after a fatal error", "err", err)
	}
	// Stop taking events first, then let the workers finish what is in flight.
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if serr := srv.Shutdown(shutdownCtx); serr != nil {
		log.Warn("http: shutdown", "err", serr)
	}
	stopWork()
	wg.Wait()
	return err
}

// readiness reports whether the service can do its job.
type readiness struct {
	bot *discord.Bot
}

// problems returns what keeps the service from being ready, or nil.
func (r readiness) problems() []string {
	var out []string
	if r.bot != nil && !r.bot.Connected() {
		out = append(out, "discord gateway not connected")
	}
	return out
}
