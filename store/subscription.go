package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/subrole/subrole"
)

// Subscription state is the value written for every event and read for
// every subscriber in a reconcile pass, so it has a compact binary form
// (schema 7) instead of JSON: a quarter of the size, and encoding plus
// decoding take ~0.3 µs instead of ~5 µs. Values written before schema 7
// are JSON and stay readable (a JSON value starts with '{'); each is
// rewritten in the new form the next time its user's state changes, so
// opening a large file needs no conversion pass.
//
//	0x01                  format marker
//	uvarint flags         subFlag* bits
//	uvarint tier
//	string  twitch_user_id, twitch_login, gifter_id, gifter_login
//	uvarint streak_months, cumulative_months, gifts_given
//	time    started, ended, last_event (each only when its flag is set)
//	string  last_event_type, source
//
// A string is a uvarint length and the bytes; a time is a varint of Unix
// seconds and a uvarint of nanoseconds, read back in UTC.
const subFormat = 0x01

const (
	subFlagGift = 1 << iota
	subFlagStarted
	subFlagEnded
	subFlagLastEvent
	subFlagsKnown = subFlagGift | subFlagStarted | subFlagEnded | subFlagLastEvent
)

// encodeSubscription returns the stored form of s.
func encodeSubscription(s subrole.Subscription) ([]byte, error) {
	for _, n := range [...]int{int(s.Tier), s.StreakMonths, s.CumulativeMonths, s.GiftsGiven} {
		if n < 0 || n > math.MaxInt32 {
			return nil, fmt.Errorf("tier or count %d out of range", n)
		}
	}
	var flags uint64
	if s.IsGift {
		flags |= subFlagGift
	}
	times := [...]struct {
		t    time.Time
		flag uint64
	}{{s.Started, subFlagStarted}, {s.Ended, subFlagEnded}, {s.LastEvent, subFlagLastEvent}}
	for _, t := range times {
		if !t.t.IsZero() {
			flags |= t.flag
		}
	}
	b := make([]byte, 0, 64+len(s.TwitchUserID)+len(s.TwitchLogin)+len(s.GifterID)+
		len(s.GifterLogin)+len(s.LastEventType)+len(s.Source))
	b = append(b, subFormat)
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendUvarint(b, uint64(s.Tier))
	b = appendString(b, s.TwitchUserID)
	b = appendString(b, s.TwitchLogin)
	b = appendString(b, s.GifterID)
	b = appendString(b, s.GifterLogin)
	b = binary.AppendUvarint(b, uint64(s.StreakMonths))
	b = binary.AppendUvarint(b, uint64(s.CumulativeMonths))
	b = binary.AppendUvarint(b, uint64(s.GiftsGiven))
	for _, t := range times {
		if !t.t.IsZero() {
			b = binary.AppendVarint(b, t.t.Unix())
			b = binary.AppendUvarint(b, uint64(t.t.Nanosecond()))
		}
	}
	b = appendString(b, s.LastEventType)
	b = appendString(b, string(s.Source))
	return b, nil
}

// decodeSubscription parses a stored subscription in either form.
func decodeSubscription(data []byte, s *subrole.Subscription) error {
	if len(data) > 0 && data[0] == '{' {
		return decode(data, s) // written before schema 7
	}
	r := reader{b: data}
	if f := r.byte(); r.err == nil && f != subFormat {
		return fmt.Errorf("unknown value format %#x", f)
	}
	flags := r.uvarint()
	if flags&^subFlagsKnown != 0 {
		return fmt.Errorf("unknown flags %#x", flags)
	}
	*s = subrole.Subscription{IsGift: flags&subFlagGift != 0, Tier: subrole.Tier(r.small())}
	s.TwitchUserID = r.string()
	s.TwitchLogin = r.string()
	s.GifterID = r.string()
	s.GifterLogin = r.string()
	s.StreakMonths = r.small()
	s.CumulativeMonths = r.small()
	s.GiftsGiven = r.small()
	for _, t := range [...]struct {
		dst  *time.Time
		flag uint64
	}{{&s.Started, subFlagStarted}, {&s.Ended, subFlagEnded}, {&s.LastEvent, subFlagLastEvent}} {
		if flags&t.flag != 0 {
			*t.dst = r.time()
		}
	}
	s.LastEventType = r.string()
	s.Source = subrole.Source(r.string())
	if err := r.end(); err != nil {
		*s = subrole.Subscription{}
		return err
	}
	return nil
}

// appendString appends s with its length.
func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// reader reads a binary value. The first malformed field sets err; every
// read after it returns a zero value.
type reader struct {
	b   []byte
	err error
}

var errTruncated = errors.New("truncated value")

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		r.fail(errTruncated)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(errTruncated)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// small reads a non-negative count that fits an int32.
func (r *reader) small() int {
	v := r.uvarint()
	if v > math.MaxInt32 {
		r.fail(fmt.Errorf("count %d out of range", v))
		return 0
	}
	return int(v)
}

func (r *reader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail(errTruncated)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) time() time.Time {
	sec, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(errTruncated)
		return time.Time{}
	}
	r.b = r.b[n:]
	nsec := r.uvarint()
	if nsec >= 1e9 {
		r.fail(fmt.Errorf("nanoseconds %d out of range", nsec))
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

// end reports the first error, or trailing bytes.
func (r *reader) end() error {
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d bytes after the value", len(r.b))
	}
	return r.err
}
