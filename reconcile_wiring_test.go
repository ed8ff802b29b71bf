package subrole_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/store"
)

func TestOnRevocationHook(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "subrole.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got []subrole.Revocation
	svc := subrole.NewService(subrole.Config{Store: db, OnRevocation: func(r subrole.Revocation) { got = append(got, r) }})
	r := subrole.Revocation{SubscriptionID: "s1", Type: subrole.EventSubscribe, Version: "1", Status: "notification_failures_exceeded"}
	for range 2 { // a redelivery is recorded once and reported once
		if _, err := svc.RecordRevocation(context.Background(), "m1", r); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 1 || got[0] != r {
		t.Fatalf("hook saw %+v", got)
	}
}

func TestReconcileProgress(t *testing.T) {
	f := newFixture(t, policy)
	f.link(discord(0), twitch(0))
	f.clock.Add(time.Hour)
	h := newHelixFake(subrole.HelixSubscription{UserID: twitch(0), Tier: subrole.Tier1})
	var stages []subrole.ReconcileStage
	rep, err := f.svc.ReconcileWith(context.Background(), subrole.ReconcileOptions{Source: h, Roles: rolesFake{},
		Progress: func(s subrole.ReconcileStage, r subrole.ReconcileReport) {
			if len(stages) == 0 || stages[len(stages)-1] != s {
				stages = append(stages, s)
			}
		}})
	if err != nil || rep.MissedSubscribe != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	want := []subrole.ReconcileStage{subrole.StageHelix, subrole.StageApply, subrole.StageDiscord, subrole.StageDone}
	if !slices.Equal(stages, want) {
		t.Fatalf("stages %v, want %v", stages, want)
	}
}

// TestReconcileLateEventWins: Helix facts are stamped HelixLag before the
// pass, so an end sent after that moment but delivered after the pass (a
// Twitch retry) still applies.
func TestReconcileLateEventWins(t *testing.T) {
	f := newFixture(t, policy)
	f.link(discord(0), twitch(0))
	f.clock.Add(time.Hour)
	sent := f.clock.Now().Add(-5 * time.Minute) // the end happened 5 minutes ago; Helix does not show it yet
	h := newHelixFake(subrole.HelixSubscription{UserID: twitch(0), Tier: subrole.Tier1})
	if rep, err := f.svc.Reconcile(context.Background(), h, nil); err != nil || rep.MissedSubscribe != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	f.jobs()
	f.send(subrole.Event{Type: subrole.EventSubscriptionEnd, UserID: twitch(0), Tier: subrole.Tier1, Sent: sent})
	if s := f.sub(twitch(0)); s.Active() {
		t.Fatalf("a late end lost to older Helix data: %+v", s)
	}
	wantJob(t, f.jobs(), discord(0), roleLinked)
}

// TestReconcileEnforceSkipsQueued: a member whose roles are already being
// changed (a job in the outbox, or one this pass queued) is not counted as
// edited by hand, and gets no second job.
func TestReconcileEnforceSkipsQueued(t *testing.T) {
	f := newFixture(t, policy)
	f.link(discord(0), twitch(0))
	f.link(discord(1), twitch(1))
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: twitch(1), Tier: subrole.Tier2})
	f.clock.Add(time.Hour)
	f.jobs()
	// A job for discord(1) is pending (an event just changed them).
	f.send(subrole.Event{Type: subrole.EventSubscriptionMessage, UserID: twitch(1), Tier: subrole.Tier3})
	f.clock.Add(time.Hour)
	h := newHelixFake(
		subrole.HelixSubscription{UserID: twitch(0), Tier: subrole.Tier1}, // missed subscribe: this pass queues a job
		subrole.HelixSubscription{UserID: twitch(1), Tier: subrole.Tier3},
	)
	actual := rolesFake{discord(0): {roleLinked}, discord(1): {roleLinked, roleT2}} // Discord before the jobs
	rep, err := f.svc.Reconcile(context.Background(), h, actual)
	if err != nil {
		t.Fatal(err)
	}
	if rep.RolesRepaired != 0 || rep.MissedSubscribe != 1 || rep.RoleJobs != 1 {
		t.Fatalf("report %+v", rep)
	}
	if jobs := f.jobs(); len(jobs) != 2 { // the event's and the pass's
		t.Fatalf("jobs %+v", jobs)
	}
}

// TestReconcileEstimatesFromLastPass: with few stored subscriptions but a
// large channel (seen by the last full read), user_id batches are chosen.
func TestReconcileEstimatesFromLastPass(t *testing.T) {
	f := newFixture(t, policy)
	var subs []subrole.HelixSubscription
	for i := range 1000 {
		subs = append(subs, subrole.HelixSubscription{UserID: twitch(5000 + i), Tier: subrole.Tier1})
	}
	f.link(discord(0), twitch(0))
	f.link(discord(1), twitch(1))
	f.clock.Add(time.Hour)
	h := newHelixFake(subs...)
	// Nothing stored: one page looks cheapest, and the pass finds 1000.
	rep, err := f.svc.Reconcile(context.Background(), h, nil)
	if err != nil || rep.Strategy != "all" || rep.Subscribers != 1000 {
		t.Fatalf("%+v %v", rep, err)
	}
	// The stored state now knows them anyway; forget it to check the estimate.
	f.clock.Add(time.Hour)
	rep, err = f.svc.Reconcile(context.Background(), h, nil)
	if err != nil || rep.Strategy != "linked" || rep.HelixRequests != 1 {
		t.Fatalf("second pass %+v %v, want one user_id batch", rep, err)
	}
}

func TestRunReconcileWaitsUntilReady(t *testing.T) {
	f := newFixture(t, policy)
	f.link(discord(0), twitch(0))
	h := newHelixFake(subrole.HelixSubscription{UserID: twitch(0), Tier: subrole.Tier1})
	var mu sync.Mutex
	ready := errors.New("the broadcaster is not connected")
	done := make(chan subrole.ReconcileReport, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.svc.RunReconcile(ctx, subrole.ReconcileSchedule{Source: h, Interval: time.Hour, RetryAfter: time.Hour,
		Ready:  func(context.Context) error { mu.Lock(); defer mu.Unlock(); return ready },
		OnDone: func(r subrole.ReconcileReport, err error) { done <- r }})
	select {
	case <-done:
		t.Fatal("a pass ran while not ready")
	case <-time.After(100 * time.Millisecond):
	}
	mu.Lock()
	ready = nil
	mu.Unlock()
	f.svc.RequestReconcile() // what the wiring does when the broadcaster connects
	select {
	case r := <-done:
		if r.MissedSubscribe != 1 {
			t.Fatalf("%+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pass once ready")
	}
	if h.requests != 1 {
		t.Fatalf("%d Helix requests", h.requests)
	}
}
