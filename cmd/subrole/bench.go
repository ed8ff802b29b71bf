package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// benchUsage lists the bench modes; BENCHMARKS.md has the exact command of
// every number it reports.
const benchUsage = `usage: subrole bench [-cpuprofile file] [-trace file] <mode> [flags]
("subrole bench <mode> -h" lists a mode's flags; -cpuprofile and -trace profile the whole run,
in-process service included)

modes against a service that is already running:
  load      post signed EventSub notifications to -url with -secret, at -rate
            per second or as fast as possible, over -conns connections

in-process scenarios (fake Twitch and fake Discord on loopback, real wiring):
  webhook   ack throughput and latency at concurrency 1/16/64: in-memory handler,
            naive db.Batch handler and the real service, same run; plus 1,000/s
  fsync     the cost of one fsync and one bbolt commit on this disk
  e2e       event received -> Discord role call latency, unthrottled fake Discord
  steady    1,000 events/s for 60 s through the real wiring
  giftbomb  10,000 gifted subs in 10 s; the fake Discord rate limits
  scale     1,000,000 stored members: start-up time, RSS, file size
  mixed     webhook ack beside back-to-back reconcile passes and probes; with -dashboards N
            -pages R also N live dashboards and R dashboard page loads per second
  reconcile a reconcile pass over HTTP against the rate-limited fake Helix

drills (each exits non-zero when an effect was lost or duplicated):
  crash     SIGKILL the service during bursts, restart, check exactly-once
  outage    Discord fails (500, 429, dropped connections) during steady load
`

// bench runs "subrole bench <mode> [flags]".
func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	global := flag.NewFlagSet("bench", flag.ContinueOnError)
	global.SetOutput(stderr)
	cpuProfile := global.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	traceFile := global.String("trace", "", "write an execution trace of the whole run to this file")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, benchUsage)
			return nil
		}
		return err
	}
	args = global.Args()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, benchUsage)
		return nil
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer trace.Stop()
	}
	mode, args := args[0], args[1:]
	modes := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"load":     benchLoadCmd,
		"webhook":  benchWebhookCmd,
		"fsync":    benchFsyncCmd,
		"e2e":      benchE2ECmd,
		"steady":   benchSteadyCmd,
		"giftbomb": benchGiftBombCmd,
		"scale":    benchScaleCmd,
		"mixed":    benchMixedCmd,
		"crash":    benchCrashCmd,
		"outage":   benchOutageCmd,
	}
	modes["reconcile"] = benchReconcileCmd // issue 4: a reconcile pass at 100,000 subscribers (bench_reconcile.go)
	f, ok := modes[mode]
	if !ok {
		return fmt.Errorf("bench: unknown mode %q\n%s", mode, benchUsage)
	}
	err := f(ctx, args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// benchFlags returns a flag set for a bench mode with the flags every
// scenario shares: -repeat and -dir.
func benchFlags(name string, stderr io.Writer) (*flag.FlagSet, *int, *string) {
	fs := flag.NewFlagSet("bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	repeat := fs.Int("repeat", 3, "run the scenario this many times and report medians")
	dir := fs.String("dir", "", "directory for the database files (default: a new temporary directory, removed afterwards)")
	return fs, repeat, dir
}

// workDir returns dir, or a new temporary directory and a function that
// removes it.
func workDir(dir string) (string, func(), error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", nil, fmt.Errorf("bench: %w", err)
		}
		return dir, func() {}, nil
	}
	d, err := os.MkdirTemp("", "subrole-bench-")
	if err != nil {
		return "", nil, fmt.Errorf("bench: %w", err)
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// metric is one number a scenario reports.
type metric struct {
	name  string
	value float64
	unit  string
}

// metrics is a scenario run's numbers, in print order.
type metrics []metric

// add appends a metric.
func (m *metrics) add(name string, value float64, unit string) {
	*m = append(*m, metric{name, value, unit})
}

// addMs adds a duration in milliseconds.
func (m *metrics) addMs(name string, d time.Duration) {
	m.add(name, float64(d)/float64(time.Millisecond), "ms")
}

// repeatRuns runs a scenario n times and prints every run's metrics and
// their medians. The scenario returns an error when it failed (a drill that
// found a lost effect); the remaining runs are skipped then.
func repeatRuns(ctx context.Context, out io.Writer, title, command string, n int, runOnce func(ctx context.Context, run int) (metrics, error)) error {
	n = max(n, 1)
	printHeader(out, title, command)
	var runs []metrics
	for i := range n {
		m, err := runOnce(ctx, i)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		runs = append(runs, m)
		fmt.Fprintf(out, "  run %d/%d done\n", i+1, n)
	}
	printMedians(out, runs)
	return nil
}

// printHeader prints the scenario, the command and the machine, so that a
// pasted result says where it came from.
func printHeader(out io.Writer, title, command string) {
	fmt.Fprintf(out, "== %s\n", title)
	fmt.Fprintf(out, "   command: %s\n", command)
	fmt.Fprintf(out, "   machine: %s\n", machine())
}

// machine describes the host: CPUs, CPU model, Go version, date.
func machine() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), GOMAXPROCS %d, %s %s/%s, %s", runtime.NumCPU(), model,
		runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format("2006-01-02"))
}

// printMedians prints one row per metric: every run's value and the median.
func printMedians(out io.Writer, runs []metrics) {
	if len(runs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "metric\t")
	for i := range runs {
		fmt.Fprintf(tw, "run %d\t", i+1)
	}
	fmt.Fprint(tw, "median\tunit\t\n")
	for _, m := range runs[0] {
		fmt.Fprintf(tw, "%s\t", m.name)
		var vals []float64
		for _, r := range runs {
			v := math.NaN()
			for _, x := range r {
				if x.name == m.name {
					v = x.value
					break
				}
			}
			vals = append(vals, v)
			fmt.Fprintf(tw, "%s\t", formatValue(v))
		}
		fmt.Fprintf(tw, "%s\t%s\t\n", formatValue(median(vals)), m.unit)
	}
	tw.Flush()
}

// median returns the median of vals, ignoring NaNs.
func median(vals []float64) float64 {
	v := slices.DeleteFunc(slices.Clone(vals), math.IsNaN)
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// formatValue prints v with as many digits as a table needs.
func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// latencies is a set of durations with percentile queries.
type latencies []time.Duration

// sorted returns a sorted copy.
func (l latencies) sorted() latencies {
	s := slices.Clone(l)
	slices.Sort(s)
	return s
}

// pct returns the p-th percentile (0-100) of sorted durations by the
// nearest-rank method, 0 when there are none.
func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(l))))
	return l[min(max(rank-1, 0), len(l)-1)]
}

// summary returns "p50 … p90 … p99 … max …" of unsorted durations.
func (l latencies) summary() string {
	s := l.sorted()
	if len(s) == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (n=%d)", ms(s.pct(50)), ms(s.pct(90)), ms(s.pct(99)), ms(s.pct(100)), len(s))
}

// addPercentiles adds p50/p90/p99/max metrics named prefix+" p50" etc.
func (m *metrics) addPercentiles(prefix string, l latencies) {
	s := l.sorted()
	m.addMs(prefix+" p50", s.pct(50))
	m.addMs(prefix+" p90", s.pct(90))
	m.addMs(prefix+" p99", s.pct(99))
	m.addMs(prefix+" max", s.pct(100))
}
