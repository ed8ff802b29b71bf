package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/subrole/subrole/twitch/twitchtest"
)

func TestParseMix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want eventMix
		err  bool
	}{
		{"subscribe=1", eventMix{Subscribe: 1}, false},
		{"subscribe=60, resub=25,end=10,gift=5", eventMix{60, 25, 10, 5}, false},
		{"gift=3,", eventMix{Gift: 3}, false},
		{"subscribe=0", eventMix{}, true},
		{"raid=1", eventMix{}, true},
		{"subscribe", eventMix{}, true},
		{"subscribe=-1", eventMix{}, true},
	} {
		got, err := parseMix(tc.in)
		if (err != nil) != tc.err || (err == nil && got != tc.want) {
			t.Errorf("parseMix(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestPercentiles(t *testing.T) {
	ms := func(n ...int) latencies {
		var l latencies
		for _, x := range n {
			l = append(l, time.Duration(x)*time.Millisecond)
		}
		return l
	}
	for _, tc := range []struct {
		l    latencies
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 100, 4 * time.Millisecond},
		{ms(5, 1, 4, 2, 3), 50, 3 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
	} {
		if got := tc.l.sorted().pct(tc.p); got != tc.want {
			t.Errorf("pct(%v, %v) = %v, want %v", tc.l, tc.p, got, tc.want)
		}
	}
	if m := median([]float64{3, 1, 2, 4}); m != 2.5 {
		t.Errorf("median = %v, want 2.5", m)
	}
}

func TestLoadGenDuplicates(t *testing.T) {
	gen := newLoadGen(&twitchtest.Sender{Secret: worldEventSubToken}, genSpec{Users: 10, DupRatio: 0.3, Seed: 1,
		Mix: eventMix{Subscribe: 1, Resub: 1, End: 1, Gift: 1}})
	seen := map[string]bool{}
	dups := 0
	for range 1000 {
		m, dup := gen.message()
		if dup != seen[m.ID] {
			t.Fatalf("message %s: dup=%v but seen before=%v", m.ID, dup, seen[m.ID])
		}
		seen[m.ID] = true
		if dup {
			dups++
		}
	}
	if dups < 200 || dups > 400 {
		t.Fatalf("%d of 1000 repeated, want about 300", dups)
	}
}

// TestRunLoadCountsFromDueTime checks that an open-loop run measures latency
// from when each event was due, so a slow server is not hidden by the
// load generator waiting for it.
func TestRunLoadCountsFromDueTime(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	s := &twitchtest.Sender{Callback: srv.URL, Secret: worldEventSubToken}
	var n atomic.Int64
	res := runLoad(context.Background(), newLoadClient(1), srv.URL, loadSpec{Conns: 1, Rate: 500, Count: 10},
		func() (twitchtest.Message, bool, bool) {
			n.Add(1)
			return s.Subscribe("1", "a", "1000", false), false, true
		}, nil)
	if res.Acked != 10 || n.Load() != 10 {
		t.Fatalf("acked %d, built %d, want 10", res.Acked, n.Load())
	}
	// The tenth event was due 18 ms in but could only start after nine
	// 20 ms answers.
	if worst := res.ackLatencies(time.Time{}, time.Time{}).sorted().pct(100); worst < 150*time.Millisecond {
		t.Fatalf("worst latency %v: measured from the send, not from the due time", worst)
	}
}

// TestBenchLoadCommand runs "subrole bench load" through run() against the
// in-memory webhook, once with the right secret and once with a wrong one.
func TestBenchLoadCommand(t *testing.T) {
	srv, err := startWebhookTarget(targetMemory, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	for _, tc := range []struct {
		secret string
		want   []string
	}{
		{worldEventSubToken, []string{"acknowledged 200", "errors: none"}},
		{"wrong-secret-0123", []string{"acknowledged 0", "status 403 ×200"}},
	} {
		var out, errs bytes.Buffer
		err := run(context.Background(), []string{"subrole", "bench", "load", "-url", srv.url, "-secret", tc.secret,
			"-n", "200", "-conns", "4", "-mix", "subscribe=2,resub=1,end=1,gift=1", "-dups", "0.1"}, func(string) string { return "" }, &out, &errs)
		if err != nil {
			t.Fatalf("%v\n%s", err, errs.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("output does not say %q:\n%s", w, out.String())
			}
		}
	}
}

// TestWebhookTargets checks that every webhook benchmark target acknowledges
// signed events and refuses forged ones, and that the durable ones commit.
func TestWebhookTargets(t *testing.T) {
	for _, target := range append(webhookTargets, targetNoCore) {
		t.Run(target, func(t *testing.T) {
			o, err := measureWebhook(context.Background(), t.TempDir(), webhookRun{target: target, conns: 8, count: 200})
			if err != nil {
				t.Fatal(err)
			}
			if o.res.Acked != 200 {
				t.Fatalf("acked %d of 200", o.res.Acked)
			}
			if target != targetMemory && o.perCommit <= 0 {
				t.Fatal("no commit counted")
			}
		})
	}
}
