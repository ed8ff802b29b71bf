package discordtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/subrole/subrole/discord/discordtest"
)

const token = "fake-bot-token"

func newFake(t *testing.T, opts discordtest.Options) *discordtest.Server {
	t.Helper()
	if opts.Token == "" {
		opts.Token = token
	}
	opts.Logf = t.Logf
	srv := discordtest.NewServer(opts)
	t.Cleanup(srv.Close)
	return srv
}

// newSession returns a real discordgo session pointed at the fake. It is
// closed before the fake (cleanups run last-in first-out).
func newSession(t *testing.T, srv *discordtest.Server, tok string) *discordgo.Session {
	t.Helper()
	s, err := discordgo.New("Bot " + tok)
	if err != nil {
		t.Fatal(err)
	}
	s.Client = srv.Client()
	s.ShouldRetryOnRateLimit = false
	s.LogLevel = -1 // discordgo logs through the log package by default
	return s
}

func openSession(t *testing.T, s *discordgo.Session) {
	t.Helper()
	if err := s.Open(); err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		// Close alone can race with the heartbeat goroutine of a fresh
		// connection, which then starts an endless reconnect loop.
		s.Lock()
		s.ShouldReconnectOnError = false
		s.Unlock()
		s.Close()
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

// restCode returns the HTTP status and Discord error code of a REST error.
func restCode(t *testing.T, err error) (int, int) {
	t.Helper()
	var re *discordgo.RESTError
	if !errors.As(err, &re) {
		t.Fatalf("want *discordgo.RESTError, got %T %v", err, err)
	}
	if re.Message == nil {
		t.Fatalf("RESTError without message: %s", re.ResponseBody)
	}
	return re.Response.StatusCode, re.Message.Code
}

func TestUserMeAndAuth(t *testing.T) {
	t.Parallel()
	srv := newFake(t, discordtest.Options{})
	u, err := newSession(t, srv, token).User("@me")
	if err != nil {
		t.Fatal(err)
	}
	if u.ID != srv.BotUserID || !u.Bot || u.Discriminator != "0" {
		t.Errorf("unexpected bot user %+v", u)
	}
	_, err = newSession(t, srv, "wrong").User("@me")
	if status, code := restCode(t, err); status != 401 || code != 0 {
		t.Errorf("bad token: got %d/%d, want 401/0", status, code)
	}
	if got := srv.Calls(); len(got) != 2 || got[1].Status != 401 || got[0].Header.Get("Authorization") != "Bot "+token {
		t.Errorf("calls not recorded as expected: %+v", got)
	}
}

func TestRawRoutes(t *testing.T) {
	t.Parallel()
	srv := newFake(t, discordtest.Options{})
	do := func(method, url string) (int, string) {
		req, _ := http.NewRequest(method, url, nil)
		req.Header.Set("Authorization", "Bot "+token)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := do("GET", "https://discord.com/api/v9/nope"); st != 404 || body != `{"message":"404: Not Found","code":0}` {
		t.Errorf("unknown route: %d %s", st, body)
	}
	if st, _ := do("POST", srv.URL+"/api/v9/users/@me"); st != 405 {
		t.Errorf("wrong method: %d", st)
	}
	st, body := do("GET", srv.URL+"/api/v9/gateway/bot")
	if st != 200 || !strings.Contains(body, `"url":"ws://127.0.0.1:`) || !strings.Contains(body, `"shards":1`) {
		t.Errorf("gateway/bot: %d %s", st, body)
	}
	if _, err := srv.Client().Get("https://example.com/"); err == nil {
		t.Error("client must refuse hosts other than discord.com")
	}
}

func TestMemberRoles(t *testing.T) {
	t.Parallel()
	srv := newFake(t, discordtest.Options{})
	srv.AddRole("500", "Tier 1", 1)
	srv.AddRole("501", "Mods", 9)
	srv.SetUnmanageable("501")
	srv.AddMember("9", "nine")
	srv.AddMember("10", "ten", "500")
	srv.AddMember("100", "hundred")
	dg := newSession(t, srv, token)
	g := srv.GuildID

	m, err := dg.GuildMember(g, "10")
	if err != nil || m.User.Username != "ten" || !slices.Equal(m.Roles, []string{"500"}) || m.JoinedAt.IsZero() {
		t.Fatalf("GuildMember: %+v %v", m, err)
	}
	if err := dg.GuildMemberRoleAdd(g, "9", "500", discordgo.WithAuditLogReason("twitch sub tier 1")); err != nil {
		t.Fatal(err)
	}
	if roles, _ := srv.MemberRoles("9"); !slices.Equal(roles, []string{"500"}) {
		t.Errorf("roles after add: %v", roles)
	}
	calls := srv.CallsMatching("PUT", "/guilds/"+g+"/members/9/roles/500")
	if len(calls) != 1 || calls[0].Status != 204 || calls[0].AuditLogReason() != "twitch sub tier 1" {
		t.Errorf("role add call: %+v", calls)
	}
	if err := dg.GuildMemberRoleRemove(g, "10", "500", discordgo.WithAuditLogReason("sub expired")); err != nil {
		t.Fatal(err)
	}
	if roles, _ := srv.MemberRoles("10"); len(roles) != 0 {
		t.Errorf("roles after remove: %v", roles)
	}

	for _, tc := range []struct {
		name         string
		err          error
		status, code int
	}{
		{"unknown member", dg.GuildMemberRoleAdd(g, "404", "500"), 404, 10007},
		{"unknown role", dg.GuildMemberRoleAdd(g, "9", "404"), 404, 10011},
		{"unmanageable", dg.GuildMemberRoleAdd(g, "9", "501"), 403, 50013},
		{"unknown guild", dg.GuildMemberRoleAdd("1", "9", "500"), 404, 10004},
		{"get unknown member", func() error { _, err := dg.GuildMember(g, "404"); return err }(), 404, 10007},
	} {
		if status, code := restCode(t, tc.err); status != tc.status || code != tc.code {
			t.Errorf("%s: got %d/%d, want %d/%d", tc.name, status, code, tc.status, tc.code)
		}
	}

	roles := []string{"500"}
	if m, err := dg.GuildMemberEdit(g, "100", &discordgo.GuildMemberParams{Roles: &roles}); err != nil || !slices.Equal(m.Roles, roles) {
		t.Errorf("GuildMemberEdit: %+v %v", m, err)
	}
	bad := []string{"501"}
	if _, err := dg.GuildMemberEdit(g, "100", &discordgo.GuildMemberParams{Roles: &bad}); err == nil {
		t.Error("PATCH with an unmanageable role must fail")
	}

	page, err := dg.GuildMembers(g, "9", 2)
	if err != nil || len(page) != 2 || page[0].User.ID != "10" || page[1].User.ID != "100" {
		t.Errorf("GuildMembers after 9: %v", err)
	}
	all, _ := dg.GuildMembers(g, "", 1000)
	if len(all) != 4 || all[3].User.ID != srv.BotUserID || !all[3].User.Bot {
		t.Errorf("GuildMembers: want 3 users and the bot, got %d", len(all))
	}
	if gl, err := dg.Guild(g); err != nil || len(gl.Roles) != 3 {
		t.Errorf("Guild: %v %v", gl, err)
	}
}

func TestDirectMessages(t *testing.T) {
	t.Parallel()
	srv := newFake(t, discordtest.Options{})
	dg := newSession(t, srv, token)
	ch, err := dg.UserChannelCreate("42")
	if err != nil || ch.Type != discordgo.ChannelTypeDM {
		t.Fatalf("UserChannelCreate: %+v %v", ch, err)
	}
	if again, _ := dg.UserChannelCreate("42"); again.ID != ch.ID {
		t.Error("DM channel id must be stable per user")
	}
	msg, err := dg.ChannelMessageSend(ch.ID, "your sub is linked")
	if err != nil || msg.Content != "your sub is linked" || msg.ChannelID != ch.ID {
		t.Fatalf("ChannelMessageSend: %+v %v", msg, err)
	}
	if got := srv.Messages(); len(got) != 1 || got[0].RecipientID != "42" || got[0].Kind != discordtest.KindChannel {
		t.Errorf("messages: %+v", got)
	}
	srv.SetDMClosed("42", true)
	_, err = dg.ChannelMessageSend(ch.ID, "hello?")
	if status, code := restCode(t, err); status != 403 || code != 50007 {
		t.Errorf("closed DMs: got %d/%d", status, code)
	}
	_, err = dg.ChannelMessageSend(ch.ID, "")
	if _, code := restCode(t, err); code != 50006 {
		t.Errorf("empty message: got code %d", code)
	}
}

func TestCommandsAndInteractionResponses(t *testing.T) {
	t.Parallel()
	srv := newFake(t, discordtest.Options{})
	dg := newSession(t, srv, token)
	cmds, err := dg.ApplicationCommandBulkOverwrite(srv.ApplicationID, srv.GuildID, []*discordgo.ApplicationCommand{
		{Name: "link", Description: "Link your Twitch account"},
		{Name: "status", Description: "Show your subscription"},
	})
	if err != nil || len(cmds) != 2 || cmds[0].ID == "" || cmds[0].ApplicationID != srv.ApplicationID {
		t.Fatalf("bulk overwrite: %+v %v", cmds, err)
	}
	again, _ := dg.ApplicationCommandBulkOverwrite(srv.ApplicationID, srv.GuildID, []*discordgo.ApplicationCommand{{Name: "link", Description: "Link"}})
	if len(again) != 1 || again[0].ID != cmds[0].ID {
		t.Error("overwriting must keep the id of a command with the same name")
	}
	if list, err := dg.ApplicationCommands(srv.ApplicationID, srv.GuildID); err != nil || len(list) != 1 || len(srv.Commands(srv.GuildID)) != 1 {
		t.Errorf("ApplicationCommands: %v %v", list, err)
	}
	_, err = dg.ApplicationCommandBulkOverwrite(srv.ApplicationID, srv.GuildID, []*discordgo.ApplicationCommand{{Name: "Bad Name", Description: "x"}})
	if status, code := restCode(t, err); status != 400 || code != 50035 {
		t.Errorf("invalid name: %d/%d", status, code)
	}

	// Without a gateway client the interaction is still registered.
	in, err := srv.SlashCommand("7", "link")
	if !errors.Is(err, discordtest.ErrNoSession) {
		t.Errorf("SlashCommand without a session: %v", err)
	}
	di := &discordgo.Interaction{ID: in.ID, Token: in.Token, AppID: srv.ApplicationID}
	err = dg.InteractionRespond(di, &discordgo.InteractionResponse{Type: discordgo.InteractionResponseDeferredChannelMessageWithSource,
		Data: &discordgo.InteractionResponseData{Flags: discordgo.MessageFlagsEphemeral}})
	if err != nil {
		t.Fatal(err)
	}
	err = dg.InteractionRespond(di, &discordgo.InteractionResponse{Type: discordgo.InteractionResponseDeferredChannelMessageWithSource})
	if _, code := restCode(t, err); code != 40060 {
		t.Errorf("second ack: code %d", code)
	}
	content := "linked!"
	if m, err := dg.InteractionResponseEdit(di, &discordgo.WebhookEdit{Content: &content}); err != nil || m.Content != content {
		t.Fatalf("edit original: %+v %v", m, err)
	}
	if m, err := dg.FollowupMessageCreate(di, true, &discordgo.WebhookParams{Content: "more", Flags: discordgo.MessageFlagsEphemeral}); err != nil || m.Content != "more" {
		t.Fatalf("followup: %+v %v", m, err)
	}
	edit, err := srv.WaitForMessage(ctx(t), func(m discordtest.Message) bool {
		return m.Token == in.Token && m.Kind == discordtest.KindOriginal
	})
	if err != nil || edit.Content != content {
		t.Errorf("recorded edit: %+v %v", edit, err)
	}
	kinds := []discordtest.MessageKind{}
	for _, m := range srv.Messages() {
		kinds = append(kinds, m.Kind)
	}
	if want := []discordtest.MessageKind{discordtest.KindCallback, discordtest.KindOriginal, discordtest.KindFollowup}; !slices.Equal(kinds, want) {
		t.Errorf("kinds %v, want %v", kinds, want)
	}
	if first := srv.Messages()[0]; first.Type != 5 || !first.Ephemeral() {
		t.Errorf("deferred ack recorded as %+v", first)
	}
	_, err = dg.InteractionResponseEdit(&discordgo.Interaction{AppID: srv.ApplicationID, Token: "nope"}, &discordgo.WebhookEdit{Content: &content})
	if status, code := restCode(t, err); status != 404 || code != 10015 {
		t.Errorf("unknown token: %d/%d", status, code)
	}
}

func TestRateLimitHeadersPaceDiscordgo(t *testing.T) {
	t.Parallel()
	window := 400 * time.Millisecond
	srv := newFake(t, discordtest.Options{RateLimit: discordtest.RateLimit{Requests: 3, Window: window}})
	srv.AddMember("9", "nine")
	dg := newSession(t, srv, token)
	for i := 0; i < 4; i++ {
		if _, err := dg.GuildMember(srv.GuildID, "9"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if srv.RateLimited() != 0 {
		t.Fatalf("discordgo was rate limited %d times; the headers should have paced it", srv.RateLimited())
	}
	if calls := srv.Calls(); calls[3].Time.Sub(calls[0].Time) < window {
		t.Errorf("4th request came %v after the 1st, before the %v window reset", calls[3].Time.Sub(calls[0].Time), window)
	}

	req, _ := http.NewRequest("GET", srv.URL+"/api/v9/users/@me", nil)
	req.Header.Set("Authorization", "Bot "+token)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for k, want := range map[string]string{"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "2", "X-RateLimit-Reset-After": "0.40",
		"X-RateLimit-Reset": ".", "X-RateLimit-Bucket": ""} {
		if got := resp.Header.Get(k); got == "" || !strings.Contains(got, want) {
			t.Errorf("%s = %q, want it to contain %q", k, got, want)
		}
	}

	// Fresh sessions know nothing of the bucket: the fake answers 429.
	srv.AddRole("500", "Tier 1", 1)
	var rlErr *discordgo.RateLimitError
	for i := 0; i < 20 && !errors.As(err, &rlErr); i++ {
		err = newSession(t, srv, token).GuildMemberRoleAdd(srv.GuildID, "9", "500")
	}
	if rlErr == nil || rlErr.RetryAfter <= 0 || rlErr.RetryAfter > window+10*time.Millisecond {
		t.Fatalf("want RateLimitError with retry_after within the window, got %v", err)
	}
	if srv.RateLimited() != 1 {
		t.Errorf("RateLimited() = %d, want 1", srv.RateLimited())
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	srv := newFake(t, discordtest.Options{RetryAfter: 50 * time.Millisecond})
	dg := newSession(t, srv, token)
	me := func() error { _, err := dg.User("@me"); return err }

	srv.FailNext(1, 429)
	var rlErr *discordgo.RateLimitError
	if err := me(); !errors.As(err, &rlErr) || rlErr.RetryAfter < 50*time.Millisecond {
		t.Errorf("FailNext 429: %v", err)
	}
	if err := me(); err != nil {
		t.Errorf("after FailNext: %v", err)
	}
	srv.FailNext(2, 500)
	if status, _ := restCode(t, me()); status != 500 {
		t.Errorf("FailNext 500: %d", status)
	}
	srv.Heal()
	if err := me(); err != nil {
		t.Errorf("Heal must cancel FailNext: %v", err)
	}
	srv.FailNext(1, 502) // discordgo retries 502s by itself
	if err := me(); err != nil {
		t.Errorf("502 should be retried by discordgo: %v", err)
	}

	srv.SetOutage(discordtest.Outage500)
	if status, _ := restCode(t, me()); status != 500 {
		t.Errorf("Outage500: %d", status)
	}
	srv.SetOutage(discordtest.Outage429)
	if err := me(); !errors.As(err, &rlErr) {
		t.Errorf("Outage429: %v", err)
	}
	srv.SetOutage(discordtest.OutageDrop)
	var re *discordgo.RESTError
	if err := dg.GuildMemberRoleAdd(srv.GuildID, "1", "2"); err == nil || errors.As(err, &re) {
		t.Errorf("OutageDrop: want a transport error, got %v", err)
	}
	srv.SetOutage(discordtest.Outage500, "/guilds/")
	if err := me(); err != nil {
		t.Errorf("outage limited to /guilds/ hit /users/@me: %v", err)
	}
	if _, err := dg.GuildRoles(srv.GuildID); err == nil {
		t.Error("outage on /guilds/ did not fail GuildRoles")
	}
	srv.Heal()
	if _, err := dg.GuildRoles(srv.GuildID); err != nil {
		t.Errorf("after Heal: %v", err)
	}
	if n := len(srv.CallsMatching("PUT", "/guilds/")); n != 1 || srv.CallsMatching("PUT", "/guilds/")[0].Status != 0 {
		t.Errorf("dropped call must be recorded with status 0")
	}
}

func TestWaitForCall(t *testing.T) {
	t.Parallel()
	srv := newFake(t, discordtest.Options{})
	dg := newSession(t, srv, token)
	dg.User("@me")
	// Already recorded calls are found.
	if _, err := srv.WaitForCall(ctx(t), func(c discordtest.Call) bool { return c.Path == "/api/v9/users/@me" }); err != nil {
		t.Fatal(err)
	}
	mark := srv.Mark()
	done := make(chan discordtest.Call, 1)
	go func() {
		c, err := srv.WaitForCall(ctx(t), func(c discordtest.Call) bool { return c.Seq >= mark && c.Route == "/gateway" })
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	dg.User("@me")
	dg.Gateway()
	if c := <-done; c.Seq != mark+1 || c.Status != 200 {
		t.Errorf("got %+v", c)
	}
	srv.ResetCalls()
	if len(srv.Calls()) != 0 || srv.Mark() != mark+2 {
		t.Error("ResetCalls must clear calls and keep numbering")
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := srv.WaitForCall(short, func(discordtest.Call) bool { return true }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("want deadline error, got %v", err)
	}
}

func TestGatewayReadyHeartbeatInteraction(t *testing.T) {
	t.Parallel()
	srv := newFake(t, discordtest.Options{HeartbeatInterval: 100 * time.Millisecond})
	srv.AddRole("500", "Tier 1", 1)
	srv.AddMember("7", "viewer", "500")
	dg := newSession(t, srv, token)
	dg.Identify.Intents = discordgo.IntentsGuilds | discordgo.IntentsGuildMembers
	got := make(chan *discordgo.Interaction, 1)
	dg.AddHandler(func(s *discordgo.Session, i *discordgo.InteractionCreate) {
		got <- i.Interaction
		s.InteractionRespond(i.Interaction, &discordgo.InteractionResponse{
			Type: discordgo.InteractionResponseChannelMessageWithSource,
			Data: &discordgo.InteractionResponseData{Content: "you are linked", Flags: discordgo.MessageFlagsEphemeral},
		})
	})
	joined := make(chan *discordgo.GuildMemberAdd, 1)
	dg.AddHandler(func(_ *discordgo.Session, m *discordgo.GuildMemberAdd) { joined <- m })
	opened := time.Now().UTC()
	openSession(t, dg)

	dg.State.RLock()
	user := dg.State.User
	dg.State.RUnlock()
	if user == nil || user.ID != srv.BotUserID {
		t.Fatalf("READY did not set State.User: %+v", user)
	}
	id, err := srv.WaitForIdentify(ctx(t))
	if err != nil || id.Intents != int64(dg.Identify.Intents) {
		t.Errorf("identify: %+v %v", id, err)
	}
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		dg.RLock()
		acked := dg.LastHeartbeatAck.After(opened)
		dg.RUnlock()
		if acked && srv.Heartbeats() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat ACK received")
		}
	}
	if srv.Connected() != 1 {
		t.Errorf("Connected() = %d", srv.Connected())
	}

	in, err := srv.SlashCommand("7", "link", discordtest.StringOption("twitch", "somebody"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case i := <-got:
		data := i.ApplicationCommandData()
		if i.ID != in.ID || i.GuildID != srv.GuildID || i.Member == nil || i.Member.User.ID != "7" ||
			!slices.Equal(i.Member.Roles, []string{"500"}) || data.Name != "link" || data.Options[0].StringValue() != "somebody" {
			t.Errorf("interaction payload: %+v %+v", i, data)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("INTERACTION_CREATE not received")
	}
	resp, err := srv.WaitForMessage(ctx(t), func(m discordtest.Message) bool { return m.Token == in.Token })
	if err != nil || resp.Kind != discordtest.KindCallback || resp.Type != 4 || !resp.Ephemeral() || resp.Content != "you are linked" {
		t.Errorf("response: %+v %v", resp, err)
	}

	if err := srv.MemberJoin("8", "newbie"); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-joined:
		if m.User.ID != "8" || m.GuildID != srv.GuildID {
			t.Errorf("GUILD_MEMBER_ADD: %+v", m.Member)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("GUILD_MEMBER_ADD not received")
	}
}

func TestGatewayBadToken(t *testing.T) {
	t.Parallel()
	srv := newFake(t, discordtest.Options{})
	dg := newSession(t, srv, token) // REST works, the IDENTIFY token is wrong
	dg.Identify.Token = "Bot wrong"
	dg.ShouldReconnectOnError = false
	if err := dg.Open(); err == nil || !strings.Contains(err.Error(), "4004") {
		t.Fatalf("want close 4004 Authentication failed, got %v", err)
	}
}

func TestGatewayResume(t *testing.T) {
	t.Parallel()
	srv := newFake(t, discordtest.Options{})
	dg := newSession(t, srv, token)
	got := make(chan string, 4)
	dg.AddHandler(func(_ *discordgo.Session, i *discordgo.InteractionCreate) { got <- i.ID })
	guildCreated := make(chan bool, 1)
	dg.AddHandlerOnce(func(*discordgo.Session, *discordgo.GuildCreate) { guildCreated <- true })
	openSession(t, dg)
	select { // discordgo stores the sequence of GUILD_CREATE (2) before calling handlers
	case <-guildCreated:
	case <-time.After(3 * time.Second):
		t.Fatal("GUILD_CREATE not received")
	}

	if n := srv.DropGateway(); n != 1 {
		t.Fatalf("DropGateway closed %d connections", n)
	}
	// Dispatched while disconnected: must be replayed on RESUME.
	in, err := srv.SlashCommand("7", "status")
	if err != nil {
		t.Fatal(err)
	}
	op, err := srv.WaitForGatewayOp(ctx(t), discordtest.OpResume)
	if err != nil {
		t.Fatal(err)
	}
	var resume struct {
		SessionID string `json:"session_id"`
		Seq       int64  `json:"seq"`
	}
	json.Unmarshal(op.Data, &resume)
	if resume.Seq != 2 || resume.SessionID == "" {
		t.Errorf("resume payload %s", op.Data)
	}
	select {
	case id := <-got:
		if id != in.ID {
			t.Errorf("replayed interaction %s, want %s", id, in.ID)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("buffered INTERACTION_CREATE not replayed after resume")
	}
	// The replay above is the proof of a resumed session: a new one would
	// not have had the buffered dispatch. (Counting IDENTIFYs afterwards
	// would race discordgo, which may reconnect again under load.)
}
