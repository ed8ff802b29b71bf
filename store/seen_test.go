package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
)

// seenIDs reports which of ids a View of s reports as seen.
func seenIDs(t *testing.T, s *Store, ids ...string) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	mustView(t, s, func(tx subrole.Tx) error {
		for _, id := range ids {
			ok, err := tx.SeenMessage(id)
			if err != nil {
				return err
			}
			got[id] = ok
		}
		return nil
	})
	return got
}

// TestSeenSurvivesReopen checks that the set of seen ids, kept in memory, is
// rebuilt from the file: what was committed is seen after a reopen, at the
// time it was last seen (so pruning still keys on the latest receipt).
func TestSeenSurvivesReopen(t *testing.T) {
	s := openTemp(t, Options{})
	mustUpdate(t, s, func(tx subrole.Tx) error {
		for i := range 100 {
			if err := tx.MarkSeen(fmt.Sprint("m", i), t0.Add(time.Duration(i)*time.Second)); err != nil {
				return err
			}
		}
		return tx.MarkSeen("m0", t0.Add(time.Hour)) // seen again, later
	})
	s = reopen(t, s)
	if got := seenIDs(t, s, "m0", "m99", "m100"); !got["m0"] || !got["m99"] || got["m100"] {
		t.Errorf("after reopen: %v, want m0 and m99 seen, m100 not", got)
	}
	mustUpdate(t, s, func(tx subrole.Tx) error {
		n, err := tx.PruneSeen(t0.Add(time.Minute), -1)
		if n != 59 { // m1..m59; m0 moved to its later receipt
			t.Errorf("pruned %d, want 59", n)
		}
		return err
	})
	if got := seenIDs(t, s, "m0", "m1", "m60"); !got["m0"] || got["m1"] || !got["m60"] {
		t.Errorf("after prune: %v, want m0 and m60 seen, m1 not", got)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestSeenRolledBack checks that ids marked by a transaction that is not
// committed are not seen afterwards, in the same group of Updates or later,
// and that a failed Update's prune is undone too.
func TestSeenRolledBack(t *testing.T) {
	s := openTemp(t, Options{})
	mustUpdate(t, s, func(tx subrole.Tx) error { return tx.MarkSeen("kept", t0) })
	errFail := errors.New("fail")
	err := s.Update(context.Background(), func(tx subrole.Tx) error {
		if err := tx.MarkSeen("lost", t0); err != nil {
			return err
		}
		if n, err := tx.PruneSeen(t0.Add(time.Second), -1); n != 2 || err != nil {
			t.Errorf("prune in the failing update = %d, %v; want 2", n, err)
		}
		if ok, _ := tx.SeenMessage("kept"); ok {
			t.Error("pruned id still seen inside its transaction")
		}
		return errFail
	})
	if !errors.Is(err, errFail) {
		t.Fatalf("update: %v", err)
	}
	if got := seenIDs(t, s, "kept", "lost"); !got["kept"] || got["lost"] {
		t.Errorf("after a failed update: %v, want kept seen, lost not", got)
	}
	// Inside one transaction, an id marked earlier is seen.
	mustUpdate(t, s, func(tx subrole.Tx) error {
		if err := tx.MarkSeen("new", t0); err != nil {
			return err
		}
		if ok, _ := tx.SeenMessage("new"); !ok {
			t.Error("id not seen in the transaction that marked it")
		}
		return nil
	})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestSeenGroupRetry checks the commit loop's retry path: when one Update of
// a group fails, the group is rolled back and run again without it, and the
// ids of the failed attempt do not leak into the set.
func TestSeenGroupRetry(t *testing.T) {
	s := openTemp(t, Options{})
	release := make(chan struct{})
	blocked := make(chan struct{})
	go s.Update(context.Background(), func(tx subrole.Tx) error { // holds the loop so the rest queue up
		close(blocked)
		<-release
		return nil
	})
	<-blocked
	errs := make(chan error, 3)
	for _, id := range []string{"a", "bad", "c"} {
		go func() {
			errs <- s.Update(context.Background(), func(tx subrole.Tx) error {
				if err := tx.MarkSeen(id, t0); err != nil {
					return err
				}
				if id == "bad" {
					return fmt.Errorf("refused %s", id)
				}
				return nil
			})
		}()
	}
	waitQueued()
	close(release)
	failed := 0
	for range 3 {
		if err := <-errs; err != nil {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d updates failed, want 1", failed)
	}
	if got := seenIDs(t, s, "a", "bad", "c"); !got["a"] || got["bad"] || !got["c"] {
		t.Errorf("seen %v, want a and c only", got)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestCheckSeen checks that Check reports a time index that disagrees with
// the set in memory (here: an entry removed behind the store's back).
func TestCheckSeen(t *testing.T) {
	s := openTemp(t, Options{})
	mustUpdate(t, s, func(tx subrole.Tx) error { return tx.MarkSeen("m1", t0) })
	if err := s.Bolt().Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketSeenByTime)).Delete(appendTimeKey(t0, "m1"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err == nil || !strings.Contains(err.Error(), "seen messages") {
		t.Errorf("Check = %v, want a report about seen messages", err)
	}
}

// TestMigrateSchema3 opens a file of schema 3, which kept seen ids in a
// bucket keyed by id as well, and checks that the ids are still seen and the
// old bucket is gone.
func TestMigrateSchema3(t *testing.T) {
	s := openTemp(t, Options{})
	mustUpdate(t, s, func(tx subrole.Tx) error { return tx.MarkSeen("m1", t0) })
	s = asSchema(t, s, 3, func(btx *bolt.Tx) error {
		b, err := btx.CreateBucket([]byte("seen"))
		if err != nil {
			return err
		}
		return b.Put([]byte("m1"), appendTimeKey(t0, ""))
	})
	if got := seenIDs(t, s, "m1"); !got["m1"] {
		t.Error("m1 not seen after the migration")
	}
	if err := s.Bolt().View(func(btx *bolt.Tx) error {
		if btx.Bucket([]byte("seen")) != nil {
			t.Error("the old seen bucket is still there")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
