package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
)

// Buckets of the OAuth states (schema 2 and 3) and the broadcaster's token.
const (
	// bucketOAuthStates maps a state's key (hex SHA-256 of its secret) to
	// its OAuthState. The state string itself is never stored.
	bucketOAuthStates = "oauth_states"
	// bucketOAuthExpiry indexes the states by purpose and expiry (schema 3):
	// purpose (1 byte) + expiry (8-byte Unix nanoseconds) + key → empty.
	// PruneOAuthStates walks only the expired part of it and
	// CountOAuthStates only the live part of one purpose, so neither
	// decodes the pending states.
	bucketOAuthExpiry = "oauth_states_by_expiry"
	// bucketBroadcaster holds the broadcaster's BroadcasterToken under
	// keyBroadcasterToken.
	bucketBroadcaster = "broadcaster"
)

const keyBroadcasterToken = "token"

// migrateOAuth moves a file from schema 1 to 2: it adds the OAuth buckets.
func migrateOAuth(tx *bolt.Tx) error {
	for _, name := range []string{bucketOAuthStates, bucketBroadcaster} {
		if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return nil
}

// migrateOAuthExpiry moves a file from schema 2 to 3: it adds the expiry
// index and fills it from the stored states. A state that cannot be decoded
// or has no usable expiry is dropped: it could never be used.
func migrateOAuthExpiry(btx *bolt.Tx) error {
	idx, err := btx.CreateBucketIfNotExists([]byte(bucketOAuthExpiry))
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketOAuthExpiry, err)
	}
	states := btx.Bucket([]byte(bucketOAuthStates))
	var drop [][]byte
	err = states.ForEach(func(k, v []byte) error {
		var s subrole.OAuthState
		if decode(v, &s) != nil {
			drop = append(drop, bytes.Clone(k))
			return nil
		}
		key, err := expiryKey(s.Purpose, s.Expires, string(k))
		if err != nil {
			drop = append(drop, bytes.Clone(k))
			return nil
		}
		return idx.Put(key, []byte{})
	})
	if err != nil {
		return fmt.Errorf("index oauth states: %w", err)
	}
	for _, k := range drop {
		if err := states.Delete(k); err != nil {
			return fmt.Errorf("index oauth states: %w", err)
		}
	}
	return nil
}

// expiryKey returns the index key of a state: purpose, expiry, key.
func expiryKey(p subrole.OAuthPurpose, expires time.Time, key string) ([]byte, error) {
	tk, err := timeKey(expires, key)
	if err != nil {
		return nil, err
	}
	return append([]byte{byte(p)}, tk...), nil
}

// expiryBound returns the first index key of purpose p expiring at or
// after t.
func expiryBound(p subrole.OAuthPurpose, t time.Time) []byte {
	return append([]byte{byte(p)}, boundKey(t)...)
}

// oauthWorked counts n units of work (records decoded, index keys visited)
// when a test asked for it (tx.oauthWork).
func (t *tx) oauthWorked(n int) {
	if t.oauthWork != nil {
		*t.oauthWork += n
	}
}

// OAuthState returns the state stored under key, used or not.
func (t *tx) OAuthState(key string) (subrole.OAuthState, error) {
	var s subrole.OAuthState
	if key == "" {
		return s, fmt.Errorf("store: oauth state: empty key: %w", subrole.ErrNotFound)
	}
	t.oauthWorked(1)
	ok, err := get(t.bucket(bucketOAuthStates), []byte(key), &s)
	if err != nil {
		return subrole.OAuthState{}, fmt.Errorf("store: oauth state: %w", err)
	}
	if !ok {
		return subrole.OAuthState{}, fmt.Errorf("store: oauth state: %w", subrole.ErrNotFound)
	}
	return s, nil
}

// PutOAuthState stores s under s.Key, replacing it, and keeps the expiry
// index in step. s.Expires must lie between 1970 and 2262.
func (t *tx) PutOAuthState(s subrole.OAuthState) error {
	if err := t.writable("put oauth state"); err != nil {
		return err
	}
	if s.Key == "" {
		return fmt.Errorf("store: put oauth state: empty key")
	}
	key, err := expiryKey(s.Purpose, s.Expires, s.Key)
	if err != nil {
		return fmt.Errorf("store: put oauth state: expires: %w", err)
	}
	states, idx := t.bucket(bucketOAuthStates), t.bucket(bucketOAuthExpiry)
	if old := states.Get([]byte(s.Key)); old != nil {
		var o subrole.OAuthState
		t.oauthWorked(1)
		if decode(old, &o) == nil {
			if ok, err := expiryKey(o.Purpose, o.Expires, o.Key); err == nil && !bytes.Equal(ok, key) {
				if err := idx.Delete(ok); err != nil {
					return fmt.Errorf("store: put oauth state: %w", err)
				}
			}
		}
	}
	if err := put(states, []byte(s.Key), s); err != nil {
		return fmt.Errorf("store: put oauth state: %w", err)
	}
	if err := idx.Put(key, []byte{}); err != nil {
		return fmt.Errorf("store: put oauth state: %w", err)
	}
	return nil
}

// PruneOAuthStates deletes states that expired at or before now, earliest
// first, at most max of them (max < 0 means no limit), and returns how many
// it removed. It walks only the expired keys of the expiry index.
func (t *tx) PruneOAuthStates(now time.Time, max int) (int, error) {
	if err := t.writable("prune oauth states"); err != nil {
		return 0, err
	}
	states, idx := t.bucket(bucketOAuthStates), t.bucket(bucketOAuthExpiry)
	// Expired at or before now: every index time up to and including now.
	limit := boundKey(now.Add(1))
	// Collect first: deleting under a bbolt cursor makes it skip keys.
	var keys [][]byte
	c := idx.Cursor()
	for k, _ := c.First(); k != nil && len(keys) != max; {
		t.oauthWorked(1)
		if len(k) < 9 {
			keys = append(keys, bytes.Clone(k)) // malformed: it indexes nothing
			k, _ = c.Next()
			continue
		}
		if bytes.Compare(k[1:9], limit) >= 0 {
			// This purpose has nothing more expired; jump to the next one.
			if k[0] == 0xff {
				break
			}
			k, _ = c.Seek([]byte{k[0] + 1})
			continue
		}
		keys = append(keys, bytes.Clone(k))
		k, _ = c.Next()
	}
	for _, k := range keys {
		if err := idx.Delete(k); err != nil {
			return 0, fmt.Errorf("store: prune oauth states: %w", err)
		}
		if len(k) < 9 {
			continue
		}
		// Delete the state only if this entry is its current record (an
		// undecodable state goes too: it can never be used).
		key := k[9:]
		if v := states.Get(key); v != nil {
			var s subrole.OAuthState
			t.oauthWorked(1)
			if err := decode(v, &s); err != nil || !s.Expires.After(now) || byte(s.Purpose) != k[0] {
				if err := states.Delete(key); err != nil {
					return 0, fmt.Errorf("store: prune oauth states: %w", err)
				}
			}
		}
	}
	return len(keys), nil
}

// ForEachOAuthState walks the live part of p's expiry index and calls fn
// with each state, soonest expiry first.
func (t *tx) ForEachOAuthState(p subrole.OAuthPurpose, now time.Time, fn func(subrole.OAuthState) error) error {
	states := t.bucket(bucketOAuthStates)
	c := t.bucket(bucketOAuthExpiry).Cursor()
	for k, _ := c.Seek(expiryBound(p, now.Add(1))); k != nil && k[0] == byte(p); k, _ = c.Next() {
		t.oauthWorked(1)
		var s subrole.OAuthState
		ok, err := get(states, k[9:], &s)
		if err != nil {
			return fmt.Errorf("store: oauth state: %w", err)
		}
		if !ok {
			continue // checkOAuthIndex reports it; nothing to show
		}
		if err := fn(s); err != nil {
			return err
		}
	}
	return nil
}

// CountOAuthStates returns how many stored states of purpose p expire after
// now, used or not, counting at most limit of them (limit < 0 means no
// limit). It walks the live part of p's expiry index and decodes nothing.
func (t *tx) CountOAuthStates(p subrole.OAuthPurpose, now time.Time, limit int) (int, error) {
	n := 0
	c := t.bucket(bucketOAuthExpiry).Cursor()
	for k, _ := c.Seek(expiryBound(p, now.Add(1))); k != nil && k[0] == byte(p) && n != limit; k, _ = c.Next() {
		t.oauthWorked(1)
		n++
	}
	return n, nil
}

// checkOAuthIndex verifies that every state has its expiry index entry and
// every index entry its state.
func checkOAuthIndex(btx *bolt.Tx) []error {
	var errs []error
	states, idx := btx.Bucket([]byte(bucketOAuthStates)), btx.Bucket([]byte(bucketOAuthExpiry))
	states.ForEach(func(k, v []byte) error {
		var s subrole.OAuthState
		if err := decode(v, &s); err != nil {
			errs = append(errs, fmt.Errorf("oauth state %s: %w", k, err))
			return nil
		}
		key, err := expiryKey(s.Purpose, s.Expires, string(k))
		if err != nil || !has(idx, key) {
			errs = append(errs, fmt.Errorf("oauth state %s: no expiry index entry", k))
		}
		return nil
	})
	idx.ForEach(func(k, _ []byte) error {
		if len(k) < 9 {
			errs = append(errs, fmt.Errorf("oauth expiry index: malformed key %x", k))
			return nil
		}
		var s subrole.OAuthState
		v := states.Get(k[9:])
		if v == nil || decode(v, &s) != nil || byte(s.Purpose) != k[0] ||
			s.Expires.UnixNano() != int64(binary.BigEndian.Uint64(k[1:9])) {
			errs = append(errs, fmt.Errorf("oauth expiry index %x: no state %s expiring then", k, k[9:]))
		}
		return nil
	})
	return errs
}

// BroadcasterToken returns the broadcaster's stored authorization.
func (t *tx) BroadcasterToken() (subrole.BroadcasterToken, error) {
	var tok subrole.BroadcasterToken
	ok, err := get(t.bucket(bucketBroadcaster), []byte(keyBroadcasterToken), &tok)
	if err != nil {
		return subrole.BroadcasterToken{}, fmt.Errorf("store: broadcaster token: %w", err)
	}
	if !ok {
		return subrole.BroadcasterToken{}, fmt.Errorf("store: broadcaster token: %w", subrole.ErrNotFound)
	}
	return tok, nil
}

// PutBroadcasterToken stores tok, replacing the previous one.
func (t *tx) PutBroadcasterToken(tok subrole.BroadcasterToken) error {
	if err := t.writable("put broadcaster token"); err != nil {
		return err
	}
	if tok.UserID == "" || tok.RefreshToken == "" {
		return fmt.Errorf("store: put broadcaster token: needs a user id and a refresh token")
	}
	if err := put(t.bucket(bucketBroadcaster), []byte(keyBroadcasterToken), tok); err != nil {
		return fmt.Errorf("store: put broadcaster token: %w", err)
	}
	return nil
}
