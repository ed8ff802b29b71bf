package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord/discordtest"
	"github.com/subrole/subrole/store"
)

// reply waits for the answer (the edit of the deferred reply, or a direct
// ephemeral reply) to an interaction and returns its content.
func (w *world) reply(t *testing.T, in discordtest.Interaction) discordtest.Message {
	t.Helper()
	m, err := w.discord.WaitForMessage(ctxTimeout(t, 10*time.Second), func(m discordtest.Message) bool {
		return m.Token == in.Token && (m.Kind == discordtest.KindOriginal || (m.Kind == discordtest.KindCallback && m.Type == 4))
	})
	if err != nil {
		t.Fatalf("no reply to the interaction: %v", err)
	}
	return m
}

// command runs a slash command as userID and returns the reply's content.
func (w *world) command(t *testing.T, userID, name string, opts ...discordtest.CommandOption) string {
	t.Helper()
	in, err := w.discord.SlashCommand(userID, name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return w.reply(t, in).Content
}

// snapshot returns every link, subscription, role job and audit entry, to
// prove that a refused callback changed nothing.
func snapshot(t *testing.T, db *store.Store) string {
	t.Helper()
	var out []any
	err := db.View(context.Background(), func(tx subrole.Tx) error {
		if err := tx.ForEachLink(func(l subrole.Link) error { out = append(out, l); return nil }); err != nil {
			return err
		}
		if err := tx.ForEachSubscription(func(s subrole.Subscription) error { out = append(out, s); return nil }); err != nil {
			return err
		}
		jobs, err := tx.RoleJobs(0, -1)
		for _, j := range jobs {
			j.Created = time.Time{}
			out = append(out, j)
		}
		if err != nil {
			return err
		}
		audit, err := tx.Audit(0, -1)
		for _, a := range audit {
			if a.Kind != subrole.AuditRoles { // the applier finishing earlier jobs is not a change
				out = append(out, a)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// startWithStore starts the service and hands back its store.
func (w *world) startWithStore(t *testing.T) (*instance, *store.Store) {
	t.Helper()
	dbc := make(chan *store.Store, 1)
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{cancel: cancel, done: make(chan error, 1), logs: &syncBuffer{}}
	cfg, err := loadConfig(w.getenv)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		in.done <- serve(ctx, cfg, newLogger(cfg, in.logs), hooks{opened: func(s *store.Store) { dbc <- s }})
	}()
	t.Cleanup(func() { in.stop(t) })
	w.waitHealthy(t, in.done)
	return in, <-dbc
}

func TestLinkRoundTrip(t *testing.T) {
	w := newTestWorld(t)
	alice, bob := discordID(1), discordID(2)
	w.addMember(alice, "alice")
	w.addMember(bob, "bob")
	w.twitchAPI.AddUser(twitchID(1), "alice_tv")
	w.twitchAPI.AddUser(twitchID(2), "bobbers")
	w.twitchAPI.Subscribe(twitchID(1), "2000", true, "")
	in := w.start(t)
	ctx := ctxTimeout(t, 30*time.Second)

	// The commands were registered by bulk overwrite, the admin group for Manage Roles only.
	var names []string
	for _, c := range w.discord.Commands(worldGuild) {
		names = append(names, c["name"].(string))
		if c["name"] == "subrole" && c["default_member_permissions"] != "268435456" {
			t.Errorf("/subrole default_member_permissions = %v", c["default_member_permissions"])
		}
	}
	if slices.Sort(names); !slices.Equal(names, []string{"link", "status", "subrole", "unlink"}) {
		t.Fatalf("registered commands %v", names)
	}

	// The /link reply is ephemeral and its button goes to the service's own
	// /link/start, which sends the browser to Discord's authorize page.
	u, err := w.slashLink(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u, w.env["SUBROLE_PUBLIC_URL"]+"/link/start?state=") {
		t.Errorf("button URL %s is not the service's /link/start", u)
	}
	noFollow := w.browser(alice)
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noFollow.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	disc := resp.Header.Get("Location")
	for _, want := range []string{w.discord.AuthorizeURL() + "?", "response_type=code", "scope=identify", "client_id=" + w.discord.ApplicationID,
		"redirect_uri=" + url.QueryEscape(w.env["SUBROLE_PUBLIC_URL"]+"/discord_callback"), "state="} {
		if !strings.Contains(disc, want) {
			t.Errorf("Discord authorize URL %s lacks %s", disc, want)
		}
	}
	if c := resp.Cookies(); len(c) != 1 || !c[0].HttpOnly || c[0].SameSite != http.SameSiteLaxMode {
		t.Errorf("the button's cookie: %+v", c)
	}
	if defer_, _ := w.discord.WaitForMessage(ctx, func(m discordtest.Message) bool { return m.Kind == discordtest.KindCallback }); !defer_.Ephemeral() || defer_.Type != 5 {
		t.Errorf("the /link answer was not a deferred ephemeral reply: %+v", defer_)
	}

	p, err := w.linkThroughBrowser(ctx, alice, twitchID(1), "ja,en;q=0.5")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"連携しました", "alice_tv", "ティア 2（ギフト）", "Linked、Tier 2、Subscriber", "このタブは閉じてかまいません"} {
		if !strings.Contains(p.Body, want) {
			t.Errorf("result page lacks %q:\n%s", want, p.Body)
		}
	}
	if p.Status != 200 || !strings.Contains(p.Header.Get("Content-Security-Policy"), "default-src 'none'") ||
		p.Header.Get("Referrer-Policy") != "no-referrer" || strings.Contains(p.Body, "<script") {
		t.Errorf("page status %d, headers %v", p.Status, p.Header)
	}
	w.waitRoles(t, alice, worldRoleLinked, worldRoleTier2, worldRoleSub)
	if n := w.twitchAPI.ValidAccessTokens(twitchID(1)); n != 0 {
		t.Errorf("the viewer's token was kept: %d valid", n)
	}
	if n := w.discord.ValidOAuthTokens(alice); n != 0 || len(w.discord.CallsMatching("POST", "/oauth2/token")) < 2 {
		t.Errorf("Discord's OAuth: %d live tokens, token calls %d", n, len(w.discord.CallsMatching("POST", "/oauth2/token")))
	}
	dm, err := w.discord.WaitForMessage(ctx, func(m discordtest.Message) bool {
		return m.Kind == discordtest.KindChannel && m.RecipientID == alice
	})
	if err != nil || !strings.Contains(dm.Content, "alice\\_tv") || !strings.Contains(dm.Content, "Tier 2") {
		t.Errorf("summary DM %q, %v", dm.Content, err)
	}

	// Not subscribed: the linked role only, and an English page.
	w.discord.SetDMClosed(bob, true)
	p, err = w.linkThroughBrowser(ctx, bob, twitchID(2), "en-US,en;q=0.9")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Body, "not subscribed") || !strings.Contains(p.Body, "You can close this tab.") {
		t.Errorf("page:\n%s", p.Body)
	}
	w.waitRoles(t, bob, worldRoleLinked)

	// /status tells alice what she has; /link again offers to switch.
	st := w.command(t, alice, "status")
	for _, want := range []string{"alice\\_tv", "Tier 2", "Gift: yes"} {
		if !strings.Contains(st, want) {
			t.Errorf("/status lacks %q:\n%s", want, st)
		}
	}
	if again := w.command(t, alice, "link"); !strings.Contains(again, "You are linked to the Twitch account **alice\\_tv**") {
		t.Errorf("/link when linked: %q", again)
	}
	// A /link started and not finished shows as a pending relink.
	if st := w.command(t, bob, "status"); !strings.Contains(st, "Relink pending: no") {
		t.Errorf("/status of bob, whose one /link finished:\n%s", st)
	}
	if _, err := w.slashLink(ctx, bob); err != nil {
		t.Fatal(err)
	}
	if st := w.command(t, bob, "status"); !strings.Contains(st, "Relink pending: yes") {
		t.Errorf("/status after an unfinished /link:\n%s", st)
	}

	// Admin commands need Manage Roles.
	member := discordtest.CommandOption{Name: "member", Type: 6, Value: alice}
	who := discordtest.CommandOption{Name: "who", Type: 1, Options: []discordtest.CommandOption{member}}
	if got := w.command(t, bob, "subrole", who); !strings.Contains(got, "Manage Roles") {
		t.Errorf("/subrole who without permission: %q", got)
	}
	w.discord.SetPermissions(bob, 1<<28)
	if got := w.command(t, bob, "subrole", who); !strings.Contains(got, "<@"+alice+"> is linked to the Twitch account **alice\\_tv**") {
		t.Errorf("/subrole who: %q", got)
	}

	// /unlink removes the roles.
	if got := w.command(t, alice, "unlink"); !strings.Contains(got, "Unlinked") {
		t.Errorf("/unlink: %q", got)
	}
	w.waitRoles(t, alice)
	if got := w.command(t, alice, "status"); !strings.Contains(got, "not linked") {
		t.Errorf("/status after unlink: %q", got)
	}
	// In a DM the command explains itself at once.
	dmIn, err := w.discord.DMSlashCommand(alice, "link")
	if err != nil {
		t.Fatal(err)
	}
	if got := w.reply(t, dmIn); !strings.Contains(got.Content, "inside the server") || !got.Ephemeral() {
		t.Errorf("/link in a DM: %+v", got)
	}
	if strings.Contains(in.logs.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", in.logs)
	}
}

func readyz(t *testing.T, w *world) (int, string) {
	t.Helper()
	p, err := browse(context.Background(), "http://"+w.env["SUBROLE_LISTEN"]+"/readyz", "")
	if err != nil {
		t.Fatal(err)
	}
	return p.Status, p.Body
}

func TestBroadcasterConnectAndResync(t *testing.T) {
	w := newTestWorld(t)
	alice := discordID(1)
	w.addMember(alice, "alice")
	w.twitchAPI.AddUser(twitchID(1), "alice_tv")
	in := w.start(t)
	ctx := ctxTimeout(t, 30*time.Second)

	// Until the streamer connects, the service runs, warns and says so.
	if st, body := readyz(t, w); st != 200 || !strings.Contains(body, "warning: the broadcaster has not connected the channel: open "+w.env["SUBROLE_PUBLIC_URL"]+"/broadcaster/connect") {
		t.Fatalf("/readyz %d %q", st, body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(in.logs.String(), "broadcaster is not connected") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(in.logs.String(), "level=WARN") || !strings.Contains(in.logs.String(), "/broadcaster/connect") {
		t.Fatalf("no warning with the connect URL:\n%s", in.logs)
	}
	if p, err := w.linkThroughBrowser(ctx, alice, twitchID(1), ""); err != nil || p.Status != 200 {
		t.Fatalf("link while not connected: %v %d", err, p.Status)
	}
	w.waitRoles(t, alice, worldRoleLinked)
	member := discordtest.CommandOption{Name: "member", Type: 6, Value: alice}
	resync := discordtest.CommandOption{Name: "resync", Type: 1, Options: []discordtest.CommandOption{member}}
	admin := discordID(99)
	w.addMember(admin, "mod")
	w.discord.SetPermissions(admin, 1<<28)
	if got := w.command(t, admin, "subrole", resync); !strings.Contains(got, "Resync failed") || !strings.Contains(got, "broadcaster") {
		t.Fatalf("resync before connecting: %q", got)
	}

	// A wrong account is refused; the broadcaster's is stored.
	w.twitchAPI.SetAuthorizingUser(twitchID(1))
	if p, err := browse(ctx, w.env["SUBROLE_PUBLIC_URL"]+"/broadcaster/connect", ""); err != nil || p.Status != 403 {
		t.Fatalf("connect as a viewer: %v %d", err, p.Status)
	}
	p, err := w.connectBroadcaster(ctx)
	if err != nil || p.Status != 200 || !strings.Contains(p.Body, "Channel connected") {
		t.Fatalf("connect: %v %d %s", err, p.Status, p.Body)
	}
	if st, body := readyz(t, w); st != 200 || strings.Contains(body, "warning") {
		t.Fatalf("/readyz after connecting: %d %q", st, body)
	}

	// Alice subscribed without an event reaching us; an admin resync finds it.
	w.twitchAPI.Subscribe(twitchID(1), "3000", false, "")
	if got := w.command(t, admin, "subrole", resync); !strings.Contains(got, "Resynced") || !strings.Contains(got, "Tier 3") {
		t.Fatalf("resync: %q", got)
	}
	w.waitRoles(t, alice, worldRoleLinked, worldRoleTier3, worldRoleSub)
	// /subrole unlink by the admin.
	unlink := discordtest.CommandOption{Name: "unlink", Type: 1, Options: []discordtest.CommandOption{member}}
	if got := w.command(t, admin, "subrole", unlink); !strings.Contains(got, "Unlinked") {
		t.Fatalf("admin unlink: %q", got)
	}
	w.waitRoles(t, alice)
}

// TestCallbackRefusalsEndToEnd checks refusals through the real wiring:
// nothing changes in bbolt and the log says why.
func TestCallbackRefusalsEndToEnd(t *testing.T) {
	w := newTestWorld(t)
	alice, bob := discordID(1), discordID(2)
	w.addMember(alice, "alice")
	w.addMember(bob, "bob")
	w.twitchAPI.AddUser(twitchID(1), "alice_tv")
	w.env["SUBROLE_LOG_LEVEL"] = "info"
	in, db := w.startWithStore(t)
	ctx := ctxTimeout(t, 30*time.Second)
	if p, err := w.linkThroughBrowser(ctx, bob, twitchID(1), ""); err != nil || p.Status != 200 {
		t.Fatalf("bob's link: %v", err)
	}
	w.waitRoles(t, bob, worldRoleLinked)
	time.Sleep(100 * time.Millisecond) // let the applier record its audit entry
	before := snapshot(t, db)

	tok, _ := subrole.NewStateToken(subrole.PurposeLink, alice) // well formed, never issued
	forged := "http://" + w.env["SUBROLE_LISTEN"] + "/twitch_callback?code=x&state=" + tok.String()
	if p, err := browse(ctx, forged, ""); err != nil || p.Status != 400 {
		t.Fatalf("forged: %v %d", err, p.Status)
	}
	if p, err := w.linkThroughBrowser(ctx, alice, "", ""); err != nil || p.Status != 200 || !strings.Contains(p.Body, "cancelled") {
		t.Fatalf("denied: %v %d", err, p.Status)
	}
	if p, err := w.linkThroughBrowser(ctx, alice, twitchID(1), ""); err != nil || p.Status != 409 || strings.Contains(p.Body, bob) {
		t.Fatalf("linked elsewhere: %v %d", err, p.Status)
	}
	if after := snapshot(t, db); after != before {
		t.Fatalf("store changed:\n%s\n%s", before, after)
	}
	for _, want := range []string{`reason="unknown state"`, "reason=access_denied", `reason="twitch account linked elsewhere"`} {
		if !strings.Contains(in.logs.String(), want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if _, ok := w.discord.MemberRoles(alice); !ok {
		t.Fatal("alice vanished")
	}
	if roles, _ := w.discord.MemberRoles(alice); len(roles) != 0 {
		t.Fatalf("alice got roles %v", roles)
	}
}

// TestLinkForwardingRefusedEndToEnd plays the attack on /link through the
// real wiring: alice (who pays for nothing) forwards her /link button, or
// the Twitch page it leads to, to bob, a tier 3 subscriber ("click to get
// your sub role"). Bob approves, and alice must not get bob's roles; bob's
// own /link must keep working.
func TestLinkForwardingRefusedEndToEnd(t *testing.T) {
	w := newTestWorld(t)
	alice, bob := discordID(1), discordID(2)
	w.addMember(alice, "alice")
	w.addMember(bob, "bob")
	w.twitchAPI.AddUser(twitchID(2), "bob_tv")
	w.twitchAPI.Subscribe(twitchID(2), "3000", false, "")
	w.env["SUBROLE_LOG_LEVEL"] = "info"
	in, db := w.startWithStore(t)
	ctx := ctxTimeout(t, 30*time.Second)
	before := snapshot(t, db)

	// 1. Alice's button opened in bob's browser, signed in to Discord as bob.
	u, err := w.slashLink(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	authorizes := len(w.twitchAPI.CallsTo("GET", "/oauth2/authorize"))
	p, err := w.openButton(ctx, u, bob, twitchID(2), "")
	if err != nil || p.Status != 403 || !strings.Contains(p.Body, "made for another Discord account") || !strings.Contains(p.URL, "/discord_callback") {
		t.Fatalf("the forwarded button: %v %d %s\n%s", err, p.Status, p.URL, p.Body)
	}
	if n := len(w.twitchAPI.CallsTo("GET", "/oauth2/authorize")); n != authorizes {
		t.Error("bob was sent to Twitch")
	}
	// Alice cannot use the state afterwards either.
	if p, err := w.openButton(ctx, u, alice, twitchID(2), ""); err != nil || p.Status != 403 {
		t.Fatalf("alice finishing the voided state: %v %d", err, p.Status)
	}
	if after := snapshot(t, db); after != before {
		t.Fatalf("the store changed:\n%s\n%s", before, after)
	}

	// 2. Alice passes Discord herself, then forwards the Twitch page to bob.
	u, err = w.slashLink(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	alices := w.browser(alice)
	alices.CheckRedirect = func(r *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(r.URL.String(), w.twitchAPI.AuthURL()) {
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := alices.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	twitchPage := resp.Header.Get("Location")
	if !strings.HasPrefix(twitchPage, w.twitchAPI.AuthURL()+"/authorize?") || !strings.Contains(twitchPage, "force_verify=true") {
		t.Fatalf("after Discord alice's browser goes to %s", twitchPage)
	}
	p, err = w.openButton(ctx, twitchPage, bob, twitchID(2), "")
	if err != nil || p.Status != 403 || !strings.Contains(p.Body, "opened in another browser") || !strings.Contains(p.URL, "/twitch_callback") {
		t.Fatalf("the forwarded Twitch page: %v %d %s\n%s", err, p.Status, p.URL, p.Body)
	}
	if after := snapshot(t, db); after != before {
		t.Fatalf("the store changed:\n%s\n%s", before, after)
	}

	// Bob's own /link works, and alice has nothing.
	if p, err := w.linkThroughBrowser(ctx, bob, twitchID(2), ""); err != nil || p.Status != 200 {
		t.Fatalf("bob's own /link: %v %d\n%s", err, p.Status, p.Body)
	}
	w.waitRoles(t, bob, worldRoleLinked, worldRoleTier3, worldRoleSub)
	if roles, _ := w.discord.MemberRoles(alice); len(roles) != 0 {
		t.Fatalf("alice got roles %v", roles)
	}
	logs := in.logs.String()
	for _, want := range []string{`reason="signed in to Discord as another user"`, `reason="state voided after a refused attempt"`,
		`reason="state opened in another browser"`, "security_event=bad_state", "path=/discord_callback", "path=/twitch_callback"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s", want)
		}
	}
}

// TestDiscordSecretChecked: a wrong SUBROLE_DISCORD_CLIENT_SECRET stops the
// start with a message naming it, never showing it.
func TestDiscordSecretChecked(t *testing.T) {
	w := newTestWorld(t)
	w.env["SUBROLE_DISCORD_CLIENT_SECRET"] = "not-the-discord-secret"
	var out strings.Builder
	err := run(ctxTimeout(t, 20*time.Second), nil, w.getenv, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "SUBROLE_DISCORD_CLIENT_SECRET") || strings.Contains(err.Error()+out.String(), "not-the-discord-secret") {
		t.Fatalf("start with a wrong secret: %v\n%s", err, out.String())
	}
}
