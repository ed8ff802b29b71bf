package certs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole/certs"
)

// clock is a pinned, settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock(t time.Time) *clock    { return &clock{t: t} }
func day(n int) time.Duration        { return time.Duration(n) * 24 * time.Hour }
func mustNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// pair is a self-signed certificate for host valid from notBefore to
// notAfter, PEM encoded.
func pair(t *testing.T, host string, notBefore, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	mustNoErr(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: host},
		Issuer:       pkix.Name{CommonName: "test"},
		DNSNames:     []string{host},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	mustNoErr(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	mustNoErr(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// write writes data to path with modification time mod.
func write(t *testing.T, path string, data []byte, mod time.Time) {
	t.Helper()
	mustNoErr(t, os.WriteFile(path, data, 0o600))
	mustNoErr(t, os.Chtimes(path, mod, mod))
}

func served(t *testing.T, f *certs.Files) time.Time {
	t.Helper()
	c, err := f.GetCertificate(&tls.ClientHelloInfo{ServerName: "subs.example.com"})
	mustNoErr(t, err)
	return c.Leaf.NotAfter
}

// servingPair writes a certificate for subs.example.com valid from now+from
// to now+until and its key into a temporary directory, and returns their
// paths, now (a fixed time) and a clock set to it.
func servingPair(t *testing.T, from, until time.Duration) (certFile, keyFile string, now time.Time, clk *clock) {
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c, k := pair(t, "subs.example.com", now.Add(from), now.Add(until))
	write(t, certFile, c, now)
	write(t, keyFile, k, now)
	return certFile, keyFile, now, newClock(now)
}

func TestFilesReload(t *testing.T) {
	certFile, keyFile, now, clk := servingPair(t, day(-1), day(60))

	ev := &events{}
	f, err := certs.NewFiles(certs.FilesConfig{CertFile: certFile, KeyFile: keyFile, Host: "subs.example.com", Now: clk.Now, OnEvent: ev.add})
	mustNoErr(t, err)
	select {
	case <-f.Ready():
	default:
		t.Fatal("not ready after NewFiles")
	}
	if got := served(t, f); !got.Equal(now.Add(day(60))) {
		t.Fatalf("serves %v", got)
	}

	// The operator's renewal tool writes a new pair: served after the next
	// look at the files.
	c2, k2 := pair(t, "subs.example.com", now, now.Add(day(90)))
	write(t, certFile, c2, now.Add(time.Minute))
	write(t, keyFile, k2, now.Add(time.Minute))
	if got := served(t, f); !got.Equal(now.Add(day(60))) {
		t.Fatal("looked at the files again within StatEvery")
	}
	clk.Add(2 * time.Second)
	if got := served(t, f); !got.Equal(now.Add(day(90))) {
		t.Fatalf("after the files changed, serves the certificate expiring %v", got)
	}
	if len(ev.of(certs.EventRenewed)) != 1 {
		t.Fatalf("events %v, want one renewed", ev.kinds())
	}

	// Half-way through the next renewal the certificate does not match the
	// key: the old pair stays in use and nothing is reported yet.
	c3, k3 := pair(t, "subs.example.com", now, now.Add(day(120)))
	write(t, certFile, c3, now.Add(2*time.Minute))
	clk.Add(2 * time.Second)
	if got := served(t, f); !got.Equal(now.Add(day(90))) {
		t.Fatalf("serves %v during a half-written renewal", got)
	}
	if err := f.Check(context.Background()); err == nil {
		t.Fatal("Check did not report the mismatched pair")
	}
	if len(ev.of(certs.EventError)) != 0 {
		t.Fatal("reported a half-written renewal at once")
	}
	// Still broken after the grace period: reported once.
	clk.Add(15 * time.Second)
	f.Check(context.Background())
	f.Check(context.Background())
	if errs := ev.of(certs.EventError); len(errs) != 1 || !strings.Contains(errs[0].Err.Error(), "still serving") {
		t.Fatalf("error events %v, want one", errs)
	}
	if st := f.Status(); st.LastError == "" || !st.NotAfter.Equal(now.Add(day(90))) {
		t.Fatalf("status %+v", st)
	}
	// The key arrives: the new pair is served.
	write(t, keyFile, k3, now.Add(3*time.Minute))
	mustNoErr(t, f.Check(context.Background()))
	if got := served(t, f); !got.Equal(now.Add(day(120))) {
		t.Fatalf("serves %v after the key arrived", got)
	}
	if st := f.Status(); st.LastError != "" {
		t.Fatalf("status keeps the old error: %+v", st)
	}
}

func TestFilesExpiryWatch(t *testing.T) {
	certFile, keyFile, now, clk := servingPair(t, day(-70), day(20))
	ev := &events{}
	f, err := certs.NewFiles(certs.FilesConfig{CertFile: certFile, KeyFile: keyFile, Now: clk.Now, OnEvent: ev.add})
	mustNoErr(t, err)
	ctx := context.Background()

	if f.Status().Expiring || len(ev.of(certs.EventExpiring)) != 0 {
		t.Fatal("20 days left counts as expiring")
	}
	clk.Add(day(6) + time.Hour) // 13 days 23 hours left
	f.Check(ctx)
	if !f.Status().Expiring || len(ev.of(certs.EventExpiring)) != 1 {
		t.Fatalf("status %+v, events %v: want expiring", f.Status(), ev.kinds())
	}
	clk.Add(time.Hour)
	f.Check(ctx)
	if n := len(ev.of(certs.EventExpiring)); n != 1 {
		t.Fatalf("%d expiring events within the remind period, want 1", n)
	}
	clk.Add(certs.DefaultRemindEvery)
	f.Check(ctx)
	if n := len(ev.of(certs.EventExpiring)); n != 2 {
		t.Fatalf("%d expiring events after the remind period, want 2", n)
	}

	// Renewed files end the warning.
	c2, k2 := pair(t, "subs.example.com", clk.Now(), clk.Now().Add(day(90)))
	write(t, certFile, c2, now.Add(time.Hour))
	write(t, keyFile, k2, now.Add(time.Hour))
	f.Check(ctx)
	if f.Status().Expiring {
		t.Fatal("still expiring after renewal")
	}
}

func TestNewFilesRefuses(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	good, goodKey := pair(t, "subs.example.com", now.Add(-time.Hour), now.Add(day(30)))
	_, otherKey := pair(t, "subs.example.com", now.Add(-time.Hour), now.Add(day(30)))
	expired, expiredKey := pair(t, "subs.example.com", now.Add(-day(100)), now.Add(-day(10)))
	files := map[string][]byte{
		"good.pem": good, "good.key": goodKey, "other.key": otherKey,
		"expired.pem": expired, "expired.key": expiredKey, "junk.pem": []byte("not pem"),
	}
	for name, data := range files {
		write(t, filepath.Join(dir, name), data, now)
	}
	for _, tc := range []struct {
		name, cert, key, host, want string
	}{
		{"missing cert", "nope.pem", "good.key", "", "certificate file"},
		{"missing key", "good.pem", "nope.key", "", "key file"},
		{"mismatched key", "good.pem", "other.key", "", "private key does not match"},
		{"junk", "junk.pem", "good.key", "", "failed to find any PEM data"},
		{"expired", "expired.pem", "expired.key", "", "expired"},
		{"other host", "good.pem", "good.key", "other.example.com", "does not cover other.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := certs.NewFiles(certs.FilesConfig{CertFile: filepath.Join(dir, tc.cert), KeyFile: filepath.Join(dir, tc.key), Host: tc.host})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "certs: ") {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := certs.NewFiles(certs.FilesConfig{CertFile: filepath.Join(dir, "good.pem"), KeyFile: filepath.Join(dir, "good.key"), Host: "subs.example.com"}); err != nil {
		t.Fatal(err)
	}
}

// TestFilesMissingFileGrace: a renewal tool that replaces the key by
// deleting it and writing a new one leaves a moment with no key file; like
// a half-written pair, that gets the reload grace before an error is
// raised (found by review: a missing file was reported at once).
func TestFilesMissingFileGrace(t *testing.T) {
	certFile, keyFile, now, clk := servingPair(t, day(-1), day(60))
	ev := &events{}
	f, err := certs.NewFiles(certs.FilesConfig{CertFile: certFile, KeyFile: keyFile, Host: "subs.example.com", Now: clk.Now, OnEvent: ev.add})
	mustNoErr(t, err)
	c2, k2 := pair(t, "subs.example.com", now, now.Add(day(90)))
	write(t, certFile, c2, now.Add(time.Minute))
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Second)
	if err := f.Check(context.Background()); err == nil {
		t.Fatal("Check with the key file missing succeeded")
	}
	if n := len(ev.of(certs.EventError)); n != 0 {
		t.Fatalf("a missing key was reported at once (%d error events), without the grace", n)
	}
	write(t, keyFile, k2, now.Add(time.Minute))
	mustNoErr(t, f.Check(context.Background()))
	// Missing for longer than the grace: reported.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	f.Check(context.Background())
	clk.Add(time.Minute)
	f.Check(context.Background())
	if n := len(ev.of(certs.EventError)); n != 1 {
		t.Errorf("a key missing for a minute: %d error events, want 1", n)
	}
}
