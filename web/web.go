// Package web serves subrole's browser-facing pages: the three legs of a
// member's /link (GET /link/start, GET /discord_callback, GET
// /twitch_callback), the start of the broadcaster's authorization (GET
// /broadcaster/connect), the streamer's live dashboard (GET /dashboard and
// its feed, see dashboard.go), and the pages they answer with, in Japanese
// or English by Accept-Language. This is the one package that speaks HTML
// to people, so the templates, the page security headers (a strict
// Content-Security-Policy, no referrer, no caching) and the language
// choice are shared instead of copied.
//
// A /link is bound to the member who ran it before Twitch is asked. The
// button opens /link/start, which sets a random HttpOnly cookie (the state
// keeps only its hash) and sends the browser to Discord's OAuth2 (scope
// identify). /discord_callback continues only in the browser holding the
// cookie and only if Discord names the member who ran /link; then it sends
// the browser to Twitch. /twitch_callback again needs the cookie and
// Discord's confirmation. A button or Twitch URL forwarded to someone else
// is refused with a page telling them to run /link themselves, and the
// state is voided.
//
// The dashboard is for the broadcaster and the Twitch accounts in
// Config.DashboardUsers. They sign in with Twitch through the same
// /twitch_callback (the state's purpose tells the flows apart); the
// session is a random HttpOnly cookie whose hash the core stores, so a
// restart keeps it and signing out (POST) ends it. Its live feed is
// Server-Sent Events of the audit log, with each entry's position as the
// event id, so a reconnecting browser resumes where it was.
//
// The package talks to the core, Discord and Twitch only through the small
// Core, DashboardCore, Discord and Twitch interfaces; cmd/subrole wires
// *subrole.Service, *discord.OAuth and *twitch.Client into them. Pages are
// html/template, embedded, with one stylesheet; only the dashboard has a
// script (embedded, same origin).
package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/subrole/subrole"
)

// The paths the Handler serves; cmd/subrole's routes.go mounts them.
const (
	LinkStartPath       = "/link/start"
	DiscordCallbackPath = "/discord_callback"
	CallbackPath        = "/twitch_callback"
	ConnectPath         = "/broadcaster/connect"
	StylePath           = "/assets/subrole.css"
)

// Core is what the pages need from the core; *subrole.Service implements it.
type Core interface {
	// NewOAuthState issues and stores a state (see subrole.Service.NewOAuthState);
	// too many pending ones fail with subrole.ErrTooManyStates.
	NewOAuthState(ctx context.Context, p subrole.OAuthPurpose, discordUserID, discordName, guildID string) (string, error)
	// CheckState validates a state without using it up; errors wrap subrole.ErrBadState.
	CheckState(ctx context.Context, raw string, p subrole.OAuthPurpose) (subrole.OAuthState, error)
	// BindBrowser binds a /link state to the browser holding the cookie browser.
	BindBrowser(ctx context.Context, raw, browser string) (subrole.OAuthState, error)
	// CheckBrowser checks that the browser may continue the /link (voiding
	// the state when it may not); confirmed also requires ConfirmDiscord.
	CheckBrowser(ctx context.Context, raw, browser string, confirmed bool) (subrole.OAuthState, error)
	// ConfirmDiscord records that Discord named discordUserID in that
	// browser; another member voids the state.
	ConfirmDiscord(ctx context.Context, raw, browser, discordUserID string) (subrole.OAuthState, error)
	// CompleteLink stores a finished /link in one commit; errors wrap
	// subrole.ErrBadState or subrole.ErrConflict, or are store failures.
	CompleteLink(ctx context.Context, raw, browser string, v subrole.Viewer) (subrole.LinkResult, error)
	// ConnectBroadcaster uses up the state and stores the broadcaster's token in one commit.
	ConnectBroadcaster(ctx context.Context, raw string, tok subrole.BroadcasterToken) error
}

// Discord is Discord's OAuth2 with the identify scope; *discord.OAuth
// implements it. Errors that may go away by themselves have a method
// Temporary() bool that returns true.
type Discord interface {
	// AuthCodeURL returns Discord's authorize URL for redirectURI and state.
	AuthCodeURL(redirectURI, state string) string
	// Identify exchanges a code and returns the signed-in Discord user; the
	// token is revoked, never kept.
	Identify(ctx context.Context, code, redirectURI string) (userID, username string, err error)
}

// Twitch is what the pages need from Twitch; *twitch.Client implements it.
// Errors that may go away by themselves (Twitch unreachable, 5xx) have a
// method Temporary() bool that returns true.
type Twitch interface {
	// AuthCodeURL returns the authorize URL for redirectURI, state and scopes.
	AuthCodeURL(redirectURI, state string, scopes []string, forceVerify bool) string
	// CheckViewer exchanges a member's code, reads who they are and their
	// subscription to broadcasterID, and revokes the token.
	CheckViewer(ctx context.Context, code, redirectURI, broadcasterID string) (subrole.Viewer, error)
	// ConnectBroadcaster exchanges the broadcaster's code and validates the token.
	ConnectBroadcaster(ctx context.Context, code, redirectURI string) (subrole.BroadcasterToken, error)
	// Identify exchanges a code from a sign-in without scopes, returns who
	// signed in, and revokes the token.
	Identify(ctx context.Context, code, redirectURI string) (userID, login string, err error)
	// Revoke revokes an access token.
	Revoke(ctx context.Context, accessToken string) error
}

// The scopes each flow asks for.
const (
	scopeUser        = "user:read:subscriptions"
	scopeBroadcaster = "channel:read:subscriptions"
)

// revokeTimeout bounds the revocation of a refused broadcaster token, which
// runs after the callback's Timeout may have been used up.
const revokeTimeout = 3 * time.Second

// Config configures a Handler. Core, Discord, Twitch, PublicURL and
// BroadcasterID are required.
type Config struct {
	Core    Core
	Discord Discord
	Twitch  Twitch
	// PublicURL is the origin (and path prefix) browsers, Discord and
	// Twitch reach, e.g. "https://subs.example.com". The redirect URIs are
	// PublicURL + DiscordCallbackPath (registered with Discord) and
	// PublicURL + CallbackPath (registered with Twitch). An https URL makes
	// the browser cookie Secure.
	PublicURL string
	// BroadcasterID is the only Twitch user whose authorization the
	// broadcaster flow accepts.
	BroadcasterID string
	// RoleNames turns role IDs into names for the result page. Nil shows the IDs.
	RoleNames func(ids []string) []string
	// OnBadRequest, if set, is called for every request refused as bad
	// (missing, malformed, unknown, expired, used, voided or misdirected
	// state; another browser or Discord account; no code; an unknown OAuth
	// error): the ban layer counts them. It must not block.
	OnBadRequest func(r *http.Request, reason string)
	// OnConnect, if set, is called for every request that starts the
	// broadcaster's authorization (each issues a state), so that a flood
	// of them can be counted against its sender.
	OnConnect func(r *http.Request)
	// OnLinked, if set, is called after a member's link was stored (the
	// Discord summary DM). It runs on the request goroutine; hand slow work off.
	OnLinked func(res subrole.LinkResult, lang string)
	// OnBroadcasterConnected, if set, is called after the broadcaster's
	// token was stored.
	OnBroadcasterConnected func(tok subrole.BroadcasterToken)
	// Timeout bounds the outbound calls (Discord, Twitch) and the commit of
	// one callback, so that the page is written well within the server's
	// write timeout; revoking a refused broadcaster token may add 3 s. Zero
	// means 10 s.
	Timeout time.Duration
	// Logger receives one line per callback outcome. Nil discards logs.
	Logger *slog.Logger

	// Dashboard, if set, turns on the live dashboard (dashboard.go) for
	// BroadcasterID and DashboardUsers. Nil: its routes answer 404.
	Dashboard DashboardCore
	// DashboardUsers are the Twitch user ids, besides BroadcasterID, who
	// may see the dashboard.
	DashboardUsers []string
	// AuditCommitted receives a value after commits that appended audit
	// entries (store.Store.AuditCommitted); RunFeed wakes the live feeds
	// on it. Nil: RunFeed wakes them every second.
	AuditCommitted <-chan struct{}
	// DashboardStatus, if set, returns lines for the dashboard's status
	// box (EventSub, the broadcaster's connection). It must be quick.
	DashboardStatus func() []string
	// SessionTTL is how long a dashboard sign-in lasts. Zero means
	// subrole.DashboardSessionTTL (12 h).
	SessionTTL time.Duration
	// MaxStreams caps the live feeds open at once (beyond: 503), and
	// MaxStreamsPerSession those of one session (beyond: 429). Zero means
	// 64 and 4.
	MaxStreams, MaxStreamsPerSession int
	// Heartbeat is how often an idle live feed sends a keep-alive comment
	// (and checks that its session still exists). Zero means 15 s.
	Heartbeat time.Duration
}

// Handler serves the OAuth pages. Create it with New.
type Handler struct {
	cfg             Config
	log             *slog.Logger
	tmpl            *template.Template
	base            string // PublicURL without a trailing slash
	redirect        string // Twitch's redirect URI
	discordRedirect string // Discord's redirect URI
	secure          bool   // https: the cookie is Secure and __Host- prefixed
	stylePath       string
	origin          string // scheme://host of PublicURL, for the sign-out's Origin check
	// The dashboard: its template, paths as browsers see them (behind a
	// proxy's path prefix), and state; dash is nil when it is off.
	dashTmpl             *template.Template
	dashPath, scriptPath string
	dash                 *dashboard
}

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Core == nil || cfg.Discord == nil || cfg.Twitch == nil || cfg.BroadcasterID == "" {
		return nil, errors.New("web: Core, Discord, Twitch and BroadcasterID are required")
	}
	u, err := url.Parse(cfg.PublicURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("web: public URL %q is not an http(s) URL", cfg.PublicURL)
	}
	base := strings.TrimSuffix(cfg.PublicURL, "/")
	prefix := strings.TrimSuffix(u.Path, "/")
	h := &Handler{cfg: cfg, log: cfg.Logger, tmpl: pageTemplate(), base: base, redirect: base + CallbackPath,
		discordRedirect: base + DiscordCallbackPath, secure: u.Scheme == "https",
		stylePath: prefix + StylePath, origin: u.Scheme + "://" + u.Host,
		dashTmpl: dashboardTemplate(), dashPath: prefix + DashboardPath, scriptPath: prefix + ScriptPath}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.cfg.Timeout <= 0 {
		h.cfg.Timeout = 10 * time.Second
	}
	if h.cfg.MaxStreams <= 0 {
		h.cfg.MaxStreams = defaultMaxStreams
	}
	if h.cfg.MaxStreamsPerSession <= 0 {
		h.cfg.MaxStreamsPerSession = defaultMaxStreamsPerSession
	}
	if h.cfg.Heartbeat <= 0 {
		h.cfg.Heartbeat = defaultHeartbeat
	}
	if cfg.Dashboard != nil {
		h.dash = newDashboard(&h.cfg)
	}
	return h, nil
}

// RedirectURI returns Twitch's OAuth redirect URI, which must be registered
// in the Twitch application.
func (h *Handler) RedirectURI() string { return h.redirect }

// DiscordRedirectURI returns Discord's OAuth2 redirect URI, which must be
// registered in the Discord application (Developer Portal > OAuth2 >
// Redirects).
func (h *Handler) DiscordRedirectURI() string { return h.discordRedirect }

// ConnectURL returns the page where the broadcaster connects the channel.
func (h *Handler) ConnectURL() string { return h.base + ConnectPath }

// LinkURL issues a /link state for the Discord member and returns the URL
// of their button: subrole's own /link/start, which binds the browser and
// asks Discord who is signed in before Twitch is asked. It is what the
// Discord side's /link command calls. Too many pending /link states fail
// with an error wrapping subrole.ErrTooManyStates.
func (h *Handler) LinkURL(ctx context.Context, discordUserID, discordName, guildID string) (string, error) {
	state, err := h.cfg.Core.NewOAuthState(ctx, subrole.PurposeLink, discordUserID, discordName, guildID)
	if err != nil {
		return "", err
	}
	return h.base + LinkStartPath + "?" + url.Values{"state": {state}}.Encode(), nil
}

// Connect starts the broadcaster's authorization: it issues a broadcaster
// state and redirects to Twitch asking for channel:read:subscriptions. (The
// core expires the oldest pending broadcaster state rather than refusing a
// new one; should a Core refuse with subrole.ErrTooManyStates, it answers 429.)
func (h *Handler) Connect(w http.ResponseWriter, r *http.Request) {
	lang := language(r.Header.Get("Accept-Language"))
	if h.cfg.OnConnect != nil {
		h.cfg.OnConnect(r)
	}
	state, err := h.cfg.Core.NewOAuthState(r.Context(), subrole.PurposeBroadcaster, "", "", "")
	if errors.Is(err, subrole.ErrTooManyStates) {
		h.log.Warn("web: broadcaster connection refused: too many are pending; nothing changed",
			"reason", "too many pending broadcaster states", "remote", r.RemoteAddr, "limit", subrole.MaxPendingBroadcasterStates)
		w.Header().Set("Retry-After", "60")
		h.render(w, http.StatusTooManyRequests, page{Lang: lang, Kind: "error", Title: txtBusyTitle.in(lang),
			Paragraphs: []string{txtBusy.in(lang)}})
		return
	}
	if err != nil {
		ref := newRef()
		h.log.Error("web: starting the broadcaster connection failed", "ref", ref, "err", err)
		h.render(w, http.StatusServiceUnavailable, page{Lang: lang, Kind: "error", Title: txtRetryTitle.in(lang),
			Paragraphs: []string{txtRetry.in(lang)}, Ref: ref})
		return
	}
	h.redirectTo(w, r, h.cfg.Twitch.AuthCodeURL(h.redirect, state, []string{scopeBroadcaster}, true))
}

// redirectTo sends the browser on with the page headers (no referrer, no caching).
func (h *Handler) redirectTo(w http.ResponseWriter, r *http.Request, u string) {
	securityHeaders(w.Header())
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u, http.StatusFound)
}

// newRef returns a short reference id that a member can quote and an
// operator can find in the log.
func newRef() string { return strings.ToLower(rand.Text()[:10]) }

// temporary reports whether err says that trying again later may work.
func temporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// extendWrite gives a callback's page time to be written after its
// outbound calls, whatever the server's write timeout.
func (h *Handler) extendWrite(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.cfg.Timeout + revokeTimeout + 5*time.Second))
}

// --- the browser cookie ---

// cookieName returns the name of the cookie that binds the /link of state
// raw to a browser. Each state has its own, so two /link round trips in one
// browser do not disturb each other.
func (h *Handler) cookieName(raw string) string {
	sum := sha256.Sum256([]byte("subrole browser cookie\x00" + raw))
	name := "subrole_link_" + hex.EncodeToString(sum[:8])
	if h.secure {
		name = "__Host-" + name // Secure, Path=/, no Domain: no subdomain can set or read it
	}
	return name
}

// browserCookie returns the value of state raw's cookie, "" when the
// browser has none.
func (h *Handler) browserCookie(r *http.Request, raw string) string {
	c, err := r.Cookie(h.cookieName(raw))
	if err != nil {
		return ""
	}
	return c.Value
}

// setBrowserCookie sets (maxAge > 0) or deletes (maxAge < 0) the cookie of
// state raw.
func (h *Handler) setBrowserCookie(w http.ResponseWriter, raw, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: h.cookieName(raw), Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: h.secure, SameSite: http.SameSiteLaxMode})
}

// --- refusals ---

// refusal returns the status and page of a refused state.
func refusal(reason string) (int, text, text) {
	switch reason {
	case subrole.ReasonStateOtherDiscord:
		return http.StatusForbidden, txtOtherAccountTitle, txtOtherAccount
	case subrole.ReasonStateOtherBrowser, subrole.ReasonStateNoDiscord:
		return http.StatusForbidden, txtOtherBrowserTitle, txtOtherBrowser
	case subrole.ReasonStateVoid:
		return http.StatusForbidden, txtOtherAccountTitle, txtVoid
	}
	return http.StatusBadRequest, txtBadTitle, txtBad
}

// refuse answers a refused request: a log line with the reason, a report
// to the ban layer, and the page for the reason. Nothing was changed (a
// state refused for the browser or the Discord account was voided).
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, lang string, log *slog.Logger, reason string, st subrole.OAuthState, attrs ...any) {
	status, title, msg := refusal(reason)
	log.Warn("web: refused; nothing changed", append([]any{"reason", reason, "discord_user", st.DiscordUserID,
		"guild", st.GuildID}, attrs...)...)
	if h.cfg.OnBadRequest != nil {
		h.cfg.OnBadRequest(r, reason)
	}
	h.render(w, status, page{Lang: lang, Kind: "error", Title: title.in(lang), Paragraphs: []string{msg.in(lang)}})
}

// The OAuth error codes of RFC 6749 4.1.2.1 (Twitch and Discord use them).
var oauthErrors = map[string]struct {
	status     int
	title, msg text
	level      slog.Level
}{
	"access_denied":             {http.StatusOK, txtDeniedTitle, txtDenied, slog.LevelInfo},
	"server_error":              {http.StatusServiceUnavailable, txtRetryTitle, txtProviderDown, slog.LevelWarn},
	"temporarily_unavailable":   {http.StatusServiceUnavailable, txtRetryTitle, txtProviderDown, slog.LevelWarn},
	"invalid_request":           {http.StatusBadGateway, txtSetupTitle, txtSetup, slog.LevelError},
	"unauthorized_client":       {http.StatusBadGateway, txtSetupTitle, txtSetup, slog.LevelError},
	"unsupported_response_type": {http.StatusBadGateway, txtSetupTitle, txtSetup, slog.LevelError},
	"invalid_scope":             {http.StatusBadGateway, txtSetupTitle, txtSetup, slog.LevelError},
	"invalid_client":            {http.StatusBadGateway, txtSetupTitle, txtSetup, slog.LevelError},
	"redirect_mismatch":         {http.StatusBadGateway, txtSetupTitle, txtSetup, slog.LevelError},
}

// providerError answers a redirect that carries ?error= from Discord or
// Twitch, before the state is looked at. Known codes get fixed texts; the
// value itself never reaches the page. An unknown code is no provider's
// answer, so it counts toward a ban. Nothing changes either way.
func (h *Handler) providerError(w http.ResponseWriter, r *http.Request, lang string, log *slog.Logger, provider, code, description string) {
	e, known := oauthErrors[code]
	if !known {
		reason := "unknown oauth error"
		log.Warn("web: callback refused: an unknown error code; nothing changed", "reason", reason, "provider", provider,
			"error", clip(code), "description", clip(description))
		if h.cfg.OnBadRequest != nil {
			h.cfg.OnBadRequest(r, reason)
		}
		h.render(w, http.StatusBadRequest, page{Lang: lang, Kind: "error", Title: txtBadTitle.in(lang),
			Paragraphs: []string{txtProviderError.in(lang, provider)}})
		return
	}
	reason := code
	if code != "access_denied" {
		reason = strings.ToLower(provider) + " error " + code
	}
	what := "web: callback: " + provider + " returned an error; nothing changed"
	if code == "access_denied" {
		what = "web: callback: the user denied the authorization on " + provider + "; nothing changed"
	} else if e.level == slog.LevelError {
		what += ": check the application's redirect URLs and client id"
	}
	log.Log(r.Context(), e.level, what, "reason", reason, "provider", provider, "description", clip(description))
	kind, closeText := "error", ""
	if e.status == http.StatusOK {
		kind, closeText = "warning", txtClose.in(lang)
	}
	h.render(w, e.status, page{Lang: lang, Kind: kind, Title: e.title.in(lang),
		Paragraphs: []string{e.msg.in(lang, provider)}, Close: closeText})
}

// clip shortens a value from a query string for the log.
func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}

// retry answers "try again in a minute" with a reference id that is also
// in the log line.
func (h *Handler) retry(w http.ResponseWriter, lang string, log *slog.Logger, what string, err error) {
	ref := newRef()
	log.Error("web: callback failed; nothing changed: "+what, "ref", ref, "reason", what, "err", err)
	h.render(w, http.StatusServiceUnavailable, page{Lang: lang, Kind: "error", Title: txtRetryTitle.in(lang),
		Paragraphs: []string{txtRetry.in(lang)}, Ref: ref})
}

// linkState parses and checks the state of a /link leg. It answers the
// request itself and returns false when the state is refused or cannot be
// checked.
func (h *Handler) linkState(w http.ResponseWriter, r *http.Request, lang string, log *slog.Logger, raw string) (subrole.OAuthState, bool) {
	tok, err := subrole.ParseState(raw)
	if err != nil {
		h.refuse(w, r, lang, log, subrole.StateReason(err), subrole.OAuthState{})
		return subrole.OAuthState{}, false
	}
	if tok.Purpose != subrole.PurposeLink {
		h.refuse(w, r, lang, log, subrole.ReasonStateOtherPurpose, subrole.OAuthState{})
		return subrole.OAuthState{}, false
	}
	st, err := h.cfg.Core.CheckState(r.Context(), raw, subrole.PurposeLink)
	if reason := subrole.StateReason(err); reason != "" {
		h.refuse(w, r, lang, log, reason, st)
		return st, false
	}
	if err != nil {
		h.retry(w, lang, log, "checking the state failed", err)
		return st, false
	}
	return st, true
}

// --- leg 1: the /link button ---

// LinkStart is where the /link button leads: it binds the state to this
// browser with a random HttpOnly cookie and sends the browser to Discord,
// which says who is signed in.
func (h *Handler) LinkStart(w http.ResponseWriter, r *http.Request) {
	lang := language(r.Header.Get("Accept-Language"))
	log := h.log.With("remote", r.RemoteAddr)
	raw := r.URL.Query().Get("state")
	st, ok := h.linkState(w, r, lang, log, raw)
	if !ok {
		return
	}
	browser := h.browserCookie(r, raw) // the same browser again keeps its cookie
	if browser == "" {
		browser = rand.Text() + rand.Text() // 260 random bits
	}
	st, err := h.cfg.Core.BindBrowser(r.Context(), raw, browser)
	if reason := subrole.StateReason(err); reason != "" {
		h.refuse(w, r, lang, log, reason, st)
		return
	}
	if err != nil {
		h.retry(w, lang, log, "binding the browser failed", err)
		return
	}
	log.Info("web: /link opened; asking Discord who is signed in", "discord_user", st.DiscordUserID, "guild", st.GuildID)
	h.setBrowserCookie(w, raw, browser, int(subrole.StateTTL/time.Second))
	h.redirectTo(w, r, h.cfg.Discord.AuthCodeURL(h.discordRedirect, raw))
}

// --- leg 2: Discord says who is signed in ---

// DiscordCallback handles Discord's redirect: in the browser bound by
// LinkStart, and only for the member who ran /link, it sends the browser on
// to Twitch.
func (h *Handler) DiscordCallback(w http.ResponseWriter, r *http.Request) {
	h.extendWrite(w)
	lang := language(r.Header.Get("Accept-Language"))
	q := r.URL.Query()
	raw := q.Get("state")
	log := h.log.With("remote", r.RemoteAddr, "leg", "discord")
	if e := q.Get("error"); e != "" {
		h.providerError(w, r, lang, log, "Discord", e, q.Get("error_description"))
		return
	}
	st, ok := h.linkState(w, r, lang, log, raw)
	if !ok {
		return
	}
	browser := h.browserCookie(r, raw)
	if st, err := h.cfg.Core.CheckBrowser(r.Context(), raw, browser, false); err != nil {
		h.stateFailed(w, r, lang, log, st, err, "cookie", cookieAttr(browser))
		return
	}
	code := q.Get("code")
	if code == "" {
		h.refuse(w, r, lang, log, "no code", st)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	userID, username, err := h.cfg.Discord.Identify(ctx, code, h.discordRedirect)
	if err != nil {
		h.retry(w, lang, log.With("discord_user", st.DiscordUserID), "discord failed", err)
		return
	}
	st, err = h.cfg.Core.ConfirmDiscord(ctx, raw, browser, userID)
	if err != nil {
		h.stateFailed(w, r, lang, log, st, err, "signed_in", userID, "signed_in_name", username)
		return
	}
	log.Info("web: Discord confirmed the member; asking Twitch", "discord_user", st.DiscordUserID, "guild", st.GuildID)
	h.redirectTo(w, r, h.cfg.Twitch.AuthCodeURL(h.redirect, raw, []string{scopeUser}, true))
}

// stateFailed answers a failed state step: a refusal, or "try again".
func (h *Handler) stateFailed(w http.ResponseWriter, r *http.Request, lang string, log *slog.Logger, st subrole.OAuthState, err error, attrs ...any) {
	if reason := subrole.StateReason(err); reason != "" {
		h.refuse(w, r, lang, log, reason, st, attrs...)
		return
	}
	h.retry(w, lang, log.With("discord_user", st.DiscordUserID), "storing the state failed", err)
}

func cookieAttr(v string) string {
	if v == "" {
		return "missing"
	}
	return "present"
}

// --- leg 3: Twitch ---

// Callback handles Twitch's redirect after an authorization, for both
// flows (the state says which). A /link must come back in the browser bound
// by LinkStart, after Discord confirmed the member there.
func (h *Handler) Callback(w http.ResponseWriter, r *http.Request) {
	h.extendWrite(w)
	lang := language(r.Header.Get("Accept-Language"))
	q := r.URL.Query()
	raw := q.Get("state")
	log := h.log.With("remote", r.RemoteAddr)

	if e := q.Get("error"); e != "" {
		if tok, err := subrole.ParseState(raw); err == nil && tok.Purpose == subrole.PurposeDashboard && e == "access_denied" {
			log.Info("web: callback: the user cancelled the dashboard sign-in on Twitch; nothing changed", "reason", e)
			h.render(w, http.StatusOK, page{Lang: lang, Kind: "warning", Title: txtDashCancelledTitle.in(lang),
				Paragraphs: []string{txtDashCancelled.in(lang, h.base+DashboardPath)}})
			return
		}
		h.providerError(w, r, lang, log, "Twitch", e, q.Get("error_description"))
		return
	}
	tok, err := subrole.ParseState(raw)
	if err != nil {
		h.refuse(w, r, lang, log, subrole.StateReason(err), subrole.OAuthState{})
		return
	}
	if tok.Purpose == subrole.PurposeDashboard {
		h.dashboardCallback(w, r, lang, log, raw)
		return
	}
	st, err := h.cfg.Core.CheckState(r.Context(), raw, tok.Purpose)
	if reason := subrole.StateReason(err); reason != "" {
		h.refuse(w, r, lang, log, reason, st)
		return
	}
	if err != nil {
		h.retry(w, lang, log, "checking the state failed", err)
		return
	}
	browser := ""
	if tok.Purpose == subrole.PurposeLink {
		browser = h.browserCookie(r, raw)
		if st, err := h.cfg.Core.CheckBrowser(r.Context(), raw, browser, true); err != nil {
			h.stateFailed(w, r, lang, log, st, err, "cookie", cookieAttr(browser))
			return
		}
	}
	code := q.Get("code")
	if code == "" {
		h.refuse(w, r, lang, log, "no code", st)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	switch tok.Purpose {
	case subrole.PurposeLink:
		h.completeLink(ctx, w, r, lang, log.With("discord_user", st.DiscordUserID, "guild", st.GuildID), raw, browser, code)
	case subrole.PurposeBroadcaster:
		h.completeBroadcaster(ctx, w, lang, log, raw, code)
	}
}

// twitchFailed answers a failed Twitch call: a rejected code is the
// browser's problem (400), anything else may pass (503).
func (h *Handler) twitchFailed(w http.ResponseWriter, lang string, log *slog.Logger, err error) {
	if temporary(err) || errors.Is(err, context.DeadlineExceeded) {
		h.retry(w, lang, log, "twitch failed", err)
		return
	}
	ref := newRef()
	log.Warn("web: callback refused by twitch; nothing changed", "ref", ref, "reason", "twitch refused", "err", err)
	h.render(w, http.StatusBadRequest, page{Lang: lang, Kind: "error", Title: txtBadTitle.in(lang),
		Paragraphs: []string{txtBad.in(lang)}, Ref: ref})
}

func (h *Handler) completeLink(ctx context.Context, w http.ResponseWriter, r *http.Request, lang string, log *slog.Logger, raw, browser, code string) {
	v, err := h.cfg.Twitch.CheckViewer(ctx, code, h.redirect, h.cfg.BroadcasterID)
	if err != nil {
		h.twitchFailed(w, lang, log, err)
		return
	}
	log = log.With("twitch_user", v.TwitchUserID)
	res, err := h.cfg.Core.CompleteLink(ctx, raw, browser, v)
	switch {
	case subrole.StateReason(err) != "":
		// Used or expired while Twitch was asked (a replay racing the original).
		h.refuse(w, r, lang, log, subrole.StateReason(err), res.State)
		return
	case errors.Is(err, subrole.ErrConflict):
		log.Warn("web: link refused: the twitch account is linked to another member; nothing changed",
			"reason", "twitch account linked elsewhere", "login", v.TwitchLogin)
		h.render(w, http.StatusConflict, page{Lang: lang, Kind: "error", Title: txtConflictTitle.in(lang),
			Paragraphs: []string{txtConflict.in(lang, v.TwitchLogin)}})
		return
	case err != nil:
		h.retry(w, lang, log, "storing the link failed", err)
		return
	}
	log.Info("web: member linked", "login", v.TwitchLogin, "tier", res.Sub.Tier.String(),
		"relinked_from", res.Previous.TwitchUserID, "roles", res.Desired)
	if h.cfg.OnLinked != nil {
		h.cfg.OnLinked(res, lang)
	}
	h.setBrowserCookie(w, raw, "", -1) // done: the browser forgets it
	h.render(w, http.StatusOK, page{Lang: lang, Kind: "ok", Title: txtLinkedTitle.in(lang),
		Paragraphs: []string{txtLinked.in(lang, displayName(res.State), v.TwitchLogin)},
		Facts: []fact{
			{txtTwitch.in(lang), v.TwitchLogin},
			{txtSubscription.in(lang), SubscriptionText(res.Sub, lang)},
			{txtRoles.in(lang), h.roleList(res.Desired, lang)},
		},
		Close: txtApplying.in(lang) + " " + txtClose.in(lang)})
}

func displayName(st subrole.OAuthState) string {
	if st.DiscordName != "" {
		return st.DiscordName
	}
	return st.DiscordUserID
}

// SubscriptionText describes a subscription for members: "Tier 1 (gift)"
// or "not subscribed", in lang ("en" or "ja").
func SubscriptionText(s subrole.Subscription, lang string) string {
	if !s.Active() {
		return txtNotSubscribed.in(lang)
	}
	out := txtTier.in(lang, int(s.Tier))
	if s.IsGift {
		out += txtGift.in(lang)
	}
	return out
}

func (h *Handler) roleList(ids []string, lang string) string {
	if len(ids) == 0 {
		return txtNoRoles.in(lang)
	}
	names := ids
	if h.cfg.RoleNames != nil {
		names = h.cfg.RoleNames(ids)
	}
	sep := ", "
	if lang == langJA {
		sep = "、"
	}
	return strings.Join(names, sep)
}

func (h *Handler) completeBroadcaster(ctx context.Context, w http.ResponseWriter, lang string, log *slog.Logger, raw, code string) {
	tok, err := h.cfg.Twitch.ConnectBroadcaster(ctx, code, h.redirect)
	if err != nil {
		h.twitchFailed(w, lang, log, err)
		return
	}
	log = log.With("twitch_user", tok.UserID)
	refuse := func(title, msg text, args []any, reason string) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
		defer cancel()
		if err := h.cfg.Twitch.Revoke(rctx, tok.AccessToken); err != nil {
			log.Warn("web: revoking a refused broadcaster token failed", "err", err)
		}
		log.Warn("web: broadcaster connection refused; nothing changed", "reason", reason, "login", tok.Login)
		h.render(w, http.StatusForbidden, page{Lang: lang, Kind: "error", Title: title.in(lang),
			Paragraphs: []string{msg.in(lang, args...)}})
	}
	if tok.UserID != h.cfg.BroadcasterID {
		refuse(txtWrongAccountTitle, txtWrongAccount, []any{tok.Login, h.cfg.BroadcasterID}, "not the broadcaster")
		return
	}
	if !hasScope(tok.Scopes, scopeBroadcaster) {
		refuse(txtScopeTitle, txtScope, nil, "missing scope "+scopeBroadcaster)
		return
	}
	if err := h.cfg.Core.ConnectBroadcaster(ctx, raw, tok); err != nil {
		if reason := subrole.StateReason(err); reason != "" {
			log.Warn("web: broadcaster connection refused; nothing changed", "reason", reason)
			h.render(w, http.StatusBadRequest, page{Lang: lang, Kind: "error", Title: txtBadTitle.in(lang),
				Paragraphs: []string{txtBad.in(lang)}})
			return
		}
		h.retry(w, lang, log, "storing the broadcaster token failed", err)
		return
	}
	log.Info("web: the broadcaster connected the channel", "login", tok.Login, "scopes", tok.Scopes)
	if h.cfg.OnBroadcasterConnected != nil {
		h.cfg.OnBroadcasterConnected(tok)
	}
	h.render(w, http.StatusOK, page{Lang: lang, Kind: "ok", Title: txtConnectedTitle.in(lang),
		Paragraphs: []string{txtConnected.in(lang, tok.Login)}, Close: txtClose.in(lang)})
}

func hasScope(scopes []string, want string) bool {
	for _, s := range scopes {
		if s == want {
			return true
		}
	}
	return false
}
