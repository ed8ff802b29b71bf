package twitchtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/subrole/subrole/eventsub"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// esFixture is a fake Twitch and a real webhook (eventsub.Handler on
// loopback) that accepts secret.
type esFixture struct {
	tw       *twitchtest.Server
	app      string // app access token
	callback string
	sink     *memSink
}

func newESFixture(t *testing.T, opts twitchtest.Options, secret string) *esFixture {
	t.Helper()
	opts.InsecureCallbacks = true
	f := &esFixture{tw: twitchtest.NewServer(opts), sink: &memSink{}}
	t.Cleanup(f.tw.Close)
	h := &eventsub.Handler{Secret: secret, Sink: f.sink, Logger: slog.New(slog.DiscardHandler)}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.callback = srv.URL + "/twitch_eventsub"
	resp, err := http.PostForm(f.tw.AuthURL()+"/token", map[string][]string{"client_id": {f.tw.ClientID()},
		"client_secret": {f.tw.ClientSecret()}, "grant_type": {"client_credentials"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	f.app = tok.AccessToken
	return f
}

// call sends a Helix request with the app token and returns the status and decoded body.
func (f *esFixture) call(t *testing.T, method, query string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.tw.HelixURL()+"/eventsub/subscriptions"+query, rd)
	req.Header.Set("Authorization", "Bearer "+f.app)
	req.Header.Set("Client-Id", f.tw.ClientID())
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func create(typ, cond, callback, secret string) map[string]any {
	key := "broadcaster_user_id"
	if typ == twitchtest.AuthorizationRevokeType {
		key = "client_id"
	}
	return map[string]any{"type": typ, "version": "1", "condition": map[string]string{key: cond},
		"transport": map[string]string{"method": "webhook", "callback": callback, "secret": secret}}
}

func waitStatus(t *testing.T, tw *twitchtest.Server, id, status string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := tw.WaitEventSub(ctx, func(subs []twitchtest.EventSubSubscription) bool {
		for _, s := range subs {
			if s.ID == id {
				return s.Status == status
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("subscription %s never became %s: %v", id, status, err)
	}
}

func TestFakeEventSubCreateVerifies(t *testing.T) {
	const secret = "the-webhook-secret"
	f := newESFixture(t, twitchtest.Options{}, secret)
	f.tw.IssueToken(f.tw.BroadcasterID(), twitchtest.ScopeChannelSubscriptions) // the broadcaster authorized us

	st, body := f.call(t, "POST", "", create(twitchtest.SubscribeType, f.tw.BroadcasterID(), f.callback, secret))
	if st != http.StatusAccepted {
		t.Fatalf("create: %d %v", st, body)
	}
	sub := body["data"].([]any)[0].(map[string]any)
	if sub["status"] != twitchtest.StatusVerificationPending || body["max_total_cost"] != float64(twitchtest.MaxTotalCost) {
		t.Fatalf("created %v", body)
	}
	id := sub["id"].(string)
	// The fake sent a signed challenge to the real handler, which answered it.
	waitStatus(t, f.tw, id, twitchtest.StatusEnabled)

	// The same again is a conflict; a wrong secret at the webhook fails verification.
	if st, _ := f.call(t, "POST", "", create(twitchtest.SubscribeType, f.tw.BroadcasterID(), f.callback, secret)); st != http.StatusConflict {
		t.Fatalf("duplicate: %d, want 409", st)
	}
	st, body = f.call(t, "POST", "", create(twitchtest.SubscribeType, f.tw.BroadcasterID(), f.callback+"?g=2", "another-secret-1"))
	if st != http.StatusAccepted {
		t.Fatalf("second callback: %d %v", st, body)
	}
	waitStatus(t, f.tw, body["data"].([]any)[0].(map[string]any)["id"].(string), twitchtest.StatusVerificationFailed)

	// A third is allowed, a fourth for the same type and condition is not.
	st, body = f.call(t, "POST", "", create(twitchtest.SubscribeType, f.tw.BroadcasterID(), f.callback+"?g=3", secret))
	if st != http.StatusAccepted {
		t.Fatalf("third: %d", st)
	}
	waitStatus(t, f.tw, body["data"].([]any)[0].(map[string]any)["id"].(string), twitchtest.StatusEnabled)
	if st, _ := f.call(t, "POST", "", create(twitchtest.SubscribeType, f.tw.BroadcasterID(), f.callback+"?g=4", secret)); st != http.StatusTooManyRequests {
		t.Fatalf("fourth: %d, want 429", st)
	}

	// A notification reaches the handler signed with the creation secret.
	ds, err := f.tw.Publish(context.Background(), func(s *twitchtest.Sender) twitchtest.Message { return s.Subscribe("42", "viewer", "1000", false) })
	if err != nil || len(ds) != 2 { // the first and the third are enabled
		t.Fatalf("publish: %+v %v", ds, err)
	}
	for _, d := range ds {
		if d.Status != http.StatusNoContent {
			t.Fatalf("delivery %+v", d)
		}
	}

	// Delete: 204, then 404.
	if st, _ := f.call(t, "DELETE", "?id="+id, nil); st != http.StatusNoContent {
		t.Fatalf("delete: %d", st)
	}
	if st, _ := f.call(t, "DELETE", "?id="+id, nil); st != http.StatusNotFound {
		t.Fatalf("delete again: %d", st)
	}
}

func TestFakeEventSubValidation(t *testing.T) {
	const secret = "the-webhook-secret"
	f := newESFixture(t, twitchtest.Options{}, secret)
	strict := twitchtest.NewServer(twitchtest.Options{}) // Twitch's callback rules
	defer strict.Close()
	bc := f.tw.BroadcasterID()
	tests := []struct {
		name   string
		body   any
		strict bool
		want   int
	}{
		{"not json", "{", false, 400},
		{"unknown type", create("channel.follow", bc, f.callback, secret), false, 400},
		{"wrong version", func() any {
			b := create(twitchtest.SubscribeType, bc, f.callback, secret)
			b["version"] = "2"
			return b
		}(), false, 400},
		{"missing condition", func() any {
			b := create(twitchtest.SubscribeType, bc, f.callback, secret)
			b["condition"] = map[string]string{}
			return b
		}(), false, 400},
		{"short secret", create(twitchtest.SubscribeType, bc, f.callback, "short"), false, 400},
		{"long secret", create(twitchtest.SubscribeType, bc, f.callback, strings.Repeat("x", 101)), false, 400},
		{"websocket", func() any {
			b := create(twitchtest.SubscribeType, bc, f.callback, secret)
			b["transport"] = map[string]string{"method": "websocket", "session_id": "x"}
			return b
		}(), false, 400},
		{"not authorized by the broadcaster", create(twitchtest.SubscribeType, bc, f.callback, secret), false, 403},
		{"another client id", create(twitchtest.AuthorizationRevokeType, "someone-else", f.callback, secret), false, 403},
		{"http callback", create(twitchtest.AuthorizationRevokeType, f.tw.ClientID(), "http://subs.example.com/twitch_eventsub", secret), true, 400},
		{"port 8443", create(twitchtest.AuthorizationRevokeType, f.tw.ClientID(), "https://subs.example.com:8443/twitch_eventsub", secret), true, 400},
		{"loopback", create(twitchtest.AuthorizationRevokeType, f.tw.ClientID(), "https://127.0.0.1/twitch_eventsub", secret), true, 400},
		{"fine", create(twitchtest.AuthorizationRevokeType, f.tw.ClientID(), "https://subs.example.com/twitch_eventsub", secret), true, 202},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := f
			if tt.strict {
				g = &esFixture{tw: strict}
				g.app = newESFixtureToken(t, strict)
			}
			if st, body := g.call(t, "POST", "", tt.body); st != tt.want {
				t.Fatalf("status %d %v, want %d", st, body, tt.want)
			}
		})
	}
	if n := len(f.tw.EventSubSubscriptions()); n != 0 {
		t.Fatalf("refused requests created %d subscriptions", n)
	}
	// A user token cannot manage webhook subscriptions.
	user := f.tw.IssueToken(bc, twitchtest.ScopeChannelSubscriptions)
	g := *f
	g.app = user.AccessToken
	if st, _ := g.call(t, "GET", "", nil); st != http.StatusBadRequest {
		t.Fatalf("user token: %d", st)
	}
}

func newESFixtureToken(t *testing.T, tw *twitchtest.Server) string {
	t.Helper()
	resp, err := http.PostForm(tw.AuthURL()+"/token", map[string][]string{"client_id": {tw.ClientID()},
		"client_secret": {tw.ClientSecret()}, "grant_type": {"client_credentials"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	return tok.AccessToken
}

func TestFakeEventSubListPaging(t *testing.T) {
	f := newESFixture(t, twitchtest.Options{EventSubPageSize: 2}, "the-webhook-secret")
	for i := range 5 {
		f.tw.AddEventSubSubscription(twitchtest.EventSubSubscription{Type: twitchtest.SubscribeType,
			Condition: map[string]string{"broadcaster_user_id": fmt.Sprint(i)}, Callback: "https://x.example/cb", Cost: 1})
	}
	var ids []string
	cursor := ""
	for page := 0; page < 10; page++ {
		q := ""
		if cursor != "" {
			q = "?after=" + cursor
		}
		st, body := f.call(t, "GET", q, nil)
		if st != 200 || body["total"] != float64(5) || body["total_cost"] != float64(5) {
			t.Fatalf("page %d: %d %v", page, st, body)
		}
		for _, d := range body["data"].([]any) {
			ids = append(ids, d.(map[string]any)["id"].(string))
		}
		c, _ := body["pagination"].(map[string]any)["cursor"].(string)
		if c == "" {
			break
		}
		cursor = c
	}
	if len(ids) != 5 {
		t.Fatalf("paged through %d subscriptions, want 5", len(ids))
	}
	if st, _ := f.call(t, "GET", "?after=garbage", nil); st != 400 {
		t.Fatalf("bad cursor: %d", st)
	}
}

func TestFakeEventSubRevocations(t *testing.T) {
	const secret = "the-webhook-secret"
	f := newESFixture(t, twitchtest.Options{}, secret)
	f.tw.IssueToken(f.tw.BroadcasterID(), twitchtest.ScopeChannelSubscriptions)
	var ids []string
	for _, typ := range []string{twitchtest.SubscribeType, twitchtest.SubscriptionEndType, twitchtest.AuthorizationRevokeType} {
		cond := f.tw.BroadcasterID()
		if typ == twitchtest.AuthorizationRevokeType {
			cond = f.tw.ClientID()
		}
		st, body := f.call(t, "POST", "", create(typ, cond, f.callback, secret))
		if st != http.StatusAccepted {
			t.Fatalf("%s: %d %v", typ, st, body)
		}
		id := body["data"].([]any)[0].(map[string]any)["id"].(string)
		waitStatus(t, f.tw, id, twitchtest.StatusEnabled)
		ids = append(ids, id)
	}
	// One is revoked for notification failures: status and a signed message.
	d, err := f.tw.RevokeEventSubSubscription(context.Background(), ids[0], twitchtest.StatusFailuresExceeded)
	if err != nil || d.Status != http.StatusNoContent {
		t.Fatalf("revoke: %+v %v", d, err)
	}
	if len(f.sink.revocations) != 1 || f.sink.revocations[0].SubscriptionID != ids[0] || f.sink.revocations[0].Status != twitchtest.StatusFailuresExceeded {
		t.Fatalf("revocations %+v", f.sink.revocations)
	}
	// The broadcaster disconnects: channel subscriptions are revoked (the
	// enabled one, not the failed one), the app learns it, and new ones are refused.
	f.tw.RevokeUser(f.tw.BroadcasterID())
	if len(f.sink.revocations) != 2 || f.sink.revocations[1].SubscriptionID != ids[1] || f.sink.revocations[1].Status != twitchtest.StatusAuthorizationRevoke {
		t.Fatalf("revocations %+v", f.sink.revocations)
	}
	if len(f.sink.events) != 1 || f.sink.events[0].UserID != f.tw.BroadcasterID() {
		t.Fatalf("user.authorization.revoke not delivered: %+v", f.sink.events)
	}
	if st, _ := f.call(t, "POST", "", create(twitchtest.SubscriptionGiftType, f.tw.BroadcasterID(), f.callback, secret)); st != http.StatusForbidden {
		t.Fatalf("create after the broadcaster left: %d", st)
	}
}

func TestFakeEventSubHoldAndMethodFaults(t *testing.T) {
	const secret = "the-webhook-secret"
	f := newESFixture(t, twitchtest.Options{}, secret)
	f.tw.SetVerificationHold(true)
	st, body := f.call(t, "POST", "", create(twitchtest.AuthorizationRevokeType, f.tw.ClientID(), f.callback, secret))
	if st != http.StatusAccepted {
		t.Fatalf("create: %d %v", st, body)
	}
	id := body["data"].([]any)[0].(map[string]any)["id"].(string)
	time.Sleep(50 * time.Millisecond)
	if sub, _ := f.tw.EventSubSubscriptionOf(twitchtest.AuthorizationRevokeType, ""); sub.Status != twitchtest.StatusVerificationPending {
		t.Fatalf("verified while held: %+v", sub)
	}
	f.tw.SetVerificationHold(false)
	waitStatus(t, f.tw, id, twitchtest.StatusEnabled)

	// A fault for one method leaves the others alone.
	f.tw.FailNext("POST /helix/eventsub/subscriptions", http.StatusConflict)
	if st, _ := f.call(t, "GET", "", nil); st != http.StatusOK {
		t.Fatalf("GET hit the POST fault: %d", st)
	}
	if st, _ := f.call(t, "POST", "", create(twitchtest.AuthorizationRevokeType, f.tw.ClientID(), f.callback+"?g=2", secret)); st != http.StatusConflict {
		t.Fatalf("POST: %d, want the injected 409", st)
	}
	if !f.tw.RemoveEventSubSubscription(id) || len(f.tw.EventSubSubscriptions()) != 0 {
		t.Fatal("remove")
	}
}

func TestFakeSubscriberListAtScale(t *testing.T) {
	tw := twitchtest.NewServer(twitchtest.Options{RateLimit: 100000})
	defer tw.Close()
	for i := range 5000 {
		tw.Subscribe(fmt.Sprintf("%06d", i), "1000", false, "")
	}
	tok := tw.IssueToken(tw.BroadcasterID(), twitchtest.ScopeChannelSubscriptions)
	seen := map[string]bool{}
	cursor := ""
	for range 100 {
		req, _ := http.NewRequest("GET", tw.HelixURL()+"/subscriptions?first=100&broadcaster_id="+tw.BroadcasterID()+"&after="+cursor, nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		req.Header.Set("Client-Id", tw.ClientID())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Data []struct {
				UserID string `json:"user_id"`
			}
			Total      int
			Pagination struct{ Cursor string }
		}
		json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		for _, d := range page.Data {
			seen[d.UserID] = true
		}
		if page.Total != 5000 {
			t.Fatalf("total %d", page.Total)
		}
		if cursor = page.Pagination.Cursor; cursor == "" {
			break
		}
	}
	if len(seen) != 5000 {
		t.Fatalf("paged through %d subscribers, want 5000", len(seen))
	}
}
