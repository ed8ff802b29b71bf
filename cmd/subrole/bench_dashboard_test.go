package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestBenchMixedDashboards runs "subrole bench mixed" with live dashboards
// and page loads at a tiny size, so the hook keeps working: every feed
// opens and follows the audit log, and every page load succeeds.
func TestBenchMixedDashboards(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process benchmark")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errs bytes.Buffer
	err := bench(ctx, []string{"mixed", "-repeat", "1", "-duration", "1s", "-members", "300", "-rate", "50",
		"-conns", "4", "-probes", "10", "-dashboards", "3", "-pages", "5", "-dir", t.TempDir()}, &out, &errs)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, out.String(), errs.String())
	}
	value := func(name string) float64 {
		m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(name) + `\s+(\S+)`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no %q in\n%s", name, out.String())
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	if v := value("dashboard feeds open"); v != 3 {
		t.Errorf("feeds open %v, want 3", v)
	}
	if value("audit entries delivered to dashboards") == 0 || value("dashboard page loads") == 0 ||
		value("dashboard page load errors") != 0 || value("loaded: errors") != 0 {
		t.Errorf("dashboard load did not work:\n%s", out.String())
	}
}
