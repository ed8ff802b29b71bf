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

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

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

func TestOutageDrill(t *testing.T) {
	t.Parallel()
	// A short outage keeps the applier's exponential backoff (which grows
	// to 30 s in a long one) from dominating the test's run time.
	d := &outageDrill{Members: 200, Rate: 200, Before: time.Second, Outage: 1500 * time.Millisecond, After: time.Second,
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
	if rep.Load.Acked == 0 || len(rep.Load.ackLatencies(rep.OutageStart, rep.Healed)) == 0 {
		t.Error("no event was acknowledged during the outage")
	}
	for _, p := range rep.Problems {
		t.Error(p)
	}
}
