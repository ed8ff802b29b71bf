package guard_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole/guard"
	"github.com/subrole/subrole/store"
)

// clock is a pinned, settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

// logBuf is a goroutine-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := guard.ParsePrefix(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newGuard(t *testing.T, cfg guard.Config) *guard.Guard {
	t.Helper()
	g, err := guard.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// app is the handler behind the guard in these tests.
func app(g *guard.Guard) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "home") })
	mux.HandleFunc("GET /page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'")
		io.WriteString(w, "page")
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		w.Write(b)
	})
	mux.HandleFunc("GET /panic", func(w http.ResponseWriter, r *http.Request) { panic("secret internal detail") })
	mux.HandleFunc("GET /callback", func(w http.ResponseWriter, r *http.Request) {
		g.Report(r, guard.KindBadState)
		http.Error(w, "bad state", http.StatusBadRequest)
	})
	mux.HandleFunc("POST /hook", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Sig") == "good" {
			g.Verified(r)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		g.Report(r, guard.KindBadSignature)
		http.Error(w, "forbidden", http.StatusForbidden)
	})
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s https=%v", g.ClientIP(r), r.RemoteAddr, guard.IsHTTPS(r))
	})
	return g.Handler(mux)
}

// do sends one request from remote through h.
func do(h http.Handler, method, target, remote string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	r.RemoteAddr = remote
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestHeaders(t *testing.T) {
	for _, tc := range []struct {
		name       string
		subdomains bool
		tls        bool
		remote     string
		proto      string
		wantHSTS   string
	}{
		{"plain http", false, false, "198.51.100.1:1234", "", ""},
		{"https", false, true, "198.51.100.1:1234", "", "max-age=31536000"},
		{"https with subdomains", true, true, "198.51.100.1:1234", "", "max-age=31536000; includeSubDomains"},
		{"trusted proxy says https", false, false, "127.0.0.1:5555", "https", "max-age=31536000"},
		{"trusted proxy says http", false, false, "127.0.0.1:5555", "http", ""},
		{"untrusted client says https", false, false, "198.51.100.1:1234", "https", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuard(t, guard.Config{HSTSIncludeSubdomains: tc.subdomains, TrustedProxies: []netip.Prefix{mustPrefix(t, "127.0.0.1/32")}})
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.remote
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			if tc.proto != "" {
				r.Header.Set("X-Forwarded-Proto", tc.proto)
			}
			w := httptest.NewRecorder()
			app(g).ServeHTTP(w, r)
			h := w.Result().Header
			if got := h.Get("Strict-Transport-Security"); got != tc.wantHSTS {
				t.Errorf("HSTS %q, want %q", got, tc.wantHSTS)
			}
			for k, v := range map[string]string{
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
				"X-Frame-Options":         "DENY",
				"Content-Security-Policy": guard.DefaultContentSecurityPolicy,
			} {
				if h.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, h.Get(k), v)
				}
			}
			if !strings.Contains(guard.DefaultContentSecurityPolicy, "frame-ancestors 'none'") {
				t.Error("the default CSP allows framing")
			}
		})
	}
	// A page may set its own policy.
	g := newGuard(t, guard.Config{})
	if got := do(app(g), "GET", "/page", "198.51.100.1:1").Result().Header.Get("Content-Security-Policy"); got != "default-src 'self'" {
		t.Fatalf("page CSP %q", got)
	}
}

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{mustPrefix(t, "10.0.0.0/8"), mustPrefix(t, "::1/128")}
	g := newGuard(t, guard.Config{TrustedProxies: trusted})
	h := app(g)
	for _, tc := range []struct {
		name, remote, xff, want string
	}{
		{"direct", "198.51.100.7:4000", "", "198.51.100.7 198.51.100.7:4000"},
		{"untrusted peer's header ignored", "198.51.100.7:4000", "203.0.113.9", "198.51.100.7 198.51.100.7:4000"},
		{"trusted proxy", "10.1.2.3:4000", "203.0.113.9", "203.0.113.9 203.0.113.9:0"},
		{"spoofed left entries ignored", "10.1.2.3:4000", "1.2.3.4, 203.0.113.9", "203.0.113.9 203.0.113.9:0"},
		{"chain of trusted proxies", "10.1.2.3:4000", "203.0.113.9, 10.9.9.9", "203.0.113.9 203.0.113.9:0"},
		{"two headers", "10.1.2.3:4000", "", "10.1.2.3 10.1.2.3:4000"},
		{"garbage stops the walk", "10.1.2.3:4000", "203.0.113.9, nonsense", "10.1.2.3 10.1.2.3:4000"},
		{"ipv6 proxy and client", "[::1]:4000", "2001:db8::5", "2001:db8::5 [2001:db8::5]:0"},
		{"mapped ipv4", "[::ffff:198.51.100.7]:4000", "", "198.51.100.7 [::ffff:198.51.100.7]:4000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.xff != "" {
				hdr = []string{"X-Forwarded-For", tc.xff}
			}
			if tc.name == "two headers" {
				hdr = []string{"X-Forwarded-For", "203.0.113.1", "X-Forwarded-For", "10.2.2.2"}
				tc.want = "203.0.113.1 203.0.113.1:0"
			}
			got := do(h, "GET", "/whoami", tc.remote, hdr...).Body.String()
			if !strings.HasPrefix(got, tc.want+" ") {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBodyLimitAndRecover(t *testing.T) {
	logs := &logBuf{}
	g := newGuard(t, guard.Config{MaxBodyBytes: 1000, Logger: logs.logger()})
	h := app(g)

	// Declared too large: refused before reading.
	r := httptest.NewRequest("POST", "/echo", strings.NewReader(strings.Repeat("x", 1001)))
	r.RemoteAddr = "198.51.100.1:1"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("declared oversized body: %d", w.Code)
	}
	// Not declared (chunked): cut off while reading.
	r = httptest.NewRequest("POST", "/echo", io.MultiReader(strings.NewReader(strings.Repeat("x", 5000))))
	r.ContentLength = -1
	r.RemoteAddr = "198.51.100.1:1"
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("undeclared oversized body: %d", w.Code)
	}
	r = httptest.NewRequest("POST", "/echo", strings.NewReader("small"))
	r.RemoteAddr = "198.51.100.1:1"
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 || w.Body.String() != "small" {
		t.Fatalf("small body: %d %q", w.Code, w.Body)
	}

	w = do(h, "GET", "/panic", "198.51.100.1:1")
	if w.Code != 500 || strings.Contains(w.Body.String(), "secret") || strings.Contains(w.Body.String(), "goroutine") {
		t.Fatalf("panic answered %d %q", w.Code, w.Body)
	}
	if !strings.Contains(logs.String(), "secret internal detail") || !strings.Contains(logs.String(), "stack=") {
		t.Fatal("the panic and its stack were not logged")
	}
	// The server's own abort panic is passed on.
	abort := g.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
	func() {
		defer func() {
			if v := recover(); v != http.ErrAbortHandler {
				t.Fatalf("recovered %v, want http.ErrAbortHandler passed on", v)
			}
		}()
		do(abort, "GET", "/", "198.51.100.1:1")
	}()
}

func TestRateLimit(t *testing.T) {
	clk := newClock()
	g := newGuard(t, guard.Config{
		Now: clk.Now, Rate: 2, Burst: 5,
		Allow:  []netip.Prefix{mustPrefix(t, "192.0.2.0/24")},
		Exempt: func(r *http.Request) bool { return r.URL.Path == "/hook" },
	})
	h := app(g)
	for i := range 5 {
		if w := do(h, "GET", "/", "198.51.100.1:1"); w.Code != 200 {
			t.Fatalf("request %d: %d", i, w.Code)
		}
	}
	w := do(h, "GET", "/", "198.51.100.1:1")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("over the burst: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	// Another client has its own bucket.
	if w := do(h, "GET", "/", "198.51.100.2:1"); w.Code != 200 {
		t.Fatalf("another client: %d", w.Code)
	}
	// The bucket refills at Rate.
	clk.Add(time.Second)
	for i := range 2 {
		if w := do(h, "GET", "/", "198.51.100.1:1"); w.Code != 200 {
			t.Fatalf("after refill, request %d: %d", i, w.Code)
		}
	}
	if w := do(h, "GET", "/", "198.51.100.1:1"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("refill gave more than Rate: %d", w.Code)
	}
	// Exempt paths and allowed clients are never limited.
	for range 100 {
		if w := do(h, "POST", "/hook", "198.51.100.1:1", "X-Sig", "good"); w.Code != http.StatusNoContent {
			t.Fatalf("exempt path limited: %d", w.Code)
		}
		if w := do(h, "GET", "/", "192.0.2.55:1"); w.Code != 200 {
			t.Fatalf("allowed client limited: %d", w.Code)
		}
	}
	// IPv6 clients share a bucket per /64.
	for i := range 5 {
		if w := do(h, "GET", "/", fmt.Sprintf("[2001:db8:1:2::%x]:1", i+1)); w.Code != 200 {
			t.Fatalf("v6 request %d: %d", i, w.Code)
		}
	}
	if w := do(h, "GET", "/", "[2001:db8:1:2:ffff::1]:1"); w.Code != http.StatusTooManyRequests {
		t.Fatalf("another address of the same /64 was not limited: %d", w.Code)
	}
	if w := do(h, "GET", "/", "[2001:db8:1:3::1]:1"); w.Code != 200 {
		t.Fatalf("another /64 was limited: %d", w.Code)
	}
}

// abuse sends what makes kind count once from remote.
var abuse = map[guard.Kind]func(h http.Handler, remote string) int{
	guard.KindProbe:        func(h http.Handler, remote string) int { return do(h, "GET", "/.env", remote).Code },
	guard.KindBadSignature: func(h http.Handler, remote string) int { return do(h, "POST", "/hook", remote, "X-Sig", "bad").Code },
	guard.KindBadState:     func(h http.Handler, remote string) int { return do(h, "GET", "/callback?state=x", remote).Code },
	guard.KindNotFound:     func(h http.Handler, remote string) int { return do(h, "GET", "/no-such-page", remote).Code },
}

func TestEachAbuseKindBans(t *testing.T) {
	for kind, send := range abuse {
		t.Run(string(kind), func(t *testing.T) {
			clk := newClock()
			logs := &logBuf{}
			g := newGuard(t, guard.Config{Now: clk.Now, Rate: -1, Logger: logs.logger()})
			h := app(g)
			th := guard.DefaultThreshold(kind)
			for i := 1; i < th.Count; i++ {
				send(h, "198.51.100.9:1")
			}
			if w := do(h, "GET", "/", "198.51.100.9:1"); w.Code != 200 {
				t.Fatalf("banned below the threshold: %d", w.Code)
			}
			// Spread over more than the window, the same count does nothing.
			clk.Add(th.Window + time.Second)
			send(h, "198.51.100.9:1")
			if w := do(h, "GET", "/", "198.51.100.9:1"); w.Code != 200 {
				t.Fatalf("counts older than the window were kept: %d", w.Code)
			}
			for i := 1; i < th.Count; i++ {
				send(h, "198.51.100.9:1")
			}
			if w := do(h, "GET", "/", "198.51.100.9:1"); w.Code != http.StatusForbidden {
				t.Fatalf("not banned at the threshold: %d", w.Code)
			}
			if w := do(h, "GET", "/", "198.51.100.10:1"); w.Code != 200 {
				t.Fatalf("a neighbour was banned: %d", w.Code)
			}
			bans := g.Bans(false)
			if len(bans) != 1 || bans[0].Prefix.String() != "198.51.100.9/32" || bans[0].Reason != string(kind) ||
				!bans[0].Until.Equal(clk.Now().Add(guard.DefaultBanBase)) {
				t.Fatalf("bans %+v", bans)
			}
			line := logs.String()
			for _, want := range []string{"security_event=ban", "remote_ip=198.51.100.9", "reason=" + string(kind), "prefix=198.51.100.9/32", "strikes=1"} {
				if !strings.Contains(line, want) {
					t.Errorf("log lacks %q:\n%s", want, line)
				}
			}
			// It expires.
			clk.Add(guard.DefaultBanBase)
			if w := do(h, "GET", "/", "198.51.100.9:1"); w.Code != 200 {
				t.Fatalf("still banned after the ban ended: %d", w.Code)
			}
		})
	}
}

func TestBanEscalatesAndPersists(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "subrole.db")
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g := newGuard(t, guard.Config{Now: clk.Now, Store: db, Rate: -1})
	h := app(g)
	probeOut := func() {
		for range 3 {
			do(h, "GET", "/wp-login.php", "[2001:db8:aa:bb::1]:1")
		}
	}
	probeOut()
	want := []time.Duration{time.Hour}
	for _, d := range []time.Duration{4 * time.Hour, 16 * time.Hour, 64 * time.Hour} {
		clk.Add(want[len(want)-1] + time.Minute) // the previous ban has ended
		probeOut()
		want = append(want, d)
	}
	b, ok := g.Banned(netip.MustParseAddr("2001:db8:aa:bb:cc::9"))
	if !ok || b.Prefix.String() != "2001:db8:aa:bb::/64" || b.Strikes != 4 || b.Until.Sub(b.Updated) != 64*time.Hour {
		t.Fatalf("after 4 offences: %+v %v", b, ok)
	}

	// The ban survives a restart of the service.
	db.Close()
	db, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	g = newGuard(t, guard.Config{Now: clk.Now, Store: db, Rate: -1})
	h = app(g)
	if w := do(h, "GET", "/", "[2001:db8:aa:bb::77]:1"); w.Code != http.StatusForbidden {
		t.Fatalf("ban lost in the restart: %d", w.Code)
	}

	// The ceiling: strikes keep doubling twice, up to BanMax.
	for range 4 {
		clk.Add(g.Bans(false)[0].Until.Sub(clk.Now()) + time.Minute)
		probeOut()
	}
	if b := g.Bans(false)[0]; b.Until.Sub(b.Updated) != guard.DefaultBanMax {
		t.Fatalf("ban of %v after many strikes, want the maximum", b.Until.Sub(b.Updated))
	}
	// Strikes are forgotten after the strike memory.
	clk.Add(guard.DefaultBanMax + guard.DefaultStrikeMemory + time.Hour)
	probeOut()
	if b := g.Bans(false)[0]; b.Strikes != 1 || b.Until.Sub(b.Updated) != time.Hour {
		t.Fatalf("after the strike memory: %+v", b)
	}
}

func TestManualBans(t *testing.T) {
	clk := newClock()
	path := filepath.Join(t.TempDir(), "subrole.db")
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	g := newGuard(t, guard.Config{Now: clk.Now, Store: db})
	h := app(g)
	if _, err := g.Ban(ctx, mustPrefix(t, "203.0.113.0/24"), 0, "scanner farm"); err != nil {
		t.Fatal(err)
	}
	v6, _ := guard.ParsePrefix("2001:db8:5::1", 64)
	if _, err := g.Ban(ctx, v6, 2*time.Hour, ""); err != nil {
		t.Fatal(err)
	}
	if w := do(h, "GET", "/", "203.0.113.200:1"); w.Code != http.StatusForbidden {
		t.Fatalf("address in a banned /24: %d", w.Code)
	}
	if w := do(h, "GET", "/", "[2001:db8:5::abcd]:1"); w.Code != http.StatusForbidden {
		t.Fatalf("address in a banned /64: %d", w.Code)
	}
	clk.Add(3 * time.Hour)
	if w := do(h, "GET", "/", "[2001:db8:5::abcd]:1"); w.Code != 200 {
		t.Fatalf("timed ban did not end: %d", w.Code)
	}
	if got := g.Bans(false); len(got) != 1 || !got[0].Permanent() || got[0].Reason != "scanner farm" || !got[0].Manual {
		t.Fatalf("bans in force: %+v", got)
	}
	if got := g.Bans(true); len(got) != 2 {
		t.Fatalf("all bans: %+v", got)
	}
	// Unban by one address lifts the /24 containing it.
	removed, err := g.Unban(ctx, mustPrefix(t, "203.0.113.7"))
	if err != nil || len(removed) != 1 || removed[0].Prefix.String() != "203.0.113.0/24" {
		t.Fatalf("Unban = %+v, %v", removed, err)
	}
	if w := do(h, "GET", "/", "203.0.113.200:1"); w.Code != 200 {
		t.Fatalf("still banned after Unban: %d", w.Code)
	}
	if removed, _ := g.Unban(ctx, mustPrefix(t, "198.51.100.0/24")); len(removed) != 0 {
		t.Fatalf("Unban of an unbanned prefix removed %+v", removed)
	}
	// Stored: a new Guard on the same file sees the same list.
	g2 := newGuard(t, guard.Config{Now: clk.Now, Store: db})
	if got := g2.Bans(true); len(got) != 1 || got[0].Prefix != v6 {
		t.Fatalf("stored bans: %+v", got)
	}
}

func TestVerifiedRequestsNeverCount(t *testing.T) {
	clk := newClock()
	g := newGuard(t, guard.Config{Now: clk.Now, Rate: 1, Burst: 1, Exempt: func(r *http.Request) bool { return r.URL.Path == "/hook" }})
	mux := http.NewServeMux()
	mux.HandleFunc("/hook", func(w http.ResponseWriter, r *http.Request) {
		g.Verified(r)
		// Verified, then rejected for some later reason, or answered 404:
		// still nothing counts.
		g.Report(r, guard.KindBadSignature)
		http.NotFound(w, r)
	})
	h := g.Handler(mux)
	for range 1000 {
		do(h, "POST", "/hook", "198.51.100.3:1")
	}
	if bans := g.Bans(true); len(bans) != 0 {
		t.Fatalf("verified requests got a client banned: %+v", bans)
	}
	if w := do(h, "GET", "/hook", "198.51.100.3:1"); w.Code == http.StatusTooManyRequests {
		t.Fatal("verified requests charged the bucket")
	}
	// A banned client still reaches the exempt webhook.
	g.Ban(context.Background(), mustPrefix(t, "198.51.100.3"), 0, "")
	if w := do(h, "POST", "/hook", "198.51.100.3:1"); w.Code != http.StatusNotFound {
		t.Fatalf("banned client could not reach the exempt path: %d", w.Code)
	}
	if w := do(h, "GET", "/other", "198.51.100.3:1"); w.Code != http.StatusForbidden {
		t.Fatalf("banned client reached another path: %d", w.Code)
	}
}

func TestAllowedClientsAndProxiesAreNeverBanned(t *testing.T) {
	g := newGuard(t, guard.Config{
		Rate:           -1,
		Allow:          []netip.Prefix{mustPrefix(t, "192.0.2.0/24")},
		TrustedProxies: []netip.Prefix{mustPrefix(t, "127.0.0.1/32")},
	})
	h := app(g)
	for range 10 {
		do(h, "GET", "/.git/config", "192.0.2.1:1")
		do(h, "GET", "/.git/config", "127.0.0.1:1") // the proxy itself, no X-Forwarded-For
	}
	if bans := g.Bans(true); len(bans) != 0 {
		t.Fatalf("banned %+v", bans)
	}
	// Behind the proxy, the client is banned, not the proxy.
	for range 3 {
		do(h, "GET", "/.git/config", "127.0.0.1:1", "X-Forwarded-For", "198.51.100.4")
	}
	if w := do(h, "GET", "/", "127.0.0.1:1", "X-Forwarded-For", "198.51.100.4"); w.Code != http.StatusForbidden {
		t.Fatalf("client behind the proxy not banned: %d", w.Code)
	}
	if w := do(h, "GET", "/", "127.0.0.1:1", "X-Forwarded-For", "198.51.100.5"); w.Code != 200 {
		t.Fatalf("another client behind the proxy: %d", w.Code)
	}
}

func TestProbePaths(t *testing.T) {
	// One probe bans: whether an address is banned afterwards tells whether
	// its request was taken for a probe.
	g := newGuard(t, guard.Config{Rate: -1, Thresholds: map[guard.Kind]guard.Threshold{guard.KindProbe: {Count: 1, Window: time.Hour}}})
	h := app(g)
	for i, tc := range []struct {
		target string
		probe  bool
	}{
		{"/.env", true},
		{"/.git/HEAD", true},
		{"/app/.git/config", true},
		{"/wp-login.php", true},
		{"/wordpress/wp-admin/setup-config.php", true},
		{"/phpmyadmin/", true},
		{"/index.php?x=1", true},
		{"/cgi-bin/luci", true},
		{"/static/../../etc/passwd", true},
		{"/static/%2e%2e/%2e%2e/etc/shadow", true},
		{"/..%2f..%2fwindows/win.ini", true},
		{"/", false},
		{"/favicon.ico", false},
		{"/robots.txt", false},
		{"/.well-known/acme-challenge/abc", false},
		{"/twitch_eventsub", false},
		{"/link?state=abc.def", false},
	} {
		remote := fmt.Sprintf("198.51.100.%d", i+1)
		r := httptest.NewRequest("GET", "/", nil)
		r.RequestURI = tc.target
		r.URL, _ = r.URL.Parse(tc.target)
		r.RemoteAddr = remote + ":1"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		_, banned := g.Banned(netip.MustParseAddr(remote))
		if banned != tc.probe {
			t.Errorf("%s: answered %d, taken for a probe: %v, want %v", tc.target, w.Code, banned, tc.probe)
		}
		if tc.probe && w.Code != http.StatusNotFound {
			t.Errorf("%s: probe answered %d, want 404", tc.target, w.Code)
		}
	}
}

func TestManyClientsStayBounded(t *testing.T) {
	g := newGuard(t, guard.Config{MaxClients: 100, Rate: 1, Burst: 1})
	h := app(g)
	for i := range 10_000 {
		do(h, "GET", "/", fmt.Sprintf("[2001:db8:%x::1]:1", i))
	}
	// Evicted clients start over with a full bucket: the cost of a bound.
	if w := do(h, "GET", "/", "198.51.100.1:1"); w.Code != 200 {
		t.Fatalf("%d", w.Code)
	}
}

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		v6   int
		want string
		ok   bool
	}{
		{"203.0.113.7", 64, "203.0.113.7/32", true},
		{"203.0.113.7/24", 64, "203.0.113.0/24", true},
		{"2001:db8::1", 64, "2001:db8::/64", true},
		{"2001:db8::1", 0, "2001:db8::1/128", true},
		{"2001:db8::1/48", 64, "2001:db8::/48", true},
		{"::ffff:203.0.113.7", 64, "203.0.113.7/32", true},
		{"nonsense", 64, "", false},
		{"203.0.113.7/33", 64, "", false},
		{"fe80::1%eth0", 64, "", false},
	} {
		p, err := guard.ParsePrefix(tc.in, tc.v6)
		if (err == nil) != tc.ok || (tc.ok && p.String() != tc.want) {
			t.Errorf("ParsePrefix(%q, %d) = %v, %v; want %s", tc.in, tc.v6, p, err, tc.want)
		}
	}
	ps, err := guard.ParsePrefixes("10.0.0.0/8, 192.0.2.7 2001:db8::/32")
	if err != nil || len(ps) != 3 {
		t.Fatalf("ParsePrefixes = %v, %v", ps, err)
	}
	if _, err := guard.ParsePrefixes("10.0.0.0/8, what"); err == nil || !strings.Contains(err.Error(), `"what"`) {
		t.Fatalf("ParsePrefixes of garbage: %v", err)
	}
}
