package subrole

import (
	"slices"
	"time"
)

// TierMode says which tier roles a subscriber holds.
type TierMode int

// The tier modes.
const (
	// Exclusive gives only the current tier's role (the default).
	Exclusive TierMode = iota
	// Cumulative gives the current tier's role and every lower one: tier 3 holds 1, 2 and 3.
	Cumulative
)

// String returns "exclusive" or "cumulative".
func (m TierMode) String() string {
	if m == Cumulative {
		return "cumulative"
	}
	return "exclusive"
}

// Policy maps subscription state to Discord role IDs. An empty role ID means
// that role is not used. The zero Policy manages no roles.
type Policy struct {
	Linked     string        // held by every linked member
	Tier1      string        // held by tier 1 subscribers (Prime included)
	Tier2      string        // held by tier 2 subscribers
	Tier3      string        // held by tier 3 subscribers
	Subscriber string        // held by every subscriber, whatever the tier
	Mode       TierMode      // Exclusive or Cumulative
	Grace      time.Duration // how long roles stay after a subscription ends; 0 removes them at once
}

// tierRole returns the role for tier t, or "" when unused.
func (p Policy) tierRole(t Tier) string {
	switch t {
	case Tier1:
		return p.Tier1
	case Tier2:
		return p.Tier2
	case Tier3:
		return p.Tier3
	}
	return ""
}

// Managed returns every role the policy manages, sorted and without
// duplicates. Roles outside this set are never added or removed.
func (p Policy) Managed() []string {
	return normalize([]string{p.Linked, p.Tier1, p.Tier2, p.Tier3, p.Subscriber})
}

// EffectiveTier returns the tier m's roles should reflect at now: the
// subscription's tier while it is active or inside the grace period after its
// end, otherwise TierNone.
func (p Policy) EffectiveTier(s Subscription, now time.Time) Tier {
	if !s.Tier.Valid() {
		return TierNone
	}
	if s.Ended.IsZero() {
		return s.Tier
	}
	if p.Grace > 0 && now.Before(s.Ended.Add(p.Grace)) {
		return s.Tier
	}
	return TierNone
}

// GraceEnds returns when the grace period of an ended subscription runs out,
// and false when there is nothing to wait for (active, never subscribed, no
// grace, or already past).
func (p Policy) GraceEnds(s Subscription, now time.Time) (time.Time, bool) {
	if !s.Tier.Valid() || s.Ended.IsZero() || p.Grace <= 0 {
		return time.Time{}, false
	}
	end := s.Ended.Add(p.Grace)
	return end, now.Before(end)
}

// DesiredRoles returns the managed roles member m should hold at now, sorted.
// A member without a link (empty DiscordUserID) holds none.
func DesiredRoles(p Policy, m Member, now time.Time) []string {
	if m.Link.DiscordUserID == "" {
		return nil
	}
	roles := []string{p.Linked}
	tier := p.EffectiveTier(m.Sub, now)
	if tier.Valid() {
		roles = append(roles, p.Subscriber, p.tierRole(tier))
		if p.Mode == Cumulative {
			for t := Tier1; t < tier; t++ {
				roles = append(roles, p.tierRole(t))
			}
		}
	}
	return normalize(roles)
}

// RoleChange is the difference between the roles a member holds and the roles
// they should hold. Both lists are sorted.
type RoleChange struct {
	Add    []string
	Remove []string
}

// Empty reports whether there is nothing to change.
func (c RoleChange) Empty() bool { return len(c.Add) == 0 && len(c.Remove) == 0 }

// Diff returns the adds and removes that turn actual into desired, touching
// only roles in managed: a role outside managed is never removed, and a
// desired role outside managed is never added.
func Diff(actual, desired, managed []string) RoleChange {
	var c RoleChange
	for _, r := range normalize(desired) {
		if slices.Contains(managed, r) && !slices.Contains(actual, r) {
			c.Add = append(c.Add, r)
		}
	}
	for _, r := range normalize(actual) {
		if slices.Contains(managed, r) && !slices.Contains(desired, r) {
			c.Remove = append(c.Remove, r)
		}
	}
	return c
}

// normalize returns roles sorted, without empty IDs and duplicates, in a new slice.
func normalize(roles []string) []string {
	out := make([]string, 0, len(roles))
	for _, r := range roles {
		if r != "" {
			out = append(out, r)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
