package subrole

import (
	"slices"
	"testing"
	"time"
)

const (
	roleLinked = "100"
	roleT1     = "101"
	roleT2     = "102"
	roleT3     = "103"
	roleSub    = "109"
)

func testPolicy(mode TierMode, grace time.Duration) Policy {
	return Policy{Linked: roleLinked, Tier1: roleT1, Tier2: roleT2, Tier3: roleT3, Subscriber: roleSub, Mode: mode, Grace: grace}
}

func TestDesiredRoles(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	linked := Link{DiscordUserID: "42", TwitchUserID: "7"}
	active := func(tier Tier) Subscription {
		return Subscription{TwitchUserID: "7", Tier: tier, Started: now.Add(-time.Hour)}
	}
	ended := func(tier Tier, ago time.Duration) Subscription {
		s := active(tier)
		s.Ended = now.Add(-ago)
		return s
	}
	gift := active(Tier2)
	gift.IsGift = true

	tests := []struct {
		name   string
		policy Policy
		member Member
		want   []string
	}{
		{"unlinked subscriber holds nothing", testPolicy(Exclusive, 0), Member{Sub: active(Tier3)}, nil},
		{"linked, never subscribed", testPolicy(Exclusive, 0), Member{Link: linked}, []string{roleLinked}},
		{"exclusive tier 1", testPolicy(Exclusive, 0), Member{linked, active(Tier1)}, []string{roleLinked, roleT1, roleSub}},
		{"exclusive tier 2", testPolicy(Exclusive, 0), Member{linked, active(Tier2)}, []string{roleLinked, roleT2, roleSub}},
		{"exclusive tier 3", testPolicy(Exclusive, 0), Member{linked, active(Tier3)}, []string{roleLinked, roleT3, roleSub}},
		{"cumulative tier 1", testPolicy(Cumulative, 0), Member{linked, active(Tier1)}, []string{roleLinked, roleT1, roleSub}},
		{"cumulative tier 2", testPolicy(Cumulative, 0), Member{linked, active(Tier2)}, []string{roleLinked, roleT1, roleT2, roleSub}},
		{"cumulative tier 3", testPolicy(Cumulative, 0), Member{linked, active(Tier3)}, []string{roleLinked, roleT1, roleT2, roleT3, roleSub}},
		{"gift counts like paid", testPolicy(Exclusive, 0), Member{linked, gift}, []string{roleLinked, roleT2, roleSub}},
		{"ended without grace", testPolicy(Exclusive, 0), Member{linked, ended(Tier2, time.Second)}, []string{roleLinked}},
		{"ended inside grace", testPolicy(Exclusive, 72*time.Hour), Member{linked, ended(Tier2, time.Hour)}, []string{roleLinked, roleT2, roleSub}},
		{"ended inside grace, cumulative", testPolicy(Cumulative, 72*time.Hour), Member{linked, ended(Tier3, time.Hour)}, []string{roleLinked, roleT1, roleT2, roleT3, roleSub}},
		{"grace runs out exactly now", testPolicy(Exclusive, time.Hour), Member{linked, ended(Tier2, time.Hour)}, []string{roleLinked}},
		{"ended after grace", testPolicy(Exclusive, time.Hour), Member{linked, ended(Tier1, 2*time.Hour)}, []string{roleLinked}},
		{"no subscriber role configured", Policy{Linked: roleLinked, Tier1: roleT1, Tier2: roleT2, Tier3: roleT3}, Member{linked, active(Tier1)}, []string{roleLinked, roleT1}},
		{"no linked role configured", Policy{Tier1: roleT1, Tier2: roleT2, Tier3: roleT3}, Member{Link: linked}, []string{}},
		{"one role for every tier", Policy{Tier1: roleT1, Tier2: roleT1, Tier3: roleT1, Mode: Cumulative}, Member{linked, active(Tier3)}, []string{roleT1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DesiredRoles(tt.policy, tt.member, now)
			if !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("DesiredRoles = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestTierTransitions walks every pair of states (none, tier 1-3) in both
// modes and checks that Diff turns the first state's roles into the second's.
func TestTierTransitions(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	link := Link{DiscordUserID: "42", TwitchUserID: "7"}
	other := "999" // a role subrole does not manage
	for _, mode := range []TierMode{Exclusive, Cumulative} {
		p := testPolicy(mode, 0)
		for from := TierNone; from <= Tier3; from++ {
			for to := TierNone; to <= Tier3; to++ {
				t.Run(mode.String()+"/"+from.String()+"->"+to.String(), func(t *testing.T) {
					actual := append(DesiredRoles(p, Member{link, Subscription{Tier: from}}, now), other)
					desired := DesiredRoles(p, Member{link, Subscription{Tier: to}}, now)
					c := Diff(actual, desired, p.Managed())
					result := apply(actual, c)
					want := append(slices.Clone(desired), other)
					slices.Sort(want)
					if !slices.Equal(result, want) {
						t.Fatalf("after %+v: %v, want %v", c, result, want)
					}
					if from == to && !c.Empty() {
						t.Fatalf("no transition but change %+v", c)
					}
					if slices.Contains(c.Remove, other) {
						t.Fatal("removed a role subrole does not manage")
					}
				})
			}
		}
	}
}

func apply(roles []string, c RoleChange) []string {
	out := slices.DeleteFunc(slices.Clone(roles), func(r string) bool { return slices.Contains(c.Remove, r) })
	out = append(out, c.Add...)
	slices.Sort(out)
	return out
}

func TestDiff(t *testing.T) {
	managed := []string{"1", "2", "3"}
	tests := []struct {
		name                string
		actual, desired     []string
		wantAdd, wantRemove []string
	}{
		{"nothing to do", []string{"1", "9"}, []string{"1"}, nil, nil},
		{"add", []string{"9"}, []string{"1", "2"}, []string{"1", "2"}, nil},
		{"remove managed only", []string{"1", "2", "9"}, nil, nil, []string{"1", "2"}},
		{"swap", []string{"1"}, []string{"3"}, []string{"3"}, []string{"1"}},
		{"unmanaged desired role never added", nil, []string{"8"}, nil, nil},
		{"duplicates and unsorted input", []string{"2", "2", "1"}, []string{"3", "3"}, []string{"3"}, []string{"1", "2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Diff(tt.actual, tt.desired, managed)
			if !slices.Equal(c.Add, tt.wantAdd) || !slices.Equal(c.Remove, tt.wantRemove) {
				t.Errorf("Diff = %+v, want add %v remove %v", c, tt.wantAdd, tt.wantRemove)
			}
		})
	}
}

func TestParseTier(t *testing.T) {
	for in, want := range map[string]Tier{"1000": Tier1, "2000": Tier2, "3000": Tier3} {
		if got, err := ParseTier(in); err != nil || got != want {
			t.Errorf("ParseTier(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "prime", "1", "4000", "1000 "} {
		if _, err := ParseTier(in); err == nil {
			t.Errorf("ParseTier(%q) succeeded", in)
		}
	}
}

func TestGraceEnds(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	p := testPolicy(Exclusive, 24*time.Hour)
	s := Subscription{Tier: Tier1, Ended: now.Add(-time.Hour)}
	if end, ok := p.GraceEnds(s, now); !ok || !end.Equal(now.Add(23*time.Hour)) {
		t.Fatalf("GraceEnds = %v, %v", end, ok)
	}
	if _, ok := p.GraceEnds(Subscription{Tier: Tier1}, now); ok {
		t.Fatal("active subscription has a grace end")
	}
	if _, ok := testPolicy(Exclusive, 0).GraceEnds(s, now); ok {
		t.Fatal("grace end without grace")
	}
}
