package guard

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"
)

// BanStore keeps ban records across restarts; *store.Store implements it
// with a bucket in the service's bbolt file. Keys are prefixes in canonical
// form ("203.0.113.7/32", "2001:db8:1:2::/64"); values are records encoded
// by guard, opaque to the store.
type BanStore interface {
	// LoadBans returns every stored record by key.
	LoadBans(ctx context.Context) (map[string][]byte, error)
	// WriteBans stores the records in one transaction, returning once they
	// are on disk; a nil value deletes its key, a missing key is no error.
	WriteBans(ctx context.Context, records map[string][]byte) error
}

// Ban is one entry of the ban list. Expired automatic bans are kept for
// Config.StrikeMemory, so that the next ban of the same client lasts longer.
type Ban struct {
	// Prefix is what is banned: an IPv4 address (/32), an IPv6 prefix (/64
	// by default) or any prefix an operator banned.
	Prefix netip.Prefix `json:"prefix"`
	// Reason is the Kind of abuse, or the operator's note.
	Reason string `json:"reason"`
	// Created is when this prefix was first banned, Updated when the current
	// ban began.
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Until is when the ban ends; zero for a permanent (manual) ban.
	Until time.Time `json:"until,omitzero"`
	// Strikes counts automatic bans of this prefix within StrikeMemory of
	// each other.
	Strikes int `json:"strikes"`
	// Manual is set for bans made with Guard.Ban (subrole ban add).
	Manual bool `json:"manual,omitempty"`
}

// Permanent reports whether the ban never ends.
func (b Ban) Permanent() bool { return b.Until.IsZero() }

// Active reports whether the ban is in force at now.
func (b Ban) Active(now time.Time) bool { return b.Permanent() || now.Before(b.Until) }

// load reads the stored bans.
func (g *Guard) load(ctx context.Context) error {
	if g.store == nil {
		return nil
	}
	recs, err := g.store.LoadBans(ctx)
	if err != nil {
		return fmt.Errorf("guard: load bans: %w", err)
	}
	now := g.now()
	stale := map[string][]byte{}
	for k, v := range recs {
		var b Ban
		if err := json.Unmarshal(v, &b); err != nil || !b.Prefix.IsValid() || b.Prefix.String() != k {
			g.log.Error("guard: dropping unreadable ban record", slog.String("prefix", clip(k)))
			stale[k] = nil
			continue
		}
		if !b.Permanent() && now.Sub(b.Until) > g.memory {
			stale[k] = nil
			continue
		}
		g.putLocked(&b)
	}
	if len(stale) > 0 {
		if err := g.store.WriteBans(ctx, stale); err != nil {
			return fmt.Errorf("guard: prune bans: %w", err)
		}
	}
	return nil
}

// activeBanLocked returns the ban in force covering ip, nil if none. g.mu
// must be held.
func (g *Guard) activeBanLocked(ip netip.Addr, now time.Time) *Ban {
	off := 0
	if ip.Is4() {
		off = 200
	}
	for l, n := range g.banLens {
		if n == 0 || (l >= 200) != ip.Is4() {
			continue
		}
		p, err := ip.Prefix(l - off)
		if err != nil {
			continue
		}
		if b := g.bans[p]; b != nil && b.Active(now) {
			return b
		}
	}
	return nil
}

// lenKey is the key of p's length in banLens; IPv4 lengths are offset so
// the two families do not mix.
func lenKey(p netip.Prefix) int {
	if p.Addr().Is4() {
		return p.Bits() + 200
	}
	return p.Bits()
}

func (g *Guard) putLocked(b *Ban) {
	if _, ok := g.bans[b.Prefix]; !ok {
		g.banLens[lenKey(b.Prefix)]++
	}
	g.bans[b.Prefix] = b
}

func (g *Guard) removeLocked(p netip.Prefix) {
	if _, ok := g.bans[p]; ok {
		delete(g.bans, p)
		if g.banLens[lenKey(p)]--; g.banLens[lenKey(p)] <= 0 {
			delete(g.banLens, lenKey(p))
		}
	}
}

// banLocked bans key automatically for reason, escalating when the last
// ban is recent. g.mu must be held. It returns a copy of the new ban.
func (g *Guard) banLocked(key netip.Prefix, reason string, now time.Time) *Ban {
	b := g.bans[key]
	if b == nil {
		b = &Ban{Prefix: key, Created: now}
	}
	if b.Manual && b.Active(now) {
		c := *b
		return &c // already banned by an operator
	}
	if b.Strikes > 0 && now.Sub(b.Until) <= g.memory {
		b.Strikes++
	} else {
		b.Strikes = 1
	}
	d := g.banBase
	for i := 1; i < b.Strikes && d < g.banMax; i++ {
		d *= 4
	}
	d = min(d, g.banMax)
	b.Reason, b.Updated, b.Until, b.Manual = reason, now, now.Add(d), false
	g.putLocked(b)
	c := *b
	return &c
}

func (g *Guard) logBan(b *Ban, ip netip.Addr, kind Kind, path string) {
	g.log.Warn("guard: client banned",
		slog.String("security_event", "ban"),
		slog.String("remote_ip", ip.String()),
		slog.String("reason", string(kind)),
		slog.String("prefix", b.Prefix.String()),
		slog.Time("until", b.Until),
		slog.Duration("duration", b.Until.Sub(b.Updated)),
		slog.Int("strikes", b.Strikes),
		slog.String("path", clip(path)))
}

// Ban bans prefix for d (zero: until removed) with the operator's reason,
// replacing any ban of exactly that prefix, and returns once it is stored.
func (g *Guard) Ban(ctx context.Context, prefix netip.Prefix, d time.Duration, reason string) (Ban, error) {
	if !prefix.IsValid() {
		return Ban{}, fmt.Errorf("guard: ban: invalid prefix")
	}
	if d < 0 {
		return Ban{}, fmt.Errorf("guard: ban: negative duration %v", d)
	}
	prefix = prefix.Masked()
	if reason == "" {
		reason = "manual"
	}
	now := g.now()
	g.mu.Lock()
	b := &Ban{Prefix: prefix, Created: now}
	if old := g.bans[prefix]; old != nil {
		b.Created, b.Strikes = old.Created, old.Strikes
	}
	b.Reason, b.Updated, b.Manual = reason, now, true
	if d > 0 {
		b.Until = now.Add(d)
	}
	g.putLocked(b)
	c := *b
	g.mu.Unlock()
	g.log.Warn("guard: client banned by an operator",
		slog.String("security_event", "ban"),
		slog.String("prefix", prefix.String()),
		slog.String("reason", clip(reason)),
		slog.Time("until", c.Until))
	return c, g.write(ctx, &c, nil, true)
}

// Unban lifts the bans matching prefix: the ban of exactly that prefix, or,
// for a single address, every ban containing it. Expired bans are removed
// too, so their strikes are forgotten. It returns the removed bans, once the
// removal is stored.
func (g *Guard) Unban(ctx context.Context, prefix netip.Prefix) ([]Ban, error) {
	prefix = prefix.Masked()
	single := prefix.IsSingleIP()
	g.mu.Lock()
	var removed []Ban
	for p, b := range g.bans {
		if p == prefix || single && p.Contains(prefix.Addr()) {
			removed = append(removed, *b)
			g.removeLocked(p)
		}
	}
	g.mu.Unlock()
	sortBans(removed)
	if len(removed) == 0 {
		return nil, nil
	}
	var keys []string
	for _, b := range removed {
		keys = append(keys, b.Prefix.String())
		g.log.Warn("guard: ban lifted by an operator",
			slog.String("security_event", "unban"),
			slog.String("prefix", b.Prefix.String()),
			slog.String("reason", b.Reason))
	}
	return removed, g.write(ctx, nil, keys, true)
}

// Bans returns the bans in force, or with all every record kept (expired
// bans within their strike memory too), sorted by prefix.
func (g *Guard) Bans(all bool) []Ban {
	now := g.now()
	g.mu.Lock()
	var out []Ban
	for _, b := range g.bans {
		if all || b.Active(now) {
			out = append(out, *b)
		}
	}
	g.mu.Unlock()
	sortBans(out)
	return out
}

// Banned returns the ban in force covering ip, if any.
func (g *Guard) Banned(ip netip.Addr) (Ban, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if b := g.activeBanLocked(ip.Unmap(), g.now()); b != nil {
		return *b, true
	}
	return Ban{}, false
}

func sortBans(bs []Ban) {
	slices.SortFunc(bs, func(a, b Ban) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits())
	})
}

// persist queues an automatic ban for the store without waiting.
func (g *Guard) persist(b *Ban) {
	if err := g.write(context.Background(), b, nil, false); err != nil {
		g.log.Error("guard: storing a ban failed; it holds until restart", slog.String("prefix", b.Prefix.String()), slog.Any("error", err))
	}
}

// write queues a ban to store (b) or keys to delete, and makes sure they
// reach the store: the first caller writes everything queued, in one
// transaction, until nothing is left; callers arriving meanwhile only queue,
// and with wait they return once their change has been written.
func (g *Guard) write(ctx context.Context, b *Ban, del []string, wait bool) error {
	if g.store == nil {
		return nil
	}
	g.pmu.Lock()
	defer g.pmu.Unlock()
	if b != nil {
		v, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("guard: encode ban %s: %w", b.Prefix, err)
		}
		g.pending[b.Prefix.String()] = v
	}
	for _, k := range del {
		g.pending[k] = nil
	}
	g.gen++
	mine := g.gen
	if g.flushing {
		if !wait {
			return nil
		}
		for g.flushedGen < mine {
			g.pcond.Wait()
		}
		return g.flushErr
	}
	g.flushing = true
	var mineErr error
	for len(g.pending) > 0 {
		batch, upto := g.pending, g.gen
		g.pending = map[string][]byte{}
		g.pmu.Unlock()
		err := g.store.WriteBans(context.WithoutCancel(ctx), batch)
		g.pmu.Lock()
		if err != nil {
			err = fmt.Errorf("guard: store bans: %w", err)
		}
		if g.flushedGen < mine && upto >= mine {
			mineErr = err
		}
		g.flushedGen, g.flushErr = upto, err
		g.pcond.Broadcast()
	}
	g.flushing = false
	return mineErr
}
