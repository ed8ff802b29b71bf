package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout version this package reads and writes. Open
// migrates older files up to it and refuses newer ones.
const SchemaVersion = 7

// Bucket names. Keys and values are described in the package documentation.
const (
	bucketLinks       = "links"
	bucketLinksTwitch = "links_by_twitch"
	bucketSubs        = "subscriptions"
	bucketSeenByTime  = "seen_by_time"
	bucketInbox       = "inbox"
	bucketOutbox      = "outbox"
	bucketAudit       = "audit"
	bucketRevocations = "revocations"
	bucketChecks      = "checks"
	bucketMeta        = "meta"
)

// metaSchemaVersion is the meta key of the schema version, a JSON number.
// PutMeta refuses it.
const metaSchemaVersion = "schema_version"

// initialMmapSize is the address space bbolt maps at open. A commit that
// grows the file past the mapping must remap it, and a remap waits for every
// open read transaction to end: a reconcile pass reading a large channel
// would stall the webhook's commits for as long as its read lasts (measured:
// ~250 ms at 100,000 members). Mapping 1 GiB up front costs address space,
// not memory (untouched pages are not resident), and leaves remaps to files
// beyond 1 GiB, which then grow the mapping in 1 GiB steps. 32-bit builds
// keep bbolt's default.
const initialMmapSize = min(1<<30, math.MaxInt/4)

// defaultOpenTimeout is the file lock timeout when Options.Timeout is zero.
const defaultOpenTimeout = time.Second

// allBuckets lists every bucket of the current schema.
func allBuckets() []string {
	return []string{
		bucketLinks, bucketLinksTwitch, bucketSubs, bucketSeenByTime,
		bucketInbox, bucketOutbox, bucketAudit, bucketRevocations, bucketChecks, bucketMeta,
		bucketOAuthStates, bucketBroadcaster, // schema 2 (oauth.go)
		bucketOAuthExpiry,                  // schema 3 (oauth.go)
		bucketDashboardSessions,            // schema 5 (dashboard.go)
		bucketOutreach, bucketOutreachJobs, // schema 6 (outreach.go)
	}
}

// migrations returns the schema migrations in order: migrations()[i] moves a
// file from version i to version i+1. Version 0 is an empty file. To change
// the layout, append a function and increment SchemaVersion.
func migrations() []func(*bolt.Tx) error {
	return []func(*bolt.Tx) error{
		// 0 → 1: create the buckets.
		func(tx *bolt.Tx) error {
			for _, name := range allBuckets() {
				if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
					return fmt.Errorf("create bucket %s: %w", name, err)
				}
			}
			return nil
		},
		// 1 → 2: OAuth states and the broadcaster's token (oauth.go).
		migrateOAuth,
		// 2 → 3: the OAuth states' expiry index (oauth.go).
		migrateOAuthExpiry,
		// 3 → 4: seen message ids are kept in memory, rebuilt from
		// seen_by_time at Open, instead of in a bucket keyed by id (seen.go).
		func(tx *bolt.Tx) error {
			err := tx.DeleteBucket([]byte("seen"))
			if errors.Is(err, berrors.ErrBucketNotFound) {
				return nil
			}
			return err
		},
		// 4 → 5: dashboard sessions (dashboard.go).
		migrateDashboard,
		// 5 → 6: member outreach records and jobs (outreach.go).
		migrateOutreach,
		// 6 → 7: subscription state is written in a binary form
		// (subscription.go). JSON values stay readable and are rewritten as
		// their users' state changes, so there is nothing to convert; the
		// version keeps older binaries, which read only JSON, away.
		func(*bolt.Tx) error { return nil },
	}
}

// ErrClosed is returned by Update, View and Check after Close.
var ErrClosed = errors.New("store: closed")

// Options configures Open. The zero value is ready to use.
type Options struct {
	// Timeout is how long Open waits for the file lock, which another
	// process holding the file keeps. bbolt polls the lock every 50ms, so
	// the wait is rounded to that. Zero (or negative) means one second.
	Timeout time.Duration

	// NoSync skips fsync on every commit. It is for benchmarks only: with
	// NoSync a crash can lose committed transactions or corrupt the file.
	// The zero value, false, syncs every commit.
	NoSync bool
}

// Store is subrole's durable state in one bbolt file. It implements
// subrole.Store. A Store is safe for concurrent use; Open it once per file
// and Close it when done.
type Store struct {
	path string
	db   *bolt.DB

	requests chan *request // to the commit loop; unbuffered
	stop     chan struct{} // closed by Close to stop the commit loop
	stopped  chan struct{} // closed by the commit loop when it returns

	mu       sync.RWMutex // guards closed against new calls to inflight.Add
	closed   bool
	inflight sync.WaitGroup // Update, View and Check calls in progress

	closeOnce sync.Once
	closeErr  error

	commits atomic.Uint64 // read-write transactions committed by the loop
	audited chan struct{} // AuditCommitted; buffered 1, sent to without waiting

	// seen is the set of seen message ids (seen.go). writeMu is held by the
	// commit loop from the start of a transaction until seen reflects its
	// commit, and by Check, so that Check compares the two at rest.
	seen    seenSet
	writeMu sync.Mutex
}

var _ subrole.Store = (*Store)(nil)

// Open opens the bbolt file at path, creating it with mode 0600 if needed,
// brings its schema up to SchemaVersion and starts the commit loop. A file
// held by another process makes Open fail after opts.Timeout with an error
// that names the path and wraps bbolt's errors.ErrTimeout.
func Open(path string, opts Options) (*Store, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = defaultOpenTimeout
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, NoSync: opts.NoSync, InitialMmapSize: initialMmapSize})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("store: open %s: file is locked by another process (waited %s): %w", path, timeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := db.Update(migrate); err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{
		path:     path,
		db:       db,
		requests: make(chan *request),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
		audited:  make(chan struct{}, 1),
	}
	if err := db.View(s.seen.load); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	go s.loop()
	return s, nil
}

// migrate checks the schema version stored in the meta bucket and runs the
// migrations the file needs.
func migrate(tx *bolt.Tx) error {
	version := 0
	if meta := tx.Bucket([]byte(bucketMeta)); meta != nil {
		if v := meta.Get([]byte(metaSchemaVersion)); v != nil {
			if err := decode(v, &version); err != nil {
				return fmt.Errorf("store: read schema version %q: %w", v, err)
			}
		}
	}
	if version > SchemaVersion {
		return fmt.Errorf("store: database schema %d is newer than this binary supports (%d)", version, SchemaVersion)
	}
	if version == SchemaVersion {
		return checkBuckets(tx)
	}
	steps := migrations()
	for v := version; v < SchemaVersion; v++ {
		if err := steps[v](tx); err != nil {
			return fmt.Errorf("store: migrate schema %d to %d: %w", v, v+1, err)
		}
	}
	v, err := encode(SchemaVersion)
	if err != nil {
		return fmt.Errorf("store: write schema version: %w", err)
	}
	if err := tx.Bucket([]byte(bucketMeta)).Put([]byte(metaSchemaVersion), v); err != nil {
		return fmt.Errorf("store: write schema version: %w", err)
	}
	return checkBuckets(tx)
}

// checkBuckets makes sure every bucket of the schema exists, so that Tx
// methods can rely on them.
func checkBuckets(tx *bolt.Tx) error {
	for _, name := range allBuckets() {
		if tx.Bucket([]byte(name)) == nil {
			return fmt.Errorf("store: bucket %s is missing (schema %d)", name, SchemaVersion)
		}
	}
	return nil
}

// Close waits for the Update, View and Check calls in progress to return,
// stops the commit loop and closes the file. Calls made after Close has begun
// return ErrClosed. Calling Close again returns the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.inflight.Wait()
		close(s.stop)
		<-s.stopped
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("store: close %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

// enter registers a call in progress, which Close waits for, or returns
// ErrClosed once Close has begun. The caller must call s.inflight.Done.
func (s *Store) enter() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.inflight.Add(1)
	return nil
}

// Path returns the path of the bbolt file.
func (s *Store) Path() string { return s.path }

// Bolt returns the underlying bbolt database, for packages that keep their
// own bucket in the same file (the autocert cache in package certs). They
// must use only their own buckets, never subrole's, and must not use it after
// Close. Their read-write transactions do not go through the commit loop;
// bbolt serializes them with it.
func (s *Store) Bolt() *bolt.DB { return s.db }

// View runs fn in a read-only bbolt transaction and returns fn's error.
// Write methods of the Tx fail with an error wrapping bbolt's
// errors.ErrTxNotWritable. View returns ctx.Err() without calling fn if ctx
// is already done; it does not interrupt fn.
func (s *Store) View(ctx context.Context, fn func(subrole.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.inflight.Done()
	return s.db.View(func(btx *bolt.Tx) error { return fn(&tx{tx: btx, seen: &s.seen}) })
}

// Check walks the whole file and reports every inconsistency it finds, like
// the bbolt check command: pages reachable twice, unreachable or freed and in
// use, plus the store's own invariants (both link indexes agree, the set of
// seen message ids in memory is what the time index holds). It is meant
// for crash drills and for operators. It holds the write lock while it runs.
func (s *Store) Check() error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.inflight.Done()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	// bbolt's check reads the freelist, which is only safe against
	// concurrent writers from inside a read-write transaction.
	btx, err := s.db.Begin(true)
	if err != nil {
		return fmt.Errorf("store: check %s: %w", s.path, err)
	}
	defer btx.Rollback()

	var errs []error
	for err := range btx.Check() {
		errs = append(errs, err)
	}
	if len(errs) == 0 { // the file is sound, so its contents can be read
		errs = append(checkIndexes(btx), s.seen.check(btx)...)
	}
	if len(errs) > 0 {
		return fmt.Errorf("store: check %s: %w", s.path, errors.Join(errs...))
	}
	return nil
}

// checkIndexes verifies that the index buckets agree with what they index.
func checkIndexes(btx *bolt.Tx) []error {
	var errs []error
	links, byTwitch := btx.Bucket([]byte(bucketLinks)), btx.Bucket([]byte(bucketLinksTwitch))
	links.ForEach(func(k, v []byte) error {
		var l subrole.Link
		if err := decode(v, &l); err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", k, err))
			return nil
		}
		if d := byTwitch.Get([]byte(l.TwitchUserID)); string(d) != string(k) {
			errs = append(errs, fmt.Errorf("link %s: twitch index for %s points to %q", k, l.TwitchUserID, d))
		}
		return nil
	})
	byTwitch.ForEach(func(k, v []byte) error {
		var l subrole.Link
		if lv := links.Get(v); lv == nil || decode(lv, &l) != nil || l.TwitchUserID != string(k) {
			errs = append(errs, fmt.Errorf("twitch index %s: discord user %s has no link to it", k, v))
		}
		return nil
	})
	return append(errs, checkOAuthIndex(btx)...)
}
