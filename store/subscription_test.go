package store

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
)

// subscriptionCases cover every field, both flags of each time, and times
// far from now (a JSON round trip keeps them, so the binary form must too).
func subscriptionCases() map[string]subrole.Subscription {
	return map[string]subrole.Subscription{
		"only an id": {TwitchUserID: "1"},
		"every field": {TwitchUserID: "123456789", TwitchLogin: "viewer_42", Tier: subrole.Tier3,
			IsGift: true, GifterID: "987", GifterLogin: "gifter", StreakMonths: 3, CumulativeMonths: 40,
			GiftsGiven: 7, Started: t0.Add(-90 * 24 * time.Hour), Ended: t0, LastEvent: t0.Add(time.Nanosecond),
			LastEventType: string(subrole.EventSubscriptionEnd), Source: subrole.SourceHelix},
		"ended, never started": {TwitchUserID: "2", Tier: subrole.Tier1, Ended: t0},
		"times before 1970 and far ahead": {TwitchUserID: "3",
			Started:   time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
			Ended:     time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
			LastEvent: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
		"unicode and big counts": {TwitchUserID: "4", TwitchLogin: "名前\u2028<&>", StreakMonths: 1 << 30},
	}
}

func TestSubscriptionBinaryRoundTrip(t *testing.T) {
	for name, want := range subscriptionCases() {
		t.Run(name, func(t *testing.T) {
			data, err := encodeSubscription(want)
			if err != nil {
				t.Fatal(err)
			}
			if data[0] != subFormat {
				t.Fatalf("first byte %#x, want the binary marker", data[0])
			}
			var got subrole.Subscription
			if err := decodeSubscription(data, &got); err != nil {
				t.Fatal(err)
			}
			equal(t, "decoded", got, want)
			js, _ := json.Marshal(want)
			if len(data) >= len(js) {
				t.Errorf("binary form %d bytes, JSON %d: not smaller", len(data), len(js))
			}
		})
	}
}

// TestSubscriptionJSONStillRead: values written before schema 7 are JSON.
func TestSubscriptionJSONStillRead(t *testing.T) {
	for name, want := range subscriptionCases() {
		js, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var got subrole.Subscription
		if err := decodeSubscription(js, &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		equal(t, name, got, want)
	}
}

func TestSubscriptionEncodeRefusesNegativeCounts(t *testing.T) {
	for _, s := range []subrole.Subscription{
		{TwitchUserID: "1", Tier: -1}, {TwitchUserID: "1", StreakMonths: -1},
		{TwitchUserID: "1", CumulativeMonths: -1}, {TwitchUserID: "1", GiftsGiven: -1},
	} {
		if _, err := encodeSubscription(s); err == nil {
			t.Errorf("%+v encoded", s)
		}
	}
}

func TestSubscriptionDecodeRefusesMalformed(t *testing.T) {
	full, err := encodeSubscription(subscriptionCases()["every field"])
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(full) { // every truncation
		var s subrole.Subscription
		if err := decodeSubscription(full[:n], &s); err == nil {
			t.Errorf("truncated to %d of %d bytes: decoded %+v", n, len(full), s)
		}
	}
	for name, data := range map[string][]byte{
		"unknown format":   append([]byte{0x02}, full[1:]...),
		"unknown flag":     {subFormat, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"trailing bytes":   append(bytes.Clone(full), 0),
		"count too big":    {subFormat, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"nanoseconds 1e9":  {subFormat, subFlagStarted, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03, 0, 0},
		"string past end":  {subFormat, 0, 0, 5, 'a'},
		"not JSON after {": []byte("{not json"),
	} {
		var s subrole.Subscription
		if err := decodeSubscription(data, &s); err == nil {
			t.Errorf("%s: decoded %+v", name, s)
		}
	}
}

// TestSubscriptionRewrittenOnPut: a JSON value from an older schema is read
// through the Tx and replaced by the binary form the next time it is put.
func TestSubscriptionRewrittenOnPut(t *testing.T) {
	s := openTemp(t, Options{})
	old := subscriptionCases()["every field"]
	js, _ := json.Marshal(old)
	if err := s.db.Update(func(btx *bolt.Tx) error {
		return btx.Bucket([]byte(bucketSubs)).Put([]byte(old.TwitchUserID), js)
	}); err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, s, func(tx subrole.Tx) error {
		got, err := tx.Subscription(old.TwitchUserID)
		if err != nil {
			return err
		}
		equal(t, "JSON value read", got, old)
		var all []subrole.Subscription
		if err := tx.ForEachSubscription(func(s subrole.Subscription) error { all = append(all, s); return nil }); err != nil {
			return err
		}
		equal(t, "JSON value walked", all, []subrole.Subscription{old})
		got.StreakMonths++
		return tx.PutSubscription(got)
	})
	s.db.View(func(btx *bolt.Tx) error {
		if v := btx.Bucket([]byte(bucketSubs)).Get([]byte(old.TwitchUserID)); len(v) == 0 || v[0] != subFormat {
			t.Errorf("after a put the value is %q, want the binary form", v)
		}
		return nil
	})
}

// FuzzSubscriptionDecode: any stored bytes either fail to decode or decode
// to a subscription whose binary form reads back the same; nothing panics.
func FuzzSubscriptionDecode(f *testing.F) {
	for _, s := range subscriptionCases() {
		b, _ := encodeSubscription(s)
		f.Add(b)
		js, _ := json.Marshal(s)
		f.Add(js)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s subrole.Subscription
		isJSON := strings.HasPrefix(string(data), "{")
		if err := decodeSubscription(data, &s); err != nil {
			if !isJSON && s != (subrole.Subscription{}) {
				t.Fatalf("failed decode left %+v", s)
			}
			return
		}
		b, err := encodeSubscription(s)
		if err != nil {
			if isJSON {
				return // JSON can hold counts out of range, which are never written
			}
			t.Fatalf("decoded %+v does not encode: %v", s, err)
		}
		var again subrole.Subscription
		if err := decodeSubscription(b, &again); err != nil {
			t.Fatalf("re-encoded value does not decode: %v", err)
		}
		// The binary form keeps instants in UTC; JSON keeps the offset.
		s.Started, s.Ended, s.LastEvent = s.Started.UTC(), s.Ended.UTC(), s.LastEvent.UTC()
		if again != s {
			t.Fatalf("round trip changed %+v to %+v", s, again)
		}
	})
}
