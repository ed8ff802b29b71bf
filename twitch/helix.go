package twitch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nicklaw5/helix/v2"
	"github.com/subrole/subrole"
)

// Helix returns a helix client for one call: bound to ctx, sending token as
// the bearer token and Client-Id, through the rate-limited HTTP client. It
// never refreshes by itself. Packages that need Helix endpoints this one
// does not wrap (EventSub subscriptions) use it with WithAppToken.
func (c *Client) Helix(ctx context.Context, token string) *helix.Client {
	h, _ := helix.NewClientWithContext(ctx, &helix.Options{ // fails only without a client id, which New requires
		ClientID:        c.clientID,
		APIBaseURL:      c.apiURL,
		HTTPClient:      c.http,
		UserAccessToken: token,
	})
	return h
}

// HelixError classifies a helix call's result: a transport error or a
// non-2xx status becomes an *APIError wrapping one of the sentinels (a 401
// whose message names a scope wraps ErrMissingScope). It returns nil for
// a 2xx. Packages calling Helix through Helix use it too.
func HelixError(ctx context.Context, op string, rc *helix.ResponseCommon, err error) error {
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("twitch: %s: %w", op, ctx.Err())
		}
		return &APIError{Op: op, Message: err.Error(), Kind: ErrUnavailable}
	}
	if rc.StatusCode/100 == 2 {
		return nil
	}
	e := &APIError{Op: op, Status: rc.StatusCode, Message: cmpOr(rc.ErrorMessage, http.StatusText(rc.StatusCode)), Kind: ErrRejected}
	switch st := rc.StatusCode; {
	case st == http.StatusUnauthorized && strings.Contains(strings.ToLower(rc.ErrorMessage), "scope"):
		e.Kind = ErrMissingScope
	case st == http.StatusUnauthorized:
		e.Kind = ErrUnauthorized
	case st == http.StatusTooManyRequests || st >= 500:
		e.Kind = ErrUnavailable
	}
	return e
}

// User is a Twitch account.
type User struct {
	ID, Login, DisplayName string
}

// CurrentUser returns the user a user access token belongs to (GET /users
// without parameters).
func (c *Client) CurrentUser(ctx context.Context, token string) (User, error) {
	resp, err := c.Helix(ctx, token).GetUsers(&helix.UsersParams{})
	var rc *helix.ResponseCommon
	if resp != nil {
		rc = &resp.ResponseCommon
	}
	if err := HelixError(ctx, "GET /users", rc, err); err != nil {
		return User{}, err
	}
	if len(resp.Data.Users) != 1 {
		return User{}, &APIError{Op: "GET /users", Status: resp.StatusCode, Message: fmt.Sprintf("%d users for the token", len(resp.Data.Users)), Kind: ErrRejected}
	}
	u := resp.Data.Users[0]
	return User{ID: u.ID, Login: u.Login, DisplayName: u.DisplayName}, nil
}

// UserSubscription returns a viewer's subscription to broadcasterID with
// the viewer's own token (GET /subscriptions/user, scope
// user:read:subscriptions). A 404 means not subscribed: it returns false
// and no error.
func (c *Client) UserSubscription(ctx context.Context, token, broadcasterID, userID string) (subrole.HelixSubscription, bool, error) {
	resp, err := c.Helix(ctx, token).CheckUserSubscription(&helix.UserSubscriptionsParams{BroadcasterID: broadcasterID, UserID: userID})
	var rc *helix.ResponseCommon
	if resp != nil {
		rc = &resp.ResponseCommon
		if resp.StatusCode == http.StatusNotFound {
			return subrole.HelixSubscription{UserID: userID}, false, nil
		}
	}
	if err := HelixError(ctx, "GET /subscriptions/user", rc, err); err != nil {
		return subrole.HelixSubscription{}, false, err
	}
	if len(resp.Data.UserSubscriptions) == 0 {
		return subrole.HelixSubscription{UserID: userID}, false, nil
	}
	s := resp.Data.UserSubscriptions[0]
	tier, err := subrole.ParseTier(s.Tier)
	if err != nil {
		return subrole.HelixSubscription{}, false, &APIError{Op: "GET /subscriptions/user", Status: resp.StatusCode, Message: err.Error(), Kind: ErrRejected}
	}
	return subrole.HelixSubscription{UserID: userID, Tier: tier, IsGift: s.IsGift, GifterLogin: s.GifterLogin}, true, nil
}

// Subscriptions reads one page of the broadcaster's subscribers with the
// broadcaster's token (GET /subscriptions, scope
// channel:read:subscriptions). With userIDs (at most 100) it returns just
// those users' subscriptions and no cursor; without, the page after cursor
// ("" for the first) and the cursor of the next page ("" at the end).
func (c *Client) Subscriptions(ctx context.Context, token, broadcasterID string, userIDs []string, cursor string) ([]subrole.HelixSubscription, string, error) {
	if len(userIDs) > 100 {
		return nil, "", errors.New("twitch: GET /subscriptions: at most 100 user ids per call")
	}
	params := &helix.SubscriptionsParams{BroadcasterID: broadcasterID, UserID: userIDs, First: 100}
	if len(userIDs) == 0 {
		params.After = cursor
	}
	resp, err := c.Helix(ctx, token).GetSubscriptions(params)
	var rc *helix.ResponseCommon
	if resp != nil {
		rc = &resp.ResponseCommon
	}
	if err := HelixError(ctx, "GET /subscriptions", rc, err); err != nil {
		return nil, "", err
	}
	out := make([]subrole.HelixSubscription, 0, len(resp.Data.Subscriptions))
	for _, s := range resp.Data.Subscriptions {
		tier, err := subrole.ParseTier(s.Tier)
		if err != nil {
			return nil, "", &APIError{Op: "GET /subscriptions", Status: resp.StatusCode, Message: err.Error(), Kind: ErrRejected}
		}
		out = append(out, subrole.HelixSubscription{UserID: s.UserID, UserLogin: s.UserLogin, Tier: tier,
			IsGift: s.IsGift, GifterID: s.GifterID, GifterLogin: s.GifterLogin})
	}
	next := ""
	if len(userIDs) == 0 && len(out) > 0 {
		next = resp.Data.Pagination.Cursor
	}
	return out, next, nil
}

// CheckViewer runs a member's side of /link after Twitch redirected back
// with code: it exchanges the code, reads who the user is and their
// subscription to broadcasterID, and revokes the token, which subrole does
// not keep (also when a step fails).
func (c *Client) CheckViewer(ctx context.Context, code, redirectURI, broadcasterID string) (subrole.Viewer, error) {
	tok, err := c.Exchange(ctx, code, redirectURI)
	if err != nil {
		return subrole.Viewer{}, err
	}
	defer c.revokeQuietly(ctx, tok.AccessToken)
	u, err := c.CurrentUser(ctx, tok.AccessToken)
	if err != nil {
		return subrole.Viewer{}, err
	}
	sub, _, err := c.UserSubscription(ctx, tok.AccessToken, broadcasterID, u.ID)
	if err != nil {
		return subrole.Viewer{}, err
	}
	return subrole.Viewer{TwitchUserID: u.ID, TwitchLogin: u.Login, Tier: sub.Tier, IsGift: sub.IsGift, GifterLogin: sub.GifterLogin}, nil
}

// ConnectBroadcaster exchanges the broadcaster's authorization code and
// validates the token, returning it with the user it belongs to and its
// scopes. The caller checks the user and the scopes.
func (c *Client) ConnectBroadcaster(ctx context.Context, code, redirectURI string) (subrole.BroadcasterToken, error) {
	tok, err := c.Exchange(ctx, code, redirectURI)
	if err != nil {
		return subrole.BroadcasterToken{}, err
	}
	v, err := c.Validate(ctx, tok.AccessToken)
	if err != nil {
		c.revokeQuietly(ctx, tok.AccessToken)
		return subrole.BroadcasterToken{}, err
	}
	return subrole.BroadcasterToken{UserID: v.UserID, Login: v.Login, AccessToken: tok.AccessToken,
		RefreshToken: tok.RefreshToken, Expires: tok.Expires, Scopes: v.Scopes, Connected: c.now()}, nil
}

// Identify exchanges a code from an authorization without scopes (the
// dashboard's sign-in), reads who authorized with GET /validate, and
// revokes the token: only the user's id and login are kept.
func (c *Client) Identify(ctx context.Context, code, redirectURI string) (userID, login string, err error) {
	tok, err := c.Exchange(ctx, code, redirectURI)
	if err != nil {
		return "", "", err
	}
	defer c.revokeQuietly(ctx, tok.AccessToken)
	v, err := c.Validate(ctx, tok.AccessToken)
	if err != nil {
		return "", "", err
	}
	if v.UserID == "" {
		return "", "", &APIError{Op: "validate token", Status: http.StatusOK, Message: "no user in a user token", Kind: ErrRejected}
	}
	return v.UserID, v.Login, nil
}

// revokeQuietly revokes a token, logging a failure instead of returning
// it: the token expires by itself within hours.
func (c *Client) revokeQuietly(ctx context.Context, token string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := c.Revoke(ctx, token); err != nil {
		c.log.Warn("twitch: revoking a token failed; it expires by itself", "err", err)
	}
}

// rateLimiter is the HTTP transport under every Twitch call. Helix
// announces its budget in Ratelimit-Remaining and Ratelimit-Reset (Unix
// seconds) per token; once a token's budget is spent, its next requests wait
// for the reset, and a 429 is retried at most twice after the reset. A wait
// longer than maxWait gives up: the 429 is returned.
type rateLimiter struct {
	base    http.RoundTripper
	maxWait time.Duration
	attempt time.Duration // bounds each attempt, body included; zero: none

	mu      sync.Mutex
	blocked map[string]time.Time // Authorization header -> when its budget resets
}

func (rl *rateLimiter) RoundTrip(req *http.Request) (*http.Response, error) {
	key := req.Header.Get("Authorization")
	for attempt := 0; ; attempt++ {
		if err := rl.wait(req.Context(), key); err != nil {
			return nil, err
		}
		if attempt > 0 && req.Body != nil {
			if req.GetBody == nil {
				return nil, errors.New("twitch: cannot retry a request whose body cannot be replayed")
			}
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
		resp, err := rl.send(req)
		if err != nil {
			return nil, err
		}
		reset, limited := rl.observe(key, resp)
		if resp.StatusCode != http.StatusTooManyRequests || attempt == 2 {
			return resp, nil
		}
		if !limited {
			rl.block(key, time.Now().Add(time.Second)) // a 429 without headers: back off a second
		} else if time.Until(reset) > rl.maxWait {
			return resp, nil
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
}

// observe records the budget a response announces and returns the reset
// time when it is spent.
func (rl *rateLimiter) observe(key string, resp *http.Response) (time.Time, bool) {
	rem, err1 := strconv.Atoi(resp.Header.Get("Ratelimit-Remaining"))
	reset, err2 := strconv.ParseInt(resp.Header.Get("Ratelimit-Reset"), 10, 64)
	if err1 != nil || err2 != nil || (rem > 0 && resp.StatusCode != http.StatusTooManyRequests) {
		return time.Time{}, false
	}
	// Reset has whole seconds; waiting until the next one is safe.
	at := time.Unix(reset, 0).Add(50 * time.Millisecond)
	rl.block(key, at)
	return at, true
}

func (rl *rateLimiter) block(key string, until time.Time) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.blocked == nil {
		rl.blocked = map[string]time.Time{}
	}
	rl.blocked[key] = until
}

// wait sleeps until key's budget resets, if it is spent; a reset further
// away than maxWait is not waited for (the request goes out and Twitch
// answers 429).
func (rl *rateLimiter) wait(ctx context.Context, key string) error {
	rl.mu.Lock()
	until, ok := rl.blocked[key]
	now := time.Now()
	if ok && !now.Before(until) {
		delete(rl.blocked, key)
		ok = false
	}
	for k, t := range rl.blocked { // forget spent budgets of other tokens
		if !now.Before(t) {
			delete(rl.blocked, k)
		}
	}
	rl.mu.Unlock()
	if !ok {
		return nil
	}
	d := until.Sub(now)
	if d > rl.maxWait {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// send makes one attempt, bounded by rl.attempt until its body is closed.
func (rl *rateLimiter) send(req *http.Request) (*http.Response, error) {
	if rl.attempt <= 0 {
		return rl.base.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeout(req.Context(), rl.attempt)
	resp, err := rl.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelOnClose releases an attempt's timeout when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
