package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

func TestOAuthStates(t *testing.T) {
	s := openTemp(t, Options{})
	live := subrole.OAuthState{Key: "aa", Purpose: subrole.PurposeLink, DiscordUserID: "100000000000000001",
		DiscordName: "alice", GuildID: "900000000000000001", Created: t0, Expires: t0.Add(10 * time.Minute)}
	expired := subrole.OAuthState{Key: "bb", Purpose: subrole.PurposeBroadcaster, Created: t0.Add(-time.Hour), Expires: t0.Add(-50 * time.Minute)}
	used := live
	used.Key, used.Used = "cc", t0.Add(time.Minute)
	mustUpdate(t, s, func(tx subrole.Tx) error {
		for _, st := range []subrole.OAuthState{live, expired, used} {
			if err := tx.PutOAuthState(st); err != nil {
				return err
			}
		}
		return nil
	})
	s = reopen(t, s)
	mustView(t, s, func(tx subrole.Tx) error {
		for _, want := range []subrole.OAuthState{live, expired, used} {
			got, err := tx.OAuthState(want.Key)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("OAuthState(%s) = %+v, %v; want %+v", want.Key, got, err, want)
			}
		}
		for _, key := range []string{"", "zz"} {
			if _, err := tx.OAuthState(key); !errors.Is(err, subrole.ErrNotFound) {
				t.Errorf("OAuthState(%q) err = %v, want ErrNotFound", key, err)
			}
		}
		if err := tx.PutOAuthState(live); !errors.Is(err, berrors.ErrTxNotWritable) {
			t.Errorf("PutOAuthState in a View: %v", err)
		}
		return nil
	})
	if err := s.Update(context.Background(), func(tx subrole.Tx) error {
		return tx.PutOAuthState(subrole.OAuthState{})
	}); err == nil {
		t.Error("stored a state without a key")
	}

	// Pruning at t0 removes only the expired state; at expiry the rest go.
	mustUpdate(t, s, func(tx subrole.Tx) error {
		if n, err := tx.PruneOAuthStates(t0, -1); n != 1 || err != nil {
			t.Errorf("prune at t0 = %d, %v; want 1", n, err)
		}
		if _, err := tx.OAuthState("bb"); !errors.Is(err, subrole.ErrNotFound) {
			t.Error("expired state survived the prune")
		}
		if n, err := tx.PruneOAuthStates(t0.Add(10*time.Minute), 1); n != 1 || err != nil {
			t.Errorf("prune with max 1 = %d, %v", n, err)
		}
		if n, err := tx.PruneOAuthStates(t0.Add(10*time.Minute), 0); n != 0 || err != nil {
			t.Errorf("prune with max 0 = %d, %v", n, err)
		}
		if n, err := tx.PruneOAuthStates(t0.Add(10*time.Minute), -1); n != 1 || err != nil {
			t.Errorf("prune the rest = %d, %v", n, err)
		}
		return nil
	})
}

func TestBroadcasterToken(t *testing.T) {
	s := openTemp(t, Options{})
	mustView(t, s, func(tx subrole.Tx) error {
		if _, err := tx.BroadcasterToken(); !errors.Is(err, subrole.ErrNotFound) {
			t.Errorf("empty store: err = %v, want ErrNotFound", err)
		}
		return nil
	})
	tok := subrole.BroadcasterToken{UserID: "1337", Login: "cooler_user", AccessToken: "at", RefreshToken: "rt",
		Expires: t0.Add(4 * time.Hour), Scopes: []string{"channel:read:subscriptions"}, Connected: t0}
	mustUpdate(t, s, func(tx subrole.Tx) error { return tx.PutBroadcasterToken(tok) })
	tok2 := tok
	tok2.AccessToken, tok2.RefreshToken, tok2.Refreshed = "at2", "rt2", t0.Add(time.Hour)
	mustUpdate(t, s, func(tx subrole.Tx) error { return tx.PutBroadcasterToken(tok2) })
	s = reopen(t, s)
	mustView(t, s, func(tx subrole.Tx) error {
		got, err := tx.BroadcasterToken()
		if err != nil || !reflect.DeepEqual(got, tok2) {
			t.Errorf("BroadcasterToken = %v, %v; want %v", got, err, tok2)
		}
		return nil
	})
	for _, bad := range []subrole.BroadcasterToken{{RefreshToken: "rt"}, {UserID: "1337"}} {
		if err := s.Update(context.Background(), func(tx subrole.Tx) error { return tx.PutBroadcasterToken(bad) }); err == nil {
			t.Errorf("stored %+v", bad)
		}
	}
}

// TestMigrateSchema1 opens a file written by schema 1, which has no OAuth
// buckets, and uses them.
func TestMigrateSchema1(t *testing.T) {
	s := asSchema(t, openTemp(t, Options{}), 1, func(tx *bolt.Tx) error {
		for _, b := range []string{bucketOAuthStates, bucketBroadcaster} {
			if err := tx.DeleteBucket([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	mustUpdate(t, s, func(tx subrole.Tx) error {
		return tx.PutOAuthState(subrole.OAuthState{Key: "k", Expires: t0})
	})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// withWork runs fn in a read-write transaction that counts the OAuth
// records decoded and index keys visited, and returns the count.
func withWork(t *testing.T, s *Store, fn func(tx *tx) error) int {
	t.Helper()
	n := 0
	if err := s.db.Update(func(btx *bolt.Tx) error { return fn(&tx{tx: btx, seen: &s.seen, oauthWork: &n}) }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOAuthStatesStayCheap fills the store with pending states, as a flood
// of GET /broadcaster/connect would, and checks that issuing one more (prune,
// count, put) only touches the expired states and at most the cap.
func TestOAuthStatesStayCheap(t *testing.T) {
	s := openTemp(t, Options{})
	const pending, expired, limit = 5000, 30, 200
	withWork(t, s, func(tx *tx) error {
		for i := range pending {
			p := subrole.PurposeBroadcaster
			if i%2 == 0 {
				p = subrole.PurposeLink
			}
			st := subrole.OAuthState{Key: fmt.Sprintf("p%063x", i), Purpose: p, Created: t0, Expires: t0.Add(time.Duration(1+i%600) * time.Second)}
			if err := tx.PutOAuthState(st); err != nil {
				return err
			}
		}
		for i := range expired {
			st := subrole.OAuthState{Key: fmt.Sprintf("e%063x", i), Purpose: subrole.PurposeBroadcaster,
				Created: t0.Add(-time.Hour), Expires: t0.Add(-time.Duration(i) * time.Second)}
			if err := tx.PutOAuthState(st); err != nil {
				return err
			}
		}
		return nil
	})

	var pruned, counted int
	work := withWork(t, s, func(tx *tx) error {
		var err error
		if pruned, err = tx.PruneOAuthStates(t0, 100); err != nil {
			return err
		}
		if counted, err = tx.CountOAuthStates(subrole.PurposeBroadcaster, t0, limit); err != nil {
			return err
		}
		return tx.PutOAuthState(subrole.OAuthState{Key: "new", Purpose: subrole.PurposeBroadcaster, Created: t0, Expires: t0.Add(10 * time.Minute)})
	})
	if pruned != expired || counted != limit {
		t.Fatalf("pruned %d (want %d), counted %d (want %d)", pruned, expired, counted, limit)
	}
	// Each expired state: its index key and its record; then one index key
	// per purpose where the walk stops, and at most limit keys counted.
	if max := 2*expired + 2 + limit; work > max {
		t.Fatalf("issuing a state did %d units of work with %d pending, want at most %d", work, pending, max)
	}
	mustView(t, s, func(tx subrole.Tx) error {
		for p, want := range map[subrole.OAuthPurpose]int{subrole.PurposeLink: pending / 2, subrole.PurposeBroadcaster: pending/2 + 1} {
			if n, err := tx.CountOAuthStates(p, t0, -1); n != want || err != nil {
				t.Errorf("count %v = %d, %v; want %d", p, n, err, want)
			}
		}
		return nil
	})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestOAuthStateIndex moves a state's expiry and prunes through the index.
func TestOAuthStateIndex(t *testing.T) {
	s := openTemp(t, Options{})
	st := subrole.OAuthState{Key: "k1", Purpose: subrole.PurposeLink, Created: t0, Expires: t0.Add(time.Minute)}
	mustUpdate(t, s, func(tx subrole.Tx) error {
		if err := tx.PutOAuthState(st); err != nil {
			return err
		}
		st.Expires = t0.Add(time.Hour) // replaced with a later expiry: the old index entry goes
		st.Used = t0
		return tx.PutOAuthState(st)
	})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, s, func(tx subrole.Tx) error {
		if n, err := tx.PruneOAuthStates(t0.Add(time.Minute), -1); n != 0 || err != nil {
			t.Errorf("prune before the new expiry = %d, %v", n, err)
		}
		if n, _ := tx.CountOAuthStates(subrole.PurposeLink, t0.Add(time.Minute), -1); n != 1 {
			t.Errorf("count = %d, want 1", n)
		}
		if n, _ := tx.CountOAuthStates(subrole.PurposeLink, t0.Add(time.Hour), -1); n != 0 {
			t.Errorf("count at expiry = %d, want 0", n)
		}
		if n, err := tx.PruneOAuthStates(t0.Add(time.Hour), -1); n != 1 || err != nil {
			t.Errorf("prune at the new expiry = %d, %v", n, err)
		}
		if _, err := tx.OAuthState("k1"); !errors.Is(err, subrole.ErrNotFound) {
			t.Errorf("pruned state still there: %v", err)
		}
		if err := tx.PutOAuthState(subrole.OAuthState{Key: "k2"}); err == nil {
			t.Error("stored a state without an expiry")
		}
		return nil
	})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateSchema2 opens a file written by schema 2, which has states but
// no expiry index, and prunes them through the index it built.
func TestMigrateSchema2(t *testing.T) {
	s := asSchema(t, openTemp(t, Options{}), 2, func(btx *bolt.Tx) error {
		if err := btx.DeleteBucket([]byte(bucketOAuthExpiry)); err != nil {
			return err
		}
		b := btx.Bucket([]byte(bucketOAuthStates))
		for _, st := range []subrole.OAuthState{
			{Key: "old", Purpose: subrole.PurposeBroadcaster, Expires: t0},
			{Key: "live", Purpose: subrole.PurposeLink, Expires: t0.Add(time.Hour)},
		} {
			if err := put(b, []byte(st.Key), st); err != nil {
				return err
			}
		}
		return b.Put([]byte("garbage"), []byte("{"))
	})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, s, func(tx subrole.Tx) error {
		if _, err := tx.OAuthState("garbage"); !errors.Is(err, subrole.ErrNotFound) {
			t.Errorf("undecodable state kept: %v", err)
		}
		if n, err := tx.PruneOAuthStates(t0, -1); n != 1 || err != nil {
			t.Errorf("prune = %d, %v; want 1", n, err)
		}
		if _, err := tx.OAuthState("live"); err != nil {
			t.Errorf("live state lost: %v", err)
		}
		return nil
	})
}
