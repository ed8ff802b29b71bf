package store

import (
	"bytes"
	"fmt"
	"math"
	"time"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// tx implements subrole.Tx on one bbolt transaction.
type tx struct {
	tx *bolt.Tx
	// seen is the store's committed set of seen message ids (seen.go), and
	// seenChanges this transaction's changes to it, applied to seen by the
	// commit loop once the transaction is committed.
	seen        *seenSet
	seenChanges map[seenKey]int64
	// audited is set when the transaction appended an audit entry, so
	// that its commit wakes Store.AuditCommitted.
	audited bool
	// oauthWork, if set (tests only), counts the OAuth state records
	// decoded and index keys visited (oauth.go).
	oauthWork *int
}

var _ subrole.Tx = (*tx)(nil)

// bucket returns a bucket of the schema; Open made sure they all exist.
//
// The buckets keyed by sequence number fill their pages completely: bbolt's
// default of splitting at half a page suits inserts anywhere, but at the end
// of a bucket it leaves every page half empty for good, so the same entries
// take twice the pages.
func (t *tx) bucket(name string) *bolt.Bucket {
	b := t.tx.Bucket([]byte(name))
	if appendOnly(name) && b != nil {
		b.FillPercent = 1.0
	}
	return b
}

// appendOnly reports whether new keys of the bucket always sort after all
// the keys already in it (NextSequence), so that it grows only at its end.
// Not seen_by_time: its keys start with a receive time, and a clock stepped
// back puts new keys among the old ones, where full pages would split for
// every insert.
func appendOnly(name string) bool {
	switch name {
	case bucketAudit, bucketInbox, bucketOutbox, bucketRevocations:
		return true
	}
	return false
}

// writable returns an error wrapping bbolt's ErrTxNotWritable when t is read
// only. Write methods call it first, so they fail in a View even when they
// would have nothing to write.
func (t *tx) writable(op string) error {
	if !t.tx.Writable() {
		return fmt.Errorf("store: %s: %w", op, berrors.ErrTxNotWritable)
	}
	return nil
}

// get decodes the value under key in b into v and reports whether there
// was one.
func get(b *bolt.Bucket, key []byte, v any) (bool, error) {
	data := b.Get(key)
	if data == nil {
		return false, nil
	}
	return true, decode(data, v)
}

// put encodes v and stores it under key in b.
func put(b *bolt.Bucket, key []byte, v any) error {
	data, err := encode(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// appendSeq stores v under the bucket's next sequence number and returns it.
func appendSeq(b *bolt.Bucket, v any) (uint64, error) {
	seq, err := b.NextSequence()
	if err != nil {
		return 0, err
	}
	return seq, put(b, seqKey(seq), v)
}

// walkSeq decodes up to max values stored after sequence number after, in
// order, and passes each to add with its sequence number; max < 0 means no
// limit.
func walkSeq[T any](b *bolt.Bucket, after uint64, max int, add func(seq uint64, v T)) error {
	if after == math.MaxUint64 {
		return nil
	}
	c := b.Cursor()
	n := 0
	for k, v := c.Seek(seqKey(after + 1)); k != nil && n != max; k, v = c.Next() {
		var item T
		if err := decode(v, &item); err != nil {
			return fmt.Errorf("entry %d: %w", parseSeqKey(k), err)
		}
		add(parseSeqKey(k), item)
		n++
	}
	return nil
}

// has reports whether b holds key. Unlike b.Get, it is not fooled by an
// empty value.
func has(b *bolt.Bucket, key []byte) bool {
	k, _ := b.Cursor().Seek(key)
	return k != nil && bytes.Equal(k, key)
}

// forEach calls fn with each key and value of b in key order. fn may write to
// b: the walk seeks back to where it was after every call, instead of
// trusting a cursor that a write may have moved.
func forEach(b *bolt.Bucket, fn func(k, v []byte) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; {
		key := bytes.Clone(k) // k may be invalidated by writes in fn
		if err := fn(key, v); err != nil {
			return err
		}
		k, v = c.Seek(key)
		if bytes.Equal(k, key) {
			k, v = c.Next()
		}
	}
	return nil
}

// SeenMessage reports whether an EventSub message id was recorded by MarkSeen.
// In a View it answers from the committed set, which may already include ids
// committed after the View began.
func (t *tx) SeenMessage(id string) (bool, error) {
	_, ok := t.seenAt(keyOfSeen(id))
	return ok, nil
}

// MarkSeen records id as received at at, replacing an earlier record of id.
// at must be between 1970 and 2262.
func (t *tx) MarkSeen(id string, at time.Time) error {
	if err := t.writable("mark seen"); err != nil {
		return err
	}
	if id == "" {
		return fmt.Errorf("store: mark seen: empty message id")
	}
	key, err := timeKey(at, id)
	if err != nil {
		return fmt.Errorf("store: mark seen %s: %w", id, err)
	}
	byTime := t.bucket(bucketSeenByTime)
	k := keyOfSeen(id)
	if old, ok := t.seenAt(k); ok {
		if err := byTime.Delete(appendTimeKey(time.Unix(0, old), id)); err != nil {
			return fmt.Errorf("store: mark seen %s: %w", id, err)
		}
	}
	if err := byTime.Put(key, []byte{}); err != nil {
		return fmt.Errorf("store: mark seen %s: %w", id, err)
	}
	t.changeSeen(k, at.UnixNano())
	return nil
}

// PruneSeen forgets message ids received before before, oldest first, at
// most max of them (max < 0 means no limit), and returns how many it removed.
func (t *tx) PruneSeen(before time.Time, max int) (int, error) {
	if err := t.writable("prune seen"); err != nil {
		return 0, err
	}
	byTime := t.bucket(bucketSeenByTime)
	bound := boundKey(before)
	// Collect first: deleting under a bbolt cursor makes it skip keys.
	var keys [][]byte
	c := byTime.Cursor()
	for k, _ := c.First(); k != nil && len(keys) != max && timeKeyBefore(k, bound); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, key := range keys {
		at, id, err := parseTimeKey(key)
		if err != nil {
			return 0, fmt.Errorf("store: prune seen: %w", err)
		}
		// Forget the id only if this index entry is its current record.
		k := keyOfSeen(id)
		if cur, ok := t.seenAt(k); ok && cur == at.UnixNano() {
			t.changeSeen(k, 0)
		}
		if err := byTime.Delete(key); err != nil {
			return 0, fmt.Errorf("store: prune seen: %w", err)
		}
	}
	return len(keys), nil
}

// AppendInbox appends e to the inbox and returns its position.
func (t *tx) AppendInbox(e subrole.Event) (uint64, error) {
	if err := t.writable("append inbox"); err != nil {
		return 0, err
	}
	seq, err := appendSeq(t.bucket(bucketInbox), e)
	if err != nil {
		return 0, fmt.Errorf("store: append inbox event %s: %w", e.MessageID, err)
	}
	return seq, nil
}

// Inbox returns up to max inbox entries (max < 0 means no limit) in order,
// starting after position after.
func (t *tx) Inbox(after uint64, max int) ([]subrole.InboxEntry, error) {
	var entries []subrole.InboxEntry
	err := walkSeq(t.bucket(bucketInbox), after, max, func(seq uint64, e subrole.Event) {
		entries = append(entries, subrole.InboxEntry{Seq: seq, Event: e})
	})
	if err != nil {
		return nil, fmt.Errorf("store: read inbox: %w", err)
	}
	return entries, nil
}

// DeleteInbox removes an inbox entry. Deleting a missing entry is not an error.
func (t *tx) DeleteInbox(seq uint64) error {
	if err := t.writable("delete inbox entry"); err != nil {
		return err
	}
	if err := t.bucket(bucketInbox).Delete(seqKey(seq)); err != nil {
		return fmt.Errorf("store: delete inbox entry %d: %w", seq, err)
	}
	return nil
}

// Subscription returns the state of one Twitch user.
func (t *tx) Subscription(twitchUserID string) (subrole.Subscription, error) {
	data := t.bucket(bucketSubs).Get([]byte(twitchUserID))
	if data == nil {
		return subrole.Subscription{}, fmt.Errorf("store: subscription of twitch user %s: %w", twitchUserID, subrole.ErrNotFound)
	}
	var s subrole.Subscription
	if err := decodeSubscription(data, &s); err != nil {
		return subrole.Subscription{}, fmt.Errorf("store: subscription of twitch user %s: %w", twitchUserID, err)
	}
	return s, nil
}

// PutSubscription stores s, replacing the state of s.TwitchUserID.
func (t *tx) PutSubscription(s subrole.Subscription) error {
	if err := t.writable("put subscription"); err != nil {
		return err
	}
	if s.TwitchUserID == "" {
		return fmt.Errorf("store: put subscription: empty twitch user id")
	}
	data, err := encodeSubscription(s)
	if err == nil {
		err = t.bucket(bucketSubs).Put([]byte(s.TwitchUserID), data)
	}
	if err != nil {
		return fmt.Errorf("store: put subscription of twitch user %s: %w", s.TwitchUserID, err)
	}
	return nil
}

// ForEachSubscription calls fn for every subscription, ordered by Twitch
// user id, until fn returns an error, which it returns unchanged. fn may
// write through the same Tx.
func (t *tx) ForEachSubscription(fn func(subrole.Subscription) error) error {
	return forEach(t.bucket(bucketSubs), func(k, v []byte) error {
		var s subrole.Subscription
		if err := decodeSubscription(v, &s); err != nil {
			return fmt.Errorf("store: subscription of twitch user %s: %w", k, err)
		}
		return fn(s)
	})
}

// LinkByDiscord returns the link of a Discord user.
func (t *tx) LinkByDiscord(discordUserID string) (subrole.Link, error) {
	var l subrole.Link
	ok, err := get(t.bucket(bucketLinks), []byte(discordUserID), &l)
	if err != nil {
		return subrole.Link{}, fmt.Errorf("store: link for discord user %s: %w", discordUserID, err)
	}
	if !ok {
		return subrole.Link{}, fmt.Errorf("store: link for discord user %s: %w", discordUserID, subrole.ErrNotFound)
	}
	return l, nil
}

// LinkByTwitch returns the link of a Twitch user.
func (t *tx) LinkByTwitch(twitchUserID string) (subrole.Link, error) {
	discordUserID := t.bucket(bucketLinksTwitch).Get([]byte(twitchUserID))
	if discordUserID == nil {
		return subrole.Link{}, fmt.Errorf("store: link for twitch user %s: %w", twitchUserID, subrole.ErrNotFound)
	}
	var l subrole.Link
	ok, err := get(t.bucket(bucketLinks), discordUserID, &l)
	if err != nil {
		return subrole.Link{}, fmt.Errorf("store: link for twitch user %s: %w", twitchUserID, err)
	}
	if !ok || l.TwitchUserID != twitchUserID {
		return subrole.Link{}, fmt.Errorf("store: link for twitch user %s: index points to discord user %s, whose link is not to it (run check)", twitchUserID, discordUserID)
	}
	return l, nil
}

// PutLink stores l, replacing the Discord user's previous link and its index
// entry. It fails with an error wrapping subrole.ErrConflict when
// l.TwitchUserID is linked to another Discord user. Putting the same pair
// again updates the stored link.
func (t *tx) PutLink(l subrole.Link) error {
	if err := t.writable("put link"); err != nil {
		return err
	}
	if l.DiscordUserID == "" || l.TwitchUserID == "" {
		return fmt.Errorf("store: put link: empty user id (discord %q, twitch %q)", l.DiscordUserID, l.TwitchUserID)
	}
	links, byTwitch := t.bucket(bucketLinks), t.bucket(bucketLinksTwitch)
	if owner := byTwitch.Get([]byte(l.TwitchUserID)); owner != nil && string(owner) != l.DiscordUserID {
		return fmt.Errorf("store: put link: twitch user %s is linked to discord user %s: %w", l.TwitchUserID, owner, subrole.ErrConflict)
	}
	var old subrole.Link
	ok, err := get(links, []byte(l.DiscordUserID), &old)
	if err != nil {
		return fmt.Errorf("store: put link for discord user %s: %w", l.DiscordUserID, err)
	}
	if ok && old.TwitchUserID != l.TwitchUserID {
		if err := byTwitch.Delete([]byte(old.TwitchUserID)); err != nil {
			return fmt.Errorf("store: put link for discord user %s: %w", l.DiscordUserID, err)
		}
	}
	if err := put(links, []byte(l.DiscordUserID), l); err != nil {
		return fmt.Errorf("store: put link for discord user %s: %w", l.DiscordUserID, err)
	}
	if err := byTwitch.Put([]byte(l.TwitchUserID), []byte(l.DiscordUserID)); err != nil {
		return fmt.Errorf("store: put link for discord user %s: %w", l.DiscordUserID, err)
	}
	return nil
}

// DeleteLink removes the link of a Discord user and its index entry.
// Deleting a missing link is not an error.
func (t *tx) DeleteLink(discordUserID string) error {
	if err := t.writable("delete link"); err != nil {
		return err
	}
	links, byTwitch := t.bucket(bucketLinks), t.bucket(bucketLinksTwitch)
	var l subrole.Link
	ok, err := get(links, []byte(discordUserID), &l)
	if err != nil {
		return fmt.Errorf("store: delete link for discord user %s: %w", discordUserID, err)
	}
	if !ok {
		return nil
	}
	if owner := byTwitch.Get([]byte(l.TwitchUserID)); string(owner) == discordUserID {
		if err := byTwitch.Delete([]byte(l.TwitchUserID)); err != nil {
			return fmt.Errorf("store: delete link for discord user %s: %w", discordUserID, err)
		}
	}
	if err := links.Delete([]byte(discordUserID)); err != nil {
		return fmt.Errorf("store: delete link for discord user %s: %w", discordUserID, err)
	}
	return nil
}

// ForEachLink calls fn for every link, ordered by Discord user id, until fn
// returns an error, which it returns unchanged. fn may write through the
// same Tx.
func (t *tx) ForEachLink(fn func(subrole.Link) error) error {
	return forEach(t.bucket(bucketLinks), func(k, v []byte) error {
		var l subrole.Link
		if err := decode(v, &l); err != nil {
			return fmt.Errorf("store: link for discord user %s: %w", k, err)
		}
		return fn(l)
	})
}

// AppendRoleJob appends j to the outbox and returns its position, which
// replaces j.Seq.
func (t *tx) AppendRoleJob(j subrole.RoleJob) (uint64, error) {
	if err := t.writable("append role job"); err != nil {
		return 0, err
	}
	j.Seq = 0 // assigned on read, from the key
	seq, err := appendSeq(t.bucket(bucketOutbox), j)
	if err != nil {
		return 0, fmt.Errorf("store: append role job for discord user %s: %w", j.DiscordUserID, err)
	}
	return seq, nil
}

// RoleJobs returns up to max outbox jobs (max < 0 means no limit) in order,
// starting after position after, with Seq set.
func (t *tx) RoleJobs(after uint64, max int) ([]subrole.RoleJob, error) {
	var jobs []subrole.RoleJob
	err := walkSeq(t.bucket(bucketOutbox), after, max, func(seq uint64, j subrole.RoleJob) {
		j.Seq = seq
		jobs = append(jobs, j)
	})
	if err != nil {
		return nil, fmt.Errorf("store: read outbox: %w", err)
	}
	return jobs, nil
}

// DeleteRoleJob removes a job. Deleting a missing job is not an error.
func (t *tx) DeleteRoleJob(seq uint64) error {
	if err := t.writable("delete role job"); err != nil {
		return err
	}
	if err := t.bucket(bucketOutbox).Delete(seqKey(seq)); err != nil {
		return fmt.Errorf("store: delete role job %d: %w", seq, err)
	}
	return nil
}

// AppendAudit appends e to the audit log; its position replaces e.Seq.
func (t *tx) AppendAudit(e subrole.AuditEntry) error {
	if err := t.writable("append audit"); err != nil {
		return err
	}
	e.Seq = 0 // assigned on read, from the key
	if _, err := appendSeq(t.bucket(bucketAudit), e); err != nil {
		return fmt.Errorf("store: append audit entry (%s): %w", e.Kind, err)
	}
	t.audited = true
	return nil
}

// Audit returns up to max audit entries (max < 0 means no limit) in order,
// starting after position after, with Seq set.
func (t *tx) Audit(after uint64, max int) ([]subrole.AuditEntry, error) {
	var entries []subrole.AuditEntry
	err := walkSeq(t.bucket(bucketAudit), after, max, func(seq uint64, e subrole.AuditEntry) {
		e.Seq = seq
		entries = append(entries, e)
	})
	if err != nil {
		return nil, fmt.Errorf("store: read audit log: %w", err)
	}
	return entries, nil
}

// PutRevocation records an EventSub revocation.
func (t *tx) PutRevocation(r subrole.Revocation) error {
	if err := t.writable("put revocation"); err != nil {
		return err
	}
	if _, err := appendSeq(t.bucket(bucketRevocations), r); err != nil {
		return fmt.Errorf("store: put revocation of %s: %w", r.SubscriptionID, err)
	}
	return nil
}

// Revocations returns every recorded revocation in the order they were put.
func (t *tx) Revocations() ([]subrole.Revocation, error) {
	var revs []subrole.Revocation
	err := walkSeq(t.bucket(bucketRevocations), 0, -1, func(_ uint64, r subrole.Revocation) {
		revs = append(revs, r)
	})
	if err != nil {
		return nil, fmt.Errorf("store: read revocations: %w", err)
	}
	return revs, nil
}

// ScheduleCheck stores c. Scheduling the same user and time twice stores one
// check. c.At must be between 1970 and 2262; it is kept to the nanosecond,
// and read back in UTC.
func (t *tx) ScheduleCheck(c subrole.Check) error {
	if err := t.writable("schedule check"); err != nil {
		return err
	}
	if c.TwitchUserID == "" {
		return fmt.Errorf("store: schedule check: empty twitch user id")
	}
	key, err := timeKey(c.At, c.TwitchUserID)
	if err != nil {
		return fmt.Errorf("store: schedule check of twitch user %s: %w", c.TwitchUserID, err)
	}
	if err := t.bucket(bucketChecks).Put(key, []byte{}); err != nil {
		return fmt.Errorf("store: schedule check of twitch user %s: %w", c.TwitchUserID, err)
	}
	return nil
}

// DueChecks returns up to max checks (max < 0 means no limit) due at or
// before now, earliest first.
func (t *tx) DueChecks(now time.Time, max int) ([]subrole.Check, error) {
	var checks []subrole.Check
	bound := boundKey(now.Add(1)) // due at now counts: strictly before now+1ns
	c := t.bucket(bucketChecks).Cursor()
	for k, _ := c.First(); k != nil && len(checks) != max && timeKeyBefore(k, bound); k, _ = c.Next() {
		check, err := parseCheck(k)
		if err != nil {
			return nil, err
		}
		checks = append(checks, check)
	}
	return checks, nil
}

// NextCheck returns the earliest scheduled check; false when there is none.
func (t *tx) NextCheck() (subrole.Check, bool, error) {
	k, _ := t.bucket(bucketChecks).Cursor().First()
	if k == nil {
		return subrole.Check{}, false, nil
	}
	check, err := parseCheck(k)
	if err != nil {
		return subrole.Check{}, false, err
	}
	return check, true, nil
}

// parseCheck decodes a key of the checks bucket.
func parseCheck(k []byte) (subrole.Check, error) {
	at, id, err := parseTimeKey(k)
	if err != nil {
		return subrole.Check{}, fmt.Errorf("store: read checks: %w", err)
	}
	return subrole.Check{At: at, TwitchUserID: id}, nil
}

// DeleteCheck removes a check. Deleting a missing check is not an error.
func (t *tx) DeleteCheck(c subrole.Check) error {
	if err := t.writable("delete check"); err != nil {
		return err
	}
	key, err := timeKey(c.At, c.TwitchUserID)
	if err != nil {
		return nil // no check can be stored at that time
	}
	if err := t.bucket(bucketChecks).Delete(key); err != nil {
		return fmt.Errorf("store: delete check of twitch user %s: %w", c.TwitchUserID, err)
	}
	return nil
}

// Meta returns a copy of the value stored under key.
func (t *tx) Meta(key string) ([]byte, error) {
	k, v := t.bucket(bucketMeta).Cursor().Seek([]byte(key))
	if k == nil || string(k) != key { // not Get: it cannot tell an empty value from none
		return nil, fmt.Errorf("store: meta %q: %w", key, subrole.ErrNotFound)
	}
	return bytes.Clone(v), nil
}

// PutMeta stores value under key. The key "schema_version" is the store's
// own and is refused.
func (t *tx) PutMeta(key string, value []byte) error {
	if err := t.writable("put meta"); err != nil {
		return err
	}
	if key == metaSchemaVersion {
		return fmt.Errorf("store: put meta: key %q is reserved", key)
	}
	if err := t.bucket(bucketMeta).Put([]byte(key), value); err != nil {
		return fmt.Errorf("store: put meta %q: %w", key, err)
	}
	return nil
}
