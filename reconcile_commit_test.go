package subrole_test

import (
	"context"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/store"
)

// watchedStore counts what Update functions read, and can run an action
// right after a read transaction that read the outbox.
type watchedStore struct {
	subrole.Store
	mu sync.Mutex
	// In Update functions:
	jobsRead  int // outbox jobs returned
	linkReads int
	subReads  int
	scans     int // ForEachSubscription, ForEachLink
	// afterOutboxView, if set, runs once after the next View that read the outbox.
	afterOutboxView func()
}

func (w *watchedStore) Update(ctx context.Context, fn func(subrole.Tx) error) error {
	return w.Store.Update(ctx, func(tx subrole.Tx) error { return fn(&watchedTx{Tx: tx, w: w, update: true}) })
}

func (w *watchedStore) View(ctx context.Context, fn func(subrole.Tx) error) error {
	wt := &watchedTx{w: w}
	err := w.Store.View(ctx, func(tx subrole.Tx) error { wt.Tx = tx; return fn(wt) })
	w.mu.Lock()
	hook := w.afterOutboxView
	if !wt.readOutbox {
		hook = nil
	}
	if hook != nil {
		w.afterOutboxView = nil
	}
	w.mu.Unlock()
	if hook != nil {
		hook()
	}
	return err
}

func (w *watchedStore) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.jobsRead, w.linkReads, w.subReads, w.scans = 0, 0, 0, 0
}

type watchedTx struct {
	subrole.Tx
	w          *watchedStore
	update     bool
	readOutbox bool
}

func (t *watchedTx) count(f func(*watchedStore)) {
	if t.update {
		t.w.mu.Lock()
		f(t.w)
		t.w.mu.Unlock()
	}
}

func (t *watchedTx) RoleJobs(after uint64, max int) ([]subrole.RoleJob, error) {
	t.readOutbox = true
	jobs, err := t.Tx.RoleJobs(after, max)
	t.count(func(w *watchedStore) { w.jobsRead += len(jobs) })
	return jobs, err
}

func (t *watchedTx) LinkByDiscord(id string) (subrole.Link, error) {
	t.count(func(w *watchedStore) { w.linkReads++ })
	return t.Tx.LinkByDiscord(id)
}

func (t *watchedTx) LinkByTwitch(id string) (subrole.Link, error) {
	t.count(func(w *watchedStore) { w.linkReads++ })
	return t.Tx.LinkByTwitch(id)
}

func (t *watchedTx) Subscription(id string) (subrole.Subscription, error) {
	t.count(func(w *watchedStore) { w.subReads++ })
	return t.Tx.Subscription(id)
}

func (t *watchedTx) ForEachSubscription(fn func(subrole.Subscription) error) error {
	t.count(func(w *watchedStore) { w.scans++ })
	return t.Tx.ForEachSubscription(fn)
}

func (t *watchedTx) ForEachLink(fn func(subrole.Link) error) error {
	t.count(func(w *watchedStore) { w.scans++ })
	return t.Tx.ForEachLink(fn)
}

// newWatchedFixture is newFixture over a watchedStore (without Run: events
// are applied as they are accepted).
func newWatchedFixture(t *testing.T) (*fixture, *watchedStore) {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "subrole.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	w := &watchedStore{Store: db}
	c := &clock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	svc := subrole.NewService(subrole.Config{Store: w, Policy: policy, Now: c.Now})
	return &fixture{t: t, svc: svc, db: db, clock: c}, w
}

// drain removes every pending role job, like an applier would.
func (f *fixture) drain() {
	f.t.Helper()
	for len(f.jobs()) > 0 {
	}
}

// pagedRoles is a MemberRoles that returns its members in sorted pages and
// calls between, if set, before every page but the first.
type pagedRoles struct {
	roles    map[string][]string
	pageSize int
	between  func(page int)
}

func (r pagedRoles) AllMemberRoles(ctx context.Context, fn func(map[string][]string) error) error {
	ids := make([]string, 0, len(r.roles))
	for id := range r.roles {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for n, chunk := range slices.Collect(slices.Chunk(ids, r.pageSize)) {
		if n > 0 && r.between != nil {
			r.between(n)
		}
		page := map[string][]string{}
		for _, id := range chunk {
			page[id] = r.roles[id]
		}
		if err := fn(page); err != nil {
			return err
		}
	}
	return nil
}

// TestReconcileEnforceReadsOutsideCommits: checking Discord's roles reads
// the store in read transactions; the commits that queue repairs read only
// the repaired members, and not the outbox (100 jobs pending here),
// so a pass does not hold the commit loop that acknowledges webhooks.
func TestReconcileEnforceReadsOutsideCommits(t *testing.T) {
	f, w := newWatchedFixture(t)
	const members = 150
	var helix []subrole.HelixSubscription
	actual := map[string][]string{}
	for i := range members {
		f.link(discord(i), twitch(i))
		f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: twitch(i), Tier: subrole.Tier1})
		helix = append(helix, subrole.HelixSubscription{UserID: twitch(i), Tier: subrole.Tier1})
		actual[discord(i)] = []string{roleLinked, roleT1}
	}
	edited := []int{3, 51, 52, 120, 149}
	for _, i := range edited {
		actual[discord(i)] = []string{roleLinked} // tier role removed by hand
	}
	f.drain()
	// 100 jobs wait in the outbox for members the Discord list does not show.
	for i := range 100 {
		f.link(discord(1000+i), twitch(1000+i))
	}
	f.clock.Add(time.Hour)
	w.reset()
	rep, err := f.svc.Reconcile(context.Background(), newHelixFake(helix...), pagedRoles{roles: actual, pageSize: 50})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Drifts() != 0 || rep.RolesRepaired != len(edited) || rep.RoleJobs != len(edited) {
		t.Fatalf("report %+v", rep)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.scans != 0 || w.jobsRead != 0 || w.linkReads > len(edited) || w.subReads > len(edited) {
		t.Fatalf("commits read %d outbox jobs, %d links, %d subscriptions, scanned %d times; want no scan, no job, at most %d links and subscriptions",
			w.jobsRead, w.linkReads, w.subReads, w.scans, len(edited))
	}
}

// TestReconcileEnforceRechecksInCommit: what happens between the read that
// finds a member to repair and the commit that repairs them wins: an event
// that made their roles right, an unlink, or a job queued for them.
func TestReconcileEnforceRechecksInCommit(t *testing.T) {
	f, w := newWatchedFixture(t)
	for i := range 5 {
		f.link(discord(i), twitch(i))
		f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: twitch(i), Tier: subrole.Tier1})
	}
	f.drain()
	f.clock.Add(time.Hour)
	var helix []subrole.HelixSubscription
	for i := range 5 {
		helix = append(helix, subrole.HelixSubscription{UserID: twitch(i), Tier: subrole.Tier1})
	}
	actual := rolesFake{ // every one differs from the stored state
		discord(0): {roleLinked},         // ends meanwhile: then right
		discord(1): {roleLinked, roleT2}, // upgrades meanwhile: then right
		discord(2): {roleLinked},         // unlinks meanwhile
		discord(3): {roleLinked},         // an event queues a job meanwhile
		discord(4): {roleLinked},         // edited by hand: repaired
	}
	w.afterOutboxView = func() {
		f.send(subrole.Event{Type: subrole.EventSubscriptionEnd, UserID: twitch(0), Tier: subrole.Tier1})
		f.send(subrole.Event{Type: subrole.EventSubscriptionMessage, UserID: twitch(1), Tier: subrole.Tier2})
		if err := f.svc.Unlink(context.Background(), discord(2), "test"); err != nil {
			t.Fatal(err)
		}
		f.drain() // applied
		f.send(subrole.Event{Type: subrole.EventSubscriptionMessage, UserID: twitch(3), Tier: subrole.Tier3})
	}
	rep, err := f.svc.Reconcile(context.Background(), newHelixFake(helix...), actual)
	if err != nil {
		t.Fatal(err)
	}
	if w.afterOutboxView != nil {
		t.Fatal("the pass read no outbox in a read transaction before its commit")
	}
	if rep.RolesRepaired != 1 || rep.RoleJobs != 1 {
		t.Fatalf("report %+v, want one repair", rep)
	}
	jobs := f.jobs()
	got := map[string][]string{}
	for _, j := range jobs {
		got[j.DiscordUserID] = j.Desired
	}
	if len(jobs) != 2 || !slices.Equal(got[discord(3)], []string{roleLinked, roleT3}) || !slices.Equal(got[discord(4)], []string{roleLinked, roleT1}) {
		t.Fatalf("jobs %+v, want the event's for %s and a repair for %s", jobs, discord(3), discord(4))
	}
}

// TestReconcileEnforceFollowsTheOutbox: across pages, a member whose job was
// finished after the pass first read the outbox is repaired; one whose job
// still waits is not.
func TestReconcileEnforceFollowsTheOutbox(t *testing.T) {
	f, _ := newWatchedFixture(t)
	for i := range 4 {
		f.link(discord(i), twitch(i))
	}
	f.drain()
	f.clock.Add(time.Hour)
	// Jobs for discord(2) and discord(3) wait (linked again).
	f.link(discord(2), twitch(2))
	f.link(discord(3), twitch(3))
	roles := pagedRoles{pageSize: 2, roles: map[string][]string{
		discord(0): {}, // page 1: edited by hand, so the outbox is read
		discord(1): {roleLinked},
		discord(2): {}, // page 2: its job is finished before this page
		discord(3): {}, // page 2: its job still waits
	}}
	roles.between = func(int) {
		jobs, err := f.svc.RoleJobs(context.Background(), 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		var done []uint64
		for _, j := range jobs {
			if j.DiscordUserID == discord(2) {
				done = append(done, j.Seq)
			}
		}
		if len(done) == 0 {
			t.Fatal("no job for discord(2)")
		}
		if err := f.svc.CompleteRoleJobs(context.Background(), done, nil); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := f.svc.Reconcile(context.Background(), newHelixFake(), roles)
	if err != nil {
		t.Fatal(err)
	}
	if rep.RolesRepaired != 2 {
		t.Fatalf("report %+v, want repairs for %s and %s", rep, discord(0), discord(2))
	}
	var repaired []string
	for _, j := range f.jobs() {
		if j.Reason == "subrole: reconcile restored roles edited by hand" {
			repaired = append(repaired, j.DiscordUserID)
		}
	}
	if !slices.Equal(repaired, []string{discord(0), discord(2)}) {
		t.Fatalf("repaired %v", repaired)
	}
}

// listTwice lists every subscriber twice, on two pages.
type listTwice struct{ subs []subrole.HelixSubscription }

func (l listTwice) AllSubscribers(ctx context.Context, fn func([]subrole.HelixSubscription) error) error {
	for range 2 {
		if err := fn(l.subs); err != nil {
			return err
		}
	}
	return nil
}

func (l listTwice) Subscribers(context.Context, []string) ([]subrole.HelixSubscription, error) {
	panic("not used")
}

// TestReconcileCountsASubscriberListedTwiceOnce: Helix pages shift while
// they are read; a subscriber listed twice is one subscriber and one fix,
// whether stored, linked only, or unknown.
func TestReconcileCountsASubscriberListedTwiceOnce(t *testing.T) {
	f := newFixture(t, policy)
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: twitch(0), Tier: subrole.Tier1}) // stored, tier changes
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: twitch(3), Tier: subrole.Tier1}) // stored, gifter changes
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: twitch(3), Tier: subrole.Tier1, IsGift: true})
	for i := range 200 { // enough links that every subscriber page is cheaper
		f.link(discord(100+i), twitch(100+i))
	}
	f.link(discord(1), twitch(1)) // linked, not stored: a missed subscribe
	f.drain()
	f.clock.Add(time.Hour)
	src := listTwice{subs: []subrole.HelixSubscription{
		{UserID: twitch(0), Tier: subrole.Tier2},
		{UserID: twitch(1), Tier: subrole.Tier1},
		{UserID: twitch(2), Tier: subrole.Tier3}, // not stored, not linked: a missed subscribe
		{UserID: twitch(3), Tier: subrole.Tier1, IsGift: true, GifterID: "77"},
	}}
	rep, err := f.svc.Reconcile(context.Background(), src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Strategy != "all" || rep.Subscribers != 4 || rep.TierChange != 1 || rep.MissedSubscribe != 2 || rep.MissedEnd != 0 {
		t.Fatalf("report %+v", rep)
	}
	if s := f.sub(twitch(3)); s.GifterID != "77" {
		t.Fatalf("gift details not recorded: %+v", s)
	}
	// Nothing is left for a second pass.
	f.clock.Add(time.Hour)
	if rep, err := f.svc.Reconcile(context.Background(), src, nil); err != nil || rep.Drifts() != 0 || rep.Subscribers != 4 {
		t.Fatalf("second pass %+v %v", rep, err)
	}
}
