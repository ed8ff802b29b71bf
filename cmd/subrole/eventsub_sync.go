package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord"
	"github.com/subrole/subrole/eventsub"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch"
)

// helixEventSub adapts the twitch client's EventSub calls to eventsub.API.
// It lives here so that neither adapter imports the other: twitch speaks
// Helix with its own types, eventsub owns the subscription logic and the
// port it needs, and the mapping (types, 409 -> eventsub.ErrExists, 403 ->
// eventsub.ErrNeedsBroadcaster, 404 on delete -> done) is wiring.
type helixEventSub struct{ c *twitch.Client }

var _ eventsub.API = helixEventSub{}

func registration(s twitch.EventSubSubscription) eventsub.Registration {
	return eventsub.Registration{ID: s.ID, Type: s.Type, Version: s.Version, Status: s.Status, Condition: s.Condition,
		Method: s.Method, Callback: s.Callback, CreatedAt: s.CreatedAt}
}

// ListSubscriptions implements eventsub.API.
func (a helixEventSub) ListSubscriptions(ctx context.Context) ([]eventsub.Registration, error) {
	list, err := a.c.EventSubSubscriptions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]eventsub.Registration, 0, len(list.Subscriptions))
	for _, s := range list.Subscriptions {
		out = append(out, registration(s))
	}
	return out, nil
}

// CreateSubscription implements eventsub.API.
func (a helixEventSub) CreateSubscription(ctx context.Context, s eventsub.Registration, secret string) (eventsub.Registration, error) {
	got, err := a.c.CreateEventSubSubscription(ctx, twitch.EventSubSubscription{Type: s.Type, Version: s.Version,
		Condition: s.Condition, Callback: s.Callback}, secret)
	switch {
	case errors.Is(err, twitch.ErrConflict):
		return eventsub.Registration{}, fmt.Errorf("%w: %w", eventsub.ErrExists, err)
	case errors.Is(err, twitch.ErrMissingScope):
		return eventsub.Registration{}, fmt.Errorf("%w: %w", eventsub.ErrNeedsBroadcaster, err)
	case err != nil:
		return eventsub.Registration{}, err
	}
	return registration(got), nil
}

// DeleteSubscription implements eventsub.API.
func (a helixEventSub) DeleteSubscription(ctx context.Context, id string) error {
	if err := a.c.DeleteEventSubSubscription(ctx, id); err != nil && !errors.Is(err, twitch.ErrNotFound) {
		return err
	}
	return nil
}

// syncEvery is how often the EventSub subscriptions are checked.
const syncEvery = time.Hour

// healing keeps the service whole without an operator: the EventSub
// subscriptions (synced once HTTPS is ready, hourly, after a revocation, when
// the broadcaster connects, on demand), the secret rotation, and the
// reconcile passes against Helix and Discord.
type healing struct {
	cfg         *config
	log         *slog.Logger
	svc         *subrole.Service
	broadcaster *twitch.Broadcaster
	roles       subrole.MemberRoles // nil when SUBROLE_ENFORCE_ROLES=off
	manager     *eventsub.Manager
	generation  uint64

	revocations chan subrole.Revocation // from the core's OnRevocation
	syncNow     chan struct{}
	synced      atomic.Bool // the first Sync finished

	mu           sync.Mutex
	reconcileErr string // the last scheduled pass's failure, "" after a success
}

// newHealing returns the part that exists before the core: the queue of
// revocations the core reports (Config.OnRevocation).
func newHealing() *healing {
	return &healing{revocations: make(chan subrole.Revocation, 64), syncNow: make(chan struct{}, 1)}
}

// revoked is subrole.Config.OnRevocation: it never blocks the webhook. A
// full queue drops the revocation; the hourly sync finds the subscription
// disabled anyway.
func (h *healing) revoked(r subrole.Revocation) {
	select {
	case h.revocations <- r:
	default:
		h.log.Warn("eventsub: revocation queue full; the next sync repairs it", "subscription_id", r.SubscriptionID)
	}
}

// setup wires the rest once the store, the core, Twitch and Discord exist:
// the secret's generation (bumped when SUBROLE_EVENTSUB_SECRET changed) and
// the Manager with the callback that names it.
func (h *healing) setup(ctx context.Context, cfg *config, log *slog.Logger, db *store.Store, svc *subrole.Service,
	lk *linking, bot *discord.Bot) error {
	h.cfg, h.log, h.svc, h.broadcaster = cfg, log, svc, lk.broadcaster
	if cfg.EnforceRoles {
		h.roles = bot
	}
	cbID, changed, err := eventsub.SecretGeneration(ctx, db, cfg.EventSubSecret)
	if err != nil {
		return err
	}
	h.generation = cbID.Generation
	switch {
	case changed && cfg.EventSubSecretPrevious == "":
		log.Warn("eventsub: SUBROLE_EVENTSUB_SECRET changed; subscriptions are re-created with it, and events signed with the old one are refused meanwhile",
			"generation", cbID.Generation, "fix", "set SUBROLE_EVENTSUB_SECRET_PREVIOUS to the old secret during a rotation")
	case changed:
		log.Info("eventsub: secret rotation: re-creating the subscriptions with the new secret; the previous one is accepted until they are replaced", "generation", cbID.Generation)
	}
	h.manager = &eventsub.Manager{
		API:           helixEventSub{lk.twitch},
		Callback:      cbID.URL(cfg.PublicURL.String()),
		Secret:        cfg.EventSubSecret,
		BroadcasterID: cfg.TwitchBroadcasterID,
		ClientID:      cfg.TwitchClientID,
		Authorized:    h.broadcasterAuthorized,
		Logger:        log,
	}
	// The broadcaster connecting (GET /broadcaster/connect) re-creates what
	// Twitch revoked and reconciles what was missed meanwhile.
	lk.onBroadcasterConnected = h.broadcasterConnected
	lk.commands.ResyncAll = h.resyncAll
	return nil
}

// broadcasterAuthorized is eventsub.Manager.Authorized: the broadcaster's
// stored authorization, as the token manager knows it (a Twitch outage
// does not count against it).
func (h *healing) broadcasterAuthorized() error {
	switch st := h.broadcaster.Status(); st.State {
	case twitch.StateConnected, twitch.StateUnreachable:
		return nil
	default:
		return errors.New(st.Problem())
	}
}

// broadcasterReady is the reconcile's readiness: a usable broadcaster token
// (loaded from the store, refreshed if due). It gives up after 30 s or when
// ctx ends (shutdown), whichever is first.
func (h *healing) broadcasterReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := h.broadcaster.Token(ctx)
	return err
}

// broadcasterConnected runs after the broadcaster authorized subrole.
func (h *healing) broadcasterConnected() {
	h.manager.BroadcasterConnected()
	h.requestSync()
	h.svc.RequestReconcile()
}

// requestSync asks runEventSub for a Sync now; it never blocks.
func (h *healing) requestSync() {
	select {
	case h.syncNow <- struct{}{}:
	default:
	}
}

// acceptPrevious is eventsub.Handler.AcceptPrevious: the previous secret
// is good until the first Sync shows no subscription of an older
// generation remains.
func (h *healing) acceptPrevious() bool {
	return !h.synced.Load() || h.manager.Rotating()
}

// runEventSub syncs the subscriptions once tlsReady is closed (HTTPS has a
// certificate, so Twitch's verification request succeeds), then every
// syncEvery, on requestSync and after each revocation, until ctx is done.
// A failed sync is retried sooner, with backoff.
func (h *healing) runEventSub(ctx context.Context, tlsReady <-chan struct{}) error {
	select {
	case <-tlsReady:
	case <-ctx.Done():
		return ctx.Err()
	}
	ctx2, cancel := context.WithTimeout(ctx, 30*time.Second)
	h.broadcaster.Token(ctx2) // load the stored authorization, so the first sync knows it
	cancel()
	const minRetry = 30 * time.Second
	retry := minRetry
	next := time.Duration(0)
	for {
		t := time.NewTimer(next)
		var rev *subrole.Revocation
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		case <-h.syncNow:
		case r := <-h.revocations:
			rev = &r
		}
		t.Stop()
		var rep eventsub.SyncReport
		var err error
		if rev != nil {
			rep, err = h.manager.HandleRevocation(ctx, *rev)
		} else {
			rep, err = h.manager.Sync(ctx)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		next = syncEvery
		switch {
		case errors.Is(err, eventsub.ErrNeedsBroadcaster):
			// Alerted by the Manager; nothing to retry until they connect.
		case err != nil:
			h.log.Error("eventsub: syncing the subscriptions failed; will retry", "err", err, "retry_in", retry)
			next, retry = retry, min(retry*2, syncEvery)
		default:
			retry = minRetry
			h.log.Info("eventsub: subscriptions in place", "kept", len(rep.Kept), "created", len(rep.Created),
				"deleted", len(rep.Deleted), "foreign", rep.Foreign, "waiting_for_broadcaster", len(rep.Waiting),
				"callback", h.manager.Callback)
		}
		if err == nil {
			if !h.synced.Swap(true) && h.cfg.EventSubSecretPrevious != "" && !h.manager.Rotating() {
				h.log.Info("eventsub: no subscription uses the previous secret any more; it is refused from now on (SUBROLE_EVENTSUB_SECRET_PREVIOUS can be removed)")
			}
		}
	}
}

// runReconcile runs the scheduled reconcile passes (core RunReconcile) with
// the broadcaster's token as the source and, unless SUBROLE_ENFORCE_ROLES is
// off, the bot's view of the members' roles; passes wait while the
// broadcaster is not connected.
func (h *healing) runReconcile(ctx context.Context) error {
	return h.svc.RunReconcile(ctx, subrole.ReconcileSchedule{
		Source:        h.broadcaster,
		Roles:         h.roles,
		StripUnlinked: h.cfg.StripUnlinked,
		Ready:         h.broadcasterReady,
		Interval:      h.cfg.ReconcileInterval,
		OnDone: func(_ subrole.ReconcileReport, err error) {
			if errors.Is(err, subrole.ErrReconcileRunning) {
				return
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			h.reconcileErr = ""
			if err != nil {
				h.reconcileErr = err.Error()
			}
		},
	})
}

// reconcile runs one pass now, on demand (/subrole resync-all, "subrole
// reconcile"); it fails at once when the broadcaster is not connected or a
// pass is running.
func (h *healing) reconcile(ctx context.Context, progress func(subrole.ReconcileStage, subrole.ReconcileReport)) (subrole.ReconcileReport, error) {
	if err := h.broadcasterReady(ctx); err != nil {
		return subrole.ReconcileReport{}, err
	}
	rep, err := h.svc.ReconcileWith(ctx, subrole.ReconcileOptions{Source: h.broadcaster, Roles: h.roles, StripUnlinked: h.cfg.StripUnlinked, Progress: progress})
	if err == nil {
		h.mu.Lock()
		h.reconcileErr = ""
		h.mu.Unlock()
	}
	return rep, err
}

// resyncAll is discord.Commands.ResyncAll.
func (h *healing) resyncAll(ctx context.Context, progress func(subrole.ReconcileStage, subrole.ReconcileReport)) (subrole.ReconcileReport, error) {
	return h.reconcile(ctx, progress)
}

// dashboardStatus is the dashboard's line about EventSub subscriptions.
func (h *healing) dashboardStatus() []string {
	if h == nil || h.manager == nil {
		return nil
	}
	st := h.manager.Status()
	if !st.Synced {
		return []string{"EventSub: subscriptions not synced yet"}
	}
	line := fmt.Sprintf("EventSub: subscriptions synced %s (%d kept, %d created, %d deleted)",
		st.LastSync.UTC().Format("2006-01-02 15:04 MST"), st.Kept, st.Created, st.Deleted)
	if st.LastError != "" {
		line += "; the last sync failed"
	}
	return []string{line}
}

// warnings is what /readyz reports about subscriptions and reconcile: the
// service still serves, but an operator should look.
func (h *healing) warnings() []string {
	if h == nil || h.manager == nil {
		return nil
	}
	var out []string
	if p := h.manager.Problem(); p != "" {
		out = append(out, p)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.reconcileErr != "" {
		out = append(out, "the last reconcile pass failed (retrying): "+h.reconcileErr)
	}
	return out
}
