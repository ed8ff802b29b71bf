package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord/discordtest"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// benchScaleCmd is "subrole bench scale": a database with a million linked
// members and subscriptions; the service's start-up time and memory, its
// acks under load at that size, and the local half of a full reconcile.
func benchScaleCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, repeat, dirFlag := benchFlags("scale", stderr)
	members := fs.Int("members", 1000000, "linked members with subscriptions in the database")
	rate := fs.Float64("rate", 1000, "events per second sent after each start (0 skips the load)")
	duration := fs.Duration("duration", 10*time.Second, "length of that load")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, cleanup, err := workDir(*dirFlag)
	if err != nil {
		return err
	}
	defer cleanup()
	spawn, err := selfSpawner()
	if err != nil {
		return err
	}
	return runScale(ctx, stdout, stderr, scaleSpec{Dir: dir, Members: *members, Rate: *rate, Duration: *duration,
		Repeat: *repeat, Spawn: spawn, Command: "subrole bench scale " + strings.Join(args, " ")})
}

// scaleSpec configures runScale.
type scaleSpec struct {
	Dir      string
	Members  int
	Rate     float64
	Duration time.Duration
	Repeat   int
	Spawn    spawner
	Command  string
}

// runScale builds the database once, then starts the service Repeat times.
func runScale(ctx context.Context, stdout, stderr io.Writer, s scaleSpec) error {
	active := min(s.Members, 10000) // members present in the fake Discord and sent events
	w := newWorldWith(filepath.Join(s.Dir, "subrole.db"), discordtest.Options{})
	defer w.close()
	printHeader(stdout, fmt.Sprintf("scale: %d stored members and subscriptions", s.Members), s.Command)
	t := time.Now()
	if err := seedMembers(w.env["SUBROLE_DATA"], w.discord, 1, s.Members, active, true); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "  built the database in %s\n", time.Since(t).Round(time.Millisecond))
	addr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	w.env["SUBROLE_LISTEN"] = addr
	w.env["SUBROLE_LOG_LEVEL"] = "error"
	w.serving(addr)
	env := envList(w.env)
	mb := func(b float64) float64 { return b / (1 << 20) }

	var runs []metrics
	for run := range max(s.Repeat, 1) {
		var m metrics
		if st, err := os.Stat(w.env["SUBROLE_DATA"]); err == nil {
			m.add("file size", mb(float64(st.Size())), "MiB")
		}
		c, took, err := startChild(ctx, s.Spawn, env, addr, 2*time.Minute)
		if err != nil {
			return err
		}
		m.addMs("exec -> /healthz 200", took)
		if err := waitHTTP(ctx, "http://"+addr+"/readyz", c.exited, time.Minute); err != nil {
			c.kill()
			return fmt.Errorf("bench scale: never ready: %w", err)
		}
		m.addMs("exec -> /readyz 200 (Discord checked, gateway up)", time.Since(c.started))
		mem := procMemory(c.cmd.Process.Pid)
		m.add("RSS after start", mb(mem["VmRSS"]), "MiB")
		m.add("  anonymous (heap, stacks)", mb(mem["RssAnon"]), "MiB")
		m.add("  file-backed (bbolt map)", mb(mem["RssFile"]), "MiB")
		if s.Rate > 0 {
			gen := newLoadGen(w.twitch, genSpec{Users: active, Mix: eventMix{Subscribe: 80, Resub: 15, End: 5}})
			res := runLoad(ctx, newLoadClient(64), w.twitch.Callback, loadSpec{Conns: 64, Rate: s.Rate, Duration: s.Duration},
				func() (twitchtest.Message, bool, bool) { msg, dup := gen.message(); return msg, dup, true }, nil)
			res.addTo(&m, fmt.Sprintf("%.0f/s after start: ", s.Rate))
			mem = procMemory(c.cmd.Process.Pid)
			m.add("RSS after the load", mb(mem["VmRSS"]), "MiB")
			m.add("peak RSS (VmHWM)", mb(mem["VmHWM"]), "MiB")
		}
		if err := c.stop(30 * time.Second); err != nil {
			return fmt.Errorf("bench scale: %w; output:\n%s", err, c.logs)
		}
		walk, n, err := reconcileWalk(ctx, w.env["SUBROLE_DATA"])
		if err != nil {
			return err
		}
		m.addMs(fmt.Sprintf("walk %d members: read link+subscription, DesiredRoles", n), walk)
		runs = append(runs, m)
		fmt.Fprintf(stdout, "  run %d/%d done\n", run+1, max(s.Repeat, 1))
	}
	printMedians(stdout, runs)

	fmt.Fprintf(stdout, "  full reconcile passes (Service.Reconcile with in-memory Helix and Discord, no network)\n")
	var passes []metrics
	for pass := range max(s.Repeat, 1) {
		m, err := reconcileAtScale(ctx, w.env["SUBROLE_DATA"], s.Members, pass == 0)
		if err != nil {
			return err
		}
		passes = append(passes, m)
		fmt.Fprintf(stdout, "  pass %d/%d done\n", pass+1, max(s.Repeat, 1))
	}
	printMedians(stdout, passes)
	fmt.Fprintln(stdout, "  pass 1 finds the seeded drift (1% tier changes, 0.1% missed ends, 0.1% roles edited by hand); later passes find none")
	return nil
}

// fakeHelix is Helix's subscriber list in memory.
type fakeHelix struct {
	subs []subrole.HelixSubscription
	byID map[string]subrole.HelixSubscription
}

// AllSubscribers calls fn with pages of 100 subscribers.
func (f *fakeHelix) AllSubscribers(ctx context.Context, fn func([]subrole.HelixSubscription) error) error {
	for page := range slices.Chunk(f.subs, 100) {
		if err := fn(page); err != nil {
			return err
		}
	}
	return nil
}

// Subscribers returns the subscriptions of the users in ids that have one.
func (f *fakeHelix) Subscribers(ctx context.Context, ids []string) ([]subrole.HelixSubscription, error) {
	var out []subrole.HelixSubscription
	for _, id := range ids {
		if h, ok := f.byID[id]; ok {
			out = append(out, h)
		}
	}
	return out, nil
}

// fakeMemberRoles is the guild's members and roles, in pages of 1000.
type fakeMemberRoles struct {
	n     int
	roles func(i int) []string
}

// AllMemberRoles calls fn with pages of 1000 members and their roles.
func (f fakeMemberRoles) AllMemberRoles(ctx context.Context, fn func(map[string][]string) error) error {
	for lo := 1; lo <= f.n; lo += 1000 {
		page := make(map[string][]string, 1000)
		for i := lo; i < min(lo+1000, f.n+1); i++ {
			page[discordID(i)] = f.roles(i)
		}
		if err := fn(page); err != nil {
			return err
		}
	}
	return nil
}

// reconcileFakes returns Helix and Discord in memory for the n members
// seedMembers stores: Helix disagrees with the seeded store on 1% of the
// tiers and misses 0.1% of the subscribers, and Discord holds the roles
// Helix's state implies, except that with handEdits 0.1% of the members'
// roles were also edited by hand.
func reconcileFakes(n int, handEdits bool) (*fakeHelix, fakeMemberRoles) {
	policy := worldPolicy()
	tierRole := []string{"", policy.Tier1, policy.Tier2, policy.Tier3}
	helix := &fakeHelix{byID: make(map[string]subrole.HelixSubscription, n)}
	truth := make([]subrole.Tier, n+1) // viewer -> the tier Helix reports (TierNone: not subscribed)
	for i := 1; i <= n; i++ {
		tier := subrole.Tier(1 + i%3)
		switch {
		case i%1000 == 500:
			continue // Helix says: no longer subscribed
		case i%100 == 7:
			tier = subrole.Tier(1 + (i+1)%3) // Helix says: another tier
		}
		truth[i] = tier
		h := subrole.HelixSubscription{UserID: twitchID(i), UserLogin: "viewer" + strconv.Itoa(i), Tier: tier}
		helix.subs = append(helix.subs, h)
		helix.byID[h.UserID] = h
	}
	roles := fakeMemberRoles{n: n, roles: func(i int) []string {
		if handEdits && i%1000 == 3 || !truth[i].Valid() {
			return []string{policy.Linked} // edited by hand, or no longer a subscriber
		}
		return []string{policy.Linked, tierRole[truth[i]], policy.Subscriber}
	}}
	return helix, roles
}

// reconcileAtScale runs one full reconcile pass over the n seeded members
// against Helix and Discord in memory (reconcileFakes, with hand edits on
// the first pass) and measures its time and the Go heap it needs. The first
// pass fixes drift; later passes find none.
func reconcileAtScale(ctx context.Context, path string, n int, first bool) (metrics, error) {
	db, err := store.Open(path, store.Options{})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	policy := worldPolicy()
	helix, roles := reconcileFakes(n, first)
	svc := subrole.NewService(subrole.Config{Store: db, Policy: policy})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	peak := before.HeapInuse
	sampling, stop := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampling.Done():
				return
			case <-t.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
			}
		}
	}()
	// Once the stored state is loaded and Helix compared, the live heap
	// (after a collection) less the one before the pass is what the pass
	// holds, whatever garbage the collector lets accumulate besides.
	var held uint64
	var measured bool
	progress := func(stage subrole.ReconcileStage, _ subrole.ReconcileReport) {
		if stage == subrole.StageDiscord && !measured {
			measured = true
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			held = max(ms.HeapAlloc, before.HeapAlloc) - before.HeapAlloc
		}
	}
	start := time.Now()
	rep, err := svc.ReconcileWith(ctx, subrole.ReconcileOptions{Source: helix, Roles: roles, Progress: progress})
	took := time.Since(start)
	stop()
	<-sampled
	if err != nil {
		return nil, err
	}
	var m metrics
	m.addMs("full reconcile pass", took)
	m.add("Helix requests it made", float64(rep.HelixRequests), "")
	m.add("  at Helix's 800 per minute, at least", float64(rep.HelixRequests)/800, "min")
	m.add("Go heap growth during the pass", float64(peak-before.HeapInuse)/(1<<20), "MiB")
	m.add("  live heap the pass holds while checking Discord roles", float64(held)/(1<<20), "MiB")
	m.add("drifts fixed", float64(rep.Drifts()), "")
	m.add("roles repaired", float64(rep.RolesRepaired), "")
	m.add("role jobs queued", float64(rep.RoleJobs), "")
	return m, nil
}

// reconcileWalk opens the store and times one read-only pass over every
// link: read its subscription and compute its desired roles. It is what a
// full reconcile does locally before comparing with Helix and Discord.
func reconcileWalk(ctx context.Context, path string) (time.Duration, int, error) {
	db, err := store.Open(path, store.Options{})
	if err != nil {
		return 0, 0, err
	}
	defer db.Close()
	policy := worldPolicy()
	start := time.Now()
	n, roles := 0, 0
	err = db.View(ctx, func(tx subrole.Tx) error {
		return tx.ForEachLink(func(l subrole.Link) error {
			s, err := tx.Subscription(l.TwitchUserID)
			if err != nil && !isNotFound(err) {
				return err
			}
			roles += len(subrole.DesiredRoles(policy, subrole.Member{Link: l, Sub: s}, start))
			n++
			return nil
		})
	})
	if err != nil {
		return 0, 0, err
	}
	if roles == 0 && n > 0 {
		return 0, 0, fmt.Errorf("bench scale: the walk computed no roles")
	}
	return time.Since(start), n, nil
}
