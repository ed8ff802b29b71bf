package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The crash and outage drills of issue 6 in their short CI form. Set
// SUBROLE_DRILL=long for the full form (20 kills of 5,000-event bursts; a
// 2-minute outage at 1,000 events/s), or run "subrole bench crash" and
// "subrole bench outage", which use the same code.

// longDrill reports whether the full drills were asked for.
func longDrill() bool { return os.Getenv("SUBROLE_DRILL") == "long" }

// testSpawner runs the test binary as the service (see TestMain).
func testSpawner(env []string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "SUBROLE_TEST_AS_MAIN=1"), env...)
	return cmd
}

// testLog writes progress lines to the test log.
type testLog struct{ t *testing.T }

// Write logs p as one line.
func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestCrashDrill SIGKILLs the service during bursts and checks that every
// acknowledged event took effect exactly once.
func TestCrashDrill(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess drill")
	}
	t.Parallel() // with the outage drill: both wait on I/O and timers most of the time
	d := &crashDrill{Rounds: 3, Events: 300, Conns: 16, Spawn: testSpawner, Dir: t.TempDir(), Progress: testLog{t}}
	timeout := 2 * time.Minute
	if longDrill() {
		d.Rounds, d.Events, d.Conns, timeout = 20, 5000, 32, 30*time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rep, err := d.run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Kills) != d.Rounds {
		t.Errorf("%d kills, want %d", len(rep.Kills), d.Rounds)
	}
	if rep.AckedFirstTry+rep.Resent < rep.Events {
		t.Errorf("%d acknowledged before a kill and %d redelivered, fewer than the %d events", rep.AckedFirstTry, rep.Resent, rep.Events)
	}
	for _, p := range rep.Problems {
		t.Error(p)
	}
}

// TestOutageDrill fails Discord under load and checks order, no duplicates
// and that the webhook kept acknowledging.
func TestOutageDrill(t *testing.T) {
	t.Parallel()
	// The outage is cut in ninths, the three failure modes in turn. The
	// applier pauses 0.1, 0.2, 0.4, 0.8 s between rounds of failures, so
	// its retries at about 0, 0.1, 0.3, 0.7 and 1.5 s fall into segments
	// 0, 0, 1, 2 and 5 of a 2.7 s outage: every mode is met.
	d := &outageDrill{Members: 200, Rate: 200, Before: time.Second, Outage: 2700 * time.Millisecond, After: time.Second,
		Conns: 16, Dir: t.TempDir()}
	timeout := time.Minute
	if longDrill() {
		d.Members, d.Rate, d.Before, d.Outage, d.After, d.Conns, timeout = 2000, 1000, 10*time.Second, 2*time.Minute, 20*time.Second, 64, 10*time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rep, err := d.run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range rep.metrics() {
		t.Logf("%s: %s %s", m.name, formatValue(m.value), m.unit)
	}
	if rep.FailedCalls == 0 {
		t.Error("no Discord call failed: the outage did not happen")
	}
	if !longDrill() {
		for status, mode := range map[int]string{500: "500s", 429: "429s", 0: "dropped connections"} {
			if rep.FailedByStatus[status] == 0 {
				t.Errorf("the applier never met the %s of the outage (failures by status: %v)", mode, rep.FailedByStatus)
			}
		}
	}
	if rep.Load.Acked == 0 || len(rep.Load.ackLatencies(rep.OutageStart, rep.Healed)) == 0 {
		t.Error("no event was acknowledged during the outage")
	}
	for _, p := range rep.Problems {
		t.Error(p)
	}
}
