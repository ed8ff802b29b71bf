package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
)

func TestDashboardSessions(t *testing.T) {
	s := openTemp(t, Options{})
	live := subrole.DashboardSession{Key: subrole.SessionKey("a"), TwitchUserID: "1337", TwitchLogin: "streamer",
		Created: t0, Expires: t0.Add(time.Hour)}
	old := subrole.DashboardSession{Key: subrole.SessionKey("b"), TwitchUserID: "1337", Created: t0.Add(-time.Hour), Expires: t0}
	mustUpdate(t, s, func(tx subrole.Tx) error {
		if err := tx.PutDashboardSession(live); err != nil {
			return err
		}
		return tx.PutDashboardSession(old)
	})
	s = reopen(t, s) // a restart keeps sessions
	mustView(t, s, func(tx subrole.Tx) error {
		got, err := tx.DashboardSession(live.Key)
		equal(t, "session", got, live)
		return err
	})
	mustUpdate(t, s, func(tx subrole.Tx) error {
		n, err := tx.PruneDashboardSessions(t0) // expired at or before now
		if n != 1 {
			t.Errorf("pruned %d, want 1", n)
		}
		return err
	})
	mustUpdate(t, s, func(tx subrole.Tx) error {
		if _, err := tx.DashboardSession(old.Key); !errors.Is(err, subrole.ErrNotFound) {
			t.Errorf("pruned session: %v", err)
		}
		if err := tx.DeleteDashboardSession(live.Key); err != nil {
			return err
		}
		if err := tx.DeleteDashboardSession(live.Key); err != nil { // again: not an error
			return err
		}
		if _, err := tx.DashboardSession(live.Key); !errors.Is(err, subrole.ErrNotFound) {
			t.Errorf("deleted session: %v", err)
		}
		return nil
	})
	if n := count(t, s, bucketDashboardSessions); n != 0 {
		t.Errorf("%d sessions left", n)
	}
}

func TestRecentAuditAndCounts(t *testing.T) {
	s := openTemp(t, Options{})
	mustView(t, s, func(tx subrole.Tx) error {
		c, err := tx.Counts()
		equal(t, "empty counts", c, subrole.Counts{})
		got, _ := tx.RecentAudit(0, 5)
		equal(t, "empty log", len(got), 0)
		return err
	})
	mustUpdate(t, s, func(tx subrole.Tx) error {
		for i := range 7 {
			if err := tx.AppendAudit(subrole.AuditEntry{Time: t0, Kind: subrole.AuditNotice, Detail: string(rune('a' + i))}); err != nil {
				return err
			}
		}
		tx.PutLink(subrole.Link{DiscordUserID: "d1", TwitchUserID: "t1"})
		tx.PutLink(subrole.Link{DiscordUserID: "d2", TwitchUserID: "t2"})
		tx.AppendInbox(subrole.Event{MessageID: "m"})
		for range 3 {
			tx.AppendRoleJob(subrole.RoleJob{DiscordUserID: "d1"})
		}
		return nil
	})
	seqs := func(es []subrole.AuditEntry) []uint64 {
		var out []uint64
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return out
	}
	mustView(t, s, func(tx subrole.Tx) error {
		c, err := tx.Counts()
		equal(t, "counts", c, subrole.Counts{Links: 2, Inbox: 1, Outbox: 3, LastAudit: 7})
		for _, tt := range []struct {
			before uint64
			max    int
			want   []uint64
		}{
			{0, 3, []uint64{7, 6, 5}},
			{5, 3, []uint64{4, 3, 2}},
			{3, 10, []uint64{2, 1}},
			{1, 10, nil},
			{100, 2, []uint64{7, 6}},
			{0, -1, []uint64{7, 6, 5, 4, 3, 2, 1}},
		} {
			got, err := tx.RecentAudit(tt.before, tt.max)
			if err != nil {
				return err
			}
			equal(t, "recent", seqs(got), tt.want)
		}
		got, _ := tx.RecentAudit(0, 1)
		equal(t, "detail", got[0].Detail, "g")
		return err
	})
}

// TestAuditCommitted: a commit that appends audit entries leaves one
// wake-up on the channel without waiting for a reader; other commits leave
// none.
func TestAuditCommitted(t *testing.T) {
	s := openTemp(t, Options{})
	woken := func() bool {
		select {
		case <-s.AuditCommitted():
			return true
		default:
			return false
		}
	}
	mustUpdate(t, s, func(tx subrole.Tx) error { return tx.PutMeta("k", []byte("v")) })
	if woken() {
		t.Fatal("a commit without audit entries woke the feed")
	}
	for range 5 { // nobody reads: the commits must not wait
		mustUpdate(t, s, func(tx subrole.Tx) error { return tx.AppendAudit(subrole.AuditEntry{Time: t0}) })
	}
	if !woken() || woken() {
		t.Fatal("want exactly one wake-up after five unread audit commits")
	}
	err := s.Update(context.Background(), func(tx subrole.Tx) error {
		tx.AppendAudit(subrole.AuditEntry{Time: t0})
		return errors.New("rolled back")
	})
	if err == nil || woken() {
		t.Fatalf("a rolled back audit entry woke the feed (err %v)", err)
	}
}

func TestMigrateDashboardSessions(t *testing.T) {
	s := asSchema(t, openTemp(t, Options{}), 4, func(btx *bolt.Tx) error {
		return btx.DeleteBucket([]byte(bucketDashboardSessions))
	})
	mustUpdate(t, s, func(tx subrole.Tx) error {
		return tx.PutDashboardSession(subrole.DashboardSession{Key: "k", Expires: t0})
	})
}
