package store

import (
	"fmt"
	"time"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
)

// Buckets of schema 2.
const (
	// bucketOAuthStates maps a state's key (hex SHA-256 of its secret) to
	// its OAuthState. The state string itself is never stored.
	bucketOAuthStates = "oauth_states"
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

// OAuthState returns the state stored under key, used or not.
func (t *tx) OAuthState(key string) (subrole.OAuthState, error) {
	var s subrole.OAuthState
	if key == "" {
		return s, fmt.Errorf("store: oauth state: empty key: %w", subrole.ErrNotFound)
	}
	ok, err := get(t.bucket(bucketOAuthStates), []byte(key), &s)
	if err != nil {
		return subrole.OAuthState{}, fmt.Errorf("store: oauth state: %w", err)
	}
	if !ok {
		return subrole.OAuthState{}, fmt.Errorf("store: oauth state: %w", subrole.ErrNotFound)
	}
	return s, nil
}

// PutOAuthState stores s under s.Key, replacing it.
func (t *tx) PutOAuthState(s subrole.OAuthState) error {
	if err := t.writable("put oauth state"); err != nil {
		return err
	}
	if s.Key == "" {
		return fmt.Errorf("store: put oauth state: empty key")
	}
	if err := put(t.bucket(bucketOAuthStates), []byte(s.Key), s); err != nil {
		return fmt.Errorf("store: put oauth state: %w", err)
	}
	return nil
}

// PruneOAuthStates deletes states that expired at or before now, at most
// max of them (max < 0 means no limit), and returns how many it removed. It
// walks every state: they live ten minutes, so there are few.
func (t *tx) PruneOAuthStates(now time.Time, max int) (int, error) {
	if err := t.writable("prune oauth states"); err != nil {
		return 0, err
	}
	b := t.bucket(bucketOAuthStates)
	var keys [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil && len(keys) != max; k, v = c.Next() {
		var s subrole.OAuthState
		if err := decode(v, &s); err != nil || !now.Before(s.Expires) {
			keys = append(keys, append([]byte(nil), k...)) // undecodable entries go too
		}
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return 0, fmt.Errorf("store: prune oauth states: %w", err)
		}
	}
	return len(keys), nil
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
