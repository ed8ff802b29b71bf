package twitch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch"
	"github.com/subrole/subrole/twitch/twitchtest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type fixture struct {
	tw    *twitchtest.Server
	c     *twitch.Client
	db    *store.Store
	b     *twitch.Broadcaster
	clock *clock
	logs  *syncBuffer
}

// newFixture starts a fake Twitch and a Broadcaster whose stored token was
// issued with scopes and expires at expires (by the broadcaster's clock).
func newFixture(t *testing.T, expires time.Duration, scopes ...string) (*fixture, twitchtest.Token) {
	t.Helper()
	f := &fixture{tw: twitchtest.NewServer(twitchtest.Options{}), clock: &clock{t: time.Now()}, logs: &syncBuffer{}}
	t.Cleanup(f.tw.Close)
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	f.c, err = twitch.New(twitch.Config{ClientID: f.tw.ClientID(), ClientSecret: f.tw.ClientSecret(),
		AuthURL: f.tw.AuthURL(), APIURL: f.tw.HelixURL(), Now: f.clock.Now, Logger: log, MaxRateWait: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f.db, err = store.Open(filepath.Join(t.TempDir(), "subrole.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.db.Close() })
	var tok twitchtest.Token
	if scopes != nil {
		tok = f.tw.IssueToken(f.tw.BroadcasterID(), scopes...)
		err = f.db.Update(context.Background(), func(tx subrole.Tx) error {
			return tx.PutBroadcasterToken(subrole.BroadcasterToken{UserID: f.tw.BroadcasterID(), Login: "cooler_user",
				AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expires: f.clock.Now().Add(expires),
				Scopes: scopes, Connected: f.clock.Now()})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	f.b = twitch.NewBroadcaster(twitch.BroadcasterConfig{Client: f.c, Store: f.db, BroadcasterID: f.tw.BroadcasterID(),
		ConnectURL: "https://subs.example/broadcaster/connect", Now: f.clock.Now, Logger: log})
	return f, tok
}

func refreshes(tw *twitchtest.Server) int {
	n := 0
	for _, c := range tw.CallsTo("POST", "/oauth2/token") {
		if c.Form.Get("grant_type") == "refresh_token" {
			n++
		}
	}
	return n
}

func (f *fixture) stored(t *testing.T) subrole.BroadcasterToken {
	t.Helper()
	var tok subrole.BroadcasterToken
	f.db.View(context.Background(), func(tx subrole.Tx) error {
		var err error
		tok, err = tx.BroadcasterToken()
		return err
	})
	return tok
}

func TestExpiredTokenRefreshedOnceUnderConcurrentUse(t *testing.T) {
	f, old := newFixture(t, -time.Minute, twitchtest.ScopeChannelSubscriptions)
	f.tw.AddUser("500001", "alice_tv")
	f.tw.Subscribe("500001", "1000", false, "")
	var wg sync.WaitGroup
	tokens := make([]string, 20)
	errs := make([]error, 20)
	for i := range 20 {
		wg.Go(func() {
			if i%2 == 0 {
				tokens[i], errs[i] = f.b.Token(context.Background())
			} else {
				var subs []subrole.HelixSubscription
				subs, errs[i] = f.b.Subscribers(context.Background(), []string{"500001"})
				if errs[i] == nil && (len(subs) != 1 || subs[0].Tier != subrole.Tier1) {
					errs[i] = fmt.Errorf("subs %+v", subs)
				}
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	if n := refreshes(f.tw); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
	for i := 0; i < 20; i += 2 {
		if tokens[i] != tokens[0] || tokens[i] == old.AccessToken {
			t.Fatalf("callers got different or old tokens: %q", tokens)
		}
	}
	// The rotated refresh token was stored before it was used.
	st := f.stored(t)
	if st.RefreshToken == old.RefreshToken || st.AccessToken != tokens[0] || !st.Expires.After(f.clock.Now()) || st.Refreshed.IsZero() {
		t.Fatalf("stored token not updated: %v", st)
	}
	if s := f.b.Status(); s.State != twitch.StateConnected || s.Problem() != "" {
		t.Fatalf("status %+v", s)
	}
	// A fresh token is not refreshed again.
	if _, err := f.b.Token(context.Background()); err != nil || refreshes(f.tw) != 1 {
		t.Fatalf("second use: %v, %d refreshes", err, refreshes(f.tw))
	}
	for _, secret := range []string{old.AccessToken, old.RefreshToken, st.AccessToken, st.RefreshToken} {
		if strings.Contains(f.logs.String(), secret) {
			t.Fatal("a token is in the log")
		}
	}
}

func TestRevokedRefreshTokenIsAnErrorState(t *testing.T) {
	f, tok := newFixture(t, -time.Minute, twitchtest.ScopeChannelSubscriptions)
	f.tw.RevokeUser(f.tw.BroadcasterID())
	_, err := f.b.Token(context.Background())
	if !errors.Is(err, twitch.ErrNotConnected) || !errors.Is(err, twitch.ErrInvalidGrant) {
		t.Fatalf("err = %v", err)
	}
	s := f.b.Status()
	if s.State != twitch.StateRevoked || !strings.Contains(s.Problem(), "https://subs.example/broadcaster/connect") || s.Error == "" {
		t.Fatalf("status %+v", s)
	}
	if !strings.Contains(f.logs.String(), "level=ERROR") || !strings.Contains(f.logs.String(), "refresh token was rejected") {
		t.Fatalf("no error log:\n%s", f.logs)
	}
	// Later calls fail at once, without asking Twitch again.
	before := len(f.tw.Calls())
	for range 3 {
		if _, err := f.b.Subscribers(context.Background(), []string{"1"}); !errors.Is(err, twitch.ErrNotConnected) {
			t.Fatalf("err = %v", err)
		}
	}
	if n := len(f.tw.Calls()) - before; n != 0 {
		t.Fatalf("%d more calls to Twitch after the refresh token was rejected", n)
	}
	if strings.Contains(f.logs.String(), tok.RefreshToken) {
		t.Fatal("the refresh token is in the log")
	}
	// Connecting again clears the state.
	nt := f.tw.IssueToken(f.tw.BroadcasterID(), twitchtest.ScopeChannelSubscriptions)
	f.b.Connected(subrole.BroadcasterToken{UserID: f.tw.BroadcasterID(), AccessToken: nt.AccessToken, RefreshToken: nt.RefreshToken,
		Expires: f.clock.Now().Add(time.Hour), Scopes: nt.Scopes})
	if _, err := f.b.Subscribers(context.Background(), []string{"1"}); err != nil || f.b.Status().State != twitch.StateConnected {
		t.Fatalf("after reconnecting: %v %+v", err, f.b.Status())
	}
}

func TestMissingScopeDoesNotLoop(t *testing.T) {
	f, _ := newFixture(t, time.Hour, "user:read:email")
	_, err := f.b.Subscribers(context.Background(), []string{"1"})
	if !errors.Is(err, twitch.ErrMissingScope) {
		t.Fatalf("err = %v", err)
	}
	if n, r := len(f.tw.CallsTo("GET", "/helix/subscriptions")), refreshes(f.tw); n != 1 || r != 0 {
		t.Fatalf("%d Helix calls and %d refreshes for a missing scope, want 1 and 0", n, r)
	}
	if s := f.b.Status(); s.State != twitch.StateMissingScope || !strings.Contains(s.Problem(), "approve every permission") {
		t.Fatalf("status %+v", s)
	}
	if _, err := f.b.Subscribers(context.Background(), []string{"1"}); !errors.Is(err, twitch.ErrNotConnected) {
		t.Fatalf("second call: %v", err)
	}
	if n := len(f.tw.CallsTo("GET", "/helix/subscriptions")); n != 1 {
		t.Fatalf("%d Helix calls, want still 1", n)
	}
}

func TestUnauthorizedRefreshesOnceThenGivesUp(t *testing.T) {
	f, _ := newFixture(t, time.Hour, twitchtest.ScopeChannelSubscriptions)
	// Twitch forgot the access token although it has not expired locally.
	f.tw.ExpireAccessTokens(f.tw.BroadcasterID())
	if _, err := f.b.Subscribers(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if n, r := len(f.tw.CallsTo("GET", "/helix/subscriptions")), refreshes(f.tw); n != 2 || r != 1 {
		t.Fatalf("%d Helix calls, %d refreshes; want 2 and 1", n, r)
	}
	// Twitch rejects every token: one refresh, one retry, then the error.
	f.tw.FailNext("/helix/subscriptions", 401, 401, 401)
	_, err := f.b.Subscribers(context.Background(), nil)
	if !errors.Is(err, twitch.ErrUnauthorized) {
		t.Fatalf("err = %v", err)
	}
	if n, r := len(f.tw.CallsTo("GET", "/helix/subscriptions")), refreshes(f.tw); n != 4 || r != 2 {
		t.Fatalf("%d Helix calls, %d refreshes; want 4 and 2", n, r)
	}
}

func TestValidateAndRun(t *testing.T) {
	f, _ := newFixture(t, 5*time.Minute, twitchtest.ScopeChannelSubscriptions)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.b.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for f.b.Status().LastValidated.IsZero() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	s := f.b.Status()
	// Expiring within RefreshBefore: refreshed, then validated.
	if s.LastValidated.IsZero() || refreshes(f.tw) != 1 || len(f.tw.CallsTo("GET", "/oauth2/validate")) != 1 || s.State != twitch.StateConnected {
		t.Fatalf("status %+v, %d refreshes", s, refreshes(f.tw))
	}

	// Not connected: Run warns how to connect and calls nobody.
	g, _ := newFixture(t, 0)
	ctx, cancel = context.WithCancel(context.Background())
	go func() { done <- g.b.Run(ctx) }()
	for !strings.Contains(g.logs.String(), "not connected") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if !strings.Contains(g.logs.String(), "level=WARN") || !strings.Contains(g.logs.String(), "https://subs.example/broadcaster/connect") {
		t.Fatalf("logs:\n%s", g.logs)
	}
	if len(g.tw.Calls()) != 0 || g.b.Status().State != twitch.StateNotConnected {
		t.Fatal("called Twitch without a token")
	}
}

func TestAllSubscribersPages(t *testing.T) {
	f, _ := newFixture(t, time.Hour, twitchtest.ScopeChannelSubscriptions)
	for i := range 250 {
		id := fmt.Sprint(600000 + i)
		f.tw.AddUser(id, "u"+id)
		f.tw.Subscribe(id, []string{"1000", "2000", "3000"}[i%3], i%5 == 0, f.tw.BroadcasterID())
	}
	var pages, total, gifts int
	err := f.b.AllSubscribers(context.Background(), func(page []subrole.HelixSubscription) error {
		pages++
		total += len(page)
		for _, s := range page {
			if s.IsGift {
				gifts++
				if s.GifterID != f.tw.BroadcasterID() || s.GifterLogin != "cooler_user" {
					return fmt.Errorf("gift %+v", s)
				}
			}
		}
		return nil
	})
	if err != nil || pages != 3 || total != 250 || gifts != 50 {
		t.Fatalf("err %v, %d pages, %d subs, %d gifts", err, pages, total, gifts)
	}
	for _, c := range f.tw.CallsTo("GET", "/helix/subscriptions") {
		if c.Query.Get("first") != "100" || c.Header.Get("Client-Id") != f.tw.ClientID() {
			t.Fatalf("request %v", c.Query)
		}
	}
}

func TestRateLimit(t *testing.T) {
	f, _ := newFixture(t, time.Hour, twitchtest.ScopeChannelSubscriptions)
	f.tw.FailNext("/helix/subscriptions", 429)
	start := time.Now()
	if _, err := f.b.Subscribers(context.Background(), []string{"1"}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.tw.CallsTo("GET", "/helix/subscriptions")); n != 2 {
		t.Fatalf("%d calls, want a retry after the 429", n)
	}
	calls := f.tw.CallsTo("GET", "/helix/subscriptions")
	if gap := calls[1].Time.Sub(calls[0].Time); gap < 10*time.Millisecond {
		t.Fatalf("retried after %s without waiting for the reset (took %s)", gap, time.Since(start))
	}
	// Three 429s in a row: the third is returned, as unavailable.
	f.tw.FailNext("/helix/subscriptions", 429, 429, 429)
	_, err := f.b.Subscribers(context.Background(), []string{"1"})
	var ae *twitch.APIError
	if !errors.As(err, &ae) || !ae.Temporary() || ae.Status != 429 {
		t.Fatalf("err = %v", err)
	}
}

func TestAppToken(t *testing.T) {
	f, _ := newFixture(t, 0)
	ctx := context.Background()
	a, err := f.c.AppToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := f.c.AppToken(ctx); b != a || len(f.tw.CallsTo("POST", "/oauth2/token")) != 1 {
		t.Fatal("the app token was not reused")
	}
	// Expiry renews it.
	f.clock.Add(61 * 24 * time.Hour)
	b, err := f.c.AppToken(ctx)
	if err != nil || b == a {
		t.Fatalf("expired app token not renewed: %v", err)
	}
	// A 401 renews it once.
	var seen []string
	err = f.c.WithAppToken(ctx, func(tok string) error {
		seen = append(seen, tok)
		resp, err := f.c.Helix(ctx, tok).GetUsers(nil)
		if err != nil {
			return err
		}
		if len(seen) == 1 {
			resp.StatusCode, resp.ErrorMessage = 401, "Invalid OAuth token"
		}
		return twitch.HelixError(ctx, "GET /users", &resp.ResponseCommon, nil)
	})
	if len(seen) != 2 || seen[0] == seen[1] {
		t.Fatalf("tokens used %v, err %v", seen, err)
	}
	// Wrong credentials are unauthorized, not temporary.
	bad, _ := twitch.New(twitch.Config{ClientID: f.tw.ClientID(), ClientSecret: "wrong", AuthURL: f.tw.AuthURL(), APIURL: f.tw.HelixURL()})
	if _, err := bad.AppToken(ctx); !errors.Is(err, twitch.ErrUnauthorized) {
		t.Fatalf("wrong secret: %v", err)
	}
}

func TestOAuth(t *testing.T) {
	f, _ := newFixture(t, 0)
	f.tw.AddUser("500001", "alice_tv")
	redirect := "https://subs.example/twitch_callback"
	u := f.c.AuthCodeURL(redirect, "st&ate=1", []string{twitch.ScopeUserSubscriptions}, false)
	p, _ := url.Parse(u)
	q := p.Query()
	if p.Path != "/oauth2/authorize" || q.Get("response_type") != "code" || q.Get("client_id") != f.tw.ClientID() ||
		q.Get("redirect_uri") != redirect || q.Get("scope") != twitch.ScopeUserSubscriptions || q.Get("state") != "st&ate=1" {
		t.Fatalf("authorize URL %s", u)
	}
	f.tw.SetAuthorizingUser("500001")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cb, _ := url.Parse(resp.Header.Get("Location"))
	code := cb.Query().Get("code")
	v, err := f.c.CheckViewer(context.Background(), code, redirect, f.tw.BroadcasterID())
	if err != nil || v.TwitchUserID != "500001" || v.TwitchLogin != "alice_tv" || v.Tier.Valid() {
		t.Fatalf("viewer %+v, %v", v, err)
	}
	if f.tw.ValidAccessTokens("500001") != 0 {
		t.Fatal("viewer token not revoked")
	}
	// A code works once.
	if _, err := f.c.Exchange(context.Background(), code, redirect); !errors.Is(err, twitch.ErrInvalidGrant) {
		t.Fatalf("reused code: %v", err)
	}
	// Validate reports the user and scopes; an invalid token is unauthorized.
	tok := f.tw.IssueToken("500001", twitch.ScopeUserSubscriptions)
	val, err := f.c.Validate(context.Background(), tok.AccessToken)
	if err != nil || val.UserID != "500001" || !val.HasScope(twitch.ScopeUserSubscriptions) {
		t.Fatalf("validate %+v %v", val, err)
	}
	if err := f.c.Revoke(context.Background(), tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Validate(context.Background(), tok.AccessToken); !errors.Is(err, twitch.ErrUnauthorized) {
		t.Fatalf("validate revoked: %v", err)
	}
	// Subscribed viewers report tier and gifter.
	f.tw.Subscribe("500001", "2000", true, f.tw.BroadcasterID())
	tok = f.tw.IssueToken("500001", twitch.ScopeUserSubscriptions)
	s, ok, err := f.c.UserSubscription(context.Background(), tok.AccessToken, f.tw.BroadcasterID(), "500001")
	if err != nil || !ok || s.Tier != subrole.Tier2 || !s.IsGift || s.GifterLogin != "cooler_user" {
		t.Fatalf("sub %+v %v %v", s, ok, err)
	}
	// Twitch down: a temporary error.
	f.tw.FailNext("/oauth2/token", 502)
	_, err = f.c.Exchange(context.Background(), "x", redirect)
	var ae *twitch.APIError
	if !errors.As(err, &ae) || !ae.Temporary() || ae.Status != 502 {
		t.Fatalf("502: %v", err)
	}
}

// holdRefresh holds refresh_token requests until release is closed.
type holdRefresh struct {
	started chan struct{}
	release chan struct{}
}

func (h holdRefresh) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/token") {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if strings.Contains(string(body), "grant_type=refresh_token") {
			close(h.started)
			<-h.release
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestRefreshDoesNotOverwriteANewConnection: the broadcaster connects again
// while a refresh of the old grant is in flight; the old grant's tokens must
// not replace the new ones, in memory or on disk.
func TestRefreshDoesNotOverwriteANewConnection(t *testing.T) {
	f, _ := newFixture(t, -time.Minute, twitchtest.ScopeChannelSubscriptions)
	hold := holdRefresh{started: make(chan struct{}), release: make(chan struct{})}
	c, err := twitch.New(twitch.Config{ClientID: f.tw.ClientID(), ClientSecret: f.tw.ClientSecret(),
		AuthURL: f.tw.AuthURL(), APIURL: f.tw.HelixURL(), Now: f.clock.Now, HTTPClient: &http.Client{Transport: hold}})
	if err != nil {
		t.Fatal(err)
	}
	b := twitch.NewBroadcaster(twitch.BroadcasterConfig{Client: c, Store: f.db, BroadcasterID: f.tw.BroadcasterID(),
		ConnectURL: "https://subs.example/broadcaster/connect", Now: f.clock.Now})
	done := make(chan error, 1)
	go func() { _, err := b.Token(context.Background()); done <- err }()
	<-hold.started

	// Meanwhile the broadcaster connects again (the web callback stores it, then tells the Broadcaster).
	fresh := f.tw.IssueToken(f.tw.BroadcasterID(), twitchtest.ScopeChannelSubscriptions)
	newTok := subrole.BroadcasterToken{UserID: f.tw.BroadcasterID(), Login: "cooler_user", AccessToken: fresh.AccessToken,
		RefreshToken: fresh.RefreshToken, Expires: f.clock.Now().Add(4 * time.Hour), Scopes: fresh.Scopes, Connected: f.clock.Now()}
	if err := f.db.Update(context.Background(), func(tx subrole.Tx) error { return tx.PutBroadcasterToken(newTok) }); err != nil {
		t.Fatal(err)
	}
	b.Connected(newTok)
	close(hold.release)
	<-done

	if st := f.stored(t); st.RefreshToken != fresh.RefreshToken {
		t.Fatal("the old grant's refresh overwrote the new connection on disk")
	}
	if got, err := b.Token(context.Background()); err != nil || got != fresh.AccessToken {
		t.Fatalf("token %q %v, want the new connection's", got, err)
	}
}

// TestRunValidatesPeriodically: Run validates at start and again every
// ValidateEvery (an hour in production).
func TestRunValidatesPeriodically(t *testing.T) {
	f, _ := newFixture(t, 4*time.Hour, twitchtest.ScopeChannelSubscriptions)
	b := twitch.NewBroadcaster(twitch.BroadcasterConfig{Client: f.c, Store: f.db, BroadcasterID: f.tw.BroadcasterID(),
		ConnectURL: "https://subs.example/broadcaster/connect", Now: f.clock.Now, ValidateEvery: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for len(f.tw.CallsTo("GET", "/oauth2/validate")) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(f.tw.CallsTo("GET", "/oauth2/validate")); n < 3 {
		t.Fatalf("%d validations, want one at start and more every ValidateEvery", n)
	}
	if b.Status().State != twitch.StateConnected {
		t.Fatalf("status %+v", b.Status())
	}
}

// TestIdentify: a sign-in without scopes says who signed in, and its token
// is revoked at once.
func TestIdentify(t *testing.T) {
	f, _ := newFixture(t, 0)
	f.tw.AddUser("500001", "alice_tv")
	redirect := "https://subs.example/twitch_callback"
	u := f.c.AuthCodeURL(redirect, "state", nil, false)
	p, _ := url.Parse(u)
	if q := p.Query(); !q.Has("scope") || q.Get("scope") != "" {
		t.Fatalf("authorize URL without scopes: %s", u)
	}
	f.tw.SetAuthorizingUser("500001")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cb, _ := url.Parse(resp.Header.Get("Location"))
	id, login, err := f.c.Identify(context.Background(), cb.Query().Get("code"), redirect)
	if err != nil || id != "500001" || login != "alice_tv" {
		t.Fatalf("identify: %q %q %v", id, login, err)
	}
	if f.tw.ValidAccessTokens("500001") != 0 {
		t.Fatal("the sign-in token was not revoked")
	}
	if _, _, err := f.c.Identify(context.Background(), cb.Query().Get("code"), redirect); !errors.Is(err, twitch.ErrInvalidGrant) {
		t.Fatalf("a used code: %v", err)
	}
}
