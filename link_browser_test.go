package subrole_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/subrole/subrole"
)

// testBrowser is the cookie of the browser a test state was opened in.
func testBrowser(state string) string { return "cookie-" + state }

// linkState does what the pages do before Twitch is asked: it issues a
// /link state for discordUserID, binds it to a browser and confirms the
// member with Discord in that browser.
func (f *fixture) linkState(discordUserID, name, guild string) (string, error) {
	ctx := context.Background()
	state, err := f.svc.NewOAuthState(ctx, subrole.PurposeLink, discordUserID, name, guild)
	if err != nil {
		return "", err
	}
	if _, err := f.svc.BindBrowser(ctx, state, testBrowser(state)); err != nil {
		return "", err
	}
	if _, err := f.svc.ConfirmDiscord(ctx, state, testBrowser(state), discordUserID); err != nil {
		return "", err
	}
	return state, nil
}

// complete is CompleteLink from the browser linkState bound.
func (f *fixture) complete(ctx context.Context, state string, v subrole.Viewer) (subrole.LinkResult, error) {
	return f.svc.CompleteLink(ctx, state, testBrowser(state), v)
}

// TestLinkBoundToBrowserAndDiscord plays the ways a /link state can be
// carried to someone else: each is refused with its reason, voids the state
// where it should, and links nothing.
func TestLinkBoundToBrowserAndDiscord(t *testing.T) {
	ctx := context.Background()
	viewer := subrole.Viewer{TwitchUserID: "2", TwitchLogin: "bob_tv", Tier: subrole.Tier1}
	tests := []struct {
		name string
		// run plays the steps for alice's state and returns the error of the refused step.
		run    func(f *fixture, state string) error
		reason string
		voided bool // a later, correct completion is refused too
	}{
		{"button forwarded: bob's browser, bob signed in to Discord", func(f *fixture, state string) error {
			f.svc.BindBrowser(ctx, state, "bob's browser")
			_, err := f.svc.ConfirmDiscord(ctx, state, "bob's browser", bob)
			return err
		}, subrole.ReasonStateOtherDiscord, true},
		{"Discord's callback in a browser without the cookie", func(f *fixture, state string) error {
			f.svc.BindBrowser(ctx, state, "alice's browser")
			_, err := f.svc.ConfirmDiscord(ctx, state, "", alice)
			return err
		}, subrole.ReasonStateOtherBrowser, true},
		{"Twitch URL forwarded after alice's Discord step", func(f *fixture, state string) error {
			f.svc.BindBrowser(ctx, state, "alice's browser")
			if _, err := f.svc.ConfirmDiscord(ctx, state, "alice's browser", alice); err != nil {
				return err
			}
			_, err := f.svc.CheckBrowser(ctx, state, "bob's browser", true)
			return err
		}, subrole.ReasonStateOtherBrowser, true},
		{"Twitch's callback before Discord's", func(f *fixture, state string) error {
			f.svc.BindBrowser(ctx, state, "alice's browser")
			_, err := f.svc.CheckBrowser(ctx, state, "alice's browser", true)
			return err
		}, subrole.ReasonStateNoDiscord, true},
		{"completed in another browser", func(f *fixture, state string) error {
			f.svc.BindBrowser(ctx, state, "alice's browser")
			f.svc.ConfirmDiscord(ctx, state, "alice's browser", alice)
			_, err := f.svc.CompleteLink(ctx, state, "bob's browser", viewer)
			return err
		}, subrole.ReasonStateOtherBrowser, false},
		{"button opened elsewhere after Discord confirmed", func(f *fixture, state string) error {
			f.svc.BindBrowser(ctx, state, "alice's browser")
			f.svc.ConfirmDiscord(ctx, state, "alice's browser", alice)
			_, err := f.svc.BindBrowser(ctx, state, "bob's browser")
			return err
		}, subrole.ReasonStateOtherBrowser, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, policy)
			state, err := f.svc.NewOAuthState(ctx, subrole.PurposeLink, alice, "alice", "")
			if err != nil {
				t.Fatal(err)
			}
			err = tt.run(f, state)
			if !errors.Is(err, subrole.ErrBadState) || subrole.StateReason(err) != tt.reason {
				t.Fatalf("err = %v, want reason %q", err, tt.reason)
			}
			if _, err := f.svc.Member(ctx, alice); !errors.Is(err, subrole.ErrNotFound) {
				t.Fatalf("alice linked: %v", err)
			}
			// Alice, in her own browser, afterwards.
			f.svc.BindBrowser(ctx, state, "alice's browser")
			f.svc.ConfirmDiscord(ctx, state, "alice's browser", alice)
			_, err = f.svc.CompleteLink(ctx, state, "alice's browser", viewer)
			if tt.voided && subrole.StateReason(err) != subrole.ReasonStateVoid {
				t.Fatalf("the state was not voided: %v", err)
			}
			if !tt.voided && err != nil {
				t.Fatalf("alice's own completion: %v", err)
			}
			if len(f.jobs()) != map[bool]int{true: 0, false: 1}[tt.voided] {
				t.Fatal("wrong role jobs")
			}
		})
	}
}

// TestBindBrowserAgain: the same browser may open the button twice; another
// browser takes the binding over only until Discord confirmed the member.
func TestBindBrowserAgain(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, policy)
	state, _ := f.svc.NewOAuthState(ctx, subrole.PurposeLink, alice, "alice", "")
	if _, err := f.svc.BindBrowser(ctx, state, "phone"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.BindBrowser(ctx, state, "laptop"); err != nil { // the member moved on before Discord
		t.Fatal(err)
	}
	if _, err := f.svc.ConfirmDiscord(ctx, state, "laptop", alice); err != nil {
		t.Fatal(err)
	}
	st, err := f.svc.BindBrowser(ctx, state, "laptop") // the button pressed again on the laptop
	if err != nil || st.DiscordVerified.IsZero() {
		t.Fatalf("rebinding the same browser: %+v %v", st, err)
	}
	if _, err := f.svc.CompleteLink(ctx, state, "laptop", subrole.Viewer{TwitchUserID: "1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.BindBrowser(ctx, state, "laptop"); subrole.StateReason(err) != subrole.ReasonStateUsed {
		t.Fatalf("binding a used state: %v", err)
	}
	if _, err := f.svc.BindBrowser(ctx, state, ""); err == nil {
		t.Fatal("bound an empty cookie")
	}
}

// TestStateCaps: a flood of broadcaster states never locks the streamer out
// (at the cap the oldest is expired to make room), member states are counted
// apart, and over their own cap they are refused.
func TestStateCaps(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, policy)
	// Fill the broadcaster cap in one commit, as a flood would over time.
	now := f.clock.Now()
	err := f.db.Update(ctx, func(tx subrole.Tx) error {
		for range subrole.MaxPendingBroadcasterStates {
			tok, _ := subrole.NewStateToken(subrole.PurposeBroadcaster, "")
			if err := tx.PutOAuthState(subrole.OAuthState{Key: tok.Key(), Purpose: subrole.PurposeBroadcaster,
				Created: now, Expires: now.Add(subrole.StateTTL - time.Second)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pending := func() int {
		var n int
		f.db.View(ctx, func(tx subrole.Tx) (err error) {
			n, err = tx.CountOAuthStates(subrole.PurposeBroadcaster, f.clock.Now(), -1)
			return err
		})
		return n
	}
	// The streamer's own state, made after the flood: it must survive the
	// next few states a flood makes (each expires the oldest flood state).
	streamer, err := f.svc.NewOAuthState(ctx, subrole.PurposeBroadcaster, "", "", "")
	if err != nil {
		t.Fatalf("over the cap: %v", err)
	}
	for range 10 {
		f.clock.Add(time.Millisecond)
		if _, err := f.svc.NewOAuthState(ctx, subrole.PurposeBroadcaster, "", "", ""); err != nil {
			t.Fatalf("over the cap: %v", err)
		}
	}
	if n := pending(); n != subrole.MaxPendingBroadcasterStates {
		t.Errorf("%d broadcaster states pending, want the cap %d", n, subrole.MaxPendingBroadcasterStates)
	}
	if _, err := f.svc.CheckState(ctx, streamer, subrole.PurposeBroadcaster); err != nil {
		t.Errorf("the streamer's state after 10 more: %v", err)
	}
	// A flood of a whole cap's worth expires it (and prunes it).
	for range subrole.MaxPendingBroadcasterStates {
		f.clock.Add(time.Millisecond)
		if _, err := f.svc.NewOAuthState(ctx, subrole.PurposeBroadcaster, "", "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if r := subrole.StateReason(mustFail(f.svc.CheckState(ctx, streamer, subrole.PurposeBroadcaster))); r != subrole.ReasonStateExpired && r != subrole.ReasonStateUnknown {
		t.Errorf("the streamer's state after a full cap more: %q, want expired or pruned", r)
	}
	if _, err := f.linkState(alice, "alice", ""); err != nil {
		t.Fatalf("a member's /link is not held up by broadcaster states: %v", err)
	}
	// Member states over their cap are refused.
	err = f.db.Update(ctx, func(tx subrole.Tx) error {
		for range subrole.MaxPendingLinkStates {
			tok, _ := subrole.NewStateToken(subrole.PurposeLink, "1")
			if err := tx.PutOAuthState(subrole.OAuthState{Key: tok.Key(), Purpose: subrole.PurposeLink, DiscordUserID: "1",
				Created: now, Expires: now.Add(subrole.StateTTL)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.linkState(bob, "bob", ""); !errors.Is(err, subrole.ErrTooManyStates) {
		t.Fatalf("over the member cap: %v", err)
	}
	f.clock.Add(subrole.StateTTL)
	if _, err := f.linkState(bob, "bob", ""); err != nil {
		t.Fatalf("after the flood expired: %v", err)
	}
}

// mustFail returns the error of a call's results.
func mustFail[T any](_ T, err error) error { return err }
