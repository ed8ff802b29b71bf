package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord/discordtest"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// TestMain lets the test binary act as the subrole binary for the
// subprocess tests: with SUBROLE_TEST_AS_MAIN set it runs main and exits.
func TestMain(m *testing.M) {
	if os.Getenv("SUBROLE_TEST_AS_MAIN") == "1" {
		os.Args = []string{"subrole"}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncBuffer is a goroutine-safe log sink.
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

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// newTestWorld returns a world with a database in a temp dir, a fixed listen
// address, and n members linked directly in the store.
func newTestWorld(t *testing.T) *world {
	t.Helper()
	w := newWorld(filepath.Join(t.TempDir(), "subrole.db"))
	t.Cleanup(w.close)
	addr := freeAddr(t)
	w.env["SUBROLE_LISTEN"] = addr
	w.serving(addr)
	return w
}

// linkMembers links the world's viewers 1..n before the service starts, and
// gives them the linked role, as if they had linked earlier.
func (w *world) linkMembers(t *testing.T, n int) {
	t.Helper()
	db, err := store.Open(w.env["SUBROLE_DATA"], store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(context.Background(), func(tx subrole.Tx) error {
		for i := 1; i <= n; i++ {
			w.discord.AddMember(discordID(i), fmt.Sprintf("viewer%d", i), worldRoleLinked)
			if err := tx.PutLink(subrole.Link{DiscordUserID: discordID(i), TwitchUserID: twitchID(i), Linked: time.Now()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// instance is one run() of the service.
type instance struct {
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

// start calls run() like main does and waits for /healthz.
func (w *world) start(t *testing.T) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{cancel: cancel, done: make(chan error, 1), logs: &syncBuffer{}}
	go func() { in.done <- run(ctx, []string{"subrole"}, w.getenv, in.logs, in.logs) }()
	t.Cleanup(func() { in.stop(t) })
	w.waitHealthy(t, in.done)
	return in
}

func (w *world) waitHealthy(t *testing.T, exited <-chan error) {
	t.Helper()
	url := "http://" + w.env["SUBROLE_LISTEN"] + "/healthz"
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("service exited during start: %v", err)
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("service never became healthy")
}

func (in *instance) stop(t *testing.T) {
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("run returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("run did not stop")
	}
}

// send posts a message and requires status want.
func (w *world) send(t *testing.T, m twitchtest.Message, want int) {
	t.Helper()
	status, body, err := w.twitch.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if status != want {
		t.Fatalf("%s: status %d %q, want %d", m.SubscriptionType, status, body, want)
	}
}

// waitRoles waits until the member holds exactly roles (order ignored).
func (w *world) waitRoles(t *testing.T, member string, roles ...string) {
	t.Helper()
	slices.Sort(roles)
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		got, _ = w.discord.MemberRoles(member)
		slices.Sort(got)
		if slices.Equal(got, roles) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("member %s has roles %v, want %v", member, got, roles)
}

// roleWrites counts PUT/DELETE calls for one member and role.
func (w *world) roleWrites(method, member, role string) int {
	return len(w.discord.CallsMatching(method, "/api/v9/guilds/"+worldGuild+"/members/"+member+"/roles/"+role))
}

func TestEndToEnd(t *testing.T) {
	w := newTestWorld(t)
	w.linkMembers(t, 2)
	w.start(t)
	alice, bob := discordID(1), discordID(2)

	w.send(t, w.twitch.Subscribe(twitchID(1), "alice", "1000", false), 204)
	w.waitRoles(t, alice, worldRoleLinked, worldRoleTier1, worldRoleSub)

	// A tier change swaps the tier role.
	resub := w.twitch.Resub(twitchID(1), "alice", "2000", 3, 3, 1)
	w.send(t, resub, 204)
	w.waitRoles(t, alice, worldRoleLinked, worldRoleTier2, worldRoleSub)

	// A duplicate delivery has one effect.
	w.send(t, resub, 204)
	gift := w.twitch.Subscribe(twitchID(2), "bob", "3000", true)
	w.send(t, gift, 204)
	w.send(t, gift, 204)
	w.waitRoles(t, bob, worldRoleLinked, worldRoleTier3, worldRoleSub)
	if n := w.roleWrites("PUT", bob, worldRoleTier3); n != 1 {
		t.Fatalf("tier 3 added %d times, want once", n)
	}
	if n := w.roleWrites("PUT", alice, worldRoleTier2); n != 1 {
		t.Fatalf("tier 2 added %d times, want once", n)
	}

	// The end removes the subscriber roles but keeps the linked role.
	w.send(t, w.twitch.End(twitchID(1), "alice", "2000", false), 204)
	w.waitRoles(t, alice, worldRoleLinked)

	// Forged and stale requests change nothing.
	forged := w.twitch.Subscribe(twitchID(1), "alice", "3000", false)
	forged.Secret = "wrong-secret-wrong"
	forged.Sign()
	w.send(t, forged, 403)
	stale := w.twitch.Subscribe(twitchID(1), "alice", "3000", false)
	stale.Timestamp = time.Now().Add(-11 * time.Minute).UTC().Format(twitchtest.TimeLayout)
	stale.Sign()
	w.send(t, stale, 403)
	time.Sleep(100 * time.Millisecond)
	w.waitRoles(t, alice, worldRoleLinked)

	// Every role write carried an audit log reason.
	for _, c := range w.discord.Calls() {
		if (c.Method == "PUT" || c.Method == "DELETE") && strings.Contains(c.Path, "/roles/") && !strings.HasPrefix(c.AuditLogReason(), "subrole:") {
			t.Fatalf("%s %s without an audit reason: %q", c.Method, c.Path, c.AuditLogReason())
		}
	}
}

func TestEndToEndDiscordOutage(t *testing.T) {
	w := newTestWorld(t)
	w.linkMembers(t, 1)
	w.start(t)
	w.discord.SetOutage(discordtest.Outage500)
	w.send(t, w.twitch.Subscribe(twitchID(1), "alice", "3000", false), 204)
	if _, err := w.discord.WaitForCall(ctxTimeout(t, 5*time.Second), func(c discordtest.Call) bool { return c.Status == 500 }); err != nil {
		t.Fatal("the applier never tried during the outage")
	}
	time.Sleep(300 * time.Millisecond)
	w.discord.Heal()
	w.waitRoles(t, discordID(1), worldRoleLinked, worldRoleTier3, worldRoleSub)
	if n := w.roleWrites("PUT", discordID(1), worldRoleTier3); n != 1 {
		t.Fatalf("tier 3 written %d times, want 1", n)
	}
}

// TestEndToEndStopBeforeRoleCall stops the service after Twitch got its 2xx
// but before the role call could be made; the next start applies it once.
func TestEndToEndStopBeforeRoleCall(t *testing.T) {
	w := newTestWorld(t)
	w.linkMembers(t, 1)
	in := w.start(t)
	w.discord.SetOutage(discordtest.Outage500)
	w.send(t, w.twitch.Subscribe(twitchID(1), "alice", "1000", false), 204)
	in.stop(t)
	w.discord.Heal()
	if n := w.roleWrites("PUT", discordID(1), worldRoleTier1); n != 0 {
		t.Fatalf("role written during the outage: %d", n)
	}
	w.start(t)
	w.waitRoles(t, discordID(1), worldRoleLinked, worldRoleTier1, worldRoleSub)
	time.Sleep(100 * time.Millisecond)
	if n := w.roleWrites("PUT", discordID(1), worldRoleTier1); n != 1 {
		t.Fatalf("tier 1 written %d times, want exactly 1", n)
	}
}

// TestEndToEndKilled SIGKILLs a subprocess after the 2xx and before the role
// call, restarts it, and checks the role change is applied exactly once.
func TestEndToEndKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	w := newTestWorld(t)
	w.linkMembers(t, 3)
	startChild := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "SUBROLE_TEST_AS_MAIN=1")
		for k, v := range w.env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		var logs syncBuffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
			}
		})
		w.waitHealthy(t, exited)
		return cmd
	}
	child := startChild()
	w.discord.SetOutage(discordtest.Outage500)
	for i := 1; i <= 3; i++ {
		w.send(t, w.twitch.Subscribe(twitchID(i), "viewer", "2000", false), 204)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	for i := 1; i <= 3; i++ {
		if n := w.roleWrites("PUT", discordID(i), worldRoleTier2); n != 0 {
			t.Fatalf("role written during the outage: %d", n)
		}
	}
	w.discord.Heal()
	startChild()
	for i := 1; i <= 3; i++ {
		w.waitRoles(t, discordID(i), worldRoleLinked, worldRoleTier2, worldRoleSub)
	}
	time.Sleep(100 * time.Millisecond)
	for i := 1; i <= 3; i++ {
		if n := w.roleWrites("PUT", discordID(i), worldRoleTier2); n != 1 {
			t.Fatalf("member %d: tier 2 written %d times, want exactly 1", i, n)
		}
	}
}

func TestConfigErrorsStopStart(t *testing.T) {
	w := newTestWorld(t)
	w.env["SUBROLE_EVENTSUB_SECRET"] = "short"
	w.env["SUBROLE_ROLE_TIER2"] = "tier-two"
	w.env["SUBROLE_DISCORD_TOKEN"] = ""
	var out syncBuffer
	err := run(context.Background(), []string{"subrole"}, w.getenv, &out, &out)
	if err == nil {
		t.Fatal("started with a bad configuration")
	}
	for _, want := range []string{"SUBROLE_EVENTSUB_SECRET: must be 10-100 characters", "SUBROLE_ROLE_TIER2: must be a Discord ID", "SUBROLE_DISCORD_TOKEN: is required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "short") {
		t.Error("error shows the secret")
	}
	if len(w.discord.Calls()) != 0 {
		t.Error("contacted Discord before the configuration was valid")
	}
}

func TestBadDiscordTokenStopsStart(t *testing.T) {
	w := newTestWorld(t)
	w.env["SUBROLE_DISCORD_TOKEN"] = "revoked-token"
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(context.Background(), []string{"subrole"}, w.getenv, &out, &out) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "SUBROLE_DISCORD_TOKEN") || strings.Contains(err.Error(), "revoked-token") {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a bad token did not stop the start (endless reconnect?)")
	}
	if w.discord.Connected() != 0 {
		t.Fatal("opened the gateway with a bad token")
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestDemo runs the README's first command: the story must complete and
// exit 0, with every step's role changes printed.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo takes a few seconds")
	}
	var out, errs syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, []string{"subrole", "demo", "-outage", "300ms"}, func(string) string { return "" }, &out, &errs); err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errs.String())
	}
	for _, want := range []string{
		"alice     +Tier 1 +Subscriber",
		"alice     +Tier 3 -Tier 1",
		"viewer12  +Tier 1 +Subscriber",
		"bob       -Tier 2 -Subscriber",
		"acknowledged (204) as a duplicate: nothing stored, no role change",
		"rejected with 403: nothing stored, no role change",
		"carol     +Tier 2 +Subscriber",
		"summary:",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
