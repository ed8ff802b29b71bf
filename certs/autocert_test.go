package certs_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole/certs"
	"github.com/subrole/subrole/certs/certstest"
	bolt "go.etcd.io/bbolt"
)

// events collects certs events.
type events struct {
	mu  sync.Mutex
	all []certs.Event
}

func (e *events) add(ev certs.Event) { e.mu.Lock(); e.all = append(e.all, ev); e.mu.Unlock() }

func (e *events) kinds() []certs.EventKind {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []certs.EventKind
	for _, ev := range e.all {
		out = append(out, ev.Kind)
	}
	return out
}

func (e *events) of(kind certs.EventKind) []certs.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []certs.Event
	for _, ev := range e.all {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// site is a service under test: an HTTPS listener with the Autocert's
// TLSConfig and a plain-HTTP listener with its HTTPHandler, on loopback.
type site struct {
	https, http net.Listener
	httpsSrv    *http.Server
	httpSrv     *http.Server
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

func newSite(t *testing.T) *site {
	return &site{https: listen(t), http: listen(t)}
}

// serve starts both servers with a's handlers; http01 false leaves the
// plain-HTTP listener without the challenge handler.
func (s *site) serve(t *testing.T, a *certs.Autocert, http01 bool, app http.Handler) {
	t.Helper()
	s.httpsSrv = &http.Server{Handler: app, TLSConfig: a.TLSConfig(), ErrorLog: discardLog()}
	go s.httpsSrv.ServeTLS(s.https, "", "")
	var h http.Handler = http.NotFoundHandler()
	if http01 {
		h = a.HTTPHandler(certs.RedirectHTTPS("https://subrole.test:" + strconv.Itoa(port(s.https))))
	}
	s.httpSrv = &http.Server{Handler: h}
	go s.httpSrv.Serve(s.http)
	t.Cleanup(func() { s.httpsSrv.Close(); s.httpSrv.Close() })
}

func openDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newAutocert(t *testing.T, ca *certstest.CA, db *bolt.DB, host string, ev *events, opts ...func(*certs.AutocertConfig)) *certs.Autocert {
	t.Helper()
	cache, err := certs.NewCache(db, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := certs.AutocertConfig{
		Host:         host,
		Cache:        cache,
		DirectoryURL: ca.DirectoryURL,
		HTTPClient:   ca.HTTPClient,
		Email:        "ops@subrole.test",
		OnEvent:      ev.add,
		RetryMin:     50 * time.Millisecond,
	}
	for _, o := range opts {
		o(&cfg)
	}
	a, err := certs.NewAutocert(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

// client trusts the CA's root and reaches every name on loopback.
func client(ca *certstest.CA, host string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			ForceAttemptHTTP2: true,
			TLSClientConfig:   &tls.Config{RootCAs: ca.Roots, ServerName: host},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, p, _ := net.SplitHostPort(addr)
				return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+p)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func hello(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello over "+r.Proto) }

func TestAutocertTLSALPN01(t *testing.T) {
	s := newSite(t)
	// The validation authority reaches tls-alpn-01 only; http-01 would hit
	// the CA's own port-80 default and fail.
	ca := certstest.Start(t, certstest.Options{TLSPort: port(s.https), HTTPPort: port(s.http)})
	db := openDB(t, filepath.Join(t.TempDir(), "subrole.db"))
	defer db.Close()
	ev := &events{}
	clk := newClock(time.Now())
	a := newAutocert(t, ca, db, "alpn.subrole.test", ev, func(c *certs.AutocertConfig) { c.Now = clk.Now })
	s.serve(t, a, false, http.HandlerFunc(hello))

	select {
	case <-a.Ready():
		t.Fatal("ready before a certificate was obtained")
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Check(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Ready():
	default:
		t.Fatal("not ready after Check obtained a certificate")
	}
	st := a.Status()
	if !st.Ready || st.Expiring || st.NotAfter.Before(time.Now().Add(60*24*time.Hour)) || st.Mode != "autocert" {
		t.Fatalf("status %+v", st)
	}
	if got := ev.of(certs.EventObtained); len(got) != 1 {
		t.Fatalf("events %v, want one obtained", ev.kinds())
	}

	c := client(ca, "alpn.subrole.test")
	resp, err := c.Get("https://alpn.subrole.test:" + strconv.Itoa(port(s.https)) + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello over HTTP/2.0" {
		t.Fatalf("body %q", body)
	}
	if n := ca.Orders(); n != 1 {
		t.Fatalf("%d orders, want 1", n)
	}

	// Another name is refused by the host policy: no order for it.
	bad := client(ca, "other.subrole.test")
	if _, err := bad.Get("https://other.subrole.test:" + strconv.Itoa(port(s.https)) + "/"); err == nil {
		t.Fatal("served a name outside the host policy")
	}
	if n := ca.Orders(); n != 1 {
		t.Fatalf("%d orders after a request for another name, want 1", n)
	}

	// Ten days before expiry autocert has not renewed (its renewals go by
	// the real clock): the watcher reports the expiry and the overdue renewal.
	clk.Add(st.NotAfter.Sub(clk.Now()) - day(10))
	if err := a.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); !st.Expiring {
		t.Fatalf("status %+v, want expiring", st)
	}
	if len(ev.of(certs.EventExpiring)) != 1 {
		t.Fatalf("events %v, want one expiring", ev.kinds())
	}
	errs := ev.of(certs.EventError)
	if len(errs) != 1 || !strings.Contains(errs[0].Err.Error(), "renewal of the certificate for alpn.subrole.test is overdue") {
		t.Fatalf("error events %v, want one overdue renewal", errs)
	}
}

func TestAutocertHTTP01AndRestartReusesCache(t *testing.T) {
	s := newSite(t)
	closed := listen(t)
	closed.Close() // tls-alpn-01 fails on a closed port, so only http-01 can succeed
	ca := certstest.Start(t, certstest.Options{TLSPort: port(closed), HTTPPort: port(s.http)})
	path := filepath.Join(t.TempDir(), "subrole.db")
	db := openDB(t, path)
	ev := &events{}
	a := newAutocert(t, ca, db, "http01.subrole.test", ev)
	s.serve(t, a, true, http.HandlerFunc(hello))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Check(ctx); err != nil {
		t.Fatal(err)
	}
	// The failed tls-alpn-01 attempt was reported with the CA's reason.
	var saw bool
	for _, e := range ev.of(certs.EventACMEProblem) {
		var ae *certs.ACMEError
		if errors.As(e.Err, &ae) && ae.Challenge == "tls-alpn-01" && ae.Detail != "" {
			saw = true
		}
	}
	if !saw {
		t.Fatalf("no tls-alpn-01 problem event; events %v", ev.of(certs.EventACMEProblem))
	}
	first := a.Status().NotAfter
	orders := ca.Orders()
	if ca.Finalized() != 1 {
		t.Fatalf("%d certificates issued, want 1", ca.Finalized())
	}

	// The plain-HTTP listener redirects everything else to https.
	c := client(ca, "http01.subrole.test")
	resp, err := c.Get("http://http01.subrole.test:" + strconv.Itoa(port(s.http)) + "/some/page?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := "https://subrole.test:" + strconv.Itoa(port(s.https)) + "/some/page?x=1"
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
		t.Fatalf("redirect %d to %q, want 301 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	// Restart: a new Autocert on the same file serves the cached
	// certificate without asking the CA for a new one.
	s.httpsSrv.Close()
	s.httpSrv.Close()
	a.Close()
	db.Close()
	db = openDB(t, path)
	defer db.Close()
	ev2 := &events{}
	s2 := newSite(t)
	a2 := newAutocert(t, ca, db, "http01.subrole.test", ev2)
	s2.serve(t, a2, true, http.HandlerFunc(hello))
	// A client's handshake comes before Run's first Check: the status
	// already says a certificate is served.
	resp, err = c.Get("https://http01.subrole.test:" + strconv.Itoa(port(s2.https)) + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st := a2.Status(); !st.Ready || !st.NotAfter.Equal(first) {
		t.Fatalf("after a handshake served the cached certificate, status %+v", st)
	}
	if err := a2.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if ca.Orders() != orders || ca.Finalized() != 1 {
		t.Fatalf("restart placed %d new orders and issued %d certificates, want none", ca.Orders()-orders, ca.Finalized()-1)
	}
	if got := a2.Status().NotAfter; !got.Equal(first) {
		t.Fatalf("restart serves a certificate expiring %v, want the cached one (%v)", got, first)
	}
	resp, err = c.Get("https://http01.subrole.test:" + strconv.Itoa(port(s2.https)) + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(ev2.of(certs.EventACMEProblem)) != 0 {
		t.Fatalf("problems after restart: %v", ev2.of(certs.EventACMEProblem))
	}
}

func TestAutocertUnreachableCA(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	db := openDB(t, filepath.Join(t.TempDir(), "subrole.db"))
	defer db.Close()
	cache, err := certs.NewCache(db, "")
	if err != nil {
		t.Fatal(err)
	}
	ev := &events{}
	a, err := certs.NewAutocert(certs.AutocertConfig{Host: "subrole.test", Cache: cache, DirectoryURL: dead.URL + "/dir", OnEvent: ev.add})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	err = a.Check(context.Background())
	if err == nil {
		t.Fatal("obtained a certificate from a dead CA")
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %q does not say why", err)
	}
	st := a.Status()
	if st.Ready || st.LastError == "" {
		t.Fatalf("status %+v", st)
	}
	if len(ev.of(certs.EventError)) != 1 || len(ev.of(certs.EventACMEProblem)) == 0 {
		t.Fatalf("events %v", ev.kinds())
	}

	// Run retries until ctx is done, and returns nil.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	a2, _ := certs.NewAutocert(certs.AutocertConfig{Host: "subrole.test", Cache: cache, DirectoryURL: dead.URL + "/dir", RetryMin: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond, OnEvent: ev.add})
	if err := a2.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(ev.of(certs.EventError)); n < 3 {
		t.Fatalf("%d attempts in 200ms, want retries", n)
	}
}

func TestNewAutocertValidates(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "subrole.db"))
	defer db.Close()
	cache, _ := certs.NewCache(db, "")
	for _, tc := range []struct {
		name string
		cfg  certs.AutocertConfig
		want string
	}{
		{"no host", certs.AutocertConfig{Cache: cache}, "Host is required"},
		{"ip", certs.AutocertConfig{Host: "192.0.2.1", Cache: cache}, "IP address"},
		{"single label", certs.AutocertConfig{Host: "localhost", Cache: cache}, "fully qualified"},
		{"no cache", certs.AutocertConfig{Host: "subrole.test"}, "Cache is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := certs.NewAutocert(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestHostPolicyIgnoresPort(t *testing.T) {
	p := certs.HostPolicy("subs.example.com")
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"subs.example.com", true},
		{"subs.example.com:80", true},
		{"subs.example.com:5002", true},
		{"SUBS.example.com", true},
		{"evil.example.com", false},
		{"evil.example.com:80", false},
		{"subs.example.com.evil.net", false},
	} {
		if err := p(context.Background(), tc.name); (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestRedirectHTTPS(t *testing.T) {
	h := certs.RedirectHTTPS("https://subs.example.com/")
	for _, tc := range []struct {
		method, target, host string
		status               int
		location             string
	}{
		{"GET", "/link?state=x", "subs.example.com", 301, "https://subs.example.com/link?state=x"},
		{"HEAD", "/", "evil.example.net", 301, "https://subs.example.com/"},
		{"POST", "/twitch_eventsub", "subs.example.com", 400, ""},
	} {
		r := httptest.NewRequest(tc.method, tc.target, nil)
		r.Host = tc.host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.status || w.Header().Get("Location") != tc.location {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.target, w.Code, w.Header().Get("Location"), tc.status, tc.location)
		}
	}
}
