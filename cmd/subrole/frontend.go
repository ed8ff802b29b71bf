package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/subrole/subrole/certs"
	"github.com/subrole/subrole/eventsub"
	"github.com/subrole/subrole/guard"
	"github.com/subrole/subrole/store"
)

// webhookPath is where Twitch delivers EventSub messages.
const webhookPath = "/twitch_eventsub"

// serverTimeouts bound every connection of every listener: a client that
// sends its headers or body too slowly, or reads the answer too slowly, is
// cut off. The zero value means the defaults of newFrontend.
type serverTimeouts struct {
	ReadHeader, Read, Write, Idle time.Duration
}

// defaultTimeouts are the production limits. Twitch waits a few seconds for
// an answer; nothing legitimate needs longer.
var defaultTimeouts = serverTimeouts{ReadHeader: 5 * time.Second, Read: 10 * time.Second, Write: 15 * time.Second, Idle: 120 * time.Second}

// certSource is what the autocert and files modes have in common.
type certSource interface {
	TLSConfig() *tls.Config
	Ready() <-chan struct{}
	Status() certs.Status
	Run(ctx context.Context) error
}

// frontend is the service's side facing the internet, as SUBROLE_TLS sets it
// up: the guard in front of every handler, the certificate source, the
// listeners, and the admin socket "subrole ban" talks to.
type frontend struct {
	cfg   *config
	log   *slog.Logger
	h     hooks
	guard *guard.Guard
	certs certSource // nil in proxy and off modes
	close func()     // stops the certificate source's requests to the CA

	servers []*frontServer
	admin   *frontServer
	// adminPath is where the admin socket lives, removed at shutdown.
	adminPath string
	// adminMore, if set before listen, wraps the admin socket's handler to
	// add routes (the healing's /reconcile, /eventsub/*, /status).
	adminMore func(bans http.Handler) http.Handler
}

// frontServer is one listener with its server.
type frontServer struct {
	name string // for logs and errors: the variable that configures it
	ln   net.Listener
	srv  *http.Server
	tls  bool
}

// newFrontend builds the guard (loading the stored bans) and the
// certificate source (loading certificate files) for cfg. It opens no
// listener yet.
func newFrontend(ctx context.Context, cfg *config, log *slog.Logger, db *store.Store, h hooks) (*frontend, error) {
	fe := &frontend{cfg: cfg, log: log, h: h, close: func() {}}
	var err error
	fe.guard, err = guard.New(ctx, guard.Config{
		Logger:                log,
		Store:                 db,
		TrustedProxies:        cfg.TrustedProxies,
		Allow:                 cfg.AllowIPs,
		Exempt:                exempt,
		HSTSIncludeSubdomains: cfg.HSTSSubdomains,
		MaxBodyBytes:          eventsub.MaxBodyBytes,
		Rate:                  cfg.RateLimit,
		Burst:                 cfg.RateBurst,
		IPv6Prefix:            cfg.BanIPv6Prefix,
		BanBase:               cfg.BanDuration,
		BanMax:                cfg.BanMax,
	})
	if err != nil {
		return nil, err
	}
	host := cfg.PublicURL.Hostname()
	switch cfg.TLS {
	case tlsAutocert:
		cache, err := certs.NewCache(db.Bolt(), "")
		if err != nil {
			return nil, err
		}
		a, err := certs.NewAutocert(certs.AutocertConfig{
			Host:         host,
			Cache:        cache,
			DirectoryURL: cfg.ACMEDirectory,
			Email:        cfg.ACMEEmail,
			HTTPClient:   h.acmeClient,
			OnEvent:      fe.certEvent,
		})
		if err != nil {
			return nil, fmt.Errorf("SUBROLE_PUBLIC_URL: %w", err)
		}
		fe.certs, fe.close = a, a.Close
		log.Info("tls: certificates from an ACME CA", "host", host, "acme_directory", cfg.ACMEDirectory,
			"https_listen", cfg.HTTPSListen, "http_listen", cfg.HTTPListen)
	case tlsFiles:
		f, err := certs.NewFiles(certs.FilesConfig{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile, Host: host, OnEvent: fe.certEvent})
		if err != nil {
			return nil, fmt.Errorf("SUBROLE_TLS_CERT_FILE, SUBROLE_TLS_KEY_FILE: %w", err)
		}
		fe.certs = f
	case tlsProxy:
		log.Info("tls: terminated by a reverse proxy; serving plain HTTP", "listen", cfg.Listen,
			"trusted_proxies", prefixList(cfg.TrustedProxies))
		if cfg.PublicURL.Scheme != "https" {
			log.Warn("tls: SUBROLE_TLS=proxy with an http SUBROLE_PUBLIC_URL: Twitch only calls https callbacks")
		}
	case tlsOff:
		msg := "tls: SUBROLE_TLS=off: serving plain HTTP without TLS; this is for development on loopback only, " +
			"Twitch only calls https callbacks on port 443 (set SUBROLE_TLS=autocert, files or proxy)"
		if a, err := netip.ParseAddr(host); (err == nil && a.IsLoopback()) || host == "localhost" {
			log.Warn(msg, "public_url", cfg.PublicURL.String())
		} else {
			log.Error(msg, "public_url", cfg.PublicURL.String())
		}
	}
	return fe, nil
}

// exempt reports the requests the guard must not judge by rate or ban: the
// EventSub webhook, whose signature is checked instead (a banned address
// with a valid signature is still Twitch), and ACME http-01 challenges.
func exempt(r *http.Request) bool {
	return r.URL.Path == webhookPath || strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/")
}

// webhookRejected is eventsub.Handler.OnRejected: requests to the webhook
// that carry no valid signature count toward a ban. Signed requests are
// never reported (the guard ignores them after Verified anyway).
func (fe *frontend) webhookRejected(r *http.Request, reason string) {
	switch reason {
	case eventsub.ReasonBadSignature, eventsub.ReasonMalformedSignature, eventsub.ReasonMissingHeader:
		fe.guard.Report(r, guard.KindBadSignature)
	}
}

// badState is web.Config.OnBadRequest: every refused OAuth callback counts
// toward a ban.
func (fe *frontend) badState(r *http.Request, reason string) {
	fe.guard.Report(r, guard.KindBadState)
}

// connectStarted is web.Config.OnConnect: every start of the broadcaster's
// authorization counts toward a ban (guard.KindConnect), so one client
// cannot churn the pending broadcaster states.
func (fe *frontend) connectStarted(r *http.Request) {
	fe.guard.Report(r, guard.KindConnect)
}

// tlsReady returns a channel closed once HTTPS has a certificate (at once
// when TLS is not ours). Whatever makes Twitch call us, such as creating
// EventSub subscriptions, must wait for it, so that Twitch's verification
// request never waits for a certificate.
func (fe *frontend) tlsReady() <-chan struct{} {
	if fe.certs == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return fe.certs.Ready()
}

// runCerts obtains the certificate and watches it until ctx is done.
func (fe *frontend) runCerts(ctx context.Context) error {
	if fe.certs == nil {
		return nil
	}
	return fe.certs.Run(ctx)
}

// certEvent logs what the certificate source reports.
func (fe *frontend) certEvent(e certs.Event) {
	attrs := []any{slog.String("host", e.Host)}
	if !e.NotAfter.IsZero() {
		attrs = append(attrs, slog.Time("not_after", e.NotAfter))
	}
	switch e.Kind {
	case certs.EventObtained:
		fe.log.Info("tls: certificate ready", attrs...)
	case certs.EventRenewed:
		fe.log.Info("tls: certificate renewed", attrs...)
	case certs.EventACMEProblem:
		var ae *certs.ACMEError
		if errors.As(e.Err, &ae) {
			attrs = append(attrs, slog.String("acme_type", ae.Type), slog.String("acme_detail", clipLog(ae.Detail)))
			if ae.Challenge != "" {
				attrs = append(attrs, slog.String("challenge", ae.Challenge))
			}
		}
		fe.log.Warn("tls: the ACME CA reported a problem", append(attrs, slog.Any("error", e.Err))...)
	case certs.EventError:
		fe.log.Error("tls: certificate problem", append(attrs, slog.String("security_event", "cert_error"),
			slog.String("reason", "certificate"), slog.Any("error", e.Err))...)
	case certs.EventExpiring:
		fe.log.Error("tls: certificate expires soon", append(attrs, slog.String("security_event", "cert_expiring"),
			slog.String("reason", "expiring"), slog.Duration("remaining", time.Until(e.NotAfter).Round(time.Minute)))...)
	}
}

// readyProblem is what keeps the service from being ready on the TLS side.
func (fe *frontend) readyProblem() string {
	if fe == nil || fe.certs == nil {
		return ""
	}
	st := fe.certs.Status()
	if st.Ready {
		return ""
	}
	if st.LastError != "" {
		return "no TLS certificate yet: " + st.LastError
	}
	return "no TLS certificate yet"
}

// readyWarning is what works but needs an operator on the TLS side.
func (fe *frontend) readyWarning() string {
	if fe == nil || fe.certs == nil {
		return ""
	}
	if st := fe.certs.Status(); st.Ready && st.Expiring {
		return fmt.Sprintf("TLS certificate expires %s (%s left); renewal is failing: %s",
			st.NotAfter.UTC().Format(time.RFC3339), time.Until(st.NotAfter).Round(time.Hour), st.LastError)
	}
	return ""
}

// listen opens the listeners of the configured mode, serving app behind the
// guard, and the admin socket. It returns the address of the listener that
// serves app. Errors name the variable of the listener that failed.
func (fe *frontend) listen(app http.Handler) (string, error) {
	cfg := fe.cfg
	front := fe.guard.Handler(app)
	fail := func(name string, err error) (string, error) {
		fe.closeListeners()
		return "", fmt.Errorf("%s: %w", name, err)
	}
	switch cfg.TLS {
	case tlsOff, tlsProxy:
		ln := fe.h.listener
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
				return fail("SUBROLE_LISTEN", err)
			}
		}
		fe.add("SUBROLE_LISTEN", ln, front, false)
	default:
		ln, err := net.Listen("tcp", cfg.HTTPSListen)
		if err != nil {
			return fail("SUBROLE_HTTPS_LISTEN", err)
		}
		fe.add("SUBROLE_HTTPS_LISTEN", ln, front, true)
		if cfg.HTTPListen != "" {
			ln, err := net.Listen("tcp", cfg.HTTPListen)
			if err != nil {
				return fail("SUBROLE_HTTP_LISTEN", err)
			}
			var plain http.Handler = certs.RedirectHTTPS(cfg.PublicURL.String())
			if a, ok := fe.certs.(*certs.Autocert); ok {
				plain = a.HTTPHandler(plain)
			}
			fe.add("SUBROLE_HTTP_LISTEN", ln, fe.guard.Handler(plain), false)
		}
	}
	if path := cfg.AdminSocket; path != "" {
		// The store's file lock is ours, so a socket left at path belongs to
		// a process that died holding it. Anything else there is left alone.
		if fi, err := os.Lstat(path); err == nil {
			if fi.Mode()&os.ModeSocket == 0 {
				return fail("SUBROLE_ADMIN_SOCKET", fmt.Errorf("%s exists and is not a socket", path))
			}
			os.Remove(path)
		}
		ln, err := listenPrivate(path)
		if err != nil {
			return fail("SUBROLE_ADMIN_SOCKET", err)
		}
		admin := adminHandler(fe.guard, cfg.BanIPv6Prefix, fe.log)
		if fe.adminMore != nil {
			admin = fe.adminMore(admin)
		}
		fe.admin = &frontServer{name: "SUBROLE_ADMIN_SOCKET", ln: ln, srv: fe.server(admin)}
		fe.adminPath = path
	}
	for _, s := range fe.servers {
		fe.log.Info("http: listening", "addr", s.ln.Addr().String(), "tls", s.tls, "setting", s.name,
			"public_url", cfg.PublicURL.String(), "eventsub_callback", cfg.publicURL(webhookPath))
	}
	return fe.servers[0].ln.Addr().String(), nil
}

func (fe *frontend) add(name string, ln net.Listener, h http.Handler, useTLS bool) {
	s := &frontServer{name: name, ln: ln, srv: fe.server(h), tls: useTLS}
	if useTLS {
		s.srv.TLSConfig = fe.certs.TLSConfig()
	}
	fe.servers = append(fe.servers, s)
}

// server returns an http.Server with the timeouts and header limit every
// listener uses.
func (fe *frontend) server(h http.Handler) *http.Server {
	t := fe.h.timeouts
	if t == (serverTimeouts{}) {
		t = defaultTimeouts
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(fe.log.Handler(), slog.LevelDebug),
	}
}

// serve serves every listener until shutdown; a listener that fails sends
// its error to errc (without blocking).
func (fe *frontend) serve(errc chan<- error) {
	all := fe.servers
	if fe.admin != nil {
		all = append(all[:len(all):len(all)], fe.admin)
	}
	for _, s := range all {
		go func() {
			var err error
			if s.tls {
				err = s.srv.ServeTLS(s.ln, "", "")
			} else {
				err = s.srv.Serve(s.ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				select {
				case errc <- fmt.Errorf("http (%s): %w", s.name, err):
				default:
				}
			}
		}()
	}
}

// shutdown stops the listeners, waiting for requests in flight until ctx is
// done, and stops the certificate source's requests to the CA.
func (fe *frontend) shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(fe.servers)+1)
	all := append(fe.servers[:len(fe.servers):len(fe.servers)], fe.admin)
	for i, s := range all {
		if s == nil {
			continue
		}
		wg.Go(func() { errs[i] = s.srv.Shutdown(ctx) })
	}
	wg.Wait()
	if fe.admin != nil {
		os.Remove(fe.adminPath) // listenPrivate moved it there; nothing else removes it
	}
	fe.close()
	return errors.Join(errs...)
}

// closeListeners closes what listen opened before it failed.
func (fe *frontend) closeListeners() {
	for _, s := range fe.servers {
		if s.ln != fe.h.listener {
			s.ln.Close()
		}
	}
	fe.servers = nil
}

// methodNotAllowed answers 405 with the Allow header listing the methods
// the route does accept.
func methodNotAllowed(router *mux.Router) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions} {
			probe := r.Clone(r.Context())
			probe.Method = m
			var match mux.RouteMatch
			if router.Match(probe, &match) && match.MatchErr == nil {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
		}
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	})
}

func prefixList(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, ",")
}

// clipLog shortens text from outside for a log line.
func clipLog(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// listenPrivate listens on a Unix socket at path that only its owner can
// connect to: whoever can connect can lift bans. The socket is made in a
// fresh directory only the owner can enter, restricted to mode 0600 there,
// and only then moved to path, so no one else can reach it at any moment.
func listenPrivate(path string) (net.Listener, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".subrole-admin-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // it will live at path, not tmp
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict the admin socket to its owner: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
