package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/eventsub"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch"
)

// countingAPI is an eventsub.API that only counts list calls.
type countingAPI struct{ lists atomic.Int32 }

func (a *countingAPI) ListSubscriptions(context.Context) ([]eventsub.Registration, error) {
	a.lists.Add(1)
	return nil, nil
}
func (a *countingAPI) CreateSubscription(_ context.Context, s eventsub.Registration, _ string) (eventsub.Registration, error) {
	s.ID, s.Status = "x", eventsub.StatusEnabled
	return s, nil
}
func (a *countingAPI) DeleteSubscription(context.Context, string) error { return nil }

// TestEventSubWaitsForTLS: no subscription is touched before HTTPS has a
// certificate (Twitch's verification request would fail), then at once.
func TestEventSubWaitsForTLS(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "subrole.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tc, err := twitch.New(twitch.Config{ClientID: "id", ClientSecret: "secret", APIURL: "http://127.0.0.1:1", AuthURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	api := &countingAPI{}
	h := newHealing()
	h.cfg, h.log = &config{}, log
	h.svc = subrole.NewService(subrole.Config{Store: db})
	h.broadcaster = twitch.NewBroadcaster(twitch.BroadcasterConfig{Client: tc, Store: db, BroadcasterID: "1"})
	h.manager = &eventsub.Manager{API: api, Callback: "https://subs.example.com/twitch_eventsub?g=1", Secret: "0123456789",
		BroadcasterID: "1", ClientID: "id", Authorized: h.broadcasterAuthorized, Logger: log}
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.runEventSub(ctx, ready) }()
	time.Sleep(100 * time.Millisecond)
	if n := api.lists.Load(); n != 0 {
		t.Fatalf("%d list calls before the certificate was ready", n)
	}
	close(ready)
	deadline := time.Now().Add(5 * time.Second)
	for api.lists.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if api.lists.Load() == 0 {
		t.Fatal("no sync once the certificate was ready")
	}
	// Not connected: the channel subscriptions wait, only the client's is made.
	if st := h.manager.Status(); len(st.Waiting) != 4 || st.Created != 1 {
		t.Fatalf("status %+v", st)
	}
	cancel()
	<-done
}
