package subrole

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Service is the core: it accepts events into the inbox, applies them to
// subscription state in order, and turns state changes of linked members into
// role jobs in the outbox. Every change commits together with its audit entry
// and its role job, so a crash never leaves one without the other.
//
// Create one with NewService, start Run in a goroutine, and hand the Service
// to the adapters: the eventsub handler calls AcceptEvent, the Discord role
// applier reads the outbox through RoleJobs and CompleteRoleJobs.
type Service struct {
	store  Store
	policy Policy
	now    func() time.Time
	log    *slog.Logger

	inboxReady   chan struct{} // an event was accepted
	outboxReady  chan struct{} // a role job was committed
	checksReady  chan struct{} // a check was scheduled
	batchSize    int
	working      sync.Mutex    // one drain of the inbox and checks at a time (Run and ReconcileWith both drain)
	reconciling  atomic.Bool   // one reconcile pass at a time
	reconcileNow chan struct{} // RequestReconcile
	onRevocation func(Revocation)

	outreach      OutreachPolicy
	outreachReady chan struct{} // a join was recorded (outreach.go)
	outreachWake  chan struct{} // WakeOutreach: also cuts the pause between messages short
}

// Config configures a Service. Every field's zero value is usable except Store.
type Config struct {
	// Store is the durable state. Required.
	Store Store
	// Policy maps subscriptions to roles. The zero Policy manages no roles.
	Policy Policy
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Logger receives operational logs. Nil discards them.
	Logger *slog.Logger
	// BatchSize is how many inbox events are applied per commit. Zero means 256.
	BatchSize int
	// OnRevocation, if not nil, is called after a revocation is recorded
	// (not for duplicates), so that the subscription can be repaired. It is
	// called on the webhook's request goroutine and must not block.
	OnRevocation func(Revocation)
	// Outreach says which DMs members get on join, later and monthly
	// (outreach.go). The zero value sends none.
	Outreach OutreachPolicy
}

// NewService returns a Service for cfg.
func NewService(cfg Config) *Service {
	s := &Service{
		store:       cfg.Store,
		policy:      cfg.Policy,
		now:         cfg.Now,
		log:         cfg.Logger,
		batchSize:   cfg.BatchSize,
		inboxReady:  make(chan struct{}, 1),
		outboxReady: make(chan struct{}, 1),
		checksReady: make(chan struct{}, 1),

		reconcileNow: make(chan struct{}, 1),
		onRevocation: cfg.OnRevocation,

		outreach:      cfg.Outreach,
		outreachReady: make(chan struct{}, 1),
		outreachWake:  make(chan struct{}, 1),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.batchSize <= 0 {
		s.batchSize = 256
	}
	return s
}

// Policy returns the role policy the service applies.
func (s *Service) Policy() Policy { return s.policy }

// Now returns the service clock's current time.
func (s *Service) Now() time.Time { return s.now() }

// signal wakes whoever waits on ch without ever blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// AcceptEvent records e, deduplicated by message id, in one commit. When it
// returns nil the event is on disk; a duplicate returns true and changes
// nothing.
//
// When no earlier event waits in the inbox, the event is applied in that
// same commit (subscription state, audit entry and role job), so one fsync
// both acknowledges it and queues its role change; order is kept because
// nothing older is pending. Otherwise, or when applying it fails, it is
// appended to the inbox, which Run applies in order.
func (s *Service) AcceptEvent(ctx context.Context, e Event) (duplicate bool, err error) {
	if e.Received.IsZero() {
		e.Received = s.now()
	}
	if e.Sent.IsZero() {
		e.Sent = e.Received
	}
	var queued, jobs int
	accept := func(inline bool) error {
		return s.store.Update(ctx, func(tx Tx) error {
			duplicate, queued, jobs = false, 0, 0
			seen, err := tx.SeenMessage(e.MessageID)
			if err != nil || seen {
				duplicate = seen
				return err
			}
			if err := tx.MarkSeen(e.MessageID, e.Received); err != nil {
				return err
			}
			if inline {
				waiting, err := tx.Inbox(0, 1)
				if err != nil {
					return err
				}
				if len(waiting) == 0 {
					j, err := s.apply(tx, e)
					if err != nil {
						return &inlineError{err}
					}
					jobs = j
					return nil
				}
			}
			queued = 1
			_, err = tx.AppendInbox(e)
			return err
		})
	}
	err = accept(true)
	var ie *inlineError
	if errors.As(err, &ie) {
		// Applying it failed: keep it in the inbox, where Run retries it and
		// sets it aside if it never applies. The webhook still gets its 2xx.
		err = accept(false)
	}
	if err != nil {
		return false, fmt.Errorf("subrole: accept event %s: %w", e.MessageID, err)
	}
	if queued > 0 {
		signal(s.inboxReady)
	}
	if jobs > 0 {
		signal(s.outboxReady)
	}
	return duplicate, nil
}

// inlineError marks a failure to apply an event while accepting it.
type inlineError struct{ err error }

func (e *inlineError) Error() string { return "apply: " + e.err.Error() }
func (e *inlineError) Unwrap() error { return e.err }

// RecordRevocation records that Twitch revoked one of our EventSub
// subscriptions, deduplicated by message id, with an audit entry.
func (s *Service) RecordRevocation(ctx context.Context, messageID string, r Revocation) (duplicate bool, err error) {
	err = s.store.Update(ctx, func(tx Tx) error {
		seen, err := tx.SeenMessage(messageID)
		if err != nil || seen {
			duplicate = seen
			return err
		}
		if err := tx.MarkSeen(messageID, s.now()); err != nil {
			return err
		}
		if err := tx.PutRevocation(r); err != nil {
			return err
		}
		return tx.AppendAudit(AuditEntry{
			Time: s.now(), Kind: AuditRevocation, EventID: messageID,
			Detail: fmt.Sprintf("%s subscription %s revoked: %s", r.Type, r.SubscriptionID, r.Status),
		})
	})
	if err != nil {
		return false, fmt.Errorf("subrole: record revocation %s: %w", r.SubscriptionID, err)
	}
	if !duplicate {
		s.log.Error("twitch revoked an eventsub subscription; events of this type stop until it is re-created",
			"subscription_id", r.SubscriptionID, "type", string(r.Type), "status", r.Status,
			"fix", revocationFix(r.Status))
		if s.onRevocation != nil {
			s.onRevocation(r)
		}
	}
	return duplicate, nil
}

func revocationFix(status string) string {
	switch status {
	case "authorization_revoked", "user_removed":
		return "the broadcaster must authorize subrole again"
	case "notification_failures_exceeded":
		return "the webhook was unreachable or slow; check that the public URL answers (subrole re-creates the subscription)"
	case "version_removed":
		return "upgrade subrole"
	}
	return "re-create the subscription"
}

// Run applies inbox events and due checks until ctx is done. It returns
// ctx.Err() after a clean stop; a store failure is logged and retried with
// backoff, never fatal.
func (s *Service) Run(ctx context.Context) error {
	const maxBackoff = 5 * time.Second
	backoff := 50 * time.Millisecond
	pruneEvery := time.NewTicker(10 * time.Minute)
	defer pruneEvery.Stop()
	if err := s.pruneSeen(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("core: pruning seen message ids failed", "err", err)
	}
	for {
		wait, err := s.work(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			s.log.Error("core: processing failed, will retry", "err", err, "retry_in", backoff)
			wait, backoff = backoff, min(backoff*2, maxBackoff)
		} else {
			backoff = 50 * time.Millisecond
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-s.inboxReady:
		case <-s.checksReady:
		case <-timer.C:
		case <-pruneEvery.C:
			if err := s.pruneSeen(ctx); err != nil {
				s.log.Error("core: pruning seen message ids failed", "err", err)
			}
		}
		timer.Stop()
	}
}

// Wake makes Run look at its inbox and its scheduled checks now. It never
// blocks. Run wakes by itself when an event is queued, a check is scheduled
// or falls due; this is for a clock that jumps (tests).
func (s *Service) Wake() { signal(s.checksReady) }

// work drains the inbox and runs due checks. It returns how long Run may
// sleep before the next scheduled check. Calls are serialized: two drains
// at once would both try the same failing event, and the second would set
// aside whatever event had become first by then.
func (s *Service) work(ctx context.Context) (time.Duration, error) {
	s.working.Lock()
	defer s.working.Unlock()
	for {
		_, more, err := s.processInbox(ctx)
		if err != nil {
			return 0, err
		}
		if !more {
			break
		}
	}
	for {
		n, err := s.runDueChecks(ctx)
		if err != nil {
			return 0, err
		}
		if n < s.batchSize {
			break
		}
	}
	var next Check
	var ok bool
	err := s.store.View(ctx, func(tx Tx) error {
		var err error
		next, ok, err = tx.NextCheck()
		return err
	})
	if err != nil {
		return 0, err
	}
	if !ok {
		return maxSleep, nil
	}
	return min(max(next.At.Sub(s.now()), 0), maxSleep), nil
}

// maxSleep bounds how long Run and RunOutreach sleep before looking at their
// schedule again. Go's timers run on the monotonic clock, which stops while
// the host is suspended (a laptop, a paused VM) and ignores a wall clock
// set forward, so a sleep of days could wake long after what it waited for.
const maxSleep = time.Hour

// processInbox applies up to max inbox events in one commit and returns how
// many it took, and whether more may be waiting. When the batch cannot be
// committed it tries the first event alone, and an event that cannot be
// applied even alone is set aside (dead-lettered) with an audit entry and
// an error log, so one bad event never blocks the ones behind it.
func (s *Service) processInbox(ctx context.Context) (n int, more bool, err error) {
	n, _, err = s.applyInbox(ctx, s.batchSize)
	if err == nil {
		return n, n == s.batchSize, nil
	}
	if ctx.Err() != nil {
		return 0, false, err
	}
	var failed uint64
	if n, failed, err = s.applyInbox(ctx, 1); err == nil {
		return n, true, nil // the culprit is further back; go on one at a time
	}
	if failed == 0 { // not an event's fault (the commit failed): retry later
		return 0, false, err
	}
	if derr := s.deadLetter(ctx, failed, err); derr != nil {
		return 0, false, fmt.Errorf("%w; setting it aside failed too: %v", err, derr)
	}
	return 1, true, nil
}

// applyInbox applies up to max inbox events in one commit. When an event
// cannot be applied it also returns that event's inbox position (0 when the
// failure was not an event's, such as a failed commit).
func (s *Service) applyInbox(ctx context.Context, max int) (n int, failed uint64, err error) {
	var jobs int
	err = s.store.Update(ctx, func(tx Tx) error {
		n, jobs, failed = 0, 0, 0
		entries, err := tx.Inbox(0, max)
		if err != nil {
			return err
		}
		for _, en := range entries {
			j, err := s.apply(tx, en.Event)
			if err != nil {
				failed = en.Seq
				return fmt.Errorf("apply event %s: %w", en.Event.MessageID, err)
			}
			if err := tx.DeleteInbox(en.Seq); err != nil {
				return err
			}
			jobs += j
		}
		n = len(entries)
		return nil
	})
	if err != nil {
		return 0, failed, fmt.Errorf("subrole: process inbox: %w", err)
	}
	if jobs > 0 {
		signal(s.outboxReady)
	}
	if n > 0 {
		s.log.Debug("core: applied events", "count", n, "role_jobs", jobs)
	}
	return n, 0, nil
}

// deadLetter removes the inbox event at position seq, which cannot be
// applied, and keeps it in the audit log (raw event included) for an
// operator. It removes nothing when that event is no longer in the inbox.
func (s *Service) deadLetter(ctx context.Context, seq uint64, cause error) error {
	var e Event
	found := false
	err := s.store.Update(ctx, func(tx Tx) error {
		found = false
		entries, err := tx.Inbox(seq-1, 1)
		if err != nil || len(entries) == 0 || entries[0].Seq != seq {
			return err
		}
		found, e = true, entries[0].Event
		if err := tx.DeleteInbox(entries[0].Seq); err != nil {
			return err
		}
		return tx.AppendAudit(AuditEntry{Time: s.now(), Kind: AuditEvent, EventID: e.MessageID, TwitchUserID: e.UserID,
			Before: string(e.Raw), Detail: fmt.Sprintf("set aside %s: it cannot be applied: %v", e.Type, cause)})
	})
	if err != nil || !found {
		return err
	}
	s.log.Error("core: an event cannot be applied and was set aside in the audit log; the next reconcile repairs its effect",
		"event_id", e.MessageID, "type", string(e.Type), "twitch_user", e.UserID, "err", cause)
	return nil
}

// apply applies one event inside tx and returns how many role jobs it queued.
func (s *Service) apply(tx Tx, e Event) (int, error) {
	switch e.Type {
	case EventSubscribe, EventSubscriptionMessage, EventSubscriptionEnd:
		return s.applySubscription(tx, e)
	case EventSubscriptionGift:
		return 0, s.applyGift(tx, e)
	case EventAuthorizationRevoke:
		return s.applyAuthRevoke(tx, e)
	}
	// The webhook only accepts known types; anything else is recorded and dropped.
	return 0, tx.AppendAudit(AuditEntry{Time: s.now(), Kind: AuditEvent, EventID: e.MessageID,
		TwitchUserID: e.UserID, Detail: fmt.Sprintf("dropped event of unknown type %q", e.Type)})
}

// loadSubscription returns the stored state of a Twitch user, or a fresh one.
func loadSubscription(tx Tx, twitchUserID string) (Subscription, error) {
	sub, err := tx.Subscription(twitchUserID)
	if errors.Is(err, ErrNotFound) {
		return Subscription{TwitchUserID: twitchUserID}, nil
	}
	return sub, err
}

func (s *Service) applySubscription(tx Tx, e Event) (int, error) {
	if e.UserID == "" {
		return 0, errors.New("event has no user id")
	}
	before, err := loadSubscription(tx, e.UserID)
	if err != nil {
		return 0, err
	}
	if e.Sent.Before(before.LastEvent) {
		// Twitch retried an older message after a newer fact was applied
		// (or a reconcile observed a later state): it must not win.
		return 0, tx.AppendAudit(AuditEntry{Time: s.now(), Kind: AuditEvent, EventID: e.MessageID,
			TwitchUserID: e.UserID, Detail: fmt.Sprintf("ignored stale %s sent %s; state is from %s",
				e.Type, e.Sent.Format(time.RFC3339Nano), before.LastEvent.Format(time.RFC3339Nano))})
	}
	after := before
	after.TwitchLogin = firstNonEmpty(e.UserLogin, before.TwitchLogin)
	after.LastEvent, after.LastEventType, after.Source = e.Sent, string(e.Type), SourceEventSub
	switch e.Type {
	case EventSubscribe, EventSubscriptionMessage:
		if !before.Active() {
			after.Started = e.Sent
		}
		after.Tier, after.Ended = e.Tier, time.Time{}
		if e.Type == EventSubscribe {
			after.IsGift = e.IsGift
			if !e.IsGift {
				after.GifterID, after.GifterLogin = "", ""
			}
		} else {
			after.CumulativeMonths = max(e.CumulativeMonths, before.CumulativeMonths)
			if e.StreakMonths > 0 {
				after.StreakMonths = e.StreakMonths
			}
		}
	case EventSubscriptionEnd:
		if before.Active() {
			after.Ended = e.Sent
		}
		if !before.Tier.Valid() {
			after.Tier = e.Tier // remember what ended even if we never saw it start
			after.Ended = e.Sent
		}
	}
	return s.commitSubscription(tx, before, after, e.MessageID, e.Received, string(e.Type))
}

// commitSubscription stores after, audits the change, schedules the end of a
// grace period, and queues a role job when a linked member's roles change.
func (s *Service) commitSubscription(tx Tx, before, after Subscription, eventID string, observed time.Time, why string) (int, error) {
	if err := tx.PutSubscription(after); err != nil {
		return 0, err
	}
	now := s.now()
	if err := tx.AppendAudit(AuditEntry{Time: now, Kind: AuditSubscription, TwitchUserID: after.TwitchUserID,
		EventID: eventID, Before: describe(before), After: describe(after), Detail: why}); err != nil {
		return 0, err
	}
	if end, ok := s.policy.GraceEnds(after, now); ok {
		if err := tx.ScheduleCheck(Check{At: end, TwitchUserID: after.TwitchUserID}); err != nil {
			return 0, err
		}
		signal(s.checksReady)
	}
	link, err := tx.LinkByTwitch(after.TwitchUserID)
	if errors.Is(err, ErrNotFound) {
		return 0, nil // state is kept; roles follow when they link
	}
	if err != nil {
		return 0, err
	}
	was := DesiredRoles(s.policy, Member{Link: link, Sub: before}, now)
	will := DesiredRoles(s.policy, Member{Link: link, Sub: after}, now)
	if Diff(was, will, s.policy.Managed()).Empty() {
		return 0, nil
	}
	return 1, s.queueRoles(tx, link, will, eventID, observed, reasonFor(why, after))
}

func (s *Service) queueRoles(tx Tx, link Link, desired []string, eventID string, observed time.Time, reason string) error {
	_, err := tx.AppendRoleJob(RoleJob{
		DiscordUserID: link.DiscordUserID, TwitchUserID: link.TwitchUserID,
		Desired: desired, Managed: s.policy.Managed(), Reason: reason,
		EventID: eventID, Observed: observed, Created: s.now(),
	})
	return err
}

func (s *Service) applyGift(tx Tx, e Event) error {
	if e.Anonymous || e.UserID == "" {
		return nil // nobody to credit
	}
	before, err := loadSubscription(tx, e.UserID)
	if err != nil {
		return err
	}
	after := before
	after.TwitchLogin = firstNonEmpty(e.UserLogin, before.TwitchLogin)
	if e.GiftCumulative > 0 {
		// The all-time total is an assignment, so a duplicate delivery under a
		// new message id cannot count twice.
		after.GiftsGiven = max(before.GiftsGiven, e.GiftCumulative)
	} else {
		after.GiftsGiven += e.GiftTotal
	}
	if err := tx.PutSubscription(after); err != nil {
		return err
	}
	return tx.AppendAudit(AuditEntry{Time: s.now(), Kind: AuditSubscription, TwitchUserID: e.UserID, EventID: e.MessageID,
		Before: fmt.Sprintf("gifts_given=%d", before.GiftsGiven), After: fmt.Sprintf("gifts_given=%d", after.GiftsGiven),
		Detail: fmt.Sprintf("gifted %d %s subs", e.GiftTotal, e.Tier)})
}

func (s *Service) applyAuthRevoke(tx Tx, e Event) (int, error) {
	if e.UserID == "" {
		return 0, nil
	}
	link, err := tx.LinkByTwitch(e.UserID)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if err := s.unlink(tx, link, e.MessageID, "the Twitch user withdrew subrole's authorization"); err != nil {
		return 0, err
	}
	return 1, s.queueRoles(tx, link, nil, e.MessageID, e.Received, "subrole: Twitch authorization withdrawn")
}

// unlink deletes a link and audits it. The caller queues the role removal.
func (s *Service) unlink(tx Tx, link Link, eventID, why string) error {
	if err := tx.DeleteLink(link.DiscordUserID); err != nil {
		return err
	}
	return tx.AppendAudit(AuditEntry{Time: s.now(), Kind: AuditLink, TwitchUserID: link.TwitchUserID,
		DiscordUserID: link.DiscordUserID, EventID: eventID,
		Before: "linked to " + firstNonEmpty(link.TwitchLogin, link.TwitchUserID), After: "unlinked", Detail: why})
}

// runDueChecks recomputes the roles of members whose grace period ran out.
func (s *Service) runDueChecks(ctx context.Context) (int, error) {
	var n, jobs int
	err := s.store.Update(ctx, func(tx Tx) error {
		n, jobs = 0, 0
		now := s.now()
		checks, err := tx.DueChecks(now, s.batchSize)
		if err != nil {
			return err
		}
		for _, c := range checks {
			if err := tx.DeleteCheck(c); err != nil {
				return err
			}
			sub, err := loadSubscription(tx, c.TwitchUserID)
			if err != nil {
				return err
			}
			link, err := tx.LinkByTwitch(c.TwitchUserID)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			desired := DesiredRoles(s.policy, Member{Link: link, Sub: sub}, now)
			if err := s.queueRoles(tx, link, desired, "", now, "subrole: grace period after the subscription ended is over"); err != nil {
				return err
			}
			jobs++
		}
		n = len(checks)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("subrole: run due checks: %w", err)
	}
	if jobs > 0 {
		signal(s.outboxReady)
	}
	return n, nil
}

func (s *Service) pruneSeen(ctx context.Context) error {
	cutoff := s.now().Add(-24 * time.Hour)
	for {
		var n int
		err := s.store.Update(ctx, func(tx Tx) error {
			var err error
			n, err = tx.PruneSeen(cutoff, 10000)
			return err
		})
		if err != nil || n < 10000 {
			return err
		}
	}
}

// OutboxReady returns a channel that receives a value after role jobs are
// committed. The role applier waits on it; one receiver only.
func (s *Service) OutboxReady() <-chan struct{} { return s.outboxReady }

// RoleJobs returns up to max pending role jobs after position after, oldest first.
func (s *Service) RoleJobs(ctx context.Context, after uint64, max int) ([]RoleJob, error) {
	var jobs []RoleJob
	err := s.store.View(ctx, func(tx Tx) error {
		var err error
		jobs, err = tx.RoleJobs(after, max)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("subrole: read outbox: %w", err)
	}
	return jobs, nil
}

// CompleteRoleJobs removes finished jobs from the outbox and appends their
// audit entries, in one commit, counting the failures among them (see
// DashboardStats.RoleFailures).
func (s *Service) CompleteRoleJobs(ctx context.Context, seqs []uint64, entries []AuditEntry) error {
	err := s.store.Update(ctx, func(tx Tx) error {
		for _, seq := range seqs {
			if err := tx.DeleteRoleJob(seq); err != nil {
				return err
			}
		}
		failed := 0
		for _, e := range entries {
			if err := tx.AppendAudit(e); err != nil {
				return err
			}
			if e.Kind == AuditRoleFailure {
				failed++
			}
		}
		if failed > 0 {
			return addMetaCount(tx, metaRoleFailures, failed)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("subrole: complete role jobs: %w", err)
	}
	return nil
}

// describe renders subscription state for the audit log.
func describe(s Subscription) string {
	if !s.Tier.Valid() {
		return "not subscribed"
	}
	out := s.Tier.String()
	if s.IsGift {
		out += " gift"
	}
	if !s.Ended.IsZero() {
		out += " ended " + s.Ended.UTC().Format(time.RFC3339)
	}
	if s.CumulativeMonths > 0 {
		out += fmt.Sprintf(" cumulative=%d", s.CumulativeMonths)
	}
	if s.StreakMonths > 0 {
		out += fmt.Sprintf(" streak=%d", s.StreakMonths)
	}
	return out
}

// reasonFor is the audit log reason Discord shows for a role change.
func reasonFor(why string, s Subscription) string {
	return fmt.Sprintf("subrole: Twitch %s (%s, %s)", why, firstNonEmpty(s.TwitchLogin, s.TwitchUserID), describe(s))
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// Link joins a Discord member to a Twitch account and queues the roles the
// member should now hold. If the Discord member was linked to another Twitch
// account, that link is replaced. A Twitch account linked to a different
// Discord member fails with an error wrapping ErrConflict and changes nothing.
func (s *Service) Link(ctx context.Context, l Link) error {
	if l.DiscordUserID == "" || l.TwitchUserID == "" {
		return errors.New("subrole: link needs a Discord and a Twitch user id")
	}
	if l.Linked.IsZero() {
		l.Linked = s.now()
	}
	err := s.store.Update(ctx, func(tx Tx) error {
		old, err := tx.LinkByDiscord(l.DiscordUserID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if l.DiscordName == "" {
			l.DiscordName = old.DiscordName // the same member: keep the name they gave at /link
		}
		if err := tx.PutLink(l); err != nil {
			return err
		}
		before := "unlinked"
		if err == nil {
			before = "linked to " + firstNonEmpty(old.TwitchLogin, old.TwitchUserID)
		}
		if err := tx.AppendAudit(AuditEntry{Time: s.now(), Kind: AuditLink, TwitchUserID: l.TwitchUserID,
			DiscordUserID: l.DiscordUserID, Before: before,
			After: "linked to " + firstNonEmpty(l.TwitchLogin, l.TwitchUserID)}); err != nil {
			return err
		}
		sub, err := loadSubscription(tx, l.TwitchUserID)
		if err != nil {
			return err
		}
		desired := DesiredRoles(s.policy, Member{Link: l, Sub: sub}, s.now())
		return s.queueRoles(tx, l, desired, "", s.now(),
			fmt.Sprintf("subrole: linked Twitch %s (%s)", firstNonEmpty(l.TwitchLogin, l.TwitchUserID), describe(sub)))
	})
	if err != nil {
		return fmt.Errorf("subrole: link discord user %s: %w", l.DiscordUserID, err)
	}
	signal(s.outboxReady)
	return nil
}

// Unlink removes a Discord member's link and queues the removal of every
// managed role. Unlinking a member who is not linked returns an error
// wrapping ErrNotFound.
func (s *Service) Unlink(ctx context.Context, discordUserID, why string) error {
	err := s.store.Update(ctx, func(tx Tx) error {
		link, err := tx.LinkByDiscord(discordUserID)
		if err != nil {
			return err
		}
		if err := s.unlink(tx, link, "", why); err != nil {
			return err
		}
		return s.queueRoles(tx, link, nil, "", s.now(), "subrole: unlinked ("+why+")")
	})
	if err != nil {
		return fmt.Errorf("subrole: unlink discord user %s: %w", discordUserID, err)
	}
	signal(s.outboxReady)
	return nil
}
