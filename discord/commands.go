package discord

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/subrole/subrole"
)

// Members is what the slash commands need from the core;
// *subrole.Service implements it.
type Members interface {
	// Member returns a member's link and subscription state; an error
	// wrapping subrole.ErrNotFound when they are not linked.
	Member(ctx context.Context, discordUserID string) (subrole.Member, error)
	// Unlink removes the link and queues the removal of the managed roles;
	// an error wrapping subrole.ErrNotFound when they are not linked.
	Unlink(ctx context.Context, discordUserID, why string) error
	// PendingLink reports an unfinished /link round trip of the member and
	// when it expires.
	PendingLink(ctx context.Context, discordUserID string) (expires time.Time, pending bool, err error)
}

// LinkURLs makes the URL of the /link button; the web package's Handler
// implements it. The button opens subrole's own page, which binds the
// browser and has Discord confirm the member before Twitch is asked.
type LinkURLs interface {
	LinkURL(ctx context.Context, discordUserID, discordName, guildID string) (string, error)
}

// ResyncFunc rechecks one linked member against Helix and queues their
// roles; cmd/subrole wires it to subrole.Service.Resync with the
// broadcaster's token. Not linked: an error wrapping subrole.ErrNotFound.
type ResyncFunc func(ctx context.Context, discordUserID string) (subrole.Member, error)

// ReconcileFunc runs a full reconcile pass for /subrole resync-all, calling
// progress as it goes; cmd/subrole wires it to subrole.Service.ReconcileWith
// with the broadcaster's token. A pass already running fails with
// subrole.ErrReconcileRunning.
type ReconcileFunc func(ctx context.Context, progress func(subrole.ReconcileStage, subrole.ReconcileReport)) (subrole.ReconcileReport, error)

// Commands registers and answers subrole's slash commands: /link, /unlink,
// /status for members and the /subrole group (resync, who, unlink) for
// members with Manage Roles. Interactions arrive over the gateway; each is
// deferred at once (ephemeral) and answered by editing the deferred reply,
// so the 3 second limit holds whatever the store or Twitch take.
type Commands struct {
	// Bot is the Discord session. Required.
	Bot *Bot
	// Members is the core. Required.
	Members Members
	// Links makes /link buttons. Required.
	Links LinkURLs
	// Resync serves /subrole resync. Nil answers that resync is unavailable.
	Resync ResyncFunc
	// ResyncAll serves /subrole resync-all. Nil answers that it is unavailable.
	ResyncAll ReconcileFunc
	// ResyncAllTimeout bounds /subrole resync-all. Zero means 14 minutes
	// (an interaction's reply can be edited for 15).
	ResyncAllTimeout time.Duration
	// ProgressEvery is the least time between two progress edits of
	// /subrole resync-all. Zero means 3 seconds.
	ProgressEvery time.Duration
	// Logger receives logs. Nil discards them.
	Logger *slog.Logger
	// Timeout bounds the work of one interaction. Zero means 30 seconds.
	Timeout time.Duration

	appOnce sync.Once
	appID   chan string // receives the application id from READY

	// Interactions in flight, so Close can stop them before the store closes.
	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
	life     context.Context
	stop     context.CancelFunc
}

// The permission bits the admin group needs.
const adminPermissions = discordgo.PermissionManageRoles

// commandList returns the guild commands subrole registers.
func commandList() []*discordgo.ApplicationCommand {
	perm := int64(adminPermissions)
	noDM := false
	member := func(desc string) []*discordgo.ApplicationCommandOption {
		return []*discordgo.ApplicationCommandOption{{Type: discordgo.ApplicationCommandOptionUser,
			Name: "member", Description: desc, Required: true}}
	}
	return []*discordgo.ApplicationCommand{
		{Name: "link", Description: "Link your Twitch account to get your subscriber roles", DMPermission: &noDM},
		{Name: "unlink", Description: "Unlink your Twitch account and remove the subscriber roles", DMPermission: &noDM},
		{Name: "status", Description: "Show your linked Twitch account and subscription", DMPermission: &noDM},
		{Name: "subrole", Description: "subrole administration", DefaultMemberPermissions: &perm, DMPermission: &noDM,
			Options: []*discordgo.ApplicationCommandOption{
				{Type: discordgo.ApplicationCommandOptionSubCommand, Name: "resync",
					Description: "Recheck a member's subscription with Twitch and reapply their roles", Options: member("The member to resync")},
				{Type: discordgo.ApplicationCommandOptionSubCommand, Name: "who",
					Description: "Show a member's link and subscription", Options: member("The member to show")},
				{Type: discordgo.ApplicationCommandOptionSubCommand, Name: "unlink",
					Description: "Unlink a member and remove their managed roles", Options: member("The member to unlink")},
				{Type: discordgo.ApplicationCommandOptionSubCommand, Name: "resync-all",
					Description: "Recheck every subscriber with Twitch and repair every linked member's roles"},
			}},
	}
}

func (c *Commands) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c.Logger
}

func (c *Commands) init() {
	c.appOnce.Do(func() {
		c.appID = make(chan string, 1)
		c.life, c.stop = context.WithCancel(context.Background())
	})
}

// begin registers an interaction in flight; false once Close was called.
func (c *Commands) begin() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.inflight.Add(1)
	return true
}

// Close stops handling interactions: later ones are ignored, the work of
// those in flight is cancelled (their replies still say so), and Close
// returns when they are done. Call it before the store and the session close.
func (c *Commands) Close() {
	c.init()
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.stop()
	c.inflight.Wait()
}

// Attach adds the interaction and READY handlers to the session. Call it
// before Bot.Open, so READY (which carries the application id) is seen.
func (c *Commands) Attach() {
	c.init()
	c.Bot.Session.AddHandler(func(_ *discordgo.Session, r *discordgo.Ready) {
		if r.Application != nil && r.Application.ID != "" {
			select {
			case c.appID <- r.Application.ID:
			default:
			}
		}
	})
	c.Bot.Session.AddHandler(func(_ *discordgo.Session, i *discordgo.InteractionCreate) { c.handle(i) })
}

// Register replaces the guild's commands with subrole's (bulk overwrite),
// after the gateway's READY gave the application id.
func (c *Commands) Register(ctx context.Context) error {
	c.init()
	var app string
	select {
	case app = <-c.appID:
		c.appID <- app // keep it for a later Register
	case <-ctx.Done():
		return fmt.Errorf("discord: register commands: no READY from the gateway: %w", ctx.Err())
	}
	_, err := c.Bot.Session.ApplicationCommandBulkOverwrite(app, c.Bot.GuildID, commandList(), discordgo.WithContext(ctx))
	if err != nil {
		if st := status(err); st == 403 {
			return fmt.Errorf("discord: register commands: %w: re-invite the bot with the applications.commands scope", err)
		}
		return fmt.Errorf("discord: register commands: %w", err)
	}
	return nil
}

// handle answers one interaction; discordgo calls it on its own goroutine.
func (c *Commands) handle(i *discordgo.InteractionCreate) {
	if i.Type != discordgo.InteractionApplicationCommand || !c.begin() {
		return
	}
	defer c.inflight.Done()
	log := c.log()
	data := i.ApplicationCommandData()
	user := i.User
	if i.Member != nil {
		user = i.Member.User
	}
	if user == nil {
		return
	}
	log = log.With("discord_user", user.ID, "command", data.Name)
	if i.GuildID == "" {
		c.reply(i, "subrole works inside the server: run /"+data.Name+" in a channel of the server, not in a DM.")
		return
	}
	if i.GuildID != c.Bot.GuildID {
		c.reply(i, "This bot manages another server.")
		return
	}
	if data.Name == "subrole" && (i.Member == nil || i.Member.Permissions&(adminPermissions|discordgo.PermissionAdministrator) == 0) {
		log.Warn("discord: admin command refused: the member lacks Manage Roles")
		c.reply(i, "You need the Manage Roles permission to use /subrole.")
		return
	}
	if err := c.Bot.Session.InteractionRespond(i.Interaction, &discordgo.InteractionResponse{
		Type: discordgo.InteractionResponseDeferredChannelMessageWithSource,
		Data: &discordgo.InteractionResponseData{Flags: discordgo.MessageFlagsEphemeral},
	}); err != nil {
		log.Error("discord: acknowledging an interaction failed", "err", err)
		return
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(c.life, timeout)
	defer cancel()
	var content string
	var components []discordgo.MessageComponent
	switch data.Name {
	case "link":
		content, components = c.link(ctx, log, user, i.GuildID)
	case "unlink":
		content = c.unlink(ctx, log, user.ID, "the member ran /unlink", "You")
	case "status":
		content = c.status(ctx, log, user.ID, "You are")
	case "subrole":
		if len(data.Options) == 1 && data.Options[0].Name == "resync-all" {
			content = c.resyncAll(log, user, i.Interaction)
		} else {
			content = c.admin(ctx, log, user, data)
		}
	default:
		content = "Unknown command."
	}
	if components == nil {
		components = []discordgo.MessageComponent{}
	}
	editCtx, cancelEdit := context.WithTimeout(context.Background(), 10*time.Second) // the work may have used up ctx
	defer cancelEdit()
	if _, err := c.Bot.Session.InteractionResponseEdit(i.Interaction, &discordgo.WebhookEdit{
		Content: &content, Components: &components, AllowedMentions: &discordgo.MessageAllowedMentions{},
	}, discordgo.WithContext(editCtx)); err != nil {
		log.Error("discord: answering an interaction failed", "err", err)
	}
}

// reply answers at once with an ephemeral message (no I/O before it).
func (c *Commands) reply(i *discordgo.InteractionCreate, content string) {
	err := c.Bot.Session.InteractionRespond(i.Interaction, &discordgo.InteractionResponse{
		Type: discordgo.InteractionResponseChannelMessageWithSource,
		Data: &discordgo.InteractionResponseData{Content: content, Flags: discordgo.MessageFlagsEphemeral,
			AllowedMentions: &discordgo.MessageAllowedMentions{}},
	})
	if err != nil {
		c.log().Error("discord: answering an interaction failed", "err", err)
	}
}

func (c *Commands) failed(log *slog.Logger, what string, err error) string {
	log.Error("discord: "+what+" failed", "err", err)
	return "Something went wrong (" + what + "). Please try again in a minute."
}

func (c *Commands) link(ctx context.Context, log *slog.Logger, user *discordgo.User, guild string) (string, []discordgo.MessageComponent) {
	m, err := c.Members.Member(ctx, user.ID)
	linked := err == nil
	if err != nil && !errors.Is(err, subrole.ErrNotFound) {
		return c.failed(log, "reading your link", err), nil
	}
	u, err := c.Links.LinkURL(ctx, user.ID, user.Username, guild)
	if errors.Is(err, subrole.ErrTooManyStates) {
		log.Warn("discord: /link refused: too many /link buttons are pending", "reason", "too many pending states")
		return "Too many members are linking right now. Please run /link again in a few minutes.", nil
	}
	if err != nil {
		return c.failed(log, "preparing the link", err), nil
	}
	label, content := "Link Twitch account",
		"Press the button: Discord asks you to confirm it is you, then Twitch asks you to approve. "+
			"The button works once, for 10 minutes, only for your own Discord account: do not share it."
	if linked {
		label = "Switch Twitch account"
		content = fmt.Sprintf("You are linked to the Twitch account **%s**. To switch to another Twitch account, press the button and log in with it "+
			"(use \"Not you?\" on Twitch's page). Your roles then follow the new account; months are never carried over.",
			escape(orID(m.Link.TwitchLogin, m.Link.TwitchUserID)))
	}
	log.Info("discord: /link button issued", "relink", linked)
	return content, []discordgo.MessageComponent{discordgo.ActionsRow{Components: []discordgo.MessageComponent{
		discordgo.Button{Label: label, Style: discordgo.LinkButton, URL: u},
	}}}
}

func (c *Commands) unlink(ctx context.Context, log *slog.Logger, target, why, who string) string {
	m, err := c.Members.Member(ctx, target)
	if errors.Is(err, subrole.ErrNotFound) {
		return notLinked(who)
	}
	if err != nil {
		return c.failed(log, "reading the link", err)
	}
	if err := c.Members.Unlink(ctx, target, why); errors.Is(err, subrole.ErrNotFound) {
		return notLinked(who)
	} else if err != nil {
		return c.failed(log, "unlinking", err)
	}
	log.Info("discord: unlinked", "target", target, "twitch_user", m.Link.TwitchUserID)
	return fmt.Sprintf("Unlinked from the Twitch account **%s**. The subscriber roles are being removed.",
		escape(orID(m.Link.TwitchLogin, m.Link.TwitchUserID)))
}

func notLinked(who string) string {
	if who == "You" {
		return "You are not linked to a Twitch account. Run /link to link one."
	}
	return who + " is not linked to a Twitch account."
}

func (c *Commands) status(ctx context.Context, log *slog.Logger, target, who string) string {
	m, err := c.Members.Member(ctx, target)
	if errors.Is(err, subrole.ErrNotFound) {
		if who == "You are" {
			return notLinked("You")
		}
		return notLinked(strings.TrimSuffix(who, " is"))
	}
	if err != nil {
		return c.failed(log, "reading the status", err)
	}
	relink, pending, err := c.Members.PendingLink(ctx, target)
	if err != nil {
		return c.failed(log, "reading the status", err)
	}
	if !pending {
		relink = time.Time{}
	}
	return who + " " + StatusText(m, relink)
}

// StatusText describes a member's link and subscription for /status and
// /subrole who, after "You are" or "<member> is". relink is when an
// unfinished /link of the member expires (zero: none).
func StatusText(m subrole.Member, relink time.Time) string {
	s := m.Sub
	var b strings.Builder
	fmt.Fprintf(&b, "linked to the Twitch account **%s** (since %s).\n", escape(orID(m.Link.TwitchLogin, m.Link.TwitchUserID)), stamp(m.Link.Linked, "D"))
	if s.Active() {
		fmt.Fprintf(&b, "Subscription: **%s**", titleTier(s.Tier))
		if !s.Started.IsZero() {
			fmt.Fprintf(&b, ", subscribed since %s", stamp(s.Started, "D"))
		}
		b.WriteString("\n")
	} else if s.Tier.Valid() && !s.Ended.IsZero() {
		fmt.Fprintf(&b, "Subscription: **not subscribed** (%s ended %s)\n", titleTier(s.Tier), stamp(s.Ended, "D"))
	} else {
		b.WriteString("Subscription: **not subscribed**\n")
	}
	fmt.Fprintf(&b, "Streak: %s · Cumulative: %s\n", months(s.StreakMonths), months(s.CumulativeMonths))
	switch {
	case s.Active() && s.IsGift && s.GifterLogin != "":
		fmt.Fprintf(&b, "Gift: yes, from %s\n", escape(s.GifterLogin))
	case s.Active() && s.IsGift:
		b.WriteString("Gift: yes\n")
	default:
		b.WriteString("Gift: no\n")
	}
	if !s.LastEvent.IsZero() {
		fmt.Fprintf(&b, "Last event: %s %s\n", escape(s.LastEventType), stamp(s.LastEvent, "R"))
	} else {
		b.WriteString("Last event: none yet\n")
	}
	if relink.IsZero() {
		b.WriteString("Relink pending: no")
	} else {
		fmt.Fprintf(&b, "Relink pending: yes, a /link waits to be finished on Twitch (its button expires %s)", stamp(relink, "R"))
	}
	return b.String()
}

func titleTier(t subrole.Tier) string { return fmt.Sprintf("Tier %d", int(t)) }

func months(n int) string {
	if n == 0 {
		return "unknown"
	}
	if n == 1 {
		return "1 month"
	}
	return fmt.Sprintf("%d months", n)
}

// stamp formats t as a Discord timestamp, shown in each reader's time zone.
func stamp(t time.Time, style string) string {
	if t.IsZero() {
		return "unknown"
	}
	return fmt.Sprintf("<t:%d:%s>", t.Unix(), style)
}

func orID(login, id string) string {
	if login != "" {
		return login
	}
	return id
}

// escape keeps Twitch logins (letters, digits, underscores) from turning
// into Markdown.
func escape(s string) string {
	return strings.NewReplacer("_", `\_`, "*", `\*`, "`", "\\`", "~", `\~`, "|", `\|`, ">", `\>`).Replace(s)
}

func (c *Commands) admin(ctx context.Context, log *slog.Logger, admin *discordgo.User, data discordgo.ApplicationCommandInteractionData) string {
	if len(data.Options) != 1 {
		return "Use /subrole resync, /subrole resync-all, /subrole who or /subrole unlink."
	}
	sub := data.Options[0]
	var target string
	for _, o := range sub.Options {
		if o.Name == "member" {
			target, _ = o.Value.(string)
		}
	}
	if target == "" {
		return "Name a member."
	}
	log = log.With("target", target, "subcommand", sub.Name)
	mention := "<@" + target + ">"
	switch sub.Name {
	case "who":
		return c.status(ctx, log, target, mention+" is")
	case "unlink":
		return c.unlink(ctx, log, target, "unlinked by the admin "+admin.Username+" ("+admin.ID+")", mention)
	case "resync":
		if c.Resync == nil {
			return "Resync is not available."
		}
		m, err := c.Resync(ctx, target)
		if errors.Is(err, subrole.ErrNotFound) {
			return notLinked(mention)
		}
		if err != nil {
			log.Warn("discord: admin resync failed", "err", err)
			return "Resync failed: " + err.Error()
		}
		log.Info("discord: admin resync", "admin", admin.ID, "twitch_user", m.Link.TwitchUserID, "tier", m.Sub.Tier.String())
		return "Resynced from Twitch; roles are being reapplied. " + mention + " is " + StatusText(m, time.Time{})
	}
	return "Unknown subcommand."
}

// resyncAll runs /subrole resync-all: a full reconcile, with the deferred
// reply edited to show progress, and returns the final counts.
func (c *Commands) resyncAll(log *slog.Logger, admin *discordgo.User, in *discordgo.Interaction) string {
	if c.ResyncAll == nil {
		return "Resync of every member is not available."
	}
	timeout, every := c.ResyncAllTimeout, c.ProgressEvery
	if timeout <= 0 {
		timeout = 14 * time.Minute
	}
	if every <= 0 {
		every = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(c.life, timeout)
	defer cancel()
	log = log.With("subcommand", "resync-all")
	log.Info("discord: admin started a resync of every member", "admin", admin.ID)
	var last time.Time
	progress := func(stage subrole.ReconcileStage, rep subrole.ReconcileReport) {
		if stage == subrole.StageDone || time.Since(last) < every {
			return
		}
		last = time.Now()
		text := ProgressText(stage, rep)
		editCtx, cancelEdit := context.WithTimeout(ctx, 5*time.Second)
		defer cancelEdit()
		if _, err := c.Bot.Session.InteractionResponseEdit(in, &discordgo.WebhookEdit{Content: &text,
			AllowedMentions: &discordgo.MessageAllowedMentions{}}, discordgo.WithContext(editCtx)); err != nil {
			log.Warn("discord: showing resync progress failed", "err", err)
		}
	}
	rep, err := c.ResyncAll(ctx, progress)
	switch {
	case errors.Is(err, subrole.ErrReconcileRunning):
		return "A resync of every member is already running (started by the schedule or another admin); its counts go to the audit log."
	case err != nil:
		log.Warn("discord: admin resync of every member failed", "err", err)
		return "Resync of every member failed: " + err.Error()
	}
	log.Info("discord: admin resync of every member done", "admin", admin.ID, "drifts", rep.Drifts(), "roles_repaired", rep.RolesRepaired)
	return ReconcileText(rep)
}

// ProgressText describes a running reconcile pass.
func ProgressText(stage subrole.ReconcileStage, r subrole.ReconcileReport) string {
	return fmt.Sprintf("Resync of every member running: %s… (%d Twitch requests, %d subscribers read, %d fixes, %d roles restored so far)",
		stage, r.HelixRequests, r.Subscribers, r.Drifts(), r.RolesRepaired)
}

// ReconcileText summarizes a finished reconcile pass.
func ReconcileText(r subrole.ReconcileReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Resync of every member done in %s: %d subscribers checked with %d Twitch requests.\n",
		r.Finished.Sub(r.Started).Round(time.Millisecond), r.Subscribers, r.HelixRequests)
	fmt.Fprintf(&b, "Missed ends: %d · Missed subscriptions: %d · Tier changes: %d · Gifts turned paid: %d\n",
		r.MissedEnd, r.MissedSubscribe, r.TierChange, r.GiftToPaid)
	fmt.Fprintf(&b, "Roles restored after hand edits: %d · Left to newer events: %d\n", r.RolesRepaired, r.Skipped)
	if r.RoleJobs > 0 {
		fmt.Fprintf(&b, "%d members' roles are being updated.", r.RoleJobs)
	} else {
		b.WriteString("Every member's roles were already right.")
	}
	return b.String()
}
