package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord/discordtest"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// roleLedger follows every member's roles through the fake Discord's calls
// (an Options.OnCall) and counts writes that had no effect: a PUT of a role
// the member held or a DELETE of one they did not hold. The applier reads a
// member before writing, so such a write means a role change was applied
// twice. Members start with the linked role.
type roleLedger struct {
	mu             sync.Mutex
	roles          map[string]map[string]bool // member -> roles held
	writes         map[string]int             // member+" "+role -> effective writes
	redundant      []string
	failed         int         // calls that failed (outage)
	failedByStatus map[int]int // of those, by status; 0 is a dropped connection
	total          int
}

// newRoleLedger returns an empty ledger.
func newRoleLedger() *roleLedger {
	return &roleLedger{roles: map[string]map[string]bool{}, writes: map[string]int{}, failedByStatus: map[int]int{}}
}

// observe records one call; it is a discordtest.Options.OnCall.
func (l *roleLedger) observe(c discordtest.Call) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	if c.Status/100 != 2 {
		l.failed++
		l.failedByStatus[c.Status]++
	}
	rc, ok := parseRoleCall(c)
	if !ok || rc.status/100 != 2 {
		return
	}
	held := l.roles[rc.member]
	if held == nil {
		held = map[string]bool{worldRoleLinked: true}
		l.roles[rc.member] = held
	}
	if held[rc.role] == rc.add {
		verb := map[bool]string{true: "added", false: "removed"}[rc.add]
		l.redundant = append(l.redundant, fmt.Sprintf("member %s: role %s %s again at %s", rc.member, rc.role, verb, rc.at.Format("15:04:05.000")))
		return
	}
	held[rc.role] = rc.add
	l.writes[rc.member+" "+rc.role]++
}

// crashDrill SIGKILLs the service during bursts of events and checks that
// every acknowledged event took effect exactly once.
type crashDrill struct {
	// Rounds is how many bursts (and kills); Events how many events per
	// burst. Every event is a new subscription of a member of its own, so
	// every effect can be counted: Rounds×Events members in all.
	Rounds, Events int
	// Conns is how many connections send each burst.
	Conns int
	// Spawn runs the service process.
	Spawn spawner
	// Dir holds the database.
	Dir string
	// Seed makes the kill moments and tiers repeatable; zero is random.
	Seed uint64
	// Progress receives one line per round; nil discards.
	Progress io.Writer
}

// crashReport is what the drill saw.
type crashReport struct {
	Events, AckedFirstTry, Resent int
	Kills                         []string // when each kill happened
	Restarts                      latencies
	Settle                        time.Duration // last acknowledgement -> every member's roles right
	Problems                      []string      // lost or duplicated effects, inconsistencies
}

// run executes the drill. An error means the drill could not be carried
// out; effects lost or duplicated are listed in the report's Problems.
func (d *crashDrill) run(ctx context.Context) (*crashReport, error) {
	seed := d.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	progress := d.Progress
	if progress == nil {
		progress = io.Discard
	}
	conns := max(d.Conns, 1)
	ledger := newRoleLedger()
	w := newWorldWith(filepath.Join(d.Dir, "subrole.db"), discordtest.Options{OnCall: ledger.observe})
	defer w.close()
	trimCtx, stopTrim := context.WithCancel(ctx)
	defer stopTrim()
	go trimCalls(trimCtx, w.discord)
	total := d.Rounds * d.Events
	if err := seedMembers(w.env["SUBROLE_DATA"], w.discord, 1, total, total, false); err != nil {
		return nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	w.env["SUBROLE_LISTEN"] = addr
	w.env["SUBROLE_LOG_LEVEL"] = "error"
	w.serving(addr)
	env := envList(w.env)
	rep := &crashReport{Events: total}
	fmt.Fprintf(progress, "crash drill: %d rounds of %d events, seed %d\n", d.Rounds, d.Events, seed)

	c, _, err := startChild(ctx, d.Spawn, env, addr, time.Minute)
	if err != nil {
		return nil, err
	}
	defer func() {
		select {
		case <-c.exited:
		default:
			c.kill()
		}
	}()
	client := newLoadClient(conns)
	tiers := []string{"1000", "2000", "3000"}
	want := map[int]string{}
	for round := range d.Rounds {
		base := round * d.Events
		msgs := make([]twitchtest.Message, d.Events)
		for i := range msgs {
			n := base + i + 1
			tier := tiers[rng.IntN(3)]
			want[n] = tier
			msgs[i] = w.twitch.Subscribe(twitchID(n), "viewer"+strconv.Itoa(n), tier, rng.IntN(2) == 0)
		}
		// Kill during the burst after a random number of acks, or (one
		// round in five on average) while the backlog drains after it.
		u := rng.Float64() * 1.25
		killAfter := max(1, int(u*float64(d.Events)))
		duringDrain := u >= 1
		drainDelay := time.Duration(rng.Int64N(int64(300 * time.Millisecond)))
		var (
			killOnce sync.Once
			acks     atomic.Int64
			killed   = make(chan string, 1)
		)
		kill := func(when string) {
			killOnce.Do(func() {
				c.kill()
				killed <- when
			})
		}
		acked := make([]atomic.Bool, d.Events)
		index := make(map[string]int, d.Events)
		for i, m := range msgs {
			index[m.ID] = i
		}
		var next atomic.Int64
		send := func(pending []int) {
			next.Store(0)
			runLoad(ctx, client, w.twitch.Callback, loadSpec{Conns: conns, Count: len(pending)},
				func() (twitchtest.Message, bool, bool) {
					i := int(next.Add(1)) - 1
					if i >= len(pending) {
						return twitchtest.Message{}, false, false
					}
					return msgs[pending[i]], false, true
				},
				func(m twitchtest.Message, s sample, err error) {
					if err != nil || s.Status/100 != 2 {
						return
					}
					acked[index[m.ID]].Store(true)
					if n := acks.Add(1); !duringDrain && int(n) == killAfter {
						kill(fmt.Sprintf("round %d: after %d of %d acks", round+1, n, d.Events))
					}
				})
		}
		all := make([]int, d.Events)
		for i := range all {
			all[i] = i
		}
		send(all)
		if duringDrain {
			time.Sleep(drainDelay)
			kill(fmt.Sprintf("round %d: %s after the burst, while the backlog drains", round+1, drainDelay.Round(time.Millisecond)))
		}
		kill(fmt.Sprintf("round %d: after the burst", round+1)) // in case the trigger was never reached
		rep.Kills = append(rep.Kills, <-killed)
		firstTry := 0
		for i := range acked {
			if acked[i].Load() {
				firstTry++
			}
		}
		rep.AckedFirstTry += firstTry

		c, _, err = startChild(ctx, d.Spawn, env, addr, time.Minute)
		if err != nil {
			return rep, err
		}
		rep.Restarts = append(rep.Restarts, time.Since(c.started))
		// Like Twitch, deliver again what was not acknowledged, with the
		// same message id, until it is.
		for attempt := 0; ; attempt++ {
			var pending []int
			for i := range acked {
				if !acked[i].Load() {
					pending = append(pending, i)
				}
			}
			if len(pending) == 0 {
				break
			}
			if attempt == 5 {
				return rep, fmt.Errorf("bench crash: round %d: %d events still unacknowledged after 5 redeliveries", round+1, len(pending))
			}
			rep.Resent += len(pending)
			send(pending)
		}
		fmt.Fprintf(progress, "  %s; %d acked before the kill, %d redelivered; restarted in %s\n",
			rep.Kills[len(rep.Kills)-1], firstTry, d.Events-firstTry, ms(rep.Restarts[len(rep.Restarts)-1]))
	}

	lastAck := time.Now()
	if wrong, err := waitRoles(ctx, w.discord, want, time.Minute); err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d members do not hold the roles of their acknowledged event: %v", wrong, err))
	}
	rep.Settle = time.Since(lastAck)
	time.Sleep(200 * time.Millisecond) // let a stray duplicate call show up
	if err := c.stop(30 * time.Second); err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("the service did not stop cleanly: %v", err))
	}
	rep.Problems = append(rep.Problems, d.verify(w, ledger, want)...)
	return rep, nil
}

// verify checks the effects counted by the ledger and the database file.
func (d *crashDrill) verify(w *world, ledger *roleLedger, want map[int]string) []string {
	var problems []string
	tierRole := map[string]string{"1000": worldRoleTier1, "2000": worldRoleTier2, "3000": worldRoleTier3}
	ledger.mu.Lock()
	problems = append(problems, ledger.redundant...)
	for n, tier := range want {
		for _, role := range []string{tierRole[tier], worldRoleSub} {
			if got := ledger.writes[discordID(n)+" "+role]; got != 1 {
				problems = append(problems, fmt.Sprintf("member %s: role %s written %d times, want exactly once", discordID(n), role, got))
			}
		}
	}
	effective := 0
	for _, n := range ledger.writes {
		effective += n
	}
	if effective != 2*len(want) {
		problems = append(problems, fmt.Sprintf("%d effective role writes, want %d (two per event)", effective, 2*len(want)))
	}
	ledger.mu.Unlock()

	db, err := store.Open(w.env["SUBROLE_DATA"], store.Options{})
	if err != nil {
		return append(problems, fmt.Sprintf("reopen the database: %v", err))
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		problems = append(problems, err.Error())
	}
	perUser := map[string]int{}
	err = db.View(context.Background(), func(tx subrole.Tx) error {
		in, err := tx.Inbox(0, -1)
		if err != nil {
			return err
		}
		out, err := tx.RoleJobs(0, -1)
		if err != nil {
			return err
		}
		if len(in) > 0 || len(out) > 0 {
			problems = append(problems, fmt.Sprintf("after the drill the inbox holds %d events and the outbox %d jobs", len(in), len(out)))
		}
		audit, err := tx.Audit(0, -1)
		for _, e := range audit {
			if e.Kind == subrole.AuditSubscription {
				perUser[e.TwitchUserID]++
			}
		}
		return err
	})
	if err != nil {
		return append(problems, fmt.Sprintf("read the database: %v", err))
	}
	for n := range want {
		if got := perUser[twitchID(n)]; got != 1 {
			problems = append(problems, fmt.Sprintf("twitch user %s: %d subscription changes applied by the core, want exactly 1", twitchID(n), got))
		}
	}
	slices.Sort(problems)
	if len(problems) > 20 {
		problems = append(problems[:20], fmt.Sprintf("… and %d more", len(problems)-20))
	}
	return problems
}

// benchCrashCmd is "subrole bench crash".
func benchCrashCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, repeat, dirFlag := benchFlags("crash", stderr)
	rounds := fs.Int("rounds", 20, "bursts, each ended by a SIGKILL")
	events := fs.Int("events", 5000, "events per burst, each for a member of its own")
	conns := fs.Int("conns", 32, "connections per burst")
	seed := fs.Uint64("seed", 0, "random seed for kill moments and tiers (0: random, printed)")
	*repeat = 1
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
	cmd := "subrole bench crash " + strings.Join(args, " ")
	return repeatRuns(ctx, stdout, "crash drill: SIGKILL during bursts, restart, exactly-once check", cmd, *repeat,
		func(ctx context.Context, run int) (metrics, error) {
			sub, err := subDir(dir, run)
			if err != nil {
				return nil, err
			}
			d := &crashDrill{Rounds: *rounds, Events: *events, Conns: *conns, Spawn: spawn, Dir: sub, Seed: *seed, Progress: stdout}
			rep, err := d.run(ctx)
			if err != nil {
				return nil, err
			}
			var m metrics
			m.add("events (one member each)", float64(rep.Events), "")
			m.add("kills", float64(len(rep.Kills)), "")
			m.add("acknowledged before a kill", float64(rep.AckedFirstTry), "")
			m.add("redelivered after a restart", float64(rep.Resent), "")
			m.addMs("restart: exec -> healthy p50", rep.Restarts.sorted().pct(50))
			m.addMs("last ack -> every role right", rep.Settle)
			m.add("lost or duplicated effects, inconsistencies", float64(len(rep.Problems)), "")
			if len(rep.Problems) > 0 {
				return m, errors.New("bench crash: FAILED:\n  " + strings.Join(rep.Problems, "\n  "))
			}
			fmt.Fprintln(stdout, "  every acknowledged event applied exactly once; store check clean")
			return m, nil
		})
}
