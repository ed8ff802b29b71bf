package main

import (
	"net"
	"strings"
	"testing"
)

// fuzzBaseEnv is a valid configuration the fuzz input overrides.
func fuzzBaseEnv() map[string]string {
	return map[string]string{
		"SUBROLE_PUBLIC_URL":            "https://subs.example.com",
		"SUBROLE_DISCORD_TOKEN":         "bot-token-value-0123",
		"SUBROLE_DISCORD_GUILD_ID":      "123456789012345678",
		"SUBROLE_DISCORD_CLIENT_SECRET": "discord-client-secret-value",
		"SUBROLE_TWITCH_CLIENT_ID":      "clientid",
		"SUBROLE_TWITCH_CLIENT_SECRET":  "client-secret-value",
		"SUBROLE_TWITCH_BROADCASTER_ID": "1337",
		"SUBROLE_EVENTSUB_SECRET":       "eventsub-secret-value",
		"SUBROLE_ROLE_TIER1":            "223456789012345671",
		"SUBROLE_ROLE_TIER2":            "223456789012345672",
		"SUBROLE_ROLE_TIER3":            "223456789012345673",
	}
}

// parseFuzzEnv applies "NAME=value" lines to the base configuration. Names
// that are not settings are ignored; a line without "=" is ignored.
func parseFuzzEnv(input string) map[string]string {
	env := fuzzBaseEnv()
	known := map[string]bool{}
	for _, s := range settings {
		known[s.name] = true
	}
	for line := range strings.SplitSeq(input, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && known[k] {
			env[k] = v
		}
	}
	return env
}

// shiftAlnum changes every ASCII letter and digit to the next one (z to a,
// 9 to 0) and leaves every other byte alone: the result has the same length,
// the same spaces and the same printable characters, so any validation of a
// secret that does not look at its letters judges both alike.
func shiftAlnum(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z':
			b[i] = 'a' + (c-'a'+1)%26
		case c >= 'A' && c <= 'Z':
			b[i] = 'A' + (c-'A'+1)%26
		case c >= '0' && c <= '9':
			b[i] = '0' + (c-'0'+1)%10
		}
	}
	return string(b)
}

// FuzzLoadConfig feeds loadConfig arbitrary environment values ("NAME=value"
// lines over a valid base) and checks that it never panics, that every
// problem it reports names a setting, that the error never depends on a
// secret's value (so it cannot reveal it), and that an accepted
// configuration is usable.
func FuzzLoadConfig(f *testing.F) {
	var valid []string
	for k, v := range fuzzBaseEnv() {
		valid = append(valid, k+"="+v)
	}
	f.Add(strings.Join(valid, "\n"))
	f.Add("")
	f.Add("SUBROLE_EVENTSUB_SECRET=short\nSUBROLE_DISCORD_TOKEN=Bot abc\nSUBROLE_ROLE_TIER2=tier-two")
	f.Add("SUBROLE_PUBLIC_URL=http://127.0.0.1:8080/x?y#z\nSUBROLE_LISTEN=nonsense\nSUBROLE_GRACE=-3d")
	f.Add("SUBROLE_TIER_ROLES=cumulative\nSUBROLE_GRACE=3d\nSUBROLE_ROLE_LINKED=223456789012345671")
	f.Add("SUBROLE_TLS=files\nSUBROLE_TRUSTED_PROXIES=10.0.0.0/8,::1\nSUBROLE_RATE_LIMIT=0\nSUBROLE_BAN_IPV6_PREFIX=129")
	f.Add("SUBROLE_EVENTSUB_SECRET=  spaced secret value  \nSUBROLE_LOG_LEVEL=loud\nSUBROLE_LOG_FORMAT=xml")
	f.Add("SUBROLE_JOIN_DM=maybe\nSUBROLE_JOIN_FOLLOWUP=7d\nSUBROLE_RELINK=always\nSUBROLE_TIMEZONE=../etc/passwd")
	f.Fuzz(func(t *testing.T, input string) {
		env := parseFuzzEnv(input)
		getenv := func(k string) string { return env[k] }
		c, err := loadConfig(getenv)
		if err != nil {
			msg := err.Error()
			rest, ok := strings.CutPrefix(msg, "configuration:\n  ")
			if !ok {
				t.Fatalf("error does not start with the problem list: %q", msg)
			}
			for _, line := range strings.Split(rest, "\n  ") {
				name, _, _ := strings.Cut(line, ":")
				if !isSetting(name) {
					t.Fatalf("problem %q does not name a setting (in %q)", line, msg)
				}
			}
		} else {
			checkUsable(t, c)
		}
		// The outcome must not depend on a secret's letters and digits:
		// shifting them must give the same error, word for word.
		for _, s := range settings {
			if !strings.Contains(s.help, "(secret)") {
				continue
			}
			v := env[s.name]
			w := shiftAlnum(v)
			if v == w || botPrefixed(v) || botPrefixed(w) {
				continue
			}
			env2 := parseFuzzEnv(input)
			env2[s.name] = w
			_, err2 := loadConfig(func(k string) string { return env2[k] })
			if errText(err) != errText(err2) {
				t.Fatalf("%s: the error depends on the secret's value:\n%s\nvs\n%s", s.name, errText(err), errText(err2))
			}
		}
	})
}

// isSetting reports whether name is a documented variable.
func isSetting(name string) bool {
	for _, s := range settings {
		if s.name == name {
			return true
		}
	}
	return false
}

// botPrefixed reports whether a token would be refused for its "Bot " prefix.
func botPrefixed(s string) bool {
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(s)), "bot ")
}

// errText returns the error text, "<nil>" for none.
func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// checkUsable checks the promises an accepted configuration makes.
func checkUsable(t *testing.T, c *config) {
	t.Helper()
	if c.PublicURL == nil || c.PublicURL.Host == "" {
		t.Fatalf("accepted without a public URL: %+v", c.PublicURL)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		t.Fatalf("accepted listen address %q: %v", c.Listen, err)
	}
	for _, id := range []string{c.Policy.Tier1, c.Policy.Tier2, c.Policy.Tier3} {
		if !isSnowflake(id) {
			t.Fatalf("accepted tier role %q", id)
		}
	}
	for _, id := range []string{c.Policy.Linked, c.Policy.Subscriber} {
		if id != "" && !isSnowflake(id) {
			t.Fatalf("accepted role %q", id)
		}
	}
	if n := len(c.EventSubSecret); n < 10 || n > 100 || !isPrintableASCII(c.EventSubSecret) {
		t.Fatalf("accepted an EventSub secret of %d bytes", n)
	}
	if c.DiscordToken == "" || botPrefixed(c.DiscordToken) {
		t.Fatal("accepted an empty or Bot-prefixed Discord token")
	}
	if c.Policy.Grace < 0 {
		t.Fatalf("accepted a negative grace %v", c.Policy.Grace)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		t.Fatalf("accepted log format %q", c.LogFormat)
	}
}
