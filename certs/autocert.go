package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// LetsEncryptURL is Let's Encrypt's production ACME directory, the default.
const LetsEncryptURL = autocert.DefaultACMEDirectory

// LetsEncryptStagingURL is Let's Encrypt's staging directory: untrusted
// certificates, generous rate limits, for trying a setup out.
const LetsEncryptStagingURL = "https://acme-staging-v02.api.letsencrypt.org/directory"

// AutocertConfig configures NewAutocert. Fields are read once, by
// NewAutocert.
type AutocertConfig struct {
	// Host is the one DNS name certificates are obtained for, the host of
	// the service's public URL. Required. The host policy allows only it;
	// a port in a request's Host header is ignored (tests serve http-01 on
	// ports other than 80).
	Host string
	// Cache keeps the account key and certificates across restarts; a
	// *Cache on the service's bbolt file. Required: without it every
	// restart would order a new certificate and soon hit Let's Encrypt's
	// limit of 5 duplicate certificates a week.
	Cache autocert.Cache
	// DirectoryURL is the ACME directory. Empty means LetsEncryptURL.
	DirectoryURL string
	// Email is the contact address registered with the CA, used for expiry
	// and policy mail. Empty registers no contact.
	Email string
	// HTTPClient talks to the CA. Nil means a client with a 30 second
	// timeout and the default transport.
	HTTPClient *http.Client
	// RenewBefore is how long before expiry autocert renews. Zero means
	// autocert's default: a third of the lifetime, at most 30 days.
	RenewBefore time.Duration

	// ExpiryWarning is how long before expiry EventExpiring starts. Zero
	// means DefaultExpiryWarning (14 days).
	ExpiryWarning time.Duration
	// RemindEvery is how often lasting problems are emitted again. Zero
	// means DefaultRemindEvery (6 hours).
	RemindEvery time.Duration
	// CheckEvery is how often Run checks the served certificate once it has
	// one. Zero means one minute.
	CheckEvery time.Duration
	// RetryMin and RetryMax bound the backoff between attempts to obtain the
	// first certificate. Zero means one minute and one hour. Let's Encrypt
	// allows 5 failed validations per host and hour.
	RetryMin, RetryMax time.Duration
	// Now returns the current time for expiry computations. Nil means
	// time.Now.
	Now func() time.Time
	// OnEvent receives events. It is called from Run, from Check and from
	// goroutines talking to the CA, possibly concurrently; it must be safe
	// for concurrent use and return quickly. Nil drops events.
	OnEvent func(Event)
}

// Autocert obtains and renews the certificate for one host from an ACME CA.
// Create it with NewAutocert; its methods are safe for concurrent use.
type Autocert struct {
	host     string
	m        *autocert.Manager
	mon      *monitor
	check    time.Duration
	retryMin time.Duration
	retryMax time.Duration
	renew    time.Duration

	stop     chan struct{} // closed by Close: no more requests to the CA
	stopOnce sync.Once
}

// NewAutocert returns an Autocert for cfg. It does not contact the CA; Run
// or Check does.
func NewAutocert(cfg AutocertConfig) (*Autocert, error) {
	host := strings.TrimSuffix(strings.ToLower(cfg.Host), ".")
	switch {
	case host == "":
		return nil, errors.New("certs: autocert: Host is required")
	case net.ParseIP(host) != nil:
		return nil, fmt.Errorf("certs: autocert: Host %q is an IP address; ACME CAs issue for DNS names", host)
	case !strings.Contains(host, "."):
		return nil, fmt.Errorf("certs: autocert: Host %q must be a fully qualified DNS name", host)
	case cfg.Cache == nil:
		return nil, errors.New("certs: autocert: Cache is required")
	}
	dir := cfg.DirectoryURL
	if dir == "" {
		dir = LetsEncryptURL
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	a := &Autocert{
		host:     host,
		mon:      newMonitor("autocert", host, cfg.Now, cfg.ExpiryWarning, cfg.RemindEvery, cfg.OnEvent),
		check:    orDefault(cfg.CheckEvery, time.Minute),
		retryMin: orDefault(cfg.RetryMin, time.Minute),
		retryMax: orDefault(cfg.RetryMax, time.Hour),
		renew:    cfg.RenewBefore,
		stop:     make(chan struct{}),
	}
	watched := *hc
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	watched.Transport = &acmeWatcher{base: base, stop: a.stop, problem: a.mon.acmeProblem}
	a.m = &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		Cache:       cfg.Cache,
		HostPolicy:  HostPolicy(host),
		RenewBefore: cfg.RenewBefore,
		Email:       cfg.Email,
		Client:      &acme.Client{DirectoryURL: dir, HTTPClient: &watched, UserAgent: "subrole"},
	}
	return a, nil
}

// HostPolicy returns an autocert.HostPolicy that allows host only, ignoring
// case and a port in the name it is given: autocert checks the Host header of http-01
// requests, which carries the port when the challenge is served on a port
// other than 80.
func HostPolicy(host string) autocert.HostPolicy {
	allow := autocert.HostWhitelist(host)
	return func(ctx context.Context, name string) error {
		if h, _, err := net.SplitHostPort(name); err == nil {
			name = h
		}
		return allow(ctx, strings.ToLower(name))
	}
}

// TLSConfig returns the configuration for the HTTPS listener: certificates
// from the Manager, HTTP/2, tls-alpn-01 challenges, TLS 1.2 at least.
func (a *Autocert) TLSConfig() *tls.Config {
	c := a.m.TLSConfig()
	c.GetCertificate = a.getCertificate
	c.MinVersion = tls.VersionTLS12
	return c
}

// getCertificate is the Manager's GetCertificate, noting the first
// certificate a handshake obtained: a client may trigger the order before
// Run's first Check does, and Status must not say "no certificate" while one
// is served. (Later changes are Check's to report.)
func (a *Autocert) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	c, err := a.m.GetCertificate(hello)
	challenge := len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto
	if err == nil && !challenge && c.Leaf != nil && !a.mon.isReady() {
		if _, ecdsa := c.PrivateKey.(*ecdsa.PrivateKey); ecdsa && c.Leaf.VerifyHostname(a.host) == nil {
			a.mon.serving(c.Leaf)
		}
	}
	return c, err
}

// HTTPHandler returns the handler for the plain-HTTP listener (port 80): it
// answers http-01 challenges for the host and passes every other request to
// fallback (nil means autocert's redirect to https on port 443). Calling it
// enables http-01; without it only tls-alpn-01 is used.
func (a *Autocert) HTTPHandler(fallback http.Handler) http.Handler {
	return a.m.HTTPHandler(fallback)
}

// Ready returns a channel that is closed once a certificate is served.
func (a *Autocert) Ready() <-chan struct{} { return a.mon.ready }

// Status returns the current status.
func (a *Autocert) Status() Status { return a.mon.status() }

// Check gets the served certificate, from memory, the cache or, when there
// is none, from the CA (which can take a minute), then updates Status and
// emits events: EventObtained the first time, EventRenewed when autocert
// renewed it, EventExpiring when it is close to expiry, EventError when it
// could not be obtained or its renewal is overdue. The error is the failure
// to obtain one.
func (a *Autocert) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	type result struct {
		cert *tls.Certificate
		err  error
	}
	done := make(chan result, 1)
	go func() { // GetCertificate cannot be cancelled; Close stops its CA requests
		c, err := a.m.GetCertificate(warmHello(a.host))
		done <- result{c, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if r.err == nil && r.cert.Leaf == nil {
		r.cert.Leaf, r.err = x509.ParseCertificate(r.cert.Certificate[0])
	}
	if r.err != nil {
		err := fmt.Errorf("certs: obtain certificate for %s: %w", a.host, r.err)
		if p := a.mon.lastProblem(); p != nil && !errors.Is(r.err, p) {
			err = fmt.Errorf("%w (last ACME problem: %v)", err, p)
		}
		a.mon.failed(err)
		return err
	}
	leaf := r.cert.Leaf
	a.mon.serving(leaf)
	if late := renewalDue(leaf, a.renew).Add(2 * time.Hour); a.mon.now().After(late) {
		err := fmt.Errorf("certs: renewal of the certificate for %s is overdue: it expires %s",
			a.host, leaf.NotAfter.UTC().Format(time.RFC3339))
		if p := a.mon.lastProblem(); p != nil {
			err = fmt.Errorf("%w; last ACME problem: %w", err, p)
		}
		a.mon.overdue(err)
	}
	return nil
}

// Run obtains the certificate, retrying with backoff (RetryMin doubling up
// to RetryMax) until it succeeds, then checks it every CheckEvery, until ctx
// is done. It returns nil when ctx is done.
func (a *Autocert) Run(ctx context.Context) error {
	wait := a.retryMin
	for {
		if err := a.Check(ctx); err == nil {
			break
		}
		if !sleep(ctx, wait) {
			return nil
		}
		wait = min(2*wait, a.retryMax)
	}
	t := time.NewTicker(a.check)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			a.Check(ctx)
		}
	}
}

// Close makes requests to the CA fail from now on, so that an issuance in
// progress ends quickly, and stops autocert's renewal timers from reaching
// the CA. Call it when the service stops.
func (a *Autocert) Close() {
	a.stopOnce.Do(func() { close(a.stop) })
}

// warmHello is the ClientHello Check presents: a modern client that accepts
// ECDSA, so that the certificate obtained is the one browsers and Twitch get.
func warmHello(host string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{
		ServerName:        host,
		CipherSuites:      []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		SupportedCurves:   []tls.CurveID{tls.X25519, tls.CurveP256},
		SupportedProtos:   []string{"h2", "http/1.1"},
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
	}
}

// renewalDue returns when autocert starts renewing leaf at the latest (its
// jitter moves the start up to an hour later than the threshold).
func renewalDue(leaf *x509.Certificate, renewBefore time.Duration) time.Time {
	threshold := min(leaf.NotAfter.Sub(leaf.NotBefore)/3, 30*24*time.Hour)
	if renewBefore > 0 {
		threshold = min(renewBefore, 30*24*time.Hour)
	}
	return leaf.NotAfter.Add(-threshold).Add(time.Hour)
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// errStopped fails requests to the CA after Close.
var errStopped = errors.New("certs: stopped")

// acmeWatcher is the transport of the ACME client. It reports every problem
// in the conversation with the CA, which autocert itself keeps to itself
// during renewals, and refuses requests after Close.
type acmeWatcher struct {
	base    http.RoundTripper
	stop    <-chan struct{}
	problem func(*ACMEError)
}

// maxInspect is the largest response body acmeWatcher reads to look for a
// problem; ACME objects are a few kilobytes.
const maxInspect = 1 << 20

func (w *acmeWatcher) RoundTrip(req *http.Request) (*http.Response, error) {
	select {
	case <-w.stop:
		return nil, errStopped
	default:
	}
	resp, err := w.base.RoundTrip(req)
	if err != nil {
		w.problem(&ACMEError{URL: req.URL.String(), Err: err})
		return nil, err
	}
	ct := resp.Header.Get("Content-Type")
	problemDoc := strings.HasPrefix(ct, "application/problem+json")
	object := strings.HasPrefix(ct, "application/json")
	if !problemDoc && !object || resp.ContentLength > maxInspect {
		return resp, nil
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxInspect+1))
	if rerr != nil || len(body) > maxInspect {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
		return resp, nil
	}
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if p := findProblem(resp.StatusCode, problemDoc, body); p != nil {
		p.URL = req.URL.String()
		w.problem(p)
	}
	return resp, nil
}

// wireProblem is an RFC 7807 problem document as ACME uses it.
type wireProblem struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
}

// findProblem returns the problem in an ACME response: a problem document
// (except badNonce, which the client retries by itself), or an invalid
// authorization, challenge or order.
func findProblem(status int, problemDoc bool, body []byte) *ACMEError {
	if problemDoc {
		var p wireProblem
		if json.Unmarshal(body, &p) != nil || p.Type == "urn:ietf:params:acme:error:badNonce" {
			return nil
		}
		return &ACMEError{Status: status, Type: p.Type, Detail: p.Detail}
	}
	var obj struct {
		Status     string       `json:"status"`
		Type       string       `json:"type"`
		Error      *wireProblem `json:"error"`
		Challenges []struct {
			Type  string       `json:"type"`
			Error *wireProblem `json:"error"`
		} `json:"challenges"`
	}
	if json.Unmarshal(body, &obj) != nil || obj.Status != "invalid" {
		return nil
	}
	for _, c := range obj.Challenges {
		if c.Error != nil {
			return &ACMEError{Status: status, Type: c.Error.Type, Detail: c.Error.Detail, Challenge: c.Type}
		}
	}
	if obj.Error != nil {
		return &ACMEError{Status: status, Type: obj.Error.Type, Detail: obj.Error.Detail, Challenge: obj.Type}
	}
	return &ACMEError{Status: status, Type: "invalid", Detail: "the CA marked the resource invalid"}
}

// RedirectHTTPS returns the fallback handler of the plain-HTTP listener: GET
// and HEAD are redirected (301) to the same path and query on origin, the
// service's public https origin ("https://subs.example.com"); the Host
// header is never used, so the redirect cannot be pointed elsewhere. Other
// methods are answered 400, so that nothing posted over plain HTTP is
// silently replayed.
func RedirectHTTPS(origin string) http.Handler {
	origin = strings.TrimSuffix(origin, "/")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "use https", http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, origin+r.URL.RequestURI(), http.StatusMovedPermanently)
	})
}
