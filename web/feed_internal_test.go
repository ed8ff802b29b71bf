package web

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/subrole/subrole"
)

// memAudit is an audit log in memory for the frame cache's tests.
type memAudit struct {
	DashboardCore // only AuditAfter and AuditNames are used
	mu            sync.Mutex
	entries       []subrole.AuditEntry
}

func (m *memAudit) add(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for range n {
		m.entries = append(m.entries, subrole.AuditEntry{Seq: uint64(len(m.entries) + 1), Kind: subrole.AuditNotice})
	}
}

// AuditNames knows no names.
func (m *memAudit) AuditNames(context.Context, []subrole.AuditEntry) (subrole.Names, error) {
	return subrole.Names{}, nil
}

func (m *memAudit) AuditAfter(_ context.Context, after uint64, max int) ([]subrole.AuditEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []subrole.AuditEntry
	for _, e := range m.entries {
		if e.Seq > after && len(out) < max {
			out = append(out, e)
		}
	}
	return out, nil
}

func seqs(frames []frame) []uint64 {
	var out []uint64
	for _, f := range frames {
		out = append(out, f.seq)
	}
	return out
}

// TestFramesAfterSeesAnnouncedCommits: a feed woken by a broadcast must get
// every entry committed before it, even when another feed filled the cache
// just before that commit. Otherwise the feed is told it is at the top,
// waits for the next broadcast, and the newest entry stays off its page
// until something else is committed.
func TestFramesAfterSeesAnnouncedCommits(t *testing.T) {
	log := &memAudit{}
	h := &Handler{cfg: Config{Dashboard: log}, dash: newDashboard(&Config{})}
	ctx := context.Background()
	log.add(10)
	if _, ok, err := h.framesAfter(ctx, "en", 10); !ok || err != nil { // two feeds at 10
		t.Fatal(ok, err)
	}
	log.add(1) // 11
	h.dash.broadcast()
	if got, _, _ := h.framesAfter(ctx, "en", 10); !slices.Equal(seqs(got), []uint64{11}) { // the first feed
		t.Fatalf("first feed got %v, want [11]", seqs(got))
	}
	log.add(1) // 12, announced before the second feed asks
	h.dash.broadcast()
	got, _, _ := h.framesAfter(ctx, "en", 10) // the second feed, woken by both broadcasts
	if !slices.Equal(seqs(got), []uint64{11, 12}) {
		t.Fatalf("second feed got %v, want [11 12]", seqs(got))
	}
}
