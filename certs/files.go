package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// FilesConfig configures NewFiles. Fields are read once, by NewFiles.
type FilesConfig struct {
	// CertFile is the PEM certificate chain, leaf first (certbot's
	// fullchain.pem). Required.
	CertFile string
	// KeyFile is the PEM private key (certbot's privkey.pem). Required.
	KeyFile string
	// Host, if not empty, must be covered by the certificate (a wildcard
	// counts); NewFiles and reloads refuse a certificate that does not.
	Host string

	// ExpiryWarning is how long before expiry EventExpiring starts. Zero
	// means DefaultExpiryWarning (14 days).
	ExpiryWarning time.Duration
	// RemindEvery is how often lasting problems are emitted again. Zero
	// means DefaultRemindEvery (6 hours).
	RemindEvery time.Duration
	// CheckEvery is how often Run calls Check. Zero means one minute.
	CheckEvery time.Duration
	// StatEvery is how often a TLS handshake may look at the files'
	// modification times. Zero means one second.
	StatEvery time.Duration
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// OnEvent receives events; see AutocertConfig.OnEvent. Nil drops them.
	OnEvent func(Event)
}

// Files serves a certificate and key from files and reloads them when they
// change. Create it with NewFiles; its methods are safe for concurrent use.
type Files struct {
	cfg   FilesConfig
	mon   *monitor
	check time.Duration
	statN time.Duration

	cur      atomic.Pointer[tls.Certificate]
	lastStat atomic.Int64 // Unix nanoseconds of the last look at the files

	mu         sync.Mutex // one reload at a time
	sig        fileSig    // of the files cur was loaded from
	failing    bool       // the last reload failed
	failedSig  fileSig    // of files that failed to load (zero when one was missing)
	failedAt   time.Time  // when failedSig first failed
	failedSaid bool       // failedSig's failure was emitted
}

// fileSig identifies a version of the two files.
type fileSig struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// reloadGrace is how long a new pair may keep failing to load before it is
// reported: certbot and friends replace the two files one after the other.
const reloadGrace = 10 * time.Second

// NewFiles loads the certificate and key, and fails when they cannot be
// read, do not match, have expired or do not cover Host.
func NewFiles(cfg FilesConfig) (*Files, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("certs: files: CertFile and KeyFile are required")
	}
	f := &Files{
		cfg:   cfg,
		mon:   newMonitor("files", cfg.Host, cfg.Now, cfg.ExpiryWarning, cfg.RemindEvery, cfg.OnEvent),
		check: orDefault(cfg.CheckEvery, time.Minute),
		statN: orDefault(cfg.StatEvery, time.Second),
	}
	sig, err := f.stat()
	if err != nil {
		return nil, err
	}
	cert, err := f.load()
	if err != nil {
		return nil, err
	}
	f.cur.Store(cert)
	f.sig = sig
	f.lastStat.Store(f.mon.now().UnixNano())
	f.mon.serving(cert.Leaf)
	return f, nil
}

// GetCertificate implements tls.Config.GetCertificate: it returns the
// current certificate, reloading the files first if they changed (looked at
// no more than once per StatEvery).
func (f *Files) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := f.mon.now()
	if last := f.lastStat.Load(); now.UnixNano()-last >= int64(f.statN) && f.mu.TryLock() {
		f.lastStat.Store(now.UnixNano())
		f.reloadLocked(now)
		f.mu.Unlock()
	}
	return f.cur.Load(), nil
}

// TLSConfig returns the configuration for the HTTPS listener.
func (f *Files) TLSConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: f.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
		MinVersion:     tls.VersionTLS12,
	}
}

// Ready returns a channel that is closed: NewFiles has loaded a certificate.
func (f *Files) Ready() <-chan struct{} { return f.mon.ready }

// Status returns the current status.
func (f *Files) Status() Status { return f.mon.status() }

// Check reloads the files if they changed, updates Status and emits events:
// EventRenewed when a newer certificate was loaded, EventError when a
// changed pair keeps failing to load (the old one stays in use),
// EventExpiring when the served one is close to expiry. It returns the
// reload error, if any.
func (f *Files) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.mon.now()
	f.lastStat.Store(now.UnixNano())
	err := f.reloadLocked(now)
	f.mon.serving(f.cur.Load().Leaf)
	return err
}

// Run calls Check every CheckEvery until ctx is done, then returns nil.
func (f *Files) Run(ctx context.Context) error {
	t := time.NewTicker(f.check)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			f.Check(ctx)
		}
	}
}

// reloadLocked loads the files if they changed since the current
// certificate was loaded. f.mu must be held.
func (f *Files) reloadLocked(now time.Time) error {
	sig, err := f.stat()
	if err == nil && sig == f.sig {
		return nil
	}
	var cert *tls.Certificate
	if err == nil {
		cert, err = f.load()
	}
	if err == nil {
		f.cur.Store(cert)
		f.sig, f.failing, f.failedSig, f.failedSaid = sig, false, fileSig{}, false
		f.mon.serving(cert.Leaf)
		return nil
	}
	if !f.failing || sig != f.failedSig {
		f.failing, f.failedSig, f.failedAt, f.failedSaid = true, sig, now, false
	}
	err = fmt.Errorf("%w; still serving the certificate loaded before", err)
	if !f.failedSaid && now.Sub(f.failedAt) >= reloadGrace {
		f.failedSaid = true
		f.mon.failed(err)
	}
	return err
}

func (f *Files) stat() (fileSig, error) {
	c, err := os.Stat(f.cfg.CertFile)
	if err != nil {
		return fileSig{}, fmt.Errorf("certs: certificate file: %w", err)
	}
	k, err := os.Stat(f.cfg.KeyFile)
	if err != nil {
		return fileSig{}, fmt.Errorf("certs: key file: %w", err)
	}
	return fileSig{certMod: c.ModTime(), keyMod: k.ModTime(), certSize: c.Size(), keySize: k.Size()}, nil
}

// load reads and checks the pair.
func (f *Files) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(f.cfg.CertFile, f.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: load %s and %s: %w", f.cfg.CertFile, f.cfg.KeyFile, err)
	}
	leaf := cert.Leaf
	if now := f.mon.now(); now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("certs: certificate in %s expired at %s", f.cfg.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if f.cfg.Host != "" {
		if err := leaf.VerifyHostname(f.cfg.Host); err != nil {
			return nil, fmt.Errorf("certs: certificate in %s does not cover %s: %w", f.cfg.CertFile, f.cfg.Host, err)
		}
	}
	return &cert, nil
}
