package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// This file is the only place that knows how keys and values are laid out.
//
// Values of domain types are JSON (the types carry json tags), except
// subscription state, which has a binary form (subscription.go). Sequence keys
// are 8-byte big-endian integers, so bbolt's byte order is numeric order.
// Time keys are 8-byte big-endian Unix nanoseconds, optionally followed by an
// id, so a cursor walks them oldest first.

// encode returns the stored form of a domain value.
func encode(v any) ([]byte, error) {
	return json.Marshal(v)
}

// decode parses a stored value into v. data may point into bbolt's memory
// map; json.Unmarshal copies what it keeps.
func decode(data []byte, v any) error {
	return json.Unmarshal(data, v)
}

// seqKey returns the key of sequence number n.
func seqKey(n uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), n)
}

// parseSeqKey returns the sequence number of key k.
func parseSeqKey(k []byte) uint64 {
	return binary.BigEndian.Uint64(k)
}

// keyTimeRange returns the earliest and latest times a time key can hold:
// Unix nanoseconds from 1970 until math.MaxInt64 (in 2262). Earlier times
// would not sort correctly as unsigned bytes.
func keyTimeRange() (earliest, latest time.Time) {
	return time.Unix(0, 0), time.Unix(0, math.MaxInt64)
}

// timeKey returns the key prefix of t followed by id, or an error when t is
// outside the range a key can hold (the zero time is).
func timeKey(t time.Time, id string) ([]byte, error) {
	if earliest, latest := keyTimeRange(); t.Before(earliest) || t.After(latest) {
		return nil, fmt.Errorf("time %s out of range (1970 to 2262)", t.Format(time.RFC3339))
	}
	return appendTimeKey(t, id), nil
}

// boundKey returns the key prefix of t, with t clamped into the key range.
// It is meant for comparisons: every time before 1970 is before every key.
func boundKey(t time.Time) []byte {
	earliest, latest := keyTimeRange()
	switch {
	case t.Before(earliest):
		t = earliest
	case t.After(latest):
		t = latest
	}
	return appendTimeKey(t, "")
}

func appendTimeKey(t time.Time, id string) []byte {
	k := make([]byte, 0, 8+len(id))
	k = binary.BigEndian.AppendUint64(k, uint64(t.UnixNano()))
	return append(k, id...)
}

// parseTimeKey splits a time key into its time (in UTC) and id.
func parseTimeKey(k []byte) (time.Time, string, error) {
	if len(k) < 8 {
		return time.Time{}, "", fmt.Errorf("malformed time key %x", k)
	}
	n := int64(binary.BigEndian.Uint64(k))
	return time.Unix(0, n).UTC(), string(k[8:]), nil
}

// timeKeyBefore reports whether the time prefix of key k sorts before bound,
// a key made by boundKey.
func timeKeyBefore(k, bound []byte) bool {
	return len(k) >= 8 && bytes.Compare(k[:8], bound) < 0
}
