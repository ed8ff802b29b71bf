package subrole_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/subrole/subrole"
)

// TestDashboardStats: the counts follow links, subscriptions, the outbox
// and role failures.
func TestDashboardStats(t *testing.T) {
	f := newFixture(t, policy)
	ctx := context.Background()
	for i, id := range []string{"501", "502", "503"} {
		if err := f.svc.Link(ctx, subrole.Link{DiscordUserID: "80000000000000000" + string(rune('1'+i)), TwitchUserID: id}); err != nil {
			t.Fatal(err)
		}
	}
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "501", Tier: subrole.Tier1})
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "502", Tier: subrole.Tier3})
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "504", Tier: subrole.Tier3}) // not linked
	f.send(subrole.Event{Type: subrole.EventSubscriptionEnd, UserID: "502", Tier: subrole.Tier3})
	st, err := f.svc.DashboardStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	jobs, _ := f.svc.RoleJobs(ctx, 0, -1)
	if st.Linked != 3 || st.Active != [4]int{0, 1, 0, 1} || st.Outbox != len(jobs) || st.Outbox == 0 || st.Inbox != 0 ||
		st.RoleFailures != 0 || st.LastReconcile != nil || st.LastAudit == 0 {
		t.Fatalf("stats %+v with %d jobs", st, len(jobs))
	}
	var seqs []uint64
	for _, j := range jobs {
		seqs = append(seqs, j.Seq)
	}
	err = f.svc.CompleteRoleJobs(ctx, seqs, []subrole.AuditEntry{{Kind: subrole.AuditRoles}, {Kind: subrole.AuditRoleFailure}, {Kind: subrole.AuditRoleFailure}})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ = f.svc.DashboardStats(ctx); st.RoleFailures != 2 || st.Outbox != 0 {
		t.Fatalf("after completing: %+v", st)
	}
	recent, _ := f.svc.RecentAudit(ctx, 0, 3)
	after, _ := f.svc.AuditAfter(ctx, recent[2].Seq, 10)
	if len(recent) != 3 || len(after) != 2 || after[0].Seq != recent[1].Seq || recent[0].Seq != st.LastAudit ||
		recent[0].Kind != subrole.AuditRoleFailure {
		t.Fatalf("recent %+v, after %+v", recent, after)
	}
}

func TestDashboardSessionLifecycle(t *testing.T) {
	f := newFixture(t, policy)
	ctx := context.Background()
	state, err := f.svc.NewOAuthState(ctx, subrole.PurposeDashboard, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	link, _ := f.svc.NewOAuthState(ctx, subrole.PurposeLink, "100000000000000001", "", "")
	if _, _, err := f.svc.StartDashboardSession(ctx, link, "1337", "streamer", 0); !errors.Is(err, subrole.ErrBadState) {
		t.Fatalf("a /link state signed in: %v", err)
	}
	token, sess, err := f.svc.StartDashboardSession(ctx, state, "1337", "streamer", 0)
	if err != nil || sess.Expires.Sub(sess.Created) != subrole.DashboardSessionTTL || sess.Key != subrole.SessionKey(token) {
		t.Fatalf("session %+v, %v", sess, err)
	}
	if _, _, err := f.svc.StartDashboardSession(ctx, state, "1337", "streamer", 0); subrole.StateReason(err) != subrole.ReasonStateUsed {
		t.Fatalf("the state again: %v", err)
	}
	if got, err := f.svc.DashboardSession(ctx, token); err != nil || got.TwitchUserID != "1337" {
		t.Fatalf("lookup: %+v, %v", got, err)
	}
	for _, bad := range []string{"", "nope", token + "x", string(make([]byte, 1000))} {
		if _, err := f.svc.DashboardSession(ctx, bad); !errors.Is(err, subrole.ErrNoSession) {
			t.Errorf("token %.10q: %v", bad, err)
		}
	}
	f.clock.Add(subrole.DashboardSessionTTL)
	if _, err := f.svc.DashboardSession(ctx, token); !errors.Is(err, subrole.ErrNoSession) {
		t.Fatalf("expired: %v", err)
	}
	f.clock.Add(-time.Hour)
	if err := f.svc.EndDashboardSession(ctx, token); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.DashboardSession(ctx, token); !errors.Is(err, subrole.ErrNoSession) {
		t.Fatalf("ended: %v", err)
	}
}
