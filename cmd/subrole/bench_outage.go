package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/subrole/subrole/discord"
	"github.com/subrole/subrole/discord/discordtest"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// outageDrill fails the fake Discord during steady load and checks that,
// once it heals, every member's role changes were applied in order and none
// twice, and that the webhook kept answering.
type outageDrill struct {
	// Members is how many linked members the events cycle through. Each
	// member's next event is sent only after the previous one was
	// acknowledged, so each member's events have a definite order.
	Members int
	// Rate is the load in events per second.
	Rate float64
	// Before, Outage and After are the phases: load with Discord up, load
	// while Discord fails (in nine equal segments, in turn: every call
	// answered 500, every call answered 429 with retry_after, every
	// connection dropped, starting with one the seed picks), load after it
	// heals.
	Before, Outage, After time.Duration
	// Conns is how many connections send.
	Conns int
	// Dir holds the database.
	Dir string
	// Seed makes the event sequence repeatable; zero is random.
	Seed uint64
	// Log receives the service's error logs; nil discards them.
	Log io.Writer
}

// outageReport is what the drill measured.
type outageReport struct {
	Load                  loadResult
	OutageStart, Healed   time.Time
	Sent                  int
	FailedCalls           int         // Discord calls answered with an error or dropped
	FailedByStatus        map[int]int // of those, by status (0: connection dropped)
	PeakBacklog           int         // most role jobs waiting in the outbox
	BacklogClearedInAfter time.Duration
	Drain                 time.Duration // last ack -> outbox empty
	Applications          int
	Problems              []string
}

// memberSeq is the events of one member in order, with the roles each one
// should leave the member with.
type memberSeq struct {
	inflight bool
	want     [][]string
}

// outageState is the drill's bookkeeping, shared by the load generator, the
// acknowledgements and the applier hook.
type outageState struct {
	mu       sync.Mutex
	rng      *rand.Rand
	sender   *twitchtest.Sender
	dc       *discordtest.Server
	members  []memberSeq // index n-1 for viewer n
	cursor   int
	events   map[string][2]int // message id -> viewer n, index in want
	applied  map[int]int       // viewer n -> index of the newest applied event
	problems []string
	handled  int
}

var tierRoles = map[string]string{"1000": worldRoleTier1, "2000": worldRoleTier2, "3000": worldRoleTier3}

// next builds the next event for the next member with nothing in flight.
// When every member waits for an answer (the webhook stalls), it waits: the
// event's latency still counts from when it was due.
func (s *outageState) next() (twitchtest.Message, bool, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for free := false; !free; {
		for range len(s.members) {
			s.cursor = (s.cursor + 1) % len(s.members)
			if !s.members[s.cursor].inflight {
				free = true
				break
			}
		}
		if !free {
			s.mu.Unlock()
			time.Sleep(time.Millisecond)
			s.mu.Lock()
		}
	}
	n := s.cursor + 1
	ms := &s.members[s.cursor]
	id, login := twitchID(n), "viewer"+strconv.Itoa(n)
	tier := []string{"1000", "2000", "3000"}[s.rng.IntN(3)]
	var m twitchtest.Message
	var want []string
	switch k := s.rng.IntN(10); {
	case k < 5:
		m, want = s.sender.Subscribe(id, login, tier, k == 0), []string{worldRoleLinked, tierRoles[tier], worldRoleSub}
	case k < 8:
		m, want = s.sender.Resub(id, login, tier, 2, 2, 1), []string{worldRoleLinked, tierRoles[tier], worldRoleSub}
	default:
		m, want = s.sender.End(id, login, tier, false), []string{worldRoleLinked}
	}
	slices.Sort(want)
	ms.inflight = true
	ms.want = append(ms.want, want)
	s.events[m.ID] = [2]int{n, len(ms.want) - 1}
	return m, false, true
}

// acked releases the member for its next event.
func (s *outageState) acked(m twitchtest.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev, ok := s.events[m.ID]; ok {
		s.members[ev[0]-1].inflight = false
	}
}

// observe is the applier hook: the newest event applied for a member must
// be newer than the one applied before, and the member must now hold
// exactly that event's roles.
func (s *outageState) observe(a discord.Applied) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handled++
	if a.EventID == "" {
		return
	}
	ev, ok := s.events[a.EventID]
	if !ok {
		s.problems = append(s.problems, fmt.Sprintf("member %s: applied unknown event %s", a.DiscordUserID, a.EventID))
		return
	}
	n, k := ev[0], ev[1]
	if prev, ok := s.applied[n]; ok && k <= prev {
		s.problems = append(s.problems, fmt.Sprintf("member %s: event #%d applied after event #%d", a.DiscordUserID, k, prev))
	}
	s.applied[n] = k
	if a.Err != nil {
		s.problems = append(s.problems, fmt.Sprintf("member %s: role change failed for good: %v", a.DiscordUserID, a.Err))
		return
	}
	got, _ := s.dc.MemberRoles(a.DiscordUserID)
	slices.Sort(got)
	if want := s.members[n-1].want[k]; !slices.Equal(got, want) {
		s.problems = append(s.problems, fmt.Sprintf("member %s: after event #%d holds %v, want %v", a.DiscordUserID, k, got, want))
	}
}

// run executes the drill. An error means it could not be carried out;
// order violations and duplicates are listed in the report's Problems.
func (d *outageDrill) run(ctx context.Context) (*outageReport, error) {
	seed := d.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	ledger := newRoleLedger()
	st := &outageState{rng: rand.New(rand.NewPCG(seed, 11)), members: make([]memberSeq, d.Members),
		events: map[string][2]int{}, applied: map[int]int{}}
	r, err := startRig(ctx, rigSpec{Dir: d.Dir, Members: d.Members, Applied: st.observe, Log: d.Log,
		Discord: discordtest.Options{OnCall: ledger.observe, RetryAfter: 500 * time.Millisecond}})
	if err != nil {
		return nil, err
	}
	defer r.stop()
	st.sender, st.dc = r.w.twitch, r.w.discord
	rep := &outageReport{}

	// The phases, on a timer beside the load.
	start := time.Now()
	rep.OutageStart = start.Add(d.Before)
	rep.Healed = rep.OutageStart.Add(d.Outage)
	phaseCtx, stopPhases := context.WithCancel(ctx)
	defer stopPhases()
	var wg sync.WaitGroup
	wg.Go(func() {
		modes := []discordtest.Outage{discordtest.Outage500, discordtest.Outage429, discordtest.OutageDrop}
		first := int(seed % 3) // which mode comes first varies with the seed
		at := func(t time.Time) bool {
			select {
			case <-time.After(time.Until(t)):
				return true
			case <-phaseCtx.Done():
				return false
			}
		}
		// Nine segments, the modes in turn, so that each one meets some of
		// the applier's retries however far its backoff has grown.
		for i := range 9 {
			if !at(rep.OutageStart.Add(time.Duration(i) * d.Outage / 9)) {
				return
			}
			r.w.discord.SetOutage(modes[(first+i)%3])
		}
		if at(rep.Healed) {
			r.w.discord.Heal()
		}
	})
	sampled := make(chan struct{})
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go func() { // sample the backlog until the drill has drained it
		defer close(sampled)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sampleCtx.Done():
				return
			case now := <-tick.C:
				out, err := r.outboxLen()
				if err != nil {
					continue
				}
				rep.PeakBacklog = max(rep.PeakBacklog, out)
				if now.After(rep.Healed) && rep.BacklogClearedInAfter == 0 && out < max(rep.PeakBacklog/100, 50) {
					rep.BacklogClearedInAfter = now.Sub(rep.Healed)
				}
			}
		}
	}()

	client := newLoadClient(d.Conns)
	rep.Load = runLoad(ctx, client, r.url, loadSpec{Conns: d.Conns, Rate: d.Rate, Duration: d.Before + d.Outage + d.After},
		st.next, func(m twitchtest.Message, s sample, err error) {
			// Twitch redelivers what was not acknowledged; so do we, so
			// that each member's sequence stays definite.
			for try := 0; try < 20 && (err != nil || s.Status/100 != 2); try++ {
				time.Sleep(50 * time.Millisecond)
				s.Status, err = deliver(ctx, client, r.url, m)
			}
			if err == nil && s.Status/100 == 2 {
				st.acked(m)
			}
		})
	stopPhases()
	wg.Wait()
	r.w.discord.Heal()
	drain, err := r.waitDrained(ctx, 5*time.Minute)
	if err != nil {
		return rep, err
	}
	rep.Drain = drain
	stopSampling()
	<-sampled
	if rep.BacklogClearedInAfter == 0 {
		rep.BacklogClearedInAfter = time.Since(rep.Healed)
	}

	st.mu.Lock()
	defer st.mu.Unlock()
	rep.Applications = st.handled
	rep.Problems = append(rep.Problems, st.problems...)
	for i, ms := range st.members {
		rep.Sent += len(ms.want)
		if len(ms.want) == 0 {
			continue
		}
		got, _ := r.w.discord.MemberRoles(discordID(i + 1))
		slices.Sort(got)
		if want := ms.want[len(ms.want)-1]; !slices.Equal(got, want) {
			rep.Problems = append(rep.Problems, fmt.Sprintf("member %s: final roles %v, want %v", discordID(i+1), got, want))
		}
		if ms.inflight {
			rep.Problems = append(rep.Problems, fmt.Sprintf("member %s: last event never acknowledged", discordID(i+1)))
		}
	}
	ledger.mu.Lock()
	rep.Problems = append(rep.Problems, ledger.redundant...)
	rep.FailedCalls = ledger.failed
	rep.FailedByStatus = maps.Clone(ledger.failedByStatus)
	ledger.mu.Unlock()
	if len(rep.Problems) > 20 {
		rep.Problems = append(rep.Problems[:20], fmt.Sprintf("… and %d more", len(rep.Problems)-20))
	}
	return rep, nil
}

// metrics returns the report's numbers.
func (rep *outageReport) metrics() metrics {
	var m metrics
	m.add("events acknowledged", float64(rep.Load.Acked), "")
	n := 0
	for _, c := range rep.Load.Errors {
		n += c
	}
	m.add("webhook errors (redelivered)", float64(n), "")
	m.addPercentiles("ack before the outage", rep.Load.ackLatencies(time.Time{}, rep.OutageStart))
	m.addPercentiles("ack during the outage", rep.Load.ackLatencies(rep.OutageStart, rep.Healed))
	m.addPercentiles("ack after it heals", rep.Load.ackLatencies(rep.Healed, time.Time{}))
	m.add("Discord calls failed", float64(rep.FailedCalls), "")
	m.add("  answered 500", float64(rep.FailedByStatus[500]), "")
	m.add("  answered 429", float64(rep.FailedByStatus[429]), "")
	m.add("  connection dropped", float64(rep.FailedByStatus[0]), "")
	m.add("peak outbox backlog", float64(rep.PeakBacklog), "jobs")
	m.addMs("heal -> backlog cleared", rep.BacklogClearedInAfter)
	m.addMs("last ack -> outbox empty", rep.Drain)
	m.add("member applications", float64(rep.Applications), "")
	m.add("out-of-order, duplicated or wrong", float64(len(rep.Problems)), "")
	return m
}

// benchOutageCmd is "subrole bench outage".
func benchOutageCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, repeat, dirFlag := benchFlags("outage", stderr)
	rate := fs.Float64("rate", 1000, "events per second")
	members := fs.Int("members", 2000, "linked members the events cycle through")
	before := fs.Duration("before", 10*time.Second, "load before the outage")
	outage := fs.Duration("outage", 2*time.Minute, "outage length (ninths, in turn: 500s, 429s, dropped connections)")
	after := fs.Duration("after", 20*time.Second, "load after it heals")
	conns := fs.Int("conns", 64, "connections")
	seed := fs.Uint64("seed", 0, "random seed (0: random)")
	*repeat = 1
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, cleanup, err := workDir(*dirFlag)
	if err != nil {
		return err
	}
	defer cleanup()
	cmd := "subrole bench outage " + strings.Join(args, " ")
	return repeatRuns(ctx, stdout, fmt.Sprintf("outage drill: Discord down for %s during %.0f events/s", *outage, *rate), cmd, *repeat,
		func(ctx context.Context, run int) (metrics, error) {
			sub, err := subDir(dir, run)
			if err != nil {
				return nil, err
			}
			d := &outageDrill{Members: *members, Rate: *rate, Before: *before, Outage: *outage, After: *after,
				Conns: *conns, Dir: sub, Seed: *seed, Log: stderr}
			rep, err := d.run(ctx)
			if err != nil {
				return nil, err
			}
			m := rep.metrics()
			printSeries(stdout, &rep.Load, rep.OutageStart, rep.Healed, 10*time.Second)
			if len(rep.Problems) > 0 {
				return m, errors.New("bench outage: FAILED:\n  " + strings.Join(rep.Problems, "\n  "))
			}
			fmt.Fprintln(stdout, "  every role change applied in order per member, none twice; final roles right")
			return m, nil
		})
}

// printSeries prints the ack latency of res in windows of width, marking
// the windows of the outage [from, to).
func printSeries(out io.Writer, res *loadResult, from, to time.Time, width time.Duration) {
	if len(res.Samples) == 0 {
		return
	}
	start := res.Samples[0].At
	for _, s := range res.Samples {
		if s.At.Before(start) {
			start = s.At
		}
	}
	buckets := map[int]latencies{}
	last := 0
	for _, s := range res.Samples {
		if s.Status/100 == 2 {
			k := int(s.At.Sub(start) / width)
			buckets[k] = append(buckets[k], s.Latency)
			last = max(last, k)
		}
	}
	fmt.Fprintf(out, "  ack latency by %s window of due time (* = Discord down for most of it):\n", width)
	for k := 0; k <= last; k++ {
		at := start.Add(time.Duration(k) * width)
		mark := " "
		if mid := at.Add(width / 2); !mid.Before(from) && mid.Before(to) {
			mark = "*"
		}
		l := buckets[k].sorted()
		fmt.Fprintf(out, "   %s %4.0fs  n=%-6d p50 %-9s p99 %-9s max %s\n", mark, at.Sub(start).Seconds(), len(l),
			ms(l.pct(50)), ms(l.pct(99)), ms(l.pct(100)))
	}
}
