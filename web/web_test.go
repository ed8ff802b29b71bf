package web_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord"
	"github.com/subrole/subrole/discord/discordtest"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch"
	"github.com/subrole/subrole/twitch/twitchtest"
	"github.com/subrole/subrole/web"
)

const (
	alice = "100000000000000001"
	bob   = "100000000000000002"
	guild = "900000000000000001"
	tv1   = "500001"
	tv2   = "500002"
)

var policy = subrole.Policy{Linked: "1001", Tier1: "1011", Tier2: "1012", Tier3: "1013"}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

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

// env is the real core on bbolt, the real Discord OAuth client against the
// fake Discord, the real Twitch client against the fake Twitch, and the
// pages on a loopback server.
type env struct {
	t        *testing.T
	svc      *subrole.Service
	db       *store.Store
	tw       *twitchtest.Server
	dc       *discordtest.Server
	h        *web.Handler
	url      string
	clock    *clock
	logs     *syncBuffer
	mu       sync.Mutex
	bad      []string
	linked   []subrole.LinkResult
	conn     []subrole.BroadcasterToken
	connects int // OnConnect calls
}

// envOptions change what newEnvWith builds.
type envOptions struct {
	discordSecret  string        // the secret the service uses; empty: the right one
	discordLatency time.Duration // added to every Discord API call
	timeout        time.Duration // web.Config.Timeout; zero: 5 s
	dashboardUsers []string      // web.Config.DashboardUsers
	maxStreams     [2]int        // web.Config.MaxStreams, MaxStreamsPerSession; zero: defaults
	heartbeat      time.Duration // web.Config.Heartbeat; zero: default
	// dashboard wraps the core the dashboard reads through; nil: none.
	dashboard func(web.DashboardCore) web.DashboardCore
	// db is the store to use (another env's: a restart); nil: a new one.
	db *store.Store
}

func newEnv(t *testing.T) *env { return newEnvWith(t, envOptions{}) }

func wrapDashboard(wrap func(web.DashboardCore) web.DashboardCore, core web.DashboardCore) web.DashboardCore {
	if wrap == nil {
		return core
	}
	return wrap(core)
}

func newEnvWith(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{t: time.Now().UTC().Truncate(time.Second)}, logs: &syncBuffer{}}
	db := o.db
	if db == nil {
		var err error
		db, err = store.Open(filepath.Join(t.TempDir(), "subrole.db"), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
	}
	e.db = db
	log := slog.New(slog.NewTextHandler(e.logs, nil))
	e.svc = subrole.NewService(subrole.Config{Store: db, Policy: policy, Now: e.clock.Now, Logger: log})
	e.tw = twitchtest.NewServer(twitchtest.Options{})
	t.Cleanup(e.tw.Close)
	e.tw.AddUser(tv1, "alice_tv")
	e.tw.AddUser(tv2, "bob_tv")
	tc, err := twitch.New(twitch.Config{ClientID: e.tw.ClientID(), ClientSecret: e.tw.ClientSecret(),
		AuthURL: e.tw.AuthURL(), APIURL: e.tw.HelixURL(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	e.dc = discordtest.NewServer(discordtest.Options{Token: "bot-token", Latency: o.discordLatency})
	t.Cleanup(e.dc.Close)
	e.dc.AddMember(alice, "alice")
	e.dc.AddMember(bob, "bob")
	secret := cmp.Or(o.discordSecret, e.dc.ClientSecret)
	dc, err := discord.NewOAuth(context.Background(), discord.OAuthConfig{Origin: e.dc.URL, ClientID: e.dc.ApplicationID, ClientSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(nil)
	e.url = "http://" + srv.Listener.Addr().String()
	e.dc.SetRedirectURIs(e.url + web.DiscordCallbackPath)
	e.h, err = web.New(web.Config{Core: e.svc, Discord: dc, Twitch: tc, PublicURL: e.url, BroadcasterID: e.tw.BroadcasterID(),
		Logger: log, Timeout: cmp.Or(o.timeout, 5*time.Second),
		OnBadRequest: func(_ *http.Request, reason string) { e.mu.Lock(); e.bad = append(e.bad, reason); e.mu.Unlock() },
		OnLinked:     func(r subrole.LinkResult, _ string) { e.mu.Lock(); e.linked = append(e.linked, r); e.mu.Unlock() },
		OnConnect:    func(*http.Request) { e.mu.Lock(); e.connects++; e.mu.Unlock() },
		OnBroadcasterConnected: func(tok subrole.BroadcasterToken) {
			e.mu.Lock()
			e.conn = append(e.conn, tok)
			e.mu.Unlock()
		},
		Dashboard: wrapDashboard(o.dashboard, e.svc), DashboardUsers: o.dashboardUsers, AuditCommitted: db.AuditCommitted(),
		MaxStreams: o.maxStreams[0], MaxStreamsPerSession: o.maxStreams[1], Heartbeat: o.heartbeat,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+web.LinkStartPath, e.h.LinkStart)
	mux.HandleFunc("GET "+web.DiscordCallbackPath, e.h.DiscordCallback)
	mux.HandleFunc("GET "+web.CallbackPath, e.h.Callback)
	mux.HandleFunc("GET "+web.ConnectPath, e.h.Connect)
	mux.HandleFunc("GET "+web.StylePath, e.h.Style)
	mux.HandleFunc("GET "+web.DashboardPath, e.h.Dashboard)
	mux.HandleFunc("GET "+web.DashboardLoginPath, e.h.DashboardLogin)
	mux.HandleFunc("POST "+web.DashboardLogoutPath, e.h.DashboardLogout)
	mux.HandleFunc("GET "+web.DashboardEventsPath, e.h.DashboardEvents)
	mux.HandleFunc("GET "+web.ScriptPath, e.h.Script)
	srv.Config.Handler = mux

	srv.Start()
	t.Cleanup(srv.Close)
	feedCtx, stopFeed := context.WithCancel(context.Background())
	go e.h.RunFeed(feedCtx)
	t.Cleanup(stopFeed)
	t.Cleanup(e.h.EndStreams) // before srv.Close, which waits for open feeds
	return e
}

// browser is one browser with its cookies, signed in to the fake Discord
// as someone (or nobody). It does not follow redirects by itself.
type browser struct {
	e *env
	c *http.Client
}

func (e *env) browser(discordUser string) *browser {
	jar, _ := cookiejar.New(nil)
	if discordUser != "" {
		e.dc.LogIn(jar, discordUser)
	}
	return &browser{e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type result struct {
	status   int
	body     string
	location string
}

// get loads u in the browser without following a redirect.
func (b *browser) get(u string) result {
	b.e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Accept-Language", "en")
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return result{resp.StatusCode, buf.String(), resp.Header.Get("Location")}
}

// next loads u and returns where it redirects, failing the test otherwise.
func (b *browser) next(u string) string {
	b.e.t.Helper()
	r := b.get(u)
	if r.status != http.StatusFound {
		b.e.t.Fatalf("GET %s: status %d, want a redirect\n%s", u, r.status, r.body)
	}
	return r.location
}

// follow loads u and follows redirects to the page they end on.
func (b *browser) follow(u string) result {
	b.e.t.Helper()
	for range 10 {
		r := b.get(u)
		if r.status != http.StatusFound {
			return r
		}
		u = r.location
	}
	b.e.t.Fatal("too many redirects")
	return result{}
}

// get loads u in a fresh browser signed in to nothing.
func (e *env) get(u string) result { e.t.Helper(); return e.browser("").get(u) }

// linkURL runs what /link does for discordUserID and returns the button
// URL and the state.
func (e *env) linkURL(discordUserID string) (string, string) {
	e.t.Helper()
	u, err := e.h.LinkURL(context.Background(), discordUserID, "name-"+discordUserID, guild)
	if err != nil {
		e.t.Fatal(err)
	}
	p, _ := url.Parse(u)
	if !strings.HasPrefix(u, e.url+web.LinkStartPath+"?") {
		e.t.Fatalf("button URL %s is not the service's /link/start", u)
	}
	return u, p.Query().Get("state")
}

// twitchURL opens a button in b and goes through Discord, returning the
// Twitch authorize URL the service sends the browser to.
func (b *browser) twitchURL(button string) string {
	b.e.t.Helper()
	discordURL := b.next(button)
	if !strings.HasPrefix(discordURL, b.e.dc.AuthorizeURL()+"?") {
		b.e.t.Fatalf("/link/start sent the browser to %s, not Discord", discordURL)
	}
	u := b.next(b.next(discordURL))
	if !strings.HasPrefix(u, b.e.tw.AuthURL()+"/authorize?") {
		b.e.t.Fatalf("/discord_callback sent the browser to %s, not Twitch", u)
	}
	return u
}

// callbackURL opens a button in b, goes through Discord and Twitch (where
// twitchUser approves; "" denies), and returns the /twitch_callback URL.
func (b *browser) callbackURL(button, state, twitchUser string) string {
	b.e.t.Helper()
	b.e.tw.AuthorizeAs(state, twitchUser)
	return b.next(b.twitchURL(button))
}

// link runs a whole member link in the member's own browser: the button,
// Discord, Twitch approval by twitchUser, the callback.
func (e *env) link(discordUserID, twitchUser string) result {
	e.t.Helper()
	u, state := e.linkURL(discordUserID)
	b := e.browser(discordUserID)
	return b.get(b.callbackURL(u, state, twitchUser))
}

// snapshot is every link, subscription, role job and audit entry; a
// refused callback must leave it as it was.
func (e *env) snapshot() string {
	e.t.Helper()
	var out []any
	err := e.db.View(context.Background(), func(tx subrole.Tx) error {
		tx.ForEachLink(func(l subrole.Link) error { out = append(out, l); return nil })
		tx.ForEachSubscription(func(s subrole.Subscription) error { out = append(out, s); return nil })
		jobs, _ := tx.RoleJobs(0, -1)
		audit, _ := tx.Audit(0, -1)
		tok, _ := tx.BroadcasterToken()
		out = append(out, jobs, audit, tok)
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func (e *env) badReasons() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string{}, e.bad...)
}

func (e *env) member(discordUserID string) subrole.Member {
	e.t.Helper()
	m, err := e.svc.Member(context.Background(), discordUserID)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func TestCallbackLinks(t *testing.T) {
	e := newEnv(t)
	e.tw.Subscribe(tv1, "3000", false, "")
	u, state := e.linkURL(alice)
	b := e.browser(alice)
	// The button sets a random HttpOnly, SameSite=Lax cookie and goes to Discord.
	resp, err := b.c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookies := resp.Cookies()
	if len(cookies) != 1 || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteLaxMode || cookies[0].Secure ||
		len(cookies[0].Value) < 40 || cookies[0].MaxAge != int(subrole.StateTTL/time.Second) || cookies[0].Path != "/" {
		t.Fatalf("cookie %+v", cookies)
	}
	disc := resp.Header.Get("Location")
	for _, want := range []string{e.dc.AuthorizeURL() + "?", "response_type=code", "client_id=" + e.dc.ApplicationID,
		"scope=identify", "redirect_uri=" + url.QueryEscape(e.url+"/discord_callback"), "state=" + state} {
		if !strings.Contains(disc, want) {
			t.Errorf("Discord URL %s lacks %s", disc, want)
		}
	}
	if resp.Header.Get("Referrer-Policy") != "no-referrer" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("redirect headers %v", resp.Header)
	}
	// Discord confirms alice; the service sends her to Twitch with force_verify.
	tu := b.next(b.next(disc))
	for _, want := range []string{"force_verify=true", "scope=user%3Aread%3Asubscriptions", "state=" + state,
		"redirect_uri=" + url.QueryEscape(e.url+"/twitch_callback")} {
		if !strings.Contains(tu, want) {
			t.Errorf("Twitch URL %s lacks %s", tu, want)
		}
	}
	if n := e.dc.ValidOAuthTokens(alice); n != 0 {
		t.Errorf("the Discord token was kept: %d live", n)
	}
	e.tw.AuthorizeAs(state, tv1)
	r := b.get(b.next(tu))
	if r.status != 200 || !strings.Contains(r.body, "alice_tv") || !strings.Contains(r.body, "Tier 3") || !strings.Contains(r.body, "name-"+alice) {
		t.Fatalf("status %d:\n%s", r.status, r.body)
	}
	m := e.member(alice)
	if m.Link.TwitchUserID != tv1 || m.Sub.Tier != subrole.Tier3 || m.Sub.Source != subrole.SourceOAuth || !m.Sub.Started.Equal(e.clock.Now()) {
		t.Fatalf("member %+v", m)
	}
	jobs, _ := e.svc.RoleJobs(context.Background(), 0, 10)
	if len(jobs) != 1 || strings.Join(jobs[0].Desired, ",") != "1001,1013" || jobs[0].DiscordUserID != alice {
		t.Fatalf("jobs %+v", jobs)
	}
	if n := e.tw.ValidAccessTokens(tv1); n != 0 {
		t.Fatalf("the viewer token was not revoked (%d valid)", n)
	}
	if len(e.linked) != 1 || e.linked[0].Sub.Tier != subrole.Tier3 {
		t.Fatalf("OnLinked got %+v", e.linked)
	}
	// The stylesheet is served; the page refers to it and to nothing else.
	if s := e.get(e.url + web.StylePath); s.status != 200 || !strings.Contains(s.body, "font-family") {
		t.Fatalf("stylesheet: %d", s.status)
	}
	if strings.Count(r.body, "href=") != 1 || strings.Contains(r.body, "<script") || strings.Contains(r.body, "http://") {
		t.Fatalf("page refers to more than the stylesheet:\n%s", r.body)
	}
	if strings.Contains(e.logs.String(), cookies[0].Value) {
		t.Fatal("the browser cookie is in the log")
	}
}

// TestSecureCookie: behind an https public URL the cookie is Secure and
// __Host- prefixed.
func TestSecureCookie(t *testing.T) {
	e := newEnv(t)
	h, err := web.New(web.Config{Core: e.svc, Discord: discordAuth{}, Twitch: twitchAuth{}, PublicURL: "https://subs.example.com", BroadcasterID: "1"})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := h.LinkURL(context.Background(), alice, "alice", guild)
	rec := httptest.NewRecorder()
	h.LinkStart(rec, httptest.NewRequest(http.MethodGet, u, nil))
	c := rec.Result().Cookies()
	if rec.Code != http.StatusFound || len(c) != 1 || !c[0].Secure || !strings.HasPrefix(c[0].Name, "__Host-") || c[0].Path != "/" {
		t.Fatalf("status %d, cookies %+v", rec.Code, c)
	}
}

type discordAuth struct{}

func (discordAuth) AuthCodeURL(redirectURI, state string) string {
	return "https://discord.example/authorize"
}
func (discordAuth) Identify(context.Context, string, string) (string, string, error) {
	return "", "", errors.New("unused")
}

type twitchAuth struct{}

func (twitchAuth) AuthCodeURL(string, string, []string, bool) string {
	return "https://twitch.example/authorize"
}
func (twitchAuth) CheckViewer(context.Context, string, string, string) (subrole.Viewer, error) {
	return subrole.Viewer{}, errors.New("unused")
}
func (twitchAuth) ConnectBroadcaster(context.Context, string, string) (subrole.BroadcasterToken, error) {
	return subrole.BroadcasterToken{}, errors.New("unused")
}
func (twitchAuth) Identify(context.Context, string, string) (string, string, error) {
	return "", "", errors.New("unused")
}
func (twitchAuth) Revoke(context.Context, string) error { return nil }

func TestCallbackSecurity(t *testing.T) {
	rewrite := func(state string, f func(b []byte)) string {
		b, _ := base64.RawURLEncoding.DecodeString(state)
		f(b)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	forged, _ := subrole.NewStateToken(subrole.PurposeLink, alice)
	tests := []struct {
		name string
		opts envOptions
		// run does the attack and returns the page it ends on.
		run        func(e *env) result
		status     int
		logReason  string
		badRequest bool // counted for the ban layer
		page       string
		refKept    bool // the page shows a reference id that is in the log
	}{
		{name: "missing state", run: func(e *env) result { return e.get(e.url + "/twitch_callback?code=abc") },
			status: 400, logReason: "missing state", badRequest: true},
		{name: "malformed state", run: func(e *env) result { return e.get(e.url + "/twitch_callback?code=abc&state=%3Cscript%3E") },
			status: 400, logReason: "malformed state", badRequest: true},
		{name: "forged state", run: func(e *env) result {
			return e.get(e.url + "/twitch_callback?code=abc&state=" + forged.String())
		}, status: 400, logReason: "unknown state", badRequest: true},
		{name: "forged state at the button", run: func(e *env) result {
			return e.get(e.url + "/link/start?state=" + forged.String())
		}, status: 400, logReason: "unknown state", badRequest: true},
		{name: "replayed state", run: func(e *env) result {
			u, state := e.linkURL(alice)
			b := e.browser(alice)
			cb := b.callbackURL(u, state, tv1)
			if r := b.get(cb); r.status != 200 {
				e.t.Fatalf("first use: %d", r.status)
			}
			e.linked = nil
			before := e.snapshot()
			r := b.get(cb)
			if after := e.snapshot(); after != before {
				e.t.Errorf("the replay changed the store")
			}
			return r
		}, status: 400, logReason: "state already used", badRequest: true},
		{name: "expired state", run: func(e *env) result {
			u, state := e.linkURL(alice)
			b := e.browser(alice)
			cb := b.callbackURL(u, state, tv1)
			e.clock.Add(subrole.StateTTL)
			return b.get(cb)
		}, status: 400, logReason: "state expired", badRequest: true},
		{name: "state issued to another discord user", run: func(e *env) result {
			u, state := e.linkURL(alice)
			b := e.browser(alice)
			cb, _ := url.Parse(b.callbackURL(u, state, tv2))
			q := cb.Query()
			// bob's id put in alice's state, to link bob's Discord to the approving Twitch account
			q.Set("state", rewrite(state, func(b []byte) { copy(b[2:10], bigEndian(bob)) }))
			cb.RawQuery = q.Encode()
			return b.get(cb.String())
		}, status: 400, logReason: "state issued to another Discord user", badRequest: true},
		{name: "broadcaster state at a member's callback", run: func(e *env) result {
			u, state := e.linkURL(alice)
			b := e.browser(alice)
			cb, _ := url.Parse(b.callbackURL(u, state, tv1))
			q := cb.Query()
			q.Set("state", rewrite(state, func(b []byte) { b[1] = byte(subrole.PurposeBroadcaster); clear(b[2:10]) }))
			cb.RawQuery = q.Encode()
			return b.get(cb.String())
		}, status: 400, logReason: "state issued to another Discord user", badRequest: true},
		{name: "no code", run: func(e *env) result {
			u, state := e.linkURL(alice)
			b := e.browser(alice)
			b.twitchURL(u)
			return b.get(e.url + "/twitch_callback?state=" + state)
		}, status: 400, logReason: "no code", badRequest: true},

		// The forwarding attacks: alice hands her link to bob, a subscriber.
		{name: "button forwarded to a browser signed in to Discord as another member", run: func(e *env) result {
			u, state := e.linkURL(alice)
			bobs := e.browser(bob)
			e.tw.AuthorizeAs(state, tv2)
			r := bobs.follow(u)
			if n := e.tw.ValidAccessTokens(tv2); n != 0 || len(e.tw.CallsTo("GET", "/oauth2/authorize")) != 0 {
				e.t.Errorf("Twitch was asked for bob's account")
			}
			// The state is void: alice cannot finish it herself now, even with bob's approval.
			if again := e.browser(alice).follow(u); again.status != 403 || !strings.Contains(again.body, "no longer be used") {
				e.t.Errorf("alice reusing the voided state: %d\n%s", again.status, again.body)
			}
			return r
		}, status: 403, logReason: subrole.ReasonStateOtherDiscord, badRequest: true, page: "made for another Discord account"},
		{name: "Twitch URL forwarded after alice's own Discord step", run: func(e *env) result {
			u, state := e.linkURL(alice)
			tu := e.browser(alice).twitchURL(u)
			e.tw.AuthorizeAs(state, tv2)
			bobs := e.browser(bob)
			r := bobs.follow(tu)
			if n := e.tw.ValidAccessTokens(tv2); n != 0 {
				e.t.Errorf("bob's Twitch code was exchanged")
			}
			return r
		}, status: 403, logReason: subrole.ReasonStateOtherBrowser, badRequest: true, page: "opened in another browser"},
		{name: "Twitch callback URL carried back to alice's browser after the refusal", run: func(e *env) result {
			u, state := e.linkURL(alice)
			alices := e.browser(alice)
			tu := alices.twitchURL(u)
			e.tw.AuthorizeAs(state, tv2)
			bobs := e.browser(bob)
			cb := bobs.next(tu) // bob approved; his browser is sent to the callback
			if r := bobs.get(cb); r.status != 403 {
				e.t.Fatalf("bob's browser at the callback: %d", r.status)
			}
			e.bad = nil
			return alices.get(cb) // bob pastes his callback URL to alice
		}, status: 403, logReason: subrole.ReasonStateVoid, badRequest: true, page: "no longer be used"},
		{name: "Discord's callback in a browser without the cookie", run: func(e *env) result {
			u, _ := e.linkURL(alice)
			disc := e.browser(alice).next(u)
			return e.browser(alice).follow(disc) // signed in as alice, but not where the button was opened
		}, status: 403, logReason: subrole.ReasonStateOtherBrowser, badRequest: true, page: "opened in another browser"},
		{name: "Twitch's callback before Discord's", run: func(e *env) result {
			u, state := e.linkURL(alice)
			b := e.browser(alice)
			b.next(u) // the cookie, but Discord is skipped
			return b.get(e.url + "/twitch_callback?code=x&state=" + state)
		}, status: 403, logReason: subrole.ReasonStateNoDiscord, badRequest: true, page: "opened in another browser"},

		{name: "access denied on Twitch", run: func(e *env) result { return e.link(alice, "") },
			status: 200, logReason: "access_denied", page: "cancelled the authorization on Twitch"},
		{name: "access denied on Discord", run: func(e *env) result {
			e.dc.SetOAuthDenying(true)
			u, _ := e.linkURL(alice)
			return e.browser(alice).follow(u)
		}, status: 200, logReason: "access_denied", page: "cancelled the authorization on Discord"},
		{name: "unknown oauth error", run: func(e *env) result {
			return e.get(e.url + "/twitch_callback?error=%3Cb%3Ehello%3C%2Fb%3E&error_description=x&state=y")
		}, status: 400, logReason: "unknown oauth error", badRequest: true, page: "Twitch did not complete the authorization."},
		{name: "twitch server error", run: func(e *env) result {
			return e.get(e.url + "/twitch_callback?error=server_error&state=y")
		}, status: 503, logReason: "twitch error server_error", page: "Twitch had a temporary problem"},
		{name: "discord says the request is invalid", run: func(e *env) result {
			return e.get(e.url + "/discord_callback?error=invalid_scope&state=y")
		}, status: 502, logReason: "discord error invalid_scope", page: "setup problem"},
		{name: "discord code exchange 500", run: func(e *env) result {
			e.dc.SetOutage(discordtest.Outage500, "/oauth2/token")
			u, _ := e.linkURL(alice)
			return e.browser(alice).follow(u)
		}, status: 503, logReason: "discord failed", page: "try again in a minute", refKept: true},
		{name: "wrong discord client secret", opts: envOptions{discordSecret: "not-the-secret"}, run: func(e *env) result {
			u, _ := e.linkURL(alice)
			return e.browser(alice).follow(u)
		}, status: 503, logReason: "discord failed", page: "try again in a minute", refKept: true},
		{name: "discord slower than the callback's budget", opts: envOptions{discordLatency: 2 * time.Second, timeout: 300 * time.Millisecond},
			run: func(e *env) result {
				u, _ := e.linkURL(alice)
				return e.browser(alice).follow(u)
			}, status: 503, logReason: "discord failed", page: "try again in a minute", refKept: true},
		{name: "code exchange 400", run: func(e *env) result {
			e.tw.FailNext("/oauth2/token", 400)
			return e.link(alice, tv1)
		}, status: 400, logReason: "twitch refused"},
		{name: "code exchange 500", run: func(e *env) result {
			e.tw.FailNext("/oauth2/token", 500)
			return e.link(alice, tv1)
		}, status: 503, logReason: "twitch failed", refKept: true},
		{name: "helix 5xx during the callback", run: func(e *env) result {
			e.tw.FailNext("/helix/subscriptions/user", 503)
			r := e.link(alice, tv1)
			if n := e.tw.ValidAccessTokens(tv1); n != 0 {
				e.t.Errorf("the viewer token was not revoked after the failure")
			}
			return r
		}, status: 503, logReason: "twitch failed", refKept: true},
		{name: "twitch account linked elsewhere", run: func(e *env) result {
			if r := e.link(bob, tv1); r.status != 200 {
				e.t.Fatalf("bob's link: %d", r.status)
			}
			e.linked = nil
			return e.link(alice, tv1)
		}, status: 409, logReason: "twitch account linked elsewhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnvWith(t, tt.opts)
			e.tw.Subscribe(tv1, "1000", false, "")
			e.tw.Subscribe(tv2, "3000", false, "")
			e.tw.SetAuthorizingUser(tv1)
			before := e.snapshot()
			r := tt.run(e)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d\n%s", r.status, tt.status, r.body)
			}
			after := e.snapshot()
			if tt.name == "twitch account linked elsewhere" || tt.name == "replayed state" {
				before = after // bob's or the first link happened on purpose; the check is inside run
			}
			if after != before {
				t.Errorf("the store changed:\nbefore %s\nafter  %s", before, after)
			}
			if len(e.linked) != 0 {
				t.Errorf("OnLinked called: %+v", e.linked)
			}
			if !strings.Contains(e.logs.String(), "reason=\""+tt.logReason+"\"") && !strings.Contains(e.logs.String(), "reason="+tt.logReason+" ") {
				t.Errorf("no log line with reason %q:\n%s", tt.logReason, e.logs)
			}
			if got := e.badReasons(); tt.badRequest != (len(got) > 0) || (tt.badRequest && got[0] != tt.logReason) {
				t.Errorf("OnBadRequest reasons %v, want %q: %v", got, tt.logReason, tt.badRequest)
			}
			if !strings.Contains(r.body, tt.page) {
				t.Errorf("the page lacks %q:\n%s", tt.page, r.body)
			}
			if strings.Contains(r.body, "hello") || strings.Contains(r.body, "not-the-secret") {
				t.Errorf("the page shows what the request or the configuration carried:\n%s", r.body)
			}
			if tt.refKept {
				// The reference on the page is the one in the log.
				i := strings.Index(r.body, "<code>")
				j := strings.Index(r.body, "</code>")
				if i < 0 || j < i || !strings.Contains(e.logs.String(), "ref="+r.body[i+6:j]) {
					t.Errorf("no matching reference id in page and log:\n%s\n%s", r.body, e.logs)
				}
			}
		})
	}
}

func bigEndian(id string) []byte {
	var n uint64
	for _, c := range id {
		n = n*10 + uint64(c-'0')
	}
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = byte(n)
		n >>= 8
	}
	return b
}

func TestRelinkResetsMonths(t *testing.T) {
	e := newEnv(t)
	e.tw.Subscribe(tv1, "1000", false, "")
	if r := e.link(alice, tv1); r.status != 200 {
		t.Fatal(r.status)
	}
	// alice's first account has seven months.
	err := e.db.Update(context.Background(), func(tx subrole.Tx) error {
		s, err := tx.Subscription(tv1)
		s.CumulativeMonths, s.StreakMonths = 7, 7
		if err != nil {
			return err
		}
		return tx.PutSubscription(s)
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.link(alice, tv2); r.status != 200 || !strings.Contains(r.body, "not subscribed") {
		t.Fatalf("relink: %d\n%s", r.status, r.body)
	}
	m := e.member(alice)
	if m.Link.TwitchUserID != tv2 || m.Sub.CumulativeMonths != 0 || m.Sub.StreakMonths != 0 || m.Sub.Tier.Valid() {
		t.Fatalf("after relink %+v", m)
	}
	if e.linked[1].Previous.TwitchUserID != tv1 {
		t.Fatalf("previous link not reported: %+v", e.linked[1])
	}
	// The old account is free again and keeps its own months.
	e.db.View(context.Background(), func(tx subrole.Tx) error {
		if _, err := tx.LinkByTwitch(tv1); !errors.Is(err, subrole.ErrNotFound) {
			t.Errorf("old account still linked: %v", err)
		}
		s, _ := tx.Subscription(tv1)
		if s.CumulativeMonths != 7 {
			t.Errorf("old account lost its months: %+v", s)
		}
		return nil
	})
	if r := e.link(bob, tv1); r.status != 200 {
		t.Fatalf("bob cannot link the freed account: %d", r.status)
	}
}

func TestBroadcasterConnect(t *testing.T) {
	t.Run("connects", func(t *testing.T) {
		e := newEnv(t)
		b := e.browser("")
		loc := b.next(e.url + web.ConnectPath)
		if !strings.Contains(loc, "scope=channel%3Aread%3Asubscriptions") || !strings.Contains(loc, "force_verify=true") {
			t.Fatalf("connect: %s", loc)
		}
		e.tw.SetAuthorizingUser(e.tw.BroadcasterID())
		res := b.get(b.next(loc))
		if res.status != 200 || !strings.Contains(res.body, twitchtest.DefaultBroadcasterLogin) {
			t.Fatalf("callback: %d\n%s", res.status, res.body)
		}
		e.db.View(context.Background(), func(tx subrole.Tx) error {
			tok, err := tx.BroadcasterToken()
			if err != nil || tok.UserID != e.tw.BroadcasterID() || tok.RefreshToken == "" || len(e.conn) != 1 {
				t.Errorf("stored %v, %v; hook %d", tok, err, len(e.conn))
			}
			return nil
		})
		if strings.Contains(e.logs.String(), e.conn[0].RefreshToken) || strings.Contains(e.logs.String(), e.conn[0].AccessToken) {
			t.Error("a token is in the log")
		}
	})
	refused := []struct {
		name, as, scope string
		status          int
		reason          string
	}{
		{"another account", tv1, twitchtest.ScopeChannelSubscriptions, 403, "not the broadcaster"},
		{"missing scope", twitchtest.DefaultBroadcasterID, "user:read:email", 403, "missing scope channel:read:subscriptions"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			before := e.snapshot()
			b := e.browser("")
			u, _ := url.Parse(b.next(e.url + web.ConnectPath))
			q := u.Query()
			q.Set("scope", tt.scope)
			u.RawQuery = q.Encode()
			e.tw.SetAuthorizingUser(tt.as)
			res := b.get(b.next(u.String()))
			if res.status != tt.status || !strings.Contains(e.logs.String(), tt.reason) {
				t.Fatalf("status %d, logs:\n%s", res.status, e.logs)
			}
			if e.snapshot() != before || len(e.conn) != 0 {
				t.Error("stored something")
			}
			if e.tw.ValidAccessTokens(tt.as) != 0 {
				t.Error("the refused token was not revoked")
			}
		})
	}
}

// TestBroadcasterConnectFlood: GET /broadcaster/connect needs no login, so
// a flood of it must not lock the streamer out: past
// MaxPendingBroadcasterStates the oldest pending state makes room, the
// streamer can still connect, members' /link is not held up, and every
// start is reported (the guard bans a client that floods).
func TestBroadcasterConnectFlood(t *testing.T) {
	e := newEnv(t)
	b := e.browser("")
	for i := range subrole.MaxPendingBroadcasterStates + 20 {
		e.clock.Add(time.Millisecond)
		if r := b.get(e.url + web.ConnectPath); r.status != http.StatusFound {
			t.Fatalf("request %d: %d", i, r.status)
		}
	}
	if e.connects != subrole.MaxPendingBroadcasterStates+20 {
		t.Errorf("OnConnect called %d times, want %d", e.connects, subrole.MaxPendingBroadcasterStates+20)
	}
	if r := e.link(alice, tv1); r.status != 200 {
		t.Fatalf("a member's /link during the flood: %d", r.status)
	}
	streamer := e.browser("")
	loc := streamer.next(e.url + web.ConnectPath)
	e.tw.SetAuthorizingUser(e.tw.BroadcasterID())
	if res := streamer.get(streamer.next(loc)); res.status != 200 || len(e.conn) != 1 {
		t.Fatalf("the streamer connecting during the flood: %d, %d connected\n%s", res.status, len(e.conn), res.body)
	}
}

func TestLanguage(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct{ header, want string }{
		{"", "Not linked"},
		{"ja", "連携していません"},
		{"ja-JP,ja;q=0.9,en;q=0.8", "連携していません"},
		{"en-US,en;q=0.9,ja;q=0.8", "Not linked"},
		{"fr, ja;q=0.5", "連携していません"},
		{"ja;q=0, en", "Not linked"},
		{"de", "Not linked"},
	} {
		req, _ := http.NewRequest(http.MethodGet, e.url+"/twitch_callback?error=access_denied&error_description=x&state=y", nil)
		if tt.header != "" {
			req.Header.Set("Accept-Language", tt.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		if !strings.Contains(b.String(), tt.want) {
			t.Errorf("Accept-Language %q: page lacks %q", tt.header, tt.want)
		}
	}
}
