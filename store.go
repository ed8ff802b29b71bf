package subrole

import (
	"context"
	"time"
)

// Store is subrole's durable state. The store package implements it on
// bbolt. Implementations are safe for concurrent use.
type Store interface {
	// Update runs fn in a read-write transaction and commits it; the change is
	// on disk when Update returns nil. If fn returns an error nothing fn did is
	// kept and Update returns that error. Concurrent calls may share one
	// commit, and fn may be called more than once, so fn must act only through
	// tx and must not keep results from a call that was not committed.
	Update(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction. Write methods of tx fail.
	View(ctx context.Context, fn func(Tx) error) error
}

// Tx is one transaction on the Store. Its methods must not be used after the
// function it was passed to returns. Lookups of a missing record return an
// error wrapping ErrNotFound. A max of 0 returns nothing and a negative max
// means no limit. Times stored in keys (MarkSeen, ScheduleCheck, ScheduleOutreach) must be
// non-zero and between 1970 and 2262.
type Tx interface {
	// SeenMessage reports whether an EventSub message id was recorded by MarkSeen.
	SeenMessage(id string) (bool, error)
	// MarkSeen records an EventSub message id, received at at, for deduplication.
	MarkSeen(id string, at time.Time) error
	// PruneSeen forgets message ids received before before, at most max of them,
	// and returns how many it removed.
	PruneSeen(before time.Time, max int) (int, error)

	// AppendInbox appends an accepted event to the inbox and returns its position.
	AppendInbox(e Event) (uint64, error)
	// Inbox returns up to max inbox entries in order, starting after position after.
	Inbox(after uint64, max int) ([]InboxEntry, error)
	// DeleteInbox removes a processed inbox entry. Deleting a missing entry is not an error.
	DeleteInbox(seq uint64) error

	// Subscription returns the state of one Twitch user (ErrNotFound if none).
	Subscription(twitchUserID string) (Subscription, error)
	// PutSubscription stores s, replacing the state of s.TwitchUserID.
	PutSubscription(s Subscription) error
	// ForEachSubscription calls fn for every stored subscription, ordered by
	// Twitch user id, until fn returns an error, which it returns.
	ForEachSubscription(fn func(Subscription) error) error

	// LinkByDiscord returns the link of a Discord user (ErrNotFound if none).
	LinkByDiscord(discordUserID string) (Link, error)
	// LinkByTwitch returns the link of a Twitch user (ErrNotFound if none).
	LinkByTwitch(twitchUserID string) (Link, error)
	// PutLink stores l. It replaces the Discord user's previous link, if any,
	// and fails with an error wrapping ErrConflict when l.TwitchUserID is
	// linked to another Discord user.
	PutLink(l Link) error
	// DeleteLink removes the link of a Discord user. Deleting a missing link is not an error.
	DeleteLink(discordUserID string) error
	// ForEachLink calls fn for every link, ordered by Discord user id, until fn
	// returns an error, which it returns.
	ForEachLink(fn func(Link) error) error

	// AppendRoleJob appends j to the outbox and returns its position (j.Seq is ignored).
	AppendRoleJob(j RoleJob) (uint64, error)
	// RoleJobs returns up to max outbox jobs in order, starting after position after,
	// with Seq set.
	RoleJobs(after uint64, max int) ([]RoleJob, error)
	// DeleteRoleJob removes a finished job. Deleting a missing job is not an error.
	DeleteRoleJob(seq uint64) error

	// AppendAudit appends e to the audit log (e.Seq is ignored).
	AppendAudit(e AuditEntry) error
	// Audit returns up to max audit entries in order, starting after position after.
	Audit(after uint64, max int) ([]AuditEntry, error)

	// PutRevocation records an EventSub revocation.
	PutRevocation(r Revocation) error
	// Revocations returns every recorded revocation in the order recorded.
	Revocations() ([]Revocation, error)

	// ScheduleCheck asks for the roles of a Twitch user to be recomputed at at.
	// Scheduling the same user and time twice stores one check.
	ScheduleCheck(c Check) error
	// DueChecks returns up to max checks due at or before now, earliest first.
	DueChecks(now time.Time, max int) ([]Check, error)
	// NextCheck returns the earliest scheduled check; false when there is none.
	NextCheck() (Check, bool, error)
	// DeleteCheck removes a check. Deleting a missing check is not an error.
	DeleteCheck(c Check) error

	// Outreach returns what outreach remembers about a Discord user
	// (ErrNotFound if nothing).
	Outreach(discordUserID string) (OutreachRecord, error)
	// PutOutreach stores r, replacing the record of r.DiscordUserID.
	PutOutreach(r OutreachRecord) error
	// ScheduleOutreach stores j. A job of the same time, kind and user
	// replaces it.
	ScheduleOutreach(j OutreachJob) error
	// DueOutreach returns up to max jobs due at or before now, earliest first.
	DueOutreach(now time.Time, max int) ([]OutreachJob, error)
	// NextOutreach returns the earliest scheduled job; false when there is none.
	NextOutreach() (OutreachJob, bool, error)
	// DeleteOutreach removes a job (by its StoreKey when set, else by time, kind and user). Deleting a
	// missing job is not an error.
	DeleteOutreach(j OutreachJob) error

	// OAuthState returns the pending OAuth round trip stored under key (the
	// StateToken's Key), used or not (ErrNotFound if none).
	OAuthState(key string) (OAuthState, error)
	// PutOAuthState stores s under s.Key, replacing it.
	PutOAuthState(s OAuthState) error
	// PruneOAuthStates deletes states that expired at or before now, at most
	// max of them, and returns how many it removed. It visits only expired
	// states, however many are pending.
	PruneOAuthStates(now time.Time, max int) (int, error)
	// ForEachOAuthState calls fn for every stored state of purpose p that
	// expires after now, used or not, soonest first, until fn returns an
	// error, which it returns.
	ForEachOAuthState(p OAuthPurpose, now time.Time, fn func(OAuthState) error) error
	// CountOAuthStates returns how many stored states of purpose p expire
	// after now, used or not, counting at most limit of them (limit < 0:
	// no limit). It costs at most limit steps, whatever is stored.
	CountOAuthStates(p OAuthPurpose, now time.Time, limit int) (int, error)

	// BroadcasterToken returns the broadcaster's stored authorization (ErrNotFound if none).
	BroadcasterToken() (BroadcasterToken, error)
	// PutBroadcasterToken stores t, replacing the previous one.
	PutBroadcasterToken(t BroadcasterToken) error

	// RecentAudit returns up to max audit entries before position before
	// (0: from the newest), newest first, with Seq set.
	RecentAudit(before uint64, max int) ([]AuditEntry, error)
	// Counts returns how many links, inbox events and outbox jobs are
	// stored and the position of the newest audit entry, without decoding them.
	Counts() (Counts, error)

	// DashboardSession returns the dashboard session stored under key
	// (ErrNotFound if none), expired or not.
	DashboardSession(key string) (DashboardSession, error)
	// PutDashboardSession stores s under s.Key, replacing it.
	PutDashboardSession(s DashboardSession) error
	// DeleteDashboardSession removes a session. Deleting a missing one is not an error.
	DeleteDashboardSession(key string) error
	// PruneDashboardSessions deletes the sessions that expired at or
	// before now and returns how many it removed.
	PruneDashboardSessions(now time.Time) (int, error)

	// Meta returns a small value stored under key (ErrNotFound if none).
	Meta(key string) ([]byte, error)
	// PutMeta stores a small value under key.
	PutMeta(key string, value []byte) error
}

// InboxEntry is an accepted event waiting to be applied.
type InboxEntry struct {
	Seq   uint64
	Event Event
}

// Counts is what Tx.Counts reports.
type Counts struct {
	Links, Inbox, Outbox int
	LastAudit            uint64 // 0 when the audit log is empty
}

// Check is a scheduled recomputation of one Twitch user's roles, used when a
// grace period runs out.
type Check struct {
	At           time.Time `json:"at"`
	TwitchUserID string    `json:"twitch_user_id"`
}
