package main

import (
	"strings"
	"testing"
	"time"

	"github.com/subrole/subrole"
)

func TestOutreachConfig(t *testing.T) {
	env := validEnv()
	c, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	p := c.Outreach
	if !p.Welcome || p.FollowUp != 168*time.Hour || p.Relink != subrole.RelinkAuto || p.Location == nil || p.Location.String() != "Asia/Tokyo" {
		t.Fatalf("defaults %+v", p)
	}
	env["SUBROLE_JOIN_DM"] = "off"
	env["SUBROLE_JOIN_FOLLOWUP"] = "0"
	env["SUBROLE_RELINK"] = "Always"
	env["SUBROLE_TIMEZONE"] = "UTC"
	if c, err = loadConfig(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if p := c.Outreach; p.Welcome || p.FollowUp != 0 || p.Relink != subrole.RelinkAlways || p.Location != time.UTC {
		t.Fatalf("values %+v", p)
	}
	for _, tt := range []struct{ name, value, want string }{
		{"SUBROLE_JOIN_DM", "sometimes", "SUBROLE_JOIN_DM: must be on or off"},
		{"SUBROLE_JOIN_FOLLOWUP", "-1h", "SUBROLE_JOIN_FOLLOWUP: must be a duration from 0"},
		{"SUBROLE_JOIN_FOLLOWUP", "a week", "SUBROLE_JOIN_FOLLOWUP: must be a duration from 0"},
		{"SUBROLE_RELINK", "monthly", "SUBROLE_RELINK: must be auto, always or off"},
		{"SUBROLE_TIMEZONE", "Tokyo", "SUBROLE_TIMEZONE: must be an IANA time zone name"},
		{"SUBROLE_TIMEZONE", "Local", "SUBROLE_TIMEZONE: must be an IANA time zone name"},
	} {
		env := validEnv()
		env[tt.name] = tt.value
		_, err := loadConfig(func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s=%q: %v, want %q", tt.name, tt.value, err, tt.want)
		}
	}
}
