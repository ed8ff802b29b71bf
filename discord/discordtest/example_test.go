package discordtest_test

import (
	"fmt"

	"github.com/bwmarrin/discordgo"

	"github.com/subrole/subrole/discord/discordtest"
)

func ExampleNewServer() {
	srv := discordtest.NewServer(discordtest.Options{Token: "tok", GuildID: "1"})
	defer srv.Close()
	srv.AddRole("500", "Tier 1", 1)
	srv.AddMember("42", "viewer")

	dg, _ := discordgo.New("Bot tok")
	dg.Client = srv.Client() // https://discord.com/... now reaches the fake
	err := dg.GuildMemberRoleAdd("1", "42", "500", discordgo.WithAuditLogReason("twitch sub"))

	roles, _ := srv.MemberRoles("42")
	c := srv.CallsMatching("PUT", "/guilds/1/members/42/roles/")[0]
	fmt.Println(err, roles, c.Status, c.AuditLogReason())
	// Output: <nil> [500] 204 twitch sub
}
