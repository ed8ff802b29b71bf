package web

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"github.com/subrole/subrole"
)

// feedFrames is how many rendered audit entries the live feed keeps per
// language for the open feeds to share.
const feedFrames = 2048

// frame is one audit entry rendered as a Server-Sent Event.
type frame struct {
	seq  uint64
	data []byte // never changed once made
}

// frameCache holds the newest audit entries of one language, rendered once
// for every open feed: with fifty dashboards open, an entry is read from
// the store and encoded once, not fifty times, and a feed only copies
// bytes. frames are contiguous: every entry after base up to the last
// frame, in log order.
type frameCache struct {
	mu     sync.Mutex
	base   uint64
	frames []frame
	primed bool
	gen    uint64 // the broadcasts (dashboard.gen) before the last read of the store
}

// framesAfter returns up to feedBatch rendered entries after position
// after, reading new ones from the store when the cache has none or was
// last read before the latest broadcast, or ok false when after is older
// than the cache reaches (the feed then reads for itself).
func (h *Handler) framesAfter(ctx context.Context, lang string, after uint64) (out []frame, ok bool, err error) {
	// The feed took its wake-up before it asked: the entries of every
	// broadcast until now must be in what it gets when it reaches the top,
	// or it waits for the next broadcast with the newest entries unseen.
	gen := h.dash.generation()
	c := h.dash.cache(lang)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.primed { // start at the feed that asks first
		c.base, c.primed = after, true
	}
	if after < c.base {
		return nil, false, nil
	}
	top := c.base
	if n := len(c.frames); n > 0 {
		top = c.frames[n-1].seq
	}
	i := sort.Search(len(c.frames), func(i int) bool { return c.frames[i].seq > after })
	if after >= top || c.gen < gen && len(c.frames)-i < feedBatch {
		n := feedBatch
		entries, err := h.cfg.Dashboard.AuditAfter(ctx, top, n)
		if err != nil {
			return nil, true, err
		}
		if len(entries) == n && entries[n-1].Seq < after {
			// The cache lags further behind this feed than one read (no feed
			// was open while entries were committed): start it again here
			// instead of creeping up one read per wake-up while this feed
			// shows nothing. Feeds behind it read for themselves.
			c.base, c.frames = after, nil
			if entries, err = h.cfg.Dashboard.AuditAfter(ctx, after, n); err != nil {
				return nil, true, err
			}
		}
		c.gen = max(c.gen, gen)
		c.frames = h.appendFrames(ctx, c.frames, entries, lang)
		if over := len(c.frames) - feedFrames; over > 0 {
			c.base = c.frames[over-1].seq
			c.frames = append([]frame(nil), c.frames[over:]...)
		}
		if after < c.base {
			return nil, false, nil
		}
	}
	i = sort.Search(len(c.frames), func(i int) bool { return c.frames[i].seq > after })
	end := min(len(c.frames), i+feedBatch)
	return append([]frame(nil), c.frames[i:end]...), true, nil
}

// appendFrames renders audit entries as Server-Sent Events whose ids are
// their positions in the log, and appends them to frames.
func (h *Handler) appendFrames(ctx context.Context, frames []frame, entries []subrole.AuditEntry, lang string) []frame {
	names := h.auditNames(ctx, entries)
	for _, e := range entries {
		data, _ := json.Marshal(h.entry(e, lang, names))
		frames = append(frames, frame{e.Seq, fmt.Appendf(nil, "id: %d\nevent: audit\ndata: %s\n\n", e.Seq, data)})
	}
	return frames
}

// cache returns the frame cache of a language.
func (d *dashboard) cache(lang string) *frameCache {
	d.framesMu.Lock()
	defer d.framesMu.Unlock()
	c := d.frames[lang]
	if c == nil {
		c = &frameCache{}
		d.frames[lang] = c
	}
	return c
}

// feedFrames returns the next batch of a feed: from the shared cache, or,
// for a feed further behind than the cache reaches (a browser resuming
// after a long absence), read and rendered for this feed alone.
func (h *Handler) feedFrames(ctx context.Context, lang string, after uint64) ([]frame, error) {
	frames, ok, err := h.framesAfter(ctx, lang, after)
	if ok || err != nil {
		return frames, err
	}
	entries, err := h.cfg.Dashboard.AuditAfter(ctx, after, feedBatch)
	if err != nil {
		return nil, err
	}
	return h.appendFrames(ctx, make([]frame, 0, len(entries)), entries, lang), nil
}
