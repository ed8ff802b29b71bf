package eventsub

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole"
)

const (
	testSecret     = "test-secret-0123456789"
	testPrevSecret = "previous-secret-9876543210"
	testBroadcast  = "1337"
	testClientID   = "crq72vsaoijkc83xx42hz6i37"
	testMessageID  = "befa7b53-d79d-478f-86b9-120f112b044e"
	testRemoteAddr = "192.0.2.7:4711"
)

// testNow is the handler's clock; testSent is the message timestamp, a little
// earlier, with nanoseconds as Twitch sends them.
var (
	testNow  = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	testSent = time.Date(2026, 5, 1, 11, 59, 58, 634234626, time.UTC)
)

// sign computes a Twitch signature independently of the code under test.
func sign(secret, id, ts string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(id + ts))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// fakeSink is an in-memory Sink that deduplicates by message id.
type fakeSink struct {
	mu          sync.Mutex
	seen        map[string]bool
	events      []subrole.Event
	revocations []recordedRevocation
	duplicates  int
	calls       int
	err         error // returned by every call when set
}

type recordedRevocation struct {
	MessageID  string
	Revocation subrole.Revocation
}

func (s *fakeSink) dedupe(id string) (bool, error) {
	s.calls++
	if s.err != nil {
		return false, s.err
	}
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	if s.seen[id] {
		s.duplicates++
		return true, nil
	}
	s.seen[id] = true
	return false, nil
}

func (s *fakeSink) AcceptEvent(_ context.Context, e subrole.Event) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dup, err := s.dedupe(e.MessageID)
	if err == nil && !dup {
		s.events = append(s.events, e)
	}
	return dup, err
}

func (s *fakeSink) RecordRevocation(_ context.Context, id string, r subrole.Revocation) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dup, err := s.dedupe(id)
	if err == nil && !dup {
		s.revocations = append(s.revocations, recordedRevocation{id, r})
	}
	return dup, err
}

// harness is a Handler wired to a fake sink, a log buffer and hook recorders.
type harness struct {
	h        *Handler
	sink     *fakeSink
	logs     *bytes.Buffer
	rejected []string
	verified int
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	hs := &harness{sink: &fakeSink{}, logs: &bytes.Buffer{}}
	hs.h = &Handler{
		Secret:        testSecret,
		BroadcasterID: testBroadcast,
		ClientID:      testClientID,
		Sink:          hs.sink,
		Logger:        slog.New(slog.NewTextHandler(hs.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:           func() time.Time { return testNow },
		OnVerified:    func(*http.Request) { hs.verified++ },
		OnRejected:    func(_ *http.Request, reason string) { hs.rejected = append(hs.rejected, reason) },
	}
	return hs
}

// message describes one request; zero fields get valid defaults in request.
type message struct {
	method string
	id     string
	ts     string
	typ    string
	sig    string // overrides the computed signature
	secret string // signs with this secret instead of testSecret
	body   []byte
	omit   string // a header to leave out
}

func (m message) request() *http.Request {
	if m.method == "" {
		m.method = http.MethodPost
	}
	if m.id == "" {
		m.id = testMessageID
	}
	if m.ts == "" {
		m.ts = testSent.Format(time.RFC3339Nano)
	}
	if m.typ == "" {
		m.typ = string(MessageNotification)
	}
	if m.secret == "" {
		m.secret = testSecret
	}
	if m.sig == "" {
		m.sig = sign(m.secret, m.id, m.ts, m.body)
	}
	r := httptest.NewRequest(m.method, "/twitch_eventsub", bytes.NewReader(m.body))
	r.RemoteAddr = testRemoteAddr
	for k, v := range map[string]string{
		HeaderMessageID:           m.id,
		HeaderMessageTimestamp:    m.ts,
		HeaderMessageType:         m.typ,
		HeaderMessageSignature:    m.sig,
		HeaderMessageRetry:        "0",
		HeaderSubscriptionVersion: "1",
		"Content-Type":            "application/json",
	} {
		if k != m.omit {
			r.Header.Set(k, v)
		}
	}
	return r
}

func (hs *harness) serve(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	hs.h.ServeHTTP(w, r)
	return w
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawEvent returns the "event" object of a testdata body, byte for byte.
func rawEvent(t testing.TB, body []byte) []byte {
	t.Helper()
	var env struct{ Event json.RawMessage }
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	return env.Event
}

// withEvent returns a testdata body with its event fields edited.
func withEvent(t testing.TB, file string, edit func(ev map[string]any)) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(readTestdata(t, file), &doc); err != nil {
		t.Fatal(err)
	}
	edit(doc["event"].(map[string]any))
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNotificationDecodesTwitchExamples(t *testing.T) {
	base := subrole.Event{MessageID: testMessageID, Sent: testSent, Received: testNow, UserID: "1234", UserLogin: "cool_user"}
	tests := []struct {
		file string
		want func(e subrole.Event) subrole.Event
		edit func(ev map[string]any) // optional change to the example's event
	}{
		{file: "channel.subscribe.json", want: func(e subrole.Event) subrole.Event {
			e.Type, e.Tier = subrole.EventSubscribe, subrole.Tier1
			return e
		}},
		{file: "channel.subscribe.json", edit: func(ev map[string]any) { ev["is_gift"], ev["tier"] = true, "2000" }, want: func(e subrole.Event) subrole.Event {
			e.Type, e.Tier, e.IsGift = subrole.EventSubscribe, subrole.Tier2, true
			return e
		}},
		{file: "channel.subscription.end.json", edit: func(ev map[string]any) { ev["is_gift"] = true }, want: func(e subrole.Event) subrole.Event {
			e.Type, e.Tier, e.IsGift = subrole.EventSubscriptionEnd, subrole.Tier1, true
			return e
		}},
		{file: "channel.subscription.end.json", want: func(e subrole.Event) subrole.Event {
			e.Type, e.Tier = subrole.EventSubscriptionEnd, subrole.Tier1
			return e
		}},
		{file: "channel.subscription.gift.json", want: func(e subrole.Event) subrole.Event {
			e.Type, e.Tier, e.GiftTotal, e.GiftCumulative = subrole.EventSubscriptionGift, subrole.Tier1, 2, 284
			return e
		}},
		{file: "channel.subscription.gift.anonymous.json", want: func(e subrole.Event) subrole.Event {
			e.Type, e.Tier, e.GiftTotal, e.Anonymous = subrole.EventSubscriptionGift, subrole.Tier3, 5, true
			e.UserID, e.UserLogin = "", ""
			return e
		}},
		{file: "channel.subscription.message.json", want: func(e subrole.Event) subrole.Event {
			e.Type, e.Tier, e.CumulativeMonths, e.StreakMonths = subrole.EventSubscriptionMessage, subrole.Tier1, 15, 1
			return e
		}},
		{file: "channel.subscription.message.nostreak.json", want: func(e subrole.Event) subrole.Event {
			e.Type, e.Tier, e.CumulativeMonths = subrole.EventSubscriptionMessage, subrole.Tier2, 7
			return e
		}},
		{file: "user.authorization.revoke.json", want: func(e subrole.Event) subrole.Event {
			e.Type, e.UserID = subrole.EventAuthorizationRevoke, "1337"
			return e
		}},
	}
	for _, tt := range tests {
		name := tt.file
		if tt.edit != nil {
			name += "/edited"
		}
		t.Run(name, func(t *testing.T) {
			hs := newHarness(t)
			body := readTestdata(t, tt.file)
			if tt.edit != nil {
				body = withEvent(t, tt.file, tt.edit)
			}
			w := hs.serve(message{body: body}.request())
			if w.Code != http.StatusNoContent {
				t.Fatalf("status %d, want 204; body %q; logs:\n%s", w.Code, w.Body, hs.logs)
			}
			if len(hs.sink.events) != 1 {
				t.Fatalf("sink got %d events, want 1", len(hs.sink.events))
			}
			want := tt.want(base)
			want.Raw = rawEvent(t, body)
			if got := hs.sink.events[0]; !reflect.DeepEqual(got, want) {
				t.Errorf("event\n got %+v\nwant %+v", got, want)
			}
			if hs.verified != 1 || len(hs.rejected) != 0 {
				t.Errorf("OnVerified %d times, OnRejected %v; want 1 and none", hs.verified, hs.rejected)
			}
		})
	}
}

func TestRejections(t *testing.T) {
	subscribe := readTestdata(t, "channel.subscribe.json")
	goodSig := sign(testSecret, testMessageID, testSent.Format(time.RFC3339Nano), subscribe)
	hexOnly := strings.TrimPrefix(goodSig, "sha256=")

	tests := []struct {
		name       string
		msg        message
		wantStatus int
		wantReason string
		wantLog    []string // more substrings of the log
	}{
		{"wrong method", message{method: http.MethodGet, body: subscribe}, 405, ReasonMethodNotAllowed, nil},
		{"missing id", message{omit: HeaderMessageID, body: subscribe}, 400, ReasonMissingHeader, []string{"header=" + HeaderMessageID}},
		{"missing timestamp", message{omit: HeaderMessageTimestamp, body: subscribe}, 400, ReasonMissingHeader, []string{"header=" + HeaderMessageTimestamp}},
		{"missing signature", message{omit: HeaderMessageSignature, body: subscribe}, 400, ReasonMissingHeader, []string{"header=" + HeaderMessageSignature}},
		{"missing type", message{omit: HeaderMessageType, body: subscribe}, 400, ReasonMissingHeader, []string{"header=" + HeaderMessageType}},
		{"bad signature", message{secret: "some-other-secret-000", body: subscribe}, 403, ReasonBadSignature, nil},
		{"tampered body", message{sig: goodSig, body: bytes.Replace(subscribe, []byte(`"1000"`), []byte(`"3000"`), 1)}, 403, ReasonBadSignature, nil},
		{"tampered id", message{sig: goodSig, id: "another-id", body: subscribe}, 403, ReasonBadSignature, nil},
		{"missing sha256= prefix", message{sig: hexOnly, body: subscribe}, 403, ReasonMalformedSignature, nil},
		{"other algorithm", message{sig: "sha512=" + hexOnly, body: subscribe}, 403, ReasonMalformedSignature, nil},
		{"signature too short", message{sig: goodSig[:len(goodSig)-1], body: subscribe}, 403, ReasonMalformedSignature, nil},
		{"signature too long", message{sig: goodSig + "0", body: subscribe}, 403, ReasonMalformedSignature, nil},
		{"signature not hex", message{sig: "sha256=" + strings.Repeat("g", 64), body: subscribe}, 403, ReasonMalformedSignature, nil},
		{"stale timestamp", message{ts: testNow.Add(-DefaultMaxAge - time.Second).Format(time.RFC3339Nano), body: subscribe}, 403, ReasonStaleTimestamp, nil},
		{"future timestamp", message{ts: testNow.Add(FutureSkew + time.Second).Format(time.RFC3339Nano), body: subscribe}, 403, ReasonFutureTimestamp, nil},
		{"unparseable timestamp", message{ts: "yesterday", body: subscribe}, 400, ReasonBadTimestamp, nil},
		{"unknown message type", message{typ: "notification_v2", body: subscribe}, 400, ReasonUnknownMessageType, []string{"message_type=notification_v2"}},
		{"malformed JSON", message{body: []byte(`{"subscription":`)}, 400, ReasonMalformedPayload, []string{"field=body"}},
		{"empty body", message{body: nil}, 400, ReasonMalformedPayload, []string{"field=body"}},
		{"body not an object", message{body: []byte(`[1,2]`)}, 400, ReasonMalformedPayload, []string{"field=body"}},
		{"no subscription", message{body: []byte(`{"event":{}}`)}, 400, ReasonMalformedPayload, []string{"field=subscription"}},
		{"no subscription type", message{body: []byte(`{"subscription":{"id":"x"},"event":{}}`)}, 400, ReasonMalformedPayload, []string{"field=subscription.type"}},
		{"subscription type not a string", message{body: []byte(`{"subscription":{"type":5},"event":{}}`)}, 400, ReasonMalformedPayload, []string{"field=subscription.type"}},
		{"event twice", message{body: []byte(`{"subscription":{"type":"channel.subscribe"},"event":{},"Event":{}}`)}, 400, ReasonMalformedPayload, []string{"field=event", "problem=\"more than one\""}},
		{"event null", message{body: []byte(`{"subscription":{"type":"channel.subscribe"},"event":null}`)}, 400, ReasonMalformedPayload, []string{"field=event"}},
		{"bad tier", message{body: withEvent(t, "channel.subscribe.json", func(ev map[string]any) { ev["tier"] = "4000" })}, 400, ReasonMalformedPayload, []string{"field=event.tier"}},
		{"missing tier", message{body: withEvent(t, "channel.subscribe.json", func(ev map[string]any) { delete(ev, "tier") })}, 400, ReasonMalformedPayload, []string{"field=event.tier", "problem=missing"}},
		{"tier a number", message{body: withEvent(t, "channel.subscribe.json", func(ev map[string]any) { ev["tier"] = 1000 })}, 400, ReasonMalformedPayload, []string{"field=event.tier"}},
		{"missing user_id", message{body: withEvent(t, "channel.subscribe.json", func(ev map[string]any) { delete(ev, "user_id") })}, 400, ReasonMalformedPayload, []string{"field=event.user_id"}},
		{"missing broadcaster", message{body: withEvent(t, "channel.subscribe.json", func(ev map[string]any) { delete(ev, "broadcaster_user_id") })}, 400, ReasonMalformedPayload, []string{"field=event.broadcaster_user_id"}},
		{"resub without cumulative_months", message{body: withEvent(t, "channel.subscription.message.json", func(ev map[string]any) { delete(ev, "cumulative_months") })}, 400, ReasonMalformedPayload, []string{"field=event.cumulative_months"}},
		{"resub months fractional", message{body: withEvent(t, "channel.subscription.message.json", func(ev map[string]any) { ev["cumulative_months"] = 1.5 })}, 400, ReasonMalformedPayload, []string{"field=event.cumulative_months"}},
		{"resub streak negative", message{body: withEvent(t, "channel.subscription.message.json", func(ev map[string]any) { ev["streak_months"] = -1 })}, 400, ReasonMalformedPayload, []string{"field=event.streak_months"}},
		{"gift without total", message{body: withEvent(t, "channel.subscription.gift.json", func(ev map[string]any) { delete(ev, "total") })}, 400, ReasonMalformedPayload, []string{"field=event.total"}},
		{"gift of zero", message{body: withEvent(t, "channel.subscription.gift.json", func(ev map[string]any) { ev["total"] = 0 })}, 400, ReasonMalformedPayload, []string{"field=event.total"}},
		{"named gift without gifter", message{body: withEvent(t, "channel.subscription.gift.json", func(ev map[string]any) { ev["user_id"] = nil })}, 400, ReasonMalformedPayload, []string{"field=event.user_id"}},
		{"revoke without client_id", message{body: withEvent(t, "user.authorization.revoke.json", func(ev map[string]any) { delete(ev, "client_id") })}, 400, ReasonMalformedPayload, []string{"field=event.client_id"}},
		{"challenge without challenge", message{typ: string(MessageVerification), body: []byte(`{"subscription":{"type":"channel.subscribe"}}`)}, 400, ReasonMalformedPayload, []string{"field=challenge"}},
		{"revocation of an enabled subscription", message{typ: string(MessageRevocation), body: subscribe}, 400, ReasonMalformedPayload, []string{"field=subscription.status"}},
		{"revocation without status", message{typ: string(MessageRevocation), body: []byte(`{"subscription":{"id":"x","type":"channel.subscribe"}}`)}, 400, ReasonMalformedPayload, []string{"field=subscription.status"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newHarness(t)
			r := tt.msg.request()
			w := hs.serve(r)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; logs:\n%s", w.Code, tt.wantStatus, hs.logs)
			}
			if hs.sink.calls != 0 {
				t.Errorf("sink called %d times, want 0", hs.sink.calls)
			}
			if len(hs.rejected) != 1 || hs.rejected[0] != tt.wantReason {
				t.Errorf("OnRejected got %v, want [%s]", hs.rejected, tt.wantReason)
			}
			if tt.wantStatus == http.StatusMethodNotAllowed && w.Header().Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q, want POST", w.Header().Get("Allow"))
			}
			logs := hs.logs.String()
			if n := strings.Count(logs, "\n"); n != 1 {
				t.Errorf("%d log lines, want exactly 1:\n%s", n, logs)
			}
			for _, s := range append([]string{"level=WARN", "reason=" + tt.wantReason, "remote_addr=" + testRemoteAddr}, tt.wantLog...) {
				if !strings.Contains(logs, s) {
					t.Errorf("log lacks %q:\n%s", s, logs)
				}
			}
			sig := r.Header.Get(HeaderMessageSignature)
			for _, secret := range []string{testSecret, strings.TrimPrefix(sig, "sha256=")} {
				if secret != "" && (strings.Contains(logs, secret) || strings.Contains(w.Body.String(), secret)) {
					t.Errorf("secret or signature %q leaked into the log or the response", secret)
				}
			}
			if body := w.Body.String(); len(body) > 40 || strings.Contains(body, "eventsub") {
				t.Errorf("response body %q: want a short generic text", body)
			}
		})
	}
}

func TestSignedRequestReachesHooksBeforeTimestampCheck(t *testing.T) {
	hs := newHarness(t)
	hs.serve(message{ts: testNow.Add(-time.Hour).Format(time.RFC3339Nano), body: readTestdata(t, "channel.subscribe.json")}.request())
	if hs.verified != 1 || len(hs.rejected) != 1 || hs.rejected[0] != ReasonStaleTimestamp {
		t.Errorf("verified %d, rejected %v; want 1 and [%s]", hs.verified, hs.rejected, ReasonStaleTimestamp)
	}
	hs = newHarness(t)
	hs.serve(message{secret: "not-the-secret-123", body: readTestdata(t, "channel.subscribe.json")}.request())
	if hs.verified != 0 {
		t.Errorf("OnVerified called for a forged request")
	}
}

func TestTimestampWindowEdges(t *testing.T) {
	body := readTestdata(t, "channel.subscribe.json")
	tests := []struct {
		name string
		ts   time.Time
		want int
	}{
		{"just inside MaxAge", testNow.Add(-DefaultMaxAge), 204},
		{"just outside MaxAge", testNow.Add(-DefaultMaxAge - time.Nanosecond), 403},
		{"inside the skew", testNow.Add(FutureSkew), 204},
		{"outside the skew", testNow.Add(FutureSkew + time.Nanosecond), 403},
		{"offset instead of Z", testNow.In(time.FixedZone("JST", 9*3600)), 204},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newHarness(t)
			if w := hs.serve(message{ts: tt.ts.Format(time.RFC3339Nano), body: body}.request()); w.Code != tt.want {
				t.Errorf("status %d, want %d; logs:\n%s", w.Code, tt.want, hs.logs)
			}
		})
	}
	t.Run("custom MaxAge", func(t *testing.T) {
		hs := newHarness(t)
		hs.h.MaxAge = time.Second
		if w := hs.serve(message{ts: testNow.Add(-2 * time.Second).Format(time.RFC3339Nano), body: body}.request()); w.Code != 403 {
			t.Errorf("status %d, want 403", w.Code)
		}
	})
}

func TestBodyTooLarge(t *testing.T) {
	big := bytes.Repeat([]byte(" "), MaxBodyBytes+1)
	for _, tt := range []struct {
		name          string
		contentLength int64
	}{{"declared", int64(len(big))}, {"chunked", -1}} {
		t.Run(tt.name, func(t *testing.T) {
			hs := newHarness(t)
			r := message{body: big}.request()
			r.ContentLength = tt.contentLength
			w := hs.serve(r)
			if w.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d, want 413", w.Code)
			}
			if !strings.Contains(hs.logs.String(), "reason="+ReasonBodyTooLarge) || hs.sink.calls != 0 {
				t.Errorf("want a %s log and no sink call; logs:\n%s", ReasonBodyTooLarge, hs.logs)
			}
		})
	}
	t.Run("exactly the limit is read", func(t *testing.T) {
		body := append(readTestdata(t, "channel.subscribe.json"), bytes.Repeat([]byte(" "), MaxBodyBytes)...)[:MaxBodyBytes]
		hs := newHarness(t)
		r := message{body: body}.request()
		r.ContentLength = -1
		if w := hs.serve(r); w.Code != http.StatusNoContent {
			t.Errorf("status %d, want 204; logs:\n%s", w.Code, hs.logs)
		}
	})
}

func TestDuplicateIsAcknowledged(t *testing.T) {
	hs := newHarness(t)
	body := readTestdata(t, "channel.subscribe.json")
	for i := range 3 {
		if w := hs.serve(message{body: body}.request()); w.Code != http.StatusNoContent {
			t.Fatalf("delivery %d: status %d, want 204", i+1, w.Code)
		}
	}
	if len(hs.sink.events) != 1 || hs.sink.duplicates != 2 {
		t.Errorf("sink kept %d events and saw %d duplicates, want 1 and 2", len(hs.sink.events), hs.sink.duplicates)
	}
	if !strings.Contains(hs.logs.String(), "duplicate event") {
		t.Errorf("no debug line for the duplicate:\n%s", hs.logs)
	}
}

func TestChallenge(t *testing.T) {
	body := readTestdata(t, "challenge.json")
	t.Run("answered", func(t *testing.T) {
		hs := newHarness(t)
		w := hs.serve(message{typ: string(MessageVerification), body: body}.request())
		if w.Code != http.StatusOK {
			t.Fatalf("status %d, want 200; logs:\n%s", w.Code, hs.logs)
		}
		if ct := w.Header().Get("Content-Type"); ct != "text/plain" {
			t.Errorf("Content-Type %q, want text/plain", ct)
		}
		if got := w.Body.String(); got != "pogchamp-kappa-360noscope-vohiyo" {
			t.Errorf("body %q, want the raw challenge", got)
		}
		if hs.sink.calls != 0 {
			t.Errorf("sink called for a challenge")
		}
	})
	t.Run("bad signature", func(t *testing.T) {
		hs := newHarness(t)
		w := hs.serve(message{typ: string(MessageVerification), secret: "wrong-secret-000000", body: body}.request())
		if w.Code != http.StatusForbidden {
			t.Fatalf("status %d, want 403", w.Code)
		}
		if strings.Contains(w.Body.String(), "pogchamp") {
			t.Errorf("forged challenge echoed: %q", w.Body)
		}
	})
	t.Run("stale", func(t *testing.T) {
		hs := newHarness(t)
		w := hs.serve(message{typ: string(MessageVerification), ts: testNow.Add(-time.Hour).Format(time.RFC3339Nano), body: body}.request())
		if w.Code != http.StatusForbidden || strings.Contains(w.Body.String(), "pogchamp") {
			t.Errorf("status %d body %q, want 403 without the challenge", w.Code, w.Body)
		}
	})
}

func TestRevocation(t *testing.T) {
	hs := newHarness(t)
	body := readTestdata(t, "revocation.json")
	for range 2 {
		if w := hs.serve(message{typ: string(MessageRevocation), body: body}.request()); w.Code != http.StatusNoContent {
			t.Fatalf("status %d, want 204; logs:\n%s", w.Code, hs.logs)
		}
	}
	want := []recordedRevocation{{testMessageID, subrole.Revocation{
		SubscriptionID: "f1c2a387-161a-49f9-a165-0f21d7a4e1c4",
		Type:           "channel.follow",
		Version:        "1",
		Status:         "authorization_revoked",
		At:             testSent,
	}}}
	if !reflect.DeepEqual(hs.sink.revocations, want) {
		t.Errorf("revocations\n got %+v\nwant %+v", hs.sink.revocations, want)
	}
	logs := hs.logs.String()
	if strings.Count(logs, "level=ERROR") != 1 || !strings.Contains(logs, "status=authorization_revoked") {
		t.Errorf("want one error line with the status (the duplicate is not an error):\n%s", logs)
	}
}

func TestIgnoredNotifications(t *testing.T) {
	follow := []byte(`{"subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","type":"channel.follow","version":"2","status":"enabled","cost":0,"condition":{"broadcaster_user_id":"1337","moderator_user_id":"1337"},"transport":{"method":"webhook","callback":"https://example.com/webhooks/callback"},"created_at":"2019-11-16T10:11:12.634234626Z"},"event":{"user_id":"1234","user_login":"cool_user","user_name":"Cool_User","broadcaster_user_id":"1337","broadcaster_user_login":"cooler_user","broadcaster_user_name":"Cooler_User","followed_at":"2020-07-15T18:16:11.17106713Z"}}`)
	tests := []struct {
		name   string
		body   []byte
		reason string
	}{
		{"unknown subscription type", follow, ReasonUnknownSubscriptionType},
		{"unknown type whose event clashes with ours", []byte(`{"subscription":{"type":"channel.hype_train.begin"},"event":{"tier":5,"total":"many","user_id":{}}}`), ReasonUnknownSubscriptionType},
		{"other broadcaster", withEvent(t, "channel.subscribe.json", func(ev map[string]any) { ev["broadcaster_user_id"] = "999" }), ReasonWrongBroadcaster},
		{"other client", withEvent(t, "user.authorization.revoke.json", func(ev map[string]any) { ev["client_id"] = "someoneelse" }), ReasonWrongClientID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newHarness(t)
			w := hs.serve(message{body: tt.body}.request())
			if w.Code != http.StatusNoContent {
				t.Fatalf("status %d, want 204; logs:\n%s", w.Code, hs.logs)
			}
			if hs.sink.calls != 0 || len(hs.rejected) != 0 {
				t.Errorf("sink calls %d, OnRejected %v; want none", hs.sink.calls, hs.rejected)
			}
			if logs := hs.logs.String(); !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "reason="+tt.reason) {
				t.Errorf("want a warn line with reason=%s:\n%s", tt.reason, logs)
			}
		})
	}
	t.Run("empty filters accept anyone", func(t *testing.T) {
		hs := newHarness(t)
		hs.h.BroadcasterID, hs.h.ClientID = "", ""
		for _, tt := range tests[1:] {
			if w := hs.serve(message{id: tt.name, body: tt.body}.request()); w.Code != http.StatusNoContent {
				t.Errorf("%s: status %d", tt.name, w.Code)
			}
		}
		if len(hs.sink.events) != 2 {
			t.Errorf("sink got %d events, want 2", len(hs.sink.events))
		}
	})
}

func TestPreviousSecret(t *testing.T) {
	body := readTestdata(t, "channel.subscribe.json")
	hs := newHarness(t)
	hs.h.PreviousSecret = testPrevSecret
	if w := hs.serve(message{secret: testPrevSecret, body: body}.request()); w.Code != http.StatusNoContent {
		t.Errorf("signed with PreviousSecret: status %d, want 204", w.Code)
	}
	if w := hs.serve(message{id: "other", body: body}.request()); w.Code != http.StatusNoContent {
		t.Errorf("signed with Secret: status %d, want 204", w.Code)
	}
	if w := hs.serve(message{id: "third", secret: "neither-of-the-two", body: body}.request()); w.Code != http.StatusForbidden {
		t.Errorf("signed with another secret: status %d, want 403", w.Code)
	}
	hs = newHarness(t)
	if w := hs.serve(message{secret: testPrevSecret, body: body}.request()); w.Code != http.StatusForbidden {
		t.Errorf("PreviousSecret unset: status %d, want 403", w.Code)
	}

	// During a rotation the previous secret is accepted, after it refused.
	hs = newHarness(t)
	rotating := true
	hs.h.PreviousSecret = testPrevSecret
	hs.h.AcceptPrevious = func() bool { return rotating }
	if w := hs.serve(message{id: "r1", secret: testPrevSecret, body: body}.request()); w.Code != http.StatusNoContent {
		t.Errorf("previous secret during rotation: status %d, want 204", w.Code)
	}
	rotating = false
	if w := hs.serve(message{id: "r2", secret: testPrevSecret, body: body}.request()); w.Code != http.StatusForbidden {
		t.Errorf("previous secret after rotation: status %d, want 403", w.Code)
	}
	if w := hs.serve(message{id: "r3", body: body}.request()); w.Code != http.StatusNoContent {
		t.Errorf("current secret after rotation: status %d, want 204", w.Code)
	}
}

func TestSecretChangeIsPickedUp(t *testing.T) {
	body := readTestdata(t, "channel.subscribe.json")
	hs := newHarness(t)
	hs.serve(message{body: body}.request()) // warm the mac pool with the old secret
	hs.h.Secret = "a-brand-new-secret-42"
	if w := hs.serve(message{id: "x", body: body}.request()); w.Code != http.StatusForbidden {
		t.Errorf("old secret after change: status %d, want 403", w.Code)
	}
	if w := hs.serve(message{id: "y", secret: "a-brand-new-secret-42", body: body}.request()); w.Code != http.StatusNoContent {
		t.Errorf("new secret: status %d, want 204", w.Code)
	}
}

func TestSinkError(t *testing.T) {
	for _, tt := range []struct{ typ, file string }{
		{string(MessageNotification), "channel.subscribe.json"},
		{string(MessageRevocation), "revocation.json"},
	} {
		t.Run(tt.typ, func(t *testing.T) {
			hs := newHarness(t)
			hs.sink.err = errors.New("store: bolt: disk on fire at /var/lib/subrole.db")
			w := hs.serve(message{typ: tt.typ, body: readTestdata(t, tt.file)}.request())
			if w.Code != http.StatusInternalServerError {
				t.Fatalf("status %d, want 500", w.Code)
			}
			if strings.Contains(w.Body.String(), "disk") || strings.Contains(w.Body.String(), "bolt") {
				t.Errorf("internal error leaked: %q", w.Body)
			}
			logs := hs.logs.String()
			if strings.Count(logs, "level=ERROR") != 1 || !strings.Contains(logs, "disk on fire") {
				t.Errorf("want one error line with the cause:\n%s", logs)
			}
			if len(hs.rejected) != 0 {
				t.Errorf("OnRejected %v for our own failure", hs.rejected)
			}
		})
	}
}

func TestMisconfigured(t *testing.T) {
	body := readTestdata(t, "channel.subscribe.json")
	t.Run("no secret", func(t *testing.T) {
		hs := newHarness(t)
		hs.h.Secret = ""
		if w := hs.serve(message{secret: "x", body: body}.request()); w.Code != http.StatusInternalServerError {
			t.Errorf("status %d, want 500", w.Code)
		}
	})
	t.Run("no sink", func(t *testing.T) {
		hs := newHarness(t)
		hs.h.Sink = nil
		if w := hs.serve(message{body: body}.request()); w.Code != http.StatusInternalServerError {
			t.Errorf("status %d, want 500", w.Code)
		}
	})
	t.Run("no logger", func(t *testing.T) {
		hs := newHarness(t)
		hs.h.Logger = nil
		for _, m := range []message{{body: body}, {secret: "wrong-secret-xxxxxx", body: body}, {typ: string(MessageRevocation), body: readTestdata(t, "revocation.json")}} {
			hs.serve(m.request())
		}
	})
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		h       *Handler
		wantErr []string
	}{
		{"ok", &Handler{Secret: testSecret, Sink: &fakeSink{}}, nil},
		{"ok with previous", &Handler{Secret: testSecret, PreviousSecret: testPrevSecret, Sink: &fakeSink{}}, nil},
		{"empty", &Handler{}, []string{"Secret", "Sink"}},
		{"short secret", &Handler{Secret: "short", Sink: &fakeSink{}}, []string{"Secret must be 10 to 100 characters, got 5"}},
		{"long secret", &Handler{Secret: strings.Repeat("x", 101), Sink: &fakeSink{}}, []string{"got 101"}},
		{"short previous", &Handler{Secret: testSecret, PreviousSecret: "old", Sink: &fakeSink{}}, []string{"PreviousSecret"}},
		{"negative MaxAge", &Handler{Secret: testSecret, Sink: &fakeSink{}, MaxAge: -time.Second}, []string{"MaxAge"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.h.Validate()
			if (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Validate() = %v, want errors %v", err, tt.wantErr)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			if err != nil && (strings.Contains(err.Error(), testSecret) || !strings.HasPrefix(err.Error(), "eventsub: ")) {
				t.Errorf("error %q: want an eventsub: prefix and no secret", err)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	body := []byte(`{"hello":"twitch"}`)
	good := sign(testSecret, "id", "ts", body)
	tests := []struct {
		name   string
		secret string
		sig    string
		want   bool
	}{
		{"valid", testSecret, good, true},
		{"upper-case hex", testSecret, "sha256=" + strings.ToUpper(good[7:]), true},
		{"upper-case prefix", testSecret, "SHA256=" + good[7:], false},
		{"wrong secret", "another-secret-00", good, false},
		{"empty secret", "", sign("", "id", "ts", body), false},
		{"one digit off", testSecret, good[:len(good)-1] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", good[len(good)-1])+1)%16]), false},
		{"empty", testSecret, "", false},
		{"prefix only", testSecret, "sha256=", false},
		{"spaces", testSecret, " " + good, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Verify(tt.secret, "id", "ts", body, tt.sig); got != tt.want {
				t.Errorf("Verify = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	hdr := func(id, typ, ts string) http.Header {
		h := http.Header{}
		for k, v := range map[string]string{HeaderMessageID: id, HeaderMessageType: typ, HeaderMessageTimestamp: ts, HeaderMessageRetry: "2"} {
			if v != "" {
				h.Set(k, v)
			}
		}
		return h
	}
	ts := testSent.Format(time.RFC3339Nano)
	t.Run("notification", func(t *testing.T) {
		body := readTestdata(t, "channel.subscription.gift.json")
		m, err := Decode(hdr("m1", "notification", ts), body)
		if err != nil {
			t.Fatal(err)
		}
		want := Message{
			ID: "m1", Type: MessageNotification, Timestamp: testSent, Retry: 2,
			Subscription: Subscription{
				ID: "f1c2a387-161a-49f9-a165-0f21d7a4e1c4", Type: subrole.EventSubscriptionGift,
				Version: "1", Status: "enabled", BroadcasterUserID: "1337",
			},
			BroadcasterID: "1337",
			Event: subrole.Event{
				MessageID: "m1", Type: subrole.EventSubscriptionGift, Sent: testSent,
				UserID: "1234", UserLogin: "cool_user", Tier: subrole.Tier1, GiftTotal: 2, GiftCumulative: 284,
				Raw: rawEvent(t, body),
			},
		}
		if !reflect.DeepEqual(m, want) {
			t.Errorf("Decode\n got %+v\nwant %+v", m, want)
		}
	})
	t.Run("revocation", func(t *testing.T) {
		m, err := Decode(hdr("m2", "revocation", ts), readTestdata(t, "revocation.json"))
		if err != nil {
			t.Fatal(err)
		}
		if r := m.Revocation(); r.Status != "authorization_revoked" || r.Type != "channel.follow" || !r.At.Equal(testSent) {
			t.Errorf("Revocation() = %+v", r)
		}
	})
	t.Run("unknown subscription type", func(t *testing.T) {
		body := []byte(`{"subscription":{"type":"stream.online"},"event":{"id":"9001"}}`)
		m, err := Decode(hdr("m3", "notification", ts), body)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subscription.Type != "stream.online" || !reflect.DeepEqual(m.Event, subrole.Event{}) {
			t.Errorf("got type %q event %+v, want stream.online and a zero event", m.Subscription.Type, m.Event)
		}
	})
	errTests := []struct {
		name      string
		h         http.Header
		body      string
		wantField string
	}{
		{"no id", hdr("", "notification", ts), "{}", HeaderMessageID},
		{"no type", hdr("m", "", ts), "{}", HeaderMessageType},
		{"no timestamp", hdr("m", "notification", ""), "{}", HeaderMessageTimestamp},
		{"bad timestamp", hdr("m", "notification", "2026-13-01T00:00:00Z"), "{}", HeaderMessageTimestamp},
		{"syntax", hdr("m", "notification", ts), "{", "body"},
		{"event not object", hdr("m", "notification", ts), `{"subscription":{"type":"channel.subscribe"},"event":"x"}`, "event"},
		{"event field type", hdr("m", "notification", ts), `{"subscription":{"type":"channel.subscribe"},"event":{"user_id":1}}`, "event.user_id"},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.h, []byte(tt.body))
			fe, ok := errors.AsType[*FieldError](err)
			if !ok || fe.Field != tt.wantField {
				t.Fatalf("Decode error %v, want a FieldError for %s", err, tt.wantField)
			}
			if !strings.HasPrefix(err.Error(), "eventsub: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
	t.Run("unknown message type", func(t *testing.T) {
		_, err := Decode(hdr("m", "keepalive", ts), []byte("{}"))
		if !errors.Is(err, ErrUnknownMessageType) {
			t.Errorf("error %v, want ErrUnknownMessageType", err)
		}
	})
}

// nopSink accepts everything and remembers nothing.
type nopSink struct{}

func (nopSink) AcceptEvent(context.Context, subrole.Event) (bool, error) { return false, nil }
func (nopSink) RecordRevocation(context.Context, string, subrole.Revocation) (bool, error) {
	return false, nil
}

// discardWriter is a minimal ResponseWriter for benchmarks.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

func BenchmarkHandler(b *testing.B) {
	for _, file := range []string{"channel.subscribe.json", "channel.subscription.message.json"} {
		b.Run(file, func(b *testing.B) {
			h := &Handler{Secret: testSecret, BroadcasterID: testBroadcast, Sink: nopSink{}, Now: func() time.Time { return testNow }}
			var compact bytes.Buffer // Twitch sends compact JSON
			if err := json.Compact(&compact, readTestdata(b, file)); err != nil {
				b.Fatal(err)
			}
			body := compact.Bytes()
			proto := message{body: body}.request()
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := proto.Clone(context.Background())
				rd := bytes.NewReader(body)
				w := &discardWriter{h: http.Header{}}
				for pb.Next() {
					rd.Reset(body)
					r.Body = io.NopCloser(rd)
					w.code = 0
					h.ServeHTTP(w, r)
					if w.code != http.StatusNoContent {
						b.Fatalf("status %d", w.code)
					}
				}
			})
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, readTestdata(b, "channel.subscribe.json")); err != nil {
		b.Fatal(err)
	}
	body := compact.Bytes()
	h := http.Header{}
	h.Set(HeaderMessageID, testMessageID)
	h.Set(HeaderMessageType, string(MessageNotification))
	h.Set(HeaderMessageTimestamp, testSent.Format(time.RFC3339Nano))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(h, body); err != nil {
			b.Fatal(err)
		}
	}
}

// stallingBody sends one byte, then fails as a read timeout would.
type stallingBody struct{ sent bool }

func (b *stallingBody) Read(p []byte) (int, error) {
	if b.sent {
		return 0, errors.New("i/o timeout")
	}
	b.sent = true
	return copy(p, "{"), nil
}
func (b *stallingBody) Close() error { return nil }

// TestBodyBufferNotSizedByClaim: an unsigned request that claims a 1 MiB
// body and sends one byte must not make the handler allocate 1 MiB before
// anything is verified (found by review: a cheap way to exhaust memory on
// the one route that is exempt from rate limits).
func TestBodyBufferNotSizedByClaim(t *testing.T) {
	h := &Handler{Secret: testSecret}
	const n = 50
	reqs := make([]*http.Request, n)
	for i := range reqs {
		r := httptest.NewRequest(http.MethodPost, "/twitch_eventsub", nil)
		r.Body, r.ContentLength = &stallingBody{}, MaxBodyBytes
		r.Header.Set(HeaderMessageID, "x")
		r.Header.Set(HeaderMessageTimestamp, time.Now().UTC().Format(time.RFC3339))
		r.Header.Set(HeaderMessageSignature, "sha256="+strings.Repeat("0", 64))
		r.Header.Set(HeaderMessageType, "notification")
		reqs[i] = r
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, r := range reqs {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code < 400 {
			t.Fatalf("a body cut short was answered %d", w.Code)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per > 64<<10 {
		t.Errorf("%d bytes allocated per request that claimed 1 MiB and sent 1 byte, want < 64 KiB", per)
	}
}
