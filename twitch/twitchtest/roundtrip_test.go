package twitchtest_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/eventsub"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// memSink is an in-memory eventsub.Sink that deduplicates by message id.
type memSink struct {
	mu          sync.Mutex
	seen        map[string]bool
	events      []subrole.Event
	revocations []subrole.Revocation
	duplicates  int
}

func (s *memSink) record(id string) bool {
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	if s.seen[id] {
		s.duplicates++
		return true
	}
	s.seen[id] = true
	return false
}

func (s *memSink) AcceptEvent(_ context.Context, e subrole.Event) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.record(e.MessageID) {
		return true, nil
	}
	s.events = append(s.events, e)
	return false, nil
}

func (s *memSink) RecordRevocation(_ context.Context, id string, r subrole.Revocation) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.record(id) {
		return true, nil
	}
	s.revocations = append(s.revocations, r)
	return false, nil
}

const secret = "round-trip-secret-42"

var now = time.Date(2026, 5, 1, 12, 0, 0, 987654321, time.UTC)

// setup runs an eventsub.Handler behind a real HTTP server and returns a
// Sender pointed at it.
func setup(t *testing.T) (*twitchtest.Sender, *memSink) {
	t.Helper()
	sink := &memSink{}
	h := &eventsub.Handler{
		Secret:        secret,
		BroadcasterID: twitchtest.DefaultBroadcasterID,
		ClientID:      twitchtest.DefaultClientID,
		Sink:          sink,
		Logger:        slog.New(slog.DiscardHandler),
		Now:           func() time.Time { return now },
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &twitchtest.Sender{Callback: srv.URL, Secret: secret, Now: func() time.Time { return now.Add(-time.Second) }}, sink
}

func send(t *testing.T, s *twitchtest.Sender, m twitchtest.Message, wantStatus int) string {
	t.Helper()
	status, body, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if status != wantStatus {
		t.Fatalf("%s %s: status %d (%q), want %d", m.Type, m.SubscriptionType, status, body, wantStatus)
	}
	return body
}

func TestRoundTripEveryBuilder(t *testing.T) {
	sent := now.Add(-time.Second)
	twelve := 12
	tests := []struct {
		name  string
		build func(s *twitchtest.Sender) twitchtest.Message
		want  subrole.Event
	}{
		{"subscribe", func(s *twitchtest.Sender) twitchtest.Message { return s.Subscribe("100", "alice", "1000", false) },
			subrole.Event{Type: subrole.EventSubscribe, UserID: "100", UserLogin: "alice", Tier: subrole.Tier1}},
		{"gifted subscribe", func(s *twitchtest.Sender) twitchtest.Message { return s.Subscribe("101", "bob", "3000", true) },
			subrole.Event{Type: subrole.EventSubscribe, UserID: "101", UserLogin: "bob", Tier: subrole.Tier3, IsGift: true}},
		{"resub", func(s *twitchtest.Sender) twitchtest.Message { return s.Resub("102", "carol", "2000", 15, 4, 3) },
			subrole.Event{Type: subrole.EventSubscriptionMessage, UserID: "102", UserLogin: "carol", Tier: subrole.Tier2, CumulativeMonths: 15, StreakMonths: 4}},
		{"resub hiding the streak", func(s *twitchtest.Sender) twitchtest.Message { return s.Resub("102", "carol", "1000", 15, 0, 1) },
			subrole.Event{Type: subrole.EventSubscriptionMessage, UserID: "102", UserLogin: "carol", Tier: subrole.Tier1, CumulativeMonths: 15}},
		{"end", func(s *twitchtest.Sender) twitchtest.Message { return s.End("103", "dave", "1000", true) },
			subrole.Event{Type: subrole.EventSubscriptionEnd, UserID: "103", UserLogin: "dave", Tier: subrole.Tier1, IsGift: true}},
		{"gift", func(s *twitchtest.Sender) twitchtest.Message { return s.Gift("104", "erin", "1000", 5, &twelve, false) },
			subrole.Event{Type: subrole.EventSubscriptionGift, UserID: "104", UserLogin: "erin", Tier: subrole.Tier1, GiftTotal: 5, GiftCumulative: 12}},
		{"gift, cumulative not shared", func(s *twitchtest.Sender) twitchtest.Message { return s.Gift("104", "erin", "2000", 1, nil, false) },
			subrole.Event{Type: subrole.EventSubscriptionGift, UserID: "104", UserLogin: "erin", Tier: subrole.Tier2, GiftTotal: 1}},
		{"anonymous gift", func(s *twitchtest.Sender) twitchtest.Message { return s.Gift("104", "erin", "1000", 20, &twelve, true) },
			subrole.Event{Type: subrole.EventSubscriptionGift, Tier: subrole.Tier1, GiftTotal: 20, Anonymous: true}},
		{"auth revoke", func(s *twitchtest.Sender) twitchtest.Message { return s.AuthRevoke("105", "frank") },
			subrole.Event{Type: subrole.EventAuthorizationRevoke, UserID: "105", UserLogin: "frank"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, sink := setup(t)
			m := tt.build(s)
			send(t, s, m, http.StatusNoContent)
			if len(sink.events) != 1 {
				t.Fatalf("sink got %d events, want 1", len(sink.events))
			}
			got := sink.events[0]
			var body struct{ Event json.RawMessage }
			if err := json.Unmarshal(m.Body, &body); err != nil {
				t.Fatal(err)
			}
			want := tt.want
			want.MessageID, want.Sent, want.Received, want.Raw = m.ID, sent, now, body.Event
			if !got.Sent.Equal(want.Sent) || !got.Received.Equal(want.Received) {
				t.Errorf("Sent %v Received %v, want %v %v", got.Sent, got.Received, want.Sent, want.Received)
			}
			got.Sent, got.Received, want.Sent, want.Received = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("event\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestRoundTripChallengeAndRevocation(t *testing.T) {
	s, sink := setup(t)
	c := s.Challenge(twitchtest.SubscribeType)
	if body := send(t, s, c, http.StatusOK); body != c.Challenge {
		t.Errorf("challenge answered %q, want %q", body, c.Challenge)
	}
	send(t, s, s.Subscribe("1", "a", "1000", false), http.StatusNoContent)
	r := s.Revocation(twitchtest.SubscribeType, "authorization_revoked")
	send(t, s, r, http.StatusNoContent)
	send(t, s, r, http.StatusNoContent) // redelivered
	want := []subrole.Revocation{{
		SubscriptionID: s.SubscriptionID(twitchtest.SubscribeType),
		Type:           subrole.EventSubscribe,
		Version:        "1",
		Status:         "authorization_revoked",
		At:             now.Add(-time.Second),
	}}
	if !reflect.DeepEqual(sink.revocations, want) || sink.duplicates != 1 {
		t.Errorf("revocations %+v (%d duplicates), want %+v and 1", sink.revocations, sink.duplicates, want)
	}
}

func TestRoundTripForgeries(t *testing.T) {
	s, sink := setup(t)
	tests := []struct {
		name   string
		forge  func(m *twitchtest.Message)
		status int
	}{
		{"untouched", func(*twitchtest.Message) {}, 204},
		{"zero signature", func(m *twitchtest.Message) { m.Signature = "sha256=" + strings.Repeat("0", 64) }, 403},
		{"signed with another secret", func(m *twitchtest.Message) { m.Secret = "not-the-secret-000"; m.Sign() }, 403},
		{"body changed after signing", func(m *twitchtest.Message) { m.Body = []byte(strings.Replace(string(m.Body), `"1000"`, `"3000"`, 1)) }, 403},
		{"body changed and re-signed", func(m *twitchtest.Message) {
			m.Body = []byte(strings.Replace(string(m.Body), `"1000"`, `"3000"`, 1))
			m.Sign()
		}, 204},
		{"stale", func(m *twitchtest.Message) {
			m.Timestamp = now.Add(-11 * time.Minute).Format(twitchtest.TimeLayout)
			m.Sign()
		}, 403},
		{"from the future", func(m *twitchtest.Message) {
			m.Timestamp = now.Add(2 * time.Minute).Format(twitchtest.TimeLayout)
			m.Sign()
		}, 403},
		{"no signature header", func(m *twitchtest.Message) { m.Signature = "" }, 400},
		{"no id header", func(m *twitchtest.Message) { m.ID = ""; m.Sign() }, 400},
		{"unknown message type", func(m *twitchtest.Message) { m.Type = "keepalive" }, 400},
		{"retry counter", func(m *twitchtest.Message) { m.Retry = 2 }, 204},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(sink.events)
			m := s.Subscribe("1", "a", "1000", false)
			tt.forge(&m)
			send(t, s, m, tt.status)
			if accepted := len(sink.events) - before; (tt.status == 204) != (accepted == 1) {
				t.Errorf("status %d but %d events accepted", tt.status, accepted)
			}
		})
	}
	t.Run("redelivery", func(t *testing.T) {
		m := s.Subscribe("2", "b", "1000", false)
		dups := sink.duplicates
		send(t, s, m, 204)
		m.Retry = 1
		send(t, s, m, 204)
		if sink.duplicates != dups+1 {
			t.Errorf("redelivery not seen as a duplicate")
		}
	})
	t.Run("other broadcaster", func(t *testing.T) {
		other := &twitchtest.Sender{Callback: s.Callback, Secret: secret, Now: s.Now, BroadcasterID: "999"}
		before := len(sink.events)
		send(t, other, other.Subscribe("3", "c", "1000", false), 204)
		if len(sink.events) != before {
			t.Errorf("event for another broadcaster accepted")
		}
	})
	t.Run("unknown subscription type", func(t *testing.T) {
		before := len(sink.events)
		send(t, s, s.Notification("channel.follow", "2", map[string]string{"user_id": "4", "followed_at": "2026-05-01T11:00:00Z"}), 204)
		if len(sink.events) != before {
			t.Errorf("unknown type accepted")
		}
	})
}

func TestRoundTripWithoutNetwork(t *testing.T) {
	sink := &memSink{}
	h := &eventsub.Handler{Secret: secret, Sink: sink, Now: func() time.Time { return now }}
	s := &twitchtest.Sender{Secret: secret, Now: func() time.Time { return now }}
	r, err := s.Gift("1", "a", "1000", 3, nil, false).NewRequest(context.Background(), "/twitch_eventsub")
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 204 || len(sink.events) != 1 || sink.events[0].GiftTotal != 3 {
		t.Errorf("status %d, events %+v", w.Code, sink.events)
	}
}

func TestConcurrentSends(t *testing.T) {
	s, sink := setup(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				m := s.Subscribe("u", "login", "1000", false)
				if status, _, err := s.Send(context.Background(), m); err != nil || status != 204 {
					t.Errorf("goroutine %d send %d: status %d err %v", g, i, status, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if len(sink.events) != 200 {
		t.Errorf("sink got %d events, want 200", len(sink.events))
	}
}

func TestSendWithoutCallback(t *testing.T) {
	s := &twitchtest.Sender{Secret: secret}
	if _, _, err := s.Send(context.Background(), s.Subscribe("1", "a", "1000", false)); err == nil || !strings.HasPrefix(err.Error(), "twitchtest: ") {
		t.Errorf("Send without Callback: err %v", err)
	}
}
