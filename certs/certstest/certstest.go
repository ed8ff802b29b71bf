// Package certstest runs Let's Encrypt's test CA, Pebble, inside the test
// process, so that tests obtain real certificates over ACME (RFC 8555) on
// loopback without a network.
//
// The CA's validation authority resolves every name to 127.0.0.1 through a
// small DNS server of its own, and connects for http-01 to Options.HTTPPort
// and for tls-alpn-01 to Options.TLSPort, so a test serves its challenge
// listeners on those loopback ports. Validation runs at full speed: Pebble's
// random validation delays, its deliberately rejected nonces and its
// authorization reuse are switched off.
//
//	ca := certstest.Start(t, certstest.Options{HTTPPort: httpPort, TLSPort: tlsPort})
//	m := &autocert.Manager{Client: &acme.Client{DirectoryURL: ca.DirectoryURL, HTTPClient: ca.HTTPClient}, ...}
//
// Certificates it issues chain to Roots. Names must contain a dot (autocert
// refuses single-label names); "subrole.test" is a good choice.
package certstest

import (
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// Options configures Start.
type Options struct {
	// HTTPPort is the port the validation authority connects to for http-01
	// challenges. Zero means 80.
	HTTPPort int
	// TLSPort is the port the validation authority connects to for
	// tls-alpn-01 challenges. Zero means 443. Pointing it at a closed port
	// makes every tls-alpn-01 attempt fail, which forces http-01.
	TLSPort int
	// Log receives Pebble's log lines. Nil discards them.
	Log io.Writer
}

// CA is a running Pebble. Its fields are set by Start and must not be
// changed.
type CA struct {
	// DirectoryURL is the ACME directory URL.
	DirectoryURL string
	// HTTPClient trusts the CA's own HTTPS endpoint; ACME clients must use it.
	HTTPClient *http.Client
	// Roots holds the root certificate that issued certificates chain to.
	Roots *x509.CertPool

	srv    *httptest.Server
	dns    *dns.Server
	orders atomic.Int64
	certs  atomic.Int64
}

// Start runs a CA until the test ends. It sets Pebble's environment
// variables with t.Setenv, so the test must not be parallel.
func Start(t testing.TB, opts Options) *CA {
	t.Helper()
	// Pebble reads these when its parts are created.
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")
	if opts.HTTPPort == 0 {
		opts.HTTPPort = 80
	}
	if opts.TLSPort == 0 {
		opts.TLSPort = 443
	}
	out := opts.Log
	if out == nil {
		out = io.Discard
	}
	logger := log.New(out, "pebble ", log.Lmicroseconds)

	resolver, err := startDNS()
	if err != nil {
		t.Fatalf("certstest: start DNS: %v", err)
	}
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "certstest"}})
	validator := va.New(logger, opts.HTTPPort, opts.TLSPort, false, resolver.Listener.Addr().String(), store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)

	c := &CA{dns: resolver}
	api := front.Handler()
	c.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			switch {
			case r.URL.Path == "/order-plz":
				c.orders.Add(1)
			case strings.HasPrefix(r.URL.Path, "/finalize-order/"):
				c.certs.Add(1)
			}
		}
		api.ServeHTTP(w, r)
	}))
	c.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	c.DirectoryURL = c.srv.URL + wfe.DirectoryPath
	c.HTTPClient = c.srv.Client()
	c.HTTPClient.Timeout = 30 * time.Second
	c.Roots = x509.NewCertPool()
	c.Roots.AddCert(authority.GetRootCert(0).Cert)
	t.Cleanup(c.Close)
	return c
}

// Orders returns how many new orders clients have placed.
func (c *CA) Orders() int { return int(c.orders.Load()) }

// Finalized returns how many orders clients have finalized, which is how
// many certificates the CA issued.
func (c *CA) Finalized() int { return int(c.certs.Load()) }

// Close stops the CA. Start arranges for it to run when the test ends.
func (c *CA) Close() {
	c.srv.Close()
	c.dns.Shutdown()
}

// startDNS serves DNS over TCP (the only transport Pebble's validation
// authority uses with a custom resolver) on a loopback port: every A
// question is answered 127.0.0.1, every other question with no records.
func startDNS() (*dns.Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	started := make(chan struct{})
	srv := &dns.Server{
		Listener:          ln,
		Net:               "tcp",
		NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(q)
			m.Authoritative = true
			for _, question := range q.Question {
				if question.Qtype == dns.TypeA {
					m.Answer = append(m.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
						A:   net.IPv4(127, 0, 0, 1),
					})
				}
			}
			w.WriteMsg(m)
		}),
	}
	go srv.ActivateAndServe()
	<-started
	return srv, nil
}
