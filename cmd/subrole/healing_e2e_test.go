package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord/discordtest"
	"github.com/subrole/subrole/eventsub"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// The tests of EventSub subscription management, secret rotation and the
// reconcile, through run() against the fake Twitch and fake Discord.

// withStore opens the stopped service's store and runs fn in one commit.
func (w *world) withStore(t *testing.T, fn func(tx subrole.Tx) error) {
	t.Helper()
	db, err := store.Open(w.env["SUBROLE_DATA"], store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

// withDB opens the stopped service's store for fn.
func (w *world) withDB(t *testing.T, fn func(db *store.Store)) {
	t.Helper()
	db, err := store.Open(w.env["SUBROLE_DATA"], store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fn(db)
}

// storeBroadcaster stores a broadcaster token issued by the fake Twitch, as
// if the streamer had connected before the service started.
func (w *world) storeBroadcaster(t *testing.T) {
	t.Helper()
	tok := w.twitchAPI.IssueToken(w.twitchAPI.BroadcasterID(), twitchtest.ScopeChannelSubscriptions)
	w.withStore(t, func(tx subrole.Tx) error {
		return tx.PutBroadcasterToken(subrole.BroadcasterToken{UserID: w.twitchAPI.BroadcasterID(), Login: twitchtest.DefaultBroadcasterLogin,
			AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expires: tok.Expires, Scopes: tok.Scopes, Connected: time.Now()})
	})
	// Record the callback id the service will use, so tests know its callbacks.
	w.withDB(t, func(db *store.Store) {
		id, _, err := eventsub.SecretGeneration(context.Background(), db, w.env["SUBROLE_EVENTSUB_SECRET"])
		if err != nil {
			t.Fatal(err)
		}
		w.instance = id.Instance
	})
}

// useAdminSocket gives the service an admin socket for the CLI.
func (w *world) useAdminSocket(t *testing.T) {
	w.env["SUBROLE_ADMIN_SOCKET"] = filepath.Join(t.TempDir(), "admin.sock")
}

// cli runs a subcommand the way main does and returns its output.
func (w *world) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := run(ctx, append([]string{"subrole"}, args...), w.getenv, &out, &out)
	return out.String(), err
}

// callback is the service's EventSub callback for a secret generation.
func (w *world) callback(gen int) string {
	return eventsub.CallbackID{Generation: uint64(gen), Instance: w.instance}.URL(w.env["SUBROLE_PUBLIC_URL"])
}

// waitEventSub waits until ok accepts the fake Twitch's subscriptions.
func (w *world) waitEventSub(t *testing.T, what string, ok func([]twitchtest.EventSubSubscription) bool) {
	t.Helper()
	if err := w.twitchAPI.WaitEventSub(ctxTimeout(t, 15*time.Second), ok); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, describeSubs(w.twitchAPI.EventSubSubscriptions()))
	}
}

func describeSubs(subs []twitchtest.EventSubSubscription) string {
	var b strings.Builder
	for _, s := range subs {
		fmt.Fprintf(&b, "  %s %s %s %v %s\n", s.ID, s.Type, s.Status, s.Condition, s.Callback)
	}
	return b.String()
}

// enabledAt counts the enabled subscriptions of each type at callback.
func enabledAt(subs []twitchtest.EventSubSubscription, callback string) map[string]int {
	out := map[string]int{}
	for _, s := range subs {
		if s.Callback == callback && s.Status == twitchtest.StatusEnabled {
			out[s.Type]++
		}
	}
	return out
}

var allTypes = []string{twitchtest.SubscribeType, twitchtest.SubscriptionEndType, twitchtest.SubscriptionMessageType,
	twitchtest.SubscriptionGiftType, twitchtest.AuthorizationRevokeType}

// complete reports whether each type has exactly one enabled subscription at callback.
func complete(callback string, types ...string) func([]twitchtest.EventSubSubscription) bool {
	return func(subs []twitchtest.EventSubSubscription) bool {
		got := enabledAt(subs, callback)
		for _, typ := range types {
			if got[typ] != 1 {
				return false
			}
		}
		return true
	}
}

// adminStatus reads the running service's GET /status through its socket.
func (w *world) adminStatus(t *testing.T) healthStatus {
	t.Helper()
	c, err := dialService(context.Background(), w.getenv, "test")
	if err != nil {
		t.Fatal(err)
	}
	var st healthStatus
	if err := c.getJSON(context.Background(), http.MethodGet, "/status", &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitStatus polls GET /status until ok accepts it.
func (w *world) waitStatus(t *testing.T, what string, ok func(healthStatus) bool) healthStatus {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := w.adminStatus(t)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(st)
			t.Fatalf("%s: status never matched: %s", what, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func postsOf(tw *twitchtest.Server) int {
	return len(tw.CallsTo(http.MethodPost, "/helix/eventsub/subscriptions"))
}

// TestEventSubLifecycleEndToEnd: creation verified by a real challenge to
// the real endpoint, reuse after a restart, a stale callback removed, 409,
// a revocation repaired, a withdrawn authorization alerting without a create
// loop, and the broadcaster's return.
func TestEventSubLifecycleEndToEnd(t *testing.T) {
	w := newTestWorld(t)
	w.useAdminSocket(t)
	w.linkMembers(t, 1)
	w.storeBroadcaster(t)
	bc := w.twitchAPI.BroadcasterID()
	// An older subrole (another public URL) and another tool of the same application.
	stale := w.twitchAPI.AddEventSubSubscription(twitchtest.EventSubSubscription{Type: twitchtest.SubscribeType,
		Condition: map[string]string{"broadcaster_user_id": bc}, Callback: "https://127.0.0.2:1/twitch_eventsub?g=1&i=" + w.instance, Secret: "old-secret-0123"})
	foreign := w.twitchAPI.AddEventSubSubscription(twitchtest.EventSubSubscription{Type: twitchtest.SubscribeType,
		Condition: map[string]string{"broadcaster_user_id": bc}, Callback: "https://127.0.0.1:1/hooks/twitch", Secret: "other-secret-012"})

	in := w.start(t)
	cb := w.callback(1)
	// Every subscription is created and verified: Twitch's challenge went to
	// the real webhook, which answered it; the stale one is gone, the
	// foreign one untouched.
	w.waitEventSub(t, "creation", func(subs []twitchtest.EventSubSubscription) bool {
		ids := map[string]bool{}
		for _, s := range subs {
			ids[s.ID] = true
		}
		return complete(cb, allTypes...)(subs) && !ids[stale.ID] && ids[foreign.ID]
	})
	for _, s := range w.twitchAPI.EventSubSubscriptions() {
		if s.Callback == cb && s.Secret != worldEventSubToken {
			t.Fatalf("%s created with another secret", s.Type)
		}
	}
	// Events arrive through them.
	ds, err := w.twitchAPI.Publish(context.Background(), func(s *twitchtest.Sender) twitchtest.Message {
		return s.Subscribe(twitchID(1), "alice", "2000", false)
	})
	if err != nil || len(ds) != 2 { // ours, and the other tool's (unreachable here)
		t.Fatalf("publish: %+v %v", ds, err)
	}
	for _, d := range ds {
		if d.SubscriptionID != foreign.ID && d.Status != 204 {
			t.Fatalf("delivery to the service: %+v", d)
		}
	}
	w.waitRoles(t, discordID(1), worldRoleLinked, worldRoleTier2, worldRoleSub)
	creates := postsOf(w.twitchAPI)
	if creates != 5 {
		t.Fatalf("%d creates, want 5", creates)
	}

	// A restart reuses them: no create.
	in.stop(t)
	mark := len(w.twitchAPI.Calls())
	in = w.start(t)
	w.waitStatus(t, "sync after restart", func(st healthStatus) bool { return st.EventSub.Synced })
	if n := postsOf(w.twitchAPI); n != creates {
		t.Fatalf("restart created %d subscriptions", n-creates)
	}
	if len(w.twitchAPI.Calls()) == mark {
		t.Fatal("no sync after the restart")
	}

	// Someone deleted one; the create races with another (409): "exists", no error.
	sub, _ := w.twitchAPI.EventSubSubscriptionOf(twitchtest.SubscriptionGiftType, twitchtest.StatusEnabled)
	w.twitchAPI.RemoveEventSubSubscription(sub.ID)
	w.twitchAPI.FailNext("POST /helix/eventsub/subscriptions", http.StatusConflict)
	out, err := w.cli(t, "eventsub", "sync")
	if err != nil || !strings.Contains(out, "created 0") {
		t.Fatalf("eventsub sync with a 409: %v\n%s", err, out)
	}
	out, err = w.cli(t, "eventsub", "sync") // the next sync creates it
	if err != nil || !strings.Contains(out, "created 1") {
		t.Fatalf("eventsub sync: %v\n%s", err, out)
	}
	w.waitEventSub(t, "re-created", complete(cb, allTypes...))

	// Twitch gives up on one (notification failures): re-created.
	end, _ := w.twitchAPI.EventSubSubscriptionOf(twitchtest.SubscriptionEndType, twitchtest.StatusEnabled)
	if d, err := w.twitchAPI.RevokeEventSubSubscription(context.Background(), end.ID, twitchtest.StatusFailuresExceeded); err != nil || d.Status != 204 {
		t.Fatalf("revocation delivery: %+v %v", d, err)
	}
	w.waitEventSub(t, "repair after revocation", func(subs []twitchtest.EventSubSubscription) bool {
		return complete(cb, allTypes...)(subs) && !slices.ContainsFunc(subs, func(s twitchtest.EventSubSubscription) bool { return s.ID == end.ID })
	})

	// The broadcaster disconnects subrole on Twitch: every channel
	// subscription is revoked. An error is raised, nothing is re-created,
	// even by a sync, until they connect again.
	creates = postsOf(w.twitchAPI)
	w.twitchAPI.RevokeUser(bc)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(in.logs.String(), "authorization was withdrawn") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(in.logs.String(), `level=ERROR msg="eventsub: the broadcaster's authorization was withdrawn`) {
		t.Fatalf("no error-level alert:\n%s", in.logs)
	}
	out, err = w.cli(t, "eventsub", "sync")
	if err != nil || !strings.Contains(out, "problem: EventSub: Twitch revoked") {
		t.Fatalf("sync while revoked: %v\n%s", err, out)
	}
	if _, body := readyz(t, w); !strings.Contains(body, "warning: EventSub: Twitch revoked the channel subscriptions") {
		t.Fatalf("/readyz does not say: %q", body)
	}
	time.Sleep(100 * time.Millisecond)
	if n := postsOf(w.twitchAPI); n != creates {
		t.Fatalf("%d creates while the broadcaster's authorization was gone", n-creates)
	}
	if got := enabledAt(w.twitchAPI.EventSubSubscriptions(), cb); got[twitchtest.SubscribeType] != 0 || got[twitchtest.AuthorizationRevokeType] != 1 {
		t.Fatalf("after the revocation: %v", got)
	}

	// They connect again: everything comes back.
	if p, err := w.connectBroadcaster(ctxTimeout(t, 10*time.Second)); err != nil || p.Status != 200 {
		t.Fatalf("connect: %v %d", err, p.Status)
	}
	w.waitEventSub(t, "after reconnecting", complete(cb, allTypes...))
	w.waitStatus(t, "no problem", func(st healthStatus) bool { return st.EventSub.Problem == "" && !st.EventSub.NeedsBroadcaster })

	// The CLI lists ours and others'.
	out, err = w.cli(t, "eventsub", "list")
	if err != nil || !strings.Contains(out, "subrole (current)") || !strings.Contains(out, "other") || !strings.Contains(out, foreign.ID) {
		t.Fatalf("eventsub list: %v\n%s", err, out)
	}
	out, err = w.cli(t, "eventsub", "delete", foreign.ID)
	if err != nil || !strings.Contains(out, "deleted "+foreign.ID) {
		t.Fatalf("eventsub delete: %v\n%s", err, out)
	}
	if _, err := w.cli(t, "eventsub", "delete", foreign.ID); err == nil || !strings.Contains(err.Error(), "no subscription") {
		t.Fatalf("deleting a missing one: %v", err)
	}
}

// TestSecretRotationEndToEnd: after SUBROLE_EVENTSUB_SECRET changes (the old
// one in SUBROLE_EVENTSUB_SECRET_PREVIOUS), events signed with the old secret
// are accepted until every subscription is re-created with the new one, and
// refused afterwards.
func TestSecretRotationEndToEnd(t *testing.T) {
	w := newTestWorld(t)
	w.useAdminSocket(t)
	w.linkMembers(t, 2)
	w.storeBroadcaster(t)
	in := w.start(t)
	w.waitEventSub(t, "first generation", complete(w.callback(1), allTypes...))
	in.stop(t)

	const newSecret = "a-brand-new-secret-9876"
	w.env["SUBROLE_EVENTSUB_SECRET"] = newSecret
	w.env["SUBROLE_EVENTSUB_SECRET_PREVIOUS"] = worldEventSubToken
	w.twitchAPI.SetVerificationHold(true) // Twitch is slow to verify the new ones
	w.start(t)
	w.waitEventSub(t, "second generation pending", func(subs []twitchtest.EventSubSubscription) bool {
		n := 0
		for _, s := range subs {
			if s.Callback == w.callback(2) && s.Status == twitchtest.StatusVerificationPending {
				n++
			}
		}
		return n == 5
	})
	// During the rotation Twitch still delivers through the old ones,
	// signed with the previous secret: accepted.
	ds, err := w.twitchAPI.Publish(context.Background(), func(s *twitchtest.Sender) twitchtest.Message {
		return s.Subscribe(twitchID(1), "alice", "1000", false)
	})
	if err != nil || len(ds) != 1 || ds[0].Status != 204 {
		t.Fatalf("old-secret delivery during the rotation: %+v %v", ds, err)
	}
	w.waitRoles(t, discordID(1), worldRoleLinked, worldRoleTier1, worldRoleSub)

	w.twitchAPI.SetVerificationHold(false)
	w.waitEventSub(t, "rotation done", func(subs []twitchtest.EventSubSubscription) bool {
		return complete(w.callback(2), allTypes...)(subs) && len(subs) == 5
	})
	for _, s := range w.twitchAPI.EventSubSubscriptions() {
		if s.Secret != newSecret {
			t.Fatalf("%s still signed with %q", s.Type, s.Secret)
		}
	}
	w.waitStatus(t, "rotation finished", func(st healthStatus) bool { return st.EventSub.Synced && !st.EventSub.Rotating })

	// Afterwards the old secret is refused; the new subscriptions deliver.
	old := w.twitchAPI.Sender(w.callback(2), worldEventSubToken)
	w.send(t, old.Subscribe(twitchID(2), "bob", "3000", false), http.StatusForbidden)
	ds, err = w.twitchAPI.Publish(context.Background(), func(s *twitchtest.Sender) twitchtest.Message {
		return s.Subscribe(twitchID(2), "bob", "3000", false)
	})
	if err != nil || len(ds) != 1 || ds[0].Status != 204 {
		t.Fatalf("new-secret delivery: %+v %v", ds, err)
	}
	w.waitRoles(t, discordID(2), worldRoleLinked, worldRoleTier3, worldRoleSub)
}

// storeSub stores a subscription fact observed by an event long ago.
func storeSub(tx subrole.Tx, n int, tier subrole.Tier, gift bool, ended bool) error {
	s := subrole.Subscription{TwitchUserID: twitchID(n), TwitchLogin: fmt.Sprintf("viewer%d", n), Tier: tier, IsGift: gift,
		Started: time.Now().Add(-48 * time.Hour), LastEvent: time.Now().Add(-2 * time.Hour),
		LastEventType: string(subrole.EventSubscribe), Source: subrole.SourceEventSub}
	if ended {
		s.Ended = time.Now().Add(-2 * time.Hour)
	}
	return tx.PutSubscription(s)
}

// TestReconcileEndToEnd: the start-up pass fixes each drift kind and a role
// removed by hand; "subrole reconcile" and /subrole resync-all run passes on
// demand.
func TestReconcileEndToEnd(t *testing.T) {
	w := newTestWorld(t)
	w.useAdminSocket(t)
	w.linkMembers(t, 5)
	w.storeBroadcaster(t)
	w.withStore(t, func(tx subrole.Tx) error {
		for _, s := range []struct {
			n           int
			tier        subrole.Tier
			gift, ended bool
		}{
			{1, subrole.Tier1, false, false}, // Helix: gone -> missed end
			{2, subrole.Tier1, false, true},  // Helix: tier 1 -> missed subscribe
			{3, subrole.Tier1, false, false}, // Helix: tier 3 -> tier change
			{4, subrole.Tier2, true, false},  // Helix: paid tier 2 -> gift turned paid
			{5, subrole.Tier1, false, false}, // Helix: same; Discord: tier role removed by hand
		} {
			if err := storeSub(tx, s.n, s.tier, s.gift, s.ended); err != nil {
				return err
			}
		}
		return nil
	})
	// Discord agrees with the stored state, except for member 5.
	w.discord.SetMemberRoles(discordID(1), worldRoleLinked, worldRoleTier1, worldRoleSub)
	w.discord.SetMemberRoles(discordID(3), worldRoleLinked, worldRoleTier1, worldRoleSub)
	w.discord.SetMemberRoles(discordID(4), worldRoleLinked, worldRoleTier2, worldRoleSub)
	w.discord.SetMemberRoles(discordID(5), worldRoleLinked, worldRoleSub)
	w.twitchAPI.Subscribe(twitchID(2), "1000", false, "")
	w.twitchAPI.Subscribe(twitchID(3), "3000", false, "")
	w.twitchAPI.Subscribe(twitchID(4), "2000", false, "")
	w.twitchAPI.Subscribe(twitchID(5), "1000", false, "")

	in := w.start(t)
	st := w.waitStatus(t, "start-up reconcile", func(st healthStatus) bool { return st.LastReconcile != nil })
	r := st.LastReconcile
	if r.MissedEnd != 1 || r.MissedSubscribe != 1 || r.TierChange != 1 || r.GiftToPaid != 1 || r.RolesRepaired != 1 {
		t.Fatalf("start-up pass %+v", r)
	}
	w.waitRoles(t, discordID(1), worldRoleLinked)
	w.waitRoles(t, discordID(2), worldRoleLinked, worldRoleTier1, worldRoleSub)
	w.waitRoles(t, discordID(3), worldRoleLinked, worldRoleTier3, worldRoleSub)
	w.waitRoles(t, discordID(4), worldRoleLinked, worldRoleTier2, worldRoleSub)
	w.waitRoles(t, discordID(5), worldRoleLinked, worldRoleTier1, worldRoleSub)
	if n := w.roleWrites("PUT", discordID(4), worldRoleTier2) + w.roleWrites("DELETE", discordID(4), worldRoleTier2); n != 0 {
		t.Fatalf("a gift turning paid wrote roles %d times", n)
	}

	// A moderator removes a role by hand: "subrole reconcile" restores it.
	time.Sleep(50 * time.Millisecond) // let the applier finish and clear the outbox
	w.discord.SetMemberRoles(discordID(3), worldRoleLinked, worldRoleSub)
	out, err := w.cli(t, "reconcile")
	if err != nil || !strings.Contains(out, "1  members whose roles were edited by hand") || !strings.Contains(out, "0  missed ends") {
		t.Fatalf("subrole reconcile: %v\n%s", err, out)
	}
	w.waitRoles(t, discordID(3), worldRoleLinked, worldRoleTier3, worldRoleSub)

	// /subrole resync-all, after an end Twitch never told us about.
	w.twitchAPI.Unsubscribe(twitchID(2))
	admin := discordID(99)
	w.addMember(admin, "mod")
	w.discord.SetPermissions(admin, 1<<28)
	cmd, err := w.discord.SlashCommand(admin, "subrole", discordtest.CommandOption{Name: "resync-all", Type: 1})
	if err != nil {
		t.Fatal(err)
	}
	// The deferred reply shows progress first, then the counts.
	final, err := w.discord.WaitForMessage(ctxTimeout(t, 15*time.Second), func(m discordtest.Message) bool {
		return m.Token == cmd.Token && m.Kind == discordtest.KindOriginal && !strings.Contains(m.Content, "running")
	})
	if err != nil || !strings.Contains(final.Content, "Resync of every member done") || !strings.Contains(final.Content, "Missed ends: 1") {
		t.Fatalf("/subrole resync-all: %v %q", err, final.Content)
	}
	progressed := slices.ContainsFunc(w.discord.Messages(), func(m discordtest.Message) bool {
		return m.Token == cmd.Token && strings.Contains(m.Content, "Resync of every member running")
	})
	if !progressed {
		t.Fatal("no progress shown")
	}
	w.waitRoles(t, discordID(2), worldRoleLinked)
	// Each pass is in the audit log... and the logs.
	if strings.Contains(in.logs.String(), "level=ERROR") {
		t.Fatalf("errors logged:\n%s", in.logs)
	}
}

// TestDowntimeEndToEnd: events Twitch sent while the service was down are
// lost; the reconcile at the next start (the last pass being older than the
// interval) repairs the roles.
func TestDowntimeEndToEnd(t *testing.T) {
	w := newTestWorld(t)
	w.linkMembers(t, 2)
	w.storeBroadcaster(t)
	// Before the downtime: both subscribed (events long ago), roles given,
	// subscriptions in place, the last pass 7 hours ago.
	w.withDB(t, func(db *store.Store) {
		// The generation of the world's secret, as the first start recorded it.
		if id, _, err := eventsub.SecretGeneration(context.Background(), db, worldEventSubToken); err != nil || id.Generation != 1 {
			t.Fatalf("generation %d %v", id.Generation, err)
		}
	})
	w.withStore(t, func(tx subrole.Tx) error {
		if err := storeSub(tx, 1, subrole.Tier1, false, false); err != nil {
			return err
		}
		b, _ := json.Marshal(subrole.ReconcileReport{Started: time.Now().Add(-7 * time.Hour), Finished: time.Now().Add(-7 * time.Hour), Strategy: "all"})
		return tx.PutMeta("reconcile_last", b)
	})
	w.discord.SetMemberRoles(discordID(1), worldRoleLinked, worldRoleTier1, worldRoleSub)
	for _, typ := range allTypes {
		cond := map[string]string{"broadcaster_user_id": w.twitchAPI.BroadcasterID()}
		if typ == twitchtest.AuthorizationRevokeType {
			cond = map[string]string{"client_id": worldClientID}
		}
		w.twitchAPI.AddEventSubSubscription(twitchtest.EventSubSubscription{Type: typ, Condition: cond, Callback: w.callback(1), Secret: worldEventSubToken})
	}
	// During the downtime: viewer 1's subscription ends, viewer 2 subscribes.
	w.twitchAPI.Subscribe(twitchID(2), "2000", false, "")
	for _, build := range []func(*twitchtest.Sender) twitchtest.Message{
		func(s *twitchtest.Sender) twitchtest.Message { return s.End(twitchID(1), "viewer1", "1000", false) },
		func(s *twitchtest.Sender) twitchtest.Message {
			return s.Subscribe(twitchID(2), "viewer2", "2000", false)
		},
	} {
		ds, err := w.twitchAPI.Publish(context.Background(), build)
		if err != nil || len(ds) != 1 || ds[0].Err == nil {
			t.Fatalf("a delivery reached the stopped service: %+v %v", ds, err)
		}
	}

	w.start(t)
	w.waitRoles(t, discordID(1), worldRoleLinked)
	w.waitRoles(t, discordID(2), worldRoleLinked, worldRoleTier2, worldRoleSub)
	if n := postsOf(w.twitchAPI); n != 0 {
		t.Fatalf("the subscriptions in place were re-created (%d creates)", n)
	}
}

// TestReconcileRespectsHelixRateLimit: a 429 and a spent Ratelimit-Remaining
// make the reconcile wait for Helix's reset, not fail or hammer.
func TestReconcileRespectsHelixRateLimit(t *testing.T) {
	w := newTestWorld(t)
	w.replaceTwitch(twitchtest.Options{RateLimit: 2, RateWindow: time.Second})
	w.useAdminSocket(t)
	const n = 250 // three user_id batches
	w.linkMembers(t, n)
	w.withStore(t, func(tx subrole.Tx) error {
		for i := 1; i <= n; i++ {
			if err := storeSub(tx, i, subrole.Tier1, false, false); err != nil {
				return err
			}
		}
		return nil
	})
	for i := 1; i <= n; i++ {
		w.twitchAPI.Subscribe(twitchID(i), "1000", false, "")
	}
	w.storeBroadcaster(t)
	w.twitchAPI.FailNext("GET /helix/subscriptions", http.StatusTooManyRequests)
	w.env["SUBROLE_ENFORCE_ROLES"] = "off"
	w.start(t)
	st := w.waitStatus(t, "start-up reconcile", func(st healthStatus) bool { return st.LastReconcile != nil || st.ReconcileErr != "" })
	if st.ReconcileErr != "" || st.LastReconcile.Strategy != "linked" || st.LastReconcile.HelixRequests != 3 || st.LastReconcile.Drifts() != 0 {
		t.Fatalf("pass %+v, error %q", st.LastReconcile, st.ReconcileErr)
	}
	calls := w.twitchAPI.CallsTo(http.MethodGet, "/helix/subscriptions")
	var statuses []int
	for _, c := range calls {
		statuses = append(statuses, c.Status)
	}
	if !slices.Equal(statuses, []int{429, 200, 200, 200}) {
		t.Fatalf("statuses %v: want the injected 429 retried, then no 429 from a spent budget", statuses)
	}
	if gap := calls[1].Time.Sub(calls[0].Time); gap < 900*time.Millisecond {
		t.Fatalf("retried the 429 after %s, before its reset", gap)
	}
	if gap := calls[3].Time.Sub(calls[2].Time); gap < 500*time.Millisecond {
		t.Fatalf("the third request went %s after the budget was spent, without waiting for the reset", gap)
	}
}
