package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord/discordtest"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// The end-to-end scenarios: the real wiring (serve with hooks) against the
// world's fakes, driven by the load generator.

// benchE2ECmd is "subrole bench e2e": event received -> role call latency
// with an unthrottled fake Discord. Every event is a new subscription of a
// different linked member, so every event causes exactly one role change.
func benchE2ECmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, repeat, dirFlag := benchFlags("e2e", stderr)
	rate := fs.Float64("rate", 200, "events per second (open loop); 0 sends one at a time per connection")
	duration := fs.Duration("duration", 10*time.Second, "how long to send")
	conns := fs.Int("conns", 16, "connections")
	latency := fs.Duration("discord-latency", 0, "latency the fake Discord adds to every REST call")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, cleanup, err := workDir(*dirFlag)
	if err != nil {
		return err
	}
	defer cleanup()
	n := int(*rate * duration.Seconds())
	if *rate <= 0 {
		n = 5000 // closed loop: an upper bound; -duration ends it
	}
	cmd := "subrole bench e2e " + strings.Join(args, " ")
	return repeatRuns(ctx, stdout, "e2e: event received -> Discord role call, unthrottled fake Discord", cmd, *repeat,
		func(ctx context.Context, run int) (metrics, error) {
			sub, err := subDir(dir, run)
			if err != nil {
				return nil, err
			}
			calls, applied := newCallStats(), newAppliedStats()
			r, err := startRig(ctx, rigSpec{Dir: sub, Members: n + 1000, Applied: applied.observe, Log: stderr,
				Discord: discordtest.Options{Latency: *latency, OnCall: calls.observe}})
			if err != nil {
				return nil, err
			}
			defer r.stop()
			var (
				mu     sync.Mutex
				sentAt = map[string]time.Time{}
				next   atomic.Int64
			)
			res := runLoad(ctx, newLoadClient(*conns), r.url, loadSpec{Conns: *conns, Rate: *rate, Duration: *duration, Count: n},
				func() (twitchtest.Message, bool, bool) {
					i := int(next.Add(1))
					if i > n {
						return twitchtest.Message{}, false, false
					}
					m := r.w.twitch.Subscribe(twitchID(i), "viewer"+strconv.Itoa(i), "1000", false)
					mu.Lock()
					sentAt[discordID(i)] = time.Now()
					mu.Unlock()
					return m, false, true
				}, nil)
			drain, err := r.waitDrained(ctx, time.Minute)
			if err != nil {
				return nil, err
			}
			var m metrics
			res.addTo(&m, "")
			applied.mu.Lock()
			m.addPercentiles("event received -> role call issued", applied.toCall)
			m.add("members applied", float64(applied.changed), "")
			applied.mu.Unlock()
			var outside latencies
			calls.mu.Lock()
			mu.Lock()
			for member, at := range calls.firstWrite {
				if s, ok := sentAt[member]; ok {
					outside = append(outside, at.Sub(s))
				}
			}
			mu.Unlock()
			calls.mu.Unlock()
			m.addPercentiles("request sent -> role call at Discord", outside)
			m.addMs("outbox empty after the last ack", drain)
			if applied.changed != res.Acked {
				return m, fmt.Errorf("bench e2e: %d events acknowledged but %d members changed", res.Acked, applied.changed)
			}
			return m, nil
		})
}

// subDir returns a fresh directory for one run.
func subDir(dir string, run int) (string, error) {
	d := fmt.Sprintf("%s/run%d-%d", dir, run, time.Now().UnixNano())
	return d, mkdir(d)
}

// benchSteadyCmd is "subrole bench steady": a steady stream of mixed events
// for linked members through the real wiring.
func benchSteadyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, repeat, dirFlag := benchFlags("steady", stderr)
	rate := fs.Float64("rate", 1000, "events per second (open loop)")
	duration := fs.Duration("duration", 60*time.Second, "how long to send")
	conns := fs.Int("conns", 64, "connections")
	members := fs.Int("members", 10000, "linked members the events are for (picked at random)")
	mix := fs.String("mix", "subscribe=60,resub=25,end=10,gift=5", "event types and weights")
	gifts := fs.Float64("gifts", 0.3, "fraction of channel.subscribe events that are gifts")
	dups := fs.Float64("dups", 0.01, "fraction of deliveries that repeat an earlier message id")
	if err := fs.Parse(args); err != nil {
		return err
	}
	evMix, err := parseMix(*mix)
	if err != nil {
		return err
	}
	dir, cleanup, err := workDir(*dirFlag)
	if err != nil {
		return err
	}
	defer cleanup()
	cmd := "subrole bench steady " + strings.Join(args, " ")
	return repeatRuns(ctx, stdout, fmt.Sprintf("steady: %.0f events/s for %s, real wiring", *rate, *duration), cmd, *repeat,
		func(ctx context.Context, run int) (metrics, error) {
			sub, err := subDir(dir, run)
			if err != nil {
				return nil, err
			}
			calls, applied := newCallStats(), newAppliedStats()
			r, err := startRig(ctx, rigSpec{Dir: sub, Members: *members, Applied: applied.observe, Log: stderr,
				Discord: discordtest.Options{OnCall: calls.observe}})
			if err != nil {
				return nil, err
			}
			defer r.stop()
			gen := newLoadGen(r.w.twitch, genSpec{Users: *members, Mix: evMix, GiftRatio: *gifts, DupRatio: *dups})
			res := runLoad(ctx, newLoadClient(*conns), r.url, loadSpec{Conns: *conns, Rate: *rate, Duration: *duration},
				func() (twitchtest.Message, bool, bool) { m, dup := gen.message(); return m, dup, true }, nil)
			drain, err := r.waitDrained(ctx, 5*time.Minute)
			if err != nil {
				return nil, err
			}
			var m metrics
			res.addTo(&m, "")
			m.add("repeated message ids sent", float64(res.Dups), "")
			applied.mu.Lock()
			m.addPercentiles("event received -> role call issued", applied.toCall)
			m.add("members applied (with a change)", float64(applied.changed), "")
			m.add("role jobs folded in", float64(applied.jobs), "")
			applied.mu.Unlock()
			calls.mu.Lock()
			m.add("Discord role writes", float64(calls.roleWrites), "")
			calls.mu.Unlock()
			m.addMs("outbox empty after the last ack", drain)
			return m, nil
		})
}

// parseLimit parses "50/1s" into a rate limit; "0" is unthrottled.
func parseLimit(s string) (discordtest.RateLimit, error) {
	if s == "0" || s == "" {
		return discordtest.RateLimit{}, nil
	}
	n, w, ok := strings.Cut(s, "/")
	req, err1 := strconv.Atoi(n)
	win, err2 := time.ParseDuration(w)
	if !ok || err1 != nil || err2 != nil || req <= 0 || win <= 0 {
		return discordtest.RateLimit{}, fmt.Errorf("bench: -limit %q is not requests/window like 50/1s", s)
	}
	return discordtest.RateLimit{Requests: req, Window: win}, nil
}

// benchGiftBombCmd is "subrole bench giftbomb".
func benchGiftBombCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, repeat, dirFlag := benchFlags("giftbomb", stderr)
	n := fs.Int("n", 10000, "gifted channel.subscribe events")
	duration := fs.Duration("duration", 10*time.Second, "sent evenly over this long")
	members := fs.Int("members", 2000, "linked members receiving the gifts (fewer members than events: members repeat)")
	limit := fs.String("limit", "50/1s", "the fake Discord's rate limit per bucket, requests/window (0: unthrottled)")
	latency := fs.Duration("discord-latency", 0, "latency the fake Discord adds to every REST call")
	conns := fs.Int("conns", 64, "connections")
	stall := fs.Duration("stall", time.Minute, "give up waiting for every role when no member's roles became right for this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rl, err := parseLimit(*limit)
	if err != nil {
		return err
	}
	dir, cleanup, err := workDir(*dirFlag)
	if err != nil {
		return err
	}
	defer cleanup()
	cmd := "subrole bench giftbomb " + strings.Join(args, " ")
	title := fmt.Sprintf("giftbomb: %d gifted subs in %s for %d members, Discord limited to %s per bucket, %s latency", *n, *duration, *members, *limit, *latency)
	return repeatRuns(ctx, stdout, title, cmd, *repeat, func(ctx context.Context, run int) (metrics, error) {
		sub, err := subDir(dir, run)
		if err != nil {
			return nil, err
		}
		calls, applied := newCallStats(), newAppliedStats()
		r, err := startRig(ctx, rigSpec{Dir: sub, Members: *members, Applied: applied.observe, Log: stderr,
			Discord: discordtest.Options{RateLimit: rl, Latency: *latency, OnCall: calls.observe}})
		if err != nil {
			return nil, err
		}
		defer r.stop()
		rng := rand.New(rand.NewPCG(uint64(run)+1, 42))
		tiers := []string{"1000", "2000", "3000"}
		last := map[int]string{} // member -> tier of the newest gift (the one that must win)
		var sent int
		start := time.Now()
		res := runLoad(ctx, newLoadClient(*conns), r.url,
			loadSpec{Conns: *conns, Rate: float64(*n) / duration.Seconds(), Count: *n},
			func() (twitchtest.Message, bool, bool) {
				// Called from the scheduler goroutine only, in due order.
				i := 1 + rng.IntN(*members)
				tier := tiers[rng.IntN(3)]
				last[i] = tier
				sent++
				return r.w.twitch.Subscribe(twitchID(i), "viewer"+strconv.Itoa(i), tier, true), false, true
			}, nil)
		if res.Acked != *n {
			return nil, fmt.Errorf("bench giftbomb: %d of %d acknowledged; errors: %s", res.Acked, *n, res.errorSummary())
		}
		wrong, err := waitRoles(ctx, r.w.discord, last, *stall)
		allApplied := time.Since(start)
		if err != nil {
			return nil, fmt.Errorf("bench giftbomb: %w (%d members wrong)", err, wrong)
		}
		drain, err := r.waitDrained(ctx, time.Minute)
		if err != nil {
			return nil, err
		}
		var m metrics
		res.addTo(&m, "")
		m.addMs("first event -> every role right", allApplied)
		m.addMs("outbox empty after that", drain)
		calls.mu.Lock()
		total, limited, writes, gets := calls.total, calls.byStatus[http.StatusTooManyRequests], calls.roleWrites, calls.gets
		calls.mu.Unlock()
		m.add("Discord calls", float64(total), "")
		m.add("  of which member reads", float64(gets), "")
		m.add("  of which role writes (2xx)", float64(writes), "")
		m.add("  of which answered 429", float64(limited), "")
		m.add("429 share", 100*float64(limited)/float64(max(total, 1)), "%")
		applied.mu.Lock()
		m.add("member applications", float64(applied.handled), "")
		m.add("role jobs folded into them", float64(applied.jobs), "")
		m.add("events per role write", float64(*n)/float64(max(writes, 1)), "")
		m.add("role writes per second (first event -> all right)", float64(writes)/allApplied.Seconds(), "1/s")
		applied.mu.Unlock()
		return m, nil
	})
}

// waitRoles waits until every member in want holds the linked role, the
// subscriber role and exactly the tier role of want's tier, and returns how
// many do not when it gives up: when stall passes without one more member
// becoming right. Slow progress is not failure; no progress is.
func waitRoles(ctx context.Context, dc *discordtest.Server, want map[int]string, stall time.Duration) (int, error) {
	tierRole := map[string]string{"1000": worldRoleTier1, "2000": worldRoleTier2, "3000": worldRoleTier3}
	best, deadline := len(want)+1, time.Now().Add(stall)
	for {
		wrong := 0
		for i, tier := range want {
			got, _ := dc.MemberRoles(discordID(i))
			exp := []string{worldRoleLinked, tierRole[tier], worldRoleSub}
			slices.Sort(got)
			slices.Sort(exp)
			if !slices.Equal(got, exp) {
				wrong++
			}
		}
		if wrong == 0 {
			return 0, nil
		}
		if wrong < best {
			best, deadline = wrong, time.Now().Add(stall)
		}
		if time.Now().After(deadline) {
			return wrong, fmt.Errorf("no progress for %s", stall)
		}
		select {
		case <-ctx.Done():
			return wrong, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// benchMixedCmd is "subrole bench mixed": webhook acks alone, then while
// full reconcile passes (Service.Reconcile over every stored member, with
// Helix and Discord in memory, so that only subrole's own work is measured)
// run back to back, and HTTP probes hit the service. With -dashboards and
// -pages, signed-in live dashboards follow the audit log and the dashboard
// page is loaded during the loaded phase too: webhook ack under concurrent
// reconcile and dashboard load.
func benchMixedCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, repeat, dirFlag := benchFlags("mixed", stderr)
	rate := fs.Float64("rate", 1000, "events per second (open loop)")
	duration := fs.Duration("duration", 20*time.Second, "length of each phase (quiet, then loaded)")
	conns := fs.Int("conns", 64, "connections")
	members := fs.Int("members", 100000, "linked members with subscriptions (each reconcile pass covers all of them)")
	probes := fs.Float64("probes", 100, "HTTP probes per second during the loaded phase")
	dashboards := fs.Int("dashboards", 0, "live dashboard feeds (signed-in SSE clients) during the loaded phase; the service allows 64")
	pages := fs.Float64("pages", 0, "dashboard page loads per second during the loaded phase")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, cleanup, err := workDir(*dirFlag)
	if err != nil {
		return err
	}
	defer cleanup()
	cmd := "subrole bench mixed " + strings.Join(args, " ")
	return repeatRuns(ctx, stdout, "mixed: webhook acks alone, then beside back-to-back full reconcile passes and probes", cmd, *repeat,
		func(ctx context.Context, run int) (metrics, error) {
			sub, err := subDir(dir, run)
			if err != nil {
				return nil, err
			}
			// Seed the subscriptions too, so that a reconcile has real work.
			w := newWorldWith(sub+"/subrole.db", discordtest.Options{})
			seedErr := seedMembers(w.env["SUBROLE_DATA"], w.discord, 1, *members, 0, true)
			w.close()
			if seedErr != nil {
				return nil, seedErr
			}
			active := min(*members, 10000)
			r, err := startRig(ctx, rigSpec{Dir: sub, Members: active, Log: stderr})
			if err != nil {
				return nil, err
			}
			defer r.stop()
			gen := newLoadGen(r.w.twitch, genSpec{Users: active, Mix: eventMix{Subscribe: 80, Resub: 15, End: 5}})
			next := func() (twitchtest.Message, bool, bool) { m, dup := gen.message(); return m, dup, true }
			client := newLoadClient(*conns)
			spec := loadSpec{Conns: *conns, Rate: *rate, Duration: *duration}
			quiet := runLoad(ctx, client, r.url, spec, next, nil)

			bg, stopBG := context.WithCancel(ctx)
			var passes, probesDone atomic.Int64
			var dash *dashboardLoad
			var wg sync.WaitGroup
			if *dashboards > 0 || *pages > 0 {
				base := strings.TrimSuffix(r.url, "/twitch_eventsub")
				if dash, err = startDashboardLoad(bg, &wg, r.db, base, *dashboards, *pages); err != nil {
					stopBG()
					return nil, err
				}
			}
			var passTimes latencies
			var reconcileErr error
			wg.Go(func() {
				for pass := 0; bg.Err() == nil; pass++ {
					helix, roles := reconcileFakes(*members, pass == 0)
					t := time.Now()
					_, err := r.svc.Reconcile(bg, helix, roles)
					if bg.Err() != nil {
						return
					}
					if errors.Is(err, subrole.ErrReconcileRunning) { // the service's own schedule got there first
						time.Sleep(10 * time.Millisecond)
						continue
					}
					if err != nil {
						reconcileErr = err
						return
					}
					passTimes = append(passTimes, time.Since(t))
					passes.Add(1)
				}
			})
			wg.Go(func() {
				tick := time.NewTicker(time.Duration(float64(time.Second) / *probes))
				defer tick.Stop()
				base := strings.TrimSuffix(r.url, "/twitch_eventsub")
				for {
					select {
					case <-bg.Done():
						return
					case <-tick.C:
						for _, p := range []string{"/readyz", "/healthz"} {
							if resp, err := http.Get(base + p); err == nil {
								io.Copy(io.Discard, resp.Body)
								resp.Body.Close()
								probesDone.Add(1)
							}
						}
					}
				}
			})
			loaded := runLoad(ctx, client, r.url, spec, next, nil)
			stopBG()
			wg.Wait()
			if reconcileErr != nil {
				return nil, reconcileErr
			}
			var m metrics
			quiet.addTo(&m, "quiet: ")
			loaded.addTo(&m, "loaded: ")
			q, l := quiet.ackLatencies(time.Time{}, time.Time{}).sorted(), loaded.ackLatencies(time.Time{}, time.Time{}).sorted()
			m.add("loaded/quiet p99", float64(l.pct(99))/float64(max(q.pct(99), 1)), "x")
			m.add("reconcile passes finished during the loaded phase", float64(passes.Load()), "")
			m.addMs("reconcile pass time p50", passTimes.sorted().pct(50))
			m.add("probes answered", float64(probesDone.Load()), "")
			dash.addTo(&m)
			return m, nil
		})
}
