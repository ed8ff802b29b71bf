package store

import (
	"errors"
	"testing"
	"time"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
)

func TestOutreachJobs(t *testing.T) {
	s := openTemp(t, Options{})
	jobs := []subrole.OutreachJob{
		{At: t0.Add(2 * time.Hour), Kind: subrole.OutreachFollowUp, DiscordUserID: "d1"},
		{At: t0, Kind: subrole.OutreachWelcome, DiscordUserID: "d1"},
		{At: t0, Kind: subrole.OutreachRelink, DiscordUserID: "d2", Month: "2025-03"},
		{At: t0.Add(time.Hour), Kind: subrole.OutreachWelcome, DiscordUserID: "d3", Attempts: 2},
	}
	mustUpdate(t, s, func(tx subrole.Tx) error {
		for _, j := range jobs {
			if err := tx.ScheduleOutreach(j); err != nil {
				return err
			}
		}
		// The same time, kind and user replaces.
		return tx.ScheduleOutreach(subrole.OutreachJob{At: t0.Add(time.Hour), Kind: subrole.OutreachWelcome, DiscordUserID: "d3", Attempts: 3})
	})
	mustUpdate(t, s, func(tx subrole.Tx) error {
		due, err := tx.DueOutreach(t0.Add(time.Hour), -1)
		if err != nil {
			return err
		}
		if len(due) != 3 || due[0].Kind != subrole.OutreachRelink || due[1].Kind != subrole.OutreachWelcome ||
			due[1].DiscordUserID != "d1" || due[2].DiscordUserID != "d3" || due[2].Attempts != 3 || due[0].Month != "2025-03" {
			t.Errorf("due at t0+1h = %+v", due)
		}
		if !due[2].At.Equal(t0.Add(time.Hour)) || due[2].At.Location() != time.UTC {
			t.Errorf("due time %v, want %v in UTC", due[2].At, t0.Add(time.Hour))
		}
		if due, _ := tx.DueOutreach(t0.Add(-1), -1); len(due) != 0 {
			t.Errorf("due before t0 = %+v", due)
		}
		if due, _ := tx.DueOutreach(t0.Add(10*time.Hour), 1); len(due) != 1 {
			t.Errorf("max 1 gave %d", len(due))
		}
		next, ok, err := tx.NextOutreach()
		if err != nil || !ok || !next.At.Equal(t0) {
			t.Errorf("next = %+v, %v, %v", next, ok, err)
		}
		for _, j := range due {
			if err := tx.DeleteOutreach(j); err != nil {
				return err
			}
		}
		if err := tx.DeleteOutreach(due[0]); err != nil {
			t.Errorf("deleting a missing job: %v", err)
		}
		left, err := tx.DueOutreach(t0.Add(10*time.Hour), -1)
		if len(left) != 1 || left[0].Kind != subrole.OutreachFollowUp {
			t.Errorf("left after deletes = %+v, %v", left, err)
		}
		if err := tx.ScheduleOutreach(subrole.OutreachJob{At: t0, Kind: subrole.OutreachWelcome}); err == nil {
			t.Error("a job without a user was stored")
		}
		if err := tx.ScheduleOutreach(subrole.OutreachJob{Kind: subrole.OutreachWelcome, DiscordUserID: "d9"}); err == nil {
			t.Error("a job at the zero time was stored")
		}
		return nil
	})
}

func TestOutreachRecord(t *testing.T) {
	s := openTemp(t, Options{})
	want := subrole.OutreachRecord{DiscordUserID: "d1", Joined: t0, JoinedAt: t0.Add(-time.Second), RelinkMonth: "2025-03"}
	mustUpdate(t, s, func(tx subrole.Tx) error {
		if _, err := tx.Outreach("d1"); !errors.Is(err, subrole.ErrNotFound) {
			t.Errorf("missing record: %v, want ErrNotFound", err)
		}
		return tx.PutOutreach(want)
	})
	mustUpdate(t, s, func(tx subrole.Tx) error {
		got, err := tx.Outreach("d1")
		if err != nil || !got.Joined.Equal(want.Joined) || !got.JoinedAt.Equal(want.JoinedAt) || got.RelinkMonth != want.RelinkMonth {
			t.Errorf("record = %+v, %v; want %+v", got, err, want)
		}
		return nil
	})
}

// TestMigrateSchema5 opens a file written by schema 5, which has no
// outreach buckets, and uses them.
func TestMigrateSchema5(t *testing.T) {
	s := asSchema(t, openTemp(t, Options{}), 5, func(tx *bolt.Tx) error {
		for _, b := range []string{bucketOutreach, bucketOutreachJobs} {
			if err := tx.DeleteBucket([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	mustUpdate(t, s, func(tx subrole.Tx) error {
		if err := tx.PutOutreach(subrole.OutreachRecord{DiscordUserID: "d1", Joined: t0}); err != nil {
			return err
		}
		return tx.ScheduleOutreach(subrole.OutreachJob{At: t0, Kind: subrole.OutreachWelcome, DiscordUserID: "d1"})
	})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
