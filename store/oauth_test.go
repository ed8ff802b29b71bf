package store

import (
	"context"
	"errors"
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
	s := openTemp(t, Options{})
	path := s.Path()
	s.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{bucketOAuthStates, bucketBroadcaster} {
			if err := tx.DeleteBucket([]byte(b)); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte(bucketMeta)).Put([]byte(metaSchemaVersion), []byte("1"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("open schema 1: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	mustUpdate(t, s, func(tx subrole.Tx) error {
		return tx.PutOAuthState(subrole.OAuthState{Key: "k", Expires: t0})
	})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
