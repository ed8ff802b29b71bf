package eventsub

import (
	"crypto/hmac"
	"crypto/sha256"
	"hash"
	"sync"
)

// signaturePrefix starts every Twitch-Eventsub-Message-Signature value.
const signaturePrefix = "sha256="

// signatureLen is the length of a well-formed signature header value.
const signatureLen = len(signaturePrefix) + 2*sha256.Size

// Verify reports whether signature, the value of the
// Twitch-Eventsub-Message-Signature header, is "sha256=" followed by the hex
// HMAC-SHA256 of id + timestamp + body keyed with secret. Hex digits may be
// upper or lower case. The comparison takes constant time. An empty secret
// never verifies.
func Verify(secret, id, timestamp string, body []byte, signature string) bool {
	want, ok := parseSignature(signature)
	if !ok || secret == "" {
		return false
	}
	m := newMAC(secret)
	return m.verify(id, timestamp, body, &want)
}

// parseSignature decodes a "sha256=<64 hex>" header value. It does not
// allocate.
func parseSignature(s string) (sum [sha256.Size]byte, ok bool) {
	if len(s) != signatureLen || s[:len(signaturePrefix)] != signaturePrefix {
		return sum, false
	}
	s = s[len(signaturePrefix):]
	for i := range sum {
		hi, ok1 := unhex(s[2*i])
		lo, ok2 := unhex(s[2*i+1])
		if !ok1 || !ok2 {
			return sum, false
		}
		sum[i] = hi<<4 | lo
	}
	return sum, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// mac is a reusable HMAC-SHA256 keyed with one secret, with scratch space so
// that verifying a message does not allocate.
type mac struct {
	secret string
	h      hash.Hash
	buf    []byte // id + timestamp
	sum    [sha256.Size]byte
}

func newMAC(secret string) *mac {
	return &mac{secret: secret, h: hmac.New(sha256.New, []byte(secret)), buf: make([]byte, 0, 128)}
}

// verify computes the HMAC of id+timestamp+body and compares it with want in
// constant time. The mac is reset and can be reused afterwards.
func (m *mac) verify(id, timestamp string, body []byte, want *[sha256.Size]byte) bool {
	m.h.Reset()
	m.buf = append(append(m.buf[:0], id...), timestamp...)
	m.h.Write(m.buf)
	m.h.Write(body)
	got := m.h.Sum(m.sum[:0])
	return hmac.Equal(got, want[:])
}

// macPool hands out macs keyed with the current secret. A mac keyed with a
// different secret (the secret was changed) is dropped and rebuilt.
type macPool struct{ p sync.Pool }

func (p *macPool) get(secret string) *mac {
	if m, _ := p.p.Get().(*mac); m != nil && m.secret == secret {
		return m
	}
	return newMAC(secret)
}

func (p *macPool) put(m *mac) {
	if cap(m.buf) > 4096 { // an absurd id or timestamp; don't keep its buffer
		return
	}
	p.p.Put(m)
}
