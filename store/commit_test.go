package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/subrole/subrole"
)

// putSub returns an Update function that stores an empty subscription for id.
func putSub(id string) func(subrole.Tx) error {
	return func(tx subrole.Tx) error { return tx.PutSubscription(subrole.Subscription{TwitchUserID: id}) }
}

// hasSub reports whether a subscription for id is stored.
func hasSub(t testing.TB, s *Store, id string) bool {
	t.Helper()
	found := false
	mustView(t, s, func(tx subrole.Tx) error {
		_, err := tx.Subscription(id)
		found = err == nil
		if err != nil && !errors.Is(err, subrole.ErrNotFound) {
			t.Fatal(err)
		}
		return nil
	})
	return found
}

// holdLoop makes the commit loop busy until the returned func is called, so
// that Updates made meanwhile queue up.
func holdLoop(t testing.TB, s *Store) (release func()) {
	t.Helper()
	held, done := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- s.Update(context.Background(), func(subrole.Tx) error {
			close(held)
			<-done
			return nil
		})
	}()
	<-held
	return func() {
		close(done)
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// waitQueued gives n goroutines that are about to call Update time to block
// in it.
func waitQueued() { time.Sleep(100 * time.Millisecond) }

func TestUpdateConcurrent(t *testing.T) {
	const n = 200
	s := openTemp(t, Options{})
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Update(context.Background(), func(tx subrole.Tx) error {
				id := fmt.Sprint("t", i)
				if err := tx.MarkSeen(id, t0); err != nil {
					return err
				}
				if _, err := tx.AppendInbox(subrole.Event{MessageID: id}); err != nil {
					return err
				}
				return tx.PutSubscription(subrole.Subscription{TwitchUserID: id})
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("update %d: %v", i, err)
		}
	}
	t.Logf("%d updates, %d commits", n, s.commits.Load())

	s = reopen(t, s)
	for _, b := range []string{bucketSeenByTime, bucketInbox, bucketSubs} {
		if got := count(t, s, b); got != n {
			t.Errorf("bucket %s holds %d entries after reopen, want %d", b, got, n)
		}
	}
	mustView(t, s, func(tx subrole.Tx) error {
		for i := range n {
			if _, err := tx.Subscription(fmt.Sprint("t", i)); err != nil {
				t.Error(err)
			}
		}
		return nil
	})
}

// TestUpdateGroups proves that concurrent Updates share commits and that
// sequential ones each get their own, without a timer.
func TestUpdateGroups(t *testing.T) {
	t.Run("concurrent", func(t *testing.T) {
		const n = 200
		s := openTemp(t, Options{})
		release := holdLoop(t, s)
		before := s.commits.Load()
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if err := s.Update(context.Background(), putSub(fmt.Sprint(i))); err != nil {
					t.Error(err)
				}
			})
		}
		waitQueued()
		release()
		wg.Wait()
		commits := s.commits.Load() - before
		t.Logf("%d concurrent updates, %d commits", n, commits)
		if commits >= n {
			t.Errorf("%d concurrent updates took %d commits, want fewer", n, commits)
		}
		if got := count(t, s, bucketSubs); got != n {
			t.Errorf("%d subscriptions stored, want %d", got, n)
		}
	})
	t.Run("sequential", func(t *testing.T) {
		const n = 50
		s := openTemp(t, Options{})
		before := s.commits.Load()
		for i := range n {
			mustUpdate(t, s, putSub(fmt.Sprint(i)))
		}
		if commits := s.commits.Load() - before; commits != n {
			t.Errorf("%d sequential updates took %d commits, want one each", n, commits)
		}
	})
	t.Run("no timer", func(t *testing.T) {
		// NoSync, so that only the store's own delay is measured, not the
		// disk's. A 10ms batch timer alone would need 500ms.
		const n = 50
		s := openTemp(t, Options{NoSync: true})
		start := time.Now()
		for i := range n {
			mustUpdate(t, s, putSub(fmt.Sprint(i)))
		}
		elapsed := time.Since(start)
		t.Logf("%d sequential updates in %v", n, elapsed)
		if elapsed > 250*time.Millisecond {
			t.Errorf("%d sequential updates took %v, want < 250ms", n, elapsed)
		}
	})
}

// fakeRequest returns a pending request for fn, as Update would queue it,
// and a counter of fn's calls.
func fakeRequest(fn func(subrole.Tx) error) (*request, *atomic.Int32) {
	calls := new(atomic.Int32)
	r := &request{done: make(chan error, 1)}
	r.fn = func(tx subrole.Tx) error {
		calls.Add(1)
		return fn(tx)
	}
	return r, calls
}

// TestCommitGroup runs groups through the commit loop's core directly, so
// that their composition is exact.
func TestCommitGroup(t *testing.T) {
	errBad := errors.New("bad")
	bad := func(id string) func(subrole.Tx) error {
		return func(tx subrole.Tx) error {
			if err := putSub(id)(tx); err != nil {
				return err
			}
			return errBad
		}
	}
	panics := func(id string) func(subrole.Tx) error {
		return func(tx subrole.Tx) error {
			if err := putSub(id)(tx); err != nil {
				return err
			}
			panic("boom")
		}
	}
	type member struct {
		id        string
		fn        func(string) func(subrole.Tx) error
		wantErr   string // "" for success
		wantCalls int32
	}
	tests := []struct {
		name        string
		group       []member
		wantCommits uint64
	}{{
		name:        "all good",
		group:       []member{{"a", putSub, "", 1}, {"b", putSub, "", 1}, {"c", putSub, "", 1}},
		wantCommits: 1,
	}, {
		// The group is rolled back and run again without the failing fn,
		// which then runs alone to get its own error.
		name:        "failing fn in the middle",
		group:       []member{{"a", putSub, "", 2}, {"b", bad, "bad", 2}, {"c", putSub, "", 1}},
		wantCommits: 1,
	}, {
		// Failing first, it saw only committed state: its error is final.
		name:        "failing fn first",
		group:       []member{{"a", bad, "bad", 1}, {"b", putSub, "", 1}, {"c", putSub, "", 1}},
		wantCommits: 1,
	}, {
		name:        "two failing fns",
		group:       []member{{"a", putSub, "", 3}, {"b", bad, "bad", 2}, {"c", putSub, "", 2}, {"d", bad, "bad", 2}},
		wantCommits: 1,
	}, {
		name:        "failing alone",
		group:       []member{{"a", bad, "bad", 1}},
		wantCommits: 0,
	}, {
		name:        "panic",
		group:       []member{{"a", putSub, "", 2}, {"b", panics, "panicked: boom", 2}, {"c", putSub, "", 1}},
		wantCommits: 1,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTemp(t, Options{})
			var group []*request
			var calls []*atomic.Int32
			for _, m := range tt.group {
				r, c := fakeRequest(m.fn(m.id))
				group, calls = append(group, r), append(calls, c)
			}
			before := s.commits.Load()
			s.commitGroup(group)
			if got := s.commits.Load() - before; got != tt.wantCommits {
				t.Errorf("%d commits, want %d", got, tt.wantCommits)
			}
			for i, m := range tt.group {
				var err error
				select {
				case err = <-group[i].done:
				default:
					t.Fatalf("%s: no answer", m.id)
				}
				if m.wantErr == "" && err != nil || m.wantErr != "" && (err == nil || !strings.Contains(err.Error(), m.wantErr)) {
					t.Errorf("%s: got error %v, want %q", m.id, err, m.wantErr)
				}
				if m.wantErr == "bad" && err != errBad {
					t.Errorf("%s: got %v, want fn's error unchanged", m.id, err)
				}
				if got := calls[i].Load(); got != m.wantCalls {
					t.Errorf("%s: fn called %d times, want %d", m.id, got, m.wantCalls)
				}
				if got, want := hasSub(t, s, m.id), m.wantErr == ""; got != want {
					t.Errorf("%s: write kept = %v, want %v", m.id, got, want)
				}
			}
		})
	}
}

// TestUpdateErrors runs failing and panicking fns among concurrent good ones
// through the real loop.
func TestUpdateErrors(t *testing.T) {
	const n = 60
	s := openTemp(t, Options{})
	release := holdLoop(t, s)
	errBad := errors.New("bad")
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprint(i)
			errs[i] = s.Update(context.Background(), func(tx subrole.Tx) error {
				if err := putSub(id)(tx); err != nil {
					return err
				}
				switch i % 10 {
				case 3:
					return fmt.Errorf("update %d: %w", i, errBad)
				case 7:
					panic(fmt.Sprint("boom ", i))
				}
				return nil
			})
		})
	}
	waitQueued()
	release()
	wg.Wait()
	for i, err := range errs {
		switch i % 10 {
		case 3:
			if !errors.Is(err, errBad) || !strings.Contains(err.Error(), fmt.Sprintf("update %d:", i)) {
				t.Errorf("update %d: got %v, want its own error", i, err)
			}
		case 7:
			if err == nil || !strings.Contains(err.Error(), fmt.Sprint("boom ", i)) {
				t.Errorf("update %d: got %v, want its own panic", i, err)
			}
		default:
			if err != nil {
				t.Errorf("update %d: %v", i, err)
			}
		}
		if got, want := hasSub(t, s, fmt.Sprint(i)), err == nil; got != want {
			t.Errorf("update %d (error %v): write kept = %v", i, err, got)
		}
	}
	// The loop survived the panics.
	mustUpdate(t, s, putSub("after"))
}

func TestUpdateContext(t *testing.T) {
	t.Run("done before the call", func(t *testing.T) {
		s := openTemp(t, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var ran atomic.Bool
		err := s.Update(ctx, func(subrole.Tx) error { ran.Store(true); return nil })
		if !errors.Is(err, context.Canceled) || ran.Load() {
			t.Errorf("got %v, fn ran %v; want context.Canceled and no call", err, ran.Load())
		}
	})
	t.Run("cancelled while queued", func(t *testing.T) {
		s := openTemp(t, Options{})
		release := holdLoop(t, s)
		ctx, cancel := context.WithCancel(context.Background())
		var ran atomic.Bool
		errc := make(chan error, 1)
		go func() {
			errc <- s.Update(ctx, func(tx subrole.Tx) error { ran.Store(true); return putSub("x")(tx) })
		}()
		waitQueued()
		cancel()
		// Update returns while the loop is still busy: it did not wait for it.
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("got %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Update did not return after its context was cancelled")
		}
		release()
		if err := s.Close(); err != nil { // drains the loop
			t.Fatal(err)
		}
		if ran.Load() {
			t.Error("fn ran although its context was cancelled before it started")
		}
		s = reopen(t, s)
		if hasSub(t, s, "x") {
			t.Error("cancelled update was committed")
		}
	})
	t.Run("cancelled in a group before its turn", func(t *testing.T) {
		s := openTemp(t, Options{})
		release := holdLoop(t, s)
		// Queue a slow fn and then the victim, so the loop takes them as
		// one group once it is released.
		slowStarted, slowDone := make(chan struct{}), make(chan struct{})
		slow := make(chan error, 1)
		go func() {
			slow <- s.Update(context.Background(), func(tx subrole.Tx) error {
				close(slowStarted)
				<-slowDone
				return putSub("slow")(tx)
			})
		}()
		waitQueued()
		ctx, cancel := context.WithCancel(context.Background())
		var ran atomic.Bool
		victim := make(chan error, 1)
		go func() {
			victim <- s.Update(ctx, func(tx subrole.Tx) error { ran.Store(true); return putSub("victim")(tx) })
		}()
		waitQueued()
		release()
		<-slowStarted // the group is formed and running
		cancel()
		if err := <-victim; !errors.Is(err, context.Canceled) {
			t.Errorf("victim: got %v, want context.Canceled", err)
		}
		close(slowDone)
		if err := <-slow; err != nil {
			t.Fatal(err)
		}
		if ran.Load() || hasSub(t, s, "victim") {
			t.Error("victim's fn ran although its context was cancelled before its turn")
		}
		if !hasSub(t, s, "slow") {
			t.Error("the rest of the group was not committed")
		}
	})
	t.Run("cancelled after fn started", func(t *testing.T) {
		s := openTemp(t, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		err := s.Update(ctx, func(tx subrole.Tx) error {
			cancel()
			<-ctx.Done()
			return putSub("x")(tx)
		})
		if err != nil {
			t.Errorf("got %v, want nil: the update was committed", err)
		}
		if !hasSub(t, s, "x") {
			t.Error("update not committed")
		}
		err = s.Update(context.Background(), func(tx subrole.Tx) error { return nil }) // loop still fine
		if err != nil {
			t.Error(err)
		}
	})
	t.Run("cancelled after fn started, fn fails", func(t *testing.T) {
		s := openTemp(t, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		errBad := errors.New("bad")
		err := s.Update(ctx, func(tx subrole.Tx) error {
			cancel()
			return errBad
		})
		if err != errBad {
			t.Errorf("got %v, want fn's error", err)
		}
	})
}

func TestClose(t *testing.T) {
	// Close waits for Updates in progress, queued ones included.
	t.Run("drains", func(t *testing.T) {
		const n = 50
		s := openTemp(t, Options{})
		release := holdLoop(t, s)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if err := s.Update(context.Background(), putSub(fmt.Sprint(i))); err != nil {
					t.Errorf("update %d: %v", i, err)
				}
			})
		}
		waitQueued()
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		select {
		case err := <-closed:
			t.Fatalf("Close returned %v while an Update was in progress", err)
		case <-time.After(50 * time.Millisecond):
		}
		release()
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if err := s.Update(context.Background(), putSub("late")); !errors.Is(err, ErrClosed) {
			t.Errorf("Update after Close: %v, want ErrClosed", err)
		}
		s = reopen(t, s)
		if got := count(t, s, bucketSubs); got != n {
			t.Errorf("%d subscriptions after reopen, want %d", got, n)
		}
	})
	// Updates racing Close either commit and report success, or report
	// ErrClosed and leave nothing behind.
	t.Run("race", func(t *testing.T) {
		const n = 100
		s := openTemp(t, Options{})
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = s.Update(context.Background(), putSub(fmt.Sprint(i))) })
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		s = reopen(t, s)
		committed := 0
		for i, err := range errs {
			if err != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("update %d: %v", i, err)
			}
			if got, want := hasSub(t, s, fmt.Sprint(i)), err == nil; got != want {
				t.Errorf("update %d returned %v, but committed = %v", i, err, got)
			}
			if err == nil {
				committed++
			}
		}
		t.Logf("%d of %d updates committed before Close", committed, n)
	})
}

// TestUpdateNotBlockedByLongView: a commit that grows the file must not wait
// for a long read transaction (a reconcile pass) to end, which it would if
// bbolt had to remap the file to grow it.
func TestUpdateNotBlockedByLongView(t *testing.T) {
	s := openTemp(t, Options{NoSync: true})
	release, reading := make(chan struct{}), make(chan struct{})
	viewDone := make(chan error, 1)
	go func() {
		viewDone <- s.View(context.Background(), func(subrole.Tx) error {
			close(reading)
			<-release
			return nil
		})
	}()
	<-reading
	defer func() { close(release); <-viewDone }()
	// Grow the file by ~2 MiB while the read is open (bbolt maps a new file
	// with 32 KiB and doubles the mapping as it grows).
	value := strings.Repeat("x", 64<<10)
	done := make(chan error, 1)
	go func() {
		for i := range 32 {
			err := s.Update(context.Background(), func(tx subrole.Tx) error {
				return tx.PutMeta(fmt.Sprint("grow-", i), []byte(value))
			})
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("commits that grow the file waited for an open read transaction")
	}
}
