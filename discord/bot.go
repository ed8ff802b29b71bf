// Package discord is subrole's Discord side: a discordgo session that checks
// its token and permissions before it connects, a role applier that drains
// the core's outbox into role changes, the slash commands, and member
// outreach (joins reported to the core, welcome, follow-up and relink DMs).
//
// The package talks to Discord only through discordgo. discordgo computes its
// endpoint URLs at init, so a different origin (a test server) is reached
// through an http.Client whose transport rewrites the host; the gateway URL
// then comes from that origin's GET /gateway.
package discord

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bwmarrin/discordgo"
)

// DefaultOrigin is Discord's origin.
const DefaultOrigin = "https://discord.com"

// Config configures a Bot.
type Config struct {
	// Token is the bot token, without the "Bot " prefix. Required.
	Token string
	// GuildID is the server subrole manages. Required.
	GuildID string
	// Origin is the scheme and host of Discord's API. Empty means DefaultOrigin.
	Origin string
	// ManagedRoles are the role IDs subrole adds and removes. At start each
	// must exist in the guild and sit below the bot's highest role.
	ManagedRoles map[string]string // role ID -> the setting that names it, for error messages
	// Intents are the gateway intents. Zero means guilds and guild members.
	Intents discordgo.Intent
	// Logger receives logs. Nil discards them.
	Logger *slog.Logger
	// Timeout bounds each REST call. Zero means 15 seconds.
	Timeout time.Duration
}

// Bot is a checked discordgo session for one guild.
type Bot struct {
	Session *discordgo.Session
	GuildID string
	User    *discordgo.User // the bot's own user
	log     *slog.Logger

	connected atomic.Bool
	roleNames map[string]string // role ID -> name, read at start; never written after New
}

// RoleNames returns the names of roles (as read at start), in order; an
// unknown role keeps its ID.
func (b *Bot) RoleNames(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		if n, ok := b.roleNames[id]; ok {
			out[i] = n
		} else {
			out[i] = id
		}
	}
	return out
}

// ErrBadToken means Discord rejected the bot token.
var ErrBadToken = errors.New("discord: the bot token was rejected (401 Unauthorized)")

// New returns a Bot whose token, guild and roles have been checked with REST
// calls. It does not open the gateway; call Open for that. A bad token, a
// guild the bot is not in, a missing role or a role above the bot's highest
// role is an error that says how to fix it.
func New(ctx context.Context, cfg Config) (*Bot, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	s, err := discordgo.New("Bot " + cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("discord: new session: %w", err)
	}
	client, err := originClient(cfg.Origin, timeout)
	if err != nil {
		return nil, err
	}
	s.Client = client
	s.ShouldRetryOnRateLimit = false // the applier backs off itself; discordgo would retry forever
	s.MaxRestRetries = 0
	s.LogLevel = discordgo.LogError // discordgo logs through the standard log package
	s.StateEnabled = false
	s.Identify.Intents = cfg.Intents
	if s.Identify.Intents == 0 {
		s.Identify.Intents = discordgo.IntentsGuilds | discordgo.IntentsGuildMembers
	}
	b := &Bot{Session: s, GuildID: cfg.GuildID, log: log}
	if err := b.check(ctx, cfg.ManagedRoles); err != nil {
		return nil, err
	}
	return b, nil
}

// check verifies the token, the guild, and that the bot can manage every role.
func (b *Bot) check(ctx context.Context, managed map[string]string) error {
	opt := discordgo.WithContext(ctx)
	me, err := b.Session.User("@me", opt)
	if err != nil {
		if code(err) == 0 && status(err) == http.StatusUnauthorized {
			return fmt.Errorf("%w: check SUBROLE_DISCORD_TOKEN (Discord Developer Portal > your app > Bot > Reset Token)", ErrBadToken)
		}
		return fmt.Errorf("discord: check token: %w", err)
	}
	b.User = me
	roles, err := b.Session.GuildRoles(b.GuildID, opt)
	if err != nil {
		if st := status(err); st == http.StatusNotFound || st == http.StatusForbidden {
			return fmt.Errorf("discord: the bot is not in guild %s (SUBROLE_DISCORD_GUILD_ID): invite it with the bot and applications.commands scopes and the Manage Roles permission", b.GuildID)
		}
		return fmt.Errorf("discord: read roles of guild %s: %w", b.GuildID, err)
	}
	self, err := b.Session.GuildMember(b.GuildID, me.ID, opt)
	if err != nil {
		return fmt.Errorf("discord: read the bot's own member in guild %s: %w", b.GuildID, err)
	}
	position := map[string]int{}
	b.roleNames = map[string]string{}
	for _, r := range roles {
		position[r.ID] = r.Position
		b.roleNames[r.ID] = r.Name
	}
	top := 0
	for _, id := range self.Roles {
		top = max(top, position[id])
	}
	ids := make([]string, 0, len(managed))
	for id := range managed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var problems []string
	for _, id := range ids {
		p, ok := position[id]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s=%s is not a role of guild %s", managed[id], id, b.GuildID))
		case p >= top:
			problems = append(problems, fmt.Sprintf("%s=%s is not below the bot's highest role: in Server Settings > Roles drag the bot's role above it", managed[id], id))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("discord: %s", strings.Join(problems, "; "))
	}
	return nil
}

// Open connects the gateway. discordgo reconnects by itself afterwards.
func (b *Bot) Open() error {
	b.Session.AddHandler(func(_ *discordgo.Session, _ *discordgo.Ready) { b.connected.Store(true) })
	b.Session.AddHandler(func(_ *discordgo.Session, _ *discordgo.Resumed) { b.connected.Store(true) })
	b.Session.AddHandler(func(_ *discordgo.Session, _ *discordgo.Disconnect) {
		b.connected.Store(false)
		b.log.Warn("discord: gateway disconnected; reconnecting")
	})
	if err := b.Session.Open(); err != nil {
		return fmt.Errorf("discord: open gateway: %w", err)
	}
	b.connected.Store(true) // Open returns after READY
	return nil
}

// Connected reports whether the gateway session is up.
func (b *Bot) Connected() bool { return b.connected.Load() }

// Close disconnects the gateway.
func (b *Bot) Close() error {
	b.Session.Lock()
	b.Session.ShouldReconnectOnError = false
	b.Session.Unlock()
	return b.Session.Close()
}

// originClient returns an http.Client that sends Discord API requests to
// origin instead of https://discord.com.
func originClient(origin string, timeout time.Duration) (*http.Client, error) {
	if origin == "" || origin == DefaultOrigin {
		return &http.Client{Timeout: timeout}, nil
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("discord: origin %q is not an http(s) origin", origin)
	}
	return &http.Client{Timeout: timeout, Transport: rewriteHost{scheme: u.Scheme, host: u.Host}}, nil
}

// rewriteHost sends requests for discord.com to another origin.
type rewriteHost struct{ scheme, host string }

func (rt rewriteHost) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == "discord.com" {
		r = r.Clone(r.Context())
		r.URL.Scheme, r.URL.Host, r.Host = rt.scheme, rt.host, ""
	}
	return http.DefaultTransport.RoundTrip(r)
}

// code returns the Discord JSON error code of err, or 0.
func code(err error) int {
	var re *discordgo.RESTError
	if errors.As(err, &re) && re.Message != nil {
		return re.Message.Code
	}
	return 0
}

// status returns the HTTP status of a REST error, or 0.
func status(err error) int {
	var re *discordgo.RESTError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.StatusCode
	}
	return 0
}
