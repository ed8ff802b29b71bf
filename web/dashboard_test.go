package web_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/twitch/twitchtest"
	"github.com/subrole/subrole/web"
	bolt "go.etcd.io/bbolt"
)

// signIn plays a dashboard sign-in in b as twitchUser and returns the
// response of the callback.
func (b *browser) signIn(twitchUser string) result {
	b.e.t.Helper()
	loc := b.next(b.e.url + web.DashboardLoginPath)
	if !strings.HasPrefix(loc, b.e.tw.AuthURL()+"/authorize?") {
		b.e.t.Fatalf("sign-in went to %s, not Twitch", loc)
	}
	u, _ := url.Parse(loc)
	if q := u.Query(); !q.Has("scope") || q.Get("scope") != "" || q.Get("redirect_uri") != b.e.url+web.CallbackPath {
		b.e.t.Fatalf("sign-in asks for scope %q, redirect %q", q.Get("scope"), q.Get("redirect_uri"))
	}
	b.e.tw.AuthorizeAs(u.Query().Get("state"), twitchUser)
	return b.get(b.next(loc))
}

// sessionCount returns how many dashboard sessions are stored.
func (e *env) sessionCount() int {
	e.t.Helper()
	n := 0
	err := e.db.Bolt().View(func(btx *bolt.Tx) error {
		n = btx.Bucket([]byte("dashboard_sessions")).Stats().KeyN
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func TestDashboardNeedsSession(t *testing.T) {
	e := newEnv(t)
	b := e.browser("")
	if loc := b.next(e.url + web.DashboardPath); loc != e.url+web.DashboardLoginPath {
		t.Fatalf("/dashboard without a session redirects to %q", loc)
	}
	if r := b.get(e.url + web.DashboardEventsPath); r.status != http.StatusUnauthorized {
		t.Fatalf("/dashboard/events without a session: %d", r.status)
	}
	// A made-up cookie is no session either.
	u, _ := url.Parse(e.url)
	b.c.Jar.SetCookies(u, []*http.Cookie{{Name: "subrole_dashboard", Value: subrole.NewSessionToken(), Path: "/dashboard"}})
	if loc := b.next(e.url + web.DashboardPath); loc != e.url+web.DashboardLoginPath {
		t.Fatalf("/dashboard with an unknown session redirects to %q", loc)
	}
}

func TestDashboardSignIn(t *testing.T) {
	const moderator = "700007"
	e := newEnvWith(t, envOptions{dashboardUsers: []string{moderator}})
	e.tw.AddUser(moderator, "mod_tv")
	e.svc.RecordAudit(context.Background(), subrole.AuditEntry{Kind: subrole.AuditRoles, DiscordUserID: alice,
		TwitchUserID: tv1, Before: policy.Linked, After: policy.Linked + "," + policy.Tier1, Detail: "subrole: Twitch channel.subscribe"})

	t.Run("not allowed", func(t *testing.T) {
		before := e.snapshot()
		b := e.browser("")
		r := b.signIn(tv1)
		if r.status != http.StatusForbidden || !strings.Contains(r.body, "alice_tv") ||
			!strings.Contains(r.body, "SUBROLE_DASHBOARD_USERS") || !strings.Contains(r.body, "broadcaster") {
			t.Fatalf("a viewer signing in: %d\n%s", r.status, r.body)
		}
		if !strings.Contains(e.logs.String(), "reason=\"not allowed\"") {
			t.Errorf("no log line with the reason:\n%s", e.logs)
		}
		if e.sessionCount() != 0 || e.snapshot() != before {
			t.Fatal("a refused sign-in stored something")
		}
		if loc := b.next(e.url + web.DashboardPath); loc != e.url+web.DashboardLoginPath {
			t.Fatalf("after a refused sign-in /dashboard redirects to %q", loc)
		}
		if e.tw.ValidAccessTokens(tv1) != 0 {
			t.Error("the sign-in's token was not revoked")
		}
	})

	t.Run("cancelled on Twitch", func(t *testing.T) {
		before := e.snapshot()
		b := e.browser("")
		r := b.signIn("") // the fake Twitch answers error=access_denied
		if r.status != http.StatusOK || !strings.Contains(r.body, "You cancelled the sign-in") || strings.Contains(r.body, "/link") {
			t.Fatalf("a cancelled sign-in: %d\n%s", r.status, r.body)
		}
		if e.sessionCount() != 0 || e.snapshot() != before {
			t.Fatal("a cancelled sign-in stored something")
		}
	})

	for _, who := range []struct{ name, id, login string }{
		{"broadcaster", twitchtest.DefaultBroadcasterID, twitchtest.DefaultBroadcasterLogin},
		{"listed user", moderator, "mod_tv"},
	} {
		t.Run(who.name, func(t *testing.T) {
			b := e.browser("")
			loc := b.next(e.url + web.DashboardLoginPath)
			u, _ := url.Parse(loc)
			e.tw.AuthorizeAs(u.Query().Get("state"), who.id)
			callback := b.next(loc)
			resp, err := b.c.Get(callback)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != e.url+web.DashboardPath {
				t.Fatalf("callback: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			c := resp.Cookies()
			if len(c) != 1 || !c[0].HttpOnly || c[0].SameSite != http.SameSiteLaxMode || c[0].Path != "/dashboard" ||
				c[0].Secure || c[0].MaxAge != int(subrole.DashboardSessionTTL/time.Second) || len(c[0].Value) < 40 {
				t.Fatalf("session cookie %+v", c)
			}
			if strings.Contains(e.logs.String(), c[0].Value) || strings.Contains(e.logs.String(), u.Query().Get("state")) {
				t.Fatal("the session token or the state is in the log")
			}
			r := b.get(e.url + web.DashboardPath)
			if r.status != 200 || !strings.Contains(r.body, who.login) || !strings.Contains(r.body, "Linked members") ||
				!strings.Contains(r.body, "member "+alice) || !strings.Contains(r.body, "1001 → 1001, 1011") {
				t.Fatalf("dashboard: %d\n%s", r.status, r.body)
			}
			// The replayed callback is refused: the state is used up.
			if r := b.get(callback); r.status != http.StatusBadRequest {
				t.Fatalf("replayed callback: %d", r.status)
			}
		})
	}
}

func TestDashboardPageHeaders(t *testing.T) {
	e := newEnv(t)
	b := e.browser("")
	b.signIn(e.tw.BroadcasterID())
	req, _ := http.NewRequest(http.MethodGet, e.url+web.DashboardPath, nil)
	req.Header.Set("Accept-Language", "ja")
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "form-action 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") || !strings.Contains(string(body), "ライブダッシュボード") ||
		!strings.Contains(string(body), `src="/assets/dashboard.js"`) {
		t.Errorf("page: %s\n%s", csp, body)
	}
	js := b.get(e.url + web.ScriptPath)
	if js.status != 200 || !strings.Contains(js.body, "EventSource") {
		t.Errorf("script: %d", js.status)
	}
}

func TestDashboardSessionEnds(t *testing.T) {
	t.Run("expired", func(t *testing.T) {
		e := newEnv(t)
		b := e.browser("")
		b.signIn(e.tw.BroadcasterID())
		if r := b.get(e.url + web.DashboardPath); r.status != 200 {
			t.Fatalf("dashboard: %d", r.status)
		}
		e.clock.Add(subrole.DashboardSessionTTL + time.Second)
		if loc := b.next(e.url + web.DashboardPath); loc != e.url+web.DashboardLoginPath {
			t.Fatalf("an expired session: redirect to %q", loc)
		}
		if r := b.get(e.url + web.DashboardEventsPath); r.status != http.StatusUnauthorized {
			t.Fatalf("an expired session's feed: %d", r.status)
		}
	})
	t.Run("signed out", func(t *testing.T) {
		e := newEnv(t)
		b := e.browser("")
		b.signIn(e.tw.BroadcasterID())
		u, _ := url.Parse(e.url + web.DashboardPath)
		token := b.c.Jar.Cookies(u)[0].Value

		// Another origin cannot sign anyone out.
		req, _ := http.NewRequest(http.MethodPost, e.url+web.DashboardLogoutPath, nil)
		req.Header.Set("Origin", "https://evil.example")
		resp, err := b.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || e.sessionCount() != 1 {
			t.Fatalf("cross-origin sign-out: %d, %d sessions", resp.StatusCode, e.sessionCount())
		}

		req, _ = http.NewRequest(http.MethodPost, e.url+web.DashboardLogoutPath, nil)
		req.Header.Set("Origin", e.url)
		resp, err = b.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || e.sessionCount() != 0 {
			t.Fatalf("sign-out: %d, %d sessions left", resp.StatusCode, e.sessionCount())
		}
		// The old token, presented again (a copied cookie), is refused.
		stale := e.browser("")
		stale.c.Jar.SetCookies(u, []*http.Cookie{{Name: "subrole_dashboard", Value: token, Path: "/dashboard"}})
		if loc := stale.next(e.url + web.DashboardPath); loc != e.url+web.DashboardLoginPath {
			t.Fatalf("a signed-out session: redirect to %q", loc)
		}
	})
}

// sse reads Server-Sent Events from a response body.
type sse struct {
	t    *testing.T
	resp *http.Response
	r    *bufio.Reader
}

type event struct{ id, name, data string }

func (e *env) openFeed(b *browser, after, lastID string) (*sse, int) {
	e.t.Helper()
	u := e.url + web.DashboardEventsPath
	if after != "" {
		u += "?after=" + after
	}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		return nil, resp.StatusCode
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		e.t.Fatalf("feed content type %q", ct)
	}
	s := &sse{t: e.t, resp: resp, r: bufio.NewReader(resp.Body)}
	e.t.Cleanup(s.close)
	return s, 200
}

func (s *sse) close() { s.resp.Body.Close() }

// next returns the next event (comments and retry lines skipped), failing
// after 10 seconds.
func (s *sse) next() event {
	s.t.Helper()
	type res struct {
		ev  event
		err error
	}
	c := make(chan res, 1)
	go func() {
		var ev event
		for {
			line, err := s.r.ReadString('\n')
			if err != nil {
				c <- res{ev, err}
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if ev.name != "" {
					c <- res{ev, nil}
					return
				}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	select {
	case r := <-c:
		if r.err != nil {
			s.t.Fatalf("feed: %v", r.err)
		}
		return r.ev
	case <-time.After(10 * time.Second):
		s.t.Fatal("no event within 10 s")
	}
	return event{}
}

// audits returns the ids of the next n audit events, skipping others.
func (s *sse) audits(n int) []string {
	s.t.Helper()
	var ids []string
	for len(ids) < n {
		if ev := s.next(); ev.name == "audit" {
			ids = append(ids, ev.id)
		}
	}
	return ids
}

func (e *env) audit(n int) {
	e.t.Helper()
	for i := range n {
		if err := e.svc.RecordAudit(context.Background(), subrole.AuditEntry{Kind: subrole.AuditNotice,
			DiscordUserID: alice, Detail: fmt.Sprintf("notice %d", i)}); err != nil {
			e.t.Fatal(err)
		}
	}
}

func TestDashboardFeedResumes(t *testing.T) {
	e := newEnvWith(t, envOptions{heartbeat: 100 * time.Millisecond})
	b := e.browser("")
	b.signIn(e.tw.BroadcasterID())
	e.audit(5) // entries 1..5

	// The page showed up to 2: the feed starts after it.
	feed, _ := e.openFeed(b, "2", "")
	if got := strings.Join(feed.audits(3), ","); got != "3,4,5" {
		t.Fatalf("first entries %s, want 3,4,5", got)
	}
	e.audit(1) // 6 arrives live
	if got := feed.audits(1)[0]; got != "6" {
		t.Fatalf("live entry %s, want 6", got)
	}
	feed.close()

	// While the browser is away, 7 and 8 are committed. It reconnects with
	// Last-Event-ID (the URL still says after=2): no gap, no repeat.
	e.audit(2)
	again, _ := e.openFeed(b, "2", "6")
	if got := strings.Join(again.audits(2), ","); got != "7,8" {
		t.Fatalf("after reconnecting %s, want 7,8", got)
	}
	e.audit(1)
	for {
		ev := again.next()
		if ev.name == "audit" {
			if ev.id != "9" {
				t.Fatalf("next live entry %s, want 9", ev.id)
			}
			break
		}
	}
	// The counters come along.
	for ev := again.next(); ; ev = again.next() {
		if ev.name == "stats" {
			if !strings.Contains(ev.data, `"linked":"0"`) {
				t.Fatalf("stats %s", ev.data)
			}
			break
		}
	}

	if r := b.get(e.url + web.DashboardEventsPath + "?after=x"); r.status != http.StatusBadRequest {
		t.Fatalf("a bad position: %d", r.status)
	}
}

func TestDashboardFeedEndsWithSession(t *testing.T) {
	e := newEnvWith(t, envOptions{heartbeat: 50 * time.Millisecond})
	b := e.browser("")
	b.signIn(e.tw.BroadcasterID())
	feed, _ := e.openFeed(b, "0", "")
	other := e.browser("")
	other.signIn(e.tw.BroadcasterID())
	otherFeed, _ := e.openFeed(other, "0", "")

	req, _ := http.NewRequest(http.MethodPost, e.url+web.DashboardLogoutPath, nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for ev := feed.next(); ; ev = feed.next() {
		if ev.name == "end" {
			break
		}
	}
	// Shutting down ends the other, saying the server, not the session, went.
	e.h.EndStreams()
	for ev := otherFeed.next(); ; ev = otherFeed.next() {
		if ev.name == "end" {
			t.Fatalf("shutting down ended the session's feed as %q; want a restart event", ev.data)
		}
		if ev.name == "restart" {
			break
		}
	}
	waitStreams(t, e, 0)
	if _, status := e.openFeed(other, "0", ""); status != http.StatusServiceUnavailable {
		t.Fatalf("a feed after EndStreams: %d", status)
	}
}

func waitStreams(t *testing.T, e *env, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.h.Streams() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams open, want %d", e.h.Streams(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDashboardStreamCap(t *testing.T) {
	e := newEnvWith(t, envOptions{maxStreams: [2]int{3, 2}})
	a, b := e.browser(""), e.browser("")
	a.signIn(e.tw.BroadcasterID())
	b.signIn(e.tw.BroadcasterID())

	a1, _ := e.openFeed(a, "0", "")
	e.openFeed(a, "0", "")
	if _, status := e.openFeed(a, "0", ""); status != http.StatusTooManyRequests {
		t.Fatalf("a third feed in one session: %d, want 429", status)
	}
	e.openFeed(b, "0", "")
	if _, status := e.openFeed(b, "0", ""); status != http.StatusServiceUnavailable {
		t.Fatalf("a fourth feed on the server: %d, want 503", status)
	}
	if !strings.Contains(e.logs.String(), "too many live dashboards") {
		t.Error("no log line for the refusals")
	}
	// Closing one frees its place.
	a1.close()
	waitStreams(t, e, 2)
	if _, status := e.openFeed(b, "0", ""); status != 200 {
		t.Fatalf("after one closed: %d", status)
	}
	waitStreams(t, e, 3)
}

// countingCore counts the dashboard's reads of the audit log.
type countingCore struct {
	web.DashboardCore
	reads atomic.Int64
}

func (c *countingCore) AuditAfter(ctx context.Context, after uint64, max int) ([]subrole.AuditEntry, error) {
	c.reads.Add(1)
	return c.DashboardCore.AuditAfter(ctx, after, max)
}

// TestDashboardFeedsShareReads: open feeds share one read and one rendering
// of each new entry, every feed still gets every entry once and in order,
// and a feed that starts before what the feeds share reads for itself.
func TestDashboardFeedsShareReads(t *testing.T) {
	counter := &countingCore{}
	e := newEnvWith(t, envOptions{heartbeat: time.Minute, maxStreams: [2]int{0, 8},
		dashboard: func(c web.DashboardCore) web.DashboardCore { counter.DashboardCore = c; return counter }})
	b := e.browser("")
	b.signIn(e.tw.BroadcasterID())
	e.audit(3) // 1..3: the page showed them
	const feeds = 6
	var open []*sse
	for range feeds {
		f, _ := e.openFeed(b, "3", "")
		open = append(open, f)
	}
	time.Sleep(300 * time.Millisecond) // every feed has read once and waits
	before := counter.reads.Load()
	const n = 40
	for i := range n {
		e.audit(1)
		if i%10 == 9 {
			time.Sleep(150 * time.Millisecond) // several wake-ups, several reads
		}
	}
	want := make([]string, n)
	for i := range want {
		want[i] = strconv.Itoa(4 + i)
	}
	for i, f := range open {
		if got := f.audits(n); !slices.Equal(got, want) {
			t.Fatalf("feed %d got %v, want %v", i, got, want)
		}
	}
	reads := counter.reads.Load() - before
	if reads == 0 || reads >= int64(feeds*4) {
		t.Errorf("%d feeds made %d reads of the audit log for 4 bursts; want them shared (fewer than %d)", feeds, reads, feeds*4)
	}
	t.Logf("%d feeds, %d reads", feeds, reads)

	// A browser coming back from before what the feeds share (entry 1)
	// reads for itself, then joins them: no gap, no repeat.
	late, _ := e.openFeed(b, "1", "")
	want = []string{"2", "3"}
	for i := range n {
		want = append(want, strconv.Itoa(4+i))
	}
	if got := late.audits(len(want)); !slices.Equal(got, want) {
		t.Fatalf("late feed got %v, want %v", got, want)
	}
	e.audit(1)
	if got := late.audits(1)[0]; got != strconv.Itoa(4+n) {
		t.Fatalf("late feed's live entry %s, want %d", got, 4+n)
	}
}

// TestDashboardSessionOfRemovedUser: a session outlives a restart, but not
// the permission it was granted under. A moderator taken out of
// SUBROLE_DASHBOARD_USERS (and the service restarted) must not keep seeing
// the page or the feed with the session they already had.
func TestDashboardSessionOfRemovedUser(t *testing.T) {
	const moderator = "700007"
	e := newEnvWith(t, envOptions{dashboardUsers: []string{moderator}})
	e.tw.AddUser(moderator, "mod_tv")
	b := e.browser("")
	b.signIn(moderator)
	if r := b.get(e.url + web.DashboardPath); r.status != 200 {
		t.Fatalf("dashboard before the restart: %d", r.status)
	}
	u, _ := url.Parse(e.url + web.DashboardPath)
	token := b.c.Jar.Cookies(u)[0].Value

	// The same store, restarted without the moderator.
	restarted := newEnvWith(t, envOptions{db: e.db})
	rb := restarted.browser("")
	ru, _ := url.Parse(restarted.url + web.DashboardPath)
	rb.c.Jar.SetCookies(ru, []*http.Cookie{{Name: "subrole_dashboard", Value: token, Path: "/dashboard"}})
	if loc := rb.next(restarted.url + web.DashboardPath); loc != restarted.url+web.DashboardLoginPath {
		t.Fatalf("a removed user's session: /dashboard redirects to %q, want the sign-in", loc)
	}
	if r := rb.get(restarted.url + web.DashboardEventsPath); r.status != http.StatusUnauthorized {
		t.Fatalf("a removed user's session: the feed answers %d, want 401", r.status)
	}
}

// TestDashboardFeedAheadOfCache: a page opened after more entries than one
// read takes were committed while no feed was open gets new entries at
// once, not only after the shared cache has crept up to it one read per
// commit.
func TestDashboardFeedAheadOfCache(t *testing.T) {
	e := newEnvWith(t, envOptions{heartbeat: time.Minute})
	b := e.browser("")
	b.signIn(e.tw.BroadcasterID())
	e.audit(3)
	first, _ := e.openFeed(b, "3", "") // the cache starts at 3
	if ev := first.next(); ev.name != "stats" {
		t.Fatalf("first event %+v, want the counters", ev)
	}
	first.close()
	waitStreams(t, e, 0)

	e.audit(350) // 4..353 while nobody watches
	feed, _ := e.openFeed(b, "353", "")
	e.audit(1)
	if got := feed.audits(1)[0]; got != "354" {
		t.Fatalf("live entry %s, want 354", got)
	}
}

// TestDashboardShowsNames: entries name the members they concern, by the
// Discord username given at /link and the Twitch login, and fall back to
// ids for anyone subrole has no name for.
func TestDashboardShowsNames(t *testing.T) {
	e := newEnv(t)
	if r := e.link(alice, tv1); r.status != http.StatusOK {
		t.Fatalf("link: %d\n%s", r.status, r.body)
	}
	const stranger, strangerTwitch = "100000000000000099", "599999"
	ctx := context.Background()
	e.svc.RecordAudit(ctx, subrole.AuditEntry{Kind: subrole.AuditRoles, DiscordUserID: alice, TwitchUserID: tv1,
		Before: policy.Linked, After: policy.Linked + "," + policy.Tier1, Detail: "named"})
	e.svc.RecordAudit(ctx, subrole.AuditEntry{Kind: subrole.AuditNotice, DiscordUserID: stranger, TwitchUserID: strangerTwitch,
		Detail: "unnamed"})
	b := e.browser("")
	b.signIn(e.tw.BroadcasterID())
	page := b.get(e.url + web.DashboardPath)
	for _, want := range []string{"member name-" + alice + " · Twitch alice_tv", "member " + stranger + " · Twitch " + strangerTwitch} {
		if !strings.Contains(page.body, want) {
			t.Errorf("the dashboard lacks %q:\n%s", want, page.body)
		}
	}
	// The live feed names them too.
	feed, status := e.openFeed(b, "0", "")
	if status != http.StatusOK {
		t.Fatalf("feed: %d", status)
	}
	var all string
	for i := 0; i < 50 && !(strings.Contains(all, `"detail":"named"`) && strings.Contains(all, `"detail":"unnamed"`)); i++ {
		if ev := feed.next(); ev.name == "audit" {
			all += ev.data + "\n"
		}
	}
	for _, want := range []string{`"who":"member name-` + alice + ` · Twitch alice_tv"`, `"who":"member ` + stranger + ` · Twitch ` + strangerTwitch + `"`} {
		if !strings.Contains(all, want) {
			t.Errorf("the feed lacks %s:\n%s", want, all)
		}
	}
}

// TestDashboardFeedAheadOfTheLog: a browser whose position is past the end
// of the audit log (it last saw a log that a backup restore has since
// replaced with a shorter one) gets the entries committed from now on,
// instead of nothing until the log grows past its old position, and does
// not stop other feeds from sharing the rendered entries.
func TestDashboardFeedAheadOfTheLog(t *testing.T) {
	e := newEnvWith(t, envOptions{heartbeat: 100 * time.Millisecond})
	b := e.browser("")
	b.signIn(e.tw.BroadcasterID())
	e.audit(3) // entries 1..3
	stale, status := e.openFeed(b, "", "1000")
	if status != http.StatusOK {
		t.Fatalf("feed: %d", status)
	}
	if ev := stale.next(); ev.name != "reset" || ev.data != "3" {
		t.Fatalf("first event %+v, want a reset to 3 (the page reloads on it)", ev)
	}
	other, _ := e.openFeed(b, "3", "")
	e.audit(1) // entry 4
	if got := stale.audits(1)[0]; got != "4" {
		t.Fatalf("the feed from past the end got entry %s, want 4", got)
	}
	if got := other.audits(1)[0]; got != "4" {
		t.Fatalf("the other feed got entry %s, want 4", got)
	}
	if !strings.Contains(e.logs.String(), "past the end of the audit log") {
		t.Errorf("no log line says the position was past the end:\n%s", e.logs.String())
	}
}
