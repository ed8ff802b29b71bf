package main

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/subrole/subrole/certs"
)

func TestFrontendConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		name, publicURL, tls string
		want                 string
	}{
		{"https url means autocert", "https://subs.example.com", "", tlsAutocert},
		{"http url means off", "http://127.0.0.1:8080", "", tlsOff},
		{"explicit proxy", "https://subs.example.com", "proxy", tlsProxy},
		{"case does not matter", "https://subs.example.com", "Proxy", tlsProxy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := validEnv()
			env["SUBROLE_PUBLIC_URL"], env["SUBROLE_TLS"] = tc.publicURL, tc.tls
			c, err := loadConfig(func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if c.TLS != tc.want {
				t.Fatalf("TLS = %q, want %q", c.TLS, tc.want)
			}
		})
	}

	env := validEnv()
	c, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	f := c.frontendConfig
	if f.HTTPSListen != ":443" || f.HTTPListen != ":80" || f.ACMEDirectory != certs.LetsEncryptURL || f.ACMEEmail != "" ||
		f.RateLimit != 10 || f.RateBurst != 40 || f.BanDuration != time.Hour || f.BanMax != 30*24*time.Hour ||
		f.BanIPv6Prefix != 64 || f.HSTSSubdomains || len(f.TrustedProxies) != 0 || len(f.AllowIPs) != 0 ||
		f.AdminSocket != "./subrole.db.sock" {
		t.Fatalf("defaults %+v", f)
	}

	env = validEnv()
	env["SUBROLE_TLS"] = "proxy"
	c, _ = loadConfig(func(k string) string { return env[k] })
	if got := prefixList(c.TrustedProxies); got != "127.0.0.1/32,::1/128" {
		t.Fatalf("proxy mode trusts %q by default, want loopback", got)
	}

	env = validEnv()
	for k, v := range map[string]string{
		"SUBROLE_HTTP_LISTEN": "off", "SUBROLE_RATE_LIMIT": "0", "SUBROLE_ADMIN_SOCKET": "off",
		"SUBROLE_HSTS_SUBDOMAINS": "on", "SUBROLE_ALLOW_IPS": "192.0.2.1, 2001:db8::/48", "SUBROLE_BAN_DURATION": "2h",
		"SUBROLE_ACME_EMAIL": "ops@example.com", "SUBROLE_ACME_DIRECTORY": certs.LetsEncryptStagingURL,
	} {
		env[k] = v
	}
	c, err = loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	f = c.frontendConfig
	if f.HTTPListen != "" || f.RateLimit >= 0 || f.AdminSocket != "" || !f.HSTSSubdomains || prefixList(f.AllowIPs) != "192.0.2.1/32,2001:db8::/48" ||
		f.BanDuration != 2*time.Hour || f.ACMEEmail != "ops@example.com" || f.ACMEDirectory != certs.LetsEncryptStagingURL {
		t.Fatalf("values %+v", f)
	}
}

func TestFrontendConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"unknown mode", map[string]string{"SUBROLE_TLS": "letsencrypt"}, "SUBROLE_TLS: must be autocert, files, proxy or off"},
		{"autocert on http", map[string]string{"SUBROLE_TLS": "autocert", "SUBROLE_PUBLIC_URL": "http://subs.example.com"}, "SUBROLE_TLS: autocert needs an https SUBROLE_PUBLIC_URL"},
		{"autocert for an ip", map[string]string{"SUBROLE_PUBLIC_URL": "https://192.0.2.1"}, "SUBROLE_TLS: autocert needs a DNS name"},
		{"autocert for a single label", map[string]string{"SUBROLE_PUBLIC_URL": "https://intranet"}, "SUBROLE_TLS: autocert needs a DNS name"},
		{"files without cert", map[string]string{"SUBROLE_TLS": "files", "SUBROLE_TLS_KEY_FILE": "k.pem"}, "SUBROLE_TLS_CERT_FILE: is required"},
		{"files without key", map[string]string{"SUBROLE_TLS": "files", "SUBROLE_TLS_CERT_FILE": "c.pem"}, "SUBROLE_TLS_KEY_FILE: is required"},
		{"https listen", map[string]string{"SUBROLE_HTTPS_LISTEN": "443"}, "SUBROLE_HTTPS_LISTEN: must be host:port"},
		{"http listen", map[string]string{"SUBROLE_HTTP_LISTEN": "eighty"}, "SUBROLE_HTTP_LISTEN: must be host:port"},
		{"acme over http", map[string]string{"SUBROLE_ACME_DIRECTORY": "http://acme.example/dir"}, "SUBROLE_ACME_DIRECTORY: must be an https URL"},
		{"acme email", map[string]string{"SUBROLE_ACME_EMAIL": "Ops <ops@example.com>"}, "SUBROLE_ACME_EMAIL: must be a plain email address"},
		{"trusted proxies garbage", map[string]string{"SUBROLE_TLS": "proxy", "SUBROLE_TRUSTED_PROXIES": "10.0.0.0/8, nginx"}, `SUBROLE_TRUSTED_PROXIES: "nginx" is not an IP address`},
		{"trusted proxies with autocert", map[string]string{"SUBROLE_TRUSTED_PROXIES": "10.0.0.0/8"}, "SUBROLE_TRUSTED_PROXIES: only applies with SUBROLE_TLS=proxy or off"},
		{"allow ips", map[string]string{"SUBROLE_ALLOW_IPS": "10.0.0.0/33"}, "SUBROLE_ALLOW_IPS: "},
		{"hsts switch", map[string]string{"SUBROLE_HSTS_SUBDOMAINS": "maybe"}, "SUBROLE_HSTS_SUBDOMAINS: must be on or off"},
		{"rate", map[string]string{"SUBROLE_RATE_LIMIT": "fast"}, "SUBROLE_RATE_LIMIT: must be a number"},
		{"negative rate", map[string]string{"SUBROLE_RATE_LIMIT": "-1"}, "SUBROLE_RATE_LIMIT: must be a number"},
		{"burst", map[string]string{"SUBROLE_RATE_BURST": "0"}, "SUBROLE_RATE_BURST: must be a whole number"},
		{"ban duration", map[string]string{"SUBROLE_BAN_DURATION": "0"}, "SUBROLE_BAN_DURATION: must be a positive duration"},
		{"ban max", map[string]string{"SUBROLE_BAN_MAX": "forever"}, "SUBROLE_BAN_MAX: must be a positive duration"},
		{"ban max below base", map[string]string{"SUBROLE_BAN_DURATION": "2d", "SUBROLE_BAN_MAX": "1d"}, "SUBROLE_BAN_MAX: must not be shorter than SUBROLE_BAN_DURATION"},
		{"v6 prefix", map[string]string{"SUBROLE_BAN_IPV6_PREFIX": "129"}, "SUBROLE_BAN_IPV6_PREFIX: must be a prefix length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := validEnv()
			for k, v := range tc.env {
				env[k] = v
			}
			_, err := loadConfig(func(k string) string { return env[k] })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestCertEventsAreSecurityLines: an operator alerts on security_event, so
// the certificate's problems must be error lines with those keys.
func TestCertEventsAreSecurityLines(t *testing.T) {
	var logs syncBuffer
	fe := &frontend{log: slog.New(slog.NewJSONHandler(&logs, nil))}
	fe.certEvent(certs.Event{Kind: certs.EventExpiring, Host: "subs.example.com", NotAfter: time.Now().Add(10 * 24 * time.Hour)})
	fe.certEvent(certs.Event{Kind: certs.EventError, Host: "subs.example.com", Err: errors.New("acme: urn:ietf:params:acme:error:rateLimited")})
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log lines:\n%s", logs.String())
	}
	for i, want := range []string{`"security_event":"cert_expiring"`, `"security_event":"cert_error"`} {
		if !strings.Contains(lines[i], `"level":"ERROR"`) || !strings.Contains(lines[i], want) || !strings.Contains(lines[i], `"host":"subs.example.com"`) {
			t.Errorf("line %d: %s, want an ERROR line with %s", i, lines[i], want)
		}
	}
	if !strings.Contains(lines[1], "rateLimited") {
		t.Error("the CA's reason is not in the log")
	}
}

// TestTLSOffWarns: plain HTTP is for development; the service says so.
func TestTLSOffWarns(t *testing.T) {
	w := newTestWorld(t)
	w.env["SUBROLE_TLS"] = "off"
	in := w.start(t)
	if logs := in.logs.String(); !strings.Contains(logs, "SUBROLE_TLS=off") || !strings.Contains(logs, "level=WARN") {
		t.Fatalf("no warning about SUBROLE_TLS=off:\n%s", logs)
	}
}
