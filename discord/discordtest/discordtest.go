// Package discordtest provides a fake Discord, REST API and gateway
// websocket, for tests, demos and benchmarks of code built on discordgo.
//
// Like net/http/httptest it starts a real server on 127.0.0.1 that speaks
// the Discord API v9 wire formats: JSON bodies with snowflake IDs as strings,
// error bodies {"message": "...", "code": N}, rate-limit headers and 429
// bodies, and gateway opcodes HELLO, IDENTIFY, READY, heartbeats and RESUME.
// An unmodified *discordgo.Session works against it once its Client is
// replaced by Server.Client, whose transport sends every request for
// https://discord.com to the fake. The same routes are also served directly
// under Server.URL (REST at URL+"/api/v9/", gateway at URL+"/gateway").
//
// The fake holds one guild with roles and members, records every REST call
// and every message the bot sends, and can inject faults (FailNext,
// SetOutage) and dispatch gateway events (SlashCommand, MemberJoin,
// Dispatch). It also plays Discord's OAuth2 authorization code flow: the
// authorize page at URL+"/oauth2/authorize" approves at once for the user
// signed in in the requesting browser (LogIn puts a session cookie in a
// cookie jar; SetOAuthUser signs someone in for every browser), and
// /api/v10/oauth2/token, /oauth2/token/revoke and /users/@me with a Bearer
// token behave as Discord documents them. REST is served under /api/v9 and
// /api/v10 alike. As on Discord, GUILD_MEMBER_* events, including the
// GUILD_MEMBER_UPDATE that follows a role change made over REST, only reach
// sessions that identified with the GUILD_MEMBERS intent.
//
// Minimal use with discordgo:
//
//	srv := discordtest.NewServer(discordtest.Options{Token: "tok"})
//	defer srv.Close()
//	dg, _ := discordgo.New("Bot tok")
//	dg.Client = srv.Client()
//	err := dg.GuildMemberRoleAdd(srv.GuildID, userID, roleID)
package discordtest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// apiPrefix is the REST API version discordgo uses; apiPrefixV10 (the
// version subrole's OAuth2 client uses) is served the same way.
const (
	apiPrefix    = "/api/v9"
	apiPrefixV10 = "/api/v10"
)

// discordEpoch is the first millisecond of 2015, the epoch of snowflakes.
const discordEpoch = 1420070400000

// Options configures a Server. Only Token is required.
type Options struct {
	// Token is the bot token the fake accepts; clients send "Bot <Token>".
	Token string
	// BotUserID, ApplicationID and GuildID are generated when empty.
	BotUserID     string
	ApplicationID string
	GuildID       string
	// ClientSecret is the application's OAuth2 client secret, generated
	// when empty. The application id is the OAuth2 client id.
	ClientSecret string
	// HeartbeatInterval is announced in HELLO; it defaults to 41.25s.
	HeartbeatInterval time.Duration
	// Latency is added to every REST response.
	Latency time.Duration
	// RateLimit is the limit of every rate-limit bucket; zero means
	// unthrottled (headers still announce a large remaining count).
	RateLimit RateLimit
	// RetryAfter is the retry_after of 429s injected by FailNext and
	// Outage429; it defaults to one second.
	RetryAfter time.Duration
	// Logf, when set, receives one line per REST call and gateway event
	// (pass t.Logf). The fake is silent by default.
	Logf func(format string, args ...any)
	// OnCall, when set, is called synchronously with every recorded REST
	// call, after the response is decided and before it is written. Its
	// Time is the request's arrival. It must be safe for concurrent use.
	OnCall func(Call)
}

// RateLimit is a fixed-window limit: Requests per Window for each bucket.
type RateLimit struct {
	Requests int
	Window   time.Duration
}

// Call is one recorded REST request.
type Call struct {
	// Seq numbers calls from 0 in arrival order and survives ResetCalls;
	// compare it with Mark to ignore older calls.
	Seq    int
	Method string
	// Path is the full request path, e.g. "/api/v9/users/@me".
	Path string
	// Route is the matched route template, e.g.
	// "/guilds/{guild}/members/{user}/roles/{role}", or "" when none matched.
	Route  string
	Query  url.Values
	Header http.Header
	Body   []byte
	// Status is the HTTP status sent, or 0 when the connection was dropped.
	Status int
	// Time is when the request arrived.
	Time time.Time
}

// AuditLogReason returns the X-Audit-Log-Reason header of the call.
// Discord URL-decodes the header (clients must URL-encode non-ASCII reasons).
func (c Call) AuditLogReason() string {
	raw := c.Header.Get("X-Audit-Log-Reason")
	if r, err := url.PathUnescape(raw); err == nil {
		return r
	}
	return raw
}

// MessageKind tells how a Message was sent.
type MessageKind string

// The kinds of Message.
const (
	// KindChannel is a message posted with POST /channels/{channel}/messages.
	KindChannel MessageKind = "channel"
	// KindCallback is an interaction response, POST /interactions/{id}/{token}/callback.
	KindCallback MessageKind = "callback"
	// KindOriginal is an edit of the original response, PATCH /webhooks/{app}/{token}/messages/@original.
	KindOriginal MessageKind = "original"
	// KindFollowup is a follow-up message, POST /webhooks/{app}/{token}.
	KindFollowup MessageKind = "followup"
	// KindEdit is an edit of a follow-up, PATCH /webhooks/{app}/{token}/messages/{id}.
	KindEdit MessageKind = "edit"
)

// Message is one message the bot sent or one interaction response.
type Message struct {
	Seq  int
	Kind MessageKind
	// ChannelID is the channel posted to; for DMs RecipientID is the user.
	ChannelID   string
	RecipientID string
	// InteractionID and Token identify the interaction answered, if any.
	InteractionID string
	Token         string
	// Type is the interaction callback type (4 message, 5 deferred, ...).
	Type       int
	Content    string
	Flags      int // 64 is ephemeral
	Components json.RawMessage
	Embeds     json.RawMessage
	// Body is the raw JSON request body.
	Body json.RawMessage
	Time time.Time
}

// Ephemeral reports whether the message has the ephemeral flag (64).
func (m Message) Ephemeral() bool { return m.Flags&64 != 0 }

// Gateway opcodes sent by clients, for WaitForGatewayOp.
const (
	// OpHeartbeat is a client heartbeat (only counted, see Heartbeats).
	OpHeartbeat = 1
	// OpIdentify is IDENTIFY, which starts a new session.
	OpIdentify = 2
	// OpResume is RESUME, which continues a session after a reconnect.
	OpResume = 6
)

// GatewayOp is one payload a client sent on the gateway (heartbeats are
// only counted, see Heartbeats).
type GatewayOp struct {
	Op        int
	SessionID string // the session identified or resumed, if any
	Intents   int64  // for OpIdentify
	Data      json.RawMessage
	Time      time.Time
}

// Outage is a failure mode applied to every REST call until Heal.
type Outage int

// The outage modes.
const (
	// OutageNone means no outage.
	OutageNone Outage = iota
	// Outage500 answers every call with 500 Internal Server Error.
	Outage500
	// Outage429 answers every call with 429 and retry_after RetryAfter.
	Outage429
	// OutageDrop closes every connection without a response.
	OutageDrop
)

// Server is a fake Discord listening on 127.0.0.1.
type Server struct {
	// URL is the origin, e.g. "http://127.0.0.1:41234".
	URL string
	// GuildID, BotUserID, ApplicationID and ClientSecret are the resolved Options.
	GuildID       string
	BotUserID     string
	ApplicationID string
	ClientSecret  string

	opts      Options
	hs        *httptest.Server
	transport *http.Transport
	routes    []route
	done      chan struct{}
	closeOnce sync.Once
	gwWG      sync.WaitGroup // running gateway connections
	idCounter atomic.Uint64
	channelID string // the guild text channel used by SlashCommand

	rateLimited atomic.Int64
	heartbeats  atomic.Int64

	calls    journal[Call]
	messages journal[Message]
	gwops    journal[GatewayOp]

	mu           sync.Mutex
	roles        map[string]*role
	members      map[string]*member
	unmanageable map[string]bool
	dmClosed     map[string]bool
	dmByUser     map[string]string // user id -> DM channel id
	dmRecipient  map[string]string // DM channel id -> user id
	commands     map[string][]map[string]any
	interactions map[string]*interaction // by token
	buckets      map[string]*bucket
	failNext     int
	failStatus   int
	outage       Outage
	outagePaths  []string
	conns        map[*gwConn]bool
	sessions     map[string]*gwSession

	oauth oauthServer // OAuth2: signed-in users, codes, tokens (oauth.go)
}

type role struct {
	id, name string
	position int
}

type member struct {
	id, username string
	bot          bool
	roles        []string
	joined       time.Time
	perms        int64
}

type interaction struct {
	id, token, channelID, recipient string
	acked                           bool
	originalID                      string
}

// NewServer starts a fake Discord on 127.0.0.1:0. It panics if opts.Token
// is empty or no port can be opened, like httptest.NewServer. The guild
// starts with the @everyone role and the bot as its only member.
func NewServer(opts Options) *Server {
	if opts.Token == "" {
		panic("discordtest: Options.Token is required")
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 41250 * time.Millisecond
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = time.Second
	}
	s := &Server{
		opts:         opts,
		done:         make(chan struct{}),
		roles:        map[string]*role{},
		members:      map[string]*member{},
		unmanageable: map[string]bool{},
		dmClosed:     map[string]bool{},
		dmByUser:     map[string]string{},
		dmRecipient:  map[string]string{},
		commands:     map[string][]map[string]any{},
		interactions: map[string]*interaction{},
		buckets:      map[string]*bucket{},
		conns:        map[*gwConn]bool{},
		sessions:     map[string]*gwSession{},
	}
	s.GuildID = orDefault(opts.GuildID, s.newID)
	s.BotUserID = orDefault(opts.BotUserID, s.newID)
	s.ApplicationID = orDefault(opts.ApplicationID, s.newID)
	s.ClientSecret = orDefault(opts.ClientSecret, randomToken)
	s.oauth.init()
	s.channelID = s.newID()
	s.roles[s.GuildID] = &role{id: s.GuildID, name: "@everyone"}
	s.members[s.BotUserID] = &member{id: s.BotUserID, username: "subrole-bot", bot: true, joined: time.Now().UTC()}
	s.routes = s.restRoutes()

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		panic("discordtest: failed to listen on 127.0.0.1: " + err.Error())
	}
	s.hs = &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(s.serveHTTP)}}
	s.hs.Start()
	s.URL = s.hs.URL
	s.transport = http.DefaultTransport.(*http.Transport).Clone()
	s.transport.Proxy = nil
	return s
}

func orDefault(v string, gen func() string) string {
	if v != "" {
		return v
	}
	return gen()
}

// Close closes every gateway connection and shuts the server down, waiting
// for running handlers. Close discordgo sessions first (with
// ShouldReconnectOnError set to false): a session whose gateway disappears
// keeps trying to reconnect.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.mu.Lock()
		for c := range s.conns {
			c.ws.Close()
		}
		s.mu.Unlock()
		s.hs.Close()
		s.gwWG.Wait()
		s.transport.CloseIdleConnections()
	})
}

// Client returns an HTTP client that sends every request for discord.com
// to the fake, keeping path and query, and refuses any other host except
// the fake itself, so nothing reaches the internet.
func (s *Server) Client() *http.Client {
	target, _ := url.Parse(s.URL)
	return &http.Client{Timeout: 20 * time.Second, Transport: rewriteTransport{base: s.transport, target: target}}
}

type rewriteTransport struct {
	base   http.RoundTripper
	target *url.URL
}

func (t rewriteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.URL.Host {
	case t.target.Host:
		return t.base.RoundTrip(req)
	case "discord.com", "discord.com:443":
		r := req.Clone(req.Context())
		r.URL.Scheme, r.URL.Host, r.Host = t.target.Scheme, t.target.Host, t.target.Host
		return t.base.RoundTrip(r)
	}
	if req.Body != nil {
		req.Body.Close()
	}
	return nil, fmt.Errorf("discordtest: refusing request to %s: only discord.com is faked", req.URL.Host)
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf("discordtest: "+format, args...)
	}
}

// newID returns a fresh snowflake based on the current time.
func (s *Server) newID() string {
	n := s.idCounter.Add(1)
	ms := uint64(time.Now().UnixMilli() - discordEpoch)
	return strconv.FormatUint(ms<<22|n&0x3fffff, 10)
}

// idLess orders decimal snowflakes numerically.
func idLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// --- state helpers ---

// AddRole adds or replaces a guild role.
func (s *Server) AddRole(id, name string, position int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roles[id] = &role{id: id, name: name, position: position}
}

// RemoveRole deletes a role from the guild and from every member holding
// it, as deleting a role in Discord does; later calls naming it get 10011.
func (s *Server) RemoveRole(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.roles, id)
	for _, m := range s.members {
		m.roles = slices.DeleteFunc(m.roles, func(r string) bool { return r == id })
	}
}

// AddMember adds or replaces a guild member with the given roles, silently
// (MemberJoin also dispatches GUILD_MEMBER_ADD).
func (s *Server) AddMember(userID, username string, roles ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.members[userID] = &member{id: userID, username: username, roles: append([]string{}, roles...), joined: time.Now().UTC()}
}

// SetJoinedAt sets when a member joined (their joined_at), and returns
// false if the user is not a member.
func (s *Server) SetJoinedAt(userID string, joined time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.members[userID]
	if ok {
		m.joined = joined.UTC()
	}
	return ok
}

// MemberRoles returns a copy of the member's role IDs, and false if the
// user is not a member.
func (s *Server) MemberRoles(userID string) ([]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.members[userID]
	if !ok {
		return nil, false
	}
	return append([]string{}, m.roles...), true
}

// SetMemberRoles replaces the roles of an existing member silently; it
// reports whether the member exists.
func (s *Server) SetMemberRoles(userID string, roles ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.members[userID]
	if ok {
		m.roles = append([]string{}, roles...)
	}
	return ok
}

// SetPermissions sets the permission bits sent as member.permissions in
// the member's interactions (default 0).
func (s *Server) SetPermissions(userID string, perms int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.members[userID]; ok {
		m.perms = perms
	}
}

// RemoveMember removes a member silently (MemberLeave also dispatches).
func (s *Server) RemoveMember(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.members, userID)
}

// SetUnmanageable replaces the set of roles the bot may not grant or
// remove (roles above the bot's highest role); changing them answers 403
// with code 50013.
func (s *Server) SetUnmanageable(roleIDs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unmanageable = map[string]bool{}
	for _, id := range roleIDs {
		s.unmanageable[id] = true
	}
}

// SetDMClosed sets whether the user refuses DMs from the bot; sending
// them a message then answers 403 with code 50007.
func (s *Server) SetDMClosed(userID string, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dmClosed[userID] = closed
}

// Commands returns the application commands registered for guildID, or the
// global ones for "", as the JSON objects the fake returned (ids assigned).
func (s *Server) Commands(guildID string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any{}, s.commands[guildID]...)
}

// --- faults ---

// FailNext makes the next n REST calls answer status with a Discord error
// body; a 429 carries a rate-limit body and headers with RetryAfter.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext, s.failStatus = n, status
}

// SetOutage makes every REST call fail in mode until Heal. With
// pathPrefixes (relative to /api/v9, e.g. "/guilds/"), only matching calls
// fail.
func (s *Server) SetOutage(mode Outage, pathPrefixes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage, s.outagePaths = mode, pathPrefixes
}

// Heal ends an outage and cancels pending FailNext failures.
func (s *Server) Heal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage, s.outagePaths, s.failNext = OutageNone, nil, 0
}

// RateLimited returns how many 429 responses the fake has sent.
func (s *Server) RateLimited() int { return int(s.rateLimited.Load()) }

// --- recorded calls and messages ---

// Calls returns the REST calls recorded since the last ResetCalls.
func (s *Server) Calls() []Call { return s.calls.snapshot() }

// CallsMatching returns the recorded calls with the method (any if "") and
// a path starting with pathPrefix; a prefix not starting with "/api/" is
// taken relative to /api/v9, e.g. "/guilds/1/members/".
func (s *Server) CallsMatching(method, pathPrefix string) []Call {
	var out []Call
	for _, c := range s.calls.snapshot() {
		if c.matches(method, pathPrefix) {
			out = append(out, c)
		}
	}
	return out
}

func (c Call) matches(method, pathPrefix string) bool {
	path := c.Path
	if !strings.HasPrefix(pathPrefix, "/api/") {
		// Relative to the API version, whichever the call used (v9, v10).
		rel, ok := relPath(path)
		if !ok {
			return false
		}
		path = rel
	}
	return (method == "" || c.Method == method) && strings.HasPrefix(path, pathPrefix)
}

// ResetCalls forgets the recorded calls; Seq numbering continues.
func (s *Server) ResetCalls() { s.calls.reset() }

// Mark returns the Seq the next recorded call will have. Wait for calls
// after an action without racing with earlier ones like this:
//
//	m := srv.Mark()
//	doSomething()
//	c, err := srv.WaitForCall(ctx, func(c Call) bool { return c.Seq >= m && c.Method == "PUT" })
func (s *Server) Mark() int { return s.calls.next() }

// WaitForCall returns the first recorded call (since the last ResetCalls)
// that match accepts, waiting for one until ctx is done. Calls already
// recorded are considered, so there is no race with the code under test.
func (s *Server) WaitForCall(ctx context.Context, match func(Call) bool) (Call, error) {
	return s.calls.wait(ctx, match)
}

// Messages returns every message and interaction response the bot sent.
func (s *Server) Messages() []Message { return s.messages.snapshot() }

// WaitForMessage returns the first sent message that match accepts,
// waiting for one until ctx is done; already-sent messages are considered.
func (s *Server) WaitForMessage(ctx context.Context, match func(Message) bool) (Message, error) {
	return s.messages.wait(ctx, match)
}

// GatewayOps returns the identify, resume and other non-heartbeat payloads
// clients sent on the gateway.
func (s *Server) GatewayOps() []GatewayOp { return s.gwops.snapshot() }

// WaitForGatewayOp returns the first recorded gateway payload with opcode
// op, waiting for one until ctx is done.
func (s *Server) WaitForGatewayOp(ctx context.Context, op int) (GatewayOp, error) {
	return s.gwops.wait(ctx, func(g GatewayOp) bool { return g.Op == op })
}

// WaitForIdentify returns the first IDENTIFY received, waiting for one.
func (s *Server) WaitForIdentify(ctx context.Context) (GatewayOp, error) {
	return s.WaitForGatewayOp(ctx, OpIdentify)
}

// Heartbeats returns how many heartbeats clients have sent.
func (s *Server) Heartbeats() int { return int(s.heartbeats.Load()) }

// journal is an append-only log that can be waited on.
type journal[T any] struct {
	mu      sync.Mutex
	base    int
	items   []T
	changed chan struct{}
}

func (j *journal[T]) add(mk func(seq int) T) T {
	j.mu.Lock()
	defer j.mu.Unlock()
	v := mk(j.base + len(j.items))
	j.items = append(j.items, v)
	if j.changed != nil {
		close(j.changed)
		j.changed = nil
	}
	return v
}

func (j *journal[T]) snapshot() []T {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]T{}, j.items...)
}

func (j *journal[T]) next() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.base + len(j.items)
}

func (j *journal[T]) reset() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.base += len(j.items)
	j.items = nil
}

func (j *journal[T]) wait(ctx context.Context, match func(T) bool) (T, error) {
	from := 0 // absolute seq of the first item not yet examined
	for {
		j.mu.Lock()
		if from < j.base {
			from = j.base
		}
		items := j.items[from-j.base:]
		from = j.base + len(j.items)
		if j.changed == nil {
			j.changed = make(chan struct{})
		}
		changed := j.changed
		j.mu.Unlock()
		for _, v := range items {
			if match(v) {
				return v, nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			var zero T
			return zero, fmt.Errorf("discordtest: wait: %w", ctx.Err())
		}
	}
}

// ErrNoSession is returned by dispatching helpers when no client has
// identified on the gateway, so the event could reach nobody.
var ErrNoSession = errors.New("discordtest: no identified gateway session")

func randomToken() string { return rand.Text() }
