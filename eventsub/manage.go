package eventsub

import (
	"context"
	"errors"
	"fmt"
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
// broadcaster withdrew the authorization, or refused to create one (403)
// for lack of it; they can be created only after the broadcaster connects
// again. An API implementation returns an error wrapping it for such a 403.
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

// CallbackPath is the path of the webhook route. A webhook subscription
// whose callback path ends with it and that carries this installation's id
// (see CallbackID), or no id but subrole's host, was created by subrole.
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
//
// The channel.* subscriptions need the broadcaster's authorization; while
// it is missing (Authorized fails, or Twitch revoked them for
// authorization_revoked) Sync leaves them out and reports them as Waiting,
// and user.authorization.revoke is still kept in place.
type Manager struct {
	// API talks to Helix. Required.
	API API
	// Callback is the webhook URL to subscribe, SUBROLE_PUBLIC_URL +
	// CallbackPath with the secret's generation and the installation's id as
	// a query (CallbackID.URL).
	// Required.
	Callback string
	// Secret signs the subscriptions created. Required.
	Secret string
	// BroadcasterID is the condition of the channel.* subscriptions. Required.
	BroadcasterID string
	// ClientID is the condition of user.authorization.revoke. Required.
	ClientID string
	// Authorized, if not nil, returns nil when the broadcaster has
	// authorized subrole to read their subscriptions, else why not. While it
	// fails, Sync creates no channel.* subscription (Twitch would refuse
	// them). Nil means authorized.
	Authorized func() error
	// Logger receives what the Manager does. Nil logs nothing.
	Logger *slog.Logger
	// WaitEnabled bounds how long Sync waits for the subscriptions it created,
	// and its own still pending, to become enabled. One not enabled in time,
	// or that Twitch could not verify, makes Sync fail, and the ones it
	// replaces are kept. Zero means 30 seconds.
	WaitEnabled time.Duration
	// Poll is the longest pause between list calls while waiting; the first
	// pauses are shorter. Zero means 500 ms.
	Poll time.Duration

	mu        sync.Mutex
	needsAuth atomic.Bool // Twitch revoked for authorization: wait for the broadcaster
	rotating  atomic.Bool // subscriptions of an older callback (secret generation) remain
	status    atomic.Pointer[Status]
}

// SyncReport says what one Sync did.
type SyncReport struct {
	Time     time.Time
	Kept     []string // ids of enabled subscriptions reused
	Created  []string
	Deleted  []string
	Foreign  int      // subscriptions of other callbacks, left alone
	Waiting  []string // types not created because the broadcaster has not authorized subrole
	Rotating bool     // subscriptions of an older callback or secret remain
}

// Status is the Manager's state for readiness checks and status pages.
type Status struct {
	Synced           bool      `json:"synced"` // a Sync has finished
	LastSync         time.Time `json:"last_sync,omitzero"`
	LastError        string    `json:"last_error,omitempty"` // "" when the last Sync succeeded
	Kept             int       `json:"kept"`
	Created          int       `json:"created"`
	Deleted          int       `json:"deleted"`
	Foreign          int       `json:"foreign"`
	Waiting          []string  `json:"waiting,omitempty"`
	NeedsBroadcaster bool      `json:"needs_broadcaster"` // Twitch revoked them for the broadcaster's authorization
	Rotating         bool      `json:"rotating"`
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
// whose callback path ends with CallbackPath, on the host of m.Callback or
// naming a secret generation (a subrole at an older public URL). Other
// subscriptions of the same Twitch application are never touched.
func (m *Manager) Ours(s Registration) bool {
	if s.Method != "" && s.Method != "webhook" {
		return false
	}
	u, err := url.Parse(s.Callback)
	if err != nil || !strings.HasSuffix(u.Path, CallbackPath) {
		return false
	}
	own, err := url.Parse(m.Callback)
	if err != nil {
		return false
	}
	if inst := u.Query().Get(instanceParam); inst != "" {
		return inst == own.Query().Get(instanceParam) // ours under any public URL this installation had
	}
	return strings.EqualFold(u.Host, own.Host)
}

func sameTarget(a, b Registration) bool {
	return a.Type == b.Type && maps.Equal(a.Condition, b.Condition)
}

func needsBroadcaster(t string) bool { return t != string(subrole.EventAuthorizationRevoke) }

func (m *Manager) log() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Logger
}

// Rotating reports whether subscriptions created with an older callback or
// secret still exist, so the webhook must keep accepting the previous
// secret. It is false before the first Sync.
func (m *Manager) Rotating() bool { return m.rotating.Load() }

// NeedsBroadcaster reports whether Twitch revoked subscriptions (or refused
// to create them) for lack of the broadcaster's authorization and the
// Manager is waiting for BroadcasterConnected.
func (m *Manager) NeedsBroadcaster() bool { return m.needsAuth.Load() }

// Status returns the state after the last Sync.
func (m *Manager) Status() Status {
	var st Status
	if p := m.status.Load(); p != nil {
		st = *p
		st.Waiting = slices.Clone(st.Waiting)
	}
	st.NeedsBroadcaster, st.Rotating = m.needsAuth.Load(), m.rotating.Load()
	return st
}

// Problem returns what an operator should know about the subscriptions, or
// "" when they are in place (or before the first Sync).
func (m *Manager) Problem() string {
	st := m.Status()
	switch {
	case st.NeedsBroadcaster:
		return "EventSub: Twitch revoked the channel subscriptions (the broadcaster's authorization was withdrawn); subscription events stop until the broadcaster connects again"
	case st.LastError != "":
		return "EventSub subscriptions could not be synced: " + st.LastError
	case len(st.Waiting) > 0 && m.Authorized != nil && m.Authorized() != nil:
		return "EventSub: " + strings.Join(st.Waiting, ", ") + " wait for the broadcaster to connect"
	}
	return ""
}

// BroadcasterConnected tells the Manager the broadcaster authorized subrole
// again, so subscriptions revoked for authorization may be re-created by the
// next Sync.
func (m *Manager) BroadcasterConnected() { m.needsAuth.Store(false) }

// channelAllowed reports whether channel.* subscriptions may be created now.
func (m *Manager) channelAllowed() bool {
	return !m.needsAuth.Load() && (m.Authorized == nil || m.Authorized() == nil)
}

// alertNeedsBroadcaster records that Twitch wants the broadcaster's
// authorization and raises an error-level alert.
func (m *Manager) alertNeedsBroadcaster(typ, why string) {
	m.needsAuth.Store(true)
	m.log().Error("eventsub: the broadcaster's authorization was withdrawn; subscription events stay off until they connect again",
		"type", typ, "status", why, "security_event", "eventsub_revoked", "fix", "the broadcaster opens /broadcaster/connect")
}

// HandleRevocation reacts to a revocation: causes subrole can fix
// (notification failures, a removed version) lead to a Sync; an authorization
// withdrawn by the broadcaster or a removed user raises an error and returns
// ErrNeedsBroadcaster without calling Twitch: nothing is re-created until
// BroadcasterConnected.
func (m *Manager) HandleRevocation(ctx context.Context, r subrole.Revocation) (SyncReport, error) {
	switch r.Status {
	case StatusAuthRevoked, StatusUserRemoved, StatusModeratorRemoved:
		if needsBroadcaster(string(r.Type)) {
			m.alertNeedsBroadcaster(string(r.Type), r.Status)
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
	rep.Rotating = m.rotating.Load()
	st := Status{Synced: true, LastSync: rep.Time, Kept: len(rep.Kept), Created: len(rep.Created),
		Deleted: len(rep.Deleted), Foreign: rep.Foreign, Waiting: rep.Waiting}
	if err != nil {
		st.LastError = err.Error()
	}
	m.status.Store(&st)
	return rep, err
}

func (m *Manager) sync(ctx context.Context) (SyncReport, error) {
	var rep SyncReport
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
	// One revoked for authorization is replaced like the others: if the
	// authorization is still missing, Twitch refuses the new one (403) and
	// that alerts.
	// One whose callback Twitch could not verify is an error to report:
	// its replacement would likely fail the same way, and nothing delivers.
	var errs []error // reported by this Sync, which goes on where it can
	var live []Registration
	for _, s := range subs {
		if !m.Ours(s) {
			rep.Foreign++
			live = append(live, s)
			continue
		}
		if s.Status != StatusEnabled && s.Status != StatusVerificationPending {
			if err := del(s, "not enabled"); err != nil {
				return rep, errors.Join(append(errs, err)...)
			}
			if s.Status == StatusVerificationFailed {
				errs = append(errs, fmt.Errorf("eventsub: Twitch could not verify %s at %s (deleted it; a new one is created); is it reachable from Twitch, and is the secret the service's?",
					s.Type, callbackOrigin(s.Callback)))
			}
			continue
		}
		live = append(live, s)
	}

	// Ours and live but not wanted as they are (another callback, secret
	// generation or version; a duplicate; another broadcaster): deleted
	// once their replacements are enabled. An enabled one is kept in
	// preference to a pending one (a replacement Twitch has not verified).
	wanted := m.Wanted()
	targetOf := func(s Registration) int {
		return slices.IndexFunc(wanted, func(w Registration) bool { return sameTarget(s, w) })
	}
	current := map[int]Registration{} // index in wanted -> the one kept (then the one created)
	for _, enabledPass := range []bool{true, false} {
		for _, s := range live {
			if !m.Ours(s) || (s.Status == StatusEnabled) != enabledPass {
				continue
			}
			i := targetOf(s)
			if _, taken := current[i]; i >= 0 && !taken && s.Callback == wanted[i].Callback && s.Version == wanted[i].Version {
				current[i] = s
			}
		}
	}
	var stale []Registration
	for _, s := range live {
		if i := targetOf(s); m.Ours(s) && (i < 0 || current[i].ID != s.ID) {
			stale = append(stale, s)
		}
	}
	m.rotating.Store(len(stale) > 0)

	channelOK := m.channelAllowed()
	held := 0 // stale ones kept because nothing can replace them now
	hold := func(w Registration) {
		n := len(stale)
		stale = slices.DeleteFunc(stale, func(s Registration) bool { return sameTarget(s, w) })
		held += n - len(stale)
	}
	for i, w := range wanted {
		if cur, ok := current[i]; ok {
			rep.Kept = append(rep.Kept, cur.ID)
			continue
		}
		if needsBroadcaster(w.Type) && !channelOK {
			rep.Waiting = append(rep.Waiting, w.Type)
			hold(w)
			continue
		}
		// Make room under the limit by deleting our stale ones first.
		count := 0
		for _, s := range live {
			if sameTarget(s, w) && !slices.Contains(rep.Deleted, s.ID) {
				count++
			}
		}
		for count >= MaxPerCondition {
			j := slices.IndexFunc(stale, func(s Registration) bool { return sameTarget(s, w) })
			if j < 0 {
				break
			}
			if err := del(stale[j], "making room under the limit of 3"); err != nil {
				return rep, errors.Join(append(errs, err)...)
			}
			stale = slices.Delete(stale, j, j+1)
			count--
		}
		if count >= MaxPerCondition {
			// Only this target is stuck: the others are still synced.
			errs = append(errs, fmt.Errorf("eventsub: %s already has %d subscriptions that are not subrole's; delete one (subrole eventsub list / delete)", w.Type, MaxPerCondition))
			hold(w)
			continue
		}
		s, err := m.API.CreateSubscription(ctx, w, m.Secret)
		switch {
		case errors.Is(err, ErrExists):
			m.log().Info("eventsub: subscription already exists", "type", w.Type)
			continue
		case errors.Is(err, ErrNeedsBroadcaster):
			// Twitch says the broadcaster has not authorized us: stop
			// asking until they connect again (no create loop).
			m.alertNeedsBroadcaster(w.Type, "create refused: "+err.Error())
			channelOK = false
			rep.Waiting = append(rep.Waiting, w.Type)
			hold(w)
			continue
		case err != nil:
			return rep, errors.Join(append(errs, fmt.Errorf("eventsub: create %s subscription: %w", w.Type, err))...)
		}
		m.log().Info("eventsub: created subscription", "id", s.ID, "type", s.Type, "status", s.Status, "callback", w.Callback)
		rep.Created = append(rep.Created, s.ID)
		current[i] = s
	}

	// Wait for the new ones and our pending ones, even with nothing to
	// replace: a callback Twitch cannot verify must be reported.
	var pending []Registration
	for i := range wanted {
		if cur, ok := current[i]; ok && cur.Status != StatusEnabled {
			pending = append(pending, cur)
		}
	}
	enabled, werr := m.waitEnabled(ctx, pending)
	if werr != nil {
		errs = append(errs, werr)
		if ctx.Err() != nil {
			return rep, errors.Join(errs...)
		}
	}
	// Replace, then remove: a target's stale ones keep delivering until its
	// current one is enabled (duplicates are harmless: effects are
	// idempotent). Stale ones of no wanted target go once all are enabled.
	for _, s := range stale {
		replaced := werr == nil
		if i := targetOf(s); i >= 0 {
			cur, ok := current[i]
			replaced = ok && (cur.Status == StatusEnabled || enabled[cur.ID])
		}
		if !replaced {
			held++
			continue
		}
		if err := del(s, "callback, secret or version replaced"); err != nil {
			return rep, errors.Join(append(errs, err)...)
		}
	}
	m.rotating.Store(held > 0)
	return rep, errors.Join(errs...)
}

// waitEnabled waits until every subscription in created is enabled, and
// returns the ids of those it saw enabled.
func (m *Manager) waitEnabled(ctx context.Context, created []Registration) (map[string]bool, error) {
	enabled := map[string]bool{}
	if len(created) == 0 {
		return enabled, nil
	}
	wait, poll := m.WaitEnabled, m.Poll
	if wait <= 0 {
		wait = 30 * time.Second
	}
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	pause := min(poll, 20*time.Millisecond) // Twitch verifies within moments: look early, then back off
	deadline := time.Now().Add(wait)
	for {
		subs, err := m.API.ListSubscriptions(ctx)
		if err != nil {
			return enabled, fmt.Errorf("eventsub: list subscriptions: %w", err)
		}
		pending := 0
		for _, c := range created {
			i := slices.IndexFunc(subs, func(s Registration) bool { return s.ID == c.ID })
			switch {
			case i >= 0 && subs[i].Status == StatusEnabled:
				enabled[c.ID] = true
			case i >= 0 && subs[i].Status == StatusVerificationFailed:
				return enabled, fmt.Errorf("eventsub: Twitch could not verify %s at %s (the challenge was not answered 200 with the challenge); is it reachable from Twitch, and is the secret the service's?",
					c.Type, callbackOrigin(m.Callback))
			case i >= 0 && subs[i].Status == StatusVerificationPending:
				pending++
			case i < 0:
				return enabled, fmt.Errorf("eventsub: the %s subscription %s was deleted before it was enabled", c.Type, c.ID)
			default: // revoked meanwhile: it will not be enabled
				return enabled, fmt.Errorf("eventsub: the %s subscription %s is %s, not enabled", c.Type, c.ID, subs[i].Status)
			}
		}
		if pending == 0 {
			return enabled, nil
		}
		if time.Now().After(deadline) {
			return enabled, fmt.Errorf("eventsub: %d subscriptions not enabled after %s; is %s reachable from Twitch?", pending, wait, callbackOrigin(m.Callback))
		}
		select {
		case <-ctx.Done():
			return enabled, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(pause*2, poll)
	}
}

// callbackOrigin is the callback without its query, for messages.
func callbackOrigin(cb string) string { return strings.SplitN(cb, "?", 2)[0] }
