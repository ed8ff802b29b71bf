package discordtest

import (
	"encoding/json"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// intentGuildMembers is the privileged GUILD_MEMBERS intent (1 << 1) that
// GUILD_MEMBER_* events require.
const intentGuildMembers = 1 << 1

// route is one REST endpoint.
type route struct {
	method  string
	pattern string // e.g. "/guilds/{guild}/members/{user}"
	segs    []string
	public  bool // authorised by the interaction token, not the bot token
	handle  func(*request) reply
}

// request is a matched REST request.
type request struct {
	r    *http.Request
	p    map[string]string
	body []byte
}

// reply is a REST response; body is marshalled as JSON unless nil.
type reply struct {
	status int
	body   any
	header http.Header
	drop   bool
}

// apiError is Discord's JSON error body.
type apiError struct {
	Message string `json:"message"`
	Code    int    `json:"code"`
}

func errReply(status, code int, msg string) reply {
	return reply{status: status, body: apiError{msg, code}}
}

func statusReply(status int) reply {
	return errReply(status, 0, strconv.Itoa(status)+": "+http.StatusText(status))
}

func (s *Server) restRoutes() []route {
	rs := []route{
		{method: "GET", pattern: "/users/@me", public: true, handle: s.getMe}, // a bot or a Bearer token (oauth.go)
		{method: "POST", pattern: "/oauth2/token", public: true, handle: s.oauthToken},
		{method: "POST", pattern: "/oauth2/token/revoke", public: true, handle: s.oauthRevoke},
		{method: "GET", pattern: "/oauth2/applications/@me", handle: s.getApplication},
		{method: "GET", pattern: "/applications/@me", handle: s.getApplication},
		{method: "GET", pattern: "/users/{user}", handle: s.getUser},
		{method: "POST", pattern: "/users/@me/channels", handle: s.createDM},
		{method: "GET", pattern: "/gateway", handle: s.getGateway},
		{method: "GET", pattern: "/gateway/bot", handle: s.getGateway},
		{method: "GET", pattern: "/guilds/{guild}", handle: s.getGuild},
		{method: "GET", pattern: "/guilds/{guild}/roles", handle: s.getRoles},
		{method: "GET", pattern: "/guilds/{guild}/members", handle: s.listMembers},
		{method: "GET", pattern: "/guilds/{guild}/members/{user}", handle: s.getMember},
		{method: "PATCH", pattern: "/guilds/{guild}/members/{user}", handle: s.patchMember},
		{method: "PUT", pattern: "/guilds/{guild}/members/{user}/roles/{role}", handle: s.memberRole},
		{method: "DELETE", pattern: "/guilds/{guild}/members/{user}/roles/{role}", handle: s.memberRole},
		{method: "POST", pattern: "/channels/{channel}/messages", handle: s.postMessage},
		{method: "GET", pattern: "/applications/{app}/commands", handle: s.getCommands},
		{method: "PUT", pattern: "/applications/{app}/commands", handle: s.putCommands},
		{method: "GET", pattern: "/applications/{app}/guilds/{guild}/commands", handle: s.getCommands},
		{method: "PUT", pattern: "/applications/{app}/guilds/{guild}/commands", handle: s.putCommands},
		{method: "POST", pattern: "/interactions/{interaction}/{token}/callback", public: true, handle: s.interactionCallback},
		{method: "POST", pattern: "/webhooks/{webhook}/{token}", public: true, handle: s.followup},
		{method: "PATCH", pattern: "/webhooks/{webhook}/{token}/messages/{message}", public: true, handle: s.editWebhookMessage},
		{method: "DELETE", pattern: "/webhooks/{webhook}/{token}/messages/{message}", public: true, handle: s.deleteWebhookMessage},
	}
	for i := range rs {
		rs[i].segs = strings.Split(strings.Trim(rs[i].pattern, "/"), "/")
	}
	return rs
}

// match finds the route for method and path (relative to /api/v9). It
// returns the pattern matched by any method even when the method differs.
func (s *Server) match(method, rel string) (*route, map[string]string, string) {
	segs := strings.Split(strings.Trim(rel, "/"), "/")
	pattern := ""
	for i := range s.routes {
		rt := &s.routes[i]
		p, ok := matchSegs(rt.segs, segs)
		if !ok {
			continue
		}
		if pattern == "" {
			pattern = rt.pattern
		} else if pattern != rt.pattern {
			continue // a literal route such as /users/@me shadows {user}
		}
		if rt.method == method {
			return rt, p, pattern
		}
	}
	return nil, nil, pattern
}

func matchSegs(pat, segs []string) (map[string]string, bool) {
	if len(pat) != len(segs) {
		return nil, false
	}
	p := map[string]string{}
	for i, ps := range pat {
		if strings.HasPrefix(ps, "{") {
			if segs[i] == "" {
				return nil, false
			}
			p[strings.Trim(ps, "{}")] = segs[i]
		} else if ps != segs[i] {
			return nil, false
		}
	}
	return p, true
}

// bucketKey returns the rate-limit bucket: the route template with its
// major parameters filled in, shared by all methods.
func bucketKey(rt *route, p map[string]string) string {
	segs := slices.Clone(rt.segs)
	for i, ps := range segs {
		switch ps {
		case "{guild}", "{channel}", "{webhook}", "{interaction}", "{token}":
			segs[i] = p[strings.Trim(ps, "{}")]
		}
	}
	return "/" + strings.Join(segs, "/")
}

func bucketHash(pattern string) string {
	h := fnv.New64a()
	h.Write([]byte(pattern))
	return strconv.FormatUint(h.Sum64(), 16)
}

type bucket struct {
	remaining int
	reset     time.Time
}

// setRateHeaders writes the X-RateLimit-* headers. Reset-After is rounded
// up to the next millisecond plus one, because discordgo truncates it to
// whole milliseconds.
func setRateHeaders(h http.Header, limit, remaining int, resetAt, now time.Time, hash string) float64 {
	after := float64((resetAt.Sub(now)+time.Millisecond-1)/time.Millisecond+1) / 1000
	h.Set("X-RateLimit-Limit", strconv.Itoa(limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(remaining))
	h.Set("X-RateLimit-Reset", strconv.FormatFloat(float64(now.UnixMilli())/1000+after, 'f', 3, 64))
	h.Set("X-RateLimit-Reset-After", strconv.FormatFloat(after, 'f', 3, 64))
	h.Set("X-RateLimit-Bucket", hash)
	return after
}

// tooMany builds a 429 reply like Discord's.
func (s *Server) tooMany(limit int, resetAt, now time.Time, hash string) reply {
	s.rateLimited.Add(1)
	h := http.Header{}
	after := setRateHeaders(h, limit, 0, resetAt, now, hash)
	h.Set("Retry-After", strconv.Itoa(int(math.Ceil(after))))
	h.Set("X-RateLimit-Scope", "user")
	body := map[string]any{"message": "You are being rate limited.", "retry_after": after, "global": false}
	return reply{status: http.StatusTooManyRequests, body: body, header: h}
}

// takeBucket spends one request of the bucket, returning the headers to
// send, or a 429 reply when the bucket is exhausted.
func (s *Server) takeBucket(key, pattern string, now time.Time) (http.Header, *reply) {
	hash := bucketHash(pattern)
	h := http.Header{}
	rl := s.opts.RateLimit
	if rl.Requests <= 0 || rl.Window <= 0 {
		setRateHeaders(h, 10000, 9999, now.Add(time.Second), now, hash)
		return h, nil
	}
	s.mu.Lock()
	b := s.buckets[key]
	if b == nil || !now.Before(b.reset) {
		b = &bucket{remaining: rl.Requests, reset: now.Add(rl.Window)}
		s.buckets[key] = b
	}
	if b.remaining == 0 {
		reset := b.reset
		s.mu.Unlock()
		r := s.tooMany(rl.Requests, reset, now, hash)
		return nil, &r
	}
	b.remaining--
	remaining, reset := b.remaining, b.reset
	s.mu.Unlock()
	setRateHeaders(h, rl.Requests, remaining, reset, now, hash)
	return h, nil
}

// fault returns the injected failure for a call, if any.
func (s *Server) fault(rel string, now time.Time) (reply, bool) {
	s.mu.Lock()
	status := 0
	if s.outage != OutageNone && (len(s.outagePaths) == 0 || slices.ContainsFunc(s.outagePaths, func(p string) bool { return strings.HasPrefix(rel, p) })) {
		status = map[Outage]int{Outage500: 500, Outage429: 429, OutageDrop: -1}[s.outage]
	} else if s.failNext > 0 {
		s.failNext--
		status = s.failStatus
	}
	s.mu.Unlock()
	switch status {
	case 0:
		return reply{}, false
	case -1:
		return reply{drop: true}, true
	case http.StatusTooManyRequests:
		return s.tooMany(1, now.Add(s.opts.RetryAfter), now, "fault"), true
	}
	return statusReply(status), true
}

// serveHTTP is the entry point for REST and the gateway.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/gateway" || r.URL.Path == "/gateway/" {
		s.serveGateway(w, r)
		return
	}
	if isAuthorizePath(r.URL.Path) {
		s.serveAuthorize(w, r) // a browser page, not a REST call
		return
	}
	now := time.Now()
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if d := s.opts.Latency; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.done:
			t.Stop()
		}
	}
	res, pattern := s.process(r, body, now)
	c := s.calls.add(func(seq int) Call {
		status := res.status
		if res.drop {
			status = 0
		}
		return Call{Seq: seq, Method: r.Method, Path: r.URL.Path, Route: pattern, Query: r.URL.Query(),
			Header: r.Header.Clone(), Body: body, Status: status, Time: now}
	})
	s.logf("%s %s -> %d", r.Method, r.URL.RequestURI(), c.Status)
	if s.opts.OnCall != nil {
		s.opts.OnCall(c)
	}
	if res.drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	for k, v := range res.header {
		w.Header()[k] = v
	}
	if res.body == nil {
		w.WriteHeader(res.status)
		return
	}
	data, _ := json.Marshal(res.body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(res.status)
	w.Write(data)
}

func (s *Server) process(r *http.Request, body []byte, now time.Time) (reply, string) {
	rel, ok := relPath(r.URL.Path)
	if !ok {
		return statusReply(http.StatusNotFound), ""
	}
	rt, params, pattern := s.match(r.Method, rel)
	if f, ok := s.fault(rel, now); ok {
		return f, pattern
	}
	switch {
	case pattern == "":
		return statusReply(http.StatusNotFound), ""
	case rt == nil:
		return statusReply(http.StatusMethodNotAllowed), pattern
	case !rt.public && r.Header.Get("Authorization") != "Bot "+s.opts.Token:
		return errReply(http.StatusUnauthorized, 0, "401: Unauthorized"), pattern
	}
	if g, ok := params["guild"]; ok && g != s.GuildID {
		return errReply(404, 10004, "Unknown Guild"), pattern
	}
	h, limited := s.takeBucket(bucketKey(rt, params), pattern, now)
	if limited != nil {
		return *limited, pattern
	}
	res := rt.handle(&request{r: r, p: params, body: body})
	if res.header == nil {
		res.header = h
	} else {
		for k, v := range h {
			res.header[k] = v
		}
	}
	return res, pattern
}

// --- JSON objects ---

func userJSON(id, username string, bot bool) map[string]any {
	u := map[string]any{"id": id, "username": username, "discriminator": "0", "global_name": username,
		"avatar": nil, "public_flags": 0}
	if bot {
		u["bot"] = true
		u["global_name"] = nil
	}
	return u
}

func (s *Server) memberJSON(m *member) map[string]any {
	return map[string]any{"user": userJSON(m.id, m.username, m.bot), "nick": nil, "avatar": nil,
		"roles": append([]string{}, m.roles...), "joined_at": m.joined.Format("2006-01-02T15:04:05.000000+00:00"),
		"premium_since": nil, "deaf": false, "mute": false, "flags": 0, "pending": false,
		"communication_disabled_until": nil}
}

func roleJSON(r *role) map[string]any {
	return map[string]any{"id": r.id, "name": r.name, "color": 0, "hoist": false, "icon": nil,
		"unicode_emoji": nil, "position": r.position, "permissions": "0", "managed": false,
		"mentionable": false, "flags": 0}
}

// rolesJSON lists the roles by position; the caller holds s.mu.
func (s *Server) rolesJSON() []map[string]any {
	rs := make([]*role, 0, len(s.roles))
	for _, r := range s.roles {
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b *role) int {
		if a.position != b.position {
			return a.position - b.position
		}
		if idLess(a.id, b.id) {
			return -1
		}
		return 1
	})
	out := make([]map[string]any, len(rs))
	for i, r := range rs {
		out[i] = roleJSON(r)
	}
	return out
}

// guildJSON builds the guild object; the caller holds s.mu.
func (s *Server) guildJSON() map[string]any {
	return map[string]any{"id": s.GuildID, "name": "subrole test guild", "icon": nil, "splash": nil,
		"owner_id": s.ApplicationID, "afk_channel_id": nil, "afk_timeout": 300, "verification_level": 0,
		"default_message_notifications": 0, "explicit_content_filter": 0, "roles": s.rolesJSON(),
		"emojis": []any{}, "features": []any{}, "mfa_level": 0, "system_channel_id": nil,
		"preferred_locale": "en-US", "premium_tier": 0, "nsfw_level": 0}
}

// msgData is the part of a message payload the fake looks at.
type msgData struct {
	Content    *string         `json:"content"`
	Flags      int             `json:"flags"`
	Components json.RawMessage `json:"components"`
	Embeds     json.RawMessage `json:"embeds"`
}

func (d msgData) content() string {
	if d.Content == nil {
		return ""
	}
	return *d.Content
}

func emptyJSON(raw json.RawMessage) bool {
	t := strings.TrimSpace(string(raw))
	return t == "" || t == "null" || t == "[]"
}

// validate applies Discord's checks to a message payload.
func (d msgData) validate(requireBody bool) *reply {
	if len([]rune(d.content())) > 2000 {
		r := errReply(400, 50035, "Invalid Form Body")
		return &r
	}
	if requireBody && d.content() == "" && emptyJSON(d.Components) && emptyJSON(d.Embeds) {
		r := errReply(400, 50006, "Cannot send an empty message")
		return &r
	}
	return nil
}

func orEmptyList(raw json.RawMessage) any {
	if emptyJSON(raw) {
		return []any{}
	}
	return raw
}

func (s *Server) messageJSON(id, channelID string, d msgData, webhookID string) map[string]any {
	m := map[string]any{"id": id, "channel_id": channelID, "type": 0, "content": d.content(),
		"author": userJSON(s.BotUserID, "subrole-bot", true), "timestamp": time.Now().UTC().Format(time.RFC3339Nano),
		"edited_timestamp": nil, "tts": false, "mention_everyone": false, "mentions": []any{},
		"mention_roles": []any{}, "attachments": []any{}, "embeds": orEmptyList(d.Embeds),
		"components": orEmptyList(d.Components), "pinned": false, "flags": d.Flags}
	if webhookID != "" {
		m["webhook_id"] = webhookID
		m["application_id"] = webhookID
	}
	return m
}

// --- handlers ---

// decode unmarshals the JSON body into v, or returns Discord's error.
func (q *request) decode(v any) *reply {
	if err := json.Unmarshal(q.body, v); err != nil {
		r := errReply(400, 50109, "The request body contains invalid JSON.")
		return &r
	}
	return nil
}

// getMe answers GET /users/@me for the bot token or a Bearer token.
func (s *Server) getMe(q *request) reply {
	auth := q.r.Header.Get("Authorization")
	if auth == "Bot "+s.opts.Token {
		return reply{status: 200, body: userJSON(s.BotUserID, "subrole-bot", true)}
	}
	if tok, ok := strings.CutPrefix(auth, "Bearer "); ok {
		if user, ok := s.oauth.bearer(tok, "identify", time.Now()); ok {
			return reply{status: 200, body: userJSON(user, s.username(user), false)}
		}
	}
	return errReply(http.StatusUnauthorized, 0, "401: Unauthorized")
}

func (s *Server) getUser(q *request) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.members[q.p["user"]]
	if !ok {
		return errReply(404, 10013, "Unknown User")
	}
	return reply{status: 200, body: userJSON(m.id, m.username, m.bot)}
}

func (s *Server) getGateway(q *request) reply {
	body := map[string]any{"url": "ws" + strings.TrimPrefix(s.URL, "http") + "/gateway"}
	if strings.HasSuffix(q.r.URL.Path, "/bot") {
		body["shards"] = 1
		body["session_start_limit"] = map[string]any{"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}
	}
	return reply{status: 200, body: body}
}

func (s *Server) getGuild(q *request) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	return reply{status: 200, body: s.guildJSON()}
}

func (s *Server) getRoles(q *request) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	return reply{status: 200, body: s.rolesJSON()}
}

func (s *Server) listMembers(q *request) reply {
	limit, after := 1, "0"
	if v := q.r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return errReply(400, 50035, "Invalid Form Body")
		}
		limit = n
	}
	if v := q.r.URL.Query().Get("after"); v != "" {
		after = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ms []*member
	for id, m := range s.members {
		if idLess(after, id) {
			ms = append(ms, m)
		}
	}
	slices.SortFunc(ms, func(a, b *member) int {
		if idLess(a.id, b.id) {
			return -1
		}
		return 1
	})
	out := []map[string]any{}
	for _, m := range ms[:min(limit, len(ms))] {
		out = append(out, s.memberJSON(m))
	}
	return reply{status: 200, body: out}
}

func (s *Server) getMember(q *request) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.members[q.p["user"]]
	if !ok {
		return errReply(404, 10007, "Unknown Member")
	}
	return reply{status: 200, body: s.memberJSON(m)}
}

func (s *Server) patchMember(q *request) reply {
	var in struct {
		Roles *[]string `json:"roles"`
	}
	if r := q.decode(&in); r != nil {
		return *r
	}
	s.mu.Lock()
	m, ok := s.members[q.p["user"]]
	if !ok {
		s.mu.Unlock()
		return errReply(404, 10007, "Unknown Member")
	}
	var update map[string]any
	if in.Roles != nil {
		var next []string
		for _, id := range *in.Roles {
			if _, ok := s.roles[id]; !ok || id == s.GuildID {
				s.mu.Unlock()
				return errReply(400, 50035, "Invalid Form Body")
			}
			if !slices.Contains(next, id) {
				next = append(next, id)
			}
		}
		for _, id := range append(slices.Clone(next), m.roles...) {
			if s.unmanageable[id] && slices.Contains(next, id) != slices.Contains(m.roles, id) {
				s.mu.Unlock()
				return errReply(403, 50013, "Missing Permissions")
			}
		}
		if !sameSet(next, m.roles) {
			m.roles = next
			update = s.memberEvent(m)
		}
	}
	body := s.memberJSON(m)
	s.mu.Unlock()
	if update != nil {
		s.dispatch(intentGuildMembers, "GUILD_MEMBER_UPDATE", update)
	}
	return reply{status: 200, body: body}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// memberEvent is the data of GUILD_MEMBER_ADD/UPDATE; the caller holds s.mu.
func (s *Server) memberEvent(m *member) map[string]any {
	j := s.memberJSON(m)
	j["guild_id"] = s.GuildID
	return j
}

func (s *Server) memberRole(q *request) reply {
	add := q.r.Method == http.MethodPut
	s.mu.Lock()
	m, ok := s.members[q.p["user"]]
	if !ok {
		s.mu.Unlock()
		return errReply(404, 10007, "Unknown Member")
	}
	id := q.p["role"]
	if _, ok := s.roles[id]; !ok {
		s.mu.Unlock()
		return errReply(404, 10011, "Unknown Role")
	}
	if s.unmanageable[id] {
		s.mu.Unlock()
		return errReply(403, 50013, "Missing Permissions")
	}
	var update map[string]any
	has := slices.Contains(m.roles, id)
	if add && !has {
		m.roles = append(m.roles, id)
		update = s.memberEvent(m)
	} else if !add && has {
		m.roles = slices.DeleteFunc(slices.Clone(m.roles), func(r string) bool { return r == id })
		update = s.memberEvent(m)
	}
	s.mu.Unlock()
	if update != nil {
		s.dispatch(intentGuildMembers, "GUILD_MEMBER_UPDATE", update)
	}
	return reply{status: http.StatusNoContent}
}

// dmChannel returns the stable DM channel id for a user; the caller holds s.mu.
func (s *Server) dmChannel(userID string) string {
	id, ok := s.dmByUser[userID]
	if !ok {
		id = s.newID()
		s.dmByUser[userID] = id
		s.dmRecipient[id] = userID
	}
	return id
}

func (s *Server) createDM(q *request) reply {
	var in struct {
		RecipientID string `json:"recipient_id"`
	}
	if err := json.Unmarshal(q.body, &in); err != nil || in.RecipientID == "" {
		return errReply(400, 50035, "Invalid Form Body")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := "user" + in.RecipientID
	if m, ok := s.members[in.RecipientID]; ok {
		name = m.username
	}
	return reply{status: 200, body: map[string]any{"id": s.dmChannel(in.RecipientID), "type": 1,
		"last_message_id": nil, "flags": 0, "recipients": []any{userJSON(in.RecipientID, name, false)}}}
}

func (s *Server) postMessage(q *request) reply {
	var d msgData
	if r := q.decode(&d); r != nil {
		return *r
	}
	if r := d.validate(true); r != nil {
		return *r
	}
	ch := q.p["channel"]
	s.mu.Lock()
	recipient := s.dmRecipient[ch]
	closed := recipient != "" && s.dmClosed[recipient]
	s.mu.Unlock()
	if closed {
		return errReply(403, 50007, "Cannot send messages to this user")
	}
	s.recordMessage(Message{Kind: KindChannel, ChannelID: ch, RecipientID: recipient}, d, q.body)
	return reply{status: 200, body: s.messageJSON(s.newID(), ch, d, "")}
}

func (s *Server) recordMessage(m Message, d msgData, body []byte) {
	m.Content, m.Flags, m.Components, m.Embeds = d.content(), d.Flags, d.Components, d.Embeds
	m.Body, m.Time = json.RawMessage(slices.Clone(body)), time.Now()
	s.messages.add(func(seq int) Message { m.Seq = seq; return m })
	s.logf("message %s channel=%s token=%.8s type=%d flags=%d content=%q", m.Kind, m.ChannelID, m.Token, m.Type, m.Flags, m.Content)
}

func (s *Server) getCommands(q *request) reply {
	if q.p["app"] != s.ApplicationID {
		return errReply(404, 10002, "Unknown Application")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return reply{status: 200, body: append([]map[string]any{}, s.commands[q.p["guild"]]...)}
}

// validCommandName reports whether name is a valid lowercase chat-input name.
func validCommandName(name string) bool {
	if n := len([]rune(name)); n < 1 || n > 32 {
		return false
	}
	for _, r := range name {
		if !(r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func validOptions(raw any) bool {
	opts, _ := raw.([]any)
	for _, o := range opts {
		m, _ := o.(map[string]any)
		name, _ := m["name"].(string)
		desc, _ := m["description"].(string)
		if !validCommandName(name) || len(desc) < 1 || len([]rune(desc)) > 100 || !validOptions(m["options"]) {
			return false
		}
	}
	return true
}

func (s *Server) putCommands(q *request) reply {
	if q.p["app"] != s.ApplicationID {
		return errReply(404, 10002, "Unknown Application")
	}
	guild := q.p["guild"]
	var in []map[string]any
	if r := q.decode(&in); r != nil {
		return *r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := map[string]string{}
	for _, c := range s.commands[guild] {
		old[c["name"].(string)] = c["id"].(string)
	}
	out := make([]map[string]any, 0, len(in))
	for _, c := range in {
		name, _ := c["name"].(string)
		desc, _ := c["description"].(string)
		typ, _ := c["type"].(float64)
		if typ == 0 {
			typ = 1
		}
		if typ == 1 && (!validCommandName(name) || desc == "" || len([]rune(desc)) > 100 || !validOptions(c["options"])) {
			return errReply(400, 50035, "Invalid Form Body")
		}
		id := old[name]
		if id == "" {
			id = s.newID()
		}
		c["id"], c["type"], c["application_id"], c["version"] = id, int(typ), s.ApplicationID, s.newID()
		if guild != "" {
			c["guild_id"] = guild
		}
		out = append(out, c)
	}
	s.commands[guild] = out
	return reply{status: 200, body: out}
}

// interactionFor returns the interaction a webhook token belongs to.
func (s *Server) interactionFor(q *request) (*interaction, *reply) {
	s.mu.Lock()
	in := s.interactions[q.p["token"]]
	s.mu.Unlock()
	if in == nil || q.p["webhook"] != s.ApplicationID {
		r := errReply(404, 10015, "Unknown Webhook")
		return nil, &r
	}
	return in, nil
}

func (s *Server) interactionCallback(q *request) reply {
	var in struct {
		Type int     `json:"type"`
		Data msgData `json:"data"`
	}
	if r := q.decode(&in); r != nil {
		return *r
	}
	if !slices.Contains([]int{1, 4, 5, 6, 7, 8, 9}, in.Type) {
		return errReply(400, 50035, "Invalid Form Body")
	}
	if in.Type == 4 {
		if r := in.Data.validate(true); r != nil {
			return *r
		}
	}
	s.mu.Lock()
	it := s.interactions[q.p["token"]]
	if it == nil || it.id != q.p["interaction"] {
		s.mu.Unlock()
		return errReply(404, 10062, "Unknown interaction")
	}
	if it.acked {
		s.mu.Unlock()
		return errReply(400, 40060, "Interaction has already been acknowledged.")
	}
	it.acked, it.originalID = true, s.newID()
	s.mu.Unlock()
	s.recordMessage(Message{Kind: KindCallback, ChannelID: it.channelID, RecipientID: it.recipient,
		InteractionID: it.id, Token: it.token, Type: in.Type}, in.Data, q.body)
	return reply{status: http.StatusNoContent}
}

func (s *Server) editWebhookMessage(q *request) reply {
	it, r := s.interactionFor(q)
	if r != nil {
		return *r
	}
	var d msgData
	if r := q.decode(&d); r != nil {
		return *r
	}
	if r := d.validate(false); r != nil {
		return *r
	}
	s.mu.Lock()
	acked, id := it.acked, it.originalID
	s.mu.Unlock()
	kind := KindOriginal
	if q.p["message"] != "@original" {
		kind, id = KindEdit, q.p["message"]
	}
	if !acked {
		return errReply(404, 10008, "Unknown Message")
	}
	s.recordMessage(Message{Kind: kind, ChannelID: it.channelID, RecipientID: it.recipient,
		InteractionID: it.id, Token: it.token}, d, q.body)
	return reply{status: 200, body: s.messageJSON(id, it.channelID, d, s.ApplicationID)}
}

func (s *Server) deleteWebhookMessage(q *request) reply {
	if _, r := s.interactionFor(q); r != nil {
		return *r
	}
	return reply{status: http.StatusNoContent}
}

func (s *Server) followup(q *request) reply {
	it, r := s.interactionFor(q)
	if r != nil {
		return *r
	}
	var d msgData
	if r := q.decode(&d); r != nil {
		return *r
	}
	if r := d.validate(true); r != nil {
		return *r
	}
	s.mu.Lock()
	acked := it.acked
	s.mu.Unlock()
	if !acked {
		return errReply(404, 10015, "Unknown Webhook")
	}
	s.recordMessage(Message{Kind: KindFollowup, ChannelID: it.channelID, RecipientID: it.recipient,
		InteractionID: it.id, Token: it.token}, d, q.body)
	if q.r.URL.Query().Get("wait") != "true" {
		return reply{status: http.StatusNoContent}
	}
	return reply{status: 200, body: s.messageJSON(s.newID(), it.channelID, d, s.ApplicationID)}
}
