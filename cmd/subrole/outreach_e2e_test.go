package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord/discordtest"
	"github.com/subrole/subrole/store"
)

// testClock is a settable clock for the service.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// pinned is a service running on a pinned clock.
type pinned struct {
	in    *instance
	db    *store.Store
	svc   *subrole.Service
	clock *testClock
}

// startPinned starts the service with the core's clock pinned to clock,
// and hands back its store and core.
func (w *world) startPinned(t *testing.T, clock *testClock) *pinned {
	t.Helper()
	dbc, svcc := make(chan *store.Store, 1), make(chan *subrole.Service, 1)
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{cancel: cancel, done: make(chan error, 1), logs: &syncBuffer{}}
	cfg, err := loadConfig(w.getenv)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		in.done <- serve(ctx, cfg, newLogger(cfg, in.logs), hooks{now: clock.Now,
			opened:  func(s *store.Store) { dbc <- s },
			started: func(s *subrole.Service) { svcc <- s }})
	}()
	t.Cleanup(func() { in.stop(t) })
	w.waitHealthy(t, in.done)
	return &pinned{in: in, db: <-dbc, svc: <-svcc, clock: clock}
}

// advance moves the pinned clock and wakes the outreach scheduler.
func (p *pinned) advance(d time.Duration) {
	p.clock.Add(d)
	p.svc.WakeOutreach()
}

// outreachAudit returns the outreach audit entries as "user: detail".
func (p *pinned) outreachAudit(t *testing.T) []string {
	t.Helper()
	var out []string
	err := p.db.View(context.Background(), func(tx subrole.Tx) error {
		entries, err := tx.Audit(0, -1)
		for _, e := range entries {
			if e.Kind == subrole.AuditOutreach {
				out = append(out, e.DiscordUserID+": "+e.Detail)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitAudit waits until n outreach audit entries contain every part.
func (p *pinned) waitAudit(t *testing.T, n int, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		found := 0
		for _, a := range p.outreachAudit(t) {
			ok := true
			for _, part := range parts {
				ok = ok && strings.Contains(a, part)
			}
			if ok {
				found++
			}
		}
		if found >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d outreach audit entries with %q, want %d; have:\n%s", found, parts, n, strings.Join(p.outreachAudit(t), "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dms returns the contents of the DMs the fake Discord recorded for user.
func (w *world) dms(user string) []string {
	var out []string
	for _, m := range w.discord.Messages() {
		if m.Kind == discordtest.KindChannel && m.RecipientID == user {
			out = append(out, m.Content)
		}
	}
	return out
}

// waitDMs waits until user has n DMs and returns them.
func (w *world) waitDMs(t *testing.T, user string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(w.dms(user)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s has DMs %q, want %d", user, w.dms(user), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return w.dms(user)
}

// joinEvent is a GUILD_MEMBER_ADD payload as Discord sends it: the guild
// member object with user, plus guild_id.
func joinEvent(userID, username string, joined time.Time) map[string]any {
	return map[string]any{"guild_id": worldGuild, "joined_at": joined.UTC().Format("2006-01-02T15:04:05.000000+00:00"),
		"roles": []string{}, "deaf": false, "mute": false, "flags": 0, "nick": nil, "avatar": nil, "premium_since": nil,
		"pending": false, "user": map[string]any{"id": userID, "username": username, "discriminator": "0",
			"global_name": username, "avatar": nil, "bot": false}}
}

// join adds a member to the fake Discord and dispatches their join.
func (w *world) join(t *testing.T, userID, username string, joined time.Time) map[string]any {
	t.Helper()
	w.addMember(userID, username)
	ev := joinEvent(userID, username, joined)
	if err := w.discord.Dispatch("GUILD_MEMBER_ADD", ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

// dmRefusals counts the fake's 50007 answers to DMs.
func (w *world) dmRefusals() int {
	n := 0
	for _, c := range w.discord.CallsMatching("POST", "/channels/") {
		if c.Status == 403 && strings.Contains(c.Route, "messages") {
			n++
		}
	}
	return n
}

func TestOutreachJoinE2E(t *testing.T) {
	w := newTestWorld(t)
	w.env["SUBROLE_LINK_DM"] = "off" // count outreach DMs only
	w.linkMembers(t, 1)
	linked := discordID(1)
	carol, dave, erin, frank := discordID(10), discordID(11), discordID(12), discordID(13)
	w.twitchAPI.AddUser(twitchID(12), "erin_tv")
	clock := &testClock{t: time.Now().UTC().Truncate(time.Second)}
	p := w.startPinned(t, clock)

	// A new member who is not linked gets one welcome.
	joinedAt := clock.Now()
	carolJoin := w.join(t, carol, "carol", joinedAt)
	dms := w.waitDMs(t, carol, 1)
	for _, want := range []string{"Welcome", "**/link**", "<https://discord.com/channels/" + worldGuild + ">"} {
		if !strings.Contains(dms[0], want) {
			t.Errorf("welcome %q lacks %q", dms[0], want)
		}
	}
	// The same join delivered again, and again while the gateway is down
	// (replayed on RESUME), is recorded once.
	if err := w.discord.Dispatch("GUILD_MEMBER_ADD", carolJoin); err != nil {
		t.Fatal(err)
	}
	p.waitAudit(t, 1, carol, "a join was already recorded")
	w.discord.DropGateway()
	w.discord.Dispatch("GUILD_MEMBER_ADD", carolJoin)
	if _, err := w.discord.WaitForGatewayOp(ctxTimeout(t, 20*time.Second), discordtest.OpResume); err != nil {
		t.Fatal(err)
	}
	p.waitAudit(t, 2, carol, "a join was already recorded")

	// A linked member gets nothing; nor does a member who refuses DMs get
	// more than one try.
	w.discord.Dispatch("GUILD_MEMBER_ADD", joinEvent(linked, "viewer1", joinedAt))
	p.waitAudit(t, 1, linked, "already linked: no welcome")
	w.discord.SetDMClosed(dave, true)
	w.join(t, dave, "dave", joinedAt)
	p.waitAudit(t, 1, dave, "welcome: not delivered: the member does not accept DMs")

	// Erin links before the follow-up, Frank leaves.
	w.join(t, erin, "erin", joinedAt)
	w.join(t, frank, "frank", joinedAt)
	w.waitDMs(t, erin, 1)
	w.waitDMs(t, frank, 1)
	if _, err := w.linkThroughBrowser(ctxTimeout(t, 30*time.Second), erin, twitchID(12), ""); err != nil {
		t.Fatal(err)
	}
	if err := w.discord.MemberLeave(frank); err != nil {
		t.Fatal(err)
	}

	// A restart: the same join once more changes nothing.
	p.in.stop(t)
	p = w.startPinned(t, clock)
	w.discord.Dispatch("GUILD_MEMBER_ADD", carolJoin)
	p.waitAudit(t, 3, carol, "a join was already recorded")

	// Past the follow-up time: one reminder, to Carol only.
	p.advance(168*time.Hour + time.Minute)
	p.waitAudit(t, 1, carol, "followup: sent")
	p.waitAudit(t, 1, erin, "follow-up not sent: the member linked")
	p.waitAudit(t, 1, frank, "not sent: the member is no longer in the server")
	p.waitAudit(t, 1, dave, "follow-up not sent: the member does not accept DMs")
	dms = w.dms(carol)
	if len(dms) != 2 || !strings.Contains(dms[1], "reminder") || !strings.Contains(dms[1], "**/link**") {
		t.Errorf("carol's DMs %q, want the welcome and one reminder", dms)
	}
	for user, want := range map[string]int{linked: 0, dave: 0, erin: 1, frank: 1} {
		if got := w.dms(user); len(got) != want {
			t.Errorf("%s got DMs %q, want %d", user, got, want)
		}
	}
	if n := w.dmRefusals(); n != 1 {
		t.Errorf("%d DMs refused with 50007, want 1 (no retries)", n)
	}
}

// TestOutreachMissedJoinsE2E: joins Discord never delivers (the gateway
// session could not be resumed, or the service was stopped) still get
// their welcome, once, when the next session starts; the members who were
// there before subrole was installed get none.
func TestOutreachMissedJoinsE2E(t *testing.T) {
	const watermark = "outreach_joins_through"
	w := newTestWorld(t)
	w.env["SUBROLE_LINK_DM"] = "off" // count outreach DMs only
	old, carol, gina, hank := discordID(20), discordID(21), discordID(22), discordID(23)
	w.addMember(old, "old")
	w.discord.SetJoinedAt(old, time.Now().Add(-time.Hour))
	clock := &testClock{t: time.Now().UTC().Truncate(time.Second)}
	p := w.startPinned(t, clock)
	// The first session ever only sets the watermark.
	waitMeta(t, p.db, watermark, clock.Now().Format(time.RFC3339Nano))

	// Carol's join is delivered; Gina's is lost with the session, which
	// Discord then refuses to resume.
	w.join(t, carol, "carol", time.Now())
	w.waitDMs(t, carol, 1)
	w.addMember(gina, "gina")
	p.advance(time.Minute)
	if n := w.discord.EndSessions(); n != 1 {
		t.Fatalf("ended %d gateway sessions, want 1", n)
	}
	if _, err := w.discord.WaitForGatewayOp(ctxTimeout(t, 20*time.Second), discordtest.OpResume); err != nil {
		t.Fatal(err)
	}
	waitMeta(t, p.db, watermark, clock.Now().Format(time.RFC3339Nano))
	w.waitDMs(t, gina, 1)
	p.waitAudit(t, 1, gina, "while the bot had no gateway session (found by the catch-up)", "queued [welcome now")

	// Hank joins while the service is stopped.
	p.in.stop(t)
	w.addMember(hank, "hank")
	clock.Add(time.Minute)
	p = w.startPinned(t, clock)
	waitMeta(t, p.db, watermark, clock.Now().Format(time.RFC3339Nano))
	w.waitDMs(t, hank, 1)

	time.Sleep(1500 * time.Millisecond) // a second welcome would be sent by now (1 DM a second)
	for user, want := range map[string]int{old: 0, carol: 1, gina: 1, hank: 1} {
		if got := w.dms(user); len(got) != want {
			t.Errorf("%s got DMs %q, want %d", user, got, want)
		}
	}
	for _, user := range []string{old, carol} {
		for _, e := range p.outreachAudit(t) {
			if strings.HasPrefix(e, user+":") && strings.Contains(e, "catch-up") {
				t.Errorf("audit %q: the catch-up recorded a join it should have skipped", e)
			}
		}
	}
}

func TestOutreachRelinkE2E(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	// 2027-01-01 00:00 in Tokyo is still 2026-12-31 in UTC.
	newYear := time.Date(2027, 1, 1, 0, 0, 0, 0, tokyo)
	for _, c := range []struct {
		name      string
		connected bool
		want      int // relink DMs per member
	}{
		{"broadcaster not connected", false, 1},
		{"broadcaster connected", true, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newTestWorld(t)
			w.env["SUBROLE_JOIN_FOLLOWUP"] = "0"
			w.linkMembers(t, 2)
			clock := &testClock{t: newYear.Add(-time.Minute)}
			p := w.startPinned(t, clock)
			if c.connected {
				if _, err := w.connectBroadcaster(ctxTimeout(t, 30*time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			// The first run remembers December; nothing is sent for it.
			waitMeta(t, p.db, "outreach_relink_month", "2026-12")
			p.advance(30 * time.Second)
			p.advance(time.Minute) // 00:00:30 on January 1st in Tokyo
			p.waitAudit(t, 1, "relink requests for 2027-01")
			if c.want > 0 {
				for i := 1; i <= 2; i++ {
					dms := w.waitDMs(t, discordID(i), 1)
					if !strings.Contains(dms[0], "relink") || !strings.Contains(dms[0], "**/link**") {
						t.Errorf("relink request %q", dms[0])
					}
				}
			}
			// Once per month, across a restart.
			p.in.stop(t)
			p = w.startPinned(t, clock)
			p.advance(24 * time.Hour)
			// A welcome shows the scheduler ran after the restart: a second
			// round of relink requests would be due as early and sent first
			// (jobs of the same time go in kind order).
			w.join(t, discordID(20), "zoe", clock.Now())
			w.waitDMs(t, discordID(20), 1)
			for i := 1; i <= 2; i++ {
				if got := w.dms(discordID(i)); len(got) != c.want {
					t.Errorf("%s got %d DMs %q, want %d", discordID(i), len(got), got, c.want)
				}
			}
			if audit := strings.Join(p.outreachAudit(t), "\n"); c.connected != strings.Contains(audit, "the broadcaster is connected") {
				t.Errorf("audit:\n%s", audit)
			}
		})
	}
}

// waitMeta waits until the store's meta key holds want.
func waitMeta(t *testing.T, db *store.Store, key, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got string
		err := db.View(context.Background(), func(tx subrole.Tx) error {
			b, err := tx.Meta(key)
			got = string(b)
			if errors.Is(err, subrole.ErrNotFound) {
				return nil
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("meta %s = %q, want %q", key, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
