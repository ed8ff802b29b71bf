package store

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
)

// Buckets of member outreach (schema 6).
const (
	// bucketOutreach maps a Discord user id to its OutreachRecord.
	bucketOutreach = "outreach"
	// bucketOutreachJobs holds scheduled outreach messages: due time
	// (8-byte Unix nanoseconds) + kind + "/" + Discord user id → OutreachJob.
	bucketOutreachJobs = "outreach_jobs"
)

// migrateOutreach moves a file from schema 5 to 6: it adds the outreach buckets.
func migrateOutreach(tx *bolt.Tx) error {
	for _, name := range []string{bucketOutreach, bucketOutreachJobs} {
		if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return nil
}

// outreachJobKey returns the key of j.
func outreachJobKey(j subrole.OutreachJob) ([]byte, error) {
	return timeKey(j.At, string(j.Kind)+"/"+j.DiscordUserID)
}

// Outreach returns the outreach record of a Discord user.
func (t *tx) Outreach(discordUserID string) (subrole.OutreachRecord, error) {
	var r subrole.OutreachRecord
	ok, err := get(t.bucket(bucketOutreach), []byte(discordUserID), &r)
	if err != nil {
		return r, fmt.Errorf("store: read outreach of discord user %s: %w", discordUserID, err)
	}
	if !ok {
		return r, fmt.Errorf("store: outreach of discord user %s: %w", discordUserID, subrole.ErrNotFound)
	}
	return r, nil
}

// PutOutreach stores r under r.DiscordUserID.
func (t *tx) PutOutreach(r subrole.OutreachRecord) error {
	if err := t.writable("put outreach"); err != nil {
		return err
	}
	if r.DiscordUserID == "" {
		return fmt.Errorf("store: put outreach: empty discord user id")
	}
	if err := put(t.bucket(bucketOutreach), []byte(r.DiscordUserID), r); err != nil {
		return fmt.Errorf("store: put outreach of discord user %s: %w", r.DiscordUserID, err)
	}
	return nil
}

// ScheduleOutreach stores j; a job of the same time, kind and user is
// replaced. j.At must be between 1970 and 2262 and is read back in UTC.
func (t *tx) ScheduleOutreach(j subrole.OutreachJob) error {
	if err := t.writable("schedule outreach"); err != nil {
		return err
	}
	if j.DiscordUserID == "" || j.Kind == "" {
		return fmt.Errorf("store: schedule outreach: empty discord user id or kind")
	}
	key, err := outreachJobKey(j)
	if err == nil {
		j.At = j.At.UTC()
		err = put(t.bucket(bucketOutreachJobs), key, j)
	}
	if err != nil {
		return fmt.Errorf("store: schedule %s to discord user %s: %w", j.Kind, j.DiscordUserID, err)
	}
	return nil
}

// DueOutreach returns up to max jobs (max < 0: no limit) due at or before
// now, earliest first.
func (t *tx) DueOutreach(now time.Time, max int) ([]subrole.OutreachJob, error) {
	var jobs []subrole.OutreachJob
	bound := boundKey(now.Add(1)) // due at now counts
	c := t.bucket(bucketOutreachJobs).Cursor()
	for k, v := c.First(); k != nil && len(jobs) != max && timeKeyBefore(k, bound); k, v = c.Next() {
		j, err := parseOutreachJob(k, v)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// NextOutreach returns the earliest scheduled job; false when there is none.
func (t *tx) NextOutreach() (subrole.OutreachJob, bool, error) {
	k, v := t.bucket(bucketOutreachJobs).Cursor().First()
	if k == nil {
		return subrole.OutreachJob{}, false, nil
	}
	j, err := parseOutreachJob(k, v)
	return j, err == nil, err
}

// parseOutreachJob decodes an entry of the outreach jobs bucket; the time
// comes from the key. A value that cannot be decoded is not an error: the
// job comes back with what its key says and Unreadable set, so that the
// core sets it aside instead of stalling on it.
func parseOutreachJob(k, v []byte) (subrole.OutreachJob, error) {
	var j subrole.OutreachJob
	at, id, err := parseTimeKey(k)
	if err != nil {
		return subrole.OutreachJob{}, fmt.Errorf("store: read outreach jobs: %w", err)
	}
	if err := decode(v, &j); err != nil {
		kind, user, _ := strings.Cut(id, "/")
		const most = 200
		raw := v
		if len(raw) > most {
			raw = raw[:most]
		}
		return subrole.OutreachJob{At: at, Kind: subrole.OutreachKind(kind), DiscordUserID: user,
			Unreadable: fmt.Sprintf("%v (stored value %q)", err, raw), StoreKey: bytes.Clone(k)}, nil
	}
	j.At, j.StoreKey = at, bytes.Clone(k)
	return j, nil
}

// DeleteOutreach removes a job. Deleting a missing job is not an error.
func (t *tx) DeleteOutreach(j subrole.OutreachJob) error {
	if err := t.writable("delete outreach"); err != nil {
		return err
	}
	key := j.StoreKey
	if len(key) == 0 {
		var err error
		if key, err = outreachJobKey(j); err != nil {
			return nil // no job can be stored at that time
		}
	}
	if err := t.bucket(bucketOutreachJobs).Delete(key); err != nil {
		return fmt.Errorf("store: delete %s to discord user %s: %w", j.Kind, j.DiscordUserID, err)
	}
	return nil
}
