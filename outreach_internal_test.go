package subrole

import (
	"testing"
	"time"
)

func TestDecideJoin(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	joinedAt := now.Add(-time.Second)
	on := OutreachPolicy{Welcome: true, FollowUp: 168 * time.Hour}
	prev := OutreachRecord{DiscordUserID: "d", Joined: now.Add(-10 * 24 * time.Hour), JoinedAt: joinedAt.Add(-10 * 24 * time.Hour)}
	for _, c := range []struct {
		name   string
		p      OutreachPolicy
		j      MemberJoin
		linked bool
		rec    OutreachRecord
		found  bool
		now    time.Time
		want   JoinOutcome
	}{
		{"new member", on, MemberJoin{DiscordUserID: "d", JoinedAt: joinedAt}, false, OutreachRecord{}, false, now, JoinQueued},
		{"welcome only", OutreachPolicy{Welcome: true}, MemberJoin{DiscordUserID: "d"}, false, OutreachRecord{}, false, now, JoinQueued},
		{"follow-up only", OutreachPolicy{FollowUp: time.Hour}, MemberJoin{DiscordUserID: "d"}, false, OutreachRecord{}, false, now, JoinQueued},
		{"bot", on, MemberJoin{DiscordUserID: "d", Bot: true}, false, OutreachRecord{}, false, now, JoinBot},
		{"linked", on, MemberJoin{DiscordUserID: "d"}, true, OutreachRecord{}, false, now, JoinLinked},
		{"off", OutreachPolicy{Relink: RelinkAlways}, MemberJoin{DiscordUserID: "d"}, false, OutreachRecord{}, false, now, JoinOff},
		{"same join redelivered", on, MemberJoin{DiscordUserID: "d", JoinedAt: prev.JoinedAt}, false, prev, true, now.Add(100 * 24 * time.Hour), JoinDuplicate},
		{"rejoin within the gap", on, MemberJoin{DiscordUserID: "d", JoinedAt: joinedAt}, false, prev, true, now, JoinDuplicate},
		{"rejoin after the gap", on, MemberJoin{DiscordUserID: "d", JoinedAt: joinedAt}, false, prev, true, prev.Joined.Add(DefaultRejoinGap), JoinQueued},
		{"rejoin after a short custom gap", OutreachPolicy{Welcome: true, RejoinGap: 24 * time.Hour}, MemberJoin{DiscordUserID: "d", JoinedAt: joinedAt}, false, prev, true, now, JoinQueued},
		{"record from a relink only", on, MemberJoin{DiscordUserID: "d", JoinedAt: joinedAt}, false, OutreachRecord{DiscordUserID: "d", RelinkMonth: "2026-11"}, true, now, JoinQueued},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := decideJoin(c.p, c.j, c.linked, c.rec, c.found, c.now); got != c.want {
				t.Errorf("decideJoin = %s, want %s", got, c.want)
			}
		})
	}
}

func TestDecideRelink(t *testing.T) {
	asked := 0
	yes := func() bool { asked++; return true }
	no := func() bool { asked++; return false }
	for _, c := range []struct {
		name        string
		mode        RelinkMode
		last, month string
		connected   func() bool
		want        relinkDecision
		ask         int
	}{
		{"same month", RelinkAlways, "2026-12", "2026-12", no, relinkNothing, 0},
		{"first run", RelinkAlways, "", "2026-12", no, relinkBaseline, 0},
		{"month before the last (zone or clock moved back)", RelinkAlways, "2027-01", "2026-12", no, relinkNothing, 0},
		{"always", RelinkAlways, "2026-11", "2026-12", yes, relinkSend, 0},
		{"auto, not connected", RelinkAuto, "2026-11", "2026-12", no, relinkSend, 1},
		{"auto, connected", RelinkAuto, "2026-11", "2026-12", yes, relinkSkip, 1},
		{"off", RelinkOff, "2026-11", "2026-12", no, relinkSkip, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			asked = 0
			if got := decideRelink(c.mode, c.last, c.month, c.connected); got != c.want || asked != c.ask {
				t.Errorf("decideRelink = %d (asked %d times), want %d (asked %d)", got, asked, c.want, c.ask)
			}
		})
	}
}

func TestDecideSend(t *testing.T) {
	joined := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	rec := OutreachRecord{DiscordUserID: "d", Joined: joined}
	closed := rec
	closed.DMClosed = joined.Add(time.Second)
	closedBefore := rec
	closedBefore.DMClosed = joined.Add(-time.Hour) // refused DMs during an earlier membership
	relinked := rec
	relinked.RelinkMonth = "2026-12"
	welcome := OutreachJob{Kind: OutreachWelcome, DiscordUserID: "d"}
	follow := OutreachJob{Kind: OutreachFollowUp, DiscordUserID: "d"}
	relink := OutreachJob{Kind: OutreachRelink, DiscordUserID: "d", Month: "2026-12"}
	on := OutreachPolicy{Welcome: true, FollowUp: time.Hour, Relink: RelinkAuto}
	for _, c := range []struct {
		name   string
		p      OutreachPolicy
		j      OutreachJob
		rec    OutreachRecord
		linked bool
		want   claimOutcome
	}{
		{"welcome", on, welcome, rec, false, claimSend},
		{"welcome after linking", on, welcome, rec, true, claimCancel},
		{"follow-up", on, follow, rec, false, claimSend},
		{"follow-up after linking", on, follow, rec, true, claimCancel},
		{"follow-up of this join", on, OutreachJob{Kind: OutreachFollowUp, DiscordUserID: "d", Joined: joined}, rec, false, claimSend},
		{"follow-up of an earlier join", on, OutreachJob{Kind: OutreachFollowUp, DiscordUserID: "d", Joined: joined.Add(-31 * 24 * time.Hour)}, rec, false, claimCancel},
		{"follow-up after DMs refused", on, follow, closed, false, claimCancel},
		{"follow-up, DMs refused before this join", on, follow, closedBefore, false, claimSend},
		{"relink", on, relink, rec, true, claimSend},
		{"relink after unlinking", on, relink, rec, false, claimCancel},
		{"relink twice in a month", on, relink, relinked, true, claimCancel},
		{"relink for a month that is over", on, OutreachJob{Kind: OutreachRelink, DiscordUserID: "d", Month: "2026-11"}, rec, true, claimCancel},
		{"unknown kind", on, OutreachJob{Kind: "spam", DiscordUserID: "d"}, rec, false, claimCancel},
		{"welcome turned off", OutreachPolicy{FollowUp: time.Hour}, welcome, rec, false, claimCancel},
		{"follow-up turned off", OutreachPolicy{Welcome: true}, follow, rec, false, claimCancel},
		{"relink turned off", OutreachPolicy{Welcome: true}, relink, rec, true, claimCancel},
		{"relink always", OutreachPolicy{Relink: RelinkAlways}, relink, rec, true, claimSend},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, why := decideSend(c.p, c.j, c.rec, c.linked, "2026-12")
			if got != c.want || (got == claimCancel) != (why != "") {
				t.Errorf("decideSend = %d %q, want %d", got, why, c.want)
			}
		})
	}
}

func TestMonthBoundaries(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	// 2027-01-01 00:00 in Tokyo is still December in UTC.
	newYear := time.Date(2027, 1, 1, 0, 0, 0, 0, tokyo)
	before := newYear.Add(-time.Second)
	if got := monthOf(before, tokyo); got != "2026-12" {
		t.Errorf("month of %v = %s", before, got)
	}
	if got := monthOf(newYear, tokyo); got != "2027-01" {
		t.Errorf("month of %v = %s", newYear, got)
	}
	if got := monthOf(newYear, time.UTC); got != "2026-12" {
		t.Errorf("month of %v in UTC = %s", newYear, got)
	}
	if got := nextMonthStart(before.UTC(), tokyo); !got.Equal(newYear) {
		t.Errorf("next month start after %v = %v, want %v", before, got, newYear)
	}
	if got := nextMonthStart(newYear, tokyo); !got.Equal(time.Date(2027, 2, 1, 0, 0, 0, 0, tokyo)) {
		t.Errorf("next month start after %v = %v", newYear, got)
	}
}
