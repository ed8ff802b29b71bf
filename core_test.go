package subrole_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/store"
)

const (
	roleLinked = "100000000000000001"
	roleT1     = "100000000000000011"
	roleT2     = "100000000000000012"
	roleT3     = "100000000000000013"
)

var policy = subrole.Policy{Linked: roleLinked, Tier1: roleT1, Tier2: roleT2, Tier3: roleT3}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type fixture struct {
	t     *testing.T
	svc   *subrole.Service
	db    *store.Store
	clock *clock
	seq   int
}

func newFixture(t *testing.T, p subrole.Policy) *fixture {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "subrole.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c := &clock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)}
	svc := subrole.NewService(subrole.Config{Store: db, Policy: p, Now: c.Now})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &fixture{t: t, svc: svc, db: db, clock: c}
}

// send accepts an event stamped with the fixture clock and waits until it is applied.
func (f *fixture) send(e subrole.Event) {
	f.t.Helper()
	f.seq++
	if e.MessageID == "" {
		e.MessageID = fmt.Sprintf("msg-%d", f.seq)
	}
	if e.Sent.IsZero() {
		e.Sent = f.clock.Now()
	}
	e.Received = f.clock.Now()
	f.clock.Add(time.Second)
	if _, err := f.svc.AcceptEvent(context.Background(), e); err != nil {
		f.t.Fatal(err)
	}
	f.waitInboxEmpty()
}

func (f *fixture) waitInboxEmpty() {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		f.db.View(context.Background(), func(tx subrole.Tx) error {
			e, err := tx.Inbox(0, 1)
			n = len(e)
			return err
		})
		if n == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	f.t.Fatal("inbox not drained")
}

// jobs returns the pending role jobs and removes them, like an applier would.
func (f *fixture) jobs() []subrole.RoleJob {
	f.t.Helper()
	jobs, err := f.svc.RoleJobs(context.Background(), 0, 1000)
	if err != nil {
		f.t.Fatal(err)
	}
	var seqs []uint64
	for _, j := range jobs {
		seqs = append(seqs, j.Seq)
	}
	if err := f.svc.CompleteRoleJobs(context.Background(), seqs, nil); err != nil {
		f.t.Fatal(err)
	}
	return jobs
}

func (f *fixture) sub(twitchID string) subrole.Subscription {
	f.t.Helper()
	var s subrole.Subscription
	err := f.db.View(context.Background(), func(tx subrole.Tx) error {
		var err error
		s, err = tx.Subscription(twitchID)
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *fixture) link(discordID, twitchID string) {
	f.t.Helper()
	if err := f.svc.Link(context.Background(), subrole.Link{DiscordUserID: discordID, TwitchUserID: twitchID, TwitchLogin: "login" + twitchID}); err != nil {
		f.t.Fatal(err)
	}
}

func wantJob(t *testing.T, jobs []subrole.RoleJob, discordID string, desired ...string) {
	t.Helper()
	if len(jobs) != 1 {
		t.Fatalf("got %d jobs %+v, want 1", len(jobs), jobs)
	}
	j := jobs[0]
	if j.DiscordUserID != discordID || !slices.Equal(j.Desired, desired) && !(len(j.Desired) == 0 && len(desired) == 0) {
		t.Fatalf("job for %s desired %v, want %s %v", j.DiscordUserID, j.Desired, discordID, desired)
	}
	if !slices.Equal(j.Managed, policy.Managed()) {
		t.Fatalf("managed %v", j.Managed)
	}
	if j.Reason == "" {
		t.Fatal("job without a reason")
	}
}

func TestSubscribeLinkedMember(t *testing.T) {
	f := newFixture(t, policy)
	f.link("d1", "t1")
	wantJob(t, f.jobs(), "d1", roleLinked)

	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "t1", UserLogin: "alice", Tier: subrole.Tier1})
	wantJob(t, f.jobs(), "d1", roleLinked, roleT1)
	if s := f.sub("t1"); s.Tier != subrole.Tier1 || !s.Active() || s.TwitchLogin != "alice" || s.Source != subrole.SourceEventSub {
		t.Fatalf("state %+v", s)
	}

	// A resub message at another tier swaps the tier role.
	f.send(subrole.Event{Type: subrole.EventSubscriptionMessage, UserID: "t1", Tier: subrole.Tier3, CumulativeMonths: 7, StreakMonths: 3})
	wantJob(t, f.jobs(), "d1", roleLinked, roleT3)
	if s := f.sub("t1"); s.CumulativeMonths != 7 || s.StreakMonths != 3 {
		t.Fatalf("months %+v", s)
	}

	// The same tier again changes nothing in Discord.
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "t1", Tier: subrole.Tier3})
	if jobs := f.jobs(); len(jobs) != 0 {
		t.Fatalf("no-op event queued %+v", jobs)
	}

	f.send(subrole.Event{Type: subrole.EventSubscriptionEnd, UserID: "t1", Tier: subrole.Tier3})
	wantJob(t, f.jobs(), "d1", roleLinked)
	if s := f.sub("t1"); s.Active() || s.Ended.IsZero() {
		t.Fatalf("ended state %+v", s)
	}
}

func TestUnlinkedStateAppliesOnLink(t *testing.T) {
	f := newFixture(t, policy)
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "t2", Tier: subrole.Tier2, IsGift: true})
	if jobs := f.jobs(); len(jobs) != 0 {
		t.Fatalf("unlinked user got jobs %+v", jobs)
	}
	if s := f.sub("t2"); !s.IsGift || s.Tier != subrole.Tier2 {
		t.Fatalf("state %+v", s)
	}
	f.link("d2", "t2")
	wantJob(t, f.jobs(), "d2", roleLinked, roleT2)
}

func TestDuplicateMessageID(t *testing.T) {
	f := newFixture(t, policy)
	e := subrole.Event{MessageID: "same", Type: subrole.EventSubscribe, UserID: "t1", Tier: subrole.Tier1, Sent: f.clock.Now()}
	dup, err := f.svc.AcceptEvent(context.Background(), e)
	if err != nil || dup {
		t.Fatalf("first: %v %v", dup, err)
	}
	dup, err = f.svc.AcceptEvent(context.Background(), e)
	if err != nil || !dup {
		t.Fatalf("second: dup=%v err=%v", dup, err)
	}
	f.waitInboxEmpty()
	var audits int
	f.db.View(context.Background(), func(tx subrole.Tx) error {
		entries, err := tx.Audit(0, 100)
		for _, a := range entries {
			if a.Kind == subrole.AuditSubscription {
				audits++
			}
		}
		return err
	})
	if audits != 1 {
		t.Fatalf("%d subscription changes, want 1", audits)
	}
}

func TestStaleEventIgnored(t *testing.T) {
	f := newFixture(t, policy)
	f.link("d1", "t1")
	f.jobs()
	t0 := f.clock.Now()
	f.send(subrole.Event{Type: subrole.EventSubscriptionEnd, UserID: "t1", Tier: subrole.Tier1, Sent: t0.Add(time.Minute)})
	// A retried subscribe sent before the end must not resurrect the roles.
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "t1", Tier: subrole.Tier1, Sent: t0})
	if s := f.sub("t1"); s.Active() {
		t.Fatalf("stale subscribe won: %+v", s)
	}
	if jobs := f.jobs(); len(jobs) != 0 {
		t.Fatalf("jobs %+v", jobs)
	}
}

func TestGracePeriod(t *testing.T) {
	p := policy
	p.Grace = time.Hour
	f := newFixture(t, p)
	f.link("d1", "t1")
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "t1", Tier: subrole.Tier2})
	f.jobs()
	f.send(subrole.Event{Type: subrole.EventSubscriptionEnd, UserID: "t1", Tier: subrole.Tier2})
	if jobs := f.jobs(); len(jobs) != 0 {
		t.Fatalf("roles changed inside the grace period: %+v", jobs)
	}
	// The grace period runs out. An unrelated event changes nothing about
	// it; Run, which slept until the end of the grace period by the real
	// clock, is woken to see the pinned clock's jump.
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "other", Tier: subrole.Tier1})
	if jobs := f.jobs(); len(jobs) != 0 {
		t.Fatalf("roles changed before the grace period ended: %+v", jobs)
	}
	f.clock.Add(time.Hour)
	f.svc.Wake()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if jobs := f.jobs(); len(jobs) > 0 {
			wantJob(t, jobs, "d1", roleLinked)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("grace end queued no job")
}

func TestGiftTotals(t *testing.T) {
	f := newFixture(t, policy)
	f.send(subrole.Event{Type: subrole.EventSubscriptionGift, UserID: "g", Tier: subrole.Tier1, GiftTotal: 5, GiftCumulative: 5})
	f.send(subrole.Event{Type: subrole.EventSubscriptionGift, UserID: "g", Tier: subrole.Tier1, GiftTotal: 5, GiftCumulative: 5}) // duplicate under a new id
	f.send(subrole.Event{Type: subrole.EventSubscriptionGift, UserID: "g", Tier: subrole.Tier1, GiftTotal: 3, GiftCumulative: 8})
	f.send(subrole.Event{Type: subrole.EventSubscriptionGift, UserID: "g", Tier: subrole.Tier1, GiftTotal: 2}) // total not shared
	f.send(subrole.Event{Type: subrole.EventSubscriptionGift, Anonymous: true, Tier: subrole.Tier1, GiftTotal: 50})
	if s := f.sub("g"); s.GiftsGiven != 10 || s.Tier != subrole.TierNone {
		t.Fatalf("gifter state %+v, want 10 gifts and no tier", s)
	}
}

func TestAuthorizationRevoke(t *testing.T) {
	f := newFixture(t, policy)
	f.link("d1", "t1")
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "t1", Tier: subrole.Tier1})
	f.jobs()
	f.send(subrole.Event{Type: subrole.EventAuthorizationRevoke, UserID: "t1"})
	wantJob(t, f.jobs(), "d1")
	err := f.db.View(context.Background(), func(tx subrole.Tx) error {
		_, err := tx.LinkByDiscord("d1")
		return err
	})
	if !errors.Is(err, subrole.ErrNotFound) {
		t.Fatalf("link still there: %v", err)
	}
}

func TestLinkRules(t *testing.T) {
	f := newFixture(t, policy)
	f.send(subrole.Event{Type: subrole.EventSubscriptionMessage, UserID: "t1", Tier: subrole.Tier3, CumulativeMonths: 12})
	f.link("d1", "t1")
	wantJob(t, f.jobs(), "d1", roleLinked, roleT3)

	err := f.svc.Link(context.Background(), subrole.Link{DiscordUserID: "d2", TwitchUserID: "t1"})
	if !errors.Is(err, subrole.ErrConflict) {
		t.Fatalf("second member linked the same Twitch account: %v", err)
	}
	if jobs := f.jobs(); len(jobs) != 0 {
		t.Fatalf("refused link queued %+v", jobs)
	}

	// Relinking d1 to an unsubscribed account drops the old account's tier.
	f.link("d1", "t9")
	wantJob(t, f.jobs(), "d1", roleLinked)

	if err := f.svc.Unlink(context.Background(), "d1", "test"); err != nil {
		t.Fatal(err)
	}
	wantJob(t, f.jobs(), "d1")
	if err := f.svc.Unlink(context.Background(), "d1", "test"); !errors.Is(err, subrole.ErrNotFound) {
		t.Fatalf("second unlink: %v", err)
	}
}

func TestRevocationRecorded(t *testing.T) {
	f := newFixture(t, policy)
	r := subrole.Revocation{SubscriptionID: "sub1", Type: subrole.EventSubscribe, Status: "authorization_revoked", At: f.clock.Now()}
	if dup, err := f.svc.RecordRevocation(context.Background(), "m1", r); dup || err != nil {
		t.Fatal(dup, err)
	}
	if dup, err := f.svc.RecordRevocation(context.Background(), "m1", r); !dup || err != nil {
		t.Fatal("duplicate revocation", dup, err)
	}
	var got []subrole.Revocation
	f.db.View(context.Background(), func(tx subrole.Tx) error {
		var err error
		got, err = tx.Revocations()
		return err
	})
	if len(got) != 1 || got[0].Status != "authorization_revoked" {
		t.Fatalf("revocations %+v", got)
	}
}

func TestSeenMessageIDsPrunedAfterADay(t *testing.T) {
	f := newFixture(t, policy)
	e := subrole.Event{MessageID: "old", Type: subrole.EventSubscribe, UserID: "t1", Tier: subrole.Tier1}
	f.send(e)
	f.clock.Add(23 * time.Hour)
	restart := func() *subrole.Service {
		svc := subrole.NewService(subrole.Config{Store: f.db, Policy: policy, Now: f.clock.Now})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { svc.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		return svc
	}
	svc := restart()
	time.Sleep(50 * time.Millisecond)
	e.Received, e.Sent = f.clock.Now(), f.clock.Now()
	if dup, err := svc.AcceptEvent(context.Background(), e); err != nil || !dup {
		t.Fatalf("after 23h: dup=%v err=%v, want a duplicate", dup, err)
	}
	f.clock.Add(2 * time.Hour)
	svc = restart()
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.Received, e.Sent = f.clock.Now(), f.clock.Now()
		var seen bool
		f.db.View(context.Background(), func(tx subrole.Tx) error {
			var err error
			seen, err = tx.SeenMessage("old")
			return err
		})
		if !seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("message id not pruned after 25h")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if dup, err := svc.AcceptEvent(context.Background(), e); err != nil || dup {
		t.Fatalf("after 25h: dup=%v err=%v, want accepted", dup, err)
	}
}

// TestPoisonEventSetAside: an event that cannot be applied is set aside with
// an audit entry instead of blocking the events behind it forever.
func TestPoisonEventSetAside(t *testing.T) {
	f := newFixture(t, policy)
	f.link("d1", "t1")
	f.jobs()
	ctx := context.Background()
	// No user id: applying it fails (the webhook never lets this through).
	if _, err := f.svc.AcceptEvent(ctx, subrole.Event{MessageID: "bad", Type: subrole.EventSubscribe, Tier: subrole.Tier1, Raw: []byte(`{"tier":"1000"}`)}); err != nil {
		t.Fatal(err)
	}
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "t1", Tier: subrole.Tier2})
	wantJob(t, f.jobs(), "d1", roleLinked, roleT2)
	var found bool
	f.db.View(ctx, func(tx subrole.Tx) error {
		entries, err := tx.Audit(0, -1)
		for _, a := range entries {
			if a.EventID == "bad" && strings.Contains(a.Detail, "set aside") && a.Before == `{"tier":"1000"}` {
				found = true
			}
		}
		return err
	})
	if !found {
		t.Fatal("the poison event is not in the audit log")
	}
}

// rendezvousStore makes a failed Update wait, for a short while, for a
// second failed Update, so that two drains of the inbox that fail on the same
// event go on in step.
type rendezvousStore struct {
	subrole.Store
	mu      sync.Mutex
	waiting chan struct{}
}

func (s *rendezvousStore) Update(ctx context.Context, fn func(subrole.Tx) error) error {
	err := s.Store.Update(ctx, fn)
	if err != nil {
		s.mu.Lock()
		if s.waiting == nil {
			ch := make(chan struct{})
			s.waiting = ch
			s.mu.Unlock()
			select {
			case <-ch:
			case <-time.After(300 * time.Millisecond):
				s.mu.Lock()
				if s.waiting == ch {
					s.waiting = nil
				}
				s.mu.Unlock()
			}
		} else {
			close(s.waiting)
			s.waiting = nil
			s.mu.Unlock()
		}
	}
	return err
}

type noSubscribers struct{}

func (noSubscribers) AllSubscribers(context.Context, func([]subrole.HelixSubscription) error) error {
	return nil
}
func (noSubscribers) Subscribers(context.Context, []string) ([]subrole.HelixSubscription, error) {
	return nil, nil
}

// TestPoisonEventConcurrentDrains: the core and a reconcile pass both drain
// the inbox. When both fail on the same bad event, only that event is set
// aside; the good event queued behind it is applied, not set aside in its
// place.
func TestPoisonEventConcurrentDrains(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "subrole.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	svc := subrole.NewService(subrole.Config{Store: &rendezvousStore{Store: db}, Policy: policy})
	ctx := context.Background()
	if err := svc.Link(ctx, subrole.Link{DiscordUserID: "d2", TwitchUserID: "t2"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// X cannot be applied (no user id), so it stays in the inbox, and Y waits behind it.
	for _, e := range []subrole.Event{
		{MessageID: "X", Type: subrole.EventSubscribe, Sent: now, Received: now, Tier: subrole.Tier1},
		{MessageID: "Y", Type: subrole.EventSubscribe, UserID: "t2", Sent: now, Received: now, Tier: subrole.Tier1},
	} {
		if _, err := svc.AcceptEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { svc.Run(runCtx); close(done) }()
	if _, err := svc.ReconcileWith(ctx, subrole.ReconcileOptions{Source: noSubscribers{}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sub subrole.Subscription
		var setAside []string
		err := db.View(ctx, func(tx subrole.Tx) error {
			entries, err := tx.Audit(0, -1)
			for _, a := range entries {
				if strings.Contains(a.Detail, "set aside") {
					setAside = append(setAside, a.EventID)
				}
			}
			if err != nil {
				return err
			}
			sub, err = tx.Subscription("t2")
			if errors.Is(err, subrole.ErrNotFound) {
				err = nil
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(setAside, "Y") {
			t.Fatalf("the good event Y was set aside: set aside %v", setAside)
		}
		if sub.Active() && slices.Equal(setAside, []string{"X"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("t2 = %+v, set aside %v; want t2 subscribed and only X set aside", sub, setAside)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}
