package subrole_test

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole"
)

// helixFake is an in-memory SubscriberSource.
type helixFake struct {
	mu       sync.Mutex
	subs     map[string]subrole.HelixSubscription
	pageSize int
	requests int
	block    chan struct{} // if set, AllSubscribers waits on it
}

func newHelixFake(subs ...subrole.HelixSubscription) *helixFake {
	h := &helixFake{subs: map[string]subrole.HelixSubscription{}, pageSize: 100}
	for _, s := range subs {
		h.subs[s.UserID] = s
	}
	return h
}

func (h *helixFake) AllSubscribers(ctx context.Context, fn func([]subrole.HelixSubscription) error) error {
	if h.block != nil {
		<-h.block
	}
	h.mu.Lock()
	var all []subrole.HelixSubscription
	for _, s := range h.subs {
		all = append(all, s)
	}
	h.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].UserID < all[j].UserID })
	for page := range slices.Chunk(all, h.pageSize) {
		h.mu.Lock()
		h.requests++
		h.mu.Unlock()
		if err := fn(page); err != nil {
			return err
		}
	}
	if len(all) == 0 {
		h.requests++
		return fn(nil)
	}
	return nil
}

func (h *helixFake) Subscribers(ctx context.Context, ids []string) ([]subrole.HelixSubscription, error) {
	if h.block != nil {
		<-h.block
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(ids) > 100 {
		return nil, errors.New("more than 100 user ids")
	}
	h.requests++
	var out []subrole.HelixSubscription
	for _, id := range ids {
		if s, ok := h.subs[id]; ok {
			out = append(out, s)
		}
	}
	return out, nil
}

// rolesFake is an in-memory MemberRoles.
type rolesFake map[string][]string

func (r rolesFake) AllMemberRoles(ctx context.Context, fn func(map[string][]string) error) error {
	return fn(r)
}

func TestReconcileFixesEveryDriftKind(t *testing.T) {
	f := newFixture(t, policy)
	// Stored state, all from events long ago (outside the Helix lag window).
	for i, tier := range []subrole.Tier{subrole.Tier1, subrole.Tier1, subrole.Tier1, subrole.Tier2} {
		f.link(discord(i), twitch(i))
		f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: twitch(i), Tier: tier, IsGift: i == 3})
	}
	f.link(discord(4), twitch(4)) // never subscribed, as far as we know
	f.jobs()
	f.clock.Add(time.Hour)

	h := newHelixFake(
		// twitch(0): still tier 1, no drift.
		subrole.HelixSubscription{UserID: twitch(0), Tier: subrole.Tier1},
		// twitch(1): missing -> missed end.
		// twitch(2): tier 3 now -> tier change.
		subrole.HelixSubscription{UserID: twitch(2), Tier: subrole.Tier3},
		// twitch(3): the gift became a paid sub.
		subrole.HelixSubscription{UserID: twitch(3), Tier: subrole.Tier2},
		// twitch(4): subscribed without our noticing -> missed subscribe.
		subrole.HelixSubscription{UserID: twitch(4), UserLogin: "newbie", Tier: subrole.Tier1, IsGift: true, GifterID: "99"},
	)
	rep, err := f.svc.Reconcile(context.Background(), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.MissedEnd != 1 || rep.TierChange != 1 || rep.GiftToPaid != 1 || rep.MissedSubscribe != 1 || rep.Drifts() != 4 {
		t.Fatalf("report %+v", rep)
	}
	jobs := f.jobs()
	got := map[string][]string{}
	for _, j := range jobs {
		got[j.DiscordUserID] = j.Desired
	}
	want := map[string][]string{
		discord(1): {roleLinked},
		discord(2): {roleLinked, roleT3},
		discord(4): {roleLinked, roleT1},
	}
	if len(got) != len(want) {
		t.Fatalf("jobs for %v, want %v", got, want)
	}
	for m, w := range want {
		if !slices.Equal(got[m], w) {
			t.Errorf("%s desired %v, want %v", m, got[m], w)
		}
	}
	if s := f.sub(twitch(3)); s.IsGift || s.Source != subrole.SourceHelix {
		t.Errorf("gift not cleared: %+v", s)
	}
	if s := f.sub(twitch(4)); s.GifterID != "99" || s.TwitchLogin != "newbie" {
		t.Errorf("missed subscribe state %+v", s)
	}
	last, ok, err := f.svc.LastReconcile(context.Background())
	if err != nil || !ok || last.MissedEnd != 1 {
		t.Fatalf("last reconcile %+v %v %v", last, ok, err)
	}
	// The drift counts are in the audit log.
	var counted bool
	f.db.View(context.Background(), func(tx subrole.Tx) error {
		entries, err := tx.Audit(0, -1)
		for _, a := range entries {
			if a.Kind == subrole.AuditReconcile && strings.Contains(a.Detail, "missed_end=1 missed_subscribe=1 tier_change=1 gift_to_paid=1") {
				counted = true
			}
		}
		return err
	})
	if !counted {
		t.Fatal("no audit entry with the drift counts")
	}

	// A second pass finds nothing.
	f.clock.Add(time.Hour)
	rep, err = f.svc.Reconcile(context.Background(), h, nil)
	if err != nil || rep.Drifts() != 0 || rep.RoleJobs != 0 {
		t.Fatalf("second pass %+v %v", rep, err)
	}
}

func TestReconcileTrustsRecentEvents(t *testing.T) {
	f := newFixture(t, policy)
	f.link(discord(0), twitch(0))
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: twitch(0), Tier: subrole.Tier2})
	f.jobs()
	// Helix has not caught up with the subscription a minute later.
	f.clock.Add(time.Minute)
	rep, err := f.svc.Reconcile(context.Background(), newHelixFake(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.MissedEnd != 0 || rep.Skipped != 1 || len(f.jobs()) != 0 {
		t.Fatalf("a lagging Helix ended a fresh subscription: %+v", rep)
	}
	if !f.sub(twitch(0)).Active() {
		t.Fatal("state ended")
	}
}

func TestReconcileEventDuringPassWins(t *testing.T) {
	f := newFixture(t, policy)
	f.link(discord(0), twitch(0))
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: twitch(0), Tier: subrole.Tier1})
	f.clock.Add(time.Hour)
	f.jobs()
	// Helix (read when the pass starts) still says tier 1; meanwhile an end arrives.
	h := newHelixFake(subrole.HelixSubscription{UserID: twitch(0), Tier: subrole.Tier3})
	h.block = make(chan struct{})
	done := make(chan subrole.ReconcileReport)
	go func() {
		rep, err := f.svc.Reconcile(context.Background(), h, nil)
		if err != nil {
			t.Error(err)
		}
		done <- rep
	}()
	time.Sleep(20 * time.Millisecond)
	f.send(subrole.Event{Type: subrole.EventSubscriptionEnd, UserID: twitch(0), Tier: subrole.Tier1})
	close(h.block)
	rep := <-done
	if rep.TierChange != 0 || rep.MissedSubscribe != 0 {
		t.Fatalf("older Helix data overwrote a newer event: %+v", rep)
	}
	if s := f.sub(twitch(0)); s.Active() {
		t.Fatalf("state %+v", s)
	}
}

func TestReconcileChoosesCheaperStrategy(t *testing.T) {
	f := newFixture(t, policy)
	// 2 linked members, 500 subscribers: batches of linked members are cheaper.
	var helixSubs []subrole.HelixSubscription
	for i := range 500 {
		f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: twitch(100 + i), Tier: subrole.Tier1})
		helixSubs = append(helixSubs, subrole.HelixSubscription{UserID: twitch(100 + i), Tier: subrole.Tier1})
	}
	f.link(discord(0), twitch(100))
	f.link(discord(1), twitch(101))
	f.clock.Add(time.Hour)
	h := newHelixFake(helixSubs...)
	rep, err := f.svc.Reconcile(context.Background(), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Strategy != "linked" || rep.HelixRequests != 1 {
		t.Fatalf("report %+v, want one user_id batch", rep)
	}
	// Many linked members: pages of all subscribers are cheaper.
	for i := range 700 {
		f.link(discord(1000+i), twitch(2000+i))
	}
	rep, err = f.svc.Reconcile(context.Background(), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Strategy != "all" || rep.HelixRequests != 5 {
		t.Fatalf("report %+v, want 5 pages", rep)
	}
}

func TestReconcileRepairsHandEditedRoles(t *testing.T) {
	f := newFixture(t, policy)
	f.link(discord(0), twitch(0))
	f.link(discord(1), twitch(1))
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: twitch(0), Tier: subrole.Tier2})
	f.clock.Add(time.Hour)
	f.jobs()
	h := newHelixFake(subrole.HelixSubscription{UserID: twitch(0), Tier: subrole.Tier2})
	actual := rolesFake{
		discord(0): {roleLinked, "555"}, // tier 2 removed by hand
		discord(1): {roleLinked},        // right
		"stranger": {roleT3},            // not linked: left alone
	}
	rep, err := f.svc.Reconcile(context.Background(), h, actual)
	if err != nil {
		t.Fatal(err)
	}
	if rep.RolesRepaired != 1 {
		t.Fatalf("report %+v", rep)
	}
	wantJob(t, f.jobs(), discord(0), roleLinked, roleT2)
}

func TestReconcileOneAtATime(t *testing.T) {
	f := newFixture(t, policy)
	f.link(discord(0), twitch(0))
	h := newHelixFake()
	h.block = make(chan struct{})
	go f.svc.Reconcile(context.Background(), h, nil)
	time.Sleep(20 * time.Millisecond)
	if _, err := f.svc.Reconcile(context.Background(), newHelixFake(), nil); !errors.Is(err, subrole.ErrReconcileRunning) {
		t.Fatalf("second concurrent pass: %v", err)
	}
	close(h.block)
}

func discord(i int) string { return "d" + itoa(i) }
func twitch(i int) string  { return "t" + itoa(i) }

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestRunReconcileSchedule(t *testing.T) {
	f := newFixture(t, policy)
	f.link(discord(0), twitch(0))
	h := newHelixFake(subrole.HelixSubscription{UserID: twitch(0), Tier: subrole.Tier1})
	done := make(chan subrole.ReconcileReport, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.svc.RunReconcile(ctx, subrole.ReconcileSchedule{Source: h, Interval: time.Hour,
		OnDone: func(r subrole.ReconcileReport, err error) {
			if err != nil {
				t.Error(err)
			}
			done <- r
		}})
	// No pass ever ran: one runs at start.
	select {
	case r := <-done:
		if r.MissedSubscribe != 1 {
			t.Fatalf("start pass %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pass at start")
	}
	// On demand.
	f.svc.RequestReconcile()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RequestReconcile ran no pass")
	}
	cancel()

	// A restart soon after a pass does not run one at start.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go f.svc.RunReconcile(ctx2, subrole.ReconcileSchedule{Source: h, Interval: time.Hour,
		OnDone: func(r subrole.ReconcileReport, err error) { done <- r }})
	select {
	case <-done:
		t.Fatal("a pass ran at start although the last one is recent")
	case <-time.After(200 * time.Millisecond):
	}
}

func TestReconcileStripUnlinked(t *testing.T) {
	f := newFixture(t, policy)
	f.link(discord(0), twitch(0))
	f.clock.Add(time.Hour)
	f.jobs()
	actual := rolesFake{
		discord(0): {roleLinked},    // right
		"stranger": {roleT3, "555"}, // not linked, holds a managed role
		"visitor":  {"555"},         // not linked, nothing managed
	}
	rep, err := f.svc.ReconcileWith(context.Background(), subrole.ReconcileOptions{Source: newHelixFake(), Roles: actual, StripUnlinked: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.RolesRepaired != 1 {
		t.Fatalf("report %+v", rep)
	}
	jobs := f.jobs()
	if len(jobs) != 1 || jobs[0].DiscordUserID != "stranger" || len(jobs[0].Desired) != 0 || !slices.Equal(jobs[0].Managed, policy.Managed()) {
		t.Fatalf("jobs %+v", jobs)
	}
}

// failingRoles fails like a bot without the Server Members intent.
type failingRoles struct{}

func (failingRoles) AllMemberRoles(context.Context, func(map[string][]string) error) error {
	return errors.New("discord: list members: HTTP 403 Forbidden")
}

func TestReconcileDiscordFailureKeepsTheSubscriptionPart(t *testing.T) {
	f := newFixture(t, policy)
	f.link(discord(0), twitch(0))
	f.clock.Add(time.Hour)
	f.jobs()
	h := newHelixFake(subrole.HelixSubscription{UserID: twitch(0), Tier: subrole.Tier1})
	rep, err := f.svc.Reconcile(context.Background(), h, failingRoles{})
	if err != nil {
		t.Fatalf("a Discord failure failed the whole pass: %v", err)
	}
	if rep.MissedSubscribe != 1 || rep.DiscordError == "" {
		t.Fatalf("report %+v", rep)
	}
	if last, ok, _ := f.svc.LastReconcile(context.Background()); !ok || last.DiscordError == "" {
		t.Fatalf("the pass was not recorded: %+v", last)
	}
	wantJob(t, f.jobs(), discord(0), roleLinked, roleT1)
}
