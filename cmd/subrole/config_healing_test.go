package main

import (
	"strings"
	"testing"
	"time"
)

func TestHealingConfig(t *testing.T) {
	env := validEnv()
	c, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !c.EnforceRoles || c.ReconcileInterval != 6*time.Hour || c.EventSubSecretPrevious != "" {
		t.Fatalf("defaults %+v", c.healingConfig)
	}
	env["SUBROLE_ENFORCE_ROLES"] = "off"
	env["SUBROLE_RECONCILE_INTERVAL"] = "1d"
	env["SUBROLE_EVENTSUB_SECRET_PREVIOUS"] = "the-old-secret-value"
	if c, err = loadConfig(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if c.EnforceRoles || c.ReconcileInterval != 24*time.Hour || c.EventSubSecretPrevious != "the-old-secret-value" {
		t.Fatalf("values %+v", c.healingConfig)
	}
	for _, tt := range []struct{ name, value, want string }{
		{"SUBROLE_ENFORCE_ROLES", "maybe", "SUBROLE_ENFORCE_ROLES: must be on, strict or off"},
		{"SUBROLE_RECONCILE_INTERVAL", "30s", "SUBROLE_RECONCILE_INTERVAL: must be a duration of at least 1m"},
		{"SUBROLE_RECONCILE_INTERVAL", "often", "SUBROLE_RECONCILE_INTERVAL: must be a duration"},
		{"SUBROLE_EVENTSUB_SECRET_PREVIOUS", "short", "SUBROLE_EVENTSUB_SECRET_PREVIOUS: must be empty or 10-100 characters"},
		{"SUBROLE_EVENTSUB_SECRET_PREVIOUS", "eventsub-secret-value", "SUBROLE_EVENTSUB_SECRET_PREVIOUS: equals SUBROLE_EVENTSUB_SECRET"},
		{"SUBROLE_EVENTSUB_SECRET_PREVIOUS", "with a space inside", "SUBROLE_EVENTSUB_SECRET_PREVIOUS: must be printable ASCII"},
	} {
		env := validEnv()
		env[tt.name] = tt.value
		_, err := loadConfig(func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s=%q: %v, want %q", tt.name, tt.value, err, tt.want)
		}
		if err != nil && strings.Contains(tt.name, "SECRET") && strings.Contains(err.Error(), tt.value) {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
}
