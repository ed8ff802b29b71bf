package store

import (
	"bytes"
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// bucketBans holds the ban list of package guard: IP prefix in canonical
// form ("203.0.113.7/32", "2001:db8:1:2::/64") → ban record (JSON, encoded
// and decoded by guard; the store does not look inside). The bucket is
// created by the first WriteBans, so it needs no schema migration; LoadBans
// on a file without it returns nothing.
const bucketBans = "bans"

// LoadBans returns every ban record by key. It implements guard.BanStore.
func (s *Store) LoadBans(ctx context.Context) (map[string][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.inflight.Done()
	out := map[string][]byte{}
	err := s.db.View(func(btx *bolt.Tx) error {
		b := btx.Bucket([]byte(bucketBans))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			out[string(k)] = bytes.Clone(v)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: load bans: %w", err)
	}
	return out, nil
}

// WriteBans stores the records in one transaction and returns once they are
// on disk; a nil value deletes its key. It implements guard.BanStore. Its
// transaction does not go through the commit loop (bbolt serializes the
// two); guard groups bans so that a burst of them costs one commit.
func (s *Store) WriteBans(ctx context.Context, records map[string][]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(records) == 0 {
		return nil
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.inflight.Done()
	err := s.db.Update(func(btx *bolt.Tx) error {
		b, err := btx.CreateBucketIfNotExists([]byte(bucketBans))
		if err != nil {
			return err
		}
		for k, v := range records {
			if v == nil {
				err = b.Delete([]byte(k))
			} else {
				err = b.Put([]byte(k), v)
			}
			if err != nil {
				return fmt.Errorf("ban %s: %w", k, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: write bans: %w", err)
	}
	return nil
}
