package subrole_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/subrole/subrole"
)

func FuzzState(f *testing.F) {
	link, _ := subrole.NewStateToken(subrole.PurposeLink, "100000000000000001")
	bc, _ := subrole.NewStateToken(subrole.PurposeBroadcaster, "")
	dash, _ := subrole.NewStateToken(subrole.PurposeDashboard, "")
	for _, s := range []string{link.String(), bc.String(), dash.String(), "", "x", strings.Repeat("A", 56), strings.Repeat("_", 56),
		link.String() + "=", strings.ToUpper(link.String())} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := subrole.ParseState(s)
		if err != nil {
			if !errors.Is(err, subrole.ErrBadState) || subrole.StateReason(err) == "" {
				t.Fatalf("error %v is not a StateError", err)
			}
			return
		}
		// Whatever parses is exactly what String produces, with a sane purpose and owner.
		if tok.String() != s {
			t.Fatalf("ParseState(%q).String() = %q", s, tok.String())
		}
		switch tok.Purpose {
		case subrole.PurposeLink:
			if tok.Discord() == "" {
				t.Fatal("link state without a member")
			}
		case subrole.PurposeBroadcaster, subrole.PurposeDashboard:
			if tok.Discord() != "" {
				t.Fatalf("%s state with a member", tok.Purpose)
			}
		default:
			t.Fatalf("purpose %v", tok.Purpose)
		}
	})
}

func TestStateToken(t *testing.T) {
	a, err := subrole.NewStateToken(subrole.PurposeLink, "100000000000000001")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := subrole.NewStateToken(subrole.PurposeLink, "100000000000000001")
	if a.String() == b.String() || a.Key() == b.Key() || len(a.String()) != 56 {
		t.Fatalf("states not random or wrong length: %s %s", a, b)
	}
	got, err := subrole.ParseState(a.String())
	if err != nil || got != a || got.Discord() != "100000000000000001" {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range []struct {
		p  subrole.OAuthPurpose
		id string
	}{{subrole.PurposeLink, ""}, {subrole.PurposeLink, "alice"}, {subrole.PurposeBroadcaster, "1"}, {9, ""}} {
		if _, err := subrole.NewStateToken(bad.p, bad.id); err == nil {
			t.Errorf("NewStateToken(%v, %q) worked", bad.p, bad.id)
		}
	}
	if _, err := subrole.ParseState(""); subrole.StateReason(err) != subrole.ReasonStateMissing {
		t.Errorf("empty: %v", err)
	}
	if _, err := subrole.ParseState(a.String()[1:] + "*"); subrole.StateReason(err) != subrole.ReasonStateMalformed {
		t.Errorf("bad alphabet: %v", err)
	}
}

const alice, bob = "100000000000000001", "100000000000000002"

func TestCompleteLink(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, policy)
	state, err := f.linkState(alice, "alice", "900000000000000001")
	if err != nil {
		t.Fatal(err)
	}
	// Wrong purpose, then the right one.
	if _, err := f.svc.CheckState(ctx, state, subrole.PurposeBroadcaster); subrole.StateReason(err) != subrole.ReasonStateOtherPurpose {
		t.Fatalf("purpose: %v", err)
	}
	if st, err := f.svc.CheckState(ctx, state, subrole.PurposeLink); err != nil || st.DiscordUserID != alice || st.DiscordName != "alice" {
		t.Fatalf("check: %+v %v", st, err)
	}
	res, err := f.complete(ctx, state, subrole.Viewer{TwitchUserID: "1", TwitchLogin: "alice_tv", Tier: subrole.Tier1})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Desired, []string{roleLinked, roleT1}) || res.Sub.Source != subrole.SourceOAuth || !res.Sub.Active() {
		t.Fatalf("result %+v", res)
	}
	jobs := f.jobs()
	if len(jobs) != 1 || jobs[0].DiscordUserID != alice || !slices.Equal(jobs[0].Desired, res.Desired) {
		t.Fatalf("jobs %+v", jobs)
	}
	// The state is used up.
	if _, err := f.complete(ctx, state, subrole.Viewer{TwitchUserID: "1"}); subrole.StateReason(err) != subrole.ReasonStateUsed {
		t.Fatalf("reuse: %v", err)
	}

	// Bob cannot take alice's Twitch account; nothing changes, his state stays usable.
	bs, _ := f.linkState(bob, "bob", "")
	if _, err := f.complete(ctx, bs, subrole.Viewer{TwitchUserID: "1"}); !errors.Is(err, subrole.ErrConflict) {
		t.Fatalf("conflict: %v", err)
	}
	if _, err := f.svc.Member(ctx, bob); !errors.Is(err, subrole.ErrNotFound) {
		t.Fatalf("bob linked: %v", err)
	}
	if len(f.jobs()) != 0 {
		t.Fatal("a refused link queued roles")
	}
	if _, err := f.complete(ctx, bs, subrole.Viewer{TwitchUserID: "2", TwitchLogin: "bob_tv"}); err != nil {
		t.Fatalf("bob's own account: %v", err)
	}

	// A state expires after StateTTL by the service clock.
	late, _ := f.linkState(alice, "", "")
	f.clock.Add(subrole.StateTTL)
	if _, err := f.complete(ctx, late, subrole.Viewer{TwitchUserID: "3"}); subrole.StateReason(err) != subrole.ReasonStateExpired {
		t.Fatalf("expired: %v", err)
	}
	// Expired states are pruned when new ones are issued.
	f.clock.Add(time.Minute)
	f.svc.NewOAuthState(ctx, subrole.PurposeBroadcaster, "", "", "")
	if _, err := f.svc.CheckState(ctx, late, subrole.PurposeLink); subrole.StateReason(err) != subrole.ReasonStateUnknown {
		t.Fatalf("not pruned: %v", err)
	}
}

// helixOne answers Subscribers from a map.
type helixOne map[string]subrole.HelixSubscription

func (h helixOne) Subscribers(_ context.Context, ids []string) ([]subrole.HelixSubscription, error) {
	var out []subrole.HelixSubscription
	for _, id := range ids {
		if s, ok := h[id]; ok {
			out = append(out, s)
		}
	}
	return out, nil
}

func (h helixOne) AllSubscribers(ctx context.Context, fn func([]subrole.HelixSubscription) error) error {
	return errors.New("not used")
}

func TestResync(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, policy)
	state, _ := f.linkState(alice, "", "")
	if _, err := f.complete(ctx, state, subrole.Viewer{TwitchUserID: "1", TwitchLogin: "alice_tv"}); err != nil {
		t.Fatal(err)
	}
	f.jobs()
	m, err := f.svc.Resync(ctx, helixOne{"1": {UserID: "1", UserLogin: "alice_tv", Tier: subrole.Tier3, IsGift: true, GifterID: "9", GifterLogin: "zoe"}}, alice)
	if err != nil || m.Sub.Tier != subrole.Tier3 || m.Sub.GifterID != "9" || m.Sub.Source != subrole.SourceHelix {
		t.Fatalf("resync: %+v %v", m, err)
	}
	// Unchanged state still reapplies the roles.
	if _, err := f.svc.Resync(ctx, helixOne{"1": {UserID: "1", Tier: subrole.Tier3, IsGift: true, GifterID: "9", GifterLogin: "zoe"}}, alice); err != nil {
		t.Fatal(err)
	}
	jobs := f.jobs()
	if len(jobs) != 2 || !slices.Equal(jobs[1].Desired, []string{roleLinked, roleT3}) {
		t.Fatalf("jobs %+v", jobs)
	}
	if _, err := f.svc.Resync(ctx, helixOne{}, bob); !errors.Is(err, subrole.ErrNotFound) {
		t.Fatalf("unlinked: %v", err)
	}
}

// TestLinkTrustsAFreshEvent: a viewer subscribes and runs /link at once;
// Helix has not caught up and says "not subscribed". The event wins.
func TestLinkTrustsAFreshEvent(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, policy)
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "7", Tier: subrole.Tier2})
	state, err := f.linkState(alice, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.complete(ctx, state, subrole.Viewer{TwitchUserID: "7", TwitchLogin: "alice_tv"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Sub.Active() || res.Sub.Tier != subrole.Tier2 || !slices.Equal(res.Desired, []string{roleLinked, roleT2}) {
		t.Fatalf("a lagging Helix ended a fresh subscription: %+v", res)
	}

	// Long after the event, the member's own check is believed.
	f.clock.Add(subrole.HelixLag)
	f.svc.Unlink(ctx, alice, "test")
	state, _ = f.linkState(alice, "alice", "")
	res, err = f.complete(ctx, state, subrole.Viewer{TwitchUserID: "7", TwitchLogin: "alice_tv"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sub.Active() {
		t.Fatalf("an old event outweighed the member's own check: %+v", res.Sub)
	}
}

// TestLateEventBeatsLinkCheck: Twitch sent a subscribe at T but delivered it
// after the member's /link check at T+1m, which Helix answered "not
// subscribed". The event is newer than what Helix knew, so it wins.
func TestLateEventBeatsLinkCheck(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, policy)
	sent := f.clock.Now()
	f.clock.Add(time.Minute)
	state, _ := f.linkState(alice, "alice", "")
	if _, err := f.complete(ctx, state, subrole.Viewer{TwitchUserID: "7", TwitchLogin: "alice_tv"}); err != nil {
		t.Fatal(err)
	}
	f.jobs()
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "7", Tier: subrole.Tier1, Sent: sent})
	if s := f.sub("7"); !s.Active() {
		t.Fatalf("the late event was dropped as stale: %+v", s)
	}
	wantJob(t, f.jobs(), alice, roleLinked, roleT1)
}

// TestResyncKeepsAFreshEvent: an admin resync with a lagging Helix neither
// ends a fresh subscription nor takes away its protection from a /link check.
func TestResyncKeepsAFreshEvent(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, policy)
	f.link(alice, "7")
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "7", Tier: subrole.Tier1})
	f.clock.Add(time.Minute)
	if _, err := f.svc.Resync(ctx, helixOne{}, alice); err != nil {
		t.Fatal(err)
	}
	if s := f.sub("7"); !s.Active() || s.Source != subrole.SourceEventSub {
		t.Fatalf("resync overrode a fresh event: %+v", s)
	}
	f.clock.Add(time.Minute)
	state, _ := f.linkState(alice, "alice", "")
	if res, err := f.complete(ctx, state, subrole.Viewer{TwitchUserID: "7"}); err != nil || !res.Sub.Active() {
		t.Fatalf("link after resync ended a fresh subscription: %+v %v", res.Sub, err)
	}
}

func TestPendingLink(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, policy)
	if _, pending, err := f.svc.PendingLink(ctx, alice); err != nil || pending {
		t.Fatalf("before /link: %v %v", pending, err)
	}
	state, err := f.svc.NewOAuthState(ctx, subrole.PurposeLink, alice, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	exp, pending, err := f.svc.PendingLink(ctx, alice)
	if err != nil || !pending || !exp.Equal(f.clock.Now().Add(subrole.StateTTL)) {
		t.Fatalf("after /link: %v %v %v", exp, pending, err)
	}
	if _, pending, _ := f.svc.PendingLink(ctx, bob); pending {
		t.Fatal("bob has alice's pending link")
	}
	_ = state
	f.clock.Add(subrole.StateTTL)
	if _, pending, _ := f.svc.PendingLink(ctx, alice); pending {
		t.Fatal("an expired /link is still pending")
	}
}
