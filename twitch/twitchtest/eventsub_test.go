package twitchtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var fixedNow = time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)

func newSender() *Sender {
	return &Sender{
		Callback: "https://subrole.example/twitch_eventsub",
		Secret:   "test-secret-0123456789",
		Now:      func() time.Time { return fixedNow },
	}
}

// shape describes a JSON document's structure: every object key path with the
// kind of its value. Nulls match any kind (Twitch's nullable fields), and
// arrays are described by their first element, if any.
func shape(t *testing.T, doc []byte) map[string]string {
	t.Helper()
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatalf("%v in %s", err, doc)
	}
	out := map[string]string{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			out[path] = "object"
			for k, e := range v {
				walk(path+"."+k, e)
			}
		case []any:
			out[path] = "array"
			if len(v) > 0 {
				walk(path+"[]", v[0])
			}
		case nil:
			out[path] = "null"
		default:
			out[path] = fmt.Sprintf("%T", v)
		}
	}
	walk("", v)
	return out
}

// sameShape reports differences between the shapes of got and Twitch's
// documented example want.
func sameShape(t *testing.T, got, want []byte) {
	t.Helper()
	g, w := shape(t, got), shape(t, want)
	var diffs []string
	for k, wk := range w {
		gk, ok := g[k]
		switch {
		case !ok:
			if !strings.Contains(k, "[]") { // an empty array has no element shape
				diffs = append(diffs, "missing "+k)
			}
		case gk != wk && gk != "null" && wk != "null":
			diffs = append(diffs, fmt.Sprintf("%s is %s, Twitch sends %s", k, gk, wk))
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			diffs = append(diffs, "extra "+k)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Errorf("body differs from Twitch's example:\n%s\nbody: %s", strings.Join(diffs, "\n"), got)
	}
}

func TestBodiesHaveTwitchsShape(t *testing.T) {
	s := newSender()
	seven := 7
	tests := []struct {
		example string // in the eventsub package's testdata: Twitch's documented examples
		m       Message
	}{
		{"channel.subscribe.json", s.Subscribe("1234", "cool_user", "1000", false)},
		{"channel.subscription.end.json", s.End("1234", "cool_user", "1000", false)},
		{"channel.subscription.gift.json", s.Gift("1234", "cool_user", "1000", 2, &seven, false)},
		{"channel.subscription.gift.anonymous.json", s.Gift("", "", "3000", 5, nil, true)},
		{"channel.subscription.message.json", s.Resub("1234", "cool_user", "1000", 15, 1, 6)},
		{"channel.subscription.message.nostreak.json", s.Resub("1234", "cool_user", "2000", 7, 0, 1)},
		{"user.authorization.revoke.json", s.AuthRevoke("1337", "cool_user")},
		{"revocation.json", s.Revocation("channel.follow", "authorization_revoked")},
		{"challenge.json", s.Challenge("channel.follow")},
	}
	for _, tt := range tests {
		t.Run(tt.example, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("..", "..", "eventsub", "testdata", tt.example))
			if err != nil {
				t.Fatal(err)
			}
			sameShape(t, tt.m.Body, want)
		})
	}
}

func TestBodyValues(t *testing.T) {
	s := newSender()
	s.BroadcasterID, s.BroadcasterLogin = "42", "streamer"
	type body struct {
		Subscription struct {
			ID, Type, Version, Status string
			Cost                      int
			Condition                 map[string]string
			Transport                 map[string]string
			CreatedAt                 string `json:"created_at"`
		}
		Event map[string]any
	}
	cumulative := 100
	for _, tt := range []struct {
		name      string
		m         Message
		cost      int
		condition map[string]string
		event     map[string]any
	}{
		{"subscribe", s.Subscribe("7", "viewer", "2000", true), 0, map[string]string{"broadcaster_user_id": "42"}, map[string]any{
			"user_id": "7", "user_login": "viewer", "user_name": "viewer", "broadcaster_user_id": "42",
			"broadcaster_user_login": "streamer", "broadcaster_user_name": "streamer", "tier": "2000", "is_gift": true,
		}},
		{"resub", s.Resub("7", "viewer", "3000", 12, 3, 1), 0, map[string]string{"broadcaster_user_id": "42"}, map[string]any{
			"user_id": "7", "user_login": "viewer", "user_name": "viewer", "broadcaster_user_id": "42",
			"broadcaster_user_login": "streamer", "broadcaster_user_name": "streamer", "tier": "3000",
			"message": map[string]any{"text": "", "emotes": nil}, "cumulative_months": 12.0, "streak_months": 3.0, "duration_months": 1.0,
		}},
		{"gift", s.Gift("8", "gifter", "1000", 10, &cumulative, false), 0, map[string]string{"broadcaster_user_id": "42"}, map[string]any{
			"user_id": "8", "user_login": "gifter", "user_name": "gifter", "broadcaster_user_id": "42",
			"broadcaster_user_login": "streamer", "broadcaster_user_name": "streamer", "total": 10.0, "tier": "1000",
			"cumulative_total": 100.0, "is_anonymous": false,
		}},
		{"anonymous gift", s.Gift("8", "gifter", "1000", 1, &cumulative, true), 0, map[string]string{"broadcaster_user_id": "42"}, map[string]any{
			"user_id": nil, "user_login": nil, "user_name": nil, "broadcaster_user_id": "42",
			"broadcaster_user_login": "streamer", "broadcaster_user_name": "streamer", "total": 1.0, "tier": "1000",
			"cumulative_total": nil, "is_anonymous": true,
		}},
		{"auth revoke of a deleted user", s.AuthRevoke("9", ""), 1, map[string]string{"client_id": DefaultClientID}, map[string]any{
			"client_id": DefaultClientID, "user_id": "9", "user_login": nil, "user_name": nil,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var body body
			if err := json.Unmarshal(tt.m.Body, &body); err != nil {
				t.Fatal(err)
			}
			sub := body.Subscription
			if sub.Type != tt.m.SubscriptionType || sub.Version != "1" || sub.Status != "enabled" || sub.Cost != tt.cost ||
				sub.ID != s.SubscriptionID(sub.Type) || sub.CreatedAt != fixedNow.Format(TimeLayout) {
				t.Errorf("subscription %+v", sub)
			}
			if fmt.Sprint(sub.Condition) != fmt.Sprint(tt.condition) {
				t.Errorf("condition %v, want %v", sub.Condition, tt.condition)
			}
			if sub.Transport["method"] != "webhook" || sub.Transport["callback"] != s.Callback {
				t.Errorf("transport %v", sub.Transport)
			}
			if fmt.Sprint(body.Event) != fmt.Sprint(tt.event) {
				t.Errorf("event\n got %v\nwant %v", body.Event, tt.event)
			}
		})
	}
}

func TestSignMatchesRFC4231(t *testing.T) {
	// RFC 4231 test case 2, the data split across id, timestamp and body.
	m := Message{Secret: "Jefe", ID: "what do ya ", Timestamp: "want for ", Body: []byte("nothing?")}
	m.Sign()
	if want := "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"; m.Signature != want {
		t.Errorf("Signature = %s, want %s", m.Signature, want)
	}
}

func TestHeaders(t *testing.T) {
	s := newSender()
	m := s.Resub("1", "a", "1000", 2, 2, 1)
	m.Retry = 3
	h := m.Header()
	want := map[string]string{
		"Content-Type":                         "application/json",
		"Twitch-Eventsub-Message-Id":           m.ID,
		"Twitch-Eventsub-Message-Retry":        "3",
		"Twitch-Eventsub-Message-Type":         "notification",
		"Twitch-Eventsub-Message-Signature":    m.Signature,
		"Twitch-Eventsub-Message-Timestamp":    "2026-05-01T12:00:00.123456789Z",
		"Twitch-Eventsub-Subscription-Type":    "channel.subscription.message",
		"Twitch-Eventsub-Subscription-Version": "1",
	}
	if len(h) != len(want) {
		t.Errorf("%d headers, want %d: %v", len(h), len(want), h)
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if !regexp.MustCompile(`^sha256=[0-9a-f]{64}$`).MatchString(m.Signature) {
		t.Errorf("signature %q", m.Signature)
	}
	m.Signature = ""
	if _, ok := m.Header()["Twitch-Eventsub-Message-Signature"]; ok {
		t.Error("an empty Signature is still sent")
	}
	for _, m := range []Message{s.Challenge("channel.subscribe"), s.Revocation("channel.subscribe", "user_removed")} {
		if m.Header().Get("Twitch-Eventsub-Message-Type") != m.Type || m.Type == TypeNotification {
			t.Errorf("type header %q for %s", m.Header().Get("Twitch-Eventsub-Message-Type"), m.Type)
		}
	}
}

func TestIDs(t *testing.T) {
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	s := newSender()
	seen := map[string]bool{}
	for range 1000 {
		m := s.Subscribe("1", "a", "1000", false)
		if !uuid.MatchString(m.ID) || seen[m.ID] {
			t.Fatalf("message id %q: not a fresh UUID", m.ID)
		}
		seen[m.ID] = true
	}
	if c1, c2 := s.Challenge("x").Challenge, s.Challenge("x").Challenge; c1 == "" || c1 == c2 {
		t.Errorf("challenges %q and %q: want random", c1, c2)
	}
}

func TestSubscriptionIDs(t *testing.T) {
	s := newSender()
	s.SubscriptionIDs = map[string]string{SubscriptionEndType: "fixed-end-id"}
	sub := s.SubscriptionID(SubscribeType)
	if sub == "" || sub != s.SubscriptionID(SubscribeType) || sub == s.SubscriptionID(SubscriptionGiftType) {
		t.Errorf("subscription ids not stable per type")
	}
	if got := s.SubscriptionID(SubscriptionEndType); got != "fixed-end-id" {
		t.Errorf("preset id ignored: %q", got)
	}
	var rev struct{ Subscription struct{ ID, Status string } }
	if err := json.Unmarshal(s.Revocation(SubscribeType, "authorization_revoked").Body, &rev); err != nil {
		t.Fatal(err)
	}
	if rev.Subscription.ID != sub || rev.Subscription.Status != "authorization_revoked" {
		t.Errorf("revocation refers to %+v, want id %s", rev.Subscription, sub)
	}
}

func TestSenderConcurrentUse(t *testing.T) {
	s := &Sender{Secret: "x-secret-123"}
	var wg sync.WaitGroup
	ids := make(chan string, 8*200)
	for range 8 {
		wg.Go(func() {
			for range 200 {
				ids <- s.SubscriptionID(SubscribeType)
				s.Subscribe("1", "a", "1000", false)
				s.Revocation(SubscriptionGiftType, "user_removed")
			}
		})
	}
	wg.Wait()
	close(ids)
	first := <-ids
	for id := range ids {
		if id != first {
			t.Fatalf("subscription id changed under concurrency: %s vs %s", id, first)
		}
	}
}

func BenchmarkSenderBuild(b *testing.B) {
	s := newSender()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Subscribe("1234", "cool_user", "1000", false)
		}
	})
}
