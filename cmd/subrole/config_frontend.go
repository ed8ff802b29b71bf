package main

import (
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/subrole/subrole/guard"
)

// The values of SUBROLE_TLS.
const (
	tlsAutocert = "autocert" // certificates from an ACME CA, HTTPS on SUBROLE_HTTPS_LISTEN
	tlsFiles    = "files"    // certificate and key files, HTTPS on SUBROLE_HTTPS_LISTEN
	tlsProxy    = "proxy"    // plain HTTP on SUBROLE_LISTEN behind a TLS-terminating proxy
	tlsOff      = "off"      // plain HTTP on SUBROLE_LISTEN, development only
)

// frontendConfig is the part of the configuration about serving on the
// internet: TLS, proxies, the ban list. Its zero value is never used:
// loadFrontendConfig fills every field.
type frontendConfig struct {
	TLS           string // one of the tls* constants
	HTTPSListen   string // autocert and files
	HTTPListen    string // autocert and files; "" when off
	ACMEDirectory string
	ACMEEmail     string
	TLSCertFile   string
	TLSKeyFile    string

	TrustedProxies []netip.Prefix
	AllowIPs       []netip.Prefix
	HSTSSubdomains bool

	RateLimit     float64 // requests per second; negative: off
	RateBurst     int
	BanDuration   time.Duration
	BanMax        time.Duration
	BanIPv6Prefix int
	AdminSocket   string // "" when off
}

// loadFrontendConfig reads and checks the frontend settings into c; c.Data
// and c.PublicURL must already be set (PublicURL may be nil if invalid).
func loadFrontendConfig(c *config, get func(string) string, bad func(name, format string, args ...any)) {
	f := &c.frontendConfig
	https := c.PublicURL != nil && c.PublicURL.Scheme == "https"
	f.TLS = strings.ToLower(get("SUBROLE_TLS"))
	if f.TLS == "" {
		f.TLS = tlsOff
		if https {
			f.TLS = tlsAutocert
		}
	}
	switch f.TLS {
	case tlsAutocert:
		if c.PublicURL != nil {
			host := c.PublicURL.Hostname()
			switch {
			case !https:
				bad("SUBROLE_TLS", "autocert needs an https SUBROLE_PUBLIC_URL, got %q", c.PublicURL.String())
			case net.ParseIP(host) != nil || !strings.Contains(host, "."):
				bad("SUBROLE_TLS", "autocert needs a DNS name in SUBROLE_PUBLIC_URL (CAs do not issue for %q); use files or proxy", host)
			}
		}
	case tlsFiles:
		f.TLSCertFile, f.TLSKeyFile = get("SUBROLE_TLS_CERT_FILE"), get("SUBROLE_TLS_KEY_FILE")
		if f.TLSCertFile == "" {
			bad("SUBROLE_TLS_CERT_FILE", "is required with SUBROLE_TLS=files")
		}
		if f.TLSKeyFile == "" {
			bad("SUBROLE_TLS_KEY_FILE", "is required with SUBROLE_TLS=files")
		}
	case tlsProxy, tlsOff:
	default:
		bad("SUBROLE_TLS", "must be autocert, files, proxy or off, got %q", f.TLS)
	}
	if c.PublicURL != nil && c.PublicURL.Path != "" && f.TLS != tlsProxy {
		// subrole serves its routes at the root; a path works only behind a
		// proxy that strips it.
		bad("SUBROLE_PUBLIC_URL", "may carry a path (%q) only with SUBROLE_TLS=proxy behind a proxy that strips it; subrole serves at the root", c.PublicURL.Path)
	}

	hostPort := func(name string) string {
		v := get(name)
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad(name, "must be host:port or :port, got %q", v)
		}
		return v
	}
	if f.TLS == tlsAutocert || f.TLS == tlsFiles {
		f.HTTPSListen = hostPort("SUBROLE_HTTPS_LISTEN")
		if v := get("SUBROLE_HTTP_LISTEN"); !strings.EqualFold(v, "off") {
			f.HTTPListen = hostPort("SUBROLE_HTTP_LISTEN")
		}
	}
	if f.TLS == tlsAutocert {
		f.ACMEDirectory = get("SUBROLE_ACME_DIRECTORY")
		if u, err := url.Parse(f.ACMEDirectory); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("SUBROLE_ACME_DIRECTORY", "must be an https URL (RFC 8555), got %q", f.ACMEDirectory)
		}
		if f.ACMEEmail = get("SUBROLE_ACME_EMAIL"); f.ACMEEmail != "" {
			if a, err := mail.ParseAddress(f.ACMEEmail); err != nil || a.Address != f.ACMEEmail {
				bad("SUBROLE_ACME_EMAIL", "must be a plain email address like ops@example.com, got %q", f.ACMEEmail)
			}
		}
	}

	prefixes := func(name string) []netip.Prefix {
		ps, err := guard.ParsePrefixes(get(name))
		if err != nil {
			bad(name, "%v", strings.TrimPrefix(err.Error(), "guard: "))
		}
		return ps
	}
	f.TrustedProxies = prefixes("SUBROLE_TRUSTED_PROXIES")
	switch {
	case len(f.TrustedProxies) > 0 && (f.TLS == tlsAutocert || f.TLS == tlsFiles):
		bad("SUBROLE_TRUSTED_PROXIES", "only applies with SUBROLE_TLS=proxy or off: with %s clients connect directly, and forwarded headers must not be believed", f.TLS)
	case len(f.TrustedProxies) == 0 && f.TLS == tlsProxy:
		f.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}
	}
	f.AllowIPs = prefixes("SUBROLE_ALLOW_IPS")
	f.HSTSSubdomains = onOff("SUBROLE_HSTS_SUBDOMAINS", get, bad)

	if r, err := strconv.ParseFloat(get("SUBROLE_RATE_LIMIT"), 64); err != nil || r < 0 || r > 1e6 {
		bad("SUBROLE_RATE_LIMIT", "must be a number of requests per second (0 turns limiting off), got %q", get("SUBROLE_RATE_LIMIT"))
	} else if f.RateLimit = r; r == 0 {
		f.RateLimit = -1
	}
	if b, err := strconv.Atoi(get("SUBROLE_RATE_BURST")); err != nil || b < 1 {
		bad("SUBROLE_RATE_BURST", "must be a whole number of requests, at least 1, got %q", get("SUBROLE_RATE_BURST"))
	} else {
		f.RateBurst = b
	}
	f.BanDuration = positiveDuration("SUBROLE_BAN_DURATION", get, bad)
	f.BanMax = positiveDuration("SUBROLE_BAN_MAX", get, bad)
	if f.BanDuration > 0 && f.BanMax > 0 && f.BanMax < f.BanDuration {
		bad("SUBROLE_BAN_MAX", "must not be shorter than SUBROLE_BAN_DURATION (%s)", get("SUBROLE_BAN_DURATION"))
	}
	f.BanIPv6Prefix = ipv6Prefix(get, bad)
	f.AdminSocket = adminSocket(c.Data, get)
}

// onOff parses a switch.
func onOff(name string, get func(string) string, bad func(string, string, ...any)) bool {
	switch v := strings.ToLower(get(name)); v {
	case "on", "true", "1", "yes":
		return true
	case "off", "false", "0", "no", "":
		return false
	default:
		bad(name, "must be on or off, got %q", v)
		return false
	}
}

func positiveDuration(name string, get func(string) string, bad func(string, string, ...any)) time.Duration {
	d, err := parseDuration(get(name))
	if err != nil || d <= 0 {
		bad(name, "must be a positive duration like 1h or 3d, got %q", get(name))
		return 0
	}
	return d
}

func ipv6Prefix(get func(string) string, bad func(string, string, ...any)) int {
	n, err := strconv.Atoi(get("SUBROLE_BAN_IPV6_PREFIX"))
	if err != nil || n < 16 || n > 128 {
		bad("SUBROLE_BAN_IPV6_PREFIX", "must be a prefix length from 16 to 128, got %q", get("SUBROLE_BAN_IPV6_PREFIX"))
		return guard.DefaultIPv6Prefix
	}
	return n
}

// adminSocket returns the admin socket path, "" when off.
func adminSocket(data string, get func(string) string) string {
	switch v := get("SUBROLE_ADMIN_SOCKET"); {
	case strings.EqualFold(v, "off"):
		return ""
	case v != "":
		return v
	default:
		return data + ".sock"
	}
}
