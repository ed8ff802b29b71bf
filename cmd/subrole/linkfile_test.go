package main

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/subrole/subrole"
)

const (
	idA = "123456789012345678" // Discord ids
	idB = "223456789012345678"
)

func TestParseLinks(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	a := subrole.Link{DiscordUserID: idA, TwitchUserID: "1001", TwitchLogin: "alice", Linked: at}
	b := subrole.Link{DiscordUserID: idB, TwitchUserID: "1002"}
	for _, tc := range []struct {
		name    string
		format  linkFormat
		in      string
		want    []subrole.Link
		where   []string
		ignored []string
	}{
		{name: "csv", in: "discord_user_id,twitch_user_id,twitch_login,linked\n" + idA + ",1001,alice,2024-05-01T12:00:00Z\n" + idB + ",1002,,\n",
			want: []subrole.Link{a, b}, where: []string{"line 2", "line 3"}},
		{name: "aliases, case and spaces in the header", in: " Discord ID ,TWITCH_ID,Twitch_Name,Linked_At\n" + idA + ",1001,Alice,2024-05-01T21:00:00+09:00\n",
			want: []subrole.Link{a}},
		{name: "login alias", in: "discord_id,twitch_id,login\n" + idA + ",1001,ALICE\n", want: []subrole.Link{{DiscordUserID: idA, TwitchUserID: "1001", TwitchLogin: "alice"}}},
		{name: "BOM and CRLF", in: "\ufeffdiscord_user_id,twitch_user_id\r\n" + idB + ",1002\r\n", want: []subrole.Link{b}},
		{name: "quoted fields and a quoted newline", in: "\"discord_user_id\",\"twitch_user_id\",\"note\"\n\"" + idA + "\",\" 1001 \",\"two\nlines\"\n" + idB + ",1002,x\n",
			want: []subrole.Link{{DiscordUserID: idA, TwitchUserID: "1001"}, b}, where: []string{"line 2", "line 4"}, ignored: []string{"note"}},
		{name: "unknown columns reported once, blank rows skipped", in: "x,discord_user_id,twitch_user_id,y,\n1," + idA + ",1001,2,\n,,,,\n\n3," + idB + ",1002,4,\n",
			want: []subrole.Link{{DiscordUserID: idA, TwitchUserID: "1001"}, b}, ignored: []string{"x", "y"}},
		{name: "short rows padded", in: "discord_user_id,twitch_user_id,twitch_login\n" + idB + ",1002\n", want: []subrole.Link{b}},
		{name: "header only", in: "discord_user_id,twitch_user_id\n", want: nil},
		{name: "json array", in: `[{"discord_user_id":"` + idA + `","twitch_user_id":"1001","twitch_login":"alice","linked":"2024-05-01T12:00:00Z"},{"Discord_ID":` + idB + `,"twitch_id":1002,"linked":null}]`,
			want: []subrole.Link{a, b}, where: []string{"[0]", "[1]"}},
		{name: "json object with links", in: ` {"version":1,"links":[{"discord_user_id":"` + idB + `","twitch_user_id":"1002","extra":true}]}`,
			want: []subrole.Link{b}, where: []string{"links[0]"}, ignored: []string{"extra"}},
		{name: "json by flag, BOM", format: formatJSON, in: "\ufeff[]", want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLinks(strings.NewReader(tc.in), tc.format)
			if err != nil {
				t.Fatal(err)
			}
			if !equalLinks(got.Links, tc.want) {
				t.Fatalf("links\n%+v\nwant\n%+v", got.Links, tc.want)
			}
			if tc.where != nil && !slices.Equal(got.Where, tc.where) {
				t.Fatalf("where %q, want %q", got.Where, tc.where)
			}
			if !slices.Equal(got.Ignored, tc.ignored) {
				t.Fatalf("ignored %q, want %q", got.Ignored, tc.ignored)
			}
		})
	}
}

func equalLinks(a, b []subrole.Link) bool {
	return slices.EqualFunc(a, b, func(x, y subrole.Link) bool {
		return x.DiscordUserID == y.DiscordUserID && x.TwitchUserID == y.TwitchUserID &&
			x.TwitchLogin == y.TwitchLogin && x.Linked.Equal(y.Linked)
	})
}

func TestParseLinksRefuses(t *testing.T) {
	const head = "discord_user_id,twitch_user_id,twitch_login,linked\n"
	for _, tc := range []struct {
		name   string
		in     string
		format linkFormat
		want   []string // each must appear in the error
	}{
		{name: "empty", in: "", want: []string{"the file is empty"}},
		{name: "missing header", in: idA + ",1001\n", want: []string{"line 1: no header row"}},
		{name: "missing column", in: "discord_user_id,login\n", want: []string{"line 1: no twitch_user_id column (or twitch_id)"}},
		{name: "semicolons", in: "discord_user_id;twitch_user_id\n", want: []string{"separated by ;"}},
		{name: "two columns for one field", in: "discord_id,discord_user_id,twitch_user_id\n", want: []string{`line 1: columns "discord_id" and "discord_user_id" both mean discord_user_id`}},
		{name: "bad ids", in: head + "12345,1001,,\n" + idA + "x,abc,,\n01234567890123456,01,,\n99999999999999999999,1003,,\n",
			want: []string{
				`line 2, discord_user_id: "12345" has 5 digits; a Discord user id has 17-20`,
				`line 3, discord_user_id: "123456789012345678x" is not a Discord user id`,
				`line 3, twitch_user_id: "abc" is not a numeric Twitch user id`,
				`line 4, discord_user_id: "01234567890123456" starts with 0`,
				`line 4, twitch_user_id: "01" starts with 0`,
				`line 5, discord_user_id: "99999999999999999999" is too large`,
			}},
		{name: "spreadsheet notation", in: head + "1.23457E+17,1001,,\n", want: []string{`line 2, discord_user_id: "1.23457E+17" is a number in a spreadsheet's notation`}},
		{name: "missing cells", in: head + ",,alice,\n", want: []string{"line 2, discord_user_id: missing", "line 2, twitch_user_id: missing"}},
		{name: "bad login and time", in: head + idA + ",1001,アリス,yesterday\n" + idB + ",1002," + strings.Repeat("a", 26) + ",2024-05-01\n",
			want: []string{`line 2, twitch_login: "アリス" is not a Twitch login`, `line 2, linked: "yesterday" is not an RFC 3339 time`,
				"line 3, twitch_login:", "is longer than a Twitch login", `line 3, linked: "2024-05-01"`}},
		{name: "link times out of range", in: head + idA + ",1001,,0001-01-01T00:00:00Z\n" + idB + ",1002,,9999-12-31T23:59:59-01:00\n",
			want: []string{`line 2, linked: "0001-01-01T00:00:00Z" is not a time a link was made`, `line 3, linked: "9999-12-31T23:59:59-01:00" is not a time`}},
		{name: "duplicates name both lines", in: head + idA + ",1001,,\n" + idB + ",1002,,\n" + idA + ",1003,,\n" + "323456789012345678,1002,,\n",
			want: []string{"line 4, discord_user_id: " + idA + " appears again (first at line 2)", "line 5, twitch_user_id: 1002 appears again (first at line 3)"}},
		{name: "too many fields", in: head + idA + ",1001,,,surprise\n", want: []string{"line 2: 5 fields, but the header names 4 columns"}},
		{name: "bare quote", in: head + idA + ",10\"01,,\n", want: []string{"line 2, column", "bare \" in non-quoted-field"}},
		{name: "csv by flag though it starts like json", format: formatCSV, in: `[{"discord_user_id":"1","twitch_user_id":"2"}]`,
			want: []string{"line 1, column 3: bare \""}},
		{name: "json syntax", in: "[\n{\"discord_user_id\": }\n]", want: []string{"line 2: JSON:"}},
		{name: "json shapes", in: `[1, "x", null, {"discord_user_id": true, "twitch_user_id": "1001"}]`,
			want: []string{"[0]: must be an object", "[1]: must be an object", "[2]: must be an object", "[3], discord_user_id: must be a string or a number"}},
		{name: "json object without links", in: `{"members": []}`, want: []string{`must hold a "links" array`}},
		{name: "json links not an array", in: `{"links": {}}`, want: []string{"must be an array of objects"}},
		{name: "json duplicate keys by alias", in: `[{"discord_id":"` + idA + `","discord_user_id":"` + idA + `","twitch_id":"1"}]`,
			want: []string{`[0]: keys "discord_id" and "discord_user_id" both mean discord_user_id`}},
		{name: "json index in errors", format: formatJSON, in: `{"links":[{"discord_user_id":"` + idA + `","twitch_user_id":"1"},{"discord_user_id":"` + idA + `","twitch_user_id":"x"}]}`,
			want: []string{`links[1], twitch_user_id: "x"`, "links[1], discord_user_id: " + idA + " appears again (first at links[0])"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLinks(strings.NewReader(tc.in), tc.format)
			var fe *linkFileError
			if !errors.As(err, &fe) {
				t.Fatalf("accepted (%v): %+v", err, got)
			}
			if got.Links != nil {
				t.Fatalf("links returned with an error: %+v", got.Links)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestParseLinksCapsProblemsAndSize(t *testing.T) {
	var b strings.Builder
	b.WriteString("discord_user_id,twitch_user_id\n")
	for i := range 30 {
		fmt.Fprintf(&b, "bad%d,%d\n", i, i+1)
	}
	_, err := parseLinks(strings.NewReader(b.String()), "")
	msg := fmt.Sprint(err)
	if !strings.HasPrefix(msg, "30 problems") || !strings.Contains(msg, "line 21,") || strings.Contains(msg, "line 22,") || !strings.Contains(msg, "... and 10 more") {
		t.Fatalf("error:\n%s", msg)
	}

	big := bytes.Repeat([]byte("x"), maxLinkFile+1)
	if _, err := parseLinks(bytes.NewReader(big), ""); err == nil || !strings.Contains(err.Error(), "larger than 64 MiB") {
		t.Fatalf("oversize file: %v", err)
	}
}

func TestWriteLinksRoundTrip(t *testing.T) {
	links := []subrole.Link{
		{DiscordUserID: idA, TwitchUserID: "1001", TwitchLogin: "alice", Linked: time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC)},
		{DiscordUserID: idB, TwitchUserID: "1002", Linked: time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, f := range []linkFormat{formatCSV, formatJSON} {
		var buf bytes.Buffer
		if err := writeLinks(&buf, f, links); err != nil {
			t.Fatal(err)
		}
		got, err := parseLinks(&buf, "") // sniffed
		if err != nil || got.Format != f || !equalLinks(got.Links, links) {
			t.Fatalf("%s: %v %+v", f, err, got)
		}
	}
}

// FuzzImport: the link file parser never panics, accepts only valid links
// with unique ids, and what it accepts survives export and import unchanged.
func FuzzImport(f *testing.F) {
	for _, s := range []string{
		"discord_user_id,twitch_user_id,twitch_login,linked\n" + idA + ",1001,alice,2024-05-01T12:00:00Z\n",
		"\ufeffDiscord ID;Twitch ID\r\n" + idA + ";1\r\n",
		"discord_id,twitch_id,login\n\"" + idA + "\",\"1\",\"Bob\"\n,,\n",
		`[{"discord_user_id":"` + idA + `","twitch_user_id":1,"linked":"2024-05-01T21:00:00.5+09:00"}]`,
		`{"links":[{"discord_id":` + idB + `,"twitch_name":"x_y"}]}`,
		"discord_user_id,twitch_user_id\n" + idA + ",1\n" + idA + ",2\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := parseLinks(bytes.NewReader(data), "")
		if err != nil {
			var fe *linkFileError
			if !errors.As(err, &fe) || len(fe.Problems) == 0 {
				t.Fatalf("error without problems: %v", err)
			}
			return
		}
		if len(list.Where) != len(list.Links) {
			t.Fatalf("%d places for %d links", len(list.Where), len(list.Links))
		}
		discord, twitch := map[string]bool{}, map[string]bool{}
		for _, l := range list.Links {
			if !fuzzValid(l) || discord[l.DiscordUserID] || twitch[l.TwitchUserID] {
				t.Fatalf("accepted an invalid or repeated link %+v", l)
			}
			discord[l.DiscordUserID], twitch[l.TwitchUserID] = true, true
		}
		for _, format := range []linkFormat{formatCSV, formatJSON} {
			var buf bytes.Buffer
			if err := writeLinks(&buf, format, list.Links); err != nil {
				t.Fatal(err)
			}
			again, err := parseLinks(&buf, format)
			if err != nil {
				t.Fatalf("%s export not read back: %v\n%s", format, err, buf.String())
			}
			if !equalLinks(again.Links, list.Links) {
				t.Fatalf("%s round trip\n%+v\nbecame\n%+v", format, list.Links, again.Links)
			}
		}
	})
}

var (
	fuzzDiscordID = regexp.MustCompile(`^[1-9][0-9]{16,19}$`)
	fuzzTwitchID  = regexp.MustCompile(`^[1-9][0-9]{0,19}$`)
	fuzzLogin     = regexp.MustCompile(`^[a-z0-9_]{0,25}$`)
)

// fuzzValid restates the rules for an accepted link independently of the
// parser's own checks.
func fuzzValid(l subrole.Link) bool {
	if _, err := strconv.ParseUint(l.DiscordUserID, 10, 64); err != nil {
		return false
	}
	return fuzzDiscordID.MatchString(l.DiscordUserID) && fuzzTwitchID.MatchString(l.TwitchUserID) &&
		fuzzLogin.MatchString(l.TwitchLogin) && (l.Linked.IsZero() || l.Linked.Year() >= 2015 && l.Linked.Year() <= 9999)
}
