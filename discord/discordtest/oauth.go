package discordtest

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// SessionCookie is the name of the cookie by which the fake's authorize page
// knows who is signed in to Discord in a browser (see LogIn).
const SessionCookie = "discordtest_session"

// The lifetimes of the fake's OAuth2 codes and access tokens (Discord's).
const (
	codeTTL  = 10 * time.Minute
	tokenTTL = 604800 * time.Second
)

// oauthServer is the fake's OAuth2 state.
type oauthServer struct {
	mu          sync.Mutex
	sessions    map[string]string // session cookie value → user id
	defaultUser string            // signed in in every browser without a session
	denying     bool
	redirects   []string // registered redirect URIs; empty accepts any
	codes       map[string]*oauthCode
	grants      map[string]*oauthGrant // by access and by refresh token
	authorized  int
}

type oauthCode struct {
	user, redirect string
	scopes         []string
	expires        time.Time
}

type oauthGrant struct {
	user            string
	access, refresh string
	scopes          []string
	expires         time.Time
	revoked         bool
}

func (o *oauthServer) init() {
	o.sessions = map[string]string{}
	o.codes = map[string]*oauthCode{}
	o.grants = map[string]*oauthGrant{}
}

// bearer returns the user of a live access token holding scope.
func (o *oauthServer) bearer(token, scope string, now time.Time) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	g, ok := o.grants[token]
	if !ok || g.access != token || g.revoked || !now.Before(g.expires) || !slices.Contains(g.scopes, scope) {
		return "", false
	}
	return g.user, true
}

// relPath returns path relative to a served API version, and whether it
// was under one.
func relPath(path string) (string, bool) {
	for _, p := range []string{apiPrefix, apiPrefixV10} {
		if rel, ok := strings.CutPrefix(path, p); ok && strings.HasPrefix(rel, "/") {
			return rel, true
		}
	}
	return "", false
}

// isAuthorizePath reports whether path is Discord's authorize page (served
// with and without the /api prefix, like Discord's).
func isAuthorizePath(path string) bool {
	if path == "/oauth2/authorize" || path == "/api/oauth2/authorize" {
		return true
	}
	rel, ok := relPath(path)
	return ok && rel == "/oauth2/authorize"
}

// AuthorizeURL returns the URL of the fake's authorize page.
func (s *Server) AuthorizeURL() string { return s.URL + "/oauth2/authorize" }

// LogIn signs userID in to the fake Discord in the browser whose cookies
// jar holds, as logging in on discord.com does: the authorize page then
// approves for userID in that browser. userID need not be a guild member.
func (s *Server) LogIn(jar http.CookieJar, userID string) {
	value := randomToken()
	s.oauth.mu.Lock()
	s.oauth.sessions[value] = userID
	s.oauth.mu.Unlock()
	u, _ := url.Parse(s.URL)
	jar.SetCookies(u, []*http.Cookie{{Name: SessionCookie, Value: value, Path: "/", HttpOnly: true}})
}

// SetOAuthUser signs userID in for every browser that has no session
// cookie of its own ("" signs nobody in; the authorize page then answers
// 401, as a real login page would stop a test).
func (s *Server) SetOAuthUser(userID string) {
	s.oauth.mu.Lock()
	defer s.oauth.mu.Unlock()
	s.oauth.defaultUser = userID
}

// SetOAuthDenying makes the authorize page deny every authorization
// (error=access_denied), as a user pressing Cancel does, until it is set
// back to false.
func (s *Server) SetOAuthDenying(deny bool) {
	s.oauth.mu.Lock()
	defer s.oauth.mu.Unlock()
	s.oauth.denying = deny
}

// SetRedirectURIs sets the application's registered redirect URIs
// (Developer Portal > OAuth2 > Redirects). With none, any http(s) URI is
// accepted; with some, the authorize page refuses others as Discord does.
func (s *Server) SetRedirectURIs(uris ...string) {
	s.oauth.mu.Lock()
	defer s.oauth.mu.Unlock()
	s.oauth.redirects = slices.Clone(uris)
}

// ValidOAuthTokens returns how many live (unrevoked, unexpired) OAuth2
// access tokens the fake has issued to userID.
func (s *Server) ValidOAuthTokens(userID string) int {
	s.oauth.mu.Lock()
	defer s.oauth.mu.Unlock()
	now, n := time.Now(), 0
	for tok, g := range s.oauth.grants {
		if tok == g.access && g.user == userID && !g.revoked && now.Before(g.expires) {
			n++
		}
	}
	return n
}

// OAuthAuthorizations returns how many times the authorize page approved.
func (s *Server) OAuthAuthorizations() int {
	s.oauth.mu.Lock()
	defer s.oauth.mu.Unlock()
	return s.oauth.authorized
}

// username returns a user's name: the member's, or a made-up one.
func (s *Server) username(userID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.members[userID]; ok {
		return m.username
	}
	return "user" + userID
}

// knownScopes are the scopes the authorize page accepts.
var knownScopes = []string{"identify", "email", "guilds", "guilds.members.read", "connections"}

// serveAuthorize is the authorize page: it approves at once for the user
// signed in in the browser and redirects with a code, or with an error.
func (s *Server) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	page := func(status int, msg string) {
		s.logf("%s %s -> %d %s", r.Method, r.URL.Path, status, msg)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		fmt.Fprintln(w, msg)
	}
	if r.Method != http.MethodGet {
		page(http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	q := r.URL.Query()
	if q.Get("client_id") != s.ApplicationID {
		page(http.StatusBadRequest, "Unknown Application")
		return
	}
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || (redirect.Scheme != "http" && redirect.Scheme != "https") || redirect.Host == "" || redirect.Fragment != "" {
		page(http.StatusBadRequest, "Invalid OAuth2 redirect_uri")
		return
	}
	s.oauth.mu.Lock()
	registered := len(s.oauth.redirects) == 0 || slices.Contains(s.oauth.redirects, q.Get("redirect_uri"))
	s.oauth.mu.Unlock()
	if !registered {
		page(http.StatusBadRequest, "Invalid OAuth2 redirect_uri")
		return
	}
	back := func(params url.Values) {
		out := redirect.Query()
		for k, v := range params {
			out[k] = v
		}
		if st := q.Get("state"); st != "" {
			out.Set("state", st)
		}
		redirect.RawQuery = out.Encode()
		s.logf("%s %s -> 302", r.Method, r.URL.Path)
		http.Redirect(w, r, redirect.String(), http.StatusFound)
	}
	if q.Get("response_type") != "code" {
		back(url.Values{"error": {"unsupported_response_type"}, "error_description": {"The authorization server does not support obtaining an authorization code using this method."}})
		return
	}
	scopes := strings.Fields(q.Get("scope"))
	if len(scopes) == 0 || slices.ContainsFunc(scopes, func(sc string) bool { return !slices.Contains(knownScopes, sc) }) {
		back(url.Values{"error": {"invalid_scope"}, "error_description": {"The requested scope is invalid, unknown, or malformed."}})
		return
	}
	s.oauth.mu.Lock()
	user := s.oauth.defaultUser
	if c, err := r.Cookie(SessionCookie); err == nil {
		if u, ok := s.oauth.sessions[c.Value]; ok {
			user = u
		}
	}
	denying := s.oauth.denying
	var code string
	if user != "" && !denying {
		code = randomToken()
		s.oauth.codes[code] = &oauthCode{user: user, redirect: q.Get("redirect_uri"), scopes: scopes, expires: time.Now().Add(codeTTL)}
		s.oauth.authorized++
	}
	s.oauth.mu.Unlock()
	switch {
	case user == "":
		page(http.StatusUnauthorized, "discordtest: nobody is signed in to Discord in this browser (use Server.LogIn or Server.SetOAuthUser)")
	case denying:
		back(url.Values{"error": {"access_denied"}, "error_description": {"The resource owner or authorization server denied the request"}})
	default:
		back(url.Values{"code": {code}})
	}
}

// oauthError is the RFC 6749 error body of the token endpoints.
func oauthError(status int, code, description string) reply {
	body := map[string]any{"error": code}
	if description != "" {
		body["error_description"] = description
	}
	return reply{status: status, body: body}
}

// clientAuth checks the client credentials of a token endpoint call: HTTP
// Basic or client_id and client_secret in the form, as Discord accepts.
func (s *Server) clientAuth(q *request, form url.Values) *reply {
	id, secret, ok := q.r.BasicAuth()
	if !ok {
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	if id != s.ApplicationID || secret != s.ClientSecret {
		r := oauthError(http.StatusUnauthorized, "invalid_client", "")
		return &r
	}
	return nil
}

// tokenForm parses a token endpoint body, which Discord accepts only form encoded.
func tokenForm(q *request) (url.Values, *reply) {
	if ct := q.r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		r := oauthError(http.StatusBadRequest, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
		return nil, &r
	}
	form, err := url.ParseQuery(string(q.body))
	if err != nil {
		r := oauthError(http.StatusBadRequest, "invalid_request", "malformed body")
		return nil, &r
	}
	return form, nil
}

// oauthToken is POST /oauth2/token: authorization_code and refresh_token grants.
func (s *Server) oauthToken(q *request) reply {
	form, bad := tokenForm(q)
	if bad != nil {
		return *bad
	}
	if bad := s.clientAuth(q, form); bad != nil {
		return *bad
	}
	now := time.Now()
	s.oauth.mu.Lock()
	defer s.oauth.mu.Unlock()
	var user string
	var scopes []string
	switch form.Get("grant_type") {
	case "authorization_code":
		c, ok := s.oauth.codes[form.Get("code")]
		delete(s.oauth.codes, form.Get("code")) // a code works once, even when the exchange fails
		if !ok || !now.Before(c.expires) || c.redirect != form.Get("redirect_uri") {
			return oauthError(http.StatusBadRequest, "invalid_grant", `Invalid "code" in request.`)
		}
		user, scopes = c.user, c.scopes
	case "refresh_token":
		g, ok := s.oauth.grants[form.Get("refresh_token")]
		if !ok || g.refresh != form.Get("refresh_token") || g.revoked {
			return oauthError(http.StatusBadRequest, "invalid_grant", `Invalid "refresh_token" in request.`)
		}
		g.revoked = true
		user, scopes = g.user, g.scopes
	case "":
		return oauthError(http.StatusBadRequest, "invalid_request", `Missing "grant_type"`)
	default:
		return oauthError(http.StatusBadRequest, "unsupported_grant_type", `Unsupported grant type`)
	}
	g := &oauthGrant{user: user, access: randomToken(), refresh: randomToken(), scopes: scopes, expires: now.Add(tokenTTL)}
	s.oauth.grants[g.access], s.oauth.grants[g.refresh] = g, g
	return reply{status: http.StatusOK, body: map[string]any{"access_token": g.access, "token_type": "Bearer",
		"expires_in": int(tokenTTL / time.Second), "refresh_token": g.refresh, "scope": strings.Join(scopes, " ")}}
}

// oauthRevoke is POST /oauth2/token/revoke: it revokes the authorization
// the token belongs to (access and refresh token alike).
func (s *Server) oauthRevoke(q *request) reply {
	form, bad := tokenForm(q)
	if bad != nil {
		return *bad
	}
	if bad := s.clientAuth(q, form); bad != nil {
		return *bad
	}
	s.oauth.mu.Lock()
	if g, ok := s.oauth.grants[form.Get("token")]; ok {
		g.revoked = true
	}
	s.oauth.mu.Unlock()
	return reply{status: http.StatusOK, body: map[string]any{}}
}

// getApplication is GET /oauth2/applications/@me (and /applications/@me):
// the bot's application.
func (s *Server) getApplication(*request) reply {
	return reply{status: http.StatusOK, body: map[string]any{"id": s.ApplicationID, "name": "subrole test app",
		"icon": nil, "description": "", "bot_public": false, "bot_require_code_grant": false,
		"verify_key": "0000000000000000000000000000000000000000000000000000000000000000", "flags": 0,
		"bot": userJSON(s.BotUserID, "subrole-bot", true)}}
}
