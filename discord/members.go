package discord

import (
	"context"
	"fmt"

	"github.com/bwmarrin/discordgo"
)

// AllMemberRoles calls fn with every guild member's roles, a page of up to
// 1000 members at a time (GET /guilds/{id}/members, paged by user id). It
// implements subrole.MemberRoles for the reconcile's role enforcement.
// Listing members needs the privileged Server Members intent to be enabled
// for the bot in the Developer Portal.
func (b *Bot) AllMemberRoles(ctx context.Context, fn func(page map[string][]string) error) error {
	after := ""
	for {
		members, err := b.Session.GuildMembers(b.GuildID, after, 1000, discordgo.WithContext(ctx))
		if err != nil {
			if status(err) == 403 {
				return fmt.Errorf("discord: list members of guild %s: %w (enable the Server Members intent for the bot in the Developer Portal)", b.GuildID, err)
			}
			return fmt.Errorf("discord: list members of guild %s: %w", b.GuildID, err)
		}
		page := make(map[string][]string, len(members))
		for _, m := range members {
			if m.User == nil || m.User.Bot {
				continue
			}
			page[m.User.ID] = m.Roles
			after = m.User.ID
		}
		if len(page) > 0 {
			if err := fn(page); err != nil {
				return err
			}
		}
		if len(members) < 1000 {
			return nil
		}
		if last := members[len(members)-1]; last.User != nil {
			after = last.User.ID
		}
	}
}
