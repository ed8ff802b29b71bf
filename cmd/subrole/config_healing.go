package main

import (
	"strings"
	"time"
)

// healingConfig is the part of the configuration about keeping EventSub
// subscriptions in place and reconciling with Helix. loadHealingConfig fills
// every field.
type healingConfig struct {
	// EventSubSecretPrevious is the secret being rotated away from, accepted
	// by the webhook while subscriptions signed with it remain; "" for none.
	EventSubSecretPrevious string
	// EnforceRoles makes every reconcile pass repair managed roles edited
	// by hand in Discord; StripUnlinked also removes them from members who
	// are not linked (SUBROLE_ENFORCE_ROLES=strict).
	EnforceRoles, StripUnlinked bool
	// ReconcileInterval is the time between reconcile passes.
	ReconcileInterval time.Duration
}

// loadHealingConfig reads and checks the healing settings into c;
// c.EventSubSecret must already be set.
func loadHealingConfig(c *config, get func(string) string, bad func(name, format string, args ...any)) {
	h := &c.healingConfig
	if s := get("SUBROLE_EVENTSUB_SECRET_PREVIOUS"); s != "" {
		switch n := len(s); {
		case n < 10 || n > 100:
			bad("SUBROLE_EVENTSUB_SECRET_PREVIOUS", "must be empty or 10-100 characters, got %d", n)
		case !isPrintableASCII(s):
			bad("SUBROLE_EVENTSUB_SECRET_PREVIOUS", "must be printable ASCII")
		case s == c.EventSubSecret:
			bad("SUBROLE_EVENTSUB_SECRET_PREVIOUS", "equals SUBROLE_EVENTSUB_SECRET: set SUBROLE_EVENTSUB_SECRET to the new secret and this to the old one")
		default:
			h.EventSubSecretPrevious = s
		}
	}
	switch v := strings.ToLower(get("SUBROLE_ENFORCE_ROLES")); v {
	case "on", "true", "1", "yes":
		h.EnforceRoles = true
	case "strict":
		h.EnforceRoles, h.StripUnlinked = true, true
	case "off", "false", "0", "no":
	default:
		bad("SUBROLE_ENFORCE_ROLES", "must be on, strict or off, got %q", v)
	}
	v := get("SUBROLE_RECONCILE_INTERVAL")
	if d, err := parseDuration(v); err != nil || d < time.Minute {
		bad("SUBROLE_RECONCILE_INTERVAL", "must be a duration of at least 1m like 6h or 1d, got %q", v)
	} else {
		h.ReconcileInterval = d
	}
}
