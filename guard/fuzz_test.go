package guard

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// FuzzClientIP feeds the client address logic arbitrary remote addresses and
// X-Forwarded-For / X-Forwarded-Proto headers, which reach the service from
// the network. It checks that it never panics, that forwarded headers are
// believed only from a trusted proxy, that a forwarded address is one of the
// listed hops, and that the result is never a trusted proxy while an
// untrusted hop stands further right.
func FuzzClientIP(f *testing.F) {
	for _, seed := range [][3]string{
		{"10.0.0.2:443", "203.0.113.7", "https"},
		{"10.0.0.2:443", "203.0.113.7, 10.0.0.9", "http"},
		{"[::1]:8080", "2001:db8::1, [2001:db8::2]:99, ::ffff:192.0.2.1", "HTTPS, http"},
		{"192.0.2.9:1234", "10.0.0.1", "https"},
		{"10.0.0.2:443", "garbage, 198.51.100.4", ""},
		{"10.0.0.2", " , ,", "https"},
		{"@", "fe80::1%eth0", "\x00"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	trusted, err := ParsePrefixes("10.0.0.0/8, 127.0.0.1, ::1")
	if err != nil {
		f.Fatal(err)
	}
	g := &Guard{trusted: trusted}
	f.Fuzz(func(t *testing.T, remote, xff, xfp string) {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{}}
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		if xfp != "" {
			r.Header.Set("X-Forwarded-Proto", xfp)
		}
		ip, https, forwarded := g.clientIP(r)
		direct := parseAddr(remote)
		if !direct.IsValid() || !contains(trusted, direct) {
			if forwarded || https || ip != direct {
				t.Fatalf("untrusted peer %q: got %v https=%v forwarded=%v; headers must be ignored", remote, ip, https, forwarded)
			}
			return
		}
		if !forwarded {
			if ip != direct {
				t.Fatalf("not forwarded, but the address %v is not the peer's %v", ip, direct)
			}
			return
		}
		var hops []netip.Addr
		for _, h := range strings.Split(xff, ",") {
			hops = append(hops, parseAddr(strings.TrimSpace(h)))
		}
		found := -1
		for i := len(hops) - 1; i >= 0; i-- {
			if hops[i] == ip {
				found = i
				break
			}
		}
		if found < 0 {
			t.Fatalf("forwarded address %v is not in X-Forwarded-For %q", ip, xff)
		}
		for _, h := range hops[found+1:] {
			if !h.IsValid() || !contains(trusted, h) {
				t.Fatalf("returned %v although the hop %v to its right is not a trusted proxy (%q)", ip, h, xff)
			}
		}
	})
}
