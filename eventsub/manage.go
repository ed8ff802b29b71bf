package eventsub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/subrole/subrole"
)

// Registration is an EventSub subscription as Helix lists it.
type Registration struct {
	ID        string
	Type      string
	Version   string
	Status    string
	Condition map[string]string
	Method    string // "webhook", "websocket", "conduit"
	Callback  string // the webhook callback; empty for other transports
	CreatedAt time.Time
}

// API is the part of Helix the Manager needs: GET, POST and DELETE
// /eventsub/subscriptions with an app access token. The twitch package
// implements it.
type API interface {
	// ListSubscriptions returns every subscription of the application (all pages).
	ListSubscriptions(ctx context.Context) ([]Registration, error)
	// CreateSubscription creates a webhook subscription for s.Type,
	// s.Version, s.Condition and s.Callback, signed with secret. A 409 from
	// Helix is returned as an error wrapping ErrExists.
	CreateSubscription(ctx context.Context, s Registration, secret string) (Registration, error)
	// DeleteSubscription deletes a subscription. A missing one is not an error.
	DeleteSubscription(ctx context.Context, id string) error
}

// ErrExists means Helix refused to create a subscription because an equal
// enabled one exists (409 Conflict).
var ErrExists = errors.New("eventsub: subscription already exists")

// ErrNeedsBroadcaster means Twitch revoked our subscriptions because the
// broadcaster withdrew the authorization; they can be re-created only after
// the broadcaster connects again.
var ErrNeedsBroadcaster = errors.New("eventsub: the broadcaster must authorize subrole again")

// Status values Helix reports for subscriptions.
const (
	StatusEnabled             = "enabled"
	StatusVerificationPending = "webhook_callback_verification_pending"
	StatusVerificationFailed  = "webhook_callback_verification_failed"
	StatusFailuresExceeded    = "notification_failures_exceeded"
	StatusAuthRevoked         = "authorization_revoked"
	StatusModeratorRemoved    = "moderator_removed"
	StatusUserRemoved         = "user_removed"
	StatusVersionRemoved      = "version_removed"
)

// CallbackPath is the path of the webhook route; a subscription whose
// callback has this path was created by subrole.
const CallbackPath = "/twitch_eventsub"

// MaxPerCondition is how many subscriptions Twitch allows for one type and condition.
const MaxPerCondition = 3

// supportedVersions lists the versions subrole handles, newest first.
var supportedVersions = map[subrole.EventType][]string{
	subrole.EventSubscribe:           {"1"},
	subrole.EventSubscriptionEnd:     {"1"},
	subrole.EventSubscriptionMessage: {"1"},
	subrole.EventSubscriptionGift:    {"1"},
	subrole.EventAuthorizationRevoke: {"1"},
}

// Manager keeps subrole's EventSub webhook subscriptions in place: it creates
// the missing ones, reuses enabled ones, deletes its own failed, revoked or
// stale ones, and never touches subscriptions whose callback is not
// subrole's. Sync is safe to call at any time and from several goroutines;
// calls are serialized.
type Manager struct {
	// API talks to Helix. Required.
	API API
	// Callback is the webhook URL to subscribe, SUBROLE_PUBLIC_URL +
	// CallbackPath, optionally with a query that names the secret's
	// generation (see Generation). Required.
	Callback string
	// Secret signs the subscriptions created. Required.
	Secret string
	// BroadcasterID is the condition of the channel.* subscriptions. Required.
	BroadcasterID string
	// ClientID is the condition of user.authorization.revoke. Required.
	ClientID string
	// Logger receives what the Manager does. Nil logs nothing.
	Logger *slog.Logger
	// WaitEnabled bounds how long Sync waits for a new subscription to become
	// enabled before it deletes the one it replaces. Zero means 30 seconds.
	WaitEnabled time.Duration
	// Poll is how often Sync re-reads the list while waiting. Zero means 500 ms.
	Poll time.Duration

	mu           sync.Mutex
	needsAuth    atomic.Bool // waiting for the broadcaster to reconnect
	rotating     atomic.Bool // subscriptions signed with an older secret remain
	lastReport   atomic.Pointer[SyncReport]
	lastErrorMsg atomic.Pointer[string]
}

// SyncReport says what one Sync did.
type SyncReport struct {
	Time     time.Time
	Kept     []string // ids of enabled subscriptions reused
	Created  []string
	Deleted  []string
	Foreign  int // subscriptions of other callbacks, left alone
	Rotating bool
}

// Wanted returns the subscriptions subrole needs, without ids.
func (m *Manager) Wanted() []Registration {
	var out []Registration
	for _, t := range []subrole.EventType{subrole.EventSubscribe, subrole.EventSubscriptionEnd,
		subrole.EventSubscriptionMessage, subrole.EventSubscriptionGift} {
		out = append(out, Registration{Type: string(t), Version: supportedVersions[t][0],
			Condition: map[string]string{"broadcaster_user_id": m.BroadcasterID}, Method: "webhook", Callback: m.Callback})
	}
	return append(out, Registration{Type: string(subrole.EventAuthorizationRevoke), Version: supportedVersions[subrole.EventAuthorizationRevoke][0],
		Condition: map[string]string{"client_id": m.ClientID}, Method: "webhook", Callback: m.Callback})
}

// Ours reports whether a subscription was created by subrole: a webhook
// whose callback path is CallbackPath. Its host may be an older public URL.
func Ours(s Registration) bool {
	if s.Method != "" && s.Method != "webhook" {
		return false
	}
	u, err := url.Parse(s.Callback)
	return err == nil && u.Path == CallbackPath
}

func sameTarget(a, b Registration) bool {
	return a.Type == b.Type && maps.Equal(a.Condition, b.Condition)
}

func (m *Manager) log() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return m.Logger
}

// Rotating reports whether subscriptions created with an older secret still
// exist, so the webhook must keep accepting the previous secret.
func (m *Manager) Rotating() bool { return m.rotating.Load() }

// NeedsBroadcaster reports whether Twitch revoked subscriptions because the
// broadcaster withdrew the authorization and Sync is waiting for them to
// reconnect.
func (m *Manager) NeedsBroadcaster() bool { return m.needsAuth.Load() }

// Last returns the last Sync's report and error message ("" on success).
func (m *Manager) Last() (SyncReport, string) {
	var r SyncReport
	if p := m.lastReport.Load(); p != nil {
		r = *p
	}
	var msg string
	if p := m.lastErrorMsg.Load(); p != nil {
		msg = *p
	}
	return r, msg
}

// BroadcasterConnected tells the Manager the broadcaster authorized subrole
// again, so subscriptions revoked for authorization may be re-created.
func (m *Manager) BroadcasterConnected() { m.needsAuth.Store(false) }

// HandleRevocation reacts to a revocation: causes subrole can fix
// (notification failures, a removed version) lead to a Sync; an authorization
// withdrawn by the broadcaster or a removed user raises an error and waits
// for BroadcasterConnected.
func (m *Manager) HandleRevocation(ctx context.Context, r subrole.Revocation) (SyncReport, error) {
	switch r.Status {
	case StatusAuthRevoked, StatusUserRemoved, StatusModeratorRemoved:
		if r.Type != subrole.EventAuthorizationRevoke {
			m.needsAuth.Store(true)
			m.log().Error("eventsub: the broadcaster's authorization was withdrawn; subscriptions stay off until they connect again",
				"type", string(r.Type), "status", r.Status, "security_event", "eventsub_revoked", "fix", "the broadcaster opens /broadcaster/connect")
			return SyncReport{}, ErrNeedsBroadcaster
		}
	case StatusVersionRemoved:
		if v := supportedVersions[r.Type]; len(v) > 0 && v[0] == r.Version {
			m.log().Error("eventsub: Twitch removed the newest version subrole supports; upgrade subrole",
				"type", string(r.Type), "version", r.Version)
			return SyncReport{}, fmt.Errorf("eventsub: %s version %s was removed: upgrade subrole", r.Type, r.Version)
		}
	}
	return m.Sync(ctx)
}

// Sync makes the application's subscriptions match Wanted.
func (m *Manager) Sync(ctx context.Context) (SyncReport, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rep, err := m.sync(ctx)
	rep.Time = time.Now()
	m.lastReport.Store(&rep)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	m.lastErrorMsg.Store(&msg)
	return rep, err
}

func (m *Manager) sync(ctx context.Context) (SyncReport, error) {
	var rep SyncReport
	if m.needsAuth.Load() {
		return rep, ErrNeedsBroadcaster
	}
	subs, err := m.API.ListSubscriptions(ctx)
	if err != nil {
		return rep, fmt.Errorf("eventsub: list subscriptions: %w", err)
	}
	del := func(s Registration, why string) error {
		if err := m.API.DeleteSubscription(ctx, s.ID); err != nil {
			return fmt.Errorf("eventsub: delete subscription %s: %w", s.ID, err)
		}
		m.log().Info("eventsub: deleted subscription", "id", s.ID, "type", s.Type, "status", s.Status, "callback", s.Callback, "why", why)
		rep.Deleted = append(rep.Deleted, s.ID)
		return nil
	}

	// Our broken subscriptions go first: they count against the limit.
	var live []Registration
	for _, s := range subs {
		if !Ours(s) {
			rep.Foreign++
			live = append(live, s)
			continue
		}
		if s.Status != StatusEnabled && s.Status != StatusVerificationPending {
			if err := del(s, "not enabled"); err != nil {
				return rep, err
			}
			continue
		}
		live = append(live, s)
	}

	var stale []Registration // ours, enabled, another callback: deleted once the replacements are enabled
	var created []Registration
	for _, w := range m.Wanted() {
		var current *Registration
		for i, s := range live {
			if !sameTarget(s, w) || !Ours(s) {
				continue
			}
			switch {
			case s.Callback == w.Callback && s.Version == w.Version && current == nil:
				current = &live[i]
			default:
				stale = append(stale, s)
			}
		}
		if current != nil {
			rep.Kept = append(rep.Kept, current.ID)
			continue
		}
		// Make room under the limit by deleting our stale ones first.
		count := 0
		for _, s := range live {
			if sameTarget(s, w) {
				count++
			}
		}
		for count >= MaxPerCondition {
			i := slices.IndexFunc(stale, func(s Registration) bool { return sameTarget(s, w) })
			if i < 0 {
				return rep, fmt.Errorf("eventsub: %s already has %d subscriptions that are not subrole's; delete one (subrole eventsub list / delete)", w.Type, MaxPerCondition)
			}
			if err := del(stale[i], "making room under the limit of 3"); err != nil {
				return rep, err
			}
			stale = slices.Delete(stale, i, i+1)
			count--
		}
		s, err := m.API.CreateSubscription(ctx, w, m.Secret)
		if errors.Is(err, ErrExists) {
			m.log().Info("eventsub: subscription already exists", "type", w.Type)
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("eventsub: create %s subscription: %w", w.Type, err)
		}
		m.log().Info("eventsub: created subscription", "id", s.ID, "type", s.Type, "status", s.Status, "callback", w.Callback)
		rep.Created = append(rep.Created, s.ID)
		created = append(created, s)
	}

	if len(stale) > 0 {
		// Replace, then remove: the stale ones keep delivering until the new
		// ones are enabled (duplicates are harmless: effects are idempotent).
		if err := m.waitEnabled(ctx, created); err != nil {
			m.rotating.Store(true)
			rep.Rotating = true
			return rep, err
		}
		for _, s := range stale {
			if err := del(s, "callback or secret replaced"); err != nil {
				m.rotating.Store(true)
				rep.Rotating = true
				return rep, err
			}
		}
	}
	m.rotating.Store(false)
	return rep, nil
}

// waitEnabled waits until every created subscription is enabled.
func (m *Manager) waitEnabled(ctx context.Context, created []Registration) error {
	if len(created) == 0 {
		return nil
	}
	wait, poll := m.WaitEnabled, m.Poll
	if wait <= 0 {
		wait = 30 * time.Second
	}
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	deadline := time.Now().Add(wait)
	for {
		subs, err := m.API.ListSubscriptions(ctx)
		if err != nil {
			return fmt.Errorf("eventsub: list subscriptions: %w", err)
		}
		pending := 0
		for _, c := range created {
			i := slices.IndexFunc(subs, func(s Registration) bool { return s.ID == c.ID })
			if i < 0 || subs[i].Status != StatusEnabled {
				pending++
			}
		}
		if pending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("eventsub: %d new subscriptions not enabled after %s; is %s reachable from Twitch?", pending, wait, strings.SplitN(m.Callback, "?", 2)[0])
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}
