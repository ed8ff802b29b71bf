package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/certs"
)

// config is everything subrole reads from its environment. loadConfig
// validates all of it before anything starts.
type config struct {
	Data      string // bbolt file
	Listen    string // plain-HTTP listen address
	PublicURL *url.URL

	DiscordToken   string
	DiscordGuildID string
	DiscordURL     string
	// DiscordClientSecret is the application's OAuth2 client secret: /link
	// has Discord confirm, in the member's browser, who is signed in.
	DiscordClientSecret string

	TwitchClientID      string
	TwitchClientSecret  string
	TwitchBroadcasterID string
	// DashboardUsers may see the dashboard besides the broadcaster.
	DashboardUsers []string
	TwitchAPIURL   string
	TwitchAuthURL  string
	EventSubSecret string

	// LinkDM sends members the summary of their /link by DM.
	LinkDM bool

	Policy subrole.Policy
	// roleVars names the setting behind each role ID, for error messages.
	roleVars map[string]string

	LogLevel  slog.Level
	LogFormat string

	// frontendConfig: TLS, proxies, rate limits and bans (config_frontend.go).
	frontendConfig
	// healingConfig: EventSub secret rotation and reconcile (config_healing.go).
	healingConfig
	// outreachConfig: join, follow-up and relink DMs (config_outreach.go).
	outreachConfig
}

// setting documents one environment variable; the README's table is made from the same facts.
type setting struct {
	name, def, help string
}

// settings lists every variable loadConfig reads, in README order.
var settings = []setting{
	{"SUBROLE_DATA", "./subrole.db", "bbolt database file (created if missing)"},
	{"SUBROLE_LISTEN", "127.0.0.1:8080", "plain-HTTP listen address"},
	{"SUBROLE_PUBLIC_URL", "", "required: the https origin Twitch and browsers reach, e.g. https://subs.example.com"},
	{"SUBROLE_TLS", "", "autocert (default for an https SUBROLE_PUBLIC_URL): certificates from Let's Encrypt on SUBROLE_HTTPS_LISTEN; files: SUBROLE_TLS_CERT_FILE and SUBROLE_TLS_KEY_FILE; proxy: plain HTTP on SUBROLE_LISTEN behind Nginx or similar; off (default for an http URL): plain HTTP, development only"},
	{"SUBROLE_HTTPS_LISTEN", ":443", "HTTPS listen address (autocert, files); Twitch calls port 443 only"},
	{"SUBROLE_HTTP_LISTEN", ":80", "plain-HTTP listen address (autocert, files): ACME http-01 challenges and a redirect to https; off: none (autocert then uses tls-alpn-01 only)"},
	{"SUBROLE_ACME_DIRECTORY", certs.LetsEncryptURL, "ACME directory URL (autocert); Let's Encrypt staging is " + certs.LetsEncryptStagingURL},
	{"SUBROLE_ACME_EMAIL", "", "contact address registered with the CA, for expiry and policy mail (autocert, optional)"},
	{"SUBROLE_TLS_CERT_FILE", "", "PEM certificate chain, leaf first; reloaded when it changes (files)"},
	{"SUBROLE_TLS_KEY_FILE", "", "PEM private key (files)"},
	{"SUBROLE_TRUSTED_PROXIES", "", "IPs or CIDRs whose X-Forwarded-For and X-Forwarded-Proto are believed (proxy, off); empty in proxy mode means 127.0.0.1 and ::1"},
	{"SUBROLE_ALLOW_IPS", "", "IPs or CIDRs never rate limited or banned, comma separated"},
	{"SUBROLE_HSTS_SUBDOMAINS", "off", "on: HSTS also covers subdomains (includeSubDomains)"},
	{"SUBROLE_RATE_LIMIT", "10", "requests per second per client (IPv6: per SUBROLE_BAN_IPV6_PREFIX) on every route but the EventSub webhook; 0: no limit"},
	{"SUBROLE_RATE_BURST", "40", "requests a client may send at once before SUBROLE_RATE_LIMIT applies"},
	{"SUBROLE_BAN_DURATION", "1h", "first automatic ban; each repeat offence within 30 days lasts 4 times longer"},
	{"SUBROLE_BAN_MAX", "30d", "longest automatic ban"},
	{"SUBROLE_BAN_IPV6_PREFIX", "64", "prefix length by which IPv6 clients are limited and banned"},
	{"SUBROLE_ADMIN_SOCKET", "", "Unix socket through which 'subrole ban', 'subrole reconcile', 'subrole eventsub sync', 'subrole import' and 'subrole export' reach the running service (owner only); empty means SUBROLE_DATA + \".sock\"; off: none"},
	{"SUBROLE_DISCORD_TOKEN", "", "required: bot token (secret)"},
	{"SUBROLE_DISCORD_GUILD_ID", "", "required: the Discord server's ID"},
	{"SUBROLE_DISCORD_CLIENT_SECRET", "", "required: the Discord application's OAuth2 client secret (Developer Portal > the application > OAuth2); /link uses it to make sure the member who ran it is the one signed in to Discord in the browser that finishes it (secret)"},
	{"SUBROLE_TWITCH_CLIENT_ID", "", "required: Twitch application client ID"},
	{"SUBROLE_TWITCH_CLIENT_SECRET", "", "required: Twitch application client secret (secret)"},
	{"SUBROLE_TWITCH_BROADCASTER_ID", "", "required: the broadcaster's numeric Twitch user ID"},
	{"SUBROLE_DASHBOARD_USERS", "", "numeric Twitch user IDs, comma separated, who may see the live dashboard at /dashboard besides the broadcaster (moderators, say)"},
	{"SUBROLE_EVENTSUB_SECRET", "", "required: EventSub webhook secret, 10-100 ASCII characters (secret)"},
	{"SUBROLE_EVENTSUB_SECRET_PREVIOUS", "", "the secret being rotated away from: also accepted by the webhook until every subscription signed with it has been replaced (secret)"},
	{"SUBROLE_RECONCILE_INTERVAL", "6h", "time between reconcile passes against Helix (a pass also runs at start when the last one is older, and on /subrole resync-all or 'subrole reconcile')"},
	{"SUBROLE_ENFORCE_ROLES", "on", "on: each reconcile pass also restores linked members' managed roles edited by hand in Discord; strict: and removes managed roles from members who are not linked (roles given by hand or by another bot); off: only subscription drift is repaired"},
	{"SUBROLE_ROLE_LINKED", "", "role for every linked member (optional)"},
	{"SUBROLE_ROLE_TIER1", "", "required: role for tier 1 and Prime subscribers"},
	{"SUBROLE_ROLE_TIER2", "", "required: role for tier 2 subscribers"},
	{"SUBROLE_ROLE_TIER3", "", "required: role for tier 3 subscribers"},
	{"SUBROLE_ROLE_SUBSCRIBER", "", "role for every subscriber, any tier (optional)"},
	{"SUBROLE_TIER_ROLES", "exclusive", "exclusive: only the current tier's role; cumulative: tier 3 also holds 1 and 2"},
	{"SUBROLE_GRACE", "0", "how long roles stay after a subscription ends (Go duration or days, e.g. 72h, 3d)"},
	{"SUBROLE_DISCORD_URL", "https://discord.com", "Discord API origin (tests point it at a fake)"},
	{"SUBROLE_TWITCH_API_URL", "https://api.twitch.tv/helix", "Helix API base URL"},
	{"SUBROLE_TWITCH_AUTH_URL", "https://id.twitch.tv/oauth2", "Twitch OAuth base URL"},
	{"SUBROLE_LINK_DM", "on", "on: DM members the summary of their /link (a member who refuses DMs is recorded, not retried); off: the result page only"},
	{"SUBROLE_JOIN_DM", "on", "on: DM members who join the server and are not linked how to /link (once per join; a rejoin within 30 days gets nothing); off: no welcome"},
	{"SUBROLE_JOIN_FOLLOWUP", "168h", "how long after such a join one reminder is DMed if the member is still in the server and not linked (Go duration or days, e.g. 7d); 0: none"},
	{"SUBROLE_RELINK", "auto", "monthly relink request DMs to linked members, on the 1st in SUBROLE_TIMEZONE: auto: only in months that start while the broadcaster is not connected (no reconcile can repair drift then); always; off"},
	{"SUBROLE_TIMEZONE", "Asia/Tokyo", "IANA time zone whose month boundaries SUBROLE_RELINK follows"},
	{"SUBROLE_LOG_LEVEL", "info", "debug, info, warn or error"},
	{"SUBROLE_LOG_FORMAT", "text", "text or json"},
}

// loadConfig reads and validates the configuration. The error lists every
// problem, each naming its variable; it never contains a secret's value.
func loadConfig(getenv func(string) string) (*config, error) {
	var problems []string
	bad := func(name, format string, args ...any) {
		problems = append(problems, name+": "+fmt.Sprintf(format, args...))
	}
	get := func(name string) string {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			for _, s := range settings {
				if s.name == name {
					return s.def
				}
			}
		}
		return v
	}
	required := func(name string) string {
		v := get(name)
		if v == "" {
			bad(name, "is required")
		}
		return v
	}
	snowflake := func(name string, need bool) string {
		v := get(name)
		switch {
		case v == "" && need:
			bad(name, "is required")
		case v != "" && !isSnowflake(v):
			bad(name, "must be a Discord ID (17-20 digits), got %q", v)
		}
		return v
	}
	baseURL := func(name string) string {
		v := get(name)
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad(name, "must be an http(s) URL, got %q", v)
			return v
		}
		return strings.TrimSuffix(v, "/")
	}

	c := &config{
		Data:                get("SUBROLE_DATA"),
		Listen:              get("SUBROLE_LISTEN"),
		DiscordToken:        required("SUBROLE_DISCORD_TOKEN"),
		DiscordGuildID:      snowflake("SUBROLE_DISCORD_GUILD_ID", true),
		DiscordURL:          baseURL("SUBROLE_DISCORD_URL"),
		DiscordClientSecret: required("SUBROLE_DISCORD_CLIENT_SECRET"),
		TwitchClientID:      required("SUBROLE_TWITCH_CLIENT_ID"),
		TwitchClientSecret:  required("SUBROLE_TWITCH_CLIENT_SECRET"),
		TwitchBroadcasterID: required("SUBROLE_TWITCH_BROADCASTER_ID"),
		TwitchAPIURL:        baseURL("SUBROLE_TWITCH_API_URL"),
		TwitchAuthURL:       baseURL("SUBROLE_TWITCH_AUTH_URL"),
		EventSubSecret:      required("SUBROLE_EVENTSUB_SECRET"),
		roleVars:            map[string]string{},
	}

	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("SUBROLE_LISTEN", "must be host:port, got %q", c.Listen)
	}
	if raw := required("SUBROLE_PUBLIC_URL"); raw != "" {
		u, err := url.Parse(raw)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			bad("SUBROLE_PUBLIC_URL", "must be an absolute https URL like https://subs.example.com, got %q", raw)
		case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
			bad("SUBROLE_PUBLIC_URL", "must not carry a query, fragment or user info")
		default:
			u.Path = strings.TrimSuffix(u.Path, "/")
			c.PublicURL = u
		}
	}
	if strings.HasPrefix(strings.ToLower(c.DiscordToken), "bot ") {
		bad("SUBROLE_DISCORD_TOKEN", "must be the token alone, without the \"Bot \" prefix")
	}
	if v := c.TwitchBroadcasterID; v != "" && !isDigits(v) {
		bad("SUBROLE_TWITCH_BROADCASTER_ID", "must be the numeric Twitch user ID, not the login name (got %q)", v)
	}
	if v := get("SUBROLE_DASHBOARD_USERS"); v != "" {
		for id := range strings.SplitSeq(v, ",") {
			id = strings.TrimSpace(id)
			switch {
			case id == "":
				bad("SUBROLE_DASHBOARD_USERS", "has an empty entry; list numeric Twitch user IDs separated by commas, like 123456,789012")
			case !isDigits(id) || len(id) > 20:
				bad("SUBROLE_DASHBOARD_USERS", "must list numeric Twitch user IDs, not login names (got %q)", clipLog(id))
			case !slices.Contains(c.DashboardUsers, id):
				c.DashboardUsers = append(c.DashboardUsers, id)
			}
		}
	}
	if s := c.EventSubSecret; s != "" {
		if n := len(s); n < 10 || n > 100 {
			bad("SUBROLE_EVENTSUB_SECRET", "must be 10-100 characters, got %d", n)
		} else if !isPrintableASCII(s) {
			bad("SUBROLE_EVENTSUB_SECRET", "must be printable ASCII")
		}
	}

	p := &c.Policy
	for _, r := range []struct {
		name string
		dst  *string
		need bool
	}{
		{"SUBROLE_ROLE_LINKED", &p.Linked, false},
		{"SUBROLE_ROLE_TIER1", &p.Tier1, true},
		{"SUBROLE_ROLE_TIER2", &p.Tier2, true},
		{"SUBROLE_ROLE_TIER3", &p.Tier3, true},
		{"SUBROLE_ROLE_SUBSCRIBER", &p.Subscriber, false},
	} {
		*r.dst = snowflake(r.name, r.need)
		if *r.dst != "" {
			if prev, ok := c.roleVars[*r.dst]; ok {
				c.roleVars[*r.dst] = prev + "/" + r.name
			} else {
				c.roleVars[*r.dst] = r.name
			}
		}
	}
	if p.Linked != "" && (p.Linked == p.Tier1 || p.Linked == p.Tier2 || p.Linked == p.Tier3 || p.Linked == p.Subscriber) {
		bad("SUBROLE_ROLE_LINKED", "must differ from the tier and subscriber roles")
	}
	switch m := strings.ToLower(get("SUBROLE_TIER_ROLES")); m {
	case "exclusive":
		p.Mode = subrole.Exclusive
	case "cumulative":
		p.Mode = subrole.Cumulative
	default:
		bad("SUBROLE_TIER_ROLES", "must be exclusive or cumulative, got %q", m)
	}
	if g, err := parseDuration(get("SUBROLE_GRACE")); err != nil || g < 0 || g > 366*24*time.Hour {
		bad("SUBROLE_GRACE", "must be a duration from 0 to 366d, like 72h or 3d, got %q", get("SUBROLE_GRACE"))
	} else {
		p.Grace = g
	}

	c.LinkDM = onOff("SUBROLE_LINK_DM", get, bad)

	loadFrontendConfig(c, get, bad)
	loadHealingConfig(c, get, bad)
	loadOutreachConfig(c, get, bad)

	if err := c.LogLevel.UnmarshalText([]byte(get("SUBROLE_LOG_LEVEL"))); err != nil {
		bad("SUBROLE_LOG_LEVEL", "must be debug, info, warn or error, got %q", get("SUBROLE_LOG_LEVEL"))
	}
	c.LogFormat = get("SUBROLE_LOG_FORMAT")
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("SUBROLE_LOG_FORMAT", "must be text or json, got %q", c.LogFormat)
	}

	if len(problems) > 0 {
		return nil, errors.New("configuration:\n  " + strings.Join(problems, "\n  "))
	}
	return c, nil
}

// publicURL returns the public origin joined with path.
func (c *config) publicURL(path string) string {
	return c.PublicURL.String() + path
}

// parseDuration accepts Go durations and a whole number of days ("3d").
func parseDuration(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil {
			return 0, err
		}
		if n < 0 || n > 100000 {
			return 0, fmt.Errorf("%d days is out of range", n)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

func isSnowflake(s string) bool { return isDigits(s) && len(s) >= 17 && len(s) <= 20 }

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
