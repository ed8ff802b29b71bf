package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord"
	"github.com/subrole/subrole/discord/discordtest"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// demo plays a short story against the fakes with the real service wiring
// and prints every role change as it happens.
func demo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keep := fs.Bool("keep", false, "keep the service and fakes running after the story (until Ctrl-C)")
	verbose := fs.Bool("v", false, "show the service's logs")
	outage := fs.Duration("outage", 2*time.Second, "how long the simulated Discord outage lasts")
	if err := fs.Parse(args); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "subrole-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	w := newWorld(filepath.Join(dir, "subrole.db"))
	defer w.close()

	level := slog.LevelError
	if *verbose {
		level = slog.LevelDebug
	}
	w.env["SUBROLE_LOG_LEVEL"] = level.String()
	cfg, err := loadConfig(w.getenv)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	w.serving(ln.Addr().String())
	cfg.PublicURL.Host = ln.Addr().String()

	d := &story{w: w, out: stdout, applied: make(chan discord.Applied, 4096)}
	started := make(chan *subrole.Service, 1)
	svcCtx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() {
		served <- serve(svcCtx, cfg, newLogger(cfg, stderr), hooks{
			listener: ln,
			opened:   func(db *store.Store) { d.db = db },
			started:  func(s *subrole.Service) { started <- s },
			applied:  func(a discord.Applied) { d.applied <- a },
		})
	}()
	select {
	case d.svc = <-started:
	case err := <-served:
		return fmt.Errorf("demo: the service did not start: %w", err)
	}

	fmt.Fprintf(stdout, "subrole demo: fake Twitch and fake Discord on loopback, the real service in between.\n")
	fmt.Fprintf(stdout, "service  http://%s   fake Discord %s   database %s\n", ln.Addr(), w.discord.URL, cfg.Data)
	if err := d.play(ctx, *outage); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	d.summary()
	if *keep {
		w.twitchAPI.SetAuthorizingUser(w.twitchAPI.BroadcasterID()) // the fake Twitch signs the browser in as the streamer
		fmt.Fprintf(stdout, "\nstill running (-keep): POST signed events to http://%s/twitch_eventsub; Ctrl-C stops.\n", ln.Addr())
		fmt.Fprintf(stdout, "live dashboard: http://%s/dashboard (the fake Twitch signs you in as the broadcaster)\n", ln.Addr())
		<-ctx.Done()
	}
	stop()
	if err := <-served; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// story is the demo's state.
type story struct {
	w       *world
	svc     *subrole.Service
	db      *store.Store // to show that refused or repeated messages stored nothing
	out     io.Writer
	applied chan discord.Applied

	sent, acked, duplicates, rejected int
	changes                           int
	latencies                         []time.Duration
}

// viewer is one member of the story.
type viewer struct {
	n           int
	name, login string
}

func (v viewer) discordID() string { return discordID(v.n) }
func (v viewer) twitchID() string  { return twitchID(v.n) }

func (d *story) play(ctx context.Context, outage time.Duration) error {
	alice, bob, carol := viewer{1, "alice", "alice_tv"}, viewer{2, "bob", "bobbers"}, viewer{3, "carol", "carol"}
	cast := []viewer{alice, bob, carol}
	var recipients []viewer
	for i := range 12 {
		v := viewer{100 + i, fmt.Sprintf("viewer%02d", i+1), fmt.Sprintf("viewer%02d", i+1)}
		recipients = append(recipients, v)
	}
	for _, v := range append(slices.Clone(cast), recipients...) {
		d.w.addMember(v.discordID(), v.name)
	}
	tw := d.w.twitch

	d.step("the streamer connects the channel once (GET /broadcaster/connect → Twitch → /twitch_callback)")
	p, err := d.w.connectBroadcaster(ctx)
	if err != nil {
		return err
	}
	if p.Status != 200 {
		return fmt.Errorf("broadcaster connect: status %d", p.Status)
	}
	if r, err := browse(ctx, d.w.env["SUBROLE_PUBLIC_URL"]+"/readyz", ""); err != nil || strings.Contains(r.Body, "warning") {
		return fmt.Errorf("/readyz after connecting: %v %q", err, r.Body)
	}
	d.say("connected: the refresh token is in bbolt, /readyz no longer warns")

	d.step("%d members run /link in Discord, press the button, confirm on Discord and approve on Twitch", len(cast)+len(recipients))
	var aliceCallback string
	for i, v := range append(slices.Clone(cast), recipients...) {
		d.w.twitchAPI.AddUser(v.twitchID(), v.login)
		p, err := d.w.linkThroughBrowser(ctx, v.discordID(), v.twitchID(), "en")
		if err != nil {
			return fmt.Errorf("%s's /link: %w", v.name, err)
		}
		if p.Status != 200 {
			return fmt.Errorf("%s's /link: the callback answered %d", v.name, p.Status)
		}
		if i == 0 {
			aliceCallback = p.URL
			d.say("/link → ephemeral button → /link/start (browser cookie) → Discord authorize → /discord_callback (it is %s) → Twitch authorize → /twitch_callback → \"Linked\" page (%s, not subscribed)", v.name, v.login)
		}
	}
	if err := d.expect(len(cast)+len(recipients), -1); err != nil {
		return err
	}
	d.step("someone opens alice's callback URL again (a replay of her code and state)")
	p, err = browse(ctx, aliceCallback, "en")
	if err != nil {
		return err
	}
	if p.Status != 400 {
		return fmt.Errorf("replayed callback: status %d, want 400", p.Status)
	}
	d.say("refused with 400 (state already used); nothing changed")

	d.step("mallory runs /link and sends alice the button (\"click to get your sub role\"); alice opens it, signed in to Discord as herself")
	mallory := viewer{n: 4, name: "mallory"}
	d.w.addMember(mallory.discordID(), mallory.name)
	button, err := d.w.slashLink(ctx, mallory.discordID())
	if err != nil {
		return err
	}
	p, err = d.w.openButton(ctx, button, alice.discordID(), alice.twitchID(), "en")
	if err != nil {
		return err
	}
	if p.Status != 403 || !strings.Contains(p.Body, "made for another Discord account") {
		return fmt.Errorf("forwarded /link button: status %d, want 403", p.Status)
	}
	if err := d.expectNothing(300 * time.Millisecond); err != nil {
		return err
	}
	if roles, _ := d.w.discord.MemberRoles(mallory.discordID()); len(roles) != 0 {
		return fmt.Errorf("mallory got roles %v", roles)
	}
	d.say("refused with 403 at /discord_callback (Discord says alice, the button is mallory's); the state is void, nothing changed, mallory has no roles")

	d.step("alice subscribes at tier 1")
	if err := d.send(ctx, tw.Subscribe(alice.twitchID(), alice.login, "1000", false), 204); err != nil {
		return err
	}
	if err := d.expect(1, -1); err != nil {
		return err
	}

	d.step("alice shares a resub message at tier 3 (months 2, streak 2)")
	resub := tw.Resub(alice.twitchID(), alice.login, "3000", 2, 2, 1)
	if err := d.send(ctx, resub, 204); err != nil {
		return err
	}
	if err := d.expect(1, -1); err != nil {
		return err
	}

	d.step("bob subscribes at tier 2, then a gift bomb: zoe gifts %d tier 1 subs", len(recipients))
	if err := d.send(ctx, tw.Subscribe(bob.twitchID(), bob.login, "2000", false), 204); err != nil {
		return err
	}
	total := len(recipients)
	if err := d.send(ctx, tw.Gift("777777", "zoe", "1000", total, &total, false), 204); err != nil {
		return err
	}
	for _, v := range recipients {
		if err := d.send(ctx, tw.Subscribe(v.twitchID(), v.login, "1000", true), 204); err != nil {
			return err
		}
	}
	if err := d.expect(1+len(recipients), -1); err != nil {
		return err
	}

	d.step("bob's subscription ends")
	if err := d.send(ctx, tw.End(bob.twitchID(), bob.login, "2000", false), 204); err != nil {
		return err
	}
	if err := d.expect(1, -1); err != nil {
		return err
	}

	d.step("Twitch delivers alice's resub message again (same message id)")
	before, err := d.stored(ctx)
	if err != nil {
		return err
	}
	if err := d.send(ctx, resub, 204); err != nil {
		return err
	}
	if err := d.expectNothing(300 * time.Millisecond); err != nil {
		return err
	}
	if err := d.unchanged(ctx, before); err != nil {
		return err
	}
	d.say("acknowledged (204) as a duplicate: nothing stored, no role change")

	d.step("someone forges an event with a bad signature")
	forged := tw.Subscribe(carol.twitchID(), carol.login, "3000", false)
	forged.Secret = "not-the-secret"
	forged.Sign()
	if before, err = d.stored(ctx); err != nil {
		return err
	}
	if err := d.send(ctx, forged, 403); err != nil {
		return err
	}
	if err := d.expectNothing(300 * time.Millisecond); err != nil {
		return err
	}
	if err := d.unchanged(ctx, before); err != nil {
		return err
	}
	d.say("rejected with 403: nothing stored, no role change")

	d.step("Discord goes down (every call answers 500) and carol subscribes at tier 2")
	d.w.discord.SetOutage(discordtest.Outage500)
	start := time.Now()
	if err := d.send(ctx, tw.Subscribe(carol.twitchID(), carol.login, "2000", false), 204); err != nil {
		return err
	}
	d.say("the event is on disk and acknowledged in %s; the role change waits in the outbox", ms(time.Since(start)))
	if err := d.expectNothing(outage); err != nil {
		return err
	}
	d.w.discord.Heal()
	d.say("Discord is back after %s", outage)
	if err := d.expect(1, -1); err != nil {
		return err
	}
	return nil
}

// step prints a story heading.
func (d *story) step(format string, args ...any) {
	fmt.Fprintf(d.out, "\n▶ "+format+"\n", args...)
}

func (d *story) say(format string, args ...any) {
	fmt.Fprintf(d.out, "  "+format+"\n", args...)
}

// send posts a signed message and checks the status.
func (d *story) send(ctx context.Context, m twitchtest.Message, want int) error {
	d.sent++
	status, _, err := d.w.twitch.Send(ctx, m)
	if err != nil {
		return err
	}
	switch {
	case status == want && status < 300:
		d.acked++
	case status == want:
		d.rejected++
	default:
		return fmt.Errorf("twitch %s %s: status %d, want %d", m.SubscriptionType, m.ID, status, want)
	}
	return nil
}

// expect waits for n members to be applied and prints them; after show lines
// it prints a count instead.
func (d *story) expect(n, show int) error {
	timeout := time.After(15 * time.Second)
	for i := range n {
		select {
		case a := <-d.applied:
			if a.Err != nil {
				return fmt.Errorf("role change for %s failed: %w", d.w.name(a.DiscordUserID), a.Err)
			}
			d.record(a)
			if show < 0 || i < show {
				d.print(a)
			} else if i == show {
				d.say("… and %d more", n-show)
			}
		case <-timeout:
			return fmt.Errorf("waited 15s for %d role changes, saw %d", n, i)
		}
	}
	return nil
}

// storedCounts is how much the service has stored: every change, event and
// role change leaves an audit entry.
type storedCounts struct{ audit int }

// stored counts what the service has stored so far.
func (d *story) stored(ctx context.Context) (storedCounts, error) {
	var c storedCounts
	err := d.db.View(ctx, func(tx subrole.Tx) error {
		a, err := tx.Audit(0, -1)
		c.audit = len(a)
		return err
	})
	return c, err
}

// unchanged fails if the service stored anything since before.
func (d *story) unchanged(ctx context.Context, before storedCounts) error {
	after, err := d.stored(ctx)
	if err != nil {
		return err
	}
	if after != before {
		return fmt.Errorf("the service stored something: %d audit entries before, %d after", before.audit, after.audit)
	}
	return nil
}

// expectNothing fails if a role change happens within wait.
func (d *story) expectNothing(wait time.Duration) error {
	select {
	case a := <-d.applied:
		return fmt.Errorf("unexpected role change for %s: %+v", d.w.name(a.DiscordUserID), a)
	case <-time.After(wait):
		return nil
	}
}

func (d *story) record(a discord.Applied) {
	if len(a.Added)+len(a.Removed) == 0 {
		return
	}
	d.changes++
	if !a.Called.IsZero() && !a.Observed.IsZero() {
		d.latencies = append(d.latencies, a.Called.Sub(a.Observed))
	}
}

func (d *story) print(a discord.Applied) {
	var parts []string
	for _, r := range a.Added {
		parts = append(parts, "+"+d.w.name(r))
	}
	for _, r := range a.Removed {
		parts = append(parts, "-"+d.w.name(r))
	}
	if len(parts) == 0 {
		parts = append(parts, "(roles already right)")
	}
	lat := ""
	if !a.Called.IsZero() {
		lat = "event→Discord " + ms(a.Called.Sub(a.Observed))
	}
	fmt.Fprintf(d.out, "  %-9s %-36s %s\n", d.w.name(a.DiscordUserID), strings.Join(parts, " "), lat)
}

func (d *story) summary() {
	fmt.Fprintf(d.out, "\nsummary: %d Twitch messages sent, %d acknowledged, %d rejected; %d role changes applied\n",
		d.sent, d.acked, d.rejected, d.changes)
	if len(d.latencies) > 0 {
		l := slices.Clone(d.latencies)
		slices.Sort(l)
		fmt.Fprintf(d.out, "event→Discord latency: p50 %s, p90 %s, max %s (the max includes the outage)\n",
			ms(l[len(l)/2]), ms(l[len(l)*9/10]), ms(l[len(l)-1]))
	}
}

func ms(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(time.Millisecond).String()
}
