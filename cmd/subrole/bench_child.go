package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The crash drill and the scale scenario run the service as a separate
// process, the way it runs in production, so that it can be SIGKILLed and
// its memory measured alone.

// spawner returns the command that runs the service ("subrole serve") with
// env added to the environment. The bench command re-executes its own
// binary; tests re-execute the test binary (see TestMain).
type spawner func(env []string) *exec.Cmd

// selfSpawner runs this executable's serve command.
func selfSpawner() (spawner, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: find own executable: %w", err)
	}
	return func(env []string) *exec.Cmd {
		cmd := exec.Command(exe, "serve")
		cmd.Env = append(os.Environ(), env...)
		return cmd
	}, nil
}

// child is one running service process.
type child struct {
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{}
	err     error // valid after exited is closed
	logs    *tailBuffer
}

// startChild starts the service and waits until addr answers /healthz 200.
// It returns how long that took.
func startChild(ctx context.Context, spawn spawner, env []string, addr string, timeout time.Duration) (*child, time.Duration, error) {
	c := &child{cmd: spawn(env), exited: make(chan struct{}), logs: &tailBuffer{max: 64 << 10}}
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	start := time.Now()
	c.started = start
	if err := c.cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("bench: start service: %w", err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.exited) }()
	if err := waitHTTP(ctx, "http://"+addr+"/healthz", c.exited, timeout); err != nil {
		c.kill()
		return nil, 0, fmt.Errorf("bench: service did not become healthy: %w; its output:\n%s", err, c.logs)
	}
	return c, time.Since(start), nil
}

// waitHTTP polls url until it answers 200, the process exits or timeout.
func waitHTTP(ctx context.Context, url string, exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("it exited")
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no 200 from %s within %s", url, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// kill SIGKILLs the process and waits for it.
func (c *child) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// stop asks the process to shut down (SIGTERM) and waits up to timeout,
// then kills it. It returns the exit error of a process that did not exit
// cleanly.
func (c *child) stop(timeout time.Duration) error {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return c.err
	case <-time.After(timeout):
		c.kill()
		return fmt.Errorf("bench: the service did not stop within %s after SIGTERM", timeout)
	}
}

// tailBuffer keeps the last max bytes written to it; safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

// Write appends p, dropping the oldest bytes beyond max.
func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

// String returns what is kept.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// freeLoopbackAddr returns a loopback address that was free a moment ago.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// envList turns an environment map into KEY=value entries, sorted.
func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// procMemory reads a Linux process's memory counters from /proc/<pid>/status
// in bytes: VmRSS, VmHWM (peak RSS), RssAnon (heap and stacks) and RssFile
// (mapped files: bbolt's memory map). It returns an empty map elsewhere.
func procMemory(pid int) map[string]float64 {
	out := map[string]float64{}
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS", "VmHWM", "RssAnon", "RssFile":
			fields := strings.Fields(v)
			if len(fields) == 2 && fields[1] == "kB" {
				if n, err := strconv.ParseFloat(fields[0], 64); err == nil {
					out[k] = n * 1024
				}
			}
		}
	}
	return out
}
