// Command subrole runs the subrole service: Twitch subscriptions in, Discord
// roles out. "subrole demo" plays the whole flow against built-in fakes.
//
// Usage:
//
//	subrole [serve]   run the service (configuration from SUBROLE_* variables)
//	subrole demo      run a self-contained demo on loopback, no credentials needed
//	subrole ban       list, add or remove banned addresses (works while the service runs)
//	subrole reconcile run a reconcile pass in the running service now
//	subrole eventsub  list, sync or delete EventSub subscriptions
//	subrole import    import links from another bot or a spreadsheet (CSV or JSON)
//	subrole export    write every link as CSV or JSON (a backup, or to move machines)
//	subrole bench     load generator, benchmarks and drills (see BENCHMARKS.md)
//	subrole version   print the version
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	spareProcessor()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "subrole:", err)
		os.Exit(1)
	}
}

// spareProcessor lets Go run one more goroutine at a time than there are
// CPUs, unless GOMAXPROCS is set. The store's commit loop spends most of
// its time in fdatasync; while it waits there, its processor goes to the
// HTTP handlers, and when fsync returns the loop has to queue behind them
// for a processor before it can answer the group it just made durable and
// start the next one. One spare processor lets it run at once. Measured on
// 2 CPUs at concurrency 64 (BENCHMARKS.md): events per commit 15 → 24,
// acknowledged events per second +20%, the p99 at 1,000/s 4.9 → 3.6 ms,
// the single-request latency unchanged. Setting it turns off the runtime's
// tracking of a container's CPU limit, so it is skipped when that limit
// already gave fewer processors than CPUs.
func spareProcessor() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	if n := runtime.GOMAXPROCS(0); n >= runtime.NumCPU() {
		runtime.GOMAXPROCS(n + 1)
	}
}

// run is the whole program; main only supplies the process's context,
// arguments, environment and output streams, so tests can call it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 1 {
		cmd, args = args[1], args[2:]
	} else {
		args = nil
	}
	switch cmd {
	case "serve":
		cfg, err := loadConfig(getenv)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, newLogger(cfg, stderr), hooks{})
	case "demo":
		return demo(ctx, args, stdout, stderr)
	case "ban":
		return banCmd(ctx, args, getenv, stdout, stderr)
	case "reconcile":
		return reconcileCmd(ctx, args, getenv, stdout, stderr)
	case "eventsub":
		return eventsubCmd(ctx, args, getenv, stdout, stderr)
	case "import":
		return importCmd(ctx, args, getenv, os.Stdin, stdout, stderr)
	case "export":
		return exportCmd(ctx, args, getenv, stdout, stderr)
	case "bench":
		return bench(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "subrole", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

const usage = `usage:
  subrole [serve]   run the service (configured by SUBROLE_* environment variables, see README)
  subrole demo      play the whole flow against built-in fake Twitch and Discord servers
  subrole ban       list, add or remove banned addresses ("subrole ban help")
  subrole reconcile run a reconcile pass against Helix and Discord in the running service now
  subrole eventsub  list, sync or delete EventSub subscriptions ("subrole eventsub help")
  subrole import    import links from another bot or a spreadsheet: [-dry-run] [-replace] FILE ("subrole import help")
  subrole export    write every link as CSV or JSON: [-format csv|json] [FILE] ("subrole export help")
  subrole bench     load generator, benchmarks and crash/outage drills ("subrole bench help")
  subrole version   print the version
`
