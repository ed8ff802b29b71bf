// Package twitch is subrole's Twitch client: OAuth (authorization codes,
// refresh, revoke, validate, app access tokens) through golang.org/x/oauth2
// with endpoints taken from configuration, Helix reads through
// github.com/nicklaw5/helix/v2, and the manager of the broadcaster's token
// (Broadcaster), which refreshes it before it expires with one refresh in
// flight, validates it hourly and reports its state.
//
// Where helix is used and where it is not:
//
//   - OAuth goes through x/oauth2 and plain net/http, never helix: helix's
//     authorization URL is a constant, its token refresh loops forever on a
//     401 that a refresh cannot fix (a missing scope) and reports a failed
//     refresh as success, and any Helix path containing "/token",
//     "/revoke", "/validate" or "/device" is sent to its hard-coded auth host.
//   - Helix calls use a helix.Client made per call: helix fixes a client's
//     context when it is created and its token setters change shared
//     options, so one client per call is the only way to get per-request
//     cancellation and per-request tokens safely. It never gets a refresh
//     token or client secret, so its own refresh never runs.
//   - helix's RateLimitFunc retries a 429 forever; instead every request
//     goes through this package's transport, which waits out an exhausted
//     Ratelimit-Remaining and retries a 429 at most twice.
//
// EventSub subscriptions are managed with the app token through plain
// net/http (eventsub.go: EventSubSubscriptions, CreateEventSubSubscription,
// DeleteEventSubSubscription), with this package's own types: helix refuses
// http callbacks and sends empty condition fields.
//
// Errors wrap a few sentinels (ErrUnauthorized, ErrMissingScope,
// ErrInvalidGrant, ErrUnavailable, ErrRejected, ErrNotConnected, and for
// EventSub ErrConflict and ErrNotFound) and are
// *APIError values when Twitch answered; APIError.Temporary tells whether
// trying again later can help. No error, log line or String method of this
// package contains a token.
package twitch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// The default endpoints.
const (
	DefaultAuthURL = "https://id.twitch.tv/oauth2"
	DefaultAPIURL  = "https://api.twitch.tv/helix"
)

// The scopes subrole asks for.
const (
	// ScopeUserSubscriptions lets subrole check a member's own subscription
	// (GET /subscriptions/user) during /link.
	ScopeUserSubscriptions = "user:read:subscriptions"
	// ScopeChannelSubscriptions lets subrole read the broadcaster's
	// subscribers (GET /subscriptions) and receive subscription EventSub.
	ScopeChannelSubscriptions = "channel:read:subscriptions"
)

// Sentinel errors.
var (
	// ErrUnauthorized means Twitch rejected a token or the client
	// credentials (401, or 403 for a wrong client secret).
	ErrUnauthorized = errors.New("twitch: unauthorized")
	// ErrMissingScope means a token lacks a scope the call needs; only a
	// new authorization helps, never a refresh.
	ErrMissingScope = errors.New("twitch: token lacks a required scope")
	// ErrInvalidGrant means an authorization code or refresh token was
	// rejected (400): it is used up, expired or revoked.
	ErrInvalidGrant = errors.New("twitch: authorization code or refresh token rejected")
	// ErrUnavailable means Twitch could not be reached, answered 5xx, or
	// kept answering 429; trying again later may work.
	ErrUnavailable = errors.New("twitch: unavailable")
	// ErrRejected means Twitch refused the request for another reason (a 4xx).
	ErrRejected = errors.New("twitch: request rejected")
	// ErrNotConnected means the broadcaster has not authorized subrole, or
	// their authorization is no longer valid (see Broadcaster.Status).
	ErrNotConnected = errors.New("twitch: the broadcaster is not connected")
)

// APIError is a failed call to Twitch.
type APIError struct {
	Op      string // e.g. "exchange code", "GET /subscriptions/user"
	Status  int    // HTTP status; 0 when Twitch was not reached
	Message string // Twitch's message, or the transport error
	Kind    error  // one of the sentinel errors
}

func (e *APIError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("twitch: %s: %s", e.Op, e.Message)
	}
	return fmt.Sprintf("twitch: %s: %d %s", e.Op, e.Status, e.Message)
}

// Unwrap returns the sentinel Kind.
func (e *APIError) Unwrap() error { return e.Kind }

// Temporary reports whether trying again later may succeed.
func (e *APIError) Temporary() bool { return e.Kind == ErrUnavailable }

// Config configures a Client. ClientID and ClientSecret are required.
type Config struct {
	// ClientID and ClientSecret are the Twitch application's credentials.
	ClientID, ClientSecret string
	// AuthURL is the OAuth base URL (…/authorize, …/token, …/revoke,
	// …/validate). Empty means DefaultAuthURL.
	AuthURL string
	// APIURL is the Helix base URL. Empty means DefaultAPIURL.
	APIURL string
	// HTTPClient sends every request. Nil means a client with a 15 second
	// timeout. Its transport is wrapped with the rate-limit handling, and
	// its Timeout bounds each attempt rather than the whole call, so that
	// waiting for a rate-limit window (MaxRateWait) is not cut short.
	HTTPClient *http.Client
	// MaxRateWait is the longest a request waits for a Helix rate-limit
	// window to reset before it fails with ErrUnavailable. Zero means 10 s.
	MaxRateWait time.Duration
	// Now returns the current time, for token expiry. Nil means time.Now.
	Now func() time.Time
	// Logger receives the few logs the client writes (a failed revoke).
	// Nil discards them.
	Logger *slog.Logger
}

// Client talks to Twitch's OAuth endpoints and Helix. It is safe for
// concurrent use.
type Client struct {
	clientID, clientSecret string
	authURL, apiURL        string
	http                   *http.Client
	now                    func() time.Time
	log                    *slog.Logger

	appMu  sync.Mutex // held while an app token is fetched: one fetch at a time
	app    string
	appExp time.Time
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("twitch: client id and client secret are required")
	}
	c := &Client{clientID: cfg.ClientID, clientSecret: cfg.ClientSecret, now: cfg.Now, log: cfg.Logger,
		authURL: strings.TrimSuffix(cmpOr(cfg.AuthURL, DefaultAuthURL), "/"),
		apiURL:  strings.TrimSuffix(cmpOr(cfg.APIURL, DefaultAPIURL), "/")}
	for _, u := range []string{c.authURL, c.apiURL} {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("twitch: %q is not an http(s) URL", u)
		}
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	base := cfg.HTTPClient
	if base == nil {
		base = &http.Client{Timeout: 15 * time.Second}
	}
	hc := *base
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	// A client-wide timeout would include the rate-limit waits inside the
	// transport (a reconcile waiting a minute for Helix's window would time
	// out): the transport applies it to each attempt instead.
	hc.Transport = &rateLimiter{base: rt, maxWait: cmpOr(cfg.MaxRateWait, 10*time.Second), attempt: hc.Timeout}
	hc.Timeout = 0
	c.http = &hc
	return c, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// ClientID returns the application's client id.
func (c *Client) ClientID() string { return c.clientID }

// Token is an OAuth token pair. Its String and LogValue hide the tokens.
type Token struct {
	AccessToken  string
	RefreshToken string // empty for app tokens
	Expires      time.Time
	Scopes       []string
}

// String describes the token without its secrets.
func (t Token) String() string {
	return fmt.Sprintf("token expiring %s with scopes %v", t.Expires.UTC().Format(time.RFC3339), t.Scopes)
}

// LogValue describes the token without its secrets.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.Time("expires", t.Expires), slog.Any("scopes", t.Scopes))
}

// oauthConfig returns the x/oauth2 configuration for redirectURI.
func (c *Client) oauthConfig(redirectURI string, scopes []string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     c.clientID,
		ClientSecret: c.clientSecret,
		Endpoint: oauth2.Endpoint{AuthURL: c.authURL + "/authorize", TokenURL: c.authURL + "/token",
			AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL: redirectURI,
		Scopes:      scopes,
	}
}

// AuthCodeURL returns Twitch's authorize URL for the authorization code
// flow: response_type=code, the client id, redirectURI, the scopes and
// state, all escaped (no scopes: an empty scope). forceVerify makes Twitch
// show the consent page even to a user who approved before, so they can
// switch accounts.
func (c *Client) AuthCodeURL(redirectURI, state string, scopes []string, forceVerify bool) string {
	var opts []oauth2.AuthCodeOption
	if len(scopes) == 0 {
		// Twitch documents scope as required; a sign-in that needs no
		// permission sends it empty (x/oauth2 would leave it out).
		opts = append(opts, oauth2.SetAuthURLParam("scope", ""))
	}
	if forceVerify {
		opts = append(opts, oauth2.SetAuthURLParam("force_verify", "true"))
	}
	return c.oauthConfig(redirectURI, scopes).AuthCodeURL(state, opts...)
}

func (c *Client) oauthCtx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, c.http)
}

// Exchange trades an authorization code for a token pair. A used, expired
// or unknown code fails with ErrInvalidGrant.
func (c *Client) Exchange(ctx context.Context, code, redirectURI string) (Token, error) {
	t, err := c.oauthConfig(redirectURI, nil).Exchange(c.oauthCtx(ctx), code)
	if err != nil {
		return Token{}, c.oauthErr(ctx, "exchange code", err)
	}
	return c.token(t), nil
}

// Refresh trades a refresh token for a new pair (Twitch may rotate the
// refresh token; the new one is returned). A revoked or spent refresh token
// fails with ErrInvalidGrant.
func (c *Client) Refresh(ctx context.Context, refreshToken string) (Token, error) {
	t, err := c.oauthConfig("", nil).TokenSource(c.oauthCtx(ctx), &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		return Token{}, c.oauthErr(ctx, "refresh token", err)
	}
	tok := c.token(t)
	if tok.RefreshToken == "" {
		tok.RefreshToken = refreshToken
	}
	return tok, nil
}

// token converts an x/oauth2 token, reading Twitch's scope array.
func (c *Client) token(t *oauth2.Token) Token {
	tok := Token{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken}
	if t.ExpiresIn > 0 {
		tok.Expires = c.now().Add(time.Duration(t.ExpiresIn) * time.Second)
	}
	switch v := t.Extra("scope").(type) {
	case []any:
		for _, s := range v {
			if str, ok := s.(string); ok {
				tok.Scopes = append(tok.Scopes, str)
			}
		}
	case string:
		tok.Scopes = strings.Fields(v)
	}
	return tok
}

// oauthErr classifies an x/oauth2 error.
func (c *Client) oauthErr(ctx context.Context, op string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		e := &APIError{Op: op, Status: re.Response.StatusCode, Message: twitchMessage(re.Body)}
		switch st := re.Response.StatusCode; {
		case st == http.StatusBadRequest:
			e.Kind = ErrInvalidGrant
		case st == http.StatusUnauthorized || st == http.StatusForbidden:
			e.Kind = ErrUnauthorized
		case st == http.StatusTooManyRequests || st >= 500:
			e.Kind = ErrUnavailable
		default:
			e.Kind = ErrRejected
		}
		return e
	}
	if ctx.Err() != nil {
		return fmt.Errorf("twitch: %s: %w", op, ctx.Err())
	}
	return &APIError{Op: op, Message: transportMessage(err), Kind: ErrUnavailable}
}

// twitchMessage extracts "message" from a Twitch error body.
func twitchMessage(body []byte) string {
	var b struct {
		Message string `json:"message"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(body, &b) == nil && (b.Message != "" || b.Error != "") {
		return cmpOr(b.Message, b.Error)
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// transportMessage describes a transport error without the URL, which
// could carry a query a caller did not mean to log.
func transportMessage(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}

// Revoke revokes an access token (POST /revoke).
func (c *Client) Revoke(ctx context.Context, accessToken string) error {
	form := url.Values{"client_id": {c.clientID}, "token": {accessToken}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.authURL+"/revoke", strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("twitch: revoke: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	_, err = c.doAuth(ctx, "revoke token", req, nil)
	return err
}

// Validation is what GET /validate says about an access token.
type Validation struct {
	ClientID  string   `json:"client_id"`
	Login     string   `json:"login"`   // empty for app tokens
	UserID    string   `json:"user_id"` // empty for app tokens
	Scopes    []string `json:"scopes"`
	ExpiresIn int      `json:"expires_in"` // seconds
}

// HasScope reports whether the token carries scope.
func (v Validation) HasScope(scope string) bool { return slices.Contains(v.Scopes, scope) }

// Validate checks an access token with GET /validate. An invalid or expired
// token fails with ErrUnauthorized.
func (c *Client) Validate(ctx context.Context, accessToken string) (Validation, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.authURL+"/validate", nil)
	if err != nil {
		return Validation{}, fmt.Errorf("twitch: validate: %w", err)
	}
	req.Header.Set("Authorization", "OAuth "+accessToken)
	var v Validation
	_, err = c.doAuth(ctx, "validate token", req, &v)
	return v, err
}

// doAuth sends an OAuth request and decodes a 2xx JSON answer into out.
func (c *Client) doAuth(ctx context.Context, op string, req *http.Request, out any) (int, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("twitch: %s: %w", op, ctx.Err())
		}
		return 0, &APIError{Op: op, Message: transportMessage(err), Kind: ErrUnavailable}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		e := &APIError{Op: op, Status: resp.StatusCode, Message: twitchMessage(body), Kind: ErrRejected}
		switch st := resp.StatusCode; {
		case st == http.StatusUnauthorized:
			e.Kind = ErrUnauthorized
		case st == http.StatusBadRequest && op == "revoke token":
			e.Kind = ErrInvalidGrant
		case st == http.StatusTooManyRequests || st >= 500:
			e.Kind = ErrUnavailable
		}
		return resp.StatusCode, e
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, &APIError{Op: op, Status: resp.StatusCode, Message: "undecodable answer: " + err.Error(), Kind: ErrUnavailable}
		}
	}
	return resp.StatusCode, nil
}

// AppToken returns an app access token (client credentials), fetching one
// when there is none or it expires within a minute. Concurrent callers
// share one fetch. After Twitch rejects it with 401, call ResetAppToken.
func (c *Client) AppToken(ctx context.Context) (string, error) {
	c.appMu.Lock()
	defer c.appMu.Unlock()
	if c.app != "" && c.now().Before(c.appExp.Add(-time.Minute)) {
		return c.app, nil
	}
	cc := clientcredentials.Config{ClientID: c.clientID, ClientSecret: c.clientSecret,
		TokenURL: c.authURL + "/token", AuthStyle: oauth2.AuthStyleInParams}
	t, err := cc.Token(c.oauthCtx(ctx))
	if err != nil {
		return "", c.oauthErr(ctx, "app token", err)
	}
	c.app, c.appExp = t.AccessToken, c.now().Add(time.Duration(t.ExpiresIn)*time.Second)
	if t.ExpiresIn <= 0 {
		c.appExp = c.now().Add(time.Hour)
	}
	return c.app, nil
}

// ResetAppToken forgets the app token tok after Twitch rejected it, so the
// next AppToken fetches a new one. A token that was already replaced is
// left alone.
func (c *Client) ResetAppToken(tok string) {
	c.appMu.Lock()
	defer c.appMu.Unlock()
	if c.app == tok {
		c.app = ""
	}
}

// WithAppToken calls fn with the app token; when fn's error wraps
// ErrUnauthorized it renews the token once and calls fn again. Helix calls
// made with an app token (EventSub subscriptions) go through it.
func (c *Client) WithAppToken(ctx context.Context, fn func(token string) error) error {
	tok, err := c.AppToken(ctx)
	if err != nil {
		return err
	}
	err = fn(tok)
	if !errors.Is(err, ErrUnauthorized) {
		return err
	}
	c.ResetAppToken(tok)
	if tok, err = c.AppToken(ctx); err != nil {
		return err
	}
	return fn(tok)
}
