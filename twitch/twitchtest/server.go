package twitchtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultClientSecret is the client secret of a Server whose Options leave
// it empty.
const DefaultClientSecret = "twitchtest-client-secret"

// Scopes subrole asks for.
const (
	ScopeUserSubscriptions    = "user:read:subscriptions"
	ScopeChannelSubscriptions = "channel:read:subscriptions"
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// ClientID and ClientSecret are the one application the fake knows.
	// Empty means DefaultClientID and DefaultClientSecret.
	ClientID, ClientSecret string
	// BroadcasterID and BroadcasterLogin are the channel whose
	// subscriptions the fake serves; the broadcaster is added as a user.
	// Empty means DefaultBroadcasterID and DefaultBroadcasterLogin.
	BroadcasterID, BroadcasterLogin string
	// Now is the fake's clock, for token and code expiry and rate-limit
	// windows. Nil means time.Now.
	Now func() time.Time
	// AccessTokenTTL is the life of user access tokens. Zero means 4 hours,
	// about what Twitch gives.
	AccessTokenTTL time.Duration
	// AppTokenTTL is the life of app access tokens. Zero means 60 days.
	AppTokenTTL time.Duration
	// RateLimit is the Helix points per minute (per RateWindow) per token
	// holder. Zero means 800, Twitch's default.
	RateLimit int
	// RateWindow is the length of a rate-limit window; tests shorten it so
	// that waiting for a reset is quick. Zero means a minute.
	RateWindow time.Duration
	// Logf, when set, receives one line per request (pass t.Logf).
	Logf func(format string, args ...any)

	// InsecureCallbacks lets EventSub subscriptions use http callbacks on
	// any port and address, for services on loopback. False refuses what
	// Twitch refuses: not https, a port other than 443, a private address.
	InsecureCallbacks bool
	// CallbackClient sends EventSub messages (verification challenges,
	// revocations, Publish) to callbacks. Nil means a client like Twitch's
	// (see Sender.Client).
	CallbackClient *http.Client
	// EventSubPageSize is the page size of GET /eventsub/subscriptions.
	// Zero means 100.
	EventSubPageSize int
}

// User is a Twitch account known to the fake.
type User struct {
	ID          string
	Login       string
	DisplayName string // empty means Login
}

// Sub is one subscription to the broadcaster.
type Sub struct {
	UserID   string
	Tier     string // "1000", "2000" or "3000"
	IsGift   bool
	GifterID string // a known user when IsGift; empty for an anonymous gift
}

// Token is a token pair the fake issued.
type Token struct {
	AccessToken  string
	RefreshToken string // empty for app tokens
	Expires      time.Time
	Scopes       []string
}

// Call is one recorded request.
type Call struct {
	Seq    int
	Method string
	Path   string // e.g. "/oauth2/token", "/helix/subscriptions"
	Query  url.Values
	Form   url.Values // the parsed body of form POSTs
	Header http.Header
	Status int
	Time   time.Time
}

// Server is a fake Twitch on 127.0.0.1: the OAuth endpoints under /oauth2
// (authorize, token, validate, revoke) and Helix under /helix (users,
// subscriptions/user, subscriptions), speaking Twitch's JSON formats,
// with Ratelimit-* headers, faults to inject and a record of every call.
// It is safe for concurrent use.
type Server struct {
	// URL is the origin, e.g. "http://127.0.0.1:41234".
	URL string

	opts Options
	hs   *httptest.Server

	mu          sync.Mutex
	users       map[string]*User
	subs        map[string]Sub
	codes       map[string]*code
	access      map[string]*grant
	refresh     map[string]*grant
	authUser    string
	authByState map[string]string // state -> user id, "" denies
	denying     bool
	faults      map[string][]int // path -> statuses to answer, in order
	windows     map[string]*window
	sorted      []Sub // subs ordered by user id, with their points; nil after a change
	points      int
	es          eventSubState

	callsMu sync.Mutex
	calls   []Call
	seq     int
	changed chan struct{}
}

type code struct {
	value, userID, redirectURI string
	scopes                     []string
	expires                    time.Time
	used                       bool
}

type grant struct {
	userID  string // "" for an app token
	scopes  []string
	access  string
	expires time.Time
	refresh string
	revoked bool
}

type window struct {
	start time.Time
	used  int
}

// NewServer starts a fake Twitch on 127.0.0.1:0. It panics if no port can
// be opened, like httptest.NewServer.
func NewServer(opts Options) *Server {
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = DefaultClientSecret
	}
	if opts.BroadcasterID == "" {
		opts.BroadcasterID = DefaultBroadcasterID
	}
	if opts.BroadcasterLogin == "" {
		opts.BroadcasterLogin = DefaultBroadcasterLogin
	}
	if opts.AccessTokenTTL <= 0 {
		opts.AccessTokenTTL = 4 * time.Hour
	}
	if opts.AppTokenTTL <= 0 {
		opts.AppTokenTTL = 60 * 24 * time.Hour
	}
	if opts.RateLimit <= 0 {
		opts.RateLimit = 800
	}
	s := &Server{
		opts:        opts,
		users:       map[string]*User{},
		subs:        map[string]Sub{},
		codes:       map[string]*code{},
		access:      map[string]*grant{},
		refresh:     map[string]*grant{},
		authByState: map[string]string{},
		faults:      map[string][]int{},
		windows:     map[string]*window{},
	}
	s.users[opts.BroadcasterID] = &User{ID: opts.BroadcasterID, Login: opts.BroadcasterLogin}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		panic("twitchtest: failed to listen on 127.0.0.1: " + err.Error())
	}
	s.hs = &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(s.serveHTTP)}}
	s.hs.Start()
	s.URL = s.hs.URL
	return s
}

// Close shuts the server down, after stopping EventSub verifications in
// flight.
func (s *Server) Close() {
	s.closeEventSub()
	s.hs.Close()
}

// AuthURL returns the OAuth base URL, URL + "/oauth2", the value of
// SUBROLE_TWITCH_AUTH_URL.
func (s *Server) AuthURL() string { return s.URL + "/oauth2" }

// HelixURL returns the Helix base URL, URL + "/helix", the value of
// SUBROLE_TWITCH_API_URL.
func (s *Server) HelixURL() string { return s.URL + "/helix" }

// ClientID returns the application's client id.
func (s *Server) ClientID() string { return s.opts.ClientID }

// ClientSecret returns the application's client secret.
func (s *Server) ClientSecret() string { return s.opts.ClientSecret }

// BroadcasterID returns the broadcaster's user id.
func (s *Server) BroadcasterID() string { return s.opts.BroadcasterID }

// Sender returns an EventSub Sender for the fake's channel and application
// that posts to callback, signing with secret.
func (s *Server) Sender(callback, secret string) *Sender {
	return &Sender{Callback: callback, Secret: secret, Now: s.opts.Now, BroadcasterID: s.opts.BroadcasterID,
		BroadcasterLogin: s.opts.BroadcasterLogin, ClientID: s.opts.ClientID}
}

func (s *Server) now() time.Time {
	if s.opts.Now != nil {
		return s.opts.Now()
	}
	return time.Now()
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf("twitchtest: "+format, args...)
	}
}

// --- state ---

// AddUser adds or replaces a Twitch user.
func (s *Server) AddUser(id, login string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[id] = &User{ID: id, Login: login}
}

// Subscribe makes userID a subscriber of the broadcaster at tier ("1000",
// "2000", "3000"), replacing an earlier subscription. A gift names its
// gifter, or "" for an anonymous gift.
func (s *Server) Subscribe(userID, tier string, isGift bool, gifterID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs[userID] = Sub{UserID: userID, Tier: tier, IsGift: isGift, GifterID: gifterID}
	s.sorted = nil
}

// Unsubscribe ends userID's subscription.
func (s *Server) Unsubscribe(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, userID)
	s.sorted = nil
}

// SetAuthorizingUser sets the Twitch user who "logs in" and approves at
// the authorize endpoint, for every state without its own AuthorizeAs.
// Empty makes the authorize endpoint deny.
func (s *Server) SetAuthorizingUser(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authUser = userID
}

// AuthorizeAs sets who approves the authorization carrying state; an empty
// userID denies it (error=access_denied).
func (s *Server) AuthorizeAs(state, userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authByState[state] = userID
}

// SetDenying makes every authorization be denied, as when the user clicks
// Cancel on Twitch's consent page, until it is set back to false.
func (s *Server) SetDenying(deny bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denying = deny
}

// IssueToken mints a user token pair for userID with scopes, as if the user
// had authorized the application.
func (s *Server) IssueToken(userID string, scopes ...string) Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.newGrantLocked(userID, scopes, true)
	return Token{AccessToken: g.access, RefreshToken: g.refresh, Expires: g.expires, Scopes: slices.Clone(scopes)}
}

// ExpireAccessTokens makes every access token of userID (all users if "")
// expired, as time passing would.
func (s *Server) ExpireAccessTokens(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.access {
		if userID == "" || g.userID == userID {
			g.expires = s.now().Add(-time.Second)
		}
	}
}

// RevokeUser revokes every token of userID, as when the user disconnects
// the application in their Twitch settings: access and refresh tokens stop
// working; the EventSub subscriptions that needed the user's authorization
// become authorization_revoked, each posting a signed revocation to its
// callback; and every enabled user.authorization.revoke subscription is
// sent the notification. The deliveries are made before it returns.
func (s *Server) RevokeUser(userID string) {
	s.mu.Lock()
	for _, g := range s.access {
		if g.userID == userID {
			g.revoked = true
		}
	}
	for _, g := range s.refresh {
		if g.userID == userID {
			g.revoked = true
		}
	}
	revoked := s.revokeAuthorizationLocked(userID)
	login := ""
	if u := s.users[userID]; u != nil {
		login = u.Login
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, sub := range revoked {
		s.deliver(ctx, sub, func(snd *Sender) Message { return snd.Revocation(sub.Type, StatusAuthorizationRevoke) })
	}
	s.Publish(ctx, func(snd *Sender) Message { return snd.AuthRevoke(userID, login) }) // none enabled: nothing to tell
}

// ValidAccessTokens returns how many unexpired, unrevoked access tokens
// userID holds (app tokens when userID is "").
func (s *Server) ValidAccessTokens(userID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.access {
		if g.userID == userID && !g.revoked && s.now().Before(g.expires) {
			n++
		}
	}
	return n
}

// FailNext makes the next len(statuses) requests to path (e.g.
// "/oauth2/token", "/helix/subscriptions/user") answer those statuses with
// Twitch's error body, in order. A 429 carries Ratelimit-Remaining 0 and a
// reset one second ahead. A path may start with a method ("POST
// /helix/eventsub/subscriptions") to fail only requests with that method;
// those are used before faults of the bare path.
func (s *Server) FailNext(path string, statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[path] = append(s.faults[path], statuses...)
}

// --- calls ---

// Calls returns every recorded request.
func (s *Server) Calls() []Call {
	s.callsMu.Lock()
	defer s.callsMu.Unlock()
	return slices.Clone(s.calls)
}

// CallsTo returns the recorded requests with method (any if "") to path.
func (s *Server) CallsTo(method, path string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if (method == "" || c.Method == method) && c.Path == path {
			out = append(out, c)
		}
	}
	return out
}

// ResetCalls forgets the recorded requests; Seq numbering continues.
func (s *Server) ResetCalls() {
	s.callsMu.Lock()
	defer s.callsMu.Unlock()
	s.calls = nil
}

// WaitForCall returns the first recorded request that match accepts,
// waiting for one until ctx is done.
func (s *Server) WaitForCall(ctx context.Context, match func(Call) bool) (Call, error) {
	for {
		s.callsMu.Lock()
		for _, c := range s.calls {
			if match(c) {
				s.callsMu.Unlock()
				return c, nil
			}
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.callsMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return Call{}, fmt.Errorf("twitchtest: wait for call: %w", ctx.Err())
		}
	}
}

func (s *Server) record(c Call) {
	s.callsMu.Lock()
	defer s.callsMu.Unlock()
	c.Seq = s.seq
	s.seq++
	s.calls = append(s.calls, c)
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// --- HTTP ---

// reply is a response; body is JSON unless nil.
type reply struct {
	status   int
	body     any
	header   http.Header
	redirect string
}

func errBody(status int, msg string) reply {
	return reply{status: status, body: map[string]any{"status": status, "message": msg}}
}

// helixErr is Helix's error body, which also names the status.
func helixErr(status int, msg string) reply {
	return reply{status: status, body: map[string]any{"error": http.StatusText(status), "status": status, "message": msg}}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	var form url.Values
	var body []byte
	if r.Method == http.MethodPost {
		body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			form, _ = url.ParseQuery(string(body))
		}
	}
	var res reply
	if r.URL.Path == "/helix/eventsub/subscriptions" { // three methods on one path
		if f, ok := s.fault(r.Method, r.URL.Path, now); ok {
			res = f
		} else {
			res = s.helixEventSub(r, body, now)
		}
	} else {
		res = s.route(r, form, now)
	}
	s.record(Call{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Form: form, Header: r.Header.Clone(),
		Status: res.status, Time: now})
	s.logf("%s %s -> %d", r.Method, r.URL.Path, res.status)
	for k, v := range res.header {
		w.Header()[k] = v
	}
	if res.redirect != "" {
		w.Header().Set("Location", res.redirect)
		w.WriteHeader(res.status)
		return
	}
	if res.body == nil {
		w.WriteHeader(res.status)
		return
	}
	data, _ := json.Marshal(res.body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(res.status)
	w.Write(data)
}

func (s *Server) route(r *http.Request, form url.Values, now time.Time) reply {
	type handler struct {
		method string
		fn     func(*http.Request, url.Values, time.Time) reply
	}
	routes := map[string]handler{
		"/oauth2/authorize":         {http.MethodGet, s.authorize},
		"/oauth2/token":             {http.MethodPost, s.token},
		"/oauth2/validate":          {http.MethodGet, s.validate},
		"/oauth2/revoke":            {http.MethodPost, s.revoke},
		"/helix/users":              {http.MethodGet, s.helixUsers},
		"/helix/subscriptions/user": {http.MethodGet, s.helixUserSubscription},
		"/helix/subscriptions":      {http.MethodGet, s.helixSubscriptions},
	}
	h, ok := routes[r.URL.Path]
	if !ok {
		return errBody(http.StatusNotFound, "Not Found")
	}
	if r.Method != h.method {
		return errBody(http.StatusMethodNotAllowed, "Method Not Allowed")
	}
	if f, ok := s.fault(r.Method, r.URL.Path, now); ok {
		return f
	}
	return h.fn(r, form, now)
}

// fault returns the injected failure for a request to path, if any.
func (s *Server) fault(method, path string, now time.Time) (reply, bool) {
	s.mu.Lock()
	key := method + " " + path
	q := s.faults[key]
	if len(q) == 0 {
		key = path
		q = s.faults[key]
	}
	if len(q) == 0 {
		s.mu.Unlock()
		return reply{}, false
	}
	status := q[0]
	s.faults[key] = q[1:]
	s.mu.Unlock()
	if status == http.StatusTooManyRequests {
		res := helixErr(status, "")
		res.header = rateHeaders(s.opts.RateLimit, 0, now.Add(time.Second))
		return res, true
	}
	if strings.HasPrefix(path, "/helix/") {
		return helixErr(status, "injected failure"), true
	}
	return errBody(status, "injected failure"), true
}

func rateHeaders(limit, remaining int, reset time.Time) http.Header {
	h := http.Header{}
	h.Set("Ratelimit-Limit", strconv.Itoa(limit))
	h.Set("Ratelimit-Remaining", strconv.Itoa(remaining))
	// Whole seconds, rounded up: the budget is back by then, as with Twitch.
	h.Set("Ratelimit-Reset", strconv.FormatInt((reset.UnixNano()+int64(time.Second)-1)/int64(time.Second), 10))
	return h
}

func randomToken() string {
	var b [20]byte
	rand.Read(b[:])
	return strings.ToLower(base32NoPad(b[:]))
}

func base32NoPad(b []byte) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	var out strings.Builder
	var buf, bits uint
	for _, c := range b {
		buf = buf<<8 | uint(c)
		bits += 8
		for bits >= 5 {
			out.WriteByte(alphabet[buf>>(bits-5)&31])
			bits -= 5
		}
	}
	if bits > 0 {
		out.WriteByte(alphabet[buf<<(5-bits)&31])
	}
	return out.String()
}

// newGrantLocked issues a token; the caller holds s.mu.
func (s *Server) newGrantLocked(userID string, scopes []string, withRefresh bool) *grant {
	ttl := s.opts.AccessTokenTTL
	if userID == "" {
		ttl = s.opts.AppTokenTTL
	}
	g := &grant{userID: userID, scopes: slices.Clone(scopes), access: randomToken(), expires: s.now().Add(ttl)}
	if withRefresh {
		g.refresh = randomToken() + randomToken()
		s.refresh[g.refresh] = g
	}
	s.access[g.access] = g
	return g
}

func (s *Server) tokenReply(g *grant) reply {
	body := map[string]any{"access_token": g.access, "expires_in": int(g.expires.Sub(s.now()).Seconds()), "token_type": "bearer"}
	if g.refresh != "" {
		body["refresh_token"] = g.refresh
	}
	if g.userID != "" {
		body["scope"] = append([]string{}, g.scopes...)
	}
	return reply{status: http.StatusOK, body: body}
}

// --- OAuth ---

func (s *Server) authorize(r *http.Request, _ url.Values, now time.Time) reply {
	q := r.URL.Query()
	if q.Get("client_id") != s.opts.ClientID {
		return errBody(http.StatusBadRequest, "invalid client")
	}
	if q.Get("response_type") != "code" {
		return errBody(http.StatusBadRequest, "unsupported response_type")
	}
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme == "" || redirect.Host == "" {
		return errBody(http.StatusBadRequest, "Parameter redirect_uri does not match registered URI")
	}
	state := q.Get("state")
	scopes := strings.Fields(q.Get("scope"))
	s.mu.Lock()
	user, ok := s.authByState[state]
	if !ok {
		user = s.authUser
	}
	if s.denying {
		user = ""
	}
	_, known := s.users[user]
	out := redirect.Query()
	if user == "" || !known {
		s.mu.Unlock()
		out.Set("error", "access_denied")
		out.Set("error_description", "The user denied you access")
	} else {
		c := &code{value: randomToken(), userID: user, redirectURI: redirect.String(), scopes: scopes, expires: now.Add(10 * time.Minute)}
		s.codes[c.value] = c
		s.mu.Unlock()
		out.Set("code", c.value)
		out.Set("scope", strings.Join(scopes, " "))
	}
	if state != "" {
		out.Set("state", state)
	}
	redirect.RawQuery = out.Encode()
	return reply{status: http.StatusFound, redirect: redirect.String()}
}

func (s *Server) token(_ *http.Request, form url.Values, now time.Time) reply {
	if form.Get("client_id") != s.opts.ClientID {
		return errBody(http.StatusBadRequest, "invalid client")
	}
	if form.Get("client_secret") != s.opts.ClientSecret {
		return errBody(http.StatusForbidden, "invalid client secret")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch form.Get("grant_type") {
	case "authorization_code":
		c := s.codes[form.Get("code")]
		if c == nil || c.used || !now.Before(c.expires) || c.redirectURI != form.Get("redirect_uri") {
			return errBody(http.StatusBadRequest, "Invalid authorization code")
		}
		c.used = true
		return s.tokenReply(s.newGrantLocked(c.userID, c.scopes, true))
	case "refresh_token":
		old := s.refresh[form.Get("refresh_token")]
		if old == nil || old.revoked {
			return errBody(http.StatusBadRequest, "Invalid refresh token")
		}
		delete(s.refresh, old.refresh) // refresh tokens rotate: the old one is spent
		return s.tokenReply(s.newGrantLocked(old.userID, old.scopes, true))
	case "client_credentials":
		return s.tokenReply(s.newGrantLocked("", nil, false))
	}
	return errBody(http.StatusBadRequest, "unsupported grant type")
}

// grantFor returns the live grant of an access token; the caller holds s.mu.
func (s *Server) grantForLocked(tok string) *grant {
	g := s.access[tok]
	if g == nil || g.revoked || !s.now().Before(g.expires) {
		return nil
	}
	return g
}

func (s *Server) validate(r *http.Request, _ url.Values, now time.Time) reply {
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "OAuth ")
	if !ok {
		tok, _ = strings.CutPrefix(auth, "Bearer ")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.grantForLocked(tok)
	if g == nil {
		return errBody(http.StatusUnauthorized, "invalid access token")
	}
	body := map[string]any{"client_id": s.opts.ClientID, "scopes": append([]string{}, g.scopes...),
		"expires_in": int(g.expires.Sub(now).Seconds())}
	if g.userID != "" {
		body["user_id"], body["login"] = g.userID, s.users[g.userID].Login
	}
	return reply{status: http.StatusOK, body: body}
}

func (s *Server) revoke(_ *http.Request, form url.Values, _ time.Time) reply {
	if form.Get("client_id") != s.opts.ClientID {
		return errBody(http.StatusNotFound, "client does not exist")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.access[form.Get("token")]
	if g == nil || g.revoked {
		return errBody(http.StatusBadRequest, "Invalid token")
	}
	g.revoked = true
	if g.refresh != "" {
		delete(s.refresh, g.refresh)
	}
	return reply{status: http.StatusOK}
}

// --- Helix ---

// helixAuth checks the Client-Id and bearer token and charges one point.
// It returns the grant, or the error reply; h carries the rate headers.
func (s *Server) helixAuth(r *http.Request, now time.Time) (*grant, http.Header, *reply) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.grantForLocked(tok)
	if g == nil {
		res := helixErr(http.StatusUnauthorized, "Invalid OAuth token")
		return nil, nil, &res
	}
	if r.Header.Get("Client-Id") != s.opts.ClientID {
		res := helixErr(http.StatusUnauthorized, "Client ID and OAuth token do not match")
		return nil, nil, &res
	}
	key := "app"
	if g.userID != "" {
		key = "user:" + g.userID
	}
	w := s.windows[key]
	span := s.opts.RateWindow
	if span <= 0 {
		span = time.Minute
	}
	if w == nil || !now.Before(w.start.Add(span)) {
		w = &window{start: now}
		s.windows[key] = w
	}
	reset := w.start.Add(span)
	if w.used >= s.opts.RateLimit {
		res := helixErr(http.StatusTooManyRequests, "")
		res.header = rateHeaders(s.opts.RateLimit, 0, reset)
		return nil, nil, &res
	}
	w.used++
	return g, rateHeaders(s.opts.RateLimit, s.opts.RateLimit-w.used, reset), nil
}

func (s *Server) helix(r *http.Request, now time.Time, fn func(g *grant) reply) reply {
	g, h, bad := s.helixAuth(r, now)
	if bad != nil {
		return *bad
	}
	res := fn(g)
	if res.header == nil {
		res.header = h
	}
	return res
}

func hasScope(g *grant, scope string) bool { return slices.Contains(g.scopes, scope) }

func (u *User) json() map[string]any {
	name := u.DisplayName
	if name == "" {
		name = u.Login
	}
	return map[string]any{"id": u.ID, "login": u.Login, "display_name": name, "type": "", "broadcaster_type": "",
		"description": "", "profile_image_url": "", "offline_image_url": "", "view_count": 0,
		"created_at": "2016-12-14T20:32:28Z"}
}

func (s *Server) helixUsers(r *http.Request, _ url.Values, now time.Time) reply {
	return s.helix(r, now, func(g *grant) reply {
		q := r.URL.Query()
		ids, logins := q["id"], q["login"]
		if len(ids)+len(logins) > 100 {
			return helixErr(http.StatusBadRequest, "The sum of the id and login query parameters must not exceed 100")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		data := []any{}
		if len(ids)+len(logins) == 0 {
			if g.userID == "" {
				return helixErr(http.StatusBadRequest, "Must provide an ID, Login or OAuth Token")
			}
			if u := s.users[g.userID]; u != nil {
				data = append(data, u.json())
			}
		}
		for _, id := range ids {
			if u := s.users[id]; u != nil {
				data = append(data, u.json())
			}
		}
		for _, l := range logins {
			for _, u := range s.users {
				if u.Login == l {
					data = append(data, u.json())
				}
			}
		}
		return reply{status: http.StatusOK, body: map[string]any{"data": data}}
	})
}

// subJSON is one item of GET /subscriptions; the caller holds s.mu.
func (s *Server) subJSON(sub Sub) map[string]any {
	b := s.users[s.opts.BroadcasterID]
	m := map[string]any{"broadcaster_id": b.ID, "broadcaster_login": b.Login, "broadcaster_name": b.Login,
		"gifter_id": "", "gifter_login": "", "gifter_name": "", "is_gift": sub.IsGift,
		"plan_name": "Channel Subscription (" + b.Login + ")", "tier": sub.Tier, "user_id": sub.UserID,
		"user_login": "", "user_name": ""}
	if u := s.users[sub.UserID]; u != nil {
		m["user_login"], m["user_name"] = u.Login, u.Login
	}
	if gf := s.users[sub.GifterID]; sub.IsGift && gf != nil {
		m["gifter_id"], m["gifter_login"], m["gifter_name"] = gf.ID, gf.Login, gf.Login
	}
	return m
}

func (s *Server) helixUserSubscription(r *http.Request, _ url.Values, now time.Time) reply {
	return s.helix(r, now, func(g *grant) reply {
		q := r.URL.Query()
		switch {
		case q.Get("broadcaster_id") == "":
			return helixErr(http.StatusBadRequest, `Missing required parameter "broadcaster_id"`)
		case q.Get("user_id") == "":
			return helixErr(http.StatusBadRequest, `Missing required parameter "user_id"`)
		case g.userID == "" || !hasScope(g, ScopeUserSubscriptions):
			return helixErr(http.StatusUnauthorized, "Missing scope: "+ScopeUserSubscriptions)
		case q.Get("user_id") != g.userID:
			return helixErr(http.StatusUnauthorized, "The ID in user_id must match the user ID found in the request's OAuth token.")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		sub, ok := s.subs[g.userID]
		if !ok || q.Get("broadcaster_id") != s.opts.BroadcasterID {
			login := g.userID
			if u := s.users[g.userID]; u != nil {
				login = u.Login
			}
			return helixErr(http.StatusNotFound, login+" has no subscription to "+s.opts.BroadcasterLogin)
		}
		full := s.subJSON(sub)
		item := map[string]any{"broadcaster_id": full["broadcaster_id"], "broadcaster_name": full["broadcaster_name"],
			"broadcaster_login": full["broadcaster_login"], "is_gift": sub.IsGift, "tier": sub.Tier}
		if sub.IsGift {
			item["gifter_login"], item["gifter_name"] = full["gifter_login"], full["gifter_name"]
		}
		return reply{status: http.StatusOK, body: map[string]any{"data": []any{item}}}
	})
}

func (s *Server) helixSubscriptions(r *http.Request, _ url.Values, now time.Time) reply {
	return s.helix(r, now, func(g *grant) reply {
		q := r.URL.Query()
		first := 20
		if v := q.Get("first"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 100 {
				return helixErr(http.StatusBadRequest, "The parameter \"first\" was malformed: the value must be less than or equal to 100")
			}
			first = n
		}
		switch {
		case q.Get("broadcaster_id") == "":
			return helixErr(http.StatusBadRequest, `Missing required parameter "broadcaster_id"`)
		case len(q["user_id"]) > 100:
			return helixErr(http.StatusBadRequest, "The number of user_id parameters must not exceed 100")
		case g.userID == "" || !hasScope(g, ScopeChannelSubscriptions):
			return helixErr(http.StatusUnauthorized, "Missing scope: "+ScopeChannelSubscriptions)
		case q.Get("broadcaster_id") != g.userID:
			return helixErr(http.StatusUnauthorized, "The ID in broadcaster_id must match the user ID found in the request's OAuth token.")
		}
		offset := 0
		if c := q.Get("after"); c != "" {
			b, err := base64.RawURLEncoding.DecodeString(c)
			n, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "offset:"))
			if err != nil || err2 != nil || !strings.HasPrefix(string(b), "offset:") || n < 0 {
				return helixErr(http.StatusBadRequest, "Invalid cursor")
			}
			offset = n
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		all, points := s.sortedSubsLocked()
		data := []any{}
		pagination := map[string]any{}
		if ids := q["user_id"]; len(ids) > 0 {
			for _, id := range ids {
				if sub, ok := s.subs[id]; ok {
					data = append(data, s.subJSON(sub))
				}
			}
		} else {
			end := min(offset+first, len(all))
			for _, sub := range all[min(offset, len(all)):end] {
				data = append(data, s.subJSON(sub))
			}
			if end < len(all) {
				pagination["cursor"] = base64.RawURLEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(end)))
			}
		}
		return reply{status: http.StatusOK, body: map[string]any{"data": data, "pagination": pagination,
			"total": len(all), "points": points}}
	})
}

// sortedSubsLocked returns the subscriptions ordered by user id and their
// points, sorted once after each change, so that paging through 100,000
// subscribers costs one sort, not one per page. The caller holds s.mu.
func (s *Server) sortedSubsLocked() ([]Sub, int) {
	if s.sorted == nil {
		s.sorted = make([]Sub, 0, len(s.subs))
		s.points = 0
		for _, sub := range s.subs {
			s.sorted = append(s.sorted, sub)
			s.points += map[string]int{"1000": 1, "2000": 2, "3000": 6}[sub.Tier]
		}
		slices.SortFunc(s.sorted, func(a, b Sub) int { return strings.Compare(a.UserID, b.UserID) })
	}
	return s.sorted, s.points
}
