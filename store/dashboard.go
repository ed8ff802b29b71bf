package store

import (
	"fmt"
	"math"
	"time"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
)

// bucketDashboardSessions maps a dashboard session's key (the hex SHA-256
// of its token, subrole.SessionKey) to its DashboardSession (schema 5). The
// token itself is never stored.
const bucketDashboardSessions = "dashboard_sessions"

// migrateDashboard moves a file from schema 4 to 5: it adds the dashboard
// sessions.
func migrateDashboard(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists([]byte(bucketDashboardSessions)); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketDashboardSessions, err)
	}
	return nil
}

// AuditCommitted returns a channel that receives a value, without the
// commit ever waiting for it, after a commit that appended audit entries.
// Several commits may leave one value. It is meant for one receiver (the
// dashboard's live feed), which then reads the new entries with View.
func (s *Store) AuditCommitted() <-chan struct{} { return s.audited }

// DashboardSession returns the session stored under key, expired or not.
func (t *tx) DashboardSession(key string) (subrole.DashboardSession, error) {
	var sess subrole.DashboardSession
	ok, err := get(t.bucket(bucketDashboardSessions), []byte(key), &sess)
	if err != nil {
		return subrole.DashboardSession{}, fmt.Errorf("store: dashboard session: %w", err)
	}
	if !ok || key == "" {
		return subrole.DashboardSession{}, fmt.Errorf("store: dashboard session: %w", subrole.ErrNotFound)
	}
	return sess, nil
}

// PutDashboardSession stores sess under sess.Key, replacing it.
func (t *tx) PutDashboardSession(sess subrole.DashboardSession) error {
	if err := t.writable("put dashboard session"); err != nil {
		return err
	}
	if sess.Key == "" {
		return fmt.Errorf("store: put dashboard session: empty key")
	}
	if err := put(t.bucket(bucketDashboardSessions), []byte(sess.Key), sess); err != nil {
		return fmt.Errorf("store: put dashboard session: %w", err)
	}
	return nil
}

// DeleteDashboardSession removes a session; a missing one is not an error.
func (t *tx) DeleteDashboardSession(key string) error {
	if err := t.writable("delete dashboard session"); err != nil {
		return err
	}
	if key == "" {
		return nil
	}
	if err := t.bucket(bucketDashboardSessions).Delete([]byte(key)); err != nil {
		return fmt.Errorf("store: delete dashboard session: %w", err)
	}
	return nil
}

// PruneDashboardSessions deletes the sessions that expired at or before
// now. It reads every session: there are only as many as sign-ins by the
// few people allowed to see the dashboard within a session's lifetime.
func (t *tx) PruneDashboardSessions(now time.Time) (int, error) {
	if err := t.writable("prune dashboard sessions"); err != nil {
		return 0, err
	}
	n := 0
	err := forEach(t.bucket(bucketDashboardSessions), func(k, v []byte) error {
		var sess subrole.DashboardSession
		if err := decode(v, &sess); err == nil && now.Before(sess.Expires) {
			return nil
		}
		n++
		return t.bucket(bucketDashboardSessions).Delete(k) // expired or unreadable: never usable
	})
	if err != nil {
		return 0, fmt.Errorf("store: prune dashboard sessions: %w", err)
	}
	return n, nil
}

// RecentAudit returns up to max audit entries (max < 0: no limit) before
// position before (0: from the newest), newest first, with Seq set.
func (t *tx) RecentAudit(before uint64, max int) ([]subrole.AuditEntry, error) {
	var entries []subrole.AuditEntry
	c := t.bucket(bucketAudit).Cursor()
	var k, v []byte
	if before == 0 {
		before = math.MaxUint64
		k, v = c.Last()
	} else {
		k, v = c.Seek(seqKey(before))
		if k == nil {
			k, v = c.Last()
		}
	}
	for ; k != nil && len(entries) != max; k, v = c.Prev() {
		seq := parseSeqKey(k)
		if seq >= before {
			continue
		}
		var e subrole.AuditEntry
		if err := decode(v, &e); err != nil {
			return nil, fmt.Errorf("store: read audit log: entry %d: %w", seq, err)
		}
		e.Seq = seq
		entries = append(entries, e)
	}
	return entries, nil
}

// Counts counts the links, inbox events and outbox jobs from bbolt's page
// statistics (no value is decoded) and reads the newest audit position.
func (t *tx) Counts() (subrole.Counts, error) {
	c := subrole.Counts{
		Links:  t.bucket(bucketLinks).Stats().KeyN,
		Inbox:  t.bucket(bucketInbox).Stats().KeyN,
		Outbox: t.bucket(bucketOutbox).Stats().KeyN,
	}
	if k, _ := t.bucket(bucketAudit).Cursor().Last(); k != nil {
		c.LastAudit = parseSeqKey(k)
	}
	return c, nil
}
