package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord/discordtest"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// benchReconcileCmd is "subrole bench reconcile": a reconcile pass over a
// channel of -members subscribers (fake Helix) against as many stored,
// linked members, with -drift of them out of step: missed ends, missed
// subscriptions, tier changes and roles removed by hand in equal parts. The
// service runs as its own process (its peak RSS is measured alone); the
// pass is started through the admin socket, like "subrole reconcile".
func benchReconcileCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, repeat, dirFlag := benchFlags("reconcile", stderr)
	members := fs.Int("members", 100000, "subscribers in Helix and linked members in the database")
	drift := fs.Float64("drift", 0.01, "fraction of the members out of step (split in four kinds)")
	limit := fs.Int("helix-limit", 800, "Helix points per minute the fake Twitch allows (Twitch: 800)")
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
	spec := reconcileBench{Dir: dir, Members: *members, Drift: *drift, HelixLimit: *limit, Spawn: spawn}
	return repeatRuns(ctx, stdout, fmt.Sprintf("reconcile: %d subscribers, %d linked members, %.1f%% drift", *members, *members, *drift*100),
		"subrole bench reconcile "+strings.Join(args, " "), *repeat, spec.run)
}

// reconcileBench is one configuration of the reconcile benchmark.
type reconcileBench struct {
	Dir        string
	Members    int
	Drift      float64
	HelixLimit int           // points per window; zero means 800
	HelixSpan  time.Duration // the window; zero means a minute
	Spawn      spawner
}

// The kinds of drift, by member number modulo driftKinds (for drifted members).
const (
	driftMissedEnd = iota
	driftMissedSubscribe
	driftTierChange
	driftHandEdit
	driftKinds
)

// run builds the world and database, starts the service, runs one pass and
// measures it.
func (b reconcileBench) run(ctx context.Context, run int) (metrics, error) {
	var m metrics
	n := b.Members
	drifted := int(float64(n) * b.Drift)
	// Drifted members are spread evenly: every step-th.
	step := max(n/max(drifted, 1), 1)
	kind := func(i int) int { // -1: in step
		if drifted == 0 || i%step != 0 || i/step > drifted {
			return -1
		}
		return (i / step) % driftKinds
	}
	w := newWorldWith(filepath.Join(b.Dir, fmt.Sprintf("reconcile-%d.db", run)), discordtest.Options{})
	defer w.close()
	w.replaceTwitch(twitchtest.Options{RateLimit: b.HelixLimit, RateWindow: b.HelixSpan})
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	w.env["SUBROLE_LISTEN"] = addr
	w.env["SUBROLE_LOG_LEVEL"] = "warn"
	w.env["SUBROLE_ADMIN_SOCKET"] = filepath.Join(b.Dir, fmt.Sprintf("reconcile-%d.sock", run))
	w.serving(addr)

	// The world: every member linked and subscribed at tier 1-3 (events
	// two hours ago), Discord agreeing, Helix agreeing; then the drift.
	t0 := time.Now()
	tierOf := func(i int) subrole.Tier { return subrole.Tier(1 + i%3) }
	tierName := func(t subrole.Tier) string { return strconv.Itoa(int(t) * 1000) }
	roleOf := map[subrole.Tier]string{subrole.Tier1: worldRoleTier1, subrole.Tier2: worldRoleTier2, subrole.Tier3: worldRoleTier3}
	expected := 0
	db, err := store.Open(w.env["SUBROLE_DATA"], store.Options{NoSync: true})
	if err != nil {
		return nil, err
	}
	long := time.Now().Add(-2 * time.Hour)
	for lo := 1; lo <= n; lo += 20000 {
		hi := min(lo+20000, n+1)
		err := db.Update(ctx, func(tx subrole.Tx) error {
			for i := lo; i < hi; i++ {
				if err := tx.PutLink(subrole.Link{DiscordUserID: discordID(i), TwitchUserID: twitchID(i), TwitchLogin: "viewer" + strconv.Itoa(i), Linked: long}); err != nil {
					return err
				}
				s := subrole.Subscription{TwitchUserID: twitchID(i), TwitchLogin: "viewer" + strconv.Itoa(i), Tier: tierOf(i),
					Started: long, LastEvent: long, LastEventType: string(subrole.EventSubscribe), Source: subrole.SourceEventSub}
				if kind(i) == driftMissedSubscribe {
					s.Ended = long
				}
				if err := tx.PutSubscription(s); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("bench reconcile: seed: %w", err)
		}
	}
	tok := w.twitchAPI.IssueToken(w.twitchAPI.BroadcasterID(), twitchtest.ScopeChannelSubscriptions)
	err = db.Update(ctx, func(tx subrole.Tx) error {
		if err := tx.PutBroadcasterToken(subrole.BroadcasterToken{UserID: w.twitchAPI.BroadcasterID(), Login: twitchtest.DefaultBroadcasterLogin,
			AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expires: tok.Expires, Scopes: tok.Scopes, Connected: long}); err != nil {
			return err
		}
		// A pass just ran: none runs at start; the benchmark starts its own.
		last, _ := json.Marshal(subrole.ReconcileReport{Started: time.Now(), Finished: time.Now(), Strategy: "all", Subscribers: n})
		return tx.PutMeta("reconcile_last", last)
	})
	if err == nil {
		err = db.Bolt().Sync()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("bench reconcile: seed: %w", err)
	}
	for i := 1; i <= n; i++ {
		t := tierOf(i)
		roles := []string{worldRoleLinked, roleOf[t], worldRoleSub}
		switch kind(i) {
		case driftMissedEnd:
			expected++ // stored and Discord: subscribed; Helix: not any more
		case driftMissedSubscribe:
			roles = []string{worldRoleLinked} // stored and Discord: ended; Helix: subscribed
			expected++
		case driftTierChange:
			t = subrole.Tier(1 + (int(t))%3) // Helix: another tier
			expected++
		case driftHandEdit:
			roles = []string{worldRoleLinked, worldRoleSub} // a moderator removed the tier role
			expected++
		}
		w.discord.AddMember(discordID(i), "viewer"+strconv.Itoa(i), roles...)
		if kind(i) != driftMissedEnd {
			w.twitchAPI.Subscribe(twitchID(i), tierName(t), false, "")
		}
	}
	m.addMs("build the world (not part of the pass)", time.Since(t0))

	c, _, err := startChild(ctx, b.Spawn, envList(w.env), addr, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	defer c.stop(30 * time.Second)
	if err := waitHTTP(ctx, "http://"+addr+"/readyz", c.exited, time.Minute); err != nil {
		return nil, fmt.Errorf("bench reconcile: never ready: %w\n%s", err, c.logs)
	}
	rssBefore := procMemory(c.cmd.Process.Pid)["VmRSS"]
	w.twitchAPI.ResetCalls()
	w.discord.ResetCalls()

	// One pass, started like "subrole reconcile".
	start := time.Now()
	rep, stages, err := triggerReconcile(ctx, w.getenv)
	if err != nil {
		return nil, fmt.Errorf("bench reconcile: %w\n%s", err, c.logs)
	}
	passTook := time.Since(start)
	// The role writes the pass queued, until the outbox is empty.
	written := map[string]bool{}
	deadline := time.Now().Add(5 * time.Minute)
	var applied time.Duration
	for {
		for _, call := range w.discord.Calls() {
			if rc, ok := parseRoleCall(call); ok {
				written[rc.member] = true
			}
		}
		if len(written) >= expected {
			applied = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bench reconcile: only %d of %d drifted members' roles were written\n%s", len(written), expected, c.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // anything more would be a wasted write
	mem := procMemory(c.cmd.Process.Pid)

	var helixReq, helix429, points int
	for _, call := range w.twitchAPI.CallsTo(http.MethodGet, "/helix/subscriptions") {
		helixReq++
		switch call.Status {
		case http.StatusOK:
			points++ // GET /subscriptions costs one point
		case http.StatusTooManyRequests:
			helix429++
		}
	}
	var lists, gets, puts, dels int
	writtenAfter := map[string]bool{}
	for _, call := range w.discord.Calls() {
		switch {
		case call.Method == http.MethodGet && call.Route == "/guilds/{guild}/members":
			lists++
		case call.Method == http.MethodGet && call.Route == "/guilds/{guild}/members/{user}":
			gets++
		}
		if rc, ok := parseRoleCall(call); ok {
			writtenAfter[rc.member] = true
			if rc.add {
				puts++
			} else {
				dels++
			}
		}
	}
	if len(writtenAfter) != expected || rep.Drifts()+rep.RolesRepaired != expected {
		return nil, fmt.Errorf("bench reconcile: %d drifted members, the pass found %d and roles were written for %d", expected,
			rep.Drifts()+rep.RolesRepaired, len(writtenAfter))
	}

	m.addMs("reconcile pass (POST /reconcile -> report)", passTook)
	for i, st := range []subrole.ReconcileStage{subrole.StageHelix, subrole.StageApply, subrole.StageDiscord} {
		next := []subrole.ReconcileStage{subrole.StageApply, subrole.StageDiscord, subrole.StageDone}[i]
		if a, ok := stages[st]; ok {
			if b, ok := stages[next]; ok {
				m.addMs("  "+string(st), b.Sub(a))
			}
		}
	}
	m.addMs("pass start -> last role write", applied)
	m.add("Helix requests (GET /subscriptions, strategy "+rep.Strategy+")", float64(helixReq), "")
	m.add("Helix points used", float64(points), "")
	m.add("Helix 429 answers", float64(helix429), "")
	m.add("drifted members", float64(expected), "")
	m.add("  found: missed ends", float64(rep.MissedEnd), "")
	m.add("  found: missed subscriptions", float64(rep.MissedSubscribe), "")
	m.add("  found: tier changes", float64(rep.TierChange), "")
	m.add("  found: roles removed by hand", float64(rep.RolesRepaired), "")
	m.add("Discord member list pages (GET /members)", float64(lists), "")
	m.add("Discord member reads (applier)", float64(gets), "")
	m.add("Discord role writes (PUT + DELETE)", float64(puts+dels), "")
	m.add("members whose roles were written", float64(len(writtenAfter)), "")
	mb := func(b float64) float64 { return b / (1 << 20) }
	m.add("service RSS before the pass", mb(rssBefore), "MiB")
	m.add("service peak RSS (VmHWM)", mb(mem["VmHWM"]), "MiB")
	m.add("  RSS after: anonymous (heap, stacks)", mb(mem["RssAnon"]), "MiB")
	m.add("  RSS after: file-backed (bbolt map)", mb(mem["RssFile"]), "MiB")
	return m, nil
}

// triggerReconcile runs a pass through the admin socket and returns its
// report and when each stage was first reported.
func triggerReconcile(ctx context.Context, getenv func(string) string) (subrole.ReconcileReport, map[subrole.ReconcileStage]time.Time, error) {
	stages := map[subrole.ReconcileStage]time.Time{}
	c, err := dialService(ctx, getenv, "bench reconcile")
	if err != nil {
		return subrole.ReconcileReport{}, stages, err
	}
	resp, err := c.do(ctx, http.MethodPost, "/reconcile")
	if err != nil {
		return subrole.ReconcileReport{}, stages, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return subrole.ReconcileReport{}, stages, fmt.Errorf("POST /reconcile: %d %s", resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var l reconcileLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return subrole.ReconcileReport{}, stages, err
		}
		if _, ok := stages[l.Stage]; !ok && l.Stage != "" {
			stages[l.Stage] = time.Now()
		}
		if l.Error != "" {
			return subrole.ReconcileReport{}, stages, errors.New(l.Error)
		}
		if l.Done && l.Report != nil {
			stages[subrole.StageDone] = time.Now()
			return *l.Report, stages, nil
		}
	}
	return subrole.ReconcileReport{}, stages, fmt.Errorf("POST /reconcile: no report: %v", sc.Err())
}

// replaceTwitch swaps the world's fake Twitch for one configured by opts
// (rate limits), before the service starts.
func (w *world) replaceTwitch(opts twitchtest.Options) {
	w.twitchAPI.Close()
	opts.ClientID, opts.ClientSecret, opts.InsecureCallbacks = worldClientID, worldClientSecret, true
	w.twitchAPI = twitchtest.NewServer(opts)
	cb := w.twitch.Callback
	w.twitch = w.twitchAPI.Sender(cb, worldEventSubToken)
	w.env["SUBROLE_TWITCH_API_URL"], w.env["SUBROLE_TWITCH_AUTH_URL"] = w.twitchAPI.HelixURL(), w.twitchAPI.AuthURL()
}
