// Package web serves subrole's browser-facing pages: the Twitch OAuth
// callback that completes /link (GET /twitch_callback), the start of the
// broadcaster's authorization (GET /broadcaster/connect), and the pages they
// answer with, in Japanese or English by Accept-Language. The dashboard will
// live here too: this is the one package that speaks HTML to people, so the
// templates, the page security headers (a strict Content-Security-Policy, no
// referrer, no caching) and the language choice are shared instead of
// copied.
//
// The package talks to the core and to Twitch only through the small Core
// and Twitch interfaces; cmd/subrole wires *subrole.Service and
// *twitch.Client into them. Pages are html/template, embedded, with one
// stylesheet and no script.
package web

import (
	"context"
	"crypto/rand"
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
	CallbackPath = "/twitch_callback"
	ConnectPath  = "/broadcaster/connect"
	StylePath    = "/assets/subrole.css"
)

// Core is what the pages need from the core; *subrole.Service implements it.
type Core interface {
	// NewOAuthState issues and stores a state (see subrole.Service.NewOAuthState).
	NewOAuthState(ctx context.Context, p subrole.OAuthPurpose, discordUserID, discordName, guildID string) (string, error)
	// CheckState validates a state without using it up; errors wrap subrole.ErrBadState.
	CheckState(ctx context.Context, raw string, p subrole.OAuthPurpose) (subrole.OAuthState, error)
	// CompleteLink stores a finished /link in one commit; errors wrap
	// subrole.ErrBadState or subrole.ErrConflict, or are store failures.
	CompleteLink(ctx context.Context, raw string, v subrole.Viewer) (subrole.LinkResult, error)
	// ConnectBroadcaster uses up the state and stores the broadcaster's token in one commit.
	ConnectBroadcaster(ctx context.Context, raw string, tok subrole.BroadcasterToken) error
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
	// Revoke revokes an access token.
	Revoke(ctx context.Context, accessToken string) error
}

// The scopes each flow asks for.
const (
	scopeUser        = "user:read:subscriptions"
	scopeBroadcaster = "channel:read:subscriptions"
)

// Config configures a Handler. Core, Twitch, PublicURL and BroadcasterID
// are required.
type Config struct {
	Core   Core
	Twitch Twitch
	// PublicURL is the origin (and path prefix) browsers and Twitch reach,
	// e.g. "https://subs.example.com"; the redirect URI registered with
	// Twitch is PublicURL + CallbackPath.
	PublicURL string
	// BroadcasterID is the only Twitch user whose authorization the
	// broadcaster flow accepts.
	BroadcasterID string
	// RoleNames turns role IDs into names for the result page. Nil shows the IDs.
	RoleNames func(ids []string) []string
	// OnBadRequest, if set, is called for every request refused as bad
	// (missing, malformed, unknown, expired, used or misdirected state; no
	// code): the ban layer counts them. It must not block.
	OnBadRequest func(r *http.Request, reason string)
	// OnLinked, if set, is called after a member's link was stored (the
	// Discord summary DM). It runs on the request goroutine; hand slow work off.
	OnLinked func(res subrole.LinkResult, lang string)
	// OnBroadcasterConnected, if set, is called after the broadcaster's
	// token was stored.
	OnBroadcasterConnected func(tok subrole.BroadcasterToken)
	// Timeout bounds the Twitch calls and the commit of one callback. Zero means 20 s.
	Timeout time.Duration
	// Logger receives one line per callback outcome. Nil discards logs.
	Logger *slog.Logger
}

// Handler serves the OAuth pages. Create it with New.
type Handler struct {
	cfg       Config
	log       *slog.Logger
	tmpl      *template.Template
	redirect  string
	stylePath string
}

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Core == nil || cfg.Twitch == nil || cfg.BroadcasterID == "" {
		return nil, errors.New("web: Core, Twitch and BroadcasterID are required")
	}
	u, err := url.Parse(cfg.PublicURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("web: public URL %q is not an http(s) URL", cfg.PublicURL)
	}
	base := strings.TrimSuffix(cfg.PublicURL, "/")
	h := &Handler{cfg: cfg, log: cfg.Logger, tmpl: pageTemplate(), redirect: base + CallbackPath,
		stylePath: strings.TrimSuffix(u.Path, "/") + StylePath}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.cfg.Timeout <= 0 {
		h.cfg.Timeout = 20 * time.Second
	}
	return h, nil
}

// RedirectURI returns the OAuth redirect URI, which must be registered in
// the Twitch application.
func (h *Handler) RedirectURI() string { return h.redirect }

// ConnectURL returns the page where the broadcaster connects the channel.
func (h *Handler) ConnectURL() string {
	return strings.TrimSuffix(h.cfg.PublicURL, "/") + ConnectPath
}

// LinkURL issues a /link state for the Discord member and returns the
// Twitch authorize URL for the member's button. It is what the Discord
// side's /link command calls. forceVerify makes Twitch show its consent
// page (with "Not you?") to a member switching accounts.
func (h *Handler) LinkURL(ctx context.Context, discordUserID, discordName, guildID string, forceVerify bool) (string, error) {
	state, err := h.cfg.Core.NewOAuthState(ctx, subrole.PurposeLink, discordUserID, discordName, guildID)
	if err != nil {
		return "", err
	}
	return h.cfg.Twitch.AuthCodeURL(h.redirect, state, []string{scopeUser}, forceVerify), nil
}

// Connect starts the broadcaster's authorization: it issues a broadcaster
// state and redirects to Twitch asking for channel:read:subscriptions.
func (h *Handler) Connect(w http.ResponseWriter, r *http.Request) {
	lang := language(r.Header.Get("Accept-Language"))
	state, err := h.cfg.Core.NewOAuthState(r.Context(), subrole.PurposeBroadcaster, "", "", "")
	if err != nil {
		ref := newRef()
		h.log.Error("web: starting the broadcaster connection failed", "ref", ref, "err", err)
		h.render(w, http.StatusServiceUnavailable, page{Lang: lang, Kind: "error", Title: txtRetryTitle.in(lang),
			Paragraphs: []string{txtRetry.in(lang)}, Ref: ref})
		return
	}
	securityHeaders(w.Header())
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, h.cfg.Twitch.AuthCodeURL(h.redirect, state, []string{scopeBroadcaster}, true), http.StatusFound)
}

// newRef returns a short reference id that a member can quote and an
// operator can find in the log.
func newRef() string { return strings.ToLower(rand.Text()[:10]) }

// temporary reports whether err says that trying again later may work.
func temporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// Callback handles Twitch's redirect after an authorization, for both
// flows (the state says which).
func (h *Handler) Callback(w http.ResponseWriter, r *http.Request) {
	lang := language(r.Header.Get("Accept-Language"))
	q := r.URL.Query()
	raw := q.Get("state")
	log := h.log.With("remote", r.RemoteAddr)

	if e := q.Get("error"); e != "" {
		if e == "access_denied" {
			log.Info("web: callback: the user denied the authorization on Twitch; nothing changed", "reason", "access_denied")
			h.render(w, http.StatusOK, page{Lang: lang, Kind: "warning", Title: txtDeniedTitle.in(lang),
				Paragraphs: []string{txtDenied.in(lang)}, Close: txtClose.in(lang)})
			return
		}
		log.Warn("web: callback: twitch returned an error; nothing changed", "reason", "twitch error "+e,
			"description", q.Get("error_description"))
		h.render(w, http.StatusBadRequest, page{Lang: lang, Kind: "error", Title: txtBadTitle.in(lang),
			Paragraphs: []string{txtTwitchError.in(lang, e)}})
		return
	}

	bad := func(reason string, st subrole.OAuthState) {
		log.Warn("web: callback refused; nothing changed", "reason", reason, "discord_user", st.DiscordUserID,
			"guild", st.GuildID)
		if h.cfg.OnBadRequest != nil {
			h.cfg.OnBadRequest(r, reason)
		}
		h.render(w, http.StatusBadRequest, page{Lang: lang, Kind: "error", Title: txtBadTitle.in(lang),
			Paragraphs: []string{txtBad.in(lang)}})
	}
	tok, err := subrole.ParseState(raw)
	if err != nil {
		bad(subrole.StateReason(err), subrole.OAuthState{})
		return
	}
	st, err := h.cfg.Core.CheckState(r.Context(), raw, tok.Purpose)
	if reason := subrole.StateReason(err); reason != "" {
		bad(reason, st)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	if err != nil {
		h.retry(w, lang, log, "checking the state failed", err)
		return
	}
	code := q.Get("code")
	if code == "" {
		bad("no code", st)
		return
	}
	switch tok.Purpose {
	case subrole.PurposeLink:
		h.completeLink(ctx, w, r, lang, log.With("discord_user", st.DiscordUserID, "guild", st.GuildID), raw, code)
	case subrole.PurposeBroadcaster:
		h.completeBroadcaster(ctx, w, lang, log, raw, code)
	}
}

// retry answers "try again in a minute" with a reference id that is also
// in the log line.
func (h *Handler) retry(w http.ResponseWriter, lang string, log *slog.Logger, what string, err error) {
	ref := newRef()
	log.Error("web: callback failed; nothing changed: "+what, "ref", ref, "reason", what, "err", err)
	h.render(w, http.StatusServiceUnavailable, page{Lang: lang, Kind: "error", Title: txtRetryTitle.in(lang),
		Paragraphs: []string{txtRetry.in(lang)}, Ref: ref})
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

func (h *Handler) completeLink(ctx context.Context, w http.ResponseWriter, r *http.Request, lang string, log *slog.Logger, raw, code string) {
	v, err := h.cfg.Twitch.CheckViewer(ctx, code, h.redirect, h.cfg.BroadcasterID)
	if err != nil {
		h.twitchFailed(w, lang, log, err)
		return
	}
	log = log.With("twitch_user", v.TwitchUserID)
	res, err := h.cfg.Core.CompleteLink(ctx, raw, v)
	switch {
	case subrole.StateReason(err) != "":
		// Used or expired while Twitch was asked (a replay racing the original).
		reason := subrole.StateReason(err)
		log.Warn("web: callback refused; nothing changed", "reason", reason)
		if h.cfg.OnBadRequest != nil {
			h.cfg.OnBadRequest(r, reason)
		}
		h.render(w, http.StatusBadRequest, page{Lang: lang, Kind: "error", Title: txtBadTitle.in(lang),
			Paragraphs: []string{txtBad.in(lang)}})
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
		if err := h.cfg.Twitch.Revoke(context.WithoutCancel(ctx), tok.AccessToken); err != nil {
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
