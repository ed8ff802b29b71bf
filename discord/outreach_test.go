package discord_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/discord"
)

// joins records what the Outreach adapter hands to the core.
type joins chan subrole.MemberJoin

func (j joins) MemberJoined(_ context.Context, m subrole.MemberJoin) (subrole.JoinOutcome, error) {
	j <- m
	return subrole.JoinQueued, nil
}

// BeginJoinCatchUp says there is nothing to catch up, as on a first start.
func (j joins) BeginJoinCatchUp(context.Context) (subrole.JoinCatchUp, error) {
	return subrole.JoinCatchUp{}, nil
}

func (j joins) CatchUpJoins(context.Context, subrole.JoinCatchUp, []subrole.MemberJoin) (int, error) {
	return 0, errors.New("CatchUpJoins called without a catch-up")
}

func TestOutreachJoinsFromTheGateway(t *testing.T) {
	srv := newFake(t)
	b := newBot(t, srv, nil)
	got := make(joins, 10)
	o := &discord.Outreach{Bot: b, Joins: got}
	o.Attach()
	if err := b.Open(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	defer o.Close()
	const alice = "400000000000000001"
	before := time.Now().Add(-time.Second)
	if err := srv.MemberJoin(alice, "alice"); err != nil {
		t.Fatal(err)
	}
	// Another guild's join is not ours.
	if err := srv.Dispatch("GUILD_MEMBER_ADD", map[string]any{"guild_id": "200000000000000999", "joined_at": time.Now().Format(time.RFC3339),
		"roles": []string{}, "user": map[string]any{"id": "400000000000000002", "username": "x"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case j := <-got:
		if j.DiscordUserID != alice || j.Bot || j.JoinedAt.Before(before) {
			t.Errorf("join %+v", j)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no join reported")
	}
	select {
	case j := <-got:
		t.Errorf("unexpected join %+v", j)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestOutreachMessenger(t *testing.T) {
	srv := newFake(t)
	b := newBot(t, srv, nil)
	o := &discord.Outreach{Bot: b}
	ctx := ctxTimeout(t)
	const open, closed, gone = "400000000000000001", "400000000000000002", "400000000000000003"
	srv.AddMember(open, "open")
	srv.AddMember(closed, "closed")
	srv.SetDMClosed(closed, true)

	for user, want := range map[string]bool{open: true, closed: true, gone: false} {
		if in, err := o.InGuild(ctx, user); err != nil || in != want {
			t.Errorf("InGuild(%s) = %v, %v; want %v", user, in, err, want)
		}
	}
	if err := o.SendOutreach(ctx, open, subrole.OutreachWelcome); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || msgs[0].RecipientID != open || !strings.Contains(msgs[0].Content, "/link") ||
		!strings.Contains(msgs[0].Content, "https://discord.com/channels/"+guild) {
		t.Fatalf("messages %+v", msgs)
	}
	err := o.SendOutreach(ctx, closed, subrole.OutreachFollowUp)
	if !errors.Is(err, subrole.ErrDMClosed) || !errors.Is(err, discord.ErrDMClosed) {
		t.Errorf("DM to a member who refuses DMs: %v, want ErrDMClosed", err)
	}
	srv.FailNext(1, 429)
	err = o.SendOutreach(ctx, open, subrole.OutreachRelink)
	var ra *subrole.RetryAfterError
	if !errors.As(err, &ra) || ra.After <= 0 {
		t.Errorf("rate limited DM: %v, want a RetryAfterError", err)
	}
	srv.FailNext(1, 500)
	if err := o.SendOutreach(ctx, open, subrole.OutreachRelink); err == nil || errors.Is(err, subrole.ErrDMClosed) {
		t.Errorf("DM during a 500: %v, want a transient error", err)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("%d messages recorded, want 1", n)
	}
}

func TestOutreachText(t *testing.T) {
	for _, k := range []subrole.OutreachKind{subrole.OutreachWelcome, subrole.OutreachFollowUp, subrole.OutreachRelink} {
		text := discord.OutreachText(k, guild)
		if !strings.Contains(text, "**/link**") || !strings.Contains(text, "<https://discord.com/channels/"+guild+">") || len(text) > 2000 {
			t.Errorf("%s text %q", k, text)
		}
	}
	if discord.OutreachText("spam", guild) != "" {
		t.Error("text for an unknown kind")
	}
}
