package discord_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord"
	"github.com/subrole/subrole/discord/discordtest"
)

const (
	token   = "test-token"
	guild   = "200000000000000000"
	botRole = "300000000000000099"
	linked  = "300000000000000001"
	tier1   = "300000000000000011"
	tier2   = "300000000000000012"
	tier3   = "300000000000000013"
	other   = "300000000000000077" // a role subrole does not manage
)

var managed = []string{linked, tier1, tier2, tier3}

func newFake(t *testing.T) *discordtest.Server {
	t.Helper()
	srv := discordtest.NewServer(discordtest.Options{Token: token, GuildID: guild, Logf: t.Logf})
	t.Cleanup(srv.Close)
	srv.AddRole(linked, "Linked", 1)
	srv.AddRole(tier1, "Tier 1", 2)
	srv.AddRole(tier2, "Tier 2", 3)
	srv.AddRole(tier3, "Tier 3", 4)
	srv.AddRole(other, "Other", 5)
	srv.AddRole(botRole, "subrole", 10)
	srv.SetMemberRoles(srv.BotUserID, botRole)
	return srv
}

func roleVars() map[string]string {
	return map[string]string{linked: "SUBROLE_ROLE_LINKED", tier1: "SUBROLE_ROLE_TIER1", tier2: "SUBROLE_ROLE_TIER2", tier3: "SUBROLE_ROLE_TIER3"}
}

func newBot(t *testing.T, srv *discordtest.Server, log *slog.Logger) *discord.Bot {
	t.Helper()
	b, err := discord.New(context.Background(), discord.Config{Token: token, GuildID: guild, Origin: srv.URL, ManagedRoles: roleVars(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewChecks(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*discordtest.Server) discord.Config
		want  string
	}{
		{"bad token", func(*discordtest.Server) discord.Config {
			return discord.Config{Token: "wrong", GuildID: guild, ManagedRoles: roleVars()}
		}, "SUBROLE_DISCORD_TOKEN"},
		{"not in guild", func(*discordtest.Server) discord.Config {
			return discord.Config{Token: token, GuildID: "999999999999999999", ManagedRoles: roleVars()}
		}, "SUBROLE_DISCORD_GUILD_ID"},
		{"missing role", func(*discordtest.Server) discord.Config {
			r := roleVars()
			r["300000000000000055"] = "SUBROLE_ROLE_SUBSCRIBER"
			return discord.Config{Token: token, GuildID: guild, ManagedRoles: r}
		}, "SUBROLE_ROLE_SUBSCRIBER=300000000000000055 is not a role"},
		{"role above the bot", func(s *discordtest.Server) discord.Config {
			s.AddRole(tier3, "Tier 3", 50)
			return discord.Config{Token: token, GuildID: guild, ManagedRoles: roleVars()}
		}, "SUBROLE_ROLE_TIER3=" + tier3 + " is not below the bot's highest role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t)
			cfg := tt.setup(srv)
			cfg.Origin = srv.URL
			_, err := discord.New(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), token) {
				t.Fatal("error leaks the token")
			}
		})
	}
	t.Run("bad token is ErrBadToken", func(t *testing.T) {
		srv := newFake(t)
		_, err := discord.New(context.Background(), discord.Config{Token: "wrong", GuildID: guild, Origin: srv.URL})
		if !errors.Is(err, discord.ErrBadToken) {
			t.Fatalf("err = %v", err)
		}
		if srv.Connected() != 0 {
			t.Fatal("a rejected token reached the gateway")
		}
	})
}

func TestOpenGateway(t *testing.T) {
	srv := newFake(t)
	b := newBot(t, srv, nil)
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.Connected() {
		t.Fatal("not connected after Open")
	}
	op, err := srv.WaitForIdentify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(op.Data), `"intents"`) {
		t.Fatalf("identify %s", op.Data)
	}
}

// memOutbox is an in-memory Outbox.
type memOutbox struct {
	mu    sync.Mutex
	jobs  []subrole.RoleJob
	seq   uint64
	audit []subrole.AuditEntry
	ready chan struct{}

	failCompletes int // the next CompleteRoleJobs calls that fail
}

func newOutbox() *memOutbox { return &memOutbox{ready: make(chan struct{}, 1)} }

func (o *memOutbox) add(member string, desired ...string) {
	o.mu.Lock()
	o.seq++
	o.jobs = append(o.jobs, subrole.RoleJob{Seq: o.seq, DiscordUserID: member, Desired: desired, Managed: managed,
		Reason: "test job " + member, EventID: "ev", Observed: time.Now()})
	o.mu.Unlock()
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

func (o *memOutbox) OutboxReady() <-chan struct{} { return o.ready }

func (o *memOutbox) RoleJobs(_ context.Context, after uint64, max int) ([]subrole.RoleJob, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []subrole.RoleJob
	for _, j := range o.jobs {
		if j.Seq > after && len(out) < max {
			out = append(out, j)
		}
	}
	return out, nil
}

func (o *memOutbox) CompleteRoleJobs(_ context.Context, seqs []uint64, audit []subrole.AuditEntry) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failCompletes > 0 {
		o.failCompletes--
		return errors.New("store: disk full")
	}
	o.jobs = slices.DeleteFunc(o.jobs, func(j subrole.RoleJob) bool { return slices.Contains(seqs, j.Seq) })
	o.audit = append(o.audit, audit...)
	return nil
}

func (o *memOutbox) pending() int { o.mu.Lock(); defer o.mu.Unlock(); return len(o.jobs) }

func (o *memOutbox) audits() []subrole.AuditEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.audit)
}

type harness struct {
	srv     *discordtest.Server
	out     *memOutbox
	logs    *syncBuffer
	applied chan discord.Applied
	stop    func()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func startApplier(t *testing.T, srv *discordtest.Server, out *memOutbox) *harness {
	t.Helper()
	h := &harness{srv: srv, out: out, logs: &syncBuffer{}, applied: make(chan discord.Applied, 100)}
	log := slog.New(slog.NewTextHandler(h.logs, nil))
	a := &discord.Applier{Bot: newBot(t, srv, log), Outbox: out, Logger: log,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		OnApplied: func(x discord.Applied) { h.applied <- x }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	h.stop = func() { cancel(); <-done }
	t.Cleanup(h.stop)
	return h
}

func (h *harness) waitApplied(t *testing.T) discord.Applied {
	t.Helper()
	select {
	case a := <-h.applied:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("nothing applied")
	}
	return discord.Applied{}
}

func (h *harness) roles(t *testing.T, member string) []string {
	t.Helper()
	r, _ := h.srv.MemberRoles(member)
	slices.Sort(r)
	return r
}

func TestApplierAppliesOnlyTheDifference(t *testing.T) {
	srv := newFake(t)
	srv.AddMember("1", "alice", linked, other)
	out := newOutbox()
	h := startApplier(t, srv, out)
	mark := srv.Mark()

	out.add("1", linked, tier2)
	a := h.waitApplied(t)
	if a.Err != nil || !slices.Equal(a.Added, []string{tier2}) || len(a.Removed) != 0 {
		t.Fatalf("applied %+v", a)
	}
	if got := h.roles(t, "1"); !slices.Equal(got, []string{linked, tier2, other}) {
		t.Fatalf("roles %v", got)
	}
	var writes []discordtest.Call
	for _, c := range srv.Calls()[mark:] {
		if c.Method == "PUT" || c.Method == "DELETE" || c.Method == "PATCH" {
			writes = append(writes, c)
		}
	}
	if len(writes) != 1 || !strings.HasSuffix(writes[0].Path, "/roles/"+tier2) {
		t.Fatalf("role writes %+v, want one PUT of tier 2", writes)
	}
	if !strings.Contains(writes[0].AuditLogReason(), "test job 1") {
		t.Fatalf("audit reason %q", writes[0].AuditLogReason())
	}

	// Swap tiers: one add, one remove; the unmanaged role stays.
	out.add("1", linked, tier3)
	a = h.waitApplied(t)
	if !slices.Equal(a.Added, []string{tier3}) || !slices.Equal(a.Removed, []string{tier2}) {
		t.Fatalf("applied %+v", a)
	}
	if got := h.roles(t, "1"); !slices.Equal(got, []string{linked, tier3, other}) {
		t.Fatalf("roles %v", got)
	}
	// Applying the same desired state again makes no role call.
	mark = srv.Mark()
	out.add("1", linked, tier3)
	if a = h.waitApplied(t); len(a.Added)+len(a.Removed) != 0 || !a.Called.IsZero() {
		t.Fatalf("no-op job changed roles: %+v", a)
	}
	if n := len(srv.CallsMatching("PUT", "")) + len(srv.CallsMatching("DELETE", "")); n != 3 {
		t.Fatalf("%d role writes in total, want 3 (%d calls since mark)", n, len(srv.Calls())-mark)
	}
	if out.pending() != 0 {
		t.Fatal("jobs left in the outbox")
	}
	if au := out.audits(); len(au) != 3 || au[0].Kind != subrole.AuditRoles {
		t.Fatalf("audit %+v", au)
	}
}

func TestApplierCoalescesJobsOfOneMember(t *testing.T) {
	srv := newFake(t)
	srv.AddMember("1", "alice")
	out := newOutbox()
	// Queue three states before the applier starts: only the last matters.
	out.add("1", linked, tier1)
	out.add("1", linked, tier2)
	out.add("1", linked, tier3)
	h := startApplier(t, srv, out)
	a := h.waitApplied(t)
	if a.Jobs != 3 || !slices.Equal(a.Added, []string{linked, tier3}) {
		t.Fatalf("applied %+v, want 3 jobs coalesced into linked+tier3", a)
	}
	if n := len(slices.DeleteFunc(srv.CallsMatching("GET", ""), func(c discordtest.Call) bool { return c.Path != "/api/v9/guilds/"+guild+"/members/1" })); n != 1 {
		t.Fatalf("%d member reads, want 1", n)
	}
	if n := len(srv.CallsMatching("PUT", "")); n != 2 {
		t.Fatalf("%d role adds, want 2", n)
	}
}

func TestApplierRetriesOutage(t *testing.T) {
	for _, mode := range []discordtest.Outage{discordtest.Outage500, discordtest.Outage429, discordtest.OutageDrop} {
		t.Run(outageName(mode), func(t *testing.T) {
			srv := newFake(t)
			srv.AddMember("1", "alice")
			out := newOutbox()
			h := startApplier(t, srv, out)
			srv.SetOutage(mode)
			out.add("1", linked, tier1)
			if _, err := srv.WaitForCall(ctxTimeout(t), func(c discordtest.Call) bool { return c.Method == "GET" && strings.Contains(c.Path, "/members/1") }); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // several failed attempts
			if out.pending() != 1 {
				t.Fatal("job dropped during the outage")
			}
			if roles := h.roles(t, "1"); len(roles) != 0 {
				t.Fatalf("roles changed during the outage: %v", roles)
			}
			srv.Heal()
			a := h.waitApplied(t)
			if a.Err != nil || !slices.Equal(h.roles(t, "1"), []string{linked, tier1}) {
				t.Fatalf("after heal: %+v roles %v", a, h.roles(t, "1"))
			}
			if out.pending() != 0 {
				t.Fatal("job not completed")
			}
			if !strings.Contains(h.logs.String(), "retrying") {
				t.Fatal("no retry logged")
			}
		})
	}
}

func outageName(m discordtest.Outage) string {
	switch m {
	case discordtest.Outage500:
		return "500"
	case discordtest.Outage429:
		return "429"
	}
	return "drop"
}

func TestApplierPermanentFailures(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*discordtest.Server)
		want  string
	}{
		{"missing permissions", func(s *discordtest.Server) { s.AddMember("1", "alice"); s.SetUnmanageable(tier1) }, "Manage Roles"},
		{"unknown member", func(s *discordtest.Server) {}, "left the server"},
		// Deleted after the start-up check passed.
		{"unknown role", func(s *discordtest.Server) { s.AddMember("1", "alice") }, "role was deleted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t)
			tt.setup(srv)
			out := newOutbox()
			h := startApplier(t, srv, out)
			if tt.name == "unknown role" {
				srv.RemoveRole(tier1)
			}
			out.add("1", tier1)
			a := h.waitApplied(t)
			if a.Err == nil {
				t.Fatalf("no error: %+v", a)
			}
			if out.pending() != 0 {
				t.Fatal("permanent failure left the job queued (it would retry forever)")
			}
			au := out.audits()
			if len(au) != 1 || au[0].Kind != subrole.AuditRoleFailure || !strings.Contains(au[0].Detail, tt.want) {
				t.Fatalf("audit %+v", au)
			}
			if logs := h.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, tt.want) {
				t.Fatalf("logs %s", logs)
			}
		})
	}
}

func TestApplierParallelMembersKeepOrder(t *testing.T) {
	srv := newFake(t)
	out := newOutbox()
	for i := range 50 {
		srv.AddMember(memberID(i), "m")
	}
	h := startApplier(t, srv, out)
	for round, desired := range [][]string{{linked, tier1}, {linked, tier2}, {linked}} {
		for i := range 50 {
			out.add(memberID(i), desired...)
		}
		_ = round
	}
	deadline := time.Now().Add(10 * time.Second)
	for out.pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 50 {
		if got := h.roles(t, memberID(i)); !slices.Equal(got, []string{linked}) {
			t.Fatalf("member %d ended with %v, want the last state", i, got)
		}
	}
}

func memberID(i int) string { return "4000000000000" + strings.Repeat("0", 4-len(itoa(i))) + itoa(i) }

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAllMemberRoles(t *testing.T) {
	srv := newFake(t)
	for i := range 2500 {
		srv.AddMember(memberID(i), "m", linked)
	}
	b := newBot(t, srv, nil)
	seen := map[string]bool{}
	pages := 0
	err := b.AllMemberRoles(context.Background(), func(page map[string][]string) error {
		pages++
		for id, roles := range page {
			if seen[id] {
				t.Fatalf("member %s listed twice", id)
			}
			seen[id] = true
			if !slices.Equal(roles, []string{linked}) {
				t.Fatalf("roles of %s: %v", id, roles)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2500 || pages != 3 {
		t.Fatalf("%d members in %d pages, want 2500 in 3", len(seen), pages)
	}
}

// TestApplierClassifiesFailures: only errors that name a member, role or
// permission problem drop a job; a reset token (401), a Cloudflare block
// (403 without a code) and other incidents are retried until they pass, and
// an unexplained client error is retried a few times before it is recorded.
func TestApplierClassifiesFailures(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		n       int
		applied bool
	}{
		{"401 token reset", 401, 3, true},
		{"403 without a code", 403, 3, true},
		{"502", 502, 2, true},
		{"unexplained 400 for a while", 400, 3, true},
		{"unexplained 400 for good", 400, 1000, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t)
			srv.AddMember("1", "alice")
			out := newOutbox()
			h := startApplier(t, srv, out)
			srv.FailNext(tt.n, tt.status)
			out.add("1", linked, tier1)
			a := h.waitApplied(t)
			if tt.applied {
				if a.Err != nil || !slices.Equal(h.roles(t, "1"), []string{linked, tier1}) {
					t.Fatalf("not applied after the failures passed: %+v roles %v", a, h.roles(t, "1"))
				}
				return
			}
			if a.Err == nil || out.pending() != 0 {
				t.Fatalf("a persistent client error was retried forever: %+v", a)
			}
			reads := slices.DeleteFunc(srv.CallsMatching("GET", ""), func(c discordtest.Call) bool { return c.Path != "/api/v9/guilds/"+guild+"/members/1" })
			if n := len(reads); n != 6 {
				t.Fatalf("%d attempts, want 6", n)
			}
		})
	}
}

// TestApplierRetriesCompletion: when recording a finished change fails, the
// applier retries until the jobs are removed, without calling Discord again.
func TestApplierRetriesCompletion(t *testing.T) {
	srv := newFake(t)
	srv.AddMember("1", "alice")
	out := newOutbox()
	out.failCompletes = 2
	h := startApplier(t, srv, out)
	out.add("1", linked, tier1)
	a := h.waitApplied(t)
	if a.Err != nil || out.pending() != 0 {
		t.Fatalf("applied %+v, %d jobs left", a, out.pending())
	}
	if n := len(srv.CallsMatching("PUT", "")); n != 2 {
		t.Fatalf("%d role writes, want 2 (no repeat)", n)
	}
}
