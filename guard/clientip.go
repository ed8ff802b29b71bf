package guard

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientIP returns the client address of r, whether it came over HTTPS,
// and whether the address was taken from X-Forwarded-For.
//
// X-Forwarded-For and X-Forwarded-Proto are believed only when the
// connection comes from a trusted proxy. The list is read from the right:
// every proxy appends the address it received the request from, so the
// right-most entry that is not a trusted proxy is the first one nobody
// trusted could have forged.
func (g *Guard) clientIP(r *http.Request) (ip netip.Addr, https, forwarded bool) {
	ip = parseAddr(r.RemoteAddr)
	https = r.TLS != nil
	if !ip.IsValid() || !contains(g.trusted, ip) {
		return ip, https, false
	}
	if proto := r.Header.Get("X-Forwarded-Proto"); proto != "" {
		first, _, _ := strings.Cut(proto, ",")
		https = strings.EqualFold(strings.TrimSpace(first), "https")
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := parseAddr(strings.TrimSpace(hops[i]))
		if !hop.IsValid() {
			break // garbage: stop at the last address we could trust
		}
		ip, forwarded = hop, true
		if !contains(g.trusted, hop) {
			break
		}
	}
	return ip, https, forwarded
}

// parseAddr parses "ip", "ip:port" or "[ipv6]:port", unmapping IPv4-mapped
// IPv6 addresses. It returns the zero Addr for anything else.
func parseAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if a, err := netip.ParseAddr(s); err == nil {
		return a.WithZone("").Unmap()
	}
	return netip.Addr{}
}

// ParsePrefixes parses a list of IP addresses and CIDR prefixes separated by
// commas or spaces ("10.0.0.0/8, 192.0.2.7 2001:db8::/32"). A bare address
// is its own single-address prefix. Prefixes are masked to their length.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		p, err := ParsePrefix(f, 0)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ParsePrefix parses a CIDR prefix or a single address. A bare IPv6 address
// becomes its /v6Bits prefix when v6Bits is between 1 and 128, its /128
// otherwise; a bare IPv4 address its /32. The result is masked.
func ParsePrefix(s string, v6Bits int) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, &PrefixError{Input: s}
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(0, p.Bits()-96))
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, &PrefixError{Input: s}
	}
	a = a.Unmap()
	bits := a.BitLen()
	if a.Is6() && v6Bits > 0 && v6Bits <= 128 {
		bits = v6Bits
	}
	p, _ := a.Prefix(bits)
	return p, nil
}

// PrefixError reports text that is neither an IP address nor a CIDR prefix.
type PrefixError struct{ Input string }

// Error names the text that could not be parsed.
func (e *PrefixError) Error() string {
	return "guard: " + quote(e.Input) + " is not an IP address or CIDR prefix"
}

func quote(s string) string { return "\"" + clip(s) + "\"" }
