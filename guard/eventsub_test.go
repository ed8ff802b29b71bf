package guard_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/eventsub"
	"github.com/subrole/subrole/guard"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// countingSink accepts every event.
type countingSink struct{ events atomic.Int64 }

func (s *countingSink) AcceptEvent(context.Context, subrole.Event) (bool, error) {
	s.events.Add(1)
	return false, nil
}
func (s *countingSink) RecordRevocation(context.Context, string, subrole.Revocation) (bool, error) {
	return false, nil
}

const secret = "guard-test-eventsub-secret"

// webhookServer is the EventSub webhook behind a Guard wired the way the
// service wires it, with the tightest rate limit there is.
func webhookServer(t *testing.T) (*guard.Guard, *httptest.Server, *countingSink) {
	t.Helper()
	var g *guard.Guard
	sink := &countingSink{}
	hook := &eventsub.Handler{
		Secret:     secret,
		Sink:       sink,
		OnVerified: func(r *http.Request) { g.Verified(r) },
		OnRejected: func(r *http.Request, reason string) {
			switch reason {
			case eventsub.ReasonBadSignature, eventsub.ReasonMalformedSignature, eventsub.ReasonMissingHeader:
				g.Report(r, guard.KindBadSignature)
			}
		},
	}
	g = newGuard(t, guard.Config{
		Rate: 1, Burst: 1,
		Exempt: func(r *http.Request) bool { return r.URL.Path == "/twitch_eventsub" },
	})
	mux := http.NewServeMux()
	mux.Handle("/twitch_eventsub", hook)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	srv := httptest.NewServer(g.Handler(mux))
	t.Cleanup(srv.Close)
	return g, srv, sink
}

// TestValidWebhookBurstNeverCounts sends 10,000 validly signed events from
// one address through a guard allowing one request per second: every one is
// accepted, and the address is neither banned nor charged.
func TestValidWebhookBurstNeverCounts(t *testing.T) {
	g, srv, sink := webhookServer(t)
	tw := &twitchtest.Sender{Secret: secret, Callback: srv.URL + "/twitch_eventsub"}
	const total, workers = 10_000, 16
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= total; i = next.Add(1) {
				status, _, err := tw.Send(context.Background(), tw.Subscribe("1000", "viewer", "1000", false))
				if err != nil || status != http.StatusNoContent {
					if failed.Add(1) == 1 {
						t.Errorf("event %d: %d %v", i, status, err)
					}
				}
			}
		})
	}
	wg.Wait()
	if n := sink.events.Load(); n != total || failed.Load() != 0 {
		t.Fatalf("%d of %d events accepted, %d failed", n, total, failed.Load())
	}
	if bans := g.Bans(true); len(bans) != 0 {
		t.Fatalf("the burst got someone banned: %+v", bans)
	}
	// The same address still has its whole bucket for other requests.
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after the burst, the sender's address got %d", resp.StatusCode)
	}
}

// TestBannedAddressStillDeliversSignedEvents: bad signatures ban their
// sender, yet a validly signed event from the banned address is accepted.
func TestBannedAddressStillDeliversSignedEvents(t *testing.T) {
	g, srv, sink := webhookServer(t)
	tw := &twitchtest.Sender{Secret: secret, Callback: srv.URL + "/twitch_eventsub"}
	forger := &twitchtest.Sender{Secret: "not-the-secret-at-all", Callback: srv.URL + "/twitch_eventsub"}
	for i := range guard.DefaultThreshold(guard.KindBadSignature).Count {
		status, _, err := forger.Send(context.Background(), forger.Subscribe("1", "x", "1000", false))
		if err != nil || status != http.StatusForbidden {
			t.Fatalf("forgery %d: %d %v", i, status, err)
		}
	}
	if _, banned := g.Banned(netip.MustParseAddr("127.0.0.1")); !banned {
		t.Fatal("bad signatures did not ban their sender")
	}
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("banned address got %d on another path", resp.StatusCode)
	}
	status, _, err := tw.Send(context.Background(), tw.Subscribe("1000", "viewer", "1000", false))
	if err != nil || status != http.StatusNoContent || sink.events.Load() != 1 {
		t.Fatalf("signed event from a banned address: %d %v", status, err)
	}
}
