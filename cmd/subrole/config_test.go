package main

import (
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/subrole/subrole"
)

// validEnv is a complete, valid configuration.
func validEnv() map[string]string {
	return map[string]string{
		"SUBROLE_PUBLIC_URL":            "https://subs.example.com/",
		"SUBROLE_DISCORD_TOKEN":         "bot-token-value",
		"SUBROLE_DISCORD_GUILD_ID":      "123456789012345678",
		"SUBROLE_DISCORD_CLIENT_SECRET": "discord-client-secret-value",
		"SUBROLE_TWITCH_CLIENT_ID":      "client",
		"SUBROLE_TWITCH_CLIENT_SECRET":  "client-secret-value",
		"SUBROLE_TWITCH_BROADCASTER_ID": "1337",
		"SUBROLE_EVENTSUB_SECRET":       "eventsub-secret-value",
		"SUBROLE_ROLE_TIER1":            "223456789012345671",
		"SUBROLE_ROLE_TIER2":            "223456789012345672",
		"SUBROLE_ROLE_TIER3":            "223456789012345673",
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	env := validEnv()
	c, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.Data != "./subrole.db" || c.Listen != "127.0.0.1:8080" || c.DiscordURL != "https://discord.com" ||
		c.TwitchAPIURL != "https://api.twitch.tv/helix" || c.TwitchAuthURL != "https://id.twitch.tv/oauth2" {
		t.Fatalf("defaults %+v", c)
	}
	if c.publicURL("/twitch_eventsub") != "https://subs.example.com/twitch_eventsub" {
		t.Fatalf("callback %s", c.publicURL("/twitch_eventsub"))
	}
	if c.Policy.Mode != subrole.Exclusive || c.Policy.Grace != 0 || c.Policy.Linked != "" {
		t.Fatalf("policy %+v", c.Policy)
	}
}

func TestLoadConfigValues(t *testing.T) {
	env := validEnv()
	env["SUBROLE_TIER_ROLES"] = "Cumulative"
	env["SUBROLE_GRACE"] = "3d"
	env["SUBROLE_ROLE_LINKED"] = "223456789012345670"
	env["SUBROLE_DASHBOARD_USERS"] = " 111, 222 ,111"
	c, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy.Mode != subrole.Cumulative || c.Policy.Grace != 72*time.Hour || c.Policy.Linked != "223456789012345670" {
		t.Fatalf("policy %+v", c.Policy)
	}
	if !slices.Equal(c.DashboardUsers, []string{"111", "222"}) {
		t.Fatalf("dashboard users %q", c.DashboardUsers)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name, key, value, want string
	}{
		{"missing public url", "SUBROLE_PUBLIC_URL", "", "SUBROLE_PUBLIC_URL: is required"},
		{"relative public url", "SUBROLE_PUBLIC_URL", "subs.example.com", "SUBROLE_PUBLIC_URL: must be an absolute https URL"},
		{"public url with query", "SUBROLE_PUBLIC_URL", "https://x.example?a=b", "SUBROLE_PUBLIC_URL: must not carry a query"},
		{"public url with a path", "SUBROLE_PUBLIC_URL", "https://x.example/subs", "SUBROLE_PUBLIC_URL: may carry a path (\"/subs\") only with SUBROLE_TLS=proxy"},
		{"token with prefix", "SUBROLE_DISCORD_TOKEN", "Bot abc", "SUBROLE_DISCORD_TOKEN: must be the token alone"},
		{"discord client secret missing", "SUBROLE_DISCORD_CLIENT_SECRET", "", "SUBROLE_DISCORD_CLIENT_SECRET: is required"},
		{"guild not a snowflake", "SUBROLE_DISCORD_GUILD_ID", "my-server", "SUBROLE_DISCORD_GUILD_ID: must be a Discord ID"},
		{"broadcaster login instead of id", "SUBROLE_TWITCH_BROADCASTER_ID", "cooler_user", "SUBROLE_TWITCH_BROADCASTER_ID: must be the numeric Twitch user ID"},
		{"dashboard user login", "SUBROLE_DASHBOARD_USERS", "1234,cooler_user", "SUBROLE_DASHBOARD_USERS: must list numeric Twitch user IDs, not login names (got \"cooler_user\")"},
		{"dashboard user empty", "SUBROLE_DASHBOARD_USERS", "1234,,5678", "SUBROLE_DASHBOARD_USERS: has an empty entry"},
		{"secret too short", "SUBROLE_EVENTSUB_SECRET", "123456789", "SUBROLE_EVENTSUB_SECRET: must be 10-100 characters, got 9"},
		{"secret too long", "SUBROLE_EVENTSUB_SECRET", strings.Repeat("x", 101), "SUBROLE_EVENTSUB_SECRET: must be 10-100 characters, got 101"},
		{"secret with space", "SUBROLE_EVENTSUB_SECRET", "secret with spaces", "SUBROLE_EVENTSUB_SECRET: must be printable ASCII"},
		{"tier role missing", "SUBROLE_ROLE_TIER3", "", "SUBROLE_ROLE_TIER3: is required"},
		{"tier mode", "SUBROLE_TIER_ROLES", "stacked", "SUBROLE_TIER_ROLES: must be exclusive or cumulative"},
		{"grace negative", "SUBROLE_GRACE", "-1h", "SUBROLE_GRACE: must be a duration from 0 to 366d"},
		{"grace garbage", "SUBROLE_GRACE", "soon", "SUBROLE_GRACE: must be a duration from 0 to 366d"},
		{"grace beyond a year", "SUBROLE_GRACE", "100000d", "SUBROLE_GRACE: must be a duration from 0 to 366d"},
		{"grace overflowing", "SUBROLE_GRACE", "9999999999999d", "SUBROLE_GRACE: must be a duration from 0 to 366d"},
		{"linked equals tier", "SUBROLE_ROLE_LINKED", "223456789012345671", "SUBROLE_ROLE_LINKED: must differ"},
		{"listen", "SUBROLE_LISTEN", "8080", "SUBROLE_LISTEN: must be host:port"},
		{"discord url", "SUBROLE_DISCORD_URL", "discord.com", "SUBROLE_DISCORD_URL: must be an http(s) URL"},
		{"log level", "SUBROLE_LOG_LEVEL", "loud", "SUBROLE_LOG_LEVEL: must be debug, info, warn or error"},
		{"log format", "SUBROLE_LOG_FORMAT", "xml", "SUBROLE_LOG_FORMAT: must be text or json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			env[tt.key] = tt.value
			_, err := loadConfig(func(k string) string { return env[k] })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			for _, secret := range []string{"bot-token-value", "client-secret-value", "eventsub-secret-value", "discord-client-secret-value"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error shows a secret: %v", err)
				}
			}
		})
	}
}

var updateREADME = flag.Bool("update-readme", false, "rewrite README.md's configuration table from settings")

// TestREADMEConfigurationTable keeps the README's configuration table equal
// to the settings loadConfig reads. Run with -update-readme to rewrite it.
func TestREADMEConfigurationTable(t *testing.T) {
	const begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	i, j := strings.Index(text, begin), strings.Index(text, end)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the %q ... %q markers", begin, end)
	}
	want := settingsTable()
	if got := text[i+len(begin) : j]; got != want {
		if *updateREADME {
			if err := os.WriteFile("../../README.md", []byte(text[:i+len(begin)]+want+text[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("README.md's configuration table is out of date; run go test ./cmd/subrole -run README -update-readme")
	}
}

// settingsTable renders settings as the README's Markdown table.
func settingsTable() string {
	var b strings.Builder
	b.WriteString("| variable | default | meaning |\n|---|---|---|\n")
	for _, s := range settings {
		def, help := "`"+s.def+"`", s.help
		if s.def == "" {
			def = ""
		}
		if h, ok := strings.CutPrefix(help, "required: "); ok {
			def, help = "(required)", h
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", s.name, def, strings.ReplaceAll(help, "|", "\\|"))
	}
	return b.String()
}

func TestReadyzDetailsOnlyForThisHost(t *testing.T) {
	none := func() []string { return nil }
	warn := func() []string {
		return []string{"the last reconcile pass failed (retrying): helix said secret detail"}
	}
	down := func() []string { return []string{"no TLS certificate yet: acme said secret detail"} }
	for _, tt := range []struct {
		remote           string
		problems, warns  func() []string
		status           int
		want, wantAbsent string
	}{
		{"127.0.0.1:5000", none, warn, 200, "helix said secret detail", ""},
		{"[::1]:5000", down, none, 503, "acme said secret detail", ""},
		{"203.0.113.9:5000", none, warn, 200, "warning: the last reconcile pass failed (retrying)\n", "secret"},
		{"203.0.113.9:5000", down, none, 503, "not ready: no TLS certificate yet\n", "secret"},
	} {
		r := httptest.NewRequest("GET", "/readyz", nil)
		r.RemoteAddr = tt.remote
		w := httptest.NewRecorder()
		handleReadyz(tt.problems, tt.warns)(w, r)
		body := w.Body.String()
		if w.Code != tt.status || !strings.Contains(body, tt.want) || (tt.wantAbsent != "" && strings.Contains(body, tt.wantAbsent)) {
			t.Errorf("from %s: %d %q, want %d with %q", tt.remote, w.Code, body, tt.status, tt.want)
		}
	}
}
