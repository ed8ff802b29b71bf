package main

import (
	"fmt"

	"github.com/subrole/subrole/discord/discordtest"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// world is a complete outside world on loopback: a fake Discord with a
// guild, roles and members, and a fake Twitch (OAuth, Helix, and a Sender
// that signs EventSub messages).
// The demo, the end-to-end tests and the benchmarks all run the real service
// wiring against it; only the base URLs in its environment differ from
// production.
type world struct {
	discord *discordtest.Server
	twitch  *twitchtest.Sender
	// twitchAPI is the fake Twitch's OAuth and Helix server; twitch sends
	// its EventSub messages.
	twitchAPI *twitchtest.Server
	env       map[string]string
	names     map[string]string // role and member IDs -> display names
	// instance is the installation id in the service's EventSub callbacks,
	// once a test has recorded it in the database (tests that check callbacks).
	instance string
}

// The world's fixed IDs.
const (
	worldGuild         = "900000000000000001"
	worldBotRole       = "900000000000000100"
	worldRoleLinked    = "900000000000000101"
	worldRoleTier1     = "900000000000000111"
	worldRoleTier2     = "900000000000000112"
	worldRoleTier3     = "900000000000000113"
	worldRoleSub       = "900000000000000119"
	worldBotToken      = "world-bot-token"
	worldClientID      = "worldclientid0000000000000"
	worldClientSecret  = "world-client-secret"
	worldEventSubToken = "world-eventsub-secret-0123456789"
)

// newWorld starts the fakes. data is the service's database file.
func newWorld(data string) *world { return newWorldWith(data, discordtest.Options{}) }

// newWorldWith is newWorld with a fake Discord configured by opts (latency,
// rate limits, an OnCall observer); the token and guild are the world's.
func newWorldWith(data string, opts discordtest.Options) *world {
	opts.Token, opts.GuildID = worldBotToken, worldGuild
	dc := discordtest.NewServer(opts)
	w := &world{discord: dc, names: map[string]string{}}
	for _, r := range []struct {
		id, name string
		pos      int
	}{
		{worldRoleLinked, "Linked", 1}, {worldRoleTier1, "Tier 1", 2}, {worldRoleTier2, "Tier 2", 3},
		{worldRoleTier3, "Tier 3", 4}, {worldRoleSub, "Subscriber", 5}, {worldBotRole, "subrole", 10},
	} {
		dc.AddRole(r.id, r.name, r.pos)
		w.names[r.id] = r.name
	}
	dc.SetMemberRoles(dc.BotUserID, worldBotRole)
	w.twitchAPI = twitchtest.NewServer(twitchtest.Options{ClientID: worldClientID, ClientSecret: worldClientSecret,
		InsecureCallbacks: true}) // EventSub callbacks on loopback http
	w.twitch = w.twitchAPI.Sender("", worldEventSubToken)
	w.env = map[string]string{
		"SUBROLE_DATA":                  data,
		"SUBROLE_LISTEN":                "127.0.0.1:0",
		"SUBROLE_PUBLIC_URL":            "http://127.0.0.1",
		"SUBROLE_DISCORD_TOKEN":         worldBotToken,
		"SUBROLE_DISCORD_GUILD_ID":      worldGuild,
		"SUBROLE_DISCORD_CLIENT_SECRET": dc.ClientSecret,
		"SUBROLE_DISCORD_URL":           dc.URL,
		"SUBROLE_TWITCH_CLIENT_ID":      worldClientID,
		"SUBROLE_TWITCH_CLIENT_SECRET":  worldClientSecret,
		"SUBROLE_TWITCH_BROADCASTER_ID": twitchtest.DefaultBroadcasterID,
		"SUBROLE_TWITCH_API_URL":        w.twitchAPI.HelixURL(),
		"SUBROLE_TWITCH_AUTH_URL":       w.twitchAPI.AuthURL(),
		"SUBROLE_EVENTSUB_SECRET":       worldEventSubToken,
		"SUBROLE_ROLE_LINKED":           worldRoleLinked,
		"SUBROLE_ROLE_TIER1":            worldRoleTier1,
		"SUBROLE_ROLE_TIER2":            worldRoleTier2,
		"SUBROLE_ROLE_TIER3":            worldRoleTier3,
		"SUBROLE_ROLE_SUBSCRIBER":       worldRoleSub,
		"SUBROLE_LOG_LEVEL":             "warn",
		// Every fake client is on loopback: keep them clear of rate limits
		// and bans (the ban tests clear this), and open no admin socket.
		"SUBROLE_ALLOW_IPS":    "127.0.0.0/8,::1",
		"SUBROLE_ADMIN_SOCKET": "off",
	}
	return w
}

// getenv reads the world's environment for the service.
func (w *world) getenv(key string) string { return w.env[key] }

// serving tells the world where the service listens.
func (w *world) serving(addr string) {
	w.env["SUBROLE_PUBLIC_URL"] = "http://" + addr
	w.twitch.Callback = "http://" + addr + "/twitch_eventsub"
	// As the operator registers it in the Developer Portal > OAuth2.
	w.discord.SetRedirectURIs("http://" + addr + "/discord_callback")
}

// addMember adds a Discord member with a display name.
func (w *world) addMember(id, name string) {
	w.discord.AddMember(id, name)
	w.names[id] = name
}

// name returns the display name of a role or member ID.
func (w *world) name(id string) string {
	if n, ok := w.names[id]; ok {
		return n
	}
	return id
}

// close stops the fakes.
func (w *world) close() {
	w.discord.Close()
	w.twitchAPI.Close()
}

// discordID and twitchID make the IDs of the world's n-th viewer.
func discordID(n int) string { return fmt.Sprintf("8000000000000%05d", n) }
func twitchID(n int) string  { return fmt.Sprintf("%d", 500000+n) }
