package main

import (
	"strings"
	"time"
	_ "time/tzdata" // SUBROLE_TIMEZONE works on hosts without a zoneinfo database

	"github.com/subrole/subrole"
)

// outreachConfig is the part of the configuration about the DMs subrole
// sends on its own (SUBROLE_JOIN_DM, SUBROLE_JOIN_FOLLOWUP, SUBROLE_RELINK,
// SUBROLE_TIMEZONE). loadOutreachConfig fills it.
type outreachConfig struct {
	// Outreach is the core's outreach policy.
	Outreach subrole.OutreachPolicy
}

// loadOutreachConfig reads and checks the outreach settings into c.
func loadOutreachConfig(c *config, get func(string) string, bad func(name, format string, args ...any)) {
	p := &c.Outreach
	p.Welcome = onOff("SUBROLE_JOIN_DM", get, bad)
	v := get("SUBROLE_JOIN_FOLLOWUP")
	if d, err := parseDuration(v); err != nil || d < 0 || d > 366*24*time.Hour {
		bad("SUBROLE_JOIN_FOLLOWUP", "must be a duration from 0 (no follow-up) to 366d, like 168h or 7d, got %q", v)
	} else {
		p.FollowUp = d
	}
	switch v := strings.ToLower(get("SUBROLE_RELINK")); v {
	case "auto":
		p.Relink = subrole.RelinkAuto
	case "always":
		p.Relink = subrole.RelinkAlways
	case "off":
		p.Relink = subrole.RelinkOff
	default:
		bad("SUBROLE_RELINK", "must be auto, always or off, got %q", v)
	}
	tz := get("SUBROLE_TIMEZONE")
	if loc, err := time.LoadLocation(tz); err != nil || tz == "" || strings.EqualFold(tz, "local") {
		bad("SUBROLE_TIMEZONE", "must be an IANA time zone name like Asia/Tokyo or UTC, got %q", tz)
	} else {
		p.Location = loc
	}
}
