package subrole

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
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
	RolesRepaired   int    `json:"roles_repaired"` // members whose managed roles were edited by hand
	// DiscordError says why the members' Discord roles could not be checked
	// ("" when they were, or when the pass was not asked to).
	DiscordError string `json:"discord_error,omitempty"`
	Skipped      int    `json:"skipped"` // differences left alone because an event is newer than the lag window
	RoleJobs     int    `json:"role_jobs"`
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

// ReconcileStage names what a running pass is doing, for progress reports.
type ReconcileStage string

// The stages of a pass, in order.
const (
	StageHelix   ReconcileStage = "reading Twitch subscribers"
	StageApply   ReconcileStage = "fixing subscription state"
	StageDiscord ReconcileStage = "checking Discord roles"
	StageDone    ReconcileStage = "done"
)

// ReconcileOptions configures one pass of ReconcileWith.
type ReconcileOptions struct {
	// Source reads Helix. Required.
	Source SubscriberSource
	// Roles, if not nil, lets the pass repair roles edited by hand.
	Roles MemberRoles
	// StripUnlinked, with Roles, also removes managed roles from members
	// who are not linked (given by hand, or left by a removal that failed).
	StripUnlinked bool
	// Progress, if not nil, is called at each stage and after every Helix
	// request or Discord page with the report so far. It must not block for
	// long: the pass waits for it.
	Progress func(ReconcileStage, ReconcileReport)
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
	return s.ReconcileWith(ctx, ReconcileOptions{Source: src, Roles: roles})
}

// The state a pass keeps about one Twitch user, packed in one byte: the part
// of the stored subscription it compares with Helix, what decides their
// roles, and what the pass learned.
const (
	userTier     = 0b11   // stored tier, TierNone when not active
	userEffShift = 2      // the effective tier at load time (grace periods included), for role checks
	userGift     = 1 << 4 // the active subscription is a gift
	userLinked   = 1 << 5
	userSeen     = 1 << 6 // Helix listed them
)

func userFlags(tier, eff Tier, gift bool) uint8 {
	f := uint8(tier)&userTier | uint8(eff)&userTier<<userEffShift
	if gift {
		f |= userGift
	}
	return f
}

// idTable is a list of ids packed in one byte array, searchable by id. An
// entry keeps the index add gave it, and costs len(id)+4 bytes, plus 4 once
// ids were added out of order (then a sorted index is built for find).
type idTable struct {
	arena    []byte
	ends     []uint32 // entry i is arena[ends[i-1]:ends[i]], from 0 for i == 0
	unsorted bool     // some id was added after a larger one
	order    []int32  // when unsorted: the entries in id order, built by find
}

func (t *idTable) len() int { return len(t.ends) }

// at returns entry i. The bytes belong to the table.
func (t *idTable) at(i int) []byte {
	var lo uint32
	if i > 0 {
		lo = t.ends[i-1]
	}
	return t.arena[lo:t.ends[i]]
}

// add appends id and returns its index.
func (t *idTable) add(id string) int {
	if n := len(t.ends); n > 0 && string(t.at(n-1)) >= id {
		t.unsorted = true
	}
	t.arena = append(t.arena, id...)
	t.ends = append(t.ends, uint32(len(t.arena)))
	t.order = nil
	return len(t.ends) - 1
}

// find returns the index of id, by binary search.
func (t *idTable) find(id string) (int, bool) {
	if t.unsorted && t.order == nil {
		t.order = make([]int32, len(t.ends))
		for i := range t.order {
			t.order[i] = int32(i)
		}
		slices.SortStableFunc(t.order, func(a, b int32) int { return bytes.Compare(t.at(int(a)), t.at(int(b))) })
	}
	entry := func(p int) int {
		if t.order != nil {
			return int(t.order[p])
		}
		return p
	}
	p := sort.Search(len(t.ends), func(p int) bool { return string(t.at(entry(p))) >= id })
	if p < len(t.ends) && string(t.at(entry(p))) == id {
		return entry(p), true
	}
	return -1, false
}

// passState is what a pass knows about the stored state, loaded at its
// start. See ReconcileWith for its size.
type passState struct {
	subs     idTable // Twitch users with an active subscription or one in its grace period
	subFlags []uint8
	extras   idTable // linked Twitch users not in subs
	extraFlg []uint8
	members  idTable // linked Discord users, in the order ForEachLink gave them
	memberOf []int32 // their Twitch user: i is subs entry i, ^i extras entry i
	gifters  map[string]string
	missed   map[string]struct{} // listed by Helix, not known: missed subscribes
}

// user returns the flags of a known Twitch user, or nil.
func (st *passState) user(twitchUserID string) *uint8 {
	if i, ok := st.subs.find(twitchUserID); ok {
		return &st.subFlags[i]
	}
	if i, ok := st.extras.find(twitchUserID); ok {
		return &st.extraFlg[i]
	}
	return nil
}

// member returns the Twitch user id (the table's bytes) and the flags of
// linked member i.
func (st *passState) member(i int) ([]byte, uint8) {
	if r := st.memberOf[i]; r >= 0 {
		return st.subs.at(int(r)), st.subFlags[r]
	}
	r := ^st.memberOf[i]
	return st.extras.at(int(r)), st.extraFlg[r]
}

// ReconcileWith is Reconcile with progress reports.
//
// Helix facts are stamped HelixLag before the pass started: Helix may not
// show changes younger than that, so an event sent after that moment (even
// one delivered late, after the pass) wins over what the pass wrote, and the
// pass leaves alone state that an event set within the window.
//
// Memory stays proportional to the channel with small constants. The stored
// state is loaded once, in two read transactions (subscriptions, then
// links), into tables of packed ids searched by binary search: per Twitch
// user with an active subscription (or one in its grace period) its id, a
// 4-byte offset and one byte of flags (len(id)+5 bytes); per linked member
// its Discord id, an offset and a 4-byte reference to its Twitch user
// (len(id)+8 bytes; a linked Twitch user without a subscription adds its id
// and 9 bytes); and the gifter of each active gifted subscription in a map.
// With ~9-digit Twitch and ~19-digit Discord ids that is ~41 bytes per
// linked subscriber, ~41 MB at 1,000,000, plus the slack of the tables'
// growth (up to twice that while they grow). Helix pages are compared as
// they arrive, and only the differences are kept, with the subscribers Helix
// lists that are not stored at all.
//
// Only writes go through Update, in commits of at most 100 members: the
// comparison of Discord's roles happens in read transactions, and the
// commit that queues a repair re-reads only the members it repairs, so the
// pass never holds the commit loop (which acknowledges webhooks) for long.
func (s *Service) ReconcileWith(ctx context.Context, opts ReconcileOptions) (ReconcileReport, error) {
	if !s.reconciling.CompareAndSwap(false, true) {
		return ReconcileReport{}, ErrReconcileRunning
	}
	defer s.reconciling.Store(false)
	src := opts.Source
	progress := func(stage ReconcileStage, rep ReconcileReport) {
		if opts.Progress != nil {
			opts.Progress(stage, rep)
		}
	}

	// Apply what has already arrived, so Helix is compared with the newest events.
	if _, err := s.work(ctx); err != nil {
		return ReconcileReport{}, err
	}
	rep := ReconcileReport{Started: s.now()}
	observed := rep.Started.Add(-HelixLag)

	// Load what we know.
	st := &passState{gifters: map[string]string{}, missed: map[string]struct{}{}}
	active := 0
	err := s.store.View(ctx, func(tx Tx) error {
		return tx.ForEachSubscription(func(sub Subscription) error {
			eff := s.policy.EffectiveTier(sub, rep.Started)
			if !sub.Active() && !eff.Valid() {
				return nil
			}
			f := userFlags(TierNone, eff, false)
			if sub.Active() {
				f = userFlags(sub.Tier, eff, sub.IsGift)
				if sub.IsGift && sub.GifterID != "" {
					st.gifters[sub.TwitchUserID] = sub.GifterID
				}
				active++
			}
			st.subs.add(sub.TwitchUserID)
			st.subFlags = append(st.subFlags, f)
			return nil
		})
	})
	if err == nil {
		// Links in a second read transaction, to keep each one short: while
		// one is open, bbolt cannot remap the file for a commit that grows
		// it, so that commit (and the webhook's acks behind it) waits for
		// the read to end. State may change in between, as it does during
		// the rest of the pass: every fix is checked again in its commit.
		err = s.store.View(ctx, func(tx Tx) error {
			return tx.ForEachLink(func(l Link) error {
				if i, ok := st.subs.find(l.TwitchUserID); ok {
					st.subFlags[i] |= userLinked
					st.memberOf = append(st.memberOf, int32(i))
				} else {
					st.memberOf = append(st.memberOf, ^int32(st.extras.add(l.TwitchUserID)))
					st.extraFlg = append(st.extraFlg, userLinked)
				}
				st.members.add(l.DiscordUserID)
				return nil
			})
		})
	}
	if err != nil {
		return rep, fmt.Errorf("subrole: reconcile: load state: %w", err)
	}
	last, hadLast, _ := s.LastReconcile(ctx)

	// Read Helix, comparing as pages arrive. Its subscriber count is
	// estimated from what we store and what the last full read found,
	// whichever is larger.
	progress(StageHelix, rep)
	var fixes []HelixSubscription // Tier == TierNone means "not subscribed"
	compare := func(page []HelixSubscription) {
		for _, h := range page {
			rep.Subscribers++
			f := st.user(h.UserID)
			if f == nil { // not known as subscribed: a missed subscribe (state kept for when they link)
				if _, twice := st.missed[h.UserID]; twice {
					rep.Subscribers--
					continue
				}
				st.missed[h.UserID] = struct{}{}
				fixes = append(fixes, h)
				continue
			}
			if *f&userSeen != 0 {
				rep.Subscribers-- // listed twice (pages shifted while being read)
				continue
			}
			*f |= userSeen
			isGift := *f&userGift != 0
			if Tier(*f&userTier) != h.Tier || isGift != h.IsGift || (h.IsGift && st.gifters[h.UserID] != h.GifterID) {
				fixes = append(fixes, h)
			}
		}
	}
	estimate := active
	if hadLast && last.Strategy == "all" {
		estimate = max(estimate, last.Subscribers)
	}
	pages, batches := (estimate+99)/100+1, (st.members.len()+99)/100
	if batches < pages {
		rep.Strategy = "linked"
		for lo := 0; lo < st.members.len(); lo += 100 {
			chunk := make([]string, 0, 100)
			for i := lo; i < min(lo+100, st.members.len()); i++ {
				id, _ := st.member(i)
				chunk = append(chunk, string(id))
			}
			got, err := src.Subscribers(ctx, chunk)
			rep.HelixRequests++
			if err != nil {
				return rep, fmt.Errorf("subrole: reconcile: read subscribers: %w", err)
			}
			compare(got)
			progress(StageHelix, rep)
		}
	} else {
		rep.Strategy = "all"
		err := src.AllSubscribers(ctx, func(page []HelixSubscription) error {
			rep.HelixRequests++
			compare(page)
			progress(StageHelix, rep)
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("subrole: reconcile: read subscribers: %w", err)
		}
	}
	st.gifters, st.missed = nil, nil
	// Stored as subscribed, not listed by Helix: a missed end (in the
	// "linked" strategy only linked users were asked about).
	for i, f := range st.subFlags {
		if Tier(f&userTier).Valid() && f&userSeen == 0 && (rep.Strategy == "all" || f&userLinked != 0) {
			fixes = append(fixes, HelixSubscription{UserID: string(st.subs.at(i))})
		}
	}
	slices.SortFunc(fixes, func(a, b HelixSubscription) int { return strings.Compare(a.UserID, b.UserID) })

	// Apply them in small commits, re-reading each state inside the commit
	// so an event applied meanwhile wins.
	progress(StageApply, rep)
	fixed := map[string]bool{} // Twitch users given a role job by this pass
	for chunk := range slices.Chunk(fixes, fixChunk) {
		var delta ReconcileReport
		var jobsFor []string
		err := s.store.Update(ctx, func(tx Tx) error {
			delta, jobsFor = ReconcileReport{}, jobsFor[:0]
			for _, h := range chunk {
				n, err := s.reconcileOne(tx, h, observed, &delta)
				if err != nil {
					return err
				}
				if n > 0 {
					jobsFor = append(jobsFor, h.UserID)
				}
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("subrole: reconcile: apply: %w", err)
		}
		rep.add(delta)
		for _, id := range jobsFor {
			fixed[id] = true
		}
		if delta.RoleJobs > 0 {
			signal(s.outboxReady) // let the applier start while the pass goes on
		}
		progress(StageApply, rep)
	}
	fixes = nil

	if opts.Roles != nil {
		progress(StageDiscord, rep)
		var desired [4][]string // by effective tier
		for t := range desired {
			desired[t] = s.desiredForTier(Tier(t))
		}
		expect := func(discordUserID string) ([]string, bool) { // from the state loaded at the start
			i, ok := st.members.find(discordUserID)
			if !ok {
				return nil, opts.StripUnlinked // not linked: no managed roles, if we enforce that
			}
			twitchID, f := st.member(i)
			if fixed[string(twitchID)] {
				return nil, false // already given a job by this pass
			}
			return desired[f>>userEffShift&userTier], true
		}
		if err := s.enforceRoles(ctx, opts.Roles, expect, fixed, opts.StripUnlinked, &rep, progress); err != nil {
			// The subscription part is done and recorded; only the check
			// of Discord's roles failed. Say so, and keep the schedule.
			rep.DiscordError = err.Error()
			s.log.Error("reconcile: could not check the members' Discord roles; subscription drift was still repaired",
				"err", err, "fix", "enable the Server Members intent for the bot in the Discord Developer Portal, or set SUBROLE_ENFORCE_ROLES=off")
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
	progress(StageDone, rep)
	return rep, nil
}

// fixChunk and repairChunk are how many Twitch users' drift, and how many
// members' roles, a pass fixes per commit: few enough that one commit stays
// short beside the webhook's.
const (
	fixChunk    = 100
	repairChunk = 100
)

// reconcileOne makes one Twitch user's state agree with Helix, whose facts
// are stamped observed, and returns the role jobs it queued.
func (s *Service) reconcileOne(tx Tx, h HelixSubscription, observed time.Time, rep *ReconcileReport) (int, error) {
	before, err := loadSubscription(tx, h.UserID)
	if err != nil {
		return 0, err
	}
	if before.LastEvent.After(observed) {
		rep.Skipped++ // a fact newer than what Helix is sure to show knows better
		return 0, nil
	}
	after := before
	after.LastEvent, after.LastEventType, after.Source = observed, "reconcile", SourceHelix
	var kind string
	switch {
	case !h.Tier.Valid():
		if !before.Active() {
			return 0, nil
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
	return n, err
}

// desiredForTier returns the roles of a linked member whose effective tier
// is t: DesiredRoles depends on nothing else.
func (s *Service) desiredForTier(t Tier) []string {
	return DesiredRoles(s.policy, Member{Link: Link{DiscordUserID: "-"}, Sub: Subscription{Tier: t}}, time.Time{})
}

// enforceRoles compares every linked member's Discord roles with the desired
// ones and queues a job for each member whose managed roles differ. expect
// gives a member's desired roles from the state loaded at the start of the
// pass (false: not linked, or already given a job by this pass), so a page
// of members costs no store read. The few that differ are checked against
// the store in a read transaction, and only those that still differ enter a
// commit, which checks them again so that an event applied meanwhile wins.
// Members with a job still in the outbox are left to it: Discord shows their
// roles before it.
func (s *Service) enforceRoles(ctx context.Context, roles MemberRoles, expect func(string) ([]string, bool), fixed map[string]bool,
	stripUnlinked bool, rep *ReconcileReport, progress func(ReconcileStage, ReconcileReport)) error {
	managed := s.policy.Managed()
	outbox := outboxWatch{jobs: map[string][]uint64{}}
	err := roles.AllMemberRoles(ctx, func(page map[string][]string) error {
		var candidates []string
		for id, actual := range page {
			if want, ok := expect(id); ok && !Diff(actual, want, managed).Empty() {
				candidates = append(candidates, id)
			}
		}
		if len(candidates) == 0 {
			progress(StageDiscord, *rep)
			return nil
		}
		slices.Sort(candidates)
		var due []string
		err := s.store.View(ctx, func(tx Tx) error {
			if err := outbox.refresh(tx); err != nil {
				return err
			}
			now := s.now()
			for _, id := range candidates {
				busy, err := outbox.pending(tx, id)
				if err != nil {
					return err
				}
				if busy {
					continue
				}
				_, _, _, ok, err := s.roleRepair(tx, id, page[id], fixed, stripUnlinked, now, managed)
				if err != nil {
					return err
				}
				if ok {
					due = append(due, id)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		seen := outbox.last // every job queued after the read has a later position
		for chunk := range slices.Chunk(due, repairChunk) {
			var repaired int
			err := s.store.Update(ctx, func(tx Tx) error {
				repaired = 0
				queued, err := jobsAfter(tx, seen)
				if err != nil {
					return err
				}
				now := s.now()
				for _, id := range chunk {
					if queued[id] {
						continue // an event or a link queued one meanwhile
					}
					link, want, reason, ok, err := s.roleRepair(tx, id, page[id], fixed, stripUnlinked, now, managed)
					if err != nil {
						return err
					}
					if !ok {
						continue // an event or an unlink changed them meanwhile
					}
					if err := s.queueRoles(tx, link, want, "", now, reason); err != nil {
						return err
					}
					repaired++
				}
				return nil
			})
			if err != nil {
				return err
			}
			rep.RolesRepaired += repaired
			rep.RoleJobs += repaired
			if repaired > 0 {
				signal(s.outboxReady)
			}
		}
		progress(StageDiscord, *rep)
		return nil
	})
	if err != nil {
		return fmt.Errorf("subrole: reconcile: enforce roles: %w", err)
	}
	return nil
}

// roleRepair reads, in tx, whether the Discord user id holding actual needs
// a role job: it returns the job's link, desired roles and reason, and false
// when no job is due (linked but already right or given a job by this pass,
// or not linked and stripUnlinked is off).
func (s *Service) roleRepair(tx Tx, id string, actual []string, fixed map[string]bool, stripUnlinked bool, now time.Time,
	managed []string) (Link, []string, string, bool, error) {
	link, err := tx.LinkByDiscord(id)
	if errors.Is(err, ErrNotFound) {
		if !stripUnlinked {
			return Link{}, nil, "", false, nil // unlinked meanwhile
		}
		return Link{DiscordUserID: id}, nil, "subrole: reconcile removed managed roles from a member who is not linked", true, nil
	}
	if err != nil {
		return Link{}, nil, "", false, err
	}
	if fixed[link.TwitchUserID] {
		return Link{}, nil, "", false, nil
	}
	sub, err := loadSubscription(tx, link.TwitchUserID)
	if err != nil {
		return Link{}, nil, "", false, err
	}
	want := DesiredRoles(s.policy, Member{Link: link, Sub: sub}, now)
	if Diff(actual, want, managed).Empty() {
		return Link{}, nil, "", false, nil
	}
	return link, want, "subrole: reconcile restored roles edited by hand", true, nil
}

// outboxWatch follows, through a pass, which members have a job in the
// outbox without reading the whole outbox each time: each refresh reads
// only the jobs queued since the last one, and pending checks one member's
// known jobs by position. Jobs are queued at increasing positions.
type outboxWatch struct {
	last    uint64              // the highest position read
	jobs    map[string][]uint64 // Discord user id -> positions of their jobs read, ascending
	pruneAt int                 // refresh forgets finished jobs once jobs has this many members
}

// outboxPage is how many jobs a refresh decodes at a time.
const outboxPage = 1000

// refresh reads the jobs queued since the last refresh.
func (w *outboxWatch) refresh(tx Tx) error {
	for {
		jobs, err := tx.RoleJobs(w.last, outboxPage)
		if err != nil {
			return err
		}
		for _, j := range jobs {
			w.jobs[j.DiscordUserID] = append(w.jobs[j.DiscordUserID], j.Seq)
			w.last = j.Seq
		}
		if len(jobs) < outboxPage {
			break
		}
	}
	if len(w.jobs) < max(w.pruneAt, 4096) {
		return nil
	}
	// Forget the jobs before the oldest one still queued: they are done.
	first, err := tx.RoleJobs(0, 1)
	if err != nil {
		return err
	}
	oldest := w.last + 1
	if len(first) > 0 {
		oldest = first[0].Seq
	}
	for id, seqs := range w.jobs {
		i, _ := slices.BinarySearch(seqs, oldest)
		if i == len(seqs) {
			delete(w.jobs, id)
		} else {
			w.jobs[id] = seqs[i:]
		}
	}
	w.pruneAt = 2 * len(w.jobs)
	return nil
}

// pending reports whether a job for the Discord user id read by refresh is
// still in the outbox.
func (w *outboxWatch) pending(tx Tx, id string) (bool, error) {
	seqs := w.jobs[id]
	for i := len(seqs) - 1; i >= 0; i-- { // the newest is the likeliest to be left
		j, err := tx.RoleJobs(seqs[i]-1, 1)
		if err != nil {
			return false, err
		}
		if len(j) == 1 && j[0].Seq == seqs[i] {
			w.jobs[id] = seqs[:i+1]
			return true, nil
		}
	}
	delete(w.jobs, id)
	return false, nil
}

// jobsAfter returns the Discord users with a job queued after position after.
func jobsAfter(tx Tx, after uint64) (map[string]bool, error) {
	queued := map[string]bool{}
	for {
		jobs, err := tx.RoleJobs(after, outboxPage)
		if err != nil {
			return nil, err
		}
		for _, j := range jobs {
			queued[j.DiscordUserID] = true
			after = j.Seq
		}
		if len(jobs) < outboxPage {
			return queued, nil
		}
	}
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
	// StripUnlinked: see ReconcileOptions.
	StripUnlinked bool
	// Ready, if not nil, is asked before each pass: while it returns an
	// error (the broadcaster has not authorized subrole), no pass runs; the
	// reason is logged once and Ready is asked again after RetryAfter or on
	// RequestReconcile. It is given RunReconcile's context. Nil means always
	// ready.
	Ready func(context.Context) error
	// Interval is the time between passes. Zero means 6 hours.
	Interval time.Duration
	// RetryAfter is the wait after a failed pass, or while not Ready. Zero
	// means 5 minutes.
	RetryAfter time.Duration
	// OnDone, if set, is called after every pass with its report or error.
	OnDone func(ReconcileReport, error)
}

// RequestReconcile asks RunReconcile for a pass now. It never blocks; requests
// made while a pass runs fold into one.
func (s *Service) RequestReconcile() { signal(s.reconcileNow) }

// RunReconcile runs reconcile passes until ctx is done: at start when the
// last successful pass is older than the interval, then an interval after
// the last successful pass (however it was started), and whenever
// RequestReconcile is called.
func (s *Service) RunReconcile(ctx context.Context, sch ReconcileSchedule) error {
	interval, retry := sch.Interval, sch.RetryAfter
	if interval <= 0 {
		interval = 6 * time.Hour
	}
	if retry <= 0 {
		retry = 5 * time.Minute
	}
	// due is how long until a pass is due by the schedule.
	due := func() time.Duration {
		last, ok, err := s.LastReconcile(ctx)
		if err != nil || !ok {
			return 0
		}
		return max(last.Finished.Add(interval).Sub(s.now()), 0)
	}
	next := due()
	waiting := "" // why the last pass could not start
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
		if sch.Ready != nil {
			if err := sch.Ready(ctx); err != nil {
				if err.Error() != waiting {
					s.log.Warn("reconcile: waiting", "reason", err, "retry_in", retry)
					waiting = err.Error()
				}
				next = retry
				continue
			}
			waiting = ""
		}
		rep, err := s.ReconcileWith(ctx, ReconcileOptions{Source: sch.Source, Roles: sch.Roles, StripUnlinked: sch.StripUnlinked})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		next = due()
		switch {
		case errors.Is(err, ErrReconcileRunning):
			next = max(next, time.Second) // an on-demand pass is running: look again after it
		case err != nil:
			s.log.Error("reconcile: pass failed; will retry", "err", err, "retry_in", retry)
			next = retry
		}
		if sch.OnDone != nil {
			sch.OnDone(rep, err)
		}
	}
}
