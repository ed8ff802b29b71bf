package subrole

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// HelixSubscription is one subscriber as Helix reports it.
type HelixSubscription struct {
	UserID      string
	UserLogin   string
	Tier        Tier
	IsGift      bool
	GifterID    string
	GifterLogin string
}

// SubscriberSource reads the broadcaster's current subscribers from Helix.
// The twitch package implements it.
type SubscriberSource interface {
	// AllSubscribers calls fn with every page of the broadcaster's
	// subscribers (GET /subscriptions, cursor paging). An error from fn stops
	// the walk and is returned.
	AllSubscribers(ctx context.Context, fn func(page []HelixSubscription) error) error
	// Subscribers returns the subscriptions of up to 100 users (GET
	// /subscriptions?user_id=...). A user who is not returned is not subscribed.
	Subscribers(ctx context.Context, userIDs []string) ([]HelixSubscription, error)
}

// MemberRoles reads the roles members hold in Discord.
type MemberRoles interface {
	// AllMemberRoles calls fn with pages of guild members: Discord user id ->
	// role ids. An error from fn stops the walk and is returned.
	AllMemberRoles(ctx context.Context, fn func(page map[string][]string) error) error
}

// ReconcileReport says what a reconcile pass found and fixed.
type ReconcileReport struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Strategy is "all" (every subscriber page) or "linked" (user_id batches of linked members).
	Strategy        string `json:"strategy"`
	HelixRequests   int    `json:"helix_requests"`
	Subscribers     int    `json:"subscribers"` // subscriptions Helix reported
	MissedEnd       int    `json:"missed_end"`
	MissedSubscribe int    `json:"missed_subscribe"`
	TierChange      int    `json:"tier_change"`
	GiftToPaid      int    `json:"gift_to_paid"`
	RolesRepaired   int    `json:"roles_repaired"` // linked members whose Discord roles were edited by hand
	Skipped         int    `json:"skipped"`        // differences left alone because an event is newer than the lag window
	RoleJobs        int    `json:"role_jobs"`
}

// Drifts returns the number of subscription differences fixed.
func (r ReconcileReport) Drifts() int {
	return r.MissedEnd + r.MissedSubscribe + r.TierChange + r.GiftToPaid
}

// HelixLag is how long an EventSub fact is trusted over Helix: Helix's
// subscriber list lags behind the events, so a reconcile never overrides
// state that an event set within this window before the pass started.
const HelixLag = 15 * time.Minute

// ErrReconcileRunning means a reconcile pass is already running.
var ErrReconcileRunning = errors.New("subrole: a reconcile is already running")

// metaLastReconcile stores the last successful ReconcileReport.
const metaLastReconcile = "reconcile_last"

// LastReconcile returns the report of the last successful pass, and false if
// there was none.
func (s *Service) LastReconcile(ctx context.Context) (ReconcileReport, bool, error) {
	var r ReconcileReport
	var ok bool
	err := s.store.View(ctx, func(tx Tx) error {
		b, err := tx.Meta(metaLastReconcile)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ok = true
		return json.Unmarshal(b, &r)
	})
	return r, ok, err
}

// Reconcile compares the broadcaster's subscribers in Helix with the stored
// state and fixes every drift (a missed end, a missed subscribe, a tier
// change, a gift that became paid), queueing role jobs for linked members.
// When roles is not nil it also compares each linked member's Discord roles
// with the desired ones and repairs roles edited by hand. It reads Helix in
// whichever way costs fewer requests: every subscriber page, or user_id
// batches of the linked members. Only one pass runs at a time; a second call
// meanwhile returns ErrReconcileRunning.
func (s *Service) Reconcile(ctx context.Context, src SubscriberSource, roles MemberRoles) (ReconcileReport, error) {
	if !s.reconciling.CompareAndSwap(false, true) {
		return ReconcileReport{}, ErrReconcileRunning
	}
	defer s.reconciling.Store(false)

	// Apply what has already arrived, so Helix is compared with the newest events.
	if _, err := s.work(ctx); err != nil {
		return ReconcileReport{}, err
	}
	rep := ReconcileReport{Started: s.now()}
	observed := rep.Started

	// Load what we know.
	subs := map[string]Subscription{}
	var links []Link
	err := s.store.View(ctx, func(tx Tx) error {
		if err := tx.ForEachSubscription(func(sub Subscription) error {
			if sub.Active() {
				subs[sub.TwitchUserID] = sub
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.ForEachLink(func(l Link) error { links = append(links, l); return nil })
	})
	if err != nil {
		return rep, fmt.Errorf("subrole: reconcile: load state: %w", err)
	}

	// Read Helix.
	helix := map[string]HelixSubscription{}
	covered := func(string) bool { return true } // which users Helix answered for
	pages, batches := (len(subs)+99)/100+1, (len(links)+99)/100
	if batches < pages {
		rep.Strategy = "linked"
		linked := map[string]bool{}
		for chunk := range slices.Chunk(links, 100) {
			ids := make([]string, len(chunk))
			for i, l := range chunk {
				ids[i] = l.TwitchUserID
				linked[l.TwitchUserID] = true
			}
			got, err := src.Subscribers(ctx, ids)
			rep.HelixRequests++
			if err != nil {
				return rep, fmt.Errorf("subrole: reconcile: read subscribers: %w", err)
			}
			for _, h := range got {
				helix[h.UserID] = h
			}
		}
		covered = func(id string) bool { return linked[id] }
	} else {
		rep.Strategy = "all"
		err := src.AllSubscribers(ctx, func(page []HelixSubscription) error {
			rep.HelixRequests++
			for _, h := range page {
				helix[h.UserID] = h
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("subrole: reconcile: read subscribers: %w", err)
		}
	}
	rep.Subscribers = len(helix)

	// Work out the differences.
	var fixes []HelixSubscription // Tier == TierNone means "not subscribed"
	for id := range subs {
		if _, ok := helix[id]; !ok && covered(id) {
			fixes = append(fixes, HelixSubscription{UserID: id})
		}
	}
	for id, h := range helix {
		sub, ok := subs[id]
		if !ok || sub.Tier != h.Tier || sub.IsGift != h.IsGift || (h.IsGift && sub.GifterID != h.GifterID) {
			fixes = append(fixes, h)
		}
	}
	slices.SortFunc(fixes, func(a, b HelixSubscription) int { return strings.Compare(a.UserID, b.UserID) })

	// Apply them in commits of a bounded size, re-reading each state inside
	// the commit so an event applied meanwhile wins.
	for chunk := range slices.Chunk(fixes, 500) {
		var delta ReconcileReport
		err := s.store.Update(ctx, func(tx Tx) error {
			delta = ReconcileReport{}
			for _, h := range chunk {
				if err := s.reconcileOne(tx, h, observed, &delta); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("subrole: reconcile: apply: %w", err)
		}
		rep.add(delta)
	}

	if roles != nil {
		if err := s.enforceRoles(ctx, roles, &rep); err != nil {
			return rep, err
		}
	}
	if rep.RoleJobs > 0 {
		signal(s.outboxReady)
	}
	rep.Finished = s.now()
	err = s.store.Update(ctx, func(tx Tx) error {
		b, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		if err := tx.PutMeta(metaLastReconcile, b); err != nil {
			return err
		}
		return tx.AppendAudit(AuditEntry{Time: rep.Finished, Kind: AuditReconcile, Detail: rep.String()})
	})
	if err != nil {
		return rep, fmt.Errorf("subrole: reconcile: record: %w", err)
	}
	s.log.Info("reconcile: done", "strategy", rep.Strategy, "helix_requests", rep.HelixRequests,
		"subscribers", rep.Subscribers, "missed_end", rep.MissedEnd, "missed_subscribe", rep.MissedSubscribe,
		"tier_change", rep.TierChange, "gift_to_paid", rep.GiftToPaid, "roles_repaired", rep.RolesRepaired,
		"skipped", rep.Skipped, "role_jobs", rep.RoleJobs, "took", rep.Finished.Sub(rep.Started))
	return rep, nil
}

// reconcileOne makes one Twitch user's state agree with Helix.
func (s *Service) reconcileOne(tx Tx, h HelixSubscription, observed time.Time, rep *ReconcileReport) error {
	before, err := loadSubscription(tx, h.UserID)
	if err != nil {
		return err
	}
	if before.Source == SourceEventSub && before.LastEvent.After(observed.Add(-HelixLag)) {
		rep.Skipped++ // a recent event knows better than Helix
		return nil
	}
	if before.LastEvent.After(observed) {
		rep.Skipped++
		return nil
	}
	after := before
	after.LastEvent, after.LastEventType, after.Source = observed, "reconcile", SourceHelix
	var kind string
	switch {
	case !h.Tier.Valid():
		if !before.Active() {
			return nil
		}
		after.Ended, kind = observed, "missed end"
		rep.MissedEnd++
	case !before.Active():
		after.Tier, after.Ended, after.Started = h.Tier, time.Time{}, observed
		after.IsGift, after.GifterID, after.GifterLogin = h.IsGift, h.GifterID, h.GifterLogin
		after.TwitchLogin = firstNonEmpty(h.UserLogin, before.TwitchLogin)
		kind = "missed subscribe"
		rep.MissedSubscribe++
	case before.Tier != h.Tier:
		after.Tier, after.IsGift, after.GifterID, after.GifterLogin = h.Tier, h.IsGift, h.GifterID, h.GifterLogin
		kind = "tier change"
		rep.TierChange++
	case before.IsGift && !h.IsGift:
		after.IsGift, after.GifterID, after.GifterLogin = false, "", ""
		kind = "gift became paid"
		rep.GiftToPaid++
	default:
		// Only gift details differ; record them without counting a drift.
		after.IsGift, after.GifterID, after.GifterLogin = h.IsGift, h.GifterID, h.GifterLogin
		kind = "gift details"
	}
	n, err := s.commitSubscription(tx, before, after, "", observed, "reconcile: "+kind)
	rep.RoleJobs += n
	return err
}

// enforceRoles compares every linked member's Discord roles with the desired
// ones and queues a job for each member whose managed roles differ.
func (s *Service) enforceRoles(ctx context.Context, roles MemberRoles, rep *ReconcileReport) error {
	managed := s.policy.Managed()
	err := roles.AllMemberRoles(ctx, func(page map[string][]string) error {
		ids := make([]string, 0, len(page))
		for id := range page {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		var repaired, jobs int
		err := s.store.Update(ctx, func(tx Tx) error {
			repaired, jobs = 0, 0
			now := s.now()
			for _, id := range ids {
				link, err := tx.LinkByDiscord(id)
				if errors.Is(err, ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				sub, err := loadSubscription(tx, link.TwitchUserID)
				if err != nil {
					return err
				}
				desired := DesiredRoles(s.policy, Member{Link: link, Sub: sub}, now)
				if Diff(page[id], desired, managed).Empty() {
					continue
				}
				repaired++
				if err := s.queueRoles(tx, link, desired, "", now, "subrole: reconcile restored roles edited by hand"); err != nil {
					return err
				}
				jobs++
			}
			return nil
		})
		rep.RolesRepaired += repaired
		rep.RoleJobs += jobs
		return err
	})
	if err != nil {
		return fmt.Errorf("subrole: reconcile: enforce roles: %w", err)
	}
	return nil
}

func (r *ReconcileReport) add(d ReconcileReport) {
	r.MissedEnd += d.MissedEnd
	r.MissedSubscribe += d.MissedSubscribe
	r.TierChange += d.TierChange
	r.GiftToPaid += d.GiftToPaid
	r.RolesRepaired += d.RolesRepaired
	r.Skipped += d.Skipped
	r.RoleJobs += d.RoleJobs
}

// String summarizes the report for logs and the audit log.
func (r ReconcileReport) String() string {
	return fmt.Sprintf("reconcile (%s, %d helix requests, %d subscribers): missed_end=%d missed_subscribe=%d tier_change=%d gift_to_paid=%d roles_repaired=%d skipped=%d",
		r.Strategy, r.HelixRequests, r.Subscribers, r.MissedEnd, r.MissedSubscribe, r.TierChange, r.GiftToPaid, r.RolesRepaired, r.Skipped)
}

// ReconcileSchedule configures RunReconcile.
type ReconcileSchedule struct {
	// Source reads Helix. Required.
	Source SubscriberSource
	// Roles, if not nil, lets each pass repair roles edited by hand.
	Roles MemberRoles
	// Interval is the time between passes. Zero means 6 hours.
	Interval time.Duration
	// RetryAfter is the wait after a failed pass. Zero means 5 minutes.
	RetryAfter time.Duration
	// OnDone, if set, is called after every pass with its report or error.
	OnDone func(ReconcileReport, error)
}

// RequestReconcile asks RunReconcile for a pass now. It never blocks; requests
// made while a pass runs fold into one.
func (s *Service) RequestReconcile() { signal(s.reconcileNow) }

// RunReconcile runs reconcile passes until ctx is done: at start when the
// last successful pass is older than the interval, then every interval, and
// whenever RequestReconcile is called.
func (s *Service) RunReconcile(ctx context.Context, sch ReconcileSchedule) error {
	interval, retry := sch.Interval, sch.RetryAfter
	if interval <= 0 {
		interval = 6 * time.Hour
	}
	if retry <= 0 {
		retry = 5 * time.Minute
	}
	next := time.Duration(0)
	if last, ok, err := s.LastReconcile(ctx); err == nil && ok {
		next = max(last.Finished.Add(interval).Sub(s.now()), 0)
	}
	for {
		timer := time.NewTimer(next)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		case <-s.reconcileNow:
			timer.Stop()
		}
		rep, err := s.Reconcile(ctx, sch.Source, sch.Roles)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		next = interval
		if err != nil && !errors.Is(err, ErrReconcileRunning) {
			s.log.Error("reconcile: pass failed; will retry", "err", err, "retry_in", retry)
			next = retry
		}
		if sch.OnDone != nil {
			sch.OnDone(rep, err)
		}
	}
}
