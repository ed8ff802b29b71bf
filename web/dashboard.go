package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/subrole/subrole"
)

// The dashboard's paths; cmd/subrole's routes.go mounts them.
const (
	DashboardPath       = "/dashboard"
	DashboardLoginPath  = "/dashboard/login"
	DashboardLogoutPath = "/dashboard/logout"
	DashboardEventsPath = "/dashboard/events"
	ScriptPath          = "/assets/dashboard.js"
)

// DashboardCore is what the dashboard needs from the core;
// *subrole.Service implements it.
type DashboardCore interface {
	// StartDashboardSession uses up a dashboard state and stores a session
	// for the Twitch user; errors wrap subrole.ErrBadState for a bad state.
	StartDashboardSession(ctx context.Context, raw, twitchUserID, twitchLogin string, ttl time.Duration) (string, subrole.DashboardSession, error)
	// DashboardSession returns the live session of a token; errors wrap
	// subrole.ErrNoSession when there is none.
	DashboardSession(ctx context.Context, token string) (subrole.DashboardSession, error)
	// EndDashboardSession deletes the session of a token.
	EndDashboardSession(ctx context.Context, token string) error
	// DashboardStats counts what the dashboard shows (it reads every subscription).
	DashboardStats(ctx context.Context) (subrole.DashboardStats, error)
	// RecentAudit returns audit entries before a position, newest first.
	RecentAudit(ctx context.Context, before uint64, max int) ([]subrole.AuditEntry, error)
	// AuditAfter returns audit entries after a position, oldest first.
	AuditAfter(ctx context.Context, after uint64, max int) ([]subrole.AuditEntry, error)
	// AuditNames returns the names of the users audit entries concern.
	AuditNames(ctx context.Context, entries []subrole.AuditEntry) (subrole.Names, error)
}

// The dashboard's defaults.
const (
	defaultMaxStreams           = 64
	defaultMaxStreamsPerSession = 4
	defaultHeartbeat            = 15 * time.Second
	recentEntries               = 50  // entries on the page
	feedBatch                   = 100 // entries per read of the live feed
	// statsMinAge is the least time between two counts of the store while
	// audit entries keep coming; statsMaxAge the most a count is reused.
	// A count that took d is reused for at least 20 d, so that counting
	// a large channel never takes more than a twentieth of the time.
	statsMinAge = 250 * time.Millisecond
	statsMaxAge = 5 * time.Second
	// feedMinGap is the least time between two reads of one live feed:
	// under a burst of commits a feed reads and writes a batch ten times a
	// second instead of once per commit, which a person watching cannot
	// tell apart and which keeps the feeds' CPU off the webhook's.
	feedMinGap = 100 * time.Millisecond
)

// dashboard is the Handler's dashboard state: the live feed's wake-up, the
// open streams and the cached counts.
type dashboard struct {
	allowed map[string]bool // Twitch user ids that may see it

	feedMu  sync.Mutex
	changed chan struct{} // closed and replaced when audit entries were committed
	gen     uint64        // broadcasts so far
	stop    chan struct{} // closed by EndStreams
	stopped sync.Once

	streamsMu  sync.Mutex
	streams    int
	perSession map[string]int

	framesMu sync.Mutex
	frames   map[string]*frameCache // by language

	statsMu   sync.Mutex
	stats     subrole.DashboardStats
	statsAt   time.Time
	statsCost time.Duration
}

func newDashboard(cfg *Config) *dashboard {
	d := &dashboard{allowed: map[string]bool{cfg.BroadcasterID: true}, changed: make(chan struct{}),
		stop: make(chan struct{}), perSession: map[string]int{}, frames: map[string]*frameCache{}}
	for _, id := range cfg.DashboardUsers {
		d.allowed[id] = true
	}
	return d
}

// RunFeed wakes the open live feeds whenever Config.AuditCommitted says
// audit entries were committed (every second when it is nil), until ctx is
// done. The committing side only leaves a value on that channel; this
// goroutine does the fan-out, and each stream takes the new entries from the
// frames the feeds share (feed.go), so a slow browser delays nobody but
// itself.
func (h *Handler) RunFeed(ctx context.Context) error {
	if h.dash == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	var tick <-chan time.Time
	if h.cfg.AuditCommitted == nil {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-h.cfg.AuditCommitted:
			h.dash.broadcast()
		case <-tick:
			h.dash.broadcast()
		}
	}
}

func (d *dashboard) broadcast() {
	d.feedMu.Lock()
	close(d.changed)
	d.changed = make(chan struct{})
	d.gen++
	d.feedMu.Unlock()
}

// generation returns how many broadcasts there were: every commit they
// announced is in the store.
func (d *dashboard) generation() uint64 {
	d.feedMu.Lock()
	defer d.feedMu.Unlock()
	return d.gen
}

// wait returns a channel closed at the next broadcast.
func (d *dashboard) wait() <-chan struct{} {
	d.feedMu.Lock()
	defer d.feedMu.Unlock()
	return d.changed
}

// EndStreams ends every live feed and refuses new ones, so that the
// server's graceful shutdown does not wait for them. Call it before
// http.Server.Shutdown.
func (h *Handler) EndStreams() {
	if h.dash != nil {
		h.dash.stopped.Do(func() { close(h.dash.stop) })
	}
}

// Streams returns how many live feeds are open.
func (h *Handler) Streams() int {
	if h.dash == nil {
		return 0
	}
	h.dash.streamsMu.Lock()
	defer h.dash.streamsMu.Unlock()
	return h.dash.streams
}

// DashboardURL returns the dashboard's address.
func (h *Handler) DashboardURL() string { return h.base + DashboardPath }

// --- sessions ---

// sessionCookie returns the name of the dashboard session cookie: over
// https it is Secure and __Secure- prefixed. Its path is /dashboard.
func (h *Handler) sessionCookie() string {
	if h.secure {
		return "__Secure-subrole_dashboard"
	}
	return "subrole_dashboard"
}

func (h *Handler) setSessionCookie(w http.ResponseWriter, token string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: h.sessionCookie(), Value: token, Path: h.dashPath, MaxAge: maxAge,
		HttpOnly: true, Secure: h.secure, SameSite: http.SameSiteLaxMode})
}

func (h *Handler) sessionToken(r *http.Request) string {
	c, err := r.Cookie(h.sessionCookie())
	if err != nil {
		return ""
	}
	return c.Value
}

// session returns the request's live session. ok is false with err nil
// when there is none, and with err set when it could not be read. A session
// of a Twitch user who may no longer see the dashboard (taken out of
// DashboardUsers, or no longer the broadcaster, since it started) is none.
func (h *Handler) session(r *http.Request) (subrole.DashboardSession, bool, error) {
	tok := h.sessionToken(r)
	if tok == "" {
		return subrole.DashboardSession{}, false, nil
	}
	sess, err := h.cfg.Dashboard.DashboardSession(r.Context(), tok)
	if errors.Is(err, subrole.ErrNoSession) {
		return sess, false, nil
	}
	if err != nil {
		return sess, false, err
	}
	if !h.mayView(sess.TwitchUserID) {
		return subrole.DashboardSession{}, false, nil
	}
	return sess, true, nil
}

func (h *Handler) mayView(twitchUserID string) bool { return h.dash.allowed[twitchUserID] }

// notEnabled answers a dashboard route while the dashboard is off.
func (h *Handler) notEnabled(w http.ResponseWriter, r *http.Request) bool {
	if h.dash != nil {
		return false
	}
	http.NotFound(w, r)
	return true
}

// DashboardLogin starts a sign-in: it issues a dashboard state and sends
// the browser to Twitch, asking for no scope (Twitch only says who signed
// in). A browser already signed in goes straight to the dashboard.
func (h *Handler) DashboardLogin(w http.ResponseWriter, r *http.Request) {
	if h.notEnabled(w, r) {
		return
	}
	lang := language(r.Header.Get("Accept-Language"))
	if _, ok, _ := h.session(r); ok {
		h.redirectTo(w, r, h.base+DashboardPath)
		return
	}
	if h.cfg.OnConnect != nil {
		h.cfg.OnConnect(r)
	}
	state, err := h.cfg.Core.NewOAuthState(r.Context(), subrole.PurposeDashboard, "", "", "")
	if err != nil {
		ref := newRef()
		h.log.Error("web: starting a dashboard sign-in failed", "ref", ref, "err", err)
		h.render(w, http.StatusServiceUnavailable, page{Lang: lang, Kind: "error", Title: txtRetryTitle.in(lang),
			Paragraphs: []string{txtDashRetry.in(lang)}, Ref: ref})
		return
	}
	h.redirectTo(w, r, h.cfg.Twitch.AuthCodeURL(h.redirect, state, nil, false))
}

// dashboardCallback finishes a sign-in at /twitch_callback: Twitch says
// who signed in; the broadcaster and Config.DashboardUsers get a session
// cookie and go to the dashboard, anyone else gets a 403 page saying who
// may see it, and no session.
func (h *Handler) dashboardCallback(w http.ResponseWriter, r *http.Request, lang string, log *slog.Logger, raw string) {
	log = log.With("flow", "dashboard")
	bad := func(reason string) {
		log.Warn("web: dashboard sign-in refused; nothing changed", "reason", reason)
		if h.cfg.OnBadRequest != nil {
			h.cfg.OnBadRequest(r, reason)
		}
		h.render(w, http.StatusBadRequest, page{Lang: lang, Kind: "error", Title: txtBadTitle.in(lang),
			Paragraphs: []string{txtDashBad.in(lang, h.base+DashboardPath)}})
	}
	retry := func(what string, err error) {
		ref := newRef()
		log.Error("web: dashboard sign-in failed; nothing changed: "+what, "ref", ref, "reason", what, "err", err)
		h.render(w, http.StatusServiceUnavailable, page{Lang: lang, Kind: "error", Title: txtRetryTitle.in(lang),
			Paragraphs: []string{txtDashRetry.in(lang)}, Ref: ref})
	}
	if h.dash == nil {
		bad(subrole.ReasonStateOtherPurpose)
		return
	}
	if _, err := h.cfg.Core.CheckState(r.Context(), raw, subrole.PurposeDashboard); err != nil {
		if reason := subrole.StateReason(err); reason != "" {
			bad(reason)
			return
		}
		retry("checking the state failed", err)
		return
	}
	code := r.URL.Query().Get("code")
	if code == "" {
		bad("no code")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	userID, login, err := h.cfg.Twitch.Identify(ctx, code, h.redirect)
	if err != nil {
		if temporary(err) || errors.Is(err, context.DeadlineExceeded) {
			retry("twitch failed", err)
			return
		}
		bad("twitch refused the code: " + err.Error())
		return
	}
	log = log.With("twitch_user", userID, "login", login)
	if !h.mayView(userID) {
		log.Warn("web: dashboard sign-in refused: this Twitch account may not see the dashboard; nothing changed",
			"reason", "not allowed")
		h.render(w, http.StatusForbidden, page{Lang: lang, Kind: "error", Title: txtDashDeniedTitle.in(lang),
			Paragraphs: []string{txtDashDenied.in(lang, login, userID), txtDashWho.in(lang)}})
		return
	}
	token, sess, err := h.cfg.Dashboard.StartDashboardSession(ctx, raw, userID, login, h.cfg.SessionTTL)
	if err != nil {
		if reason := subrole.StateReason(err); reason != "" {
			bad(reason)
			return
		}
		retry("storing the session failed", err)
		return
	}
	log.Info("web: signed in to the dashboard", "expires", sess.Expires)
	h.setSessionCookie(w, token, int(sess.Expires.Sub(sess.Created)/time.Second))
	h.redirectTo(w, r, h.base+DashboardPath)
}

// DashboardLogout ends the session (POST; the form is on the dashboard).
// A request from another origin is refused: with the SameSite=Lax cookie
// it could not sign anyone out anyway.
func (h *Handler) DashboardLogout(w http.ResponseWriter, r *http.Request) {
	if h.notEnabled(w, r) {
		return
	}
	lang := language(r.Header.Get("Accept-Language"))
	if o := r.Header.Get("Origin"); o != "" && o != h.origin {
		h.log.Warn("web: dashboard sign-out refused: another origin; nothing changed", "reason", "cross-origin",
			"origin", clip(o), "remote", r.RemoteAddr)
		h.render(w, http.StatusForbidden, page{Lang: lang, Kind: "error", Title: txtBadTitle.in(lang),
			Paragraphs: []string{txtDashBad.in(lang, h.base+DashboardPath)}})
		return
	}
	if tok := h.sessionToken(r); tok != "" {
		sess, _, _ := h.session(r)
		if err := h.cfg.Dashboard.EndDashboardSession(r.Context(), tok); err != nil {
			ref := newRef()
			h.log.Error("web: ending a dashboard session failed", "ref", ref, "err", err)
			h.render(w, http.StatusServiceUnavailable, page{Lang: lang, Kind: "error", Title: txtRetryTitle.in(lang),
				Paragraphs: []string{txtDashRetry.in(lang)}, Ref: ref})
			return
		}
		h.log.Info("web: signed out of the dashboard", "twitch_user", sess.TwitchUserID)
	}
	h.setSessionCookie(w, "", -1)
	h.render(w, http.StatusOK, page{Lang: lang, Kind: "ok", Title: txtDashSignedOutTitle.in(lang),
		Paragraphs: []string{txtDashSignedOut.in(lang, h.base+DashboardPath)}})
}

// --- the page ---

// stat is one counter on the page; ID names it for the live updates.
type stat struct{ ID, Label, Value string }

// entryView is an audit entry as the page and the live feed show it.
type entryView struct {
	Seq    uint64 `json:"seq"`
	Time   string `json:"time"`
	Kind   string `json:"kind"`
	Label  string `json:"label"`
	Who    string `json:"who"`
	Change string `json:"change"`
	Detail string `json:"detail"`
}

// dashPage is what the dashboard template renders.
type dashPage struct {
	Lang, Title, Style, Script                    string
	Events, Logout, SignedIn, SignOut             string
	CountsTitle, RecentTitle, Live                string
	Offline, Ended, SignedOut, Empty, StatusTitle string
	After                                         uint64
	Stats                                         []stat
	Status                                        []string
	Entries                                       []entryView
}

// Dashboard serves GET /dashboard: the counters, the status lines and the
// newest audit entries, with the script that keeps them live. Without a
// session it redirects to the sign-in.
func (h *Handler) Dashboard(w http.ResponseWriter, r *http.Request) {
	if h.notEnabled(w, r) {
		return
	}
	lang := language(r.Header.Get("Accept-Language"))
	sess, ok, err := h.session(r)
	if err != nil {
		h.dashFailed(w, lang, "reading the session failed", err)
		return
	}
	if !ok {
		h.redirectTo(w, r, h.base+DashboardLoginPath)
		return
	}
	entries, err := h.cfg.Dashboard.RecentAudit(r.Context(), 0, recentEntries)
	if err != nil {
		h.dashFailed(w, lang, "reading the audit log failed", err)
		return
	}
	st, err := h.dashStats(r.Context(), 0)
	if err != nil {
		h.dashFailed(w, lang, "counting failed", err)
		return
	}
	p := dashPage{Lang: lang, Title: txtDashTitle.in(lang), Style: h.stylePath, Script: h.scriptPath,
		Events: h.dashPath + "/events", Logout: h.dashPath + "/logout",
		SignedIn: txtDashSignedIn.in(lang, firstOf(sess.TwitchLogin, sess.TwitchUserID)), SignOut: txtDashSignOut.in(lang),
		CountsTitle: txtDashCounts.in(lang), RecentTitle: txtDashRecent.in(lang), Live: txtDashLive.in(lang),
		Offline: txtDashOffline.in(lang), Ended: txtDashEnded.in(lang), SignedOut: txtDashFeedSignedOut.in(lang), Empty: txtDashEmpty.in(lang),
		StatusTitle: txtDashStatus.in(lang), Stats: h.statList(st, lang), Status: h.statusLines(st, lang)}
	names := h.auditNames(r.Context(), entries)
	for _, e := range entries {
		p.Entries = append(p.Entries, h.entry(e, lang, names))
	}
	if len(entries) > 0 {
		p.After = entries[0].Seq
	}
	var buf bytes.Buffer
	if err := h.dashTmpl.Execute(&buf, p); err != nil {
		h.dashFailed(w, lang, "rendering the dashboard failed", err)
		return
	}
	dashboardHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

func (h *Handler) dashFailed(w http.ResponseWriter, lang, what string, err error) {
	ref := newRef()
	h.log.Error("web: dashboard: "+what, "ref", ref, "err", err)
	h.render(w, http.StatusServiceUnavailable, page{Lang: lang, Kind: "error", Title: txtRetryTitle.in(lang),
		Paragraphs: []string{txtDashRetry.in(lang)}, Ref: ref})
}

// dashboardHeaders are the page headers with the CSP loosened only as far
// as the dashboard needs: its own script, its own event stream, and the
// sign-out form posting to this origin.
func dashboardHeaders(h http.Header) {
	securityHeaders(h)
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; "+
		"base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("Cache-Control", "no-store")
}

// dashStats returns the counts, counting again when they are older than
// statsMaxAge, or when they predate audit entry after and were counted
// more than statsMinAge ago (both stretched for a store that is slow to
// count). Concurrent callers share one count.
func (h *Handler) dashStats(ctx context.Context, after uint64) (subrole.DashboardStats, error) {
	d := h.dash
	d.statsMu.Lock()
	defer d.statsMu.Unlock()
	age := time.Since(d.statsAt)
	minAge, maxAge := max(statsMinAge, 20*d.statsCost), max(statsMaxAge, 20*d.statsCost)
	if !d.statsAt.IsZero() && age < maxAge && (d.stats.LastAudit >= after || age < minAge) {
		return d.stats, nil
	}
	start := time.Now()
	st, err := h.cfg.Dashboard.DashboardStats(ctx)
	if err != nil {
		return subrole.DashboardStats{}, err
	}
	d.stats, d.statsAt, d.statsCost = st, time.Now(), time.Since(start)
	return st, nil
}

func (h *Handler) statList(st subrole.DashboardStats, lang string) []stat {
	n := func(v int) string { return strconv.Itoa(v) }
	return []stat{
		{"linked", txtDashLinked.in(lang), n(st.Linked)},
		{"tier1", txtTier.in(lang, 1), n(st.Active[1])},
		{"tier2", txtTier.in(lang, 2), n(st.Active[2])},
		{"tier3", txtTier.in(lang, 3), n(st.Active[3])},
		{"inbox", txtDashInbox.in(lang), n(st.Inbox)},
		{"outbox", txtDashOutbox.in(lang), n(st.Outbox)},
		{"failures", txtDashFailures.in(lang), n(st.RoleFailures)},
	}
}

// statusLines describe the last reconcile and, when wired, EventSub and
// the broadcaster's connection.
func (h *Handler) statusLines(st subrole.DashboardStats, lang string) []string {
	var out []string
	if r := st.LastReconcile; r != nil {
		out = append(out, txtDashReconcile.in(lang, r.Finished.UTC().Format("2006-01-02 15:04 MST"),
			r.Subscribers, r.Drifts(), r.RolesRepaired))
	} else {
		out = append(out, txtDashNoReconcile.in(lang))
	}
	if h.cfg.DashboardStatus != nil {
		out = append(out, h.cfg.DashboardStatus()...)
	}
	return out
}

// The audit kinds' labels.
var kindLabels = map[subrole.AuditKind]text{
	subrole.AuditSubscription: {"Subscription", "サブスク"},
	subrole.AuditLink:         {"Link", "連携"},
	subrole.AuditRoles:        {"Roles", "ロール"},
	subrole.AuditRoleFailure:  {"Role change failed", "ロール変更失敗"},
	subrole.AuditRevocation:   {"EventSub revoked", "EventSub 取り消し"},
	subrole.AuditEvent:        {"Event set aside", "イベント保留"},
	subrole.AuditReconcile:    {"Reconcile", "照合"},
	subrole.AuditBroadcaster:  {"Broadcaster", "配信者"},
	subrole.AuditNotice:       {"Notice", "通知"},
}

// auditNames returns the names of the users entries concern; without them
// (the store failed) entries show ids, which is still right.
func (h *Handler) auditNames(ctx context.Context, entries []subrole.AuditEntry) subrole.Names {
	if len(entries) == 0 {
		return subrole.Names{}
	}
	names, err := h.cfg.Dashboard.AuditNames(ctx, entries)
	if err != nil && ctx.Err() == nil {
		h.log.Warn("web: dashboard: reading names failed; entries show ids", "err", err)
	}
	return names
}

// entry makes an audit entry readable: the kind's label, who it concerns
// (by name when known), before → after (role names for role changes), and
// why.
func (h *Handler) entry(e subrole.AuditEntry, lang string, names subrole.Names) entryView {
	v := entryView{Seq: e.Seq, Time: e.Time.UTC().Format("2006-01-02 15:04:05Z"), Kind: string(e.Kind),
		Label: string(e.Kind), Detail: e.Detail}
	if l, ok := kindLabels[e.Kind]; ok {
		v.Label = l.in(lang)
	}
	var who []string
	if id := e.DiscordUserID; id != "" {
		who = append(who, txtDashMember.in(lang, firstOf(names.Discord[id], id)))
	}
	if id := e.TwitchUserID; id != "" {
		who = append(who, "Twitch "+firstOf(names.Twitch[id], id))
	}
	v.Who = strings.Join(who, " · ")
	before, after := e.Before, e.After
	if e.Kind == subrole.AuditRoles || e.Kind == subrole.AuditRoleFailure {
		before, after = h.roleText(before, lang), h.roleText(after, lang)
	} else if e.Kind == subrole.AuditEvent {
		before = "" // the raw event of an event set aside
	}
	if len(before) > 200 {
		before = before[:200] + "…"
	}
	if before != "" || after != "" {
		v.Change = firstOf(before, "—") + " → " + firstOf(after, "—")
	}
	return v
}

func (h *Handler) roleText(ids, lang string) string {
	var list []string
	for id := range strings.SplitSeq(ids, ",") {
		if id = strings.TrimSpace(id); id != "" {
			list = append(list, id)
		}
	}
	return h.roleList(list, lang)
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// --- the live feed ---

// DashboardEvents serves GET /dashboard/events, the live feed as
// Server-Sent Events. Each audit entry is an "audit" event whose id is its
// position in the log, so a browser that reconnects with Last-Event-ID (or
// a page that opens the feed with ?after= its newest entry) misses nothing
// and sees nothing twice; "stats" events carry the counters, comments keep
// proxies from closing an idle stream, "end" says the session is over, and
// "restart" that the server is shutting down (the page connects again),
// "reset" that the browser's position was past the end of the log (a
// backup restored: the page reloads).
// Streams are capped in total (503) and per session (429).
func (h *Handler) DashboardEvents(w http.ResponseWriter, r *http.Request) {
	if h.notEnabled(w, r) {
		return
	}
	log := h.log.With("remote", r.RemoteAddr)
	sess, ok, err := h.session(r)
	if err != nil {
		log.Error("web: dashboard feed: reading the session failed", "err", err)
		plainStatus(w, http.StatusServiceUnavailable, "the session could not be read; try again")
		return
	}
	if !ok {
		log.Info("web: dashboard feed refused", "reason", "no session")
		plainStatus(w, http.StatusUnauthorized, "not signed in: open "+h.base+DashboardPath)
		return
	}
	log = log.With("twitch_user", sess.TwitchUserID)
	after, err := resumeFrom(r)
	if err != nil {
		log.Warn("web: dashboard feed refused; nothing changed", "reason", err.Error())
		plainStatus(w, http.StatusBadRequest, err.Error())
		return
	}
	reset := false
	if after > 0 {
		// Entries are only ever appended, so a page's position is never past
		// the end of the log, unless the log was replaced by a shorter one
		// (a backup restored): then the feed starts at the end, or it would
		// show nothing until the log grew past the old position.
		newest, err := h.cfg.Dashboard.RecentAudit(r.Context(), 0, 1)
		if err != nil {
			log.Error("web: dashboard feed: reading the audit log failed", "err", err)
			plainStatus(w, http.StatusServiceUnavailable, "the audit log could not be read; try again")
			return
		}
		var end uint64
		if len(newest) > 0 {
			end = newest[0].Seq
		}
		if after > end {
			log.Warn("web: dashboard feed asked to start past the end of the audit log (a restored backup?); it starts at the end",
				"after", after, "end", end)
			after, reset = end, true
		}
	}
	release, status := h.dash.acquire(sess.Key, h.cfg.MaxStreams, h.cfg.MaxStreamsPerSession)
	if status != 0 {
		msg := "too many live dashboards are open on this server; close one and reload"
		if status == http.StatusTooManyRequests {
			msg = "too many live dashboards are open in this session; close one and reload"
		}
		log.Warn("web: dashboard feed refused", "reason", msg, "status", status)
		w.Header().Set("Retry-After", "30")
		plainStatus(w, status, msg)
		return
	}
	defer release()
	h.stream(w, r, log, sess, after, reset)
}

// resumeFrom returns the position the feed starts after: Last-Event-ID when
// the browser reconnects, else ?after=, else the end of the log (0 means
// the start; the page always passes after).
func resumeFrom(r *http.Request) (uint64, error) {
	v, what := r.Header.Get("Last-Event-ID"), "Last-Event-ID"
	if v == "" {
		v, what = r.URL.Query().Get("after"), "after"
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s must be an audit position (a number), got %q", what, clip(v))
	}
	return n, nil
}

func plainStatus(w http.ResponseWriter, status int, msg string) {
	securityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

// acquire takes a stream slot for session key; status is 503 when the
// server has max streams open, 429 when the session has perSession.
func (d *dashboard) acquire(key string, max, perSession int) (release func(), status int) {
	d.streamsMu.Lock()
	defer d.streamsMu.Unlock()
	select {
	case <-d.stop:
		return nil, http.StatusServiceUnavailable
	default:
	}
	switch {
	case d.streams >= max:
		return nil, http.StatusServiceUnavailable
	case d.perSession[key] >= perSession:
		return nil, http.StatusTooManyRequests
	}
	d.streams++
	d.perSession[key]++
	return func() {
		d.streamsMu.Lock()
		defer d.streamsMu.Unlock()
		d.streams--
		if d.perSession[key]--; d.perSession[key] <= 0 {
			delete(d.perSession, key)
		}
	}, 0
}

// stream writes the feed until the browser leaves, the session ends or
// EndStreams. Every write has a deadline, so a browser that stops reading
// is dropped instead of holding the stream forever.
//
// reset says the browser's position was past the end of the log: the feed
// first sends a "reset" event with the position it starts from, and the
// page reloads, since the entries it shows are not the log's any more.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request, log *slog.Logger, sess subrole.DashboardSession, after uint64, reset bool) {
	rc := http.NewResponseController(w)
	// The server's read timeout would end the stream: net/http cancels a
	// request whose connection hits its read deadline while the handler runs.
	_ = rc.SetReadDeadline(time.Time{})
	lang := language(r.Header.Get("Accept-Language"))
	hdr := w.Header()
	dashboardHeaders(hdr)
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("X-Accel-Buffering", "no") // nginx: pass events on at once
	w.WriteHeader(http.StatusOK)
	var buf bytes.Buffer
	flush := func() bool {
		if err := rc.SetWriteDeadline(time.Now().Add(h.cfg.Heartbeat + 10*time.Second)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return false
		}
		_, err := w.Write(buf.Bytes())
		buf.Reset()
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			log.Debug("web: dashboard feed: the browser went away", "err", err)
			return false
		}
		return true
	}
	buf.WriteString("retry: 2000\n\n")
	if reset {
		fmt.Fprintf(&buf, "event: reset\ndata: %d\n\n", after)
	}
	if !flush() {
		return
	}
	heartbeat := time.NewTicker(h.cfg.Heartbeat)
	defer heartbeat.Stop()
	expiry := time.NewTimer(time.Until(sess.Expires))
	defer expiry.Stop()
	var retryStats <-chan time.Time
	statsFor := uint64(0) // the audit position the browser's counters reflect
	end := func(why string) {
		buf.WriteString("event: end\ndata: " + why + "\n\n")
		flush()
	}
	// restart tells the page the server is going away, not the session:
	// the page connects again once a server answers.
	restart := func() {
		buf.WriteString("event: restart\ndata: server shutting down\n\n")
		flush()
	}
	var lastRead time.Time
	full := false // the last read filled a batch: catching up, no pause
	for {
		if gap := feedMinGap - time.Since(lastRead); gap > 0 && !full {
			select {
			case <-time.After(gap):
			case <-h.dash.stop:
				restart()
				return
			case <-r.Context().Done():
				return
			}
		}
		lastRead = time.Now()
		changed := h.dash.wait() // before reading: a commit after the read still wakes us
		frames, err := h.feedFrames(r.Context(), lang, after)
		if err != nil {
			if r.Context().Err() == nil {
				log.Error("web: dashboard feed: reading the audit log failed", "err", err)
			}
			return
		}
		for _, f := range frames {
			buf.Write(f.data)
			after = f.seq
		}
		if after > statsFor || retryStats != nil {
			if st, err := h.dashStats(r.Context(), after); err == nil {
				h.writeStats(&buf, st, lang)
				statsFor = st.LastAudit
				retryStats = nil
				if statsFor < after { // counted before these entries: count again soon
					retryStats = time.After(statsMinAge)
				}
			} else {
				log.Warn("web: dashboard feed: counting failed", "err", err)
			}
		}
		if buf.Len() > 0 && !flush() {
			return
		}
		if full = len(frames) == feedBatch; full {
			continue
		}
		select {
		case <-changed:
		case <-retryStats:
		case <-heartbeat.C:
			if _, ok, err := h.session(r); err == nil && !ok {
				log.Info("web: dashboard feed ended: the session is over")
				end("signed out")
				return
			}
			buf.WriteString(": keep-alive\n\n")
			if !flush() {
				return
			}
		case <-expiry.C:
			end("session expired")
			return
		case <-h.dash.stop:
			restart()
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (h *Handler) writeStats(buf *bytes.Buffer, st subrole.DashboardStats, lang string) {
	m := map[string]any{}
	for _, s := range h.statList(st, lang) {
		m[s.ID] = s.Value
	}
	m["status"] = h.statusLines(st, lang)
	data, _ := json.Marshal(m)
	fmt.Fprintf(buf, "event: stats\ndata: %s\n\n", data)
}

// Script serves the dashboard's script.
func (h *Handler) Script(w http.ResponseWriter, r *http.Request) {
	js, _ := assets.ReadFile("assets/dashboard.js")
	securityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Write(js)
}
