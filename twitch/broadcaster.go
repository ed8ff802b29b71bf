package twitch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/subrole/subrole"
)

// TokenState is the state of the broadcaster's authorization.
type TokenState string

// The token states.
const (
	// StateNotConnected: the broadcaster has not authorized subrole yet.
	StateNotConnected TokenState = "not_connected"
	// StateConnected: the token works (or will after a routine refresh).
	StateConnected TokenState = "connected"
	// StateUnreachable: the last refresh or validation could not reach
	// Twitch; it is retried.
	StateUnreachable TokenState = "unreachable"
	// StateRevoked: Twitch rejected the refresh token (the broadcaster
	// disconnected subrole, changed their password, or the token is
	// spent); the broadcaster must connect again.
	StateRevoked TokenState = "revoked"
	// StateMissingScope: the token lacks channel:read:subscriptions, or
	// belongs to another user; the broadcaster must connect again.
	StateMissingScope TokenState = "missing_scope"
)

// BroadcasterStatus is what an operator (readiness check, dashboard) needs
// to know about the broadcaster's authorization. It holds no secret.
type BroadcasterStatus struct {
	State         TokenState `json:"state"`
	UserID        string     `json:"user_id,omitempty"`
	Login         string     `json:"login,omitempty"`
	Scopes        []string   `json:"scopes,omitempty"`
	Expires       time.Time  `json:"expires,omitzero"`        // of the current access token
	LastRefresh   time.Time  `json:"last_refresh,omitzero"`   // last successful refresh
	LastValidated time.Time  `json:"last_validated,omitzero"` // last successful /validate
	Error         string     `json:"error,omitempty"`         // the last failure, if the state is not connected
	ConnectURL    string     `json:"connect_url"`             // where the broadcaster (re)connects
}

// Problem returns what an operator must do, or "" when the authorization
// works (StateConnected).
func (s BroadcasterStatus) Problem() string {
	switch s.State {
	case StateConnected:
		return ""
	case StateNotConnected:
		return "the broadcaster has not connected the channel: open " + s.ConnectURL + " and log in with the channel's Twitch account"
	case StateRevoked:
		return "the broadcaster's authorization was revoked: open " + s.ConnectURL + " and connect again"
	case StateMissingScope:
		return "the broadcaster's authorization lacks " + ScopeChannelSubscriptions + ": open " + s.ConnectURL + " and approve every permission"
	}
	return "twitch could not be reached to refresh the broadcaster's token (retrying): " + s.Error
}

// BroadcasterConfig configures a Broadcaster. Client, Store and
// BroadcasterID are required.
type BroadcasterConfig struct {
	Client        *Client
	Store         subrole.Store
	BroadcasterID string
	// ConnectURL is where the broadcaster connects, for logs and Status.
	ConnectURL string
	// RefreshBefore is how long before expiry the access token is
	// refreshed. Zero means 10 minutes.
	RefreshBefore time.Duration
	// ValidateEvery is how often Run validates the token. Zero means an hour
	// (Twitch asks apps to validate hourly).
	ValidateEvery time.Duration
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Logger receives logs. Nil discards them.
	Logger *slog.Logger
}

// Broadcaster keeps the broadcaster's token usable: it loads it from the
// store, refreshes it before it expires with a single refresh in flight
// (concurrent callers share it, and a rotated refresh token is stored before
// anyone uses the new access token), retries a call once with a fresh token
// after a 401, never refreshes for a missing scope, and stops trying once
// Twitch rejects the refresh token, until the broadcaster connects again.
// It implements subrole.SubscriberSource. It is safe for concurrent use.
type Broadcaster struct {
	cfg BroadcasterConfig
	log *slog.Logger
	now func() time.Time

	mu        sync.Mutex
	loaded    bool
	tok       subrole.BroadcasterToken // zero when none
	status    BroadcasterStatus
	refreshCh chan struct{} // non-nil while a refresh runs; closed when done
	refreshEr error         // the result of the last refresh
}

var _ subrole.SubscriberSource = (*Broadcaster)(nil)

// NewBroadcaster returns a Broadcaster for cfg.
func NewBroadcaster(cfg BroadcasterConfig) *Broadcaster {
	b := &Broadcaster{cfg: cfg, log: cfg.Logger, now: cfg.Now}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.cfg.RefreshBefore <= 0 {
		b.cfg.RefreshBefore = 10 * time.Minute
	}
	if b.cfg.ValidateEvery <= 0 {
		b.cfg.ValidateEvery = time.Hour
	}
	b.status = BroadcasterStatus{State: StateNotConnected, ConnectURL: cfg.ConnectURL}
	return b
}

// Status returns the state of the authorization.
func (b *Broadcaster) Status() BroadcasterStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.status
	s.Scopes = slices.Clone(s.Scopes)
	return s
}

// setStatusLocked updates the status from the token and state; the caller
// holds b.mu.
func (b *Broadcaster) setStatusLocked(st TokenState, errText string) {
	b.status.State, b.status.Error = st, errText
	b.status.UserID, b.status.Login = b.tok.UserID, b.tok.Login
	b.status.Scopes, b.status.Expires, b.status.LastRefresh = slices.Clone(b.tok.Scopes), b.tok.Expires, b.tok.Refreshed
}

// load reads the token from the store once.
func (b *Broadcaster) load(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.loaded {
		return nil
	}
	var tok subrole.BroadcasterToken
	err := b.cfg.Store.View(ctx, func(tx subrole.Tx) error {
		var err error
		tok, err = tx.BroadcasterToken()
		return err
	})
	if errors.Is(err, subrole.ErrNotFound) {
		b.loaded = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("twitch: load broadcaster token: %w", err)
	}
	b.loaded, b.tok = true, tok
	b.setStatusLocked(StateConnected, "")
	return nil
}

// Connected adopts a token the broadcaster just authorized (already stored
// by the OAuth callback) and clears a revoked or missing-scope state.
func (b *Broadcaster) Connected(tok subrole.BroadcasterToken) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.loaded, b.tok = true, tok
	b.status.LastValidated = b.now()
	st, problem := b.checkLocked(tok.UserID, tok.Scopes)
	b.setStatusLocked(st, problem)
	b.log.Info("twitch: the broadcaster connected", "twitch_user", tok.UserID, "login", tok.Login, "scopes", tok.Scopes)
}

// checkLocked checks the token's user and scopes.
func (b *Broadcaster) checkLocked(userID string, scopes []string) (TokenState, string) {
	if userID != b.cfg.BroadcasterID {
		return StateMissingScope, fmt.Sprintf("the token belongs to user %s, not the broadcaster %s", userID, b.cfg.BroadcasterID)
	}
	if !slices.Contains(scopes, ScopeChannelSubscriptions) {
		return StateMissingScope, "the token lacks " + ScopeChannelSubscriptions
	}
	return StateConnected, ""
}

// Token returns a usable access token, refreshing it first when it expires
// within RefreshBefore. It fails with an error wrapping ErrNotConnected
// without calling Twitch when there is no token or the authorization was
// revoked or lacks the scope.
func (b *Broadcaster) Token(ctx context.Context) (string, error) {
	return b.token(ctx, "")
}

// token is Token; stale, if not "", is an access token Twitch just refused,
// which must be refreshed even if it looks unexpired.
func (b *Broadcaster) token(ctx context.Context, stale string) (string, error) {
	if err := b.load(ctx); err != nil {
		return "", err
	}
	b.mu.Lock()
	for {
		switch b.status.State {
		case StateNotConnected, StateRevoked, StateMissingScope:
			err := fmt.Errorf("%w: %s", ErrNotConnected, b.problemLocked())
			b.mu.Unlock()
			return "", err
		}
		if b.tok.AccessToken != "" && b.tok.AccessToken != stale && b.now().Before(b.tok.Expires.Add(-b.cfg.RefreshBefore)) {
			tok := b.tok.AccessToken
			b.mu.Unlock()
			return tok, nil
		}
		if ch := b.refreshCh; ch != nil {
			// Someone is refreshing: wait for them and look again.
			b.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			b.mu.Lock()
			if b.refreshEr != nil {
				err := b.refreshEr
				b.mu.Unlock()
				return "", err
			}
			stale = "" // the token was replaced
			continue
		}
		ch := make(chan struct{})
		b.refreshCh = ch
		refresh := b.tok.RefreshToken
		b.mu.Unlock()
		err := b.refresh(ctx, refresh)
		b.mu.Lock()
		b.refreshCh, b.refreshEr = nil, err
		close(ch)
		if err != nil {
			b.mu.Unlock()
			return "", err
		}
		stale = ""
	}
}

func (b *Broadcaster) problemLocked() string {
	s := b.status
	return s.Problem()
}

// refresh trades the refresh token for a new pair and stores it. The
// refresh is not cut short by the caller's context: others wait for it, and
// a rotated refresh token must be stored once Twitch issued it.
func (b *Broadcaster) refresh(ctx context.Context, refresh string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	t, err := b.cfg.Client.Refresh(ctx, refresh)
	if err != nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		if errors.Is(err, ErrInvalidGrant) || errors.Is(err, ErrUnauthorized) {
			b.setStatusLocked(StateRevoked, err.Error())
			b.log.Error("twitch: the broadcaster's refresh token was rejected; subscriber reads and EventSub stop until the broadcaster connects again",
				"twitch_user", b.tok.UserID, "err", err, "fix", "open "+b.cfg.ConnectURL+" and log in with the channel's Twitch account")
			return fmt.Errorf("%w: %w", ErrNotConnected, err)
		}
		b.setStatusLocked(StateUnreachable, err.Error())
		b.log.Warn("twitch: refreshing the broadcaster's token failed; will retry", "twitch_user", b.tok.UserID, "err", err)
		return err
	}
	b.mu.Lock()
	tok := b.tok
	b.mu.Unlock()
	if tok.RefreshToken != refresh {
		return nil // the broadcaster connected again meanwhile: their new grant wins
	}
	tok.AccessToken, tok.RefreshToken, tok.Expires, tok.Refreshed = t.AccessToken, t.RefreshToken, t.Expires, b.now()
	if len(t.Scopes) > 0 {
		tok.Scopes = t.Scopes
	}
	var superseded bool
	serr := b.cfg.Store.Update(ctx, func(tx subrole.Tx) error {
		cur, err := tx.BroadcasterToken()
		superseded = err == nil && cur.RefreshToken != refresh
		if superseded {
			return nil // never store the old grant's tokens over a new one
		}
		return tx.PutBroadcasterToken(tok)
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	if superseded || b.tok.RefreshToken != refresh {
		return nil
	}
	b.tok = tok
	if serr != nil {
		// The old refresh token is spent; only memory holds the new one.
		b.log.Error("twitch: storing the refreshed broadcaster token failed; after a restart the broadcaster must connect again",
			"twitch_user", tok.UserID, "err", serr)
	}
	st, problem := b.checkLocked(tok.UserID, tok.Scopes)
	b.setStatusLocked(st, problem)
	b.log.Debug("twitch: refreshed the broadcaster's token", "twitch_user", tok.UserID, "expires", tok.Expires)
	return nil
}

// Do calls fn with a usable access token. When fn fails with
// ErrUnauthorized it refreshes once and calls fn again; a second 401 is
// returned, never retried. When fn fails with ErrMissingScope the state
// becomes StateMissingScope (no refresh: it cannot add a scope) and later
// calls fail at once with ErrNotConnected.
func (b *Broadcaster) Do(ctx context.Context, fn func(token string) error) error {
	tok, err := b.Token(ctx)
	if err != nil {
		return err
	}
	err = fn(tok)
	if errors.Is(err, ErrUnauthorized) {
		if tok, err = b.token(ctx, tok); err != nil {
			return err
		}
		err = fn(tok)
	}
	if errors.Is(err, ErrMissingScope) {
		b.mu.Lock()
		if b.status.State != StateMissingScope {
			b.setStatusLocked(StateMissingScope, err.Error())
			b.log.Error("twitch: the broadcaster's token lacks a scope; connect again and approve every permission",
				"twitch_user", b.tok.UserID, "err", err, "fix", "open "+b.cfg.ConnectURL)
		}
		b.mu.Unlock()
	}
	return err
}

// Validate checks the token with GET /validate (refreshing first if it is
// due), records the user and scopes Twitch reports, and returns the status.
// A token Twitch no longer accepts is refreshed once.
func (b *Broadcaster) Validate(ctx context.Context) (BroadcasterStatus, error) {
	var v Validation
	err := b.Do(ctx, func(tok string) error {
		var err error
		v, err = b.cfg.Client.Validate(ctx, tok)
		return err
	})
	if err != nil {
		return b.Status(), err
	}
	b.mu.Lock()
	b.tok.Scopes = v.Scopes
	b.status.LastValidated = b.now()
	st, problem := b.checkLocked(v.UserID, v.Scopes)
	if st != StateConnected && b.status.State == StateConnected {
		b.log.Error("twitch: the broadcaster's token cannot read subscriptions", "problem", problem, "fix", "open "+b.cfg.ConnectURL)
	}
	b.setStatusLocked(st, problem)
	b.mu.Unlock()
	return b.Status(), nil
}

// Run validates the token at start and every ValidateEvery, and refreshes
// it ahead of expiry, until ctx is done. While the broadcaster is not
// connected it logs, at warning level, how to connect. It returns ctx.Err().
func (b *Broadcaster) Run(ctx context.Context) error {
	var backoff time.Duration // grows while Twitch cannot be reached
	for {
		if err := b.load(ctx); err != nil {
			b.log.Error("twitch: reading the broadcaster token failed", "err", err)
		}
		switch st := b.Status(); st.State {
		case StateNotConnected, StateRevoked, StateMissingScope:
			b.log.Warn("twitch: the broadcaster is not connected: subscriber reads (/subrole resync) do not work",
				"state", string(st.State), "fix", st.Problem())
		default:
			if _, err := b.Validate(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("twitch: validating the broadcaster's token failed", "err", err)
			}
		}
		wait := b.cfg.ValidateEvery
		b.mu.Lock()
		if b.status.State == StateUnreachable {
			backoff = min(max(backoff*2, time.Second), 5*time.Minute)
		} else {
			backoff = 0
		}
		if b.status.State == StateConnected || b.status.State == StateUnreachable {
			if due := b.tok.Expires.Add(-b.cfg.RefreshBefore).Sub(b.now()); due < wait {
				wait = max(due, time.Second, backoff)
			}
		}
		b.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Subscribers returns the subscriptions of up to 100 users (GET
// /subscriptions?user_id=…); a user who is not returned is not subscribed.
func (b *Broadcaster) Subscribers(ctx context.Context, userIDs []string) ([]subrole.HelixSubscription, error) {
	var out []subrole.HelixSubscription
	err := b.Do(ctx, func(tok string) error {
		var err error
		out, _, err = b.cfg.Client.Subscriptions(ctx, tok, b.cfg.BroadcasterID, userIDs, "")
		return err
	})
	return out, err
}

// AllSubscribers calls fn with every page of the broadcaster's subscribers
// (GET /subscriptions, 100 per page, cursor paging).
func (b *Broadcaster) AllSubscribers(ctx context.Context, fn func(page []subrole.HelixSubscription) error) error {
	cursor := ""
	for {
		var page []subrole.HelixSubscription
		var next string
		err := b.Do(ctx, func(tok string) error {
			var err error
			page, next, err = b.cfg.Client.Subscriptions(ctx, tok, b.cfg.BroadcasterID, nil, cursor)
			return err
		})
		if err != nil {
			return err
		}
		if len(page) > 0 {
			if err := fn(page); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		cursor = next
	}
}
