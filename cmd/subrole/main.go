// Command subrole runs the subrole service: Twitch subscriptions in, Discord
// roles out. "subrole demo" plays the whole flow against built-in fakes.
//
// Usage:
//
//	subrole [serve]   run the service (configuration from SUBROLE_* variables)
//	subrole demo      run a self-contained demo on loopback, no credentials needed
//	subrole version   print the version
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "subrole:", err)
		os.Exit(1)
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
  subrole version   print the version
`
