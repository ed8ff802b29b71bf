package eventsub

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/subrole/subrole"
)

// Secret rotation. Twitch signs every message of a subscription with the
// secret given when it was created, and a subscription's secret cannot be
// changed: rotating it means creating new subscriptions with the new secret
// and deleting the old ones once the new ones are enabled. To tell old from
// new, subrole's callback carries the secret's generation as a query
// (https://subs.example.com/twitch_eventsub?g=2): SecretGeneration bumps the
// generation whenever the configured secret changes, the Manager's callback
// then differs from the old subscriptions' and Sync replaces them, and while
// any remain (Manager.Rotating) the webhook also accepts the previous secret
// (Handler.PreviousSecret with AcceptPrevious).

// generationParam is the callback query that names the secret generation;
// instanceParam names this installation, so two installations sharing one
// Twitch application never take each other's subscriptions for their own.
const (
	generationParam = "g"
	instanceParam   = "i"
)

// metaSecret is the store meta key of the secret's generation and fingerprint.
const metaSecret = "eventsub_secret"

// CallbackID identifies this installation's webhook subscriptions: the
// secret's generation and a random id made once per database.
type CallbackID struct {
	Generation uint64
	Instance   string
}

// URL returns the webhook callback for publicURL (SUBROLE_PUBLIC_URL,
// without a trailing slash).
func (c CallbackID) URL(publicURL string) string {
	q := url.Values{generationParam: {strconv.FormatUint(c.Generation, 10)}}
	if c.Instance != "" {
		q.Set(instanceParam, c.Instance)
	}
	return publicURL + CallbackPath + "?" + q.Encode()
}

// fingerprint identifies a secret without revealing it: an HMAC keyed with
// the secret over a fixed label.
func fingerprint(secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("subrole eventsub secret fingerprint v1"))
	return hex.EncodeToString(mac.Sum(nil))
}

// SecretGeneration returns the callback id for secret: the stored
// generation when secret is the one recorded with it, else the next one
// (starting at 1), recorded with the secret's fingerprint (never the secret)
// before it returns, and the installation's id, made on first use. changed
// reports a bump: the secret was rotated since the last start.
func SecretGeneration(ctx context.Context, st subrole.Store, secret string) (id CallbackID, changed bool, err error) {
	type record struct {
		Generation  uint64 `json:"generation"`
		Fingerprint string `json:"fingerprint"`
		Instance    string `json:"instance,omitempty"`
	}
	fp := fingerprint(secret)
	fresh, err := randomInstance()
	if err != nil {
		return CallbackID{}, false, err
	}
	err = st.Update(ctx, func(tx subrole.Tx) error {
		id, changed = CallbackID{}, false
		var rec record
		b, err := tx.Meta(metaSecret)
		switch {
		case errors.Is(err, subrole.ErrNotFound):
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(b, &rec); err != nil {
				return fmt.Errorf("decode %s: %w", metaSecret, err)
			}
		}
		if rec.Generation > 0 && hmac.Equal([]byte(rec.Fingerprint), []byte(fp)) && rec.Instance != "" {
			id = CallbackID{Generation: rec.Generation, Instance: rec.Instance}
			return nil
		}
		if rec.Generation == 0 || !hmac.Equal([]byte(rec.Fingerprint), []byte(fp)) {
			changed = rec.Generation > 0
			rec.Generation++
			rec.Fingerprint = fp
		}
		if rec.Instance == "" {
			rec.Instance = fresh
		}
		b, err = json.Marshal(rec)
		if err != nil {
			return err
		}
		id = CallbackID{Generation: rec.Generation, Instance: rec.Instance}
		return tx.PutMeta(metaSecret, b)
	})
	if err != nil {
		return CallbackID{}, false, fmt.Errorf("eventsub: secret generation: %w", err)
	}
	return id, changed, nil
}

// randomInstance returns 8 random hex characters.
func randomInstance() (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("eventsub: instance id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
