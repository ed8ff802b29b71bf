// Package subrole turns Twitch subscriptions into Discord roles.
//
// The root package is the contract and the core: the domain types (Tier,
// Subscription, Link, Member, Event, RoleJob), the pure functions that decide
// which roles a member should hold (DesiredRoles, Diff), the interfaces the
// core needs from the outside world (Store, Tx), and the Service that orders
// the work: events in, subscription state updated, role jobs out.
//
// Adapters live in subpackages and never import each other: eventsub (the
// Twitch webhook), store (bbolt), discord (the bot), twitch (OAuth and
// Helix), web (the browser pages). cmd/subrole wires them.
//
// The flow of one Twitch event:
//
//	eventsub: verify, decode ──▶ Service.AcceptEvent: one commit = dedupe by message id
//	    + apply to Subscription ──▶ DesiredRoles ──▶ role job in the outbox + audit entry
//	    (or, while older events wait, an inbox entry that Service.Run applies in order)
//	discord: outbox ──▶ read member ──▶ Diff(actual, desired) ──▶ role calls ──▶ job done
//
// Linking (CompleteLink), links imported from another bot (ImportLinks),
// reconcile passes against Helix (Reconcile) and grace-period checks end in
// the same DesiredRoles and the same outbox.
//
// Member outreach (MemberJoined, RunOutreach) keeps welcome, follow-up and
// monthly relink DMs as jobs in the store and sends them through a Messenger.
//
// Roles are desired state, not commands: every path ends in DesiredRoles, so
// applying a job twice, or late, is harmless.
package subrole

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Tier is a Twitch subscription tier. The zero value, TierNone, means not
// subscribed.
type Tier int

// The subscription tiers. Prime subscriptions arrive from Twitch as Tier1.
const (
	TierNone Tier = 0
	Tier1    Tier = 1
	Tier2    Tier = 2
	Tier3    Tier = 3
)

// ParseTier parses a Twitch tier string ("1000", "2000", "3000").
func ParseTier(s string) (Tier, error) {
	switch s {
	case "1000":
		return Tier1, nil
	case "2000":
		return Tier2, nil
	case "3000":
		return Tier3, nil
	}
	return TierNone, fmt.Errorf("subrole: unknown tier %q (want 1000, 2000 or 3000)", s)
}

// String returns "tier 1", "tier 2", "tier 3" or "none".
func (t Tier) String() string {
	if t >= Tier1 && t <= Tier3 {
		return fmt.Sprintf("tier %d", int(t))
	}
	return "none"
}

// Valid reports whether t is one of the three paid tiers.
func (t Tier) Valid() bool { return t >= Tier1 && t <= Tier3 }

// Source says where a piece of subscription state was observed.
type Source string

// The sources of subscription state.
const (
	SourceEventSub Source = "eventsub" // an EventSub notification
	SourceHelix    Source = "helix"    // a Helix read (reconcile, resync)
	SourceOAuth    Source = "oauth"    // the member's own check during /link
)

// Subscription is what subrole knows about one Twitch user's subscription to
// the broadcaster. It is kept for unlinked Twitch users too, so a member's
// roles are right the moment they link.
type Subscription struct {
	TwitchUserID     string    `json:"twitch_user_id"`
	TwitchLogin      string    `json:"twitch_login,omitempty"`
	Tier             Tier      `json:"tier"`                // TierNone when never subscribed
	IsGift           bool      `json:"is_gift,omitempty"`   // the current subscription was gifted
	GifterID         string    `json:"gifter_id,omitempty"` // known from Helix only
	GifterLogin      string    `json:"gifter_login,omitempty"`
	StreakMonths     int       `json:"streak_months,omitempty"`
	CumulativeMonths int       `json:"cumulative_months,omitempty"`
	GiftsGiven       int       `json:"gifts_given,omitempty"` // subs this user has gifted to the channel
	Started          time.Time `json:"started,omitzero"`      // first seen subscribed in the current run
	Ended            time.Time `json:"ended,omitzero"`        // zero while active
	LastEvent        time.Time `json:"last_event,omitzero"`   // observation time of the newest applied fact
	LastEventType    string    `json:"last_event_type,omitempty"`
	Source           Source    `json:"source,omitempty"`
}

// Active reports whether the subscription is current (a tier and no end).
func (s Subscription) Active() bool { return s.Tier.Valid() && s.Ended.IsZero() }

// Link joins one Discord member to one Twitch account. Both sides are unique:
// a Twitch account links to at most one Discord member and the other way round.
type Link struct {
	DiscordUserID string `json:"discord_user_id"`
	TwitchUserID  string `json:"twitch_user_id"`
	TwitchLogin   string `json:"twitch_login,omitempty"`
	// DiscordName is the member's Discord username when they ran /link
	// (empty for links imported or made before it was kept): for people
	// to read, never to decide anything.
	DiscordName string    `json:"discord_name,omitempty"`
	Linked      time.Time `json:"linked"`
}

// Member is a linked Discord member together with the subscription state of
// their Twitch account (the zero Subscription when none is known).
type Member struct {
	Link Link
	Sub  Subscription
}

// EventType is an EventSub subscription type.
type EventType string

// The EventSub types subrole consumes.
const (
	EventSubscribe           EventType = "channel.subscribe"
	EventSubscriptionMessage EventType = "channel.subscription.message"
	EventSubscriptionEnd     EventType = "channel.subscription.end"
	EventSubscriptionGift    EventType = "channel.subscription.gift"
	EventAuthorizationRevoke EventType = "user.authorization.revoke"
)

// Known reports whether subrole handles events of type t.
func (t EventType) Known() bool {
	switch t {
	case EventSubscribe, EventSubscriptionMessage, EventSubscriptionEnd, EventSubscriptionGift, EventAuthorizationRevoke:
		return true
	}
	return false
}

// Event is one decoded EventSub notification. The eventsub package owns the
// wire format; the core sees only this.
type Event struct {
	MessageID string    `json:"message_id"`
	Type      EventType `json:"type"`
	Sent      time.Time `json:"sent"`     // Twitch-Eventsub-Message-Timestamp: the observation time
	Received  time.Time `json:"received"` // when subrole received it

	UserID    string `json:"user_id,omitempty"` // the subscriber, gifter or revoking user; empty for anonymous gifts
	UserLogin string `json:"user_login,omitempty"`

	Tier             Tier `json:"tier,omitempty"`
	IsGift           bool `json:"is_gift,omitempty"`
	CumulativeMonths int  `json:"cumulative_months,omitempty"`
	StreakMonths     int  `json:"streak_months,omitempty"`
	GiftTotal        int  `json:"gift_total,omitempty"`            // channel.subscription.gift: subs in this gift
	GiftCumulative   int  `json:"gift_cumulative_total,omitempty"` // the gifter's all-time total, when shared
	Anonymous        bool `json:"anonymous,omitempty"`

	Raw json.RawMessage `json:"raw,omitempty"` // the "event" object as Twitch sent it
}

// Revocation records that Twitch revoked one of our EventSub subscriptions.
type Revocation struct {
	SubscriptionID string    `json:"subscription_id"`
	Type           EventType `json:"type"`
	Version        string    `json:"version"`
	Status         string    `json:"status"` // authorization_revoked, user_removed, notification_failures_exceeded, version_removed
	At             time.Time `json:"at"`
}

// RoleJob asks the Discord side to make a member's managed roles equal
// Desired. Jobs carry the whole desired state, not a delta: the newest job
// for a member supersedes older ones, and a job applied twice is a no-op.
type RoleJob struct {
	Seq           uint64    `json:"seq"` // outbox position, assigned by the store
	DiscordUserID string    `json:"discord_user_id"`
	TwitchUserID  string    `json:"twitch_user_id,omitempty"`
	Desired       []string  `json:"desired"` // role IDs, a subset of Managed
	Managed       []string  `json:"managed"` // every role subrole manages; others are never touched
	Reason        string    `json:"reason"`  // for Discord's audit log and ours
	EventID       string    `json:"event_id,omitempty"`
	Observed      time.Time `json:"observed,omitzero"` // when the causing input reached subrole (latency)
	Created       time.Time `json:"created"`
}

// AuditKind classifies audit log entries.
type AuditKind string

// The audit entry kinds.
const (
	AuditSubscription AuditKind = "subscription" // subscription state changed
	AuditLink         AuditKind = "link"         // a link was created or removed
	AuditRoles        AuditKind = "roles"        // roles were applied in Discord
	AuditRoleFailure  AuditKind = "role_failure" // a role job failed for good
	AuditRevocation   AuditKind = "revocation"   // Twitch revoked an EventSub subscription
	AuditEvent        AuditKind = "event"        // an event was dropped (undecodable, unknown or stale)
	AuditReconcile    AuditKind = "reconcile"    // a reconcile pass finished: drift counts
)

// AuditEntry is one line of the append-only audit log: what changed, why,
// and the state before and after.
type AuditEntry struct {
	Seq           uint64    `json:"seq"` // assigned by the store
	Time          time.Time `json:"time"`
	Kind          AuditKind `json:"kind"`
	TwitchUserID  string    `json:"twitch_user_id,omitempty"`
	DiscordUserID string    `json:"discord_user_id,omitempty"`
	EventID       string    `json:"event_id,omitempty"`
	Before        string    `json:"before,omitempty"`
	After         string    `json:"after,omitempty"`
	Detail        string    `json:"detail,omitempty"`
}

// Sentinel errors. Adapters map them to HTTP statuses or user messages at the edge.
var (
	// ErrNotFound means the requested record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a uniqueness rule would be broken (a Twitch account already linked elsewhere).
	ErrConflict = errors.New("conflict")
)
