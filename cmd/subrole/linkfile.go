package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/subrole/subrole"
)

// The link file is the format of "subrole import" and "subrole export": a
// list of Discord id <-> Twitch id pairs, as another bot or a spreadsheet
// keeps them. It is an outside file format like the EventSub wire format, so
// it lives at the edge (here) and the core only sees validated
// subrole.Link values.
//
// CSV: a header row, then one link per row. JSON: an array of objects, or an
// object with a "links" array. Columns (keys): discord_user_id and
// twitch_user_id (required), twitch_login and linked (RFC 3339; empty means
// the time of the import).

// maxLinkFile is the largest link file read (about a million links).
const maxLinkFile = 64 << 20

// maxProblems is how many problems an error lists before it counts the rest.
const maxProblems = 20

// discordEpoch is the start of 2015, Discord's epoch: no link is older.
var discordEpoch = time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)

// linkFormat is csv or json.
type linkFormat string

const (
	formatCSV  linkFormat = "csv"
	formatJSON linkFormat = "json"
)

// parseFormat reads a -format flag; empty means "from the file name".
func parseFormat(s string) (linkFormat, error) {
	switch f := linkFormat(strings.ToLower(strings.TrimSpace(s))); f {
	case "", formatCSV, formatJSON:
		return f, nil
	}
	return "", fmt.Errorf("-format must be csv or json, got %q", s)
}

// formatOf returns the format named by a file's extension, or "" when the
// extension names none.
func formatOf(name string) linkFormat {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv":
		return formatCSV
	case ".json":
		return formatJSON
	}
	return ""
}

// linkField is one column of the link file.
type linkField int

const (
	fieldDiscord linkField = iota
	fieldTwitch
	fieldLogin
	fieldLinked
	numFields
)

// fieldNames are the canonical column names, as export writes them.
var fieldNames = [numFields]string{"discord_user_id", "twitch_user_id", "twitch_login", "linked"}

// fieldAliases maps a normalized column name to its field.
var fieldAliases = map[string]linkField{
	"discord_user_id": fieldDiscord, "discord_id": fieldDiscord,
	"twitch_user_id": fieldTwitch, "twitch_id": fieldTwitch,
	"twitch_login": fieldLogin, "twitch_name": fieldLogin, "login": fieldLogin,
	"linked": fieldLinked, "linked_at": fieldLinked,
}

// normalizeColumn lowercases and trims a column name, and reads spaces and
// hyphens as underscores ("Discord ID" is discord_id).
func normalizeColumn(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	return strings.NewReplacer(" ", "_", "-", "_").Replace(s)
}

// linkList is a parsed and validated link file.
type linkList struct {
	Format linkFormat
	Links  []subrole.Link
	// Where names each link's place in the file: "line 7" (CSV) or "[3]"
	// (JSON array index; "links[3]" inside a {"links": [...]} object).
	Where []string
	// Ignored lists the unknown columns or keys, each once, in file order.
	Ignored []string
}

// linkFileError lists every problem found in a link file; nothing of it
// may be imported.
type linkFileError struct {
	Problems []string
}

func (e *linkFileError) Error() string {
	var b strings.Builder
	n := len(e.Problems)
	if n == 1 {
		b.WriteString("1 problem")
	} else {
		fmt.Fprintf(&b, "%d problems", n)
	}
	for i, p := range e.Problems {
		if i == maxProblems {
			fmt.Fprintf(&b, "\n  ... and %d more", n-maxProblems)
			break
		}
		b.WriteString("\n  " + p)
	}
	return b.String()
}

// parseLinks reads a link file of the given format ("" sniffs it from the
// first byte that is not white space: [ or { is JSON, anything else CSV).
// It checks every row before it returns: an error (a *linkFileError when the
// content is at fault) lists every problem, and then there are no links.
func parseLinks(r io.Reader, format linkFormat) (linkList, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxLinkFile+1))
	if err != nil {
		return linkList{}, err
	}
	if len(data) > maxLinkFile {
		return linkList{}, &linkFileError{[]string{fmt.Sprintf("the file is larger than %d MiB: split it and import the parts one after the other", maxLinkFile>>20)}}
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // Excel's UTF-8 byte order mark
	if format == "" {
		format = formatCSV
		if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && (t[0] == '[' || t[0] == '{') {
			format = formatJSON
		}
	}
	var rows []linkRow
	var ignored, problems []string
	if format == formatJSON {
		rows, ignored, problems = readJSONLinks(data)
	} else {
		rows, ignored, problems = readCSVLinks(data)
	}
	list := linkList{Format: format, Ignored: ignored}
	for _, row := range rows {
		l, bad := row.link()
		problems = append(problems, bad...)
		list.Links = append(list.Links, l)
		list.Where = append(list.Where, row.where)
	}
	problems = append(problems, duplicateLinks(list.Links, list.Where)...)
	if len(problems) > 0 {
		return linkList{}, &linkFileError{problems}
	}
	return list, nil
}

// linkRow is one row as read, before it is checked.
type linkRow struct {
	where string
	cells [numFields]string
}

// link checks a row and returns its link and what is wrong with it, each
// problem naming the row and the column.
func (r linkRow) link() (subrole.Link, []string) {
	var problems []string
	bad := func(f linkField, what string) {
		problems = append(problems, fmt.Sprintf("%s, %s: %s", r.where, fieldNames[f], what))
	}
	c := r.cells
	for i := range c {
		c[i] = strings.TrimSpace(c[i])
	}
	l := subrole.Link{DiscordUserID: c[fieldDiscord], TwitchUserID: c[fieldTwitch], TwitchLogin: strings.ToLower(c[fieldLogin])}
	if c[fieldLinked] != "" {
		t, err := time.Parse(time.RFC3339, c[fieldLinked])
		t = t.UTC()
		switch {
		case err != nil:
			bad(fieldLinked, fmt.Sprintf("%q is not an RFC 3339 time like 2024-05-01T12:00:00Z", clip(c[fieldLinked])))
		case t.Before(discordEpoch) || t.Year() > 9999:
			bad(fieldLinked, fmt.Sprintf("%q is not a time a link was made (Discord began in 2015)", clip(c[fieldLinked])))
		default:
			l.Linked = t
		}
	}
	for f, p := range linkProblems(l) {
		if p != "" {
			bad(linkField(f), p)
		}
	}
	return l, problems
}

// linkProblems checks a link's ids and login, and returns what is wrong with
// each field ("" when nothing). It is the rule for links from a file and
// from the admin socket alike.
func linkProblems(l subrole.Link) [numFields]string {
	var out [numFields]string
	out[fieldDiscord] = discordIDProblem(l.DiscordUserID)
	out[fieldTwitch] = twitchIDProblem(l.TwitchUserID)
	out[fieldLogin] = twitchLoginProblem(l.TwitchLogin)
	return out
}

// checkLinks checks links that arrive already parsed (the admin socket's
// POST /import): every link by linkProblems, and no id twice. where names
// each link in the problems.
func checkLinks(links []subrole.Link, where []string) []string {
	var problems []string
	for i, l := range links {
		for f, p := range linkProblems(l) {
			if p != "" {
				problems = append(problems, fmt.Sprintf("%s, %s: %s", where[i], fieldNames[f], p))
			}
		}
	}
	return append(problems, duplicateLinks(links, where)...)
}

// discordIDProblem says what keeps s from being a Discord user id (a
// snowflake: 17-20 decimal digits that fit in 64 bits), or "".
func discordIDProblem(s string) string {
	if p := decimalIDProblem(s, "a Discord user id (17-20 digits)"); p != "" {
		return p
	}
	if len(s) < 17 || len(s) > 20 {
		return fmt.Sprintf("%q has %d digits; a Discord user id has 17-20", s, len(s))
	}
	if _, err := strconv.ParseUint(s, 10, 64); err != nil {
		return fmt.Sprintf("%q is too large for a Discord user id", s)
	}
	return ""
}

// twitchIDProblem says what keeps s from being a Twitch user id (1-20
// decimal digits), or "".
func twitchIDProblem(s string) string {
	if p := decimalIDProblem(s, "a numeric Twitch user id"); p != "" {
		return p
	}
	if len(s) > 20 {
		return fmt.Sprintf("%q has %d digits; a Twitch user id has at most 20", clip(s), len(s))
	}
	return ""
}

// decimalIDProblem checks the common shape of both ids.
func decimalIDProblem(s, what string) string {
	switch {
	case s == "":
		return "missing"
	case isDigits(s) && s[0] == '0':
		return fmt.Sprintf("%q starts with 0; %s does not", clip(s), what)
	case isDigits(s):
		return ""
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		// 1.23457E+17: the spreadsheet stored the id as a number, which keeps
		// only 15 digits.
		return fmt.Sprintf("%q is a number in a spreadsheet's notation, not %s: the spreadsheet has rounded it; format the column as text and copy the ids again", clip(s), what)
	}
	return fmt.Sprintf("%q is not %s", clip(s), what)
}

// twitchLoginProblem checks an optional, lowercased Twitch login: 1-25
// characters of a-z, 0-9 and _.
func twitchLoginProblem(s string) string {
	if s == "" {
		return ""
	}
	if len(s) > 25 {
		return fmt.Sprintf("%q is longer than a Twitch login (at most 25 characters)", clip(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return fmt.Sprintf("%q is not a Twitch login (letters, digits and _ only; a display name in another script is not a login)", clip(s))
		}
	}
	return ""
}

// clip shortens a quoted value in an error message.
func clip(s string) string {
	if len(s) > 40 {
		return strings.ToValidUTF8(s[:40], "") + "..."
	}
	return s
}

// duplicateLinks reports each Discord or Twitch id that appears again,
// naming both places.
func duplicateLinks(links []subrole.Link, where []string) []string {
	var problems []string
	discord, twitch := map[string]int{}, map[string]int{}
	for i, l := range links {
		if j, ok := discord[l.DiscordUserID]; ok && l.DiscordUserID != "" {
			problems = append(problems, fmt.Sprintf("%s, discord_user_id: %s appears again (first at %s)", where[i], l.DiscordUserID, where[j]))
		} else {
			discord[l.DiscordUserID] = i
		}
		if j, ok := twitch[l.TwitchUserID]; ok && l.TwitchUserID != "" {
			problems = append(problems, fmt.Sprintf("%s, twitch_user_id: %s appears again (first at %s)", where[i], clip(l.TwitchUserID), where[j]))
		} else {
			twitch[l.TwitchUserID] = i
		}
	}
	return problems
}

// columnMap maps names (CSV header cells or JSON keys) to fields, reports
// names that are unknown, and names two that mean the same field.
type columnMap struct {
	seen    map[linkField]string
	ignored []string
}

// field returns the field of name; ok is false for an unknown name (recorded
// once in ignored) and for a second name of a field (a problem).
func (m *columnMap) field(name string) (f linkField, problem string, ok bool) {
	if m.seen == nil {
		m.seen = map[linkField]string{}
	}
	f, known := fieldAliases[normalizeColumn(name)]
	if !known {
		if strings.TrimSpace(name) != "" && !slices.Contains(m.ignored, name) {
			m.ignored = append(m.ignored, name)
		}
		return 0, "", false
	}
	if prev, dup := m.seen[f]; dup {
		return 0, fmt.Sprintf("%q and %q both mean %s", clip(prev), clip(name), fieldNames[f]), false
	}
	m.seen[f] = name
	return f, "", true
}

// missing returns a problem for each required field without a column.
func (m *columnMap) missing(where string) []string {
	var out []string
	for _, f := range []linkField{fieldDiscord, fieldTwitch} {
		if _, ok := m.seen[f]; !ok {
			out = append(out, fmt.Sprintf("%s: no %s column (or %s)", where, fieldNames[f], aliasesOf(f)))
		}
	}
	return out
}

func aliasesOf(f linkField) string {
	var names []string
	for n, g := range fieldAliases {
		if g == f && n != fieldNames[f] {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// readCSVLinks reads the rows of a CSV link file.
func readCSVLinks(data []byte) (rows []linkRow, ignored, problems []string) {
	cr := csv.NewReader(bytes.NewReader(data))
	cr.FieldsPerRecord = -1 // checked below, with a clearer message
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, nil, []string{"the file is empty: it needs a header row naming the columns, e.g. " + strings.Join(fieldNames[:], ",")}
	}
	if err != nil {
		return nil, nil, []string{csvProblem(err)}
	}
	var cols columnMap
	index := make([]int, len(header)) // header position -> field, or -1
	for i, name := range header {
		index[i] = -1
		f, p, ok := cols.field(name)
		if p != "" {
			problems = append(problems, "line 1: columns "+p)
		}
		if ok {
			index[i] = int(f)
		}
	}
	if miss := cols.missing("line 1"); len(miss) > 0 {
		switch {
		case len(header) > 0 && isDigits(strings.TrimSpace(header[0])):
			problems = append(problems, "line 1: no header row: the first line must name the columns, e.g. "+strings.Join(fieldNames[:], ","))
		case len(header) == 1 && strings.ContainsAny(header[0], ";\t"):
			problems = append(problems, "line 1: the columns are separated by ; or tabs: save the file as comma-separated CSV")
		default:
			problems = append(problems, miss...)
		}
	}
	if len(problems) > 0 {
		return nil, cols.ignored, problems
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			problems = append(problems, csvProblem(err)+" (reading stopped there)")
			break
		}
		line, _ := cr.FieldPos(0)
		if blank(rec) {
			continue // a spreadsheet's empty row
		}
		row := linkRow{where: fmt.Sprintf("line %d", line)}
		if len(rec) > len(header) && !blank(rec[len(header):]) {
			problems = append(problems, fmt.Sprintf("line %d: %d fields, but the header names %d columns", line, len(rec), len(header)))
			continue
		}
		for i, v := range rec[:min(len(rec), len(header))] {
			if index[i] >= 0 {
				row.cells[index[i]] = v
			}
		}
		rows = append(rows, row)
	}
	return rows, cols.ignored, problems
}

// csvProblem describes a CSV syntax error with its line.
func csvProblem(err error) string {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("line %d, column %d: %v", pe.Line, pe.Column, pe.Err)
	}
	return err.Error()
}

func blank(cells []string) bool {
	for _, c := range cells {
		if strings.TrimSpace(c) != "" {
			return false
		}
	}
	return true
}

// readJSONLinks reads the rows of a JSON link file: an array of objects, or
// an object with a "links" array.
func readJSONLinks(data []byte) (rows []linkRow, ignored, problems []string) {
	var top json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, nil, []string{jsonProblem(data, err)}
	}
	prefix := ""
	if top = bytes.TrimSpace(top); len(top) > 0 && top[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(top, &obj); err != nil {
			return nil, nil, []string{"the JSON object: " + err.Error()}
		}
		links, ok := obj["links"]
		if !ok {
			return nil, nil, []string{`a JSON object must hold a "links" array (or give the array alone)`}
		}
		top, prefix = links, "links"
	}
	var items []json.RawMessage
	if err := json.Unmarshal(top, &items); err != nil {
		return nil, nil, []string{"the JSON must be an array of objects, or an object with a \"links\" array"}
	}
	var cols columnMap
	for i, item := range items {
		where := fmt.Sprintf("%s[%d]", prefix, i)
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(item, &obj); err != nil || obj == nil {
			problems = append(problems, where+": must be an object with discord_user_id and twitch_user_id")
			continue
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys) // problems in a stable order
		cols.seen = nil   // each object names its own fields
		row := linkRow{where: where}
		for _, k := range keys {
			f, p, ok := cols.field(k)
			if p != "" {
				problems = append(problems, where+": keys "+p)
			}
			if !ok {
				continue
			}
			v, err := jsonCell(obj[k])
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s, %s: %v", where, fieldNames[f], err))
				continue
			}
			row.cells[f] = v
		}
		rows = append(rows, row)
	}
	return rows, cols.ignored, problems
}

// jsonCell reads a value as text: a string, a number as written (ids are
// sometimes numbers), or null (empty).
func jsonCell(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return "", nil
	case raw[0] == '"':
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9':
		return string(raw), nil
	}
	return "", errors.New("must be a string or a number")
}

// jsonProblem describes a JSON syntax error with its line.
func jsonProblem(data []byte, err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off := min(int(se.Offset), len(data))
		line := 1 + bytes.Count(data[:off], []byte("\n"))
		return fmt.Sprintf("line %d: JSON: %v", line, se)
	}
	return "JSON: " + err.Error()
}

// linkRecord is one link as export writes it in JSON.
type linkRecord struct {
	DiscordUserID string `json:"discord_user_id"`
	TwitchUserID  string `json:"twitch_user_id"`
	TwitchLogin   string `json:"twitch_login,omitempty"`
	Linked        string `json:"linked,omitempty"`
}

// writeLinks writes links in a format parseLinks reads back unchanged.
func writeLinks(w io.Writer, format linkFormat, links []subrole.Link) error {
	linked := func(l subrole.Link) string {
		if l.Linked.IsZero() {
			return ""
		}
		return l.Linked.UTC().Format(time.RFC3339Nano)
	}
	if format == formatJSON {
		out := struct {
			Links []linkRecord `json:"links"`
		}{Links: make([]linkRecord, 0, len(links))}
		for _, l := range links {
			out.Links = append(out.Links, linkRecord{l.DiscordUserID, l.TwitchUserID, l.TwitchLogin, linked(l)})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	cw := csv.NewWriter(w)
	cw.Write(fieldNames[:])
	for _, l := range links {
		cw.Write([]string{l.DiscordUserID, l.TwitchUserID, l.TwitchLogin, linked(l)})
	}
	cw.Flush()
	return cw.Error()
}
