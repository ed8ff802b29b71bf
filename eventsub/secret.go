package eventsub

import (
	"context"
	"crypto/hmac"
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

// generationParam is the callback query that names the secret generation.
const generationParam = "g"

// metaSecret is the store meta key of the secret's generation and fingerprint.
const metaSecret = "eventsub_secret"

// CallbackURL returns the webhook callback for publicURL (SUBROLE_PUBLIC_URL,
// without a trailing slash) and a secret generation.
func CallbackURL(publicURL string, generation uint64) string {
	return publicURL + CallbackPath + "?" + url.Values{generationParam: {strconv.FormatUint(generation, 10)}}.Encode()
}

// fingerprint identifies a secret without revealing it: an HMAC keyed with
// the secret over a fixed label.
func fingerprint(secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("subrole eventsub secret fingerprint v1"))
	return hex.EncodeToString(mac.Sum(nil))
}

// SecretGeneration returns the generation of secret, starting at 1: the
// stored generation when secret is the one recorded with it, else the next
// one, recorded (with the secret's fingerprint, never the secret) before it
// returns. changed reports a bump: the secret was rotated since the last
// start.
func SecretGeneration(ctx context.Context, st subrole.Store, secret string) (generation uint64, changed bool, err error) {
	type record struct {
		Generation  uint64 `json:"generation"`
		Fingerprint string `json:"fingerprint"`
	}
	fp := fingerprint(secret)
	err = st.Update(ctx, func(tx subrole.Tx) error {
		generation, changed = 0, false
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
		if rec.Generation > 0 && hmac.Equal([]byte(rec.Fingerprint), []byte(fp)) {
			generation = rec.Generation
			return nil
		}
		changed = rec.Generation > 0
		rec = record{Generation: rec.Generation + 1, Fingerprint: fp}
		b, err = json.Marshal(rec)
		if err != nil {
			return err
		}
		generation = rec.Generation
		return tx.PutMeta(metaSecret, b)
	})
	if err != nil {
		return 0, false, fmt.Errorf("eventsub: secret generation: %w", err)
	}
	return generation, changed, nil
}
