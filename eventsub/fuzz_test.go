package eventsub

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/subrole/subrole"
)

// seedBodies returns every testdata body with the message type it belongs to.
func seedBodies(f *testing.F) map[string]string {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no testdata: %v", err)
	}
	seeds := map[string]string{}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		typ := string(MessageNotification)
		switch filepath.Base(file) {
		case "challenge.json":
			typ = string(MessageVerification)
		case "revocation.json":
			typ = string(MessageRevocation)
		}
		seeds[string(b)] = typ
	}
	return seeds
}

// countingSink counts calls and accepts everything.
type countingSink struct{ calls atomic.Int64 }

func (s *countingSink) AcceptEvent(context.Context, subrole.Event) (bool, error) {
	s.calls.Add(1)
	return false, nil
}

func (s *countingSink) RecordRevocation(context.Context, string, subrole.Revocation) (bool, error) {
	s.calls.Add(1)
	return false, nil
}

// FuzzHandler sends arbitrary bodies and headers. When sign is true the
// request is signed with the handler's secret (so the fuzzer reaches the
// timestamp and decoding steps); otherwise sig is used as it is. The handler
// must never panic, must never answer an unsigned request 2xx or reach the
// sink with it, and must answer a signed one with a documented status.
func FuzzHandler(f *testing.F) {
	ts := testSent.Format(time.RFC3339Nano)
	for body, typ := range seedBodies(f) {
		f.Add([]byte(body), testMessageID, ts, typ, "", true)
		f.Add([]byte(body), testMessageID, ts, typ, sign(testSecret, testMessageID, ts, []byte(body)), false)
		f.Add([]byte(body), testMessageID, ts, typ, "sha256="+strings.Repeat("0", 64), false)
	}
	f.Add([]byte(`{"subscription":{"type":"channel.subscribe"},"event":{"tier":"1000","user_id":"1","broadcaster_user_id":"1337"}}`), "x", ts, "notification", "", true)
	f.Add([]byte(`{}`), "", "", "", "", false)
	f.Add([]byte(`null`), "id", "yesterday", "revocation", "", true)

	f.Fuzz(func(t *testing.T, body []byte, id, ts, typ, sig string, signIt bool) {
		sink := &countingSink{}
		var verified, rejected int
		h := &Handler{
			Secret:        testSecret,
			BroadcasterID: testBroadcast,
			Sink:          sink,
			Now:           func() time.Time { return testNow },
			OnVerified:    func(*http.Request) { verified++ },
			OnRejected:    func(*http.Request, string) { rejected++ },
		}
		if signIt {
			sig = sign(testSecret, id, ts, body)
		}
		r := httptest.NewRequest(http.MethodPost, "/twitch_eventsub", strings.NewReader(string(body)))
		r.Header = http.Header{
			HeaderMessageID:        {id},
			HeaderMessageTimestamp: {ts},
			HeaderMessageType:      {typ},
			HeaderMessageSignature: {sig},
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)

		// Judged independently of Verify: hex digits may be either case.
		signed := signIt || strings.EqualFold(sig, sign(testSecret, id, ts, body))
		code := w.Code
		if !signed {
			if code < 400 || code >= 500 {
				t.Fatalf("unsigned request answered %d", code)
			}
			if sink.calls.Load() != 0 || verified != 0 {
				t.Fatalf("unsigned request reached the sink or OnVerified")
			}
			if rejected != 1 {
				t.Fatalf("OnRejected called %d times for a refused request", rejected)
			}
			return
		}
		switch code {
		case http.StatusOK:
			if typ != string(MessageVerification) || w.Body.Len() == 0 {
				t.Fatalf("200 for a %q message with body %q", typ, w.Body)
			}
		case http.StatusNoContent, http.StatusBadRequest, http.StatusForbidden, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("signed request answered %d", code)
		}
		if code >= 400 && sink.calls.Load() != 0 {
			t.Fatalf("refused request (%d) reached the sink", code)
		}
		if verified > 1 || rejected > 1 {
			t.Fatalf("hooks called more than once: verified %d rejected %d", verified, rejected)
		}
	})
}

// FuzzDecode decodes arbitrary bodies. Decode must never panic, and what it
// returns without error must be consistent: a known notification carries an
// event of its type with a valid tier where one is required and the raw event
// JSON, a revocation a subscription id and status, a verification a challenge.
func FuzzDecode(f *testing.F) {
	ts := testSent.Format(time.RFC3339Nano)
	for body, typ := range seedBodies(f) {
		f.Add([]byte(body), typ, ts)
	}
	f.Add([]byte(`{"subscription":{"type":"channel.subscription.gift"},"event":{"broadcaster_user_id":"1","tier":"1000","total":1,"is_anonymous":true}}`), "notification", ts)
	f.Add([]byte(`{"subscription":{"type":"user.authorization.revoke"},"event":{"client_id":"c","user_id":"1"}}`), "notification", "2019-11-16T10:11:12Z")

	f.Fuzz(func(t *testing.T, body []byte, typ, ts string) {
		h := http.Header{}
		h.Set(HeaderMessageID, "fuzz-id")
		h.Set(HeaderMessageType, typ)
		h.Set(HeaderMessageTimestamp, ts)
		m, err := Decode(h, body)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "eventsub: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		if m.ID != "fuzz-id" || string(m.Type) != typ {
			t.Fatalf("headers not carried: %+v", m)
		}
		switch m.Type {
		case MessageVerification:
			if m.Challenge == "" {
				t.Fatal("verification without challenge")
			}
		case MessageRevocation:
			if m.Subscription.ID == "" || m.Subscription.Status == "" || m.Subscription.Status == "enabled" {
				t.Fatalf("bad revocation accepted: %+v", m.Subscription)
			}
		case MessageNotification:
			e := m.Event
			if !m.Subscription.Type.Known() {
				if e.Type != "" || e.Raw != nil {
					t.Fatalf("unknown type %q decoded an event", m.Subscription.Type)
				}
				return
			}
			if e.MessageID != m.ID || e.Type != m.Subscription.Type || !e.Sent.Equal(m.Timestamp) || !json.Valid(e.Raw) {
				t.Fatalf("inconsistent event %+v", e)
			}
			// Raw must be the event that was decoded: decoding it alone gives the same Event.
			alone := []byte(`{"subscription":{"type":"` + string(e.Type) + `"},"event":` + string(e.Raw) + `}`)
			m2, err := Decode(h, alone)
			if err != nil {
				t.Fatalf("Raw %s does not decode alone: %v", e.Raw, err)
			}
			if !reflect.DeepEqual(m2.Event, e) {
				t.Fatalf("Raw decodes to\n%+v\nbut the body gave\n%+v", m2.Event, e)
			}
			if e.Type == subrole.EventAuthorizationRevoke {
				if e.UserID == "" || m.ClientID == "" || e.Tier != subrole.TierNone {
					t.Fatalf("bad revoke event %+v", e)
				}
				return
			}
			if !e.Tier.Valid() || m.BroadcasterID == "" || (e.UserID == "" && !e.Anonymous) {
				t.Fatalf("bad channel event %+v", e)
			}
			if e.CumulativeMonths < 0 || e.StreakMonths < 0 || e.GiftCumulative < 0 || (e.Type == subrole.EventSubscriptionGift && e.GiftTotal < 1) {
				t.Fatalf("negative counts %+v", e)
			}
		default:
			t.Fatalf("unknown message type %q decoded", m.Type)
		}
	})
}

// FuzzObjectMember checks objectMember against encoding/json on valid JSON:
// where exactly one member is called "event" (in any case), it is the value
// json.Unmarshal assigns to an "event" field.
func FuzzObjectMember(f *testing.F) {
	for body := range seedBodies(f) {
		f.Add([]byte(body))
	}
	for _, s := range []string{`{"EvEnt" : [1,{"a":"}"}] ,"x":"\"event\""}`, `{"ev\u0065nt":{"a":1}}`, `{"event":"{"}`, `{"event":-1.5e3}`, `[]`, `{"a":{"event":1}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		raw, n := objectMember(data, "event")
		var v struct {
			Event json.RawMessage `json:"event"`
		}
		if json.Unmarshal(data, &v) != nil {
			return
		}
		switch {
		case n == 0 && v.Event != nil:
			t.Fatalf("objectMember missed %s", v.Event)
		case n == 1 && string(raw) != string(v.Event):
			t.Fatalf("objectMember found %q, encoding/json %q", raw, v.Event)
		}
	})
}
