package discord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// The OAuth2 endpoints, relative to the origin (Discord's "OAuth2 URLs").
const (
	oauthAuthorizePath = "/oauth2/authorize"
	oauthAPIPath       = "/api/v10"
)

// Sentinel errors of OAuth.
var (
	// ErrOAuthInvalidGrant means Discord rejected an authorization code:
	// used, expired, or made for another redirect URI.
	ErrOAuthInvalidGrant = errors.New("discord: oauth: authorization code rejected")
	// ErrOAuthInvalidClient means Discord rejected the client id or secret.
	ErrOAuthInvalidClient = errors.New("discord: oauth: client secret rejected")
	// ErrOAuthUnavailable means Discord could not be reached or answered 5xx
	// or 429; trying again later may work.
	ErrOAuthUnavailable = errors.New("discord: oauth: unavailable")
	// ErrOAuthRejected means Discord refused the request for another reason.
	ErrOAuthRejected = errors.New("discord: oauth: request rejected")
)

// OAuthError is a failed OAuth2 call to Discord. It never holds a token.
type OAuthError struct {
	Op      string // "exchange code", "GET /users/@me", ...
	Status  int    // HTTP status; 0 when Discord was not reached
	Message string // Discord's error and description, or the transport error
	Kind    error  // one of the ErrOAuth* sentinels
}

func (e *OAuthError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("discord: oauth: %s: %s", e.Op, e.Message)
	}
	return fmt.Sprintf("discord: oauth: %s: %d %s", e.Op, e.Status, e.Message)
}

// Unwrap returns the sentinel Kind.
func (e *OAuthError) Unwrap() error { return e.Kind }

// Temporary reports whether trying again later may succeed.
func (e *OAuthError) Temporary() bool { return e.Kind == ErrOAuthUnavailable }

// OAuthConfig configures NewOAuth. ClientSecret is required, and BotToken
// unless ClientID is set.
type OAuthConfig struct {
	// Origin is Discord's origin: browsers are sent to Origin +
	// "/oauth2/authorize", the API is Origin + "/api/v10". Empty means
	// DefaultOrigin.
	Origin string
	// ClientID is the application's id, which is its OAuth2 client id.
	// Empty means: read it with BotToken (GET /oauth2/applications/@me).
	ClientID string
	// BotToken is the bot token, without "Bot ", used only to read ClientID.
	BotToken string
	// ClientSecret is the application's OAuth2 client secret (Developer
	// Portal > the application > OAuth2).
	ClientSecret string
	// HTTPClient sends every request. Nil means a client with a 10 second
	// timeout.
	HTTPClient *http.Client
}

// OAuth is Discord's OAuth2 authorization code flow with the identify
// scope: it tells which Discord account is signed in in a browser. It uses
// golang.org/x/oauth2 with endpoints from the configured origin. It is safe
// for concurrent use.
type OAuth struct {
	clientID, secret string
	origin           string
	http             *http.Client
}

// NewOAuth returns an OAuth for cfg. When cfg.ClientID is empty it reads
// the application id with the bot token, so it needs Discord.
func NewOAuth(ctx context.Context, cfg OAuthConfig) (*OAuth, error) {
	if cfg.ClientSecret == "" {
		return nil, errors.New("discord: oauth: the client secret is required")
	}
	origin := strings.TrimSuffix(cfg.Origin, "/")
	if origin == "" {
		origin = DefaultOrigin
	}
	if u, err := url.Parse(origin); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("discord: oauth: origin %q is not an http(s) origin", cfg.Origin)
	}
	o := &OAuth{clientID: cfg.ClientID, secret: cfg.ClientSecret, origin: origin, http: cfg.HTTPClient}
	if o.http == nil {
		o.http = &http.Client{Timeout: 10 * time.Second}
	}
	if o.clientID == "" {
		if cfg.BotToken == "" {
			return nil, errors.New("discord: oauth: a client id or the bot token is required")
		}
		var app struct {
			ID string `json:"id"`
		}
		if err := o.get(ctx, "read the application id", "/oauth2/applications/@me", "Bot "+cfg.BotToken, &app); err != nil {
			return nil, err
		}
		if app.ID == "" {
			return nil, errors.New("discord: oauth: GET /oauth2/applications/@me returned no id")
		}
		o.clientID = app.ID
	}
	return o, nil
}

// ClientID returns the application's OAuth2 client id.
func (o *OAuth) ClientID() string { return o.clientID }

func (o *OAuth) config(redirectURI string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     o.clientID,
		ClientSecret: o.secret,
		RedirectURL:  redirectURI,
		Scopes:       []string{"identify"},
		Endpoint: oauth2.Endpoint{
			AuthURL:   o.origin + oauthAuthorizePath,
			TokenURL:  o.origin + oauthAPIPath + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInParams, // one of the two styles Discord documents; no escaping questions
		},
	}
}

// AuthCodeURL returns Discord's authorize URL: response_type=code, the
// client id, scope identify, redirectURI and state, all escaped. Discord
// shows its consent page, naming the signed-in account.
func (o *OAuth) AuthCodeURL(redirectURI, state string) string {
	return o.config(redirectURI).AuthCodeURL(state)
}

// Identify exchanges a code from Discord's redirect for a token, reads the
// signed-in user with it (GET /users/@me) and revokes the token, which is
// never kept. It returns the user's id and username. A rejected code fails
// with an error wrapping ErrOAuthInvalidGrant, a rejected secret with
// ErrOAuthInvalidClient.
func (o *OAuth) Identify(ctx context.Context, code, redirectURI string) (userID, username string, err error) {
	tok, err := o.config(redirectURI).Exchange(context.WithValue(ctx, oauth2.HTTPClient, o.http), code)
	if err != nil {
		return "", "", o.oauthErr(ctx, "exchange code", err)
	}
	defer o.revoke(ctx, tok.AccessToken)
	var me struct {
		ID       string `json:"id"`
		Username string `json:"username"`
	}
	if err := o.get(ctx, "GET /users/@me", "/users/@me", "Bearer "+tok.AccessToken, &me); err != nil {
		return "", "", err
	}
	if me.ID == "" {
		return "", "", &OAuthError{Op: "GET /users/@me", Status: http.StatusOK, Message: "no user id", Kind: ErrOAuthRejected}
	}
	return me.ID, me.Username, nil
}

// CheckSecret asks Discord whether the client id and secret are right,
// without minting a token: it exchanges a code that does not exist, which
// Discord refuses with invalid_client for a wrong secret and invalid_grant
// otherwise. It returns an error wrapping ErrOAuthInvalidClient for a wrong
// secret, nil when the secret was accepted, and other errors when Discord
// could not tell.
func (o *OAuth) CheckSecret(ctx context.Context, redirectURI string) error {
	_, err := o.config(redirectURI).Exchange(context.WithValue(ctx, oauth2.HTTPClient, o.http), "subrole-secret-check")
	if err == nil {
		return nil // a fake that accepts anything
	}
	err = o.oauthErr(ctx, "check the client secret", err)
	if errors.Is(err, ErrOAuthInvalidGrant) {
		return nil
	}
	return err
}

// revoke revokes an access token, best effort (POST /oauth2/token/revoke),
// within ctx and at most 3 seconds: the token only says who the user is and
// expires by itself.
func (o *OAuth) revoke(ctx context.Context, accessToken string) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	form := url.Values{"token": {accessToken}, "token_type_hint": {"access_token"},
		"client_id": {o.clientID}, "client_secret": {o.secret}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.origin+oauthAPIPath+"/oauth2/token/revoke", strings.NewReader(form.Encode()))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err := o.http.Do(req); err == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
	}
}

// get reads an API path with the Authorization header auth into out.
func (o *OAuth) get(ctx context.Context, op, path, auth string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.origin+oauthAPIPath+path, nil)
	if err != nil {
		return fmt.Errorf("discord: oauth: %s: %w", op, err)
	}
	req.Header.Set("Authorization", auth)
	resp, err := o.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("discord: oauth: %s: %w", op, ctx.Err())
		}
		return &OAuthError{Op: op, Message: transportMessage(err), Kind: ErrOAuthUnavailable}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return &OAuthError{Op: op, Status: resp.StatusCode, Message: transportMessage(err), Kind: ErrOAuthUnavailable}
	}
	if resp.StatusCode != http.StatusOK {
		kind := kindOf(resp.StatusCode, "")
		if kind == ErrOAuthInvalidClient {
			kind = ErrOAuthRejected // a rejected token, not the client secret
		}
		return &OAuthError{Op: op, Status: resp.StatusCode, Message: errorMessage(body), Kind: kind}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return &OAuthError{Op: op, Status: resp.StatusCode, Message: "malformed JSON", Kind: ErrOAuthRejected}
	}
	return nil
}

// oauthErr classifies an x/oauth2 error.
func (o *OAuth) oauthErr(ctx context.Context, op string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		return &OAuthError{Op: op, Status: re.Response.StatusCode, Message: errorMessage(re.Body),
			Kind: kindOf(re.Response.StatusCode, re.ErrorCode)}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("discord: oauth: %s: %w", op, ctx.Err())
	}
	return &OAuthError{Op: op, Message: transportMessage(err), Kind: ErrOAuthUnavailable}
}

// kindOf maps a status and an OAuth error code to a sentinel.
func kindOf(status int, code string) error {
	switch {
	case code == "invalid_client" || status == http.StatusUnauthorized:
		return ErrOAuthInvalidClient
	case code == "invalid_grant":
		return ErrOAuthInvalidGrant
	case status == http.StatusTooManyRequests || status >= 500:
		return ErrOAuthUnavailable
	}
	return ErrOAuthRejected
}

// errorMessage extracts the error of an OAuth or API error body.
func errorMessage(body []byte) string {
	var b struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		Message     string `json:"message"`
	}
	if json.Unmarshal(body, &b) == nil {
		switch {
		case b.Error != "" && b.Description != "":
			return b.Error + ": " + b.Description
		case b.Error != "":
			return b.Error
		case b.Message != "":
			return b.Message
		}
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// transportMessage describes a transport error without its URL.
func transportMessage(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}
