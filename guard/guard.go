package guard

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is a kind of abuse. Report takes one; bans record it as their reason.
type Kind string

// The kinds of abuse guard knows. Other strings are allowed and use
// DefaultThreshold's fallback.
const (
	// KindBadSignature: a request to the EventSub webhook without a valid
	// signature (bad, malformed or missing).
	KindBadSignature Kind = "bad_signature"
	// KindBadState: an OAuth callback with an unknown, used or expired state.
	KindBadState Kind = "bad_state"
	// KindProbe: a request for a well-known attack path.
	KindProbe Kind = "probe"
	// KindNotFound: a request answered 404.
	KindNotFound Kind = "not_found"
	// KindConnect: a start of the broadcaster's authorization. The
	// streamer needs a few; each one issues a state, and a flood would push
	// the streamer's own state out.
	KindConnect Kind = "broadcaster_connect"
)

// Threshold is how much of a kind of abuse gets a client banned: Count
// reports within Window.
type Threshold struct {
	Count  int
	Window time.Duration
}

// DefaultThreshold returns the threshold used for kind when
// Config.Thresholds has none: 5 bad signatures or bad states within 10
// minutes, 3 probes within 10 minutes, 30 not-found answers within a minute,
// 30 broadcaster connection starts within 10 minutes, and 10 within 10
// minutes for any other kind.
func DefaultThreshold(kind Kind) Threshold {
	switch kind {
	case KindConnect:
		return Threshold{Count: 30, Window: 10 * time.Minute}
	case KindBadSignature, KindBadState:
		return Threshold{Count: 5, Window: 10 * time.Minute}
	case KindProbe:
		return Threshold{Count: 3, Window: 10 * time.Minute}
	case KindNotFound:
		return Threshold{Count: 30, Window: time.Minute}
	}
	return Threshold{Count: 10, Window: 10 * time.Minute}
}

// Defaults for the zero values of Config.
const (
	DefaultRate         = 10.0                // requests per second per client
	DefaultBurst        = 40                  // requests a client may send at once
	DefaultIPv6Prefix   = 64                  // IPv6 clients are counted and banned by /64
	DefaultBanBase      = time.Hour           // first automatic ban
	DefaultBanMax       = 30 * 24 * time.Hour // longest automatic ban
	DefaultStrikeMemory = 30 * 24 * time.Hour // how long an expired ban still escalates the next
	DefaultMaxBodyBytes = 1 << 20             // the EventSub webhook's own limit
	DefaultMaxClients   = 100_000             // clients tracked in memory
)

// Config configures New. The zero value works: bans in memory only, no
// trusted proxies, the defaults above.
type Config struct {
	// Logger receives security events and internal errors. Nil logs nothing.
	Logger *slog.Logger
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Store keeps bans across restarts. Nil keeps them in memory only.
	Store BanStore

	// TrustedProxies are the reverse proxies whose X-Forwarded-For and
	// X-Forwarded-Proto headers are believed. Empty trusts none: the headers
	// are ignored. Requests from a trusted proxy are never limited or banned
	// themselves (a proxy's own address stands for every client behind it).
	TrustedProxies []netip.Prefix
	// Allow lists clients that are never rate limited or banned.
	Allow []netip.Prefix
	// Exempt reports requests that skip the ban and rate checks because
	// something stronger judges them (the EventSub webhook's signature, ACME
	// challenges). Nil exempts nothing.
	Exempt func(*http.Request) bool

	// HSTSIncludeSubdomains adds includeSubDomains to the HSTS header.
	HSTSIncludeSubdomains bool
	// ContentSecurityPolicy is set on every response whose handler does not
	// set its own. Empty means DefaultContentSecurityPolicy.
	ContentSecurityPolicy string
	// MaxBodyBytes caps every request body; larger ones are answered 413.
	// Routes may set lower limits. Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64

	// Rate is how many requests per second a client may send on average,
	// Burst how many at once. Zero means DefaultRate and DefaultBurst; a
	// negative Rate turns rate limiting off.
	Rate  float64
	Burst int
	// IPv6Prefix is the prefix length by which IPv6 clients are counted and
	// banned (a /64 is one subscriber line). Zero means DefaultIPv6Prefix.
	IPv6Prefix int
	// Thresholds overrides DefaultThreshold per kind.
	Thresholds map[Kind]Threshold
	// BanBase is the first automatic ban; each further strike multiplies it
	// by 4, up to BanMax. Zero means DefaultBanBase and DefaultBanMax.
	BanBase, BanMax time.Duration
	// StrikeMemory is how long after a ban expired it still counts as a
	// strike. Zero means DefaultStrikeMemory.
	StrikeMemory time.Duration
	// MaxClients bounds the clients tracked in memory. Zero means
	// DefaultMaxClients.
	MaxClients int
}

// DefaultContentSecurityPolicy allows a page its own styles, scripts and
// images only, no framing, no plugins, and forms posting to itself.
const DefaultContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// hstsValue is HSTS for one year.
const hstsValue = "max-age=31536000"

// Guard is the request-level security layer. Create it with New; it is safe
// for concurrent use.
type Guard struct {
	log       *slog.Logger
	now       func() time.Time
	store     BanStore
	trusted   []netip.Prefix
	allow     []netip.Prefix
	exempt    func(*http.Request) bool
	hsts      string
	csp       string
	maxBody   int64
	rate      float64
	burst     float64
	v6prefix  int
	thresh    map[Kind]Threshold
	banBase   time.Duration
	banMax    time.Duration
	memory    time.Duration
	maxClient int

	mu        sync.Mutex
	clients   map[netip.Prefix]*client
	bans      map[netip.Prefix]*Ban
	banLens   map[int]int // prefix length -> number of bans with it (IPv4 lengths +200)
	lastSweep time.Time

	pmu        sync.Mutex // guards the fields below: grouped ban writes
	pcond      *sync.Cond
	pending    map[string][]byte
	gen        uint64 // changes queued so far
	flushedGen uint64 // changes written (or failed) so far
	flushErr   error
	flushing   bool
}

// client is what Guard remembers about one client (an address or an IPv6
// prefix).
type client struct {
	tokens float64
	last   time.Time // of the last refill
	counts map[Kind]*counter
}

type counter struct {
	n     int
	start time.Time
}

// New returns a Guard for cfg and loads the stored bans.
func New(ctx context.Context, cfg Config) (*Guard, error) {
	g := &Guard{
		log:       cfg.Logger,
		now:       cfg.Now,
		store:     cfg.Store,
		trusted:   cfg.TrustedProxies,
		allow:     cfg.Allow,
		exempt:    cfg.Exempt,
		hsts:      hstsValue,
		csp:       cfg.ContentSecurityPolicy,
		maxBody:   cfg.MaxBodyBytes,
		rate:      cfg.Rate,
		burst:     float64(cfg.Burst),
		v6prefix:  cfg.IPv6Prefix,
		thresh:    cfg.Thresholds,
		banBase:   cfg.BanBase,
		banMax:    cfg.BanMax,
		memory:    cfg.StrikeMemory,
		maxClient: cfg.MaxClients,
		clients:   map[netip.Prefix]*client{},
		bans:      map[netip.Prefix]*Ban{},
		banLens:   map[int]int{},
		pending:   map[string][]byte{},
	}
	g.pcond = sync.NewCond(&g.pmu)
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if cfg.HSTSIncludeSubdomains {
		g.hsts += "; includeSubDomains"
	}
	if g.csp == "" {
		g.csp = DefaultContentSecurityPolicy
	}
	if g.maxBody <= 0 {
		g.maxBody = DefaultMaxBodyBytes
	}
	if g.rate == 0 {
		g.rate = DefaultRate
	}
	if g.burst <= 0 {
		g.burst = DefaultBurst
	}
	if g.v6prefix == 0 {
		g.v6prefix = DefaultIPv6Prefix
	}
	if g.v6prefix < 1 || g.v6prefix > 128 {
		return nil, fmt.Errorf("guard: IPv6Prefix %d is not between 1 and 128", g.v6prefix)
	}
	if g.banBase <= 0 {
		g.banBase = DefaultBanBase
	}
	if g.banMax <= 0 {
		g.banMax = DefaultBanMax
	}
	if g.banMax < g.banBase {
		return nil, fmt.Errorf("guard: BanMax %v is shorter than BanBase %v", g.banMax, g.banBase)
	}
	if g.memory <= 0 {
		g.memory = DefaultStrikeMemory
	}
	if g.maxClient <= 0 {
		g.maxClient = DefaultMaxClients
	}
	if err := g.load(ctx); err != nil {
		return nil, err
	}
	return g, nil
}

// ctxKey is the context key of a request's state.
type ctxKey struct{}

// reqState is what Handler learned about a request; Report and Verified
// find it in the request context.
type reqState struct {
	ip       netip.Addr
	key      netip.Prefix // the client: ip, or its IPv6 prefix
	https    bool
	allowed  bool
	verified atomic.Bool
}

// state returns r's state, computing a fresh one for requests that did not
// pass through Handler.
func (g *Guard) state(r *http.Request) *reqState {
	if st, ok := r.Context().Value(ctxKey{}).(*reqState); ok {
		return st
	}
	st, _ := g.classify(r)
	return st
}

// classify resolves the client of r.
func (g *Guard) classify(r *http.Request) (st *reqState, forwarded bool) {
	ip, https, forwarded := g.clientIP(r)
	st = &reqState{ip: ip, https: https}
	if ip.IsValid() {
		st.key = g.clientKey(ip)
		st.allowed = contains(g.allow, ip) || contains(g.trusted, ip)
	}
	return st, forwarded
}

// clientKey is the prefix by which ip is counted and banned.
func (g *Guard) clientKey(ip netip.Addr) netip.Prefix {
	bits := 32
	if ip.Is6() {
		bits = g.v6prefix
	}
	p, _ := ip.Prefix(bits)
	return p
}

// ClientIP returns the client address of r as Handler resolved it (see
// Config.TrustedProxies), or the zero Addr if it cannot be parsed.
func (g *Guard) ClientIP(r *http.Request) netip.Addr { return g.state(r).ip }

// IsHTTPS reports whether r reached the service over HTTPS: directly, or
// through a trusted proxy that said so in X-Forwarded-Proto.
func IsHTTPS(r *http.Request) bool {
	if st, ok := r.Context().Value(ctxKey{}).(*reqState); ok {
		return st.https
	}
	return r.TLS != nil
}

// Verified marks r as carrying a valid EventSub signature: nothing about it
// counts against its client any more. Wire it to eventsub.Handler.OnVerified.
func (g *Guard) Verified(r *http.Request) { g.state(r).verified.Store(true) }

// Report counts one instance of kind against r's client, bans the client
// when it reaches the kind's threshold, and logs the report as a security
// event (not-found reports are logged only when they lead to a ban).
// Reports about verified requests, allowed clients and clients already
// banned are ignored. The web package reports invalid OAuth states as
// KindBadState; it is safe to call from any handler.
func (g *Guard) Report(r *http.Request, kind Kind) {
	st := g.state(r)
	if st.verified.Load() || !st.ip.IsValid() {
		return
	}
	attrs := []any{
		slog.String("security_event", string(kind)),
		slog.String("remote_ip", st.ip.String()),
		slog.String("reason", string(kind)),
		slog.String("path", clip(r.URL.Path)),
	}
	if st.allowed {
		if kind != KindNotFound {
			g.log.Warn("guard: abuse from an allowed client, not counted", attrs...)
		}
		return
	}
	now := g.now()
	th := g.threshold(kind)
	g.mu.Lock()
	if b := g.activeBanLocked(st.ip, now); b != nil {
		g.mu.Unlock()
		return
	}
	c := g.clientLocked(st.key, now)
	cnt := c.counts[kind]
	if cnt == nil {
		cnt = &counter{}
		c.counts[kind] = cnt
	}
	if now.Sub(cnt.start) > th.Window {
		cnt.n, cnt.start = 0, now
	}
	cnt.n++
	n := cnt.n
	var ban *Ban
	if n >= th.Count {
		cnt.n = 0
		ban = g.banLocked(st.key, string(kind), now)
	}
	g.mu.Unlock()

	if kind != KindNotFound {
		g.log.Warn("guard: abuse reported", append(attrs, slog.Int("count", n), slog.Int("threshold", th.Count))...)
	}
	if ban != nil {
		g.logBan(ban, st.ip, kind, r.URL.Path)
		g.persist(ban)
	}
}

func (g *Guard) threshold(kind Kind) Threshold {
	if t, ok := g.thresh[kind]; ok && t.Count > 0 && t.Window > 0 {
		return t
	}
	return DefaultThreshold(kind)
}

// Handler wraps next with the checks described in the package
// documentation.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, forwarded := g.classify(r)
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, st))
		if forwarded {
			r.RemoteAddr = net.JoinHostPort(st.ip.String(), "0")
		}
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", g.csp)
		if st.https {
			h.Set("Strict-Transport-Security", g.hsts)
		}

		sw := &statusWriter{ResponseWriter: w}
		defer g.recover(sw, r)

		if r.ContentLength > g.maxBody {
			plain(sw, http.StatusRequestEntityTooLarge, "request body too large")
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(sw, r.Body, g.maxBody)
		}
		if what := probe(r); what != "" {
			g.Report(r, KindProbe)
			http.NotFound(sw, r)
			return
		}
		if !st.allowed && st.ip.IsValid() && (g.exempt == nil || !g.exempt(r)) {
			if wait, ok := g.admit(st, sw); !ok {
				if wait > 0 {
					sw.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
					plain(sw, http.StatusTooManyRequests, "too many requests")
				} else {
					plain(sw, http.StatusForbidden, "forbidden")
				}
				return
			}
		}
		next.ServeHTTP(sw, r)
		if sw.status == http.StatusNotFound {
			g.Report(r, KindNotFound)
		}
	})
}

// admit applies the ban list and the token bucket. It returns ok=false with
// wait=0 for a banned client, wait>0 for a client over its rate.
func (g *Guard) admit(st *reqState, w http.ResponseWriter) (wait time.Duration, ok bool) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if b := g.activeBanLocked(st.ip, now); b != nil {
		g.log.Debug("guard: banned client refused", slog.String("remote_ip", st.ip.String()), slog.String("prefix", b.Prefix.String()))
		return 0, false
	}
	if g.rate < 0 {
		return 0, true
	}
	c := g.clientLocked(st.key, now)
	if c.tokens >= 1 {
		c.tokens--
		return 0, true
	}
	return time.Duration((1 - c.tokens) / g.rate * float64(time.Second)), false
}

// clientLocked returns the client for key with its bucket refilled to now,
// creating it (and evicting another when full) if needed. g.mu must be held.
func (g *Guard) clientLocked(key netip.Prefix, now time.Time) *client {
	if now.Sub(g.lastSweep) > time.Minute {
		g.sweepLocked(now)
	}
	c := g.clients[key]
	if c == nil {
		if len(g.clients) >= g.maxClient {
			for k := range g.clients { // map order is random: evict one at random
				delete(g.clients, k)
				break
			}
		}
		c = &client{tokens: g.burst, last: now, counts: map[Kind]*counter{}}
		g.clients[key] = c
		return c
	}
	if g.rate > 0 {
		c.tokens = min(g.burst, c.tokens+now.Sub(c.last).Seconds()*g.rate)
	}
	c.last = now
	return c
}

// sweepLocked forgets clients whose bucket is full and whose counters have
// expired, and bans past their strike memory. g.mu must be held.
func (g *Guard) sweepLocked(now time.Time) {
	g.lastSweep = now
	for k, c := range g.clients {
		full := g.rate <= 0 || c.tokens+now.Sub(c.last).Seconds()*g.rate >= g.burst
		if !full {
			continue
		}
		idle := true
		for kind, cnt := range c.counts {
			if now.Sub(cnt.start) <= g.threshold(kind).Window {
				idle = false
				break
			}
		}
		if idle {
			delete(g.clients, k)
		}
	}
	for p, b := range g.bans {
		if !b.Permanent() && now.Sub(b.Until) > g.memory {
			g.removeLocked(p)
		}
	}
}

// recover answers 500 after a panic in the handler and logs the panic with
// its stack. http.ErrAbortHandler is passed on.
func (g *Guard) recover(w *statusWriter, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	g.log.Error("http: handler panicked", slog.String("path", clip(r.URL.Path)), slog.String("method", r.Method),
		slog.String("remote_addr", r.RemoteAddr), slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
	if !w.wrote {
		plain(w, http.StatusInternalServerError, "internal error")
	}
}

// plain answers status with a one-line text body.
func plain(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

// statusWriter records the status of a response. It passes Flush on and
// unwraps for http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(p)
}

// Flush implements http.Flusher.
func (w *statusWriter) Flush() {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// contains reports whether any prefix contains ip.
func contains(ps []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// clip shortens a value from the request for logging.
func clip(s string) string {
	const max = 100
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
