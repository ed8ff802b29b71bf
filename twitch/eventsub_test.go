package twitch_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/subrole/subrole/twitch"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// echoWebhook answers every verification challenge, as a webhook that
// trusts anyone would; signatures are the eventsub package's business.
func echoWebhook(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Challenge string }
		json.NewDecoder(r.Body).Decode(&body)
		if body.Challenge == "" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(body.Challenge))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/twitch_eventsub"
}

func TestEventSubSubscriptions(t *testing.T) {
	tw := twitchtest.NewServer(twitchtest.Options{InsecureCallbacks: true, EventSubPageSize: 2})
	defer tw.Close()
	c, err := twitch.New(twitch.Config{ClientID: tw.ClientID(), ClientSecret: tw.ClientSecret(), AuthURL: tw.AuthURL(), APIURL: tw.HelixURL()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cb := echoWebhook(t)
	channel := twitch.EventSubSubscription{Type: "channel.subscribe", Version: "1",
		Condition: map[string]string{"broadcaster_user_id": tw.BroadcasterID()}, Callback: cb}

	// Before the broadcaster authorized the application: refused, as a missing scope.
	if _, err := c.CreateEventSubSubscription(ctx, channel, "a-good-secret"); !errors.Is(err, twitch.ErrMissingScope) {
		t.Fatalf("create without authorization: %v", err)
	}
	tw.IssueToken(tw.BroadcasterID(), twitch.ScopeChannelSubscriptions)
	created, err := c.CreateEventSubSubscription(ctx, channel, "a-good-secret")
	if err != nil || created.ID == "" || created.Status != "webhook_callback_verification_pending" || created.Callback != cb || created.Method != "webhook" {
		t.Fatalf("create: %+v %v", created, err)
	}
	if _, err := c.CreateEventSubSubscription(ctx, channel, "a-good-secret"); !errors.Is(err, twitch.ErrConflict) {
		t.Fatalf("duplicate: %v", err)
	}
	revoke := twitch.EventSubSubscription{Type: "user.authorization.revoke", Version: "1",
		Condition: map[string]string{"client_id": tw.ClientID()}, Callback: cb}
	if _, err := c.CreateEventSubSubscription(ctx, revoke, "a-good-secret"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		tw.AddEventSubSubscription(twitchtest.EventSubSubscription{Type: "channel.subscription.end",
			Condition: map[string]string{"broadcaster_user_id": string(rune('a' + i))}, Callback: "https://other.example/hook"})
	}
	tw.FailNext("/helix/eventsub/subscriptions", http.StatusUnauthorized) // an expired app token is renewed once

	// All pages, in Helix's order, with the totals.
	ctxT, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tw.WaitEventSub(ctxT, func(subs []twitchtest.EventSubSubscription) bool { return subs[0].Status == "enabled" })
	list, err := c.EventSubSubscriptions(ctx)
	if err != nil || len(list.Subscriptions) != 5 || list.Total != 5 || list.TotalCost != 1 || list.MaxTotalCost != twitchtest.MaxTotalCost {
		t.Fatalf("list: %+v %v", list, err)
	}
	got := list.Subscriptions[0]
	if got.ID != created.ID || got.Status != "enabled" || got.Condition["broadcaster_user_id"] != tw.BroadcasterID() || got.CreatedAt.IsZero() {
		t.Fatalf("first: %+v", got)
	}
	if n := len(tw.CallsTo("GET", "/helix/eventsub/subscriptions")); n != 4 { // one 401, three pages
		t.Fatalf("%d list calls", n)
	}

	if err := c.DeleteEventSubSubscription(ctx, created.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteEventSubSubscription(ctx, created.ID); !errors.Is(err, twitch.ErrNotFound) {
		t.Fatalf("delete again: %v", err)
	}
	if _, err := c.CreateEventSubSubscription(ctx, revoke, "short"); !errors.Is(err, twitch.ErrRejected) {
		t.Fatalf("short secret: %v", err)
	}
}
