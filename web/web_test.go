package web_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

// env is the real core on bbolt, the real Twitch client against the fake
// Twitch, and the pages on a loopback server.
type env struct {
	t      *testing.T
	svc    *subrole.Service
	db     *store.Store
	tw     *twitchtest.Server
	h      *web.Handler
	url    string
	clock  *clock
	logs   *syncBuffer
	mu     sync.Mutex
	bad    []string
	linked []subrole.LinkResult
	conn   []subrole.BroadcasterToken
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{t: time.Now().UTC().Truncate(time.Second)}, logs: &syncBuffer{}}
	db, err := store.Open(filepath.Join(t.TempDir(), "subrole.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
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
	srv := httptest.NewUnstartedServer(nil)
	e.url = "http://" + srv.Listener.Addr().String()
	e.h, err = web.New(web.Config{Core: e.svc, Twitch: tc, PublicURL: e.url, BroadcasterID: e.tw.BroadcasterID(),
		Logger: log, Timeout: 5 * time.Second,
		OnBadRequest: func(_ *http.Request, reason string) { e.mu.Lock(); e.bad = append(e.bad, reason); e.mu.Unlock() },
		OnLinked:     func(r subrole.LinkResult, _ string) { e.mu.Lock(); e.linked = append(e.linked, r); e.mu.Unlock() },
		OnBroadcasterConnected: func(tok subrole.BroadcasterToken) {
			e.mu.Lock()
			e.conn = append(e.conn, tok)
			e.mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+web.CallbackPath, e.h.Callback)
	mux.HandleFunc("GET "+web.ConnectPath, e.h.Connect)
	mux.HandleFunc("GET "+web.StylePath, e.h.Style)
	srv.Config.Handler = mux
	srv.Start()
	t.Cleanup(srv.Close)
	return e
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// authorize opens an authorize URL on the fake Twitch and returns the
// callback URL it redirects to.
func (e *env) authorize(authURL string) string {
	e.t.Helper()
	resp, err := noRedirect.Get(authURL)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		e.t.Fatalf("authorize: status %d", resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

// linkURL runs what /link does for discordUserID and returns the Twitch URL
// and the state.
func (e *env) linkURL(discordUserID string) (string, string) {
	e.t.Helper()
	u, err := e.h.LinkURL(context.Background(), discordUserID, "name-"+discordUserID, guild, false)
	if err != nil {
		e.t.Fatal(err)
	}
	p, _ := url.Parse(u)
	return u, p.Query().Get("state")
}

type result struct {
	status int
	body   string
}

func (e *env) get(u string) result {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Accept-Language", "en")
	resp, err := noRedirect.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return result{resp.StatusCode, b.String()}
}

// link runs a whole member link: state, Twitch approval by twitchUser, callback.
func (e *env) link(discordUserID, twitchUser string) result {
	e.t.Helper()
	u, state := e.linkURL(discordUserID)
	e.tw.AuthorizeAs(state, twitchUser)
	return e.get(e.authorize(u))
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
	r := e.link(alice, tv1)
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
}

func TestCallbackSecurity(t *testing.T) {
	rewrite := func(state string, f func(b []byte)) string {
		b, _ := base64.RawURLEncoding.DecodeString(state)
		f(b)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	forged, _ := subrole.NewStateToken(subrole.PurposeLink, alice)
	tests := []struct {
		name string
		// run does the attack and returns the callback result.
		run        func(e *env) result
		status     int
		logReason  string
		badRequest bool // counted for the ban layer
	}{
		{"missing state", func(e *env) result { return e.get(e.url + "/twitch_callback?code=abc") }, 400, "missing state", true},
		{"malformed state", func(e *env) result { return e.get(e.url + "/twitch_callback?code=abc&state=%3Cscript%3E") }, 400, "malformed state", true},
		{"forged state", func(e *env) result {
			return e.get(e.url + "/twitch_callback?code=abc&state=" + forged.String())
		}, 400, "unknown state", true},
		{"replayed state", func(e *env) result {
			u, state := e.linkURL(alice)
			e.tw.AuthorizeAs(state, tv1)
			cb := e.authorize(u)
			if r := e.get(cb); r.status != 200 {
				e.t.Fatalf("first use: %d", r.status)
			}
			e.linked = nil
			before := e.snapshot()
			r := e.get(cb)
			if after := e.snapshot(); after != before {
				e.t.Errorf("the replay changed the store")
			}
			return r
		}, 400, "state already used", true},
		{"expired state", func(e *env) result {
			u, state := e.linkURL(alice)
			e.tw.AuthorizeAs(state, tv1)
			cb := e.authorize(u)
			e.clock.Add(subrole.StateTTL)
			return e.get(cb)
		}, 400, "state expired", true},
		{"state issued to another discord user", func(e *env) result {
			u, state := e.linkURL(alice)
			e.tw.AuthorizeAs(state, tv2)
			cb, _ := url.Parse(e.authorize(u))
			q := cb.Query()
			// bob's id put in alice's state, to link bob's Discord to the approving Twitch account
			q.Set("state", rewrite(state, func(b []byte) { copy(b[2:10], bigEndian(bob)) }))
			cb.RawQuery = q.Encode()
			return e.get(cb.String())
		}, 400, "state issued to another Discord user", true},
		{"broadcaster state at a member's callback", func(e *env) result {
			u, state := e.linkURL(alice)
			e.tw.AuthorizeAs(state, tv1)
			cb, _ := url.Parse(e.authorize(u))
			q := cb.Query()
			q.Set("state", rewrite(state, func(b []byte) { b[1] = byte(subrole.PurposeBroadcaster); clear(b[2:10]) }))
			cb.RawQuery = q.Encode()
			return e.get(cb.String())
		}, 400, "state issued to another Discord user", true},
		{"no code", func(e *env) result {
			_, state := e.linkURL(alice)
			return e.get(e.url + "/twitch_callback?state=" + state)
		}, 400, "no code", true},
		{"access denied", func(e *env) result { return e.link(alice, "") }, 200, "access_denied", false},
		{"code exchange 400", func(e *env) result {
			e.tw.FailNext("/oauth2/token", 400)
			return e.link(alice, tv1)
		}, 400, "twitch refused", false},
		{"code exchange 500", func(e *env) result {
			e.tw.FailNext("/oauth2/token", 500)
			return e.link(alice, tv1)
		}, 503, "twitch failed", false},
		{"helix 5xx during the callback", func(e *env) result {
			e.tw.FailNext("/helix/subscriptions/user", 503)
			r := e.link(alice, tv1)
			if n := e.tw.ValidAccessTokens(tv1); n != 0 {
				e.t.Errorf("the viewer token was not revoked after the failure")
			}
			return r
		}, 503, "twitch failed", false},
		{"twitch account linked elsewhere", func(e *env) result {
			if r := e.link(bob, tv1); r.status != 200 {
				e.t.Fatalf("bob's link: %d", r.status)
			}
			e.linked = nil
			return e.link(alice, tv1)
		}, 409, "twitch account linked elsewhere", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.tw.Subscribe(tv1, "1000", false, "")
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
			if !strings.Contains(e.logs.String(), "reason=\""+tt.logReason+"\"") && !strings.Contains(e.logs.String(), "reason="+tt.logReason) {
				t.Errorf("no log line with reason %q:\n%s", tt.logReason, e.logs)
			}
			if got := e.badReasons(); tt.badRequest != (len(got) > 0) || (tt.badRequest && got[0] != tt.logReason) {
				t.Errorf("OnBadRequest reasons %v, want %q: %v", got, tt.logReason, tt.badRequest)
			}
			if tt.status == 503 {
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
		r, err := noRedirect.Get(e.url + web.ConnectPath)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		loc := r.Header.Get("Location")
		if r.StatusCode != 302 || !strings.Contains(loc, "scope=channel%3Aread%3Asubscriptions") || !strings.Contains(loc, "force_verify=true") {
			t.Fatalf("connect: %d %s", r.StatusCode, loc)
		}
		e.tw.SetAuthorizingUser(e.tw.BroadcasterID())
		res := e.get(e.authorize(loc))
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
			r, _ := noRedirect.Get(e.url + web.ConnectPath)
			r.Body.Close()
			u, _ := url.Parse(r.Header.Get("Location"))
			q := u.Query()
			q.Set("scope", tt.scope)
			u.RawQuery = q.Encode()
			e.tw.SetAuthorizingUser(tt.as)
			res := e.get(e.authorize(u.String()))
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
