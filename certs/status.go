package certs

import (
	"crypto/x509"
	"fmt"
	"sync"
	"time"
)

// DefaultExpiryWarning is how long before expiry a certificate counts as
// expiring when ExpiryWarning is zero.
const DefaultExpiryWarning = 14 * 24 * time.Hour

// DefaultRemindEvery is how often a lasting problem (an expiring
// certificate, an overdue renewal) is reported again when RemindEvery is
// zero.
const DefaultRemindEvery = 6 * time.Hour

// Status is a snapshot of a certificate source, for /readyz, metrics and
// dashboards.
type Status struct {
	// Mode is "autocert" or "files".
	Mode string
	// Host is the name the certificate is for ("" for Files without a Host).
	Host string
	// Ready reports that a certificate is being served.
	Ready bool
	// NotBefore, NotAfter and Issuer describe the served certificate; zero
	// before Ready.
	NotBefore, NotAfter time.Time
	Issuer              string
	// Expiring reports that fewer than the configured ExpiryWarning remain
	// before NotAfter (or that the certificate has expired).
	Expiring bool
	// LastError is the most recent failure to obtain, renew or reload, ""
	// when the last attempt succeeded; LastErrorAt is when it happened.
	LastError   string
	LastErrorAt time.Time
}

// EventKind says what an Event reports.
type EventKind string

// The kinds of Event. The service logs EventObtained and EventRenewed at
// info level, EventACMEProblem at warn level, the others at error level.
const (
	// EventObtained: the first certificate is being served; Ready is closed.
	EventObtained EventKind = "obtained"
	// EventRenewed: a certificate with a later NotAfter replaced the served one.
	EventRenewed EventKind = "renewed"
	// EventACMEProblem: the ACME server reported a problem, or could not be
	// reached; Err is an *ACMEError. The operation may still succeed (autocert
	// tries tls-alpn-01, then http-01), so it is a warning.
	EventACMEProblem EventKind = "acme_problem"
	// EventError: obtaining, renewing or reloading failed; Err says why.
	EventError EventKind = "error"
	// EventExpiring: fewer than ExpiryWarning remain; repeated every
	// RemindEvery while it lasts.
	EventExpiring EventKind = "expiring"
)

// Event is something a certificate source wants an operator to know.
type Event struct {
	Kind EventKind
	// Host is the certificate's host name.
	Host string
	// NotAfter is the served certificate's expiry, zero if none is served.
	NotAfter time.Time
	// Err is the failure for EventACMEProblem and EventError, nil otherwise.
	Err error
}

// ACMEError is a problem document returned by the ACME server, a challenge
// or order the server marked invalid, or a failure to reach the server.
type ACMEError struct {
	// URL is the ACME resource that was requested.
	URL string
	// Status is the HTTP status of the response that carried the problem,
	// 0 when the server was not reached.
	Status int
	// Type is the problem type, e.g. "urn:ietf:params:acme:error:connection".
	Type string
	// Detail is the server's explanation.
	Detail string
	// Challenge is the challenge type ("tls-alpn-01", "http-01") when the
	// problem belongs to a challenge.
	Challenge string
	// Err is the transport error when the server was not reached.
	Err error
}

// Error describes the problem in one line.
func (e *ACMEError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("certs: ACME request %s: %v", e.URL, e.Err)
	}
	s := "certs: ACME server: " + e.Type
	if e.Challenge != "" {
		s = "certs: ACME " + e.Challenge + " challenge: " + e.Type
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Status >= 400 {
		s += fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	return s
}

// Unwrap returns the transport error, if any.
func (e *ACMEError) Unwrap() error { return e.Err }

// monitor is the status, events and Ready channel shared by Autocert and
// Files.
type monitor struct {
	now     func() time.Time
	warn    time.Duration
	remind  time.Duration
	onEvent func(Event)

	ready     chan struct{}
	readyOnce sync.Once

	mu           sync.Mutex
	st           Status
	lastExpiring time.Time // when EventExpiring was last emitted
	lastOverdue  time.Time // when the overdue-renewal EventError was last emitted
	lastACME     *ACMEError
	lastACMEAt   time.Time
}

func newMonitor(mode, host string, now func() time.Time, warn, remind time.Duration, onEvent func(Event)) *monitor {
	if now == nil {
		now = time.Now
	}
	if warn <= 0 {
		warn = DefaultExpiryWarning
	}
	if remind <= 0 {
		remind = DefaultRemindEvery
	}
	return &monitor{
		now: now, warn: warn, remind: remind, onEvent: onEvent,
		ready: make(chan struct{}),
		st:    Status{Mode: mode, Host: host},
	}
}

func (m *monitor) emit(e Event) {
	if m.onEvent != nil {
		m.onEvent(e)
	}
}

// isReady reports whether a certificate is served.
func (m *monitor) isReady() bool {
	select {
	case <-m.ready:
		return true
	default:
		return false
	}
}

// status returns a copy of the current status.
func (m *monitor) status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st
}

// serving records the certificate being served after a successful obtain,
// reload or check, and reports what changed: the first certificate, a
// renewal, an approaching expiry.
func (m *monitor) serving(leaf *x509.Certificate) {
	now := m.now()
	m.mu.Lock()
	first := !m.st.Ready
	renewed := m.st.Ready && leaf.NotAfter.After(m.st.NotAfter)
	changed := first || !leaf.NotAfter.Equal(m.st.NotAfter) || !leaf.NotBefore.Equal(m.st.NotBefore)
	m.st.Ready = true
	m.st.NotBefore, m.st.NotAfter = leaf.NotBefore, leaf.NotAfter
	m.st.Issuer = leaf.Issuer.CommonName
	if changed {
		m.st.LastError, m.st.LastErrorAt = "", time.Time{}
		m.lastACME = nil
		m.lastOverdue = time.Time{}
	}
	expiring := leaf.NotAfter.Sub(now) < m.warn
	remindExpiring := expiring && (!m.st.Expiring || changed || now.Sub(m.lastExpiring) >= m.remind)
	m.st.Expiring = expiring
	if remindExpiring {
		m.lastExpiring = now
	}
	host := m.st.Host
	m.mu.Unlock()

	if first {
		m.readyOnce.Do(func() { close(m.ready) })
		m.emit(Event{Kind: EventObtained, Host: host, NotAfter: leaf.NotAfter})
	} else if renewed {
		m.emit(Event{Kind: EventRenewed, Host: host, NotAfter: leaf.NotAfter})
	}
	if remindExpiring {
		m.emit(Event{Kind: EventExpiring, Host: host, NotAfter: leaf.NotAfter})
	}
}

// failed records a failure and emits it as an EventError.
func (m *monitor) failed(err error) {
	m.mu.Lock()
	m.st.LastError, m.st.LastErrorAt = err.Error(), m.now()
	host, notAfter := m.st.Host, m.st.NotAfter
	m.mu.Unlock()
	m.emit(Event{Kind: EventError, Host: host, NotAfter: notAfter, Err: err})
}

// acmeProblem records a problem seen in the ACME conversation and emits it
// as an EventACMEProblem. The same problem seen again within a minute (a
// client re-reading an invalid authorization) is not emitted again.
func (m *monitor) acmeProblem(p *ACMEError) {
	now := m.now()
	m.mu.Lock()
	dup := m.lastACME != nil && m.lastACME.Type == p.Type && m.lastACME.Detail == p.Detail &&
		(m.lastACME.Err == nil) == (p.Err == nil) && now.Sub(m.lastACMEAt) < time.Minute
	m.lastACME, m.lastACMEAt = p, now
	m.st.LastError, m.st.LastErrorAt = p.Error(), now
	host, notAfter := m.st.Host, m.st.NotAfter
	m.mu.Unlock()
	if !dup {
		m.emit(Event{Kind: EventACMEProblem, Host: host, NotAfter: notAfter, Err: p})
	}
}

// lastProblem returns the last ACME problem seen, nil if none since the
// served certificate changed.
func (m *monitor) lastProblem() *ACMEError {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastACME
}

// overdue emits an EventError about a renewal that should have happened by
// now, at most once per remind period.
func (m *monitor) overdue(err error) {
	now := m.now()
	m.mu.Lock()
	if !m.lastOverdue.IsZero() && now.Sub(m.lastOverdue) < m.remind {
		m.mu.Unlock()
		return
	}
	m.lastOverdue = now
	m.mu.Unlock()
	m.failed(err)
}
