package subrole_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/store"
	bolt "go.etcd.io/bbolt"
)

// messenger is a fake subrole.Messenger that records what it sends.
type messenger struct {
	mu    sync.Mutex
	sent  []string        // "kind user", in order
	tries map[string]int  // "kind user" -> calls of SendOutreach
	gone  map[string]bool // users not in the guild
	// fail, if set, makes SendOutreach fail for the nth call (1-based) of a "kind user".
	fail func(key string, n int) error
}

func (m *messenger) SendOutreach(_ context.Context, user string, k subrole.OutreachKind) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := string(k) + " " + user
	if m.tries == nil {
		m.tries = map[string]int{}
	}
	m.tries[key]++
	if m.fail != nil {
		if err := m.fail(key, m.tries[key]); err != nil {
			return err
		}
	}
	m.sent = append(m.sent, key)
	return nil
}

func (m *messenger) InGuild(_ context.Context, user string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.gone[user], nil
}

func (m *messenger) snapshot() ([]string, map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tries := map[string]int{}
	for k, v := range m.tries {
		tries[k] = v
	}
	return slices.Clone(m.sent), tries
}

// outreachFixture is a Service with an outreach policy and RunOutreach
// running against a real store and a fake messenger.
type outreachFixture struct {
	t         *testing.T
	path      string
	db        *store.Store
	svc       *subrole.Service
	clock     *clock
	msg       *messenger
	policy    subrole.OutreachPolicy
	connected bool
	stop      func()
}

func newOutreachFixture(t *testing.T, p subrole.OutreachPolicy, start time.Time) *outreachFixture {
	f := &outreachFixture{t: t, path: filepath.Join(t.TempDir(), "subrole.db"), clock: &clock{t: start}, msg: &messenger{}, policy: p}
	f.start()
	t.Cleanup(func() { f.stop() })
	return f
}

// start opens the store and starts the service (again, after stop).
func (f *outreachFixture) start() {
	f.t.Helper()
	db, err := store.Open(f.path, store.Options{})
	if err != nil {
		f.t.Fatal(err)
	}
	f.db = db
	f.svc = subrole.NewService(subrole.Config{Store: db, Policy: policy, Now: f.clock.Now, Outreach: f.policy})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		f.svc.RunOutreach(ctx, subrole.OutreachRunner{Messenger: f.msg, Pace: time.Millisecond, RetryAfter: time.Minute,
			BroadcasterConnected: func(context.Context) bool { return f.connected }})
		close(done)
	}()
	f.stop = func() { cancel(); <-done; db.Close() }
}

func (f *outreachFixture) restart() {
	f.stop()
	f.start()
}

// restartWith restarts the service with another policy.
func (f *outreachFixture) restartWith(p subrole.OutreachPolicy) {
	f.stop()
	f.policy = p
	f.start()
}

// advance moves the clock and wakes RunOutreach.
func (f *outreachFixture) advance(d time.Duration) {
	f.clock.Add(d)
	f.svc.WakeOutreach()
}

func (f *outreachFixture) join(user string) subrole.JoinOutcome {
	f.t.Helper()
	out, err := f.svc.MemberJoined(context.Background(), subrole.MemberJoin{DiscordUserID: user, JoinedAt: f.clock.Now()})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// audit returns the outreach audit details.
func (f *outreachFixture) audit() []string {
	f.t.Helper()
	var out []string
	err := f.db.View(context.Background(), func(tx subrole.Tx) error {
		entries, err := tx.Audit(0, -1)
		for _, e := range entries {
			if e.Kind == subrole.AuditOutreach {
				out = append(out, e.DiscordUserID+": "+e.Detail)
			}
		}
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// waitAudit waits until an outreach audit entry contains each of parts.
func (f *outreachFixture) waitAudit(parts ...string) {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, a := range f.audit() {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(a, p)
			}
			if ok {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.t.Fatalf("no outreach audit entry with %q; have:\n%s", parts, strings.Join(f.audit(), "\n"))
}

// idle waits until no outreach job is due and returns what was sent. It
// wakes RunOutreach meanwhile: the pause after a 429 is real time, which a
// test on a pinned clock does not wait out.
func (f *outreachFixture) idle() []string {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		f.svc.WakeOutreach()
		var due int
		f.db.View(context.Background(), func(tx subrole.Tx) error {
			jobs, err := tx.DueOutreach(f.clock.Now(), -1)
			due = len(jobs)
			return err
		})
		if due == 0 {
			time.Sleep(20 * time.Millisecond) // a claimed job finishes sending
			sent, _ := f.msg.snapshot()
			return sent
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.t.Fatal("outreach jobs stay due")
	return nil
}

// wantSent compares what was sent, in any order.
func wantSent(t *testing.T, got []string, want ...string) {
	t.Helper()
	got, want = slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("sent %q, want %q", got, want)
	}
}

var outreachStart = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func TestOutreachJoinWelcomeOnce(t *testing.T) {
	f := newOutreachFixture(t, subrole.OutreachPolicy{Welcome: true}, outreachStart)
	if out := f.join("d1"); out != subrole.JoinQueued {
		t.Fatalf("join = %s", out)
	}
	f.waitAudit("d1", "welcome: sent")
	// The same join again, and after a restart: nothing more.
	if out := f.join("d1"); out != subrole.JoinDuplicate {
		t.Errorf("second join = %s", out)
	}
	f.restart()
	if out := f.join("d1"); out != subrole.JoinDuplicate {
		t.Errorf("join after restart = %s", out)
	}
	// Linked members and bots get nothing.
	if err := f.svc.Link(context.Background(), subrole.Link{DiscordUserID: "d2", TwitchUserID: "t2"}); err != nil {
		t.Fatal(err)
	}
	if out := f.join("d2"); out != subrole.JoinLinked {
		t.Errorf("linked join = %s", out)
	}
	if out, _ := f.svc.MemberJoined(context.Background(), subrole.MemberJoin{DiscordUserID: "b1", Bot: true}); out != subrole.JoinBot {
		t.Errorf("bot join = %s", out)
	}
	wantSent(t, f.idle(), "welcome d1")
	// A rejoin after the gap is welcomed again.
	f.advance(subrole.DefaultRejoinGap)
	if out := f.join("d1"); out != subrole.JoinQueued {
		t.Errorf("rejoin after the gap = %s", out)
	}
	f.waitAudit("d1", "welcome: sent")
	wantSent(t, f.idle(), "welcome d1", "welcome d1")
}

func TestOutreachFollowUp(t *testing.T) {
	f := newOutreachFixture(t, subrole.OutreachPolicy{Welcome: true, FollowUp: 168 * time.Hour}, outreachStart)
	for _, u := range []string{"stays", "links", "leaves"} {
		f.join(u)
	}
	wantSent(t, f.idle(), "welcome leaves", "welcome links", "welcome stays")
	if err := f.svc.Link(context.Background(), subrole.Link{DiscordUserID: "links", TwitchUserID: "t1"}); err != nil {
		t.Fatal(err)
	}
	f.msg.mu.Lock()
	f.msg.gone = map[string]bool{"leaves": true}
	f.msg.mu.Unlock()
	f.restart() // the follow-ups are durable
	f.advance(168*time.Hour - time.Minute)
	wantSent(t, f.idle(), "welcome leaves", "welcome links", "welcome stays")
	f.advance(time.Minute)
	f.waitAudit("stays", "followup: sent")
	f.waitAudit("links", "follow-up not sent: the member linked")
	f.waitAudit("leaves", "not sent: the member is no longer in the server")
	wantSent(t, f.idle(), "welcome leaves", "welcome links", "welcome stays", "followup stays")
}

func TestOutreachDMClosed(t *testing.T) {
	f := newOutreachFixture(t, subrole.OutreachPolicy{Welcome: true, FollowUp: time.Hour}, outreachStart)
	f.msg.fail = func(key string, _ int) error {
		if strings.HasSuffix(key, " closed") {
			return fmt.Errorf("discord: DM: %w", subrole.ErrDMClosed)
		}
		return nil
	}
	f.join("closed")
	f.waitAudit("closed", "welcome: not delivered: the member does not accept DMs")
	f.advance(2 * time.Hour)
	f.waitAudit("closed", "follow-up not sent: the member does not accept DMs")
	f.idle()
	if _, tries := f.msg.snapshot(); tries["welcome closed"] != 1 || tries["followup closed"] != 0 {
		t.Errorf("tries %v, want one welcome attempt and no follow-up", tries)
	}
}

func TestOutreachRetries(t *testing.T) {
	f := newOutreachFixture(t, subrole.OutreachPolicy{Welcome: true}, outreachStart)
	f.msg.fail = func(key string, n int) error {
		switch {
		case key == "welcome flaky" && n <= 2:
			return &subrole.RetryAfterError{After: 90 * time.Second, Err: errors.New("429 Too Many Requests")}
		case key == "welcome broken":
			return errors.New("500 Internal Server Error")
		}
		return nil
	}
	f.join("flaky")
	f.join("broken")
	f.waitAudit("flaky", "attempt 1 failed")
	f.advance(0) // flaky's 429 pauses for 90 s of real time
	f.waitAudit("broken", "attempt 1 failed")
	// Retries wait in the store: nothing is tried again before they are due.
	f.idle()
	if _, tries := f.msg.snapshot(); tries["welcome flaky"] != 1 || tries["welcome broken"] != 1 {
		t.Fatalf("tries %v before the retry is due", tries)
	}
	for range 6 {
		f.advance(time.Hour)
		f.idle()
	}
	f.waitAudit("broken", "given up after 5 attempts")
	sent, tries := f.msg.snapshot()
	wantSent(t, sent, "welcome flaky")
	if tries["welcome flaky"] != 3 || tries["welcome broken"] != 5 {
		t.Errorf("tries %v, want 3 and 5", tries)
	}
}

func TestOutreachRelink(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	newYear := time.Date(2027, 1, 1, 0, 0, 0, 0, tokyo)
	for _, c := range []struct {
		name      string
		mode      subrole.RelinkMode
		connected bool
		want      []string
	}{
		{"auto, not connected", subrole.RelinkAuto, false, []string{"relink d1", "relink d2"}},
		{"auto, connected", subrole.RelinkAuto, true, nil},
		{"always", subrole.RelinkAlways, true, []string{"relink d1", "relink d2"}},
		{"off", subrole.RelinkOff, false, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newOutreachFixture(t, subrole.OutreachPolicy{Relink: c.mode, Location: tokyo}, newYear.Add(-time.Minute))
			f.connected = c.connected
			for _, u := range []string{"d1", "d2"} {
				if err := f.svc.Link(context.Background(), subrole.Link{DiscordUserID: u, TwitchUserID: "t" + u}); err != nil {
					t.Fatal(err)
				}
			}
			// The first run only remembers the month; nothing until the
			// month ends in Tokyo (still December in UTC).
			f.advance(30 * time.Second)
			wantSent(t, f.idle(), []string(nil)...)
			f.advance(time.Minute)
			f.waitAudit("relink requests for 2027-01")
			wantSent(t, f.idle(), c.want...)
			// Once a month, across restarts.
			f.restart()
			f.advance(10 * 24 * time.Hour)
			wantSent(t, f.idle(), c.want...)
		})
	}
}

// TestOutreachPaceHoldsAgainstJoins checks that the pause after a DM (the
// pace, or a 429's retry_after) is kept even when joins wake the
// scheduler: a raid of joins must not turn into a burst of DMs.
func TestOutreachPaceHoldsAgainstJoins(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "subrole.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	clk := &clock{t: outreachStart}
	svc := subrole.NewService(subrole.Config{Store: db, Policy: policy, Now: clk.Now, Outreach: subrole.OutreachPolicy{Welcome: true}})
	msg := &messenger{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		svc.RunOutreach(ctx, subrole.OutreachRunner{Messenger: msg, Pace: time.Hour})
		close(done)
	}()
	join := func(u string) {
		if _, err := svc.MemberJoined(context.Background(), subrole.MemberJoin{DiscordUserID: u, JoinedAt: clk.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	join("d1")
	deadline := time.Now().Add(5 * time.Second)
	for sent, _ := msg.snapshot(); len(sent) == 0; sent, _ = msg.snapshot() {
		if time.Now().After(deadline) {
			t.Fatal("the first welcome was not sent")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, u := range []string{"d2", "d3", "d4"} {
		join(u)
		time.Sleep(50 * time.Millisecond)
	}
	if sent, _ := msg.snapshot(); len(sent) != 1 {
		t.Errorf("sent %q within the pace of an hour, want only the first welcome", sent)
	}
	// Shutdown does not wait for the pace.
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunOutreach did not return on cancel during a pause")
	}
}

// TestOutreachRelinkMonthNeverGoesBack checks that a month before the
// last decided one (SUBROLE_TIMEZONE changed to a zone behind, or the host
// clock stepped back) does not start another round of relink requests.
func TestOutreachRelinkMonthNeverGoesBack(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	newYear := time.Date(2027, 1, 1, 0, 0, 0, 0, tokyo)
	f := newOutreachFixture(t, subrole.OutreachPolicy{Relink: subrole.RelinkAlways, Location: tokyo}, newYear.Add(-time.Minute))
	if err := f.svc.Link(context.Background(), subrole.Link{DiscordUserID: "d1", TwitchUserID: "t1"}); err != nil {
		t.Fatal(err)
	}
	f.advance(2 * time.Minute)
	f.waitAudit("relink requests for 2027-01")
	wantSent(t, f.idle(), "relink d1")
	// The operator switches to UTC, where it is still December for 9 hours.
	f.policy.Location = time.UTC
	f.restart()
	f.advance(time.Minute)
	wantSent(t, f.idle(), "relink d1")
	f.advance(10 * time.Hour) // January in UTC: already asked this month
	wantSent(t, f.idle(), "relink d1")
}

// TestOutreachRelinkStaleMonth checks that a relink request still queued
// when its month is over (a retry, or a downtime across the 1st) is
// dropped: the new month's request is the one that counts.
func TestOutreachRelinkStaleMonth(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	newYear := time.Date(2027, 1, 1, 0, 0, 0, 0, tokyo)
	f := newOutreachFixture(t, subrole.OutreachPolicy{Relink: subrole.RelinkAlways, Location: tokyo}, newYear.Add(-time.Minute))
	f.msg.fail = func(key string, n int) error {
		if n == 1 {
			return errors.New("500 Internal Server Error")
		}
		return nil
	}
	if err := f.svc.Link(context.Background(), subrole.Link{DiscordUserID: "d1", TwitchUserID: "t1"}); err != nil {
		t.Fatal(err)
	}
	f.advance(2 * time.Minute)
	f.waitAudit("d1", "relink: attempt 1 failed")
	// Down from before the retry until February.
	f.stop()
	f.clock.Add(31 * 24 * time.Hour)
	f.start()
	f.waitAudit("relink requests for 2027-02")
	f.waitAudit("d1", "relink request for 2027-01 not sent")
	wantSent(t, f.idle(), "relink d1")
}

// TestOutreachOneFollowUpPerJoin checks that a follow-up longer than the
// rejoin gap does not give a member who rejoined two "only" reminders:
// the follow-up of the earlier join is dropped.
func TestOutreachOneFollowUpPerJoin(t *testing.T) {
	day := 24 * time.Hour
	f := newOutreachFixture(t, subrole.OutreachPolicy{Welcome: true, FollowUp: 45 * day}, outreachStart)
	f.join("d1")
	wantSent(t, f.idle(), "welcome d1")
	f.advance(31 * day) // left meanwhile; rejoins after the 30-day gap
	if out := f.join("d1"); out != subrole.JoinQueued {
		t.Fatalf("rejoin = %s", out)
	}
	wantSent(t, f.idle(), "welcome d1", "welcome d1")
	f.advance(14 * day) // the first join's follow-up is due
	f.waitAudit("d1", "follow-up not sent: it was for an earlier join")
	wantSent(t, f.idle(), "welcome d1", "welcome d1")
	f.advance(31 * day) // the rejoin's follow-up
	f.waitAudit("d1", "followup: sent")
	wantSent(t, f.idle(), "welcome d1", "welcome d1", "followup d1")
}

func TestOutreachJoinCatchUp(t *testing.T) {
	ctx := context.Background()
	f := newOutreachFixture(t, subrole.OutreachPolicy{Welcome: true}, outreachStart)
	begin := func() subrole.JoinCatchUp {
		t.Helper()
		c, err := f.svc.BeginJoinCatchUp(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The first session ever has nothing to catch up: the members already
	// there are not newcomers.
	if c := begin(); c.Needed {
		t.Fatalf("first catch-up %+v, want not needed", c)
	}
	f.advance(time.Hour)
	c := begin()
	if !c.Needed || !c.Since.Equal(outreachStart) || !c.Started.Equal(f.clock.Now()) {
		t.Fatalf("catch-up %+v, want needed since the first session (never before it, slack or not)", c)
	}
	if out := f.join("live"); out != subrole.JoinQueued {
		t.Fatalf("live join = %s", out)
	}
	members := []subrole.MemberJoin{
		{DiscordUserID: "before", JoinedAt: c.Since.Add(-time.Second)}, // was there before
		{DiscordUserID: "bot", Bot: true, JoinedAt: f.clock.Now()},
		{DiscordUserID: "live", JoinedAt: f.clock.Now().Add(time.Second)}, // handled from the gateway
		{DiscordUserID: "missed", JoinedAt: outreachStart.Add(time.Minute)},
	}
	queued, err := f.svc.CatchUpJoins(ctx, c, members)
	if err != nil || queued != 1 {
		t.Fatalf("CatchUpJoins = %d, %v; want 1 queued", queued, err)
	}
	wantSent(t, f.idle(), "welcome live", "welcome missed")
	f.waitAudit("missed: member joined at", "found by the catch-up", "queued [welcome now]")
	for _, a := range f.audit() {
		if !strings.HasPrefix(a, "missed:") && !strings.HasPrefix(a, "live:") {
			t.Errorf("audit %q: the catch-up should record only the join it found", a)
		}
	}

	// The next catch-up starts at the watermark, and the same list again
	// queues nothing.
	f.advance(time.Hour)
	c2 := begin()
	if !c2.Since.Equal(c.Started.Add(-5 * time.Minute)) {
		t.Fatalf("second catch-up since %s, want %s", c2.Since, c.Started.Add(-5*time.Minute))
	}
	if queued, err := f.svc.CatchUpJoins(ctx, c2, members); err != nil || queued != 0 {
		t.Fatalf("CatchUpJoins again = %d, %v; want 0", queued, err)
	}

	// After a long outage it looks back a week at most.
	f.advance(30 * 24 * time.Hour)
	c3 := begin()
	if !c3.Since.Equal(f.clock.Now().Add(-subrole.MaxJoinCatchUp)) {
		t.Fatalf("catch-up after 30 days since %s, want a week back", c3.Since)
	}
	// A watermark written by a clock a day ahead counts as now once the
	// clock is right again: joins after now are still found.
	f.clock.Add(24 * time.Hour)
	ahead := begin()
	if _, err := f.svc.CatchUpJoins(ctx, ahead, nil); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(-24 * time.Hour)
	c4 := begin()
	if want := f.clock.Now().Add(-5 * time.Minute); !c4.Since.Equal(want) {
		t.Fatalf("catch-up after a watermark from the future: since %s, want %s", c4.Since, want)
	}
}

func TestOutreachJoinCatchUpSkips(t *testing.T) {
	ctx := context.Background()
	f := newOutreachFixture(t, subrole.OutreachPolicy{Welcome: true}, outreachStart)
	if _, err := f.svc.BeginJoinCatchUp(ctx); err != nil { // the first session
		t.Fatal(err)
	}
	// Linked when they joined, unlinked since: their join was heard.
	if err := f.svc.Link(ctx, subrole.Link{DiscordUserID: "was-linked", TwitchUserID: "9001"}); err != nil {
		t.Fatal(err)
	}
	if out := f.join("was-linked"); out != subrole.JoinLinked {
		t.Fatalf("join = %s", out)
	}
	if err := f.svc.Unlink(ctx, "was-linked", "test"); err != nil {
		t.Fatal(err)
	}
	// One member's record cannot be read.
	f.join("damaged")
	f.idle()
	err := f.db.Bolt().Update(func(btx *bolt.Tx) error {
		return btx.Bucket([]byte("outreach")).Put([]byte("damaged"), []byte("{"))
	})
	if err != nil {
		t.Fatal(err)
	}
	f.advance(time.Hour)
	c, err := f.svc.BeginJoinCatchUp(ctx)
	if err != nil || !c.Needed {
		t.Fatalf("BeginJoinCatchUp = %+v, %v", c, err)
	}
	joined := outreachStart.Add(time.Minute)
	queued, err := f.svc.CatchUpJoins(ctx, c, []subrole.MemberJoin{
		{DiscordUserID: "was-linked", JoinedAt: joined},
		{DiscordUserID: "damaged", JoinedAt: joined},
		{DiscordUserID: "missed", JoinedAt: joined},
	})
	if err != nil || queued != 1 {
		t.Fatalf("CatchUpJoins = %d, %v; want 1 queued and the damaged record skipped", queued, err)
	}
	wantSent(t, f.idle(), "welcome damaged", "welcome missed")
	f.waitAudit("damaged: member joined at", "not checked, nothing queued")
}

func TestOutreachJoinCatchUpPolicyOff(t *testing.T) {
	ctx := context.Background()
	f := newOutreachFixture(t, subrole.OutreachPolicy{Relink: subrole.RelinkAlways}, outreachStart)
	for range 2 {
		if c, err := f.svc.BeginJoinCatchUp(ctx); err != nil || c.Needed {
			t.Fatalf("BeginJoinCatchUp = %+v, %v; want not needed: nothing is sent on join", c, err)
		}
		f.advance(time.Hour)
	}
	// Turned on later, it starts afresh: the joins made while it was off
	// were never recorded, and their members get no late welcome.
	f.restartWith(subrole.OutreachPolicy{Welcome: true})
	if c, err := f.svc.BeginJoinCatchUp(ctx); err != nil || c.Needed {
		t.Fatalf("BeginJoinCatchUp = %+v, %v; want a first session", c, err)
	}
	f.advance(time.Hour)
	c, err := f.svc.BeginJoinCatchUp(ctx)
	if err != nil || !c.Needed || !c.Since.Equal(outreachStart.Add(2*time.Hour)) {
		t.Fatalf("BeginJoinCatchUp = %+v, %v; want needed since it was turned on", c, err)
	}
}

// TestOutreachUnreadableJobSetAside: a stored job that cannot be decoded
// (written by another version, or damaged) is set aside in the audit log,
// and the jobs after it are still sent.
func TestOutreachUnreadableJobSetAside(t *testing.T) {
	f := newOutreachFixture(t, subrole.OutreachPolicy{Welcome: true, FollowUp: time.Hour}, outreachStart)
	f.join("d1")
	f.join("d2")
	wantSent(t, f.idle(), "welcome d1", "welcome d2")
	// Damage d1's follow-up, due first.
	err := f.db.Bolt().Update(func(btx *bolt.Tx) error {
		b := btx.Bucket([]byte("outreach_jobs"))
		k, _ := b.Cursor().First()
		if k == nil || !strings.HasSuffix(string(k), "/d1") {
			return fmt.Errorf("first job key %q, want d1's follow-up", k)
		}
		if err := b.Put(k, []byte(`{"kind":`)); err != nil {
			return err
		}
		// And a key that does not even say kind and user.
		odd := binary.BigEndian.AppendUint64(nil, uint64(outreachStart.Add(time.Minute).UnixNano()))
		return b.Put(append(odd, "garbage"...), []byte("?"))
	})
	if err != nil {
		t.Fatal(err)
	}
	f.advance(time.Hour + time.Minute)
	wantSent(t, f.idle(), "welcome d1", "welcome d2", "followup d2")
	f.waitAudit(": garbage due", "set aside, not sent")
	if n := strings.Count(strings.Join(f.audit(), "\n"), "garbage due"); n != 1 {
		t.Errorf("the odd job was set aside %d times, want once", n)
	}
	f.waitAudit("d1: followup due", "set aside, not sent: the stored job cannot be read", `stored value "{\"kind\":"`)
}
