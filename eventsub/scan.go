package eventsub

import (
	"bytes"
	"encoding/json"
)

// objectMember returns the raw value of the member named key of the JSON
// object data, and how many members have that name. Names are matched the
// way encoding/json matches them to struct fields (exactly or ASCII
// case-insensitively, after unescaping), so the value found is the one
// Unmarshal decoded. data must be valid JSON, as checked by a successful
// json.Unmarshal; on anything else objectMember returns nil, 0 rather than
// panic.
func objectMember(data []byte, key string) (raw []byte, n int) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, 0
	}
	i++
	for {
		i = skipSpace(data, i)
		if i >= len(data) || data[i] == '}' {
			return raw, n
		}
		ks := i
		i = skipString(data, i)
		if i < 0 {
			return nil, 0
		}
		name := data[ks+1 : i-1]
		i = skipSpace(data, i)
		if i >= len(data) || data[i] != ':' {
			return nil, 0
		}
		i = skipSpace(data, i+1)
		vs := i
		i = skipValue(data, i)
		if i < 0 {
			return nil, 0
		}
		if nameMatches(name, key) {
			raw, n = data[vs:i], n+1
		}
		i = skipSpace(data, i)
		if i < len(data) && data[i] == ',' {
			i++
		}
	}
}

// nameMatches reports whether the raw (still escaped) member name equals key
// as encoding/json compares them. key must be lower-case ASCII without k or
// s, whose Unicode case folding encoding/json also honours.
func nameMatches(name []byte, key string) bool {
	if bytes.IndexByte(name, '\\') < 0 {
		return len(name) == len(key) && bytes.EqualFold(name, []byte(key))
	}
	var s string
	quoted := make([]byte, 0, len(name)+2)
	quoted = append(append(append(quoted, '"'), name...), '"')
	if json.Unmarshal(quoted, &s) != nil {
		return false
	}
	return len(s) == len(key) && bytes.EqualFold([]byte(s), []byte(key))
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index after the string starting at data[i] (a
// quote), or -1.
func skipString(data []byte, i int) int {
	if i >= len(data) || data[i] != '"' {
		return -1
	}
	for i++; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the value starting at data[i], or -1.
func skipValue(data []byte, i int) int {
	if i >= len(data) {
		return -1
	}
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for i < len(data) {
			switch data[i] {
			case '"':
				i = skipString(data, i)
				if i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	}
	for i < len(data) { // a number, true, false or null
		switch data[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
		i++
	}
	return i
}
