package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord"
	"github.com/subrole/subrole/discord/discordtest"
	"github.com/subrole/subrole/store"
	bolt "go.etcd.io/bbolt"
)

// A rig is the real service wiring (serve with hooks) running in-process
// against the world's fakes, for the end-to-end scenarios and the outage
// drill. Only the base URLs differ from production.

// rigSpec configures a rig.
type rigSpec struct {
	// Dir holds the database file.
	Dir string
	// Members links the world's viewers 1..Members before the start, in
	// the store and as Discord members holding the linked role, as if they
	// had linked earlier.
	Members int
	// Discord configures the fake Discord (latency, rate limits, OnCall);
	// its token and guild are the world's.
	Discord discordtest.Options
	// Applied observes every member the role applier handles.
	Applied func(discord.Applied)
	// Log receives the service's log lines at LogLevel ("error" when empty).
	Log      io.Writer
	LogLevel string
}

// rig is a running service and its fakes.
type rig struct {
	w   *world
	db  *store.Store
	svc *subrole.Service
	url string // the webhook URL

	cancel context.CancelFunc
	done   chan error
}

// startRig seeds the members, starts the service and returns once it
// serves.
func startRig(ctx context.Context, spec rigSpec) (*rig, error) {
	w := newWorldWith(filepath.Join(spec.Dir, "subrole.db"), spec.Discord)
	if err := seedMembers(w.env["SUBROLE_DATA"], w.discord, 1, spec.Members, spec.Members, false); err != nil {
		w.close()
		return nil, err
	}
	level := spec.LogLevel
	if level == "" {
		level = "error"
	}
	w.env["SUBROLE_LOG_LEVEL"] = level
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.close()
		return nil, fmt.Errorf("bench: %w", err)
	}
	w.serving(ln.Addr().String())
	cfg, err := loadConfig(w.getenv)
	if err != nil {
		ln.Close()
		w.close()
		return nil, err
	}
	logw := spec.Log
	if logw == nil {
		logw = io.Discard
	}
	r := &rig{w: w, url: w.twitch.Callback, done: make(chan error, 1)}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	go trimCalls(runCtx, w.discord)
	started := make(chan struct{})
	go func() {
		r.done <- serve(runCtx, cfg, newLogger(cfg, logw), hooks{
			listener: ln,
			opened:   func(db *store.Store) { r.db = db },
			started:  func(s *subrole.Service) { r.svc = s; close(started) },
			applied:  spec.Applied,
		})
	}()
	select {
	case <-started:
		return r, nil
	case err := <-r.done:
		cancel()
		w.close()
		return nil, fmt.Errorf("bench: the service did not start: %w", err)
	}
}

// stop stops the service and the fakes.
func (r *rig) stop() error {
	r.cancel()
	err := <-r.done
	r.w.close()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// pending returns how many events wait in the inbox and role jobs in the
// outbox (each counted up to limit).
func (r *rig) pending(ctx context.Context, limit int) (inbox, outbox int, err error) {
	err = r.db.View(ctx, func(tx subrole.Tx) error {
		in, err := tx.Inbox(0, limit)
		if err != nil {
			return err
		}
		out, err := tx.RoleJobs(0, limit)
		inbox, outbox = len(in), len(out)
		return err
	})
	return inbox, outbox, err
}

// outboxLen counts the role jobs in the outbox without decoding them (the
// store's documented "outbox" bucket), cheaply enough to sample often
// under load; pending would decode every job.
func (r *rig) outboxLen() (int, error) {
	n := 0
	err := r.db.Bolt().View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("outbox"))
		if b == nil {
			return errors.New("bench: the store has no outbox bucket")
		}
		n = b.Stats().KeyN
		return nil
	})
	return n, err
}

// waitDrained waits until the inbox and the outbox are empty and returns how
// long that took.
func (r *rig) waitDrained(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		in, out, err := r.pending(ctx, 1)
		if err != nil {
			return 0, err
		}
		if in == 0 && out == 0 {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			in, out, _ = r.pending(ctx, -1)
			return 0, fmt.Errorf("bench: after %s the inbox still holds %d events and the outbox %d role jobs", timeout, in, out)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// seedMembers links viewers first..first+n-1 in the store at path, and
// adds the first discordN of them to the fake Discord with the linked role.
// With subs, each also gets an active subscription (tier by viewer number).
func seedMembers(path string, dc *discordtest.Server, first, n, discordN int, subs bool) error {
	if n <= 0 {
		return nil
	}
	db, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	// Subscriptions were last observed an hour ago, beyond the window in
	// which a reconcile trusts a recent event over Helix.
	observed := now.Add(-time.Hour)
	const chunk = 20000
	for lo := first; lo < first+n; lo += chunk {
		hi := min(lo+chunk, first+n)
		err := db.Update(context.Background(), func(tx subrole.Tx) error {
			for i := lo; i < hi; i++ {
				tw := twitchID(i)
				if err := tx.PutLink(subrole.Link{DiscordUserID: discordID(i), TwitchUserID: tw,
					TwitchLogin: "viewer" + strconv.Itoa(i), Linked: now}); err != nil {
					return err
				}
				if subs {
					s := subrole.Subscription{TwitchUserID: tw, TwitchLogin: "viewer" + strconv.Itoa(i),
						Tier: subrole.Tier(1 + i%3), Started: observed, LastEvent: observed,
						LastEventType: string(subrole.EventSubscribe), Source: subrole.SourceEventSub}
					if err := tx.PutSubscription(s); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			db.Close()
			return fmt.Errorf("bench: seed members: %w", err)
		}
	}
	// One synced commit so the file is durable before the service opens it.
	if err := db.Bolt().Sync(); err != nil {
		db.Close()
		return fmt.Errorf("bench: seed members: %w", err)
	}
	if err := db.Close(); err != nil {
		return err
	}
	for i := first; i < first+min(discordN, n); i++ {
		dc.AddMember(discordID(i), "viewer"+strconv.Itoa(i), worldRoleLinked)
	}
	return nil
}

// trimCalls makes the fake Discord forget its recorded calls every few
// seconds until ctx is done: long scenarios observe calls through OnCall,
// and the record of hundreds of thousands of calls would only cost memory.
func trimCalls(ctx context.Context, dc *discordtest.Server) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			dc.ResetCalls()
		}
	}
}

// roleCall is a role write seen by the fake Discord.
type roleCall struct {
	member, role string
	add          bool // PUT; false is DELETE
	status       int
	at           time.Time
}

// parseRoleCall reports whether c is a role write and returns it.
func parseRoleCall(c discordtest.Call) (roleCall, bool) {
	if c.Method != "PUT" && c.Method != "DELETE" {
		return roleCall{}, false
	}
	// /api/v9/guilds/{guild}/members/{user}/roles/{role}
	parts := strings.Split(strings.TrimPrefix(c.Path, "/api/v9/"), "/")
	if len(parts) != 6 || parts[0] != "guilds" || parts[2] != "members" || parts[4] != "roles" {
		return roleCall{}, false
	}
	return roleCall{member: parts[3], role: parts[5], add: c.Method == "PUT", status: c.Status, at: c.Time}, true
}

// callStats counts the fake Discord's calls; its observe method is an
// Options.OnCall.
type callStats struct {
	mu         sync.Mutex
	total      int
	roleWrites int // 2xx role PUT/DELETE
	gets       int
	byStatus   map[int]int
	firstWrite map[string]time.Time // member -> arrival of their first role write
}

// newCallStats returns empty call counters.
func newCallStats() *callStats {
	return &callStats{byStatus: map[int]int{}, firstWrite: map[string]time.Time{}}
}

// observe counts one call.
func (s *callStats) observe(c discordtest.Call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total++
	s.byStatus[c.Status]++
	if c.Method == "GET" && strings.Contains(c.Path, "/members/") {
		s.gets++
	}
	if rc, ok := parseRoleCall(c); ok && rc.status/100 == 2 {
		s.roleWrites++
		if _, ok := s.firstWrite[rc.member]; !ok {
			s.firstWrite[rc.member] = c.Time
		}
	}
}

// appliedStats collects the applier's reports; its observe method is a
// rigSpec.Applied.
type appliedStats struct {
	mu       sync.Mutex
	handled  int // members handled (applications)
	changed  int // applications that changed roles
	jobs     int // jobs folded into applications
	failed   int // permanent failures
	toCall   latencies
	byMember map[string]int
}

// newAppliedStats returns empty applier counters.
func newAppliedStats() *appliedStats { return &appliedStats{byMember: map[string]int{}} }

// observe counts one member application.
func (s *appliedStats) observe(a discord.Applied) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handled++
	s.jobs += a.Jobs
	s.byMember[a.DiscordUserID]++
	if a.Err != nil {
		s.failed++
	}
	if len(a.Added)+len(a.Removed) > 0 {
		s.changed++
	}
	if !a.Called.IsZero() && !a.Observed.IsZero() {
		s.toCall = append(s.toCall, a.Called.Sub(a.Observed))
	}
}

// isNotFound reports whether err wraps subrole.ErrNotFound.
func isNotFound(err error) bool { return errors.Is(err, subrole.ErrNotFound) }

// mkdir creates a private directory and its parents.
func mkdir(d string) error {
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}
