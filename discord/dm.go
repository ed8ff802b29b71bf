package discord

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/bwmarrin/discordgo"
	"github.com/subrole/subrole"
)

// ErrDMClosed means the member does not accept direct messages from the bot
// (Discord error 50007). It is permanent: do not retry.
var ErrDMClosed = errors.New("discord: the member does not accept direct messages from the bot (50007)")

// DM sends a direct message to a user. A user who closed their DMs fails
// with an error wrapping ErrDMClosed.
func (b *Bot) DM(ctx context.Context, userID, content string) error {
	opt := discordgo.WithContext(ctx)
	ch, err := b.Session.UserChannelCreate(userID, opt)
	if err != nil {
		return fmt.Errorf("discord: open DM with %s: %w", userID, err)
	}
	if _, err := b.Session.ChannelMessageSendComplex(ch.ID, &discordgo.MessageSend{Content: content,
		AllowedMentions: &discordgo.MessageAllowedMentions{}}, opt); err != nil {
		if code(err) == discordgo.ErrCodeCannotSendMessagesToThisUser {
			return fmt.Errorf("%w: %w", ErrDMClosed, err)
		}
		return fmt.Errorf("discord: DM %s: %w", userID, err)
	}
	return nil
}

// Notifier sends members the summary of their /link by DM.
type Notifier struct {
	// Bot sends the DM. Required.
	Bot *Bot
	// Audit records a DM that could not be delivered. Nil skips recording.
	Audit func(ctx context.Context, e subrole.AuditEntry) error
	// Logger receives logs. Nil discards them.
	Logger *slog.Logger
}

// Linked DMs the member the result of their /link. A member who does not
// accept DMs is recorded in the audit log once, not retried.
func (n *Notifier) Linked(ctx context.Context, res subrole.LinkResult) {
	log := n.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("discord_user", res.Link.DiscordUserID, "twitch_user", res.Link.TwitchUserID)
	err := n.Bot.DM(ctx, res.Link.DiscordUserID, LinkSummary(res, n.Bot.RoleNames))
	switch {
	case errors.Is(err, ErrDMClosed):
		log.Info("discord: the member does not accept DMs; the link summary was not sent")
		if n.Audit != nil {
			if aerr := n.Audit(ctx, subrole.AuditEntry{Kind: subrole.AuditNotice, DiscordUserID: res.Link.DiscordUserID,
				TwitchUserID: res.Link.TwitchUserID, Detail: "link summary DM not delivered: the member does not accept DMs (50007)"}); aerr != nil {
				log.Error("discord: recording an undelivered DM failed", "err", aerr)
			}
		}
	case err != nil:
		log.Warn("discord: sending the link summary DM failed", "err", err)
	}
}

// LinkSummary is the DM a member gets after /link.
func LinkSummary(res subrole.LinkResult, roleNames func([]string) []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Your Discord account is now linked to the Twitch account **%s**.\n", escape(orID(res.Link.TwitchLogin, res.Link.TwitchUserID)))
	if res.Sub.Active() {
		fmt.Fprintf(&b, "Subscription: **%s**", titleTier(res.Sub.Tier))
		if res.Sub.IsGift {
			b.WriteString(" (gift)")
		}
		b.WriteString("\n")
	} else {
		b.WriteString("Subscription: **not subscribed**\n")
	}
	names := res.Desired
	if roleNames != nil {
		names = roleNames(res.Desired)
	}
	if len(names) == 0 {
		b.WriteString("Roles: none\n")
	} else {
		fmt.Fprintf(&b, "Roles: %s\n", strings.Join(names, ", "))
	}
	if res.Previous.TwitchUserID != "" && res.Previous.TwitchUserID != res.Link.TwitchUserID {
		fmt.Fprintf(&b, "This replaced your link to **%s**.\n", escape(orID(res.Previous.TwitchLogin, res.Previous.TwitchUserID)))
	}
	b.WriteString("Not you? Run /unlink in the server.")
	return b.String()
}
