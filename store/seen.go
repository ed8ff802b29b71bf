package store

import (
	"crypto/sha256"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// The EventSub message ids seen recently live on disk only in the
// seen_by_time bucket, ordered by the time they were received, and in memory
// in a set keyed by id, rebuilt from that bucket when the file is opened.
//
// Why not a bucket keyed by id: message ids are random UUIDs, so each new id
// would land in a random leaf page of a large B+tree, and a commit of n
// events would write n scattered pages just for deduplication (finding 5 in
// BENCHMARKS.md). Appending to the time-ordered bucket writes the same page
// or two however many events a commit holds.
//
// The set costs about 55 bytes of heap per id kept (the ids of the last 24
// hours: the core prunes older ones), and Open reads the time-ordered bucket
// once to rebuild it: measured on the development machine, 1,000,000 ids
// took 0.55 s and 52 MiB. A million events a day is 11.6 per second all day
// long, far beyond what a channel sends.

// seenKey is the first 128 bits of the SHA-256 of a message id: fixed size,
// so the set's memory does not depend on what a sender puts in the id, and
// wide enough that two different ids colliding is not a practical concern.
type seenKey [16]byte

func keyOfSeen(id string) seenKey {
	sum := sha256.Sum256([]byte(id))
	return seenKey(sum[:16])
}

// seenSet is the committed set of seen message ids with the time each was
// last received (Unix nanoseconds, as in its seen_by_time key).
type seenSet struct {
	mu sync.RWMutex
	m  map[seenKey]int64
}

// get returns the time at which the id with key k was last received.
func (s *seenSet) get(k seenKey) (int64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	at, ok := s.m[k]
	return at, ok
}

// apply records a committed transaction's changes: a time of 0 deletes.
func (s *seenSet) apply(changes map[seenKey]int64) {
	if len(changes) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, at := range changes {
		if at == 0 {
			delete(s.m, k)
		} else {
			s.m[k] = at
		}
	}
}

// load replaces the set with what the seen_by_time bucket of btx holds.
func (s *seenSet) load(btx *bolt.Tx) error {
	m, err := readSeen(btx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.m = m
	s.mu.Unlock()
	return nil
}

// readSeen builds the set from the seen_by_time bucket. An id indexed at two
// times (which MarkSeen never leaves behind) counts at the later one.
func readSeen(btx *bolt.Tx) (map[seenKey]int64, error) {
	b := btx.Bucket([]byte(bucketSeenByTime))
	m := map[seenKey]int64{} // no size hint: Stats would walk the bucket a second time
	err := b.ForEach(func(k, _ []byte) error {
		at, id, err := parseTimeKey(k)
		if err != nil {
			return fmt.Errorf("store: seen time index: %w", err)
		}
		m[keyOfSeen(id)] = at.UnixNano()
		return nil
	})
	return m, err
}

// check compares the set with the seen_by_time bucket of btx, which must
// be a read-write transaction so that no commit changes either meanwhile.
func (s *seenSet) check(btx *bolt.Tx) []error {
	disk, err := readSeen(btx)
	if err != nil {
		return []error{err}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var errs []error
	if len(disk) != len(s.m) {
		errs = append(errs, fmt.Errorf("seen messages: %d in memory, %d in the time index", len(s.m), len(disk)))
	}
	for k, at := range disk {
		if got, ok := s.m[k]; !ok || got != at {
			errs = append(errs, fmt.Errorf("seen message %x: in memory at %d, in the time index at %d", k, got, at))
			if len(errs) > 10 {
				break
			}
		}
	}
	return errs
}

// seenAt returns when the id with key k was last received as this
// transaction sees it: its own changes first, then the committed set.
func (t *tx) seenAt(k seenKey) (int64, bool) {
	if at, ok := t.seenChanges[k]; ok {
		return at, at != 0
	}
	return t.seen.get(k)
}

// changeSeen records a change to the set, kept until the commit.
func (t *tx) changeSeen(k seenKey, at int64) {
	if t.seenChanges == nil {
		t.seenChanges = map[seenKey]int64{}
	}
	t.seenChanges[k] = at
}
