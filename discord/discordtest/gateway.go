package discordtest

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// resumeBuffer is how many dispatches each session keeps for RESUME.
const resumeBuffer = 1000

// gwConn is one gateway websocket connection.
type gwConn struct {
	ws  *websocket.Conn
	wmu sync.Mutex
}

func (c *gwConn) send(frame []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, frame)
}

// closeWith sends a close frame with a Discord close code and closes.
func (c *gwConn) closeWith(code int, text string) {
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
	c.ws.Close()
}

// gwSession is an identified gateway session; it outlives connections so
// that it can be resumed.
type gwSession struct {
	id      string
	intents int64
	mu      sync.Mutex
	seq     int64
	buf     [][]byte // the last dispatches, buf[len-1] has sequence seq
	conn    *gwConn
}

// sendLocked sends one dispatch (op 0) with the next sequence number and
// keeps it for resuming; the caller holds ss.mu.
func (ss *gwSession) sendLocked(name string, data json.RawMessage) {
	ss.seq++
	frame, _ := json.Marshal(struct {
		Op int             `json:"op"`
		S  int64           `json:"s"`
		T  string          `json:"t"`
		D  json.RawMessage `json:"d"`
	}{0, ss.seq, name, data})
	ss.buf = append(ss.buf, frame)
	if len(ss.buf) > resumeBuffer {
		ss.buf = ss.buf[1:]
	}
	if ss.conn != nil && ss.conn.send(frame) != nil {
		ss.conn.ws.Close()
		ss.conn = nil
	}
}

func (ss *gwSession) detach(c *gwConn) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.conn == c {
		ss.conn = nil
	}
}

func (s *Server) tokenOK(t string) bool { return t == s.opts.Token || t == "Bot "+s.opts.Token }

func (s *Server) recordOp(op int, sessionID string, intents int64, data json.RawMessage) {
	s.gwops.add(func(int) GatewayOp {
		return GatewayOp{Op: op, SessionID: sessionID, Intents: intents, Data: data, Time: time.Now()}
	})
}

// serveGateway runs one gateway connection.
func (s *Server) serveGateway(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &gwConn{ws: ws}
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		ws.Close()
		return
	default:
	}
	s.conns[c] = true
	s.gwWG.Add(1)
	s.mu.Unlock()
	defer s.gwWG.Done()
	var sess *gwSession
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		if sess != nil {
			sess.detach(c)
		}
		ws.Close()
	}()
	if v := r.URL.Query().Get("v"); v != "" && v != "9" && v != "10" {
		c.closeWith(4012, "Invalid API version")
		return
	}
	ms := s.opts.HeartbeatInterval.Milliseconds()
	if c.send([]byte(`{"op":10,"d":{"heartbeat_interval":`+strconv.FormatInt(ms, 10)+`},"s":null,"t":null}`)) != nil {
		return
	}
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) && (ce.Code == websocket.CloseNormalClosure || ce.Code == websocket.CloseGoingAway) && sess != nil {
				// Discord invalidates a session closed with 1000 or 1001.
				s.mu.Lock()
				delete(s.sessions, sess.id)
				s.mu.Unlock()
			}
			return
		}
		var p struct {
			Op int             `json:"op"`
			D  json.RawMessage `json:"d"`
		}
		if json.Unmarshal(data, &p) != nil {
			c.closeWith(4002, "Error while decoding payload.")
			return
		}
		switch p.Op {
		case OpHeartbeat:
			s.heartbeats.Add(1)
			if c.send([]byte(`{"op":11,"d":null,"s":null,"t":null}`)) != nil {
				return
			}
		case OpIdentify:
			var in struct {
				Token   string `json:"token"`
				Intents int64  `json:"intents"`
			}
			json.Unmarshal(p.D, &in)
			if sess != nil {
				c.closeWith(4005, "Already authenticated.")
				return
			}
			if !s.tokenOK(in.Token) {
				s.recordOp(p.Op, "", in.Intents, p.D)
				s.logf("gateway identify with bad token")
				c.closeWith(4004, "Authentication failed.")
				return
			}
			id := randomToken()
			s.recordOp(p.Op, id, in.Intents, p.D)
			sess = s.identify(c, id, in.Intents)
		case OpResume:
			var in struct {
				Token     string `json:"token"`
				SessionID string `json:"session_id"`
				Seq       int64  `json:"seq"`
			}
			json.Unmarshal(p.D, &in)
			s.recordOp(p.Op, in.SessionID, 0, p.D)
			if !s.tokenOK(in.Token) {
				c.closeWith(4004, "Authentication failed.")
				return
			}
			if sess = s.resume(c, in.SessionID, in.Seq); sess == nil {
				s.logf("gateway resume of unknown session %.8s: invalid session", in.SessionID)
				if c.send([]byte(`{"op":9,"d":false,"s":null,"t":null}`)) != nil {
					return
				}
			}
		case 3, 4, 8:
			s.recordOp(p.Op, "", 0, p.D)
		default:
			c.closeWith(4001, "Unknown opcode.")
			return
		}
	}
}

// identify starts a session on c and sends READY and GUILD_CREATE.
func (s *Server) identify(c *gwConn, id string, intents int64) *gwSession {
	sess := &gwSession{id: id, intents: intents, conn: c}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	s.mu.Lock()
	s.sessions[id] = sess
	gatewayURL := "ws" + s.URL[len("http"):] + "/gateway"
	ready, _ := json.Marshal(map[string]any{"v": 9, "user": userJSON(s.BotUserID, "subrole-bot", true),
		"session_id": id, "resume_gateway_url": gatewayURL, "session_type": "normal",
		"guilds":           []any{map[string]any{"id": s.GuildID, "unavailable": true}},
		"private_channels": []any{}, "relationships": []any{}, "shard": []int{0, 1},
		"application": map[string]any{"id": s.ApplicationID, "flags": 0}})
	guild := s.guildJSON()
	guild["large"], guild["unavailable"], guild["member_count"] = false, false, len(s.members)
	guild["members"] = []any{}
	if bot := s.members[s.BotUserID]; bot != nil {
		guild["joined_at"] = bot.joined.Format("2006-01-02T15:04:05.000000+00:00")
		guild["members"] = []any{s.memberJSON(bot)}
	}
	guild["channels"] = []any{map[string]any{"id": s.channelID, "type": 0, "name": "general", "position": 0,
		"permission_overwrites": []any{}, "nsfw": false, "parent_id": nil}}
	for _, k := range []string{"threads", "presences", "voice_states", "stage_instances", "guild_scheduled_events"} {
		guild[k] = []any{}
	}
	s.mu.Unlock()
	g, _ := json.Marshal(guild)
	s.logf("gateway identify: session %.8s intents %d", id, intents)
	sess.sendLocked("READY", ready)
	sess.sendLocked("GUILD_CREATE", g)
	return sess
}

// resume attaches c to a session and replays the dispatches after seq,
// then sends RESUMED. It returns nil when the session cannot be resumed.
func (s *Server) resume(c *gwConn, id string, seq int64) *gwSession {
	s.mu.Lock()
	sess := s.sessions[id]
	s.mu.Unlock()
	if sess == nil {
		return nil
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	first := sess.seq - int64(len(sess.buf)) + 1
	if seq > sess.seq || seq < first-1 {
		return nil
	}
	if sess.conn != nil && sess.conn != c {
		sess.conn.ws.Close()
	}
	sess.conn = c
	replayed := 0
	for i, f := range sess.buf {
		if first+int64(i) > seq {
			if c.send(f) != nil {
				break
			}
			replayed++
		}
	}
	s.logf("gateway resume: session %.8s from seq %d, replayed %d", id, seq, replayed)
	sess.sendLocked("RESUMED", json.RawMessage(`{"_trace":["discordtest"]}`))
	return sess
}

// dispatch sends an event to every session (with intent, if not 0) and
// returns how many sessions it reached; disconnected sessions keep it
// for RESUME.
func (s *Server) dispatch(intent int64, name string, data any) (int, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	sessions := make([]*gwSession, 0, len(s.sessions))
	for _, ss := range s.sessions {
		if intent == 0 || ss.intents&intent != 0 {
			sessions = append(sessions, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.mu.Lock()
		ss.sendLocked(name, raw)
		ss.mu.Unlock()
	}
	if len(sessions) > 0 {
		s.logf("gateway dispatch %s to %d session(s)", name, len(sessions))
	}
	return len(sessions), nil
}

// Dispatch sends a dispatch event (op 0) named eventName with data to every
// identified session, buffering it for sessions that are disconnected but
// resumable. It returns ErrNoSession when there is no session.
func (s *Server) Dispatch(eventName string, data any) error {
	n, err := s.dispatch(0, eventName, data)
	if err == nil && n == 0 {
		err = ErrNoSession
	}
	return err
}

// DropGateway abruptly closes every gateway connection, without a close
// frame, keeping the sessions resumable. It returns how many it closed.
func (s *Server) DropGateway() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.ws.Close()
	}
	return len(s.conns)
}

// EndSessions abruptly closes every gateway connection and forgets the
// sessions, as Discord does once a session has been gone too long: a
// RESUME gets INVALID_SESSION, the client identifies anew and gets READY,
// and the dispatches of the gap are never delivered. It returns how many
// sessions it ended.
func (s *Server) EndSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.ws.Close()
	}
	n := len(s.sessions)
	clear(s.sessions)
	return n
}

// Connected returns how many sessions currently have a live connection.
func (s *Server) Connected() int {
	s.mu.Lock()
	sessions := make([]*gwSession, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	n := 0
	for _, ss := range sessions {
		ss.mu.Lock()
		if ss.conn != nil {
			n++
		}
		ss.mu.Unlock()
	}
	return n
}

// CommandOption is one option of a slash command invocation.
type CommandOption struct {
	Name    string          `json:"name"`
	Type    int             `json:"type"` // 3 string, 4 integer, 5 boolean, 6 user, ...
	Value   any             `json:"value,omitempty"`
	Options []CommandOption `json:"options,omitempty"`
}

// StringOption returns a string option (type 3).
func StringOption(name, value string) CommandOption {
	return CommandOption{Name: name, Type: 3, Value: value}
}

// Interaction identifies an interaction dispatched by the fake; responses
// to it are recorded as Messages with the same Token.
type Interaction struct {
	ID        string
	Token     string
	ChannelID string
}

// SlashCommand dispatches INTERACTION_CREATE for the chat-input command
// name invoked by userID in the guild, with member (roles from the fake's
// state, permissions from SetPermissions), guild_id and channel_id.
func (s *Server) SlashCommand(userID, name string, opts ...CommandOption) (Interaction, error) {
	return s.slashCommand(userID, name, true, opts)
}

// DMSlashCommand is like SlashCommand but invoked in the user's DM with the
// bot: the payload has user instead of member and no guild_id.
func (s *Server) DMSlashCommand(userID, name string, opts ...CommandOption) (Interaction, error) {
	return s.slashCommand(userID, name, false, opts)
}

func (s *Server) slashCommand(userID, name string, inGuild bool, opts []CommandOption) (Interaction, error) {
	s.mu.Lock()
	it := &interaction{id: s.newID(), token: "aW50ZXJhY3Rpb24" + randomToken()}
	cmdID := ""
	for _, c := range append(s.commands[s.GuildID], s.commands[""]...) {
		if c["name"] == name {
			cmdID, _ = c["id"].(string)
			break
		}
	}
	if cmdID == "" {
		cmdID = s.newID()
	}
	m, ok := s.members[userID]
	if !ok {
		m = &member{id: userID, username: "user" + userID, joined: time.Now().UTC()}
	}
	data := map[string]any{"id": cmdID, "name": name, "type": 1}
	if len(opts) > 0 {
		data["options"] = opts
	}
	p := map[string]any{"id": it.id, "application_id": s.ApplicationID, "type": 2, "data": data,
		"token": it.token, "version": 1, "locale": "en-US", "app_permissions": "2248473465835073",
		"entitlements": []any{}}
	if inGuild {
		it.channelID = s.channelID
		data["guild_id"] = s.GuildID
		mj := s.memberJSON(m)
		mj["permissions"] = strconv.FormatInt(m.perms, 10)
		p["guild_id"], p["member"], p["guild_locale"], p["context"] = s.GuildID, mj, "en-US", 0
	} else {
		it.channelID, it.recipient = s.dmChannel(userID), userID
		p["user"], p["context"] = userJSON(m.id, m.username, false), 1
	}
	p["channel_id"] = it.channelID
	s.interactions[it.token] = it
	s.mu.Unlock()
	return Interaction{ID: it.id, Token: it.token, ChannelID: it.channelID}, s.Dispatch("INTERACTION_CREATE", p)
}

// MemberJoin adds a member and dispatches GUILD_MEMBER_ADD to the sessions
// that identified with the GUILD_MEMBERS intent, like Discord. It returns
// ErrNoSession when no such session exists (the member is added anyway).
func (s *Server) MemberJoin(userID, username string, roles ...string) error {
	s.AddMember(userID, username, roles...)
	s.mu.Lock()
	ev := s.memberEvent(s.members[userID])
	s.mu.Unlock()
	return s.memberDispatch("GUILD_MEMBER_ADD", ev)
}

// MemberLeave removes a member and dispatches GUILD_MEMBER_REMOVE to the
// sessions with the GUILD_MEMBERS intent; see MemberJoin.
func (s *Server) MemberLeave(userID string) error {
	s.mu.Lock()
	m, ok := s.members[userID]
	delete(s.members, userID)
	s.mu.Unlock()
	if !ok {
		m = &member{id: userID, username: "user" + userID}
	}
	return s.memberDispatch("GUILD_MEMBER_REMOVE", map[string]any{"guild_id": s.GuildID, "user": userJSON(m.id, m.username, m.bot)})
}

func (s *Server) memberDispatch(name string, data any) error {
	n, err := s.dispatch(intentGuildMembers, name, data)
	if err == nil && n == 0 {
		err = ErrNoSession
	}
	return err
}
