package subrole

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"
)

// DashboardSessionTTL is how long a dashboard session lasts after sign-in.
const DashboardSessionTTL = 12 * time.Hour

// DashboardSession is a signed-in dashboard browser as stored, under the
// SessionKey of its token. The token lives only in the browser's cookie.
type DashboardSession struct {
	Key          string    `json:"key"`
	TwitchUserID string    `json:"twitch_user_id"`
	TwitchLogin  string    `json:"twitch_login,omitempty"`
	Created      time.Time `json:"created"`
	Expires      time.Time `json:"expires"`
}

// ErrNoSession means a dashboard session token is missing, malformed,
// unknown, expired or was ended by signing out.
var ErrNoSession = errors.New("no dashboard session")

// maxSessionToken bounds the length of a token worth looking up; NewSessionToken makes 52.
const maxSessionToken = 128

// NewSessionToken returns a fresh random session token (260 bits, base32).
func NewSessionToken() string { return rand.Text() + rand.Text() }

// SessionKey returns the store key of a session token: a hex SHA-256, so
// that the file never holds a token a browser could present.
func SessionKey(token string) string {
	sum := sha256.Sum256([]byte("subrole dashboard session\x00" + token))
	return hex.EncodeToString(sum[:])
}

// StartDashboardSession finishes a dashboard sign-in in one commit: it uses
// up the dashboard state raw, prunes expired sessions and stores a new
// session for the Twitch user, lasting ttl (zero means
// DashboardSessionTTL). The caller has checked that the user may see the
// dashboard. It returns the token for the browser's cookie. A bad state
// fails with an error wrapping ErrBadState.
func (s *Service) StartDashboardSession(ctx context.Context, raw, twitchUserID, twitchLogin string, ttl time.Duration) (string, DashboardSession, error) {
	if twitchUserID == "" {
		return "", DashboardSession{}, errors.New("subrole: start dashboard session: no twitch user id")
	}
	if ttl <= 0 {
		ttl = DashboardSessionTTL
	}
	token := NewSessionToken()
	now := s.now()
	sess := DashboardSession{Key: SessionKey(token), TwitchUserID: twitchUserID, TwitchLogin: twitchLogin,
		Created: now, Expires: now.Add(ttl)}
	err := s.store.Update(ctx, func(tx Tx) error {
		if _, err := s.useState(tx, raw, PurposeDashboard); err != nil {
			return err
		}
		if _, err := tx.PruneDashboardSessions(now); err != nil {
			return err
		}
		return tx.PutDashboardSession(sess)
	})
	if err != nil {
		return "", DashboardSession{}, fmt.Errorf("subrole: start dashboard session: %w", err)
	}
	return token, sess, nil
}

// DashboardSession returns the live session of token. A missing, unknown
// or expired one fails with an error wrapping ErrNoSession.
func (s *Service) DashboardSession(ctx context.Context, token string) (DashboardSession, error) {
	if token == "" || len(token) > maxSessionToken {
		return DashboardSession{}, ErrNoSession
	}
	var sess DashboardSession
	err := s.store.View(ctx, func(tx Tx) error {
		var err error
		sess, err = tx.DashboardSession(SessionKey(token))
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return DashboardSession{}, ErrNoSession
	}
	if err != nil {
		return DashboardSession{}, fmt.Errorf("subrole: dashboard session: %w", err)
	}
	if !s.now().Before(sess.Expires) {
		return DashboardSession{}, ErrNoSession
	}
	return sess, nil
}

// EndDashboardSession deletes the session of token (signing out). Ending
// a session that does not exist is not an error.
func (s *Service) EndDashboardSession(ctx context.Context, token string) error {
	if token == "" || len(token) > maxSessionToken {
		return nil
	}
	err := s.store.Update(ctx, func(tx Tx) error { return tx.DeleteDashboardSession(SessionKey(token)) })
	if err != nil {
		return fmt.Errorf("subrole: end dashboard session: %w", err)
	}
	return nil
}

// DashboardStats is one consistent snapshot of what the dashboard counts.
type DashboardStats struct {
	Linked int `json:"linked"` // linked members
	// Active counts current subscriptions by tier: Active[1] is tier 1
	// (Prime included), Active[3] tier 3; Active[0] is unused.
	Active       [4]int `json:"active"`
	Inbox        int    `json:"inbox"`         // events accepted and not yet applied
	Outbox       int    `json:"outbox"`        // role jobs not yet applied in Discord
	RoleFailures int    `json:"role_failures"` // role jobs that failed for good, since counting began
	// LastReconcile is the last successful reconcile pass, nil if none.
	LastReconcile *ReconcileReport `json:"last_reconcile,omitempty"`
	// LastAudit is the position of the newest audit entry the snapshot
	// includes (0 when the log is empty).
	LastAudit uint64 `json:"last_audit"`
}

// metaRoleFailures counts role jobs that failed for good (a decimal number).
const metaRoleFailures = "role_failures"

// DashboardStats counts links, active subscriptions by tier, the inbox and
// outbox, and role failures, in one read transaction. It reads every
// subscription, so callers that serve many requests cache it.
func (s *Service) DashboardStats(ctx context.Context) (DashboardStats, error) {
	var st DashboardStats
	err := s.store.View(ctx, func(tx Tx) error {
		st = DashboardStats{}
		c, err := tx.Counts()
		if err != nil {
			return err
		}
		st.Linked, st.Inbox, st.Outbox, st.LastAudit = c.Links, c.Inbox, c.Outbox, c.LastAudit
		err = tx.ForEachSubscription(func(sub Subscription) error {
			if sub.Active() {
				st.Active[sub.Tier]++
			}
			return nil
		})
		if err != nil {
			return err
		}
		if st.RoleFailures, err = metaCount(tx, metaRoleFailures); err != nil {
			return err
		}
		b, err := tx.Meta(metaLastReconcile)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var r ReconcileReport
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("last reconcile: %w", err)
		}
		st.LastReconcile = &r
		return nil
	})
	if err != nil {
		return DashboardStats{}, fmt.Errorf("subrole: dashboard stats: %w", err)
	}
	return st, nil
}

// metaCount reads a counter kept in meta; a missing one is 0.
func metaCount(tx Tx, key string) (int, error) {
	b, err := tx.Meta(key)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return 0, fmt.Errorf("meta %s: %w", key, err)
	}
	return n, nil
}

// addMetaCount adds n to a counter kept in meta.
func addMetaCount(tx Tx, key string, n int) error {
	old, err := metaCount(tx, key)
	if err != nil {
		return err
	}
	return tx.PutMeta(key, []byte(strconv.Itoa(old+n)))
}

// Names are display names of Discord and Twitch users, by id, as far as
// subrole knows them: the Discord username a member had when they ran
// /link, and the Twitch login of the latest event or check.
type Names struct {
	Discord map[string]string
	Twitch  map[string]string
}

// AuditNames returns the names of the users the entries concern; users
// with no known name are left out.
func (s *Service) AuditNames(ctx context.Context, entries []AuditEntry) (Names, error) {
	names := Names{Discord: map[string]string{}, Twitch: map[string]string{}}
	err := s.store.View(ctx, func(tx Tx) error {
		discordName := func(id string) (string, error) {
			l, err := tx.LinkByDiscord(id)
			return l.DiscordName, err
		}
		twitchLogin := func(id string) (string, error) {
			sub, err := tx.Subscription(id)
			if sub.TwitchLogin != "" || (err != nil && !errors.Is(err, ErrNotFound)) {
				return sub.TwitchLogin, err
			}
			l, err := tx.LinkByTwitch(id)
			return l.TwitchLogin, err
		}
		for _, e := range entries {
			if err := lookUpName(names.Discord, e.DiscordUserID, discordName); err != nil {
				return err
			}
			if err := lookUpName(names.Twitch, e.TwitchUserID, twitchLogin); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Names{}, fmt.Errorf("subrole: audit names: %w", err)
	}
	maps.DeleteFunc(names.Discord, func(_, v string) bool { return v == "" })
	maps.DeleteFunc(names.Twitch, func(_, v string) bool { return v == "" })
	return names, nil
}

// lookUpName adds id's name to names unless it is there already; an
// unknown id gets "" (removed by the caller).
func lookUpName(names map[string]string, id string, lookup func(id string) (string, error)) error {
	if _, done := names[id]; id == "" || done {
		return nil
	}
	name, err := lookup(id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	names[id] = name
	return nil
}

// RecentAudit returns up to max audit entries before position before (0:
// from the newest), newest first.
func (s *Service) RecentAudit(ctx context.Context, before uint64, max int) ([]AuditEntry, error) {
	var out []AuditEntry
	err := s.store.View(ctx, func(tx Tx) error {
		var err error
		out, err = tx.RecentAudit(before, max)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("subrole: recent audit: %w", err)
	}
	return out, nil
}

// AuditAfter returns up to max audit entries after position after, oldest
// first: what a live feed has not shown yet.
func (s *Service) AuditAfter(ctx context.Context, after uint64, max int) ([]AuditEntry, error) {
	var out []AuditEntry
	err := s.store.View(ctx, func(tx Tx) error {
		var err error
		out, err = tx.Audit(after, max)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("subrole: audit after %d: %w", after, err)
	}
	return out, nil
}
