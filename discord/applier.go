package discord

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/subrole/subrole"
)

// Outbox is the core's queue of role jobs; *subrole.Service implements it.
type Outbox interface {
	// OutboxReady receives a value after new jobs are committed.
	OutboxReady() <-chan struct{}
	// RoleJobs returns up to max pending jobs after position after, oldest first.
	RoleJobs(ctx context.Context, after uint64, max int) ([]subrole.RoleJob, error)
	// CompleteRoleJobs removes finished jobs and appends their audit entries in one commit.
	CompleteRoleJobs(ctx context.Context, seqs []uint64, audit []subrole.AuditEntry) error
}

// Applied describes one member's roles after the applier handled their jobs.
type Applied struct {
	DiscordUserID string
	TwitchUserID  string
	EventID       string   // the newest job's event, if any
	Added         []string // roles added
	Removed       []string // roles removed
	Jobs          int      // jobs coalesced into this application
	Observed      time.Time
	Called        time.Time // when the first role call was issued (zero when nothing changed)
	Done          time.Time
	Err           error // a permanent failure, recorded in the audit log; nil on success
}

// Applier drains the outbox: for each member with pending jobs it reads the
// member's current roles, applies only the needed adds and removes, and marks
// the jobs done. Jobs of one member are coalesced (the newest desired state
// wins) and never applied concurrently; different members are applied in
// parallel. Network errors, 5xx and 429 are retried with backoff and the jobs
// stay in the outbox until they succeed; permanent failures (missing
// permissions, unknown member or role) are recorded and dropped.
type Applier struct {
	// Bot is the Discord session. Required.
	Bot *Bot
	// Outbox is the job queue. Required.
	Outbox Outbox
	// Logger receives logs. Nil discards them.
	Logger *slog.Logger
	// Workers is how many members are applied at once. Zero means 4.
	Workers int
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// MinBackoff and MaxBackoff bound the pause after a transient failure.
	// Zero means 100 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// OnApplied, if set, is called after each member is handled and its jobs
	// are removed from the outbox (from the completer goroutine).
	OnApplied func(Applied)
}

// pending is the coalesced work of one member.
type pending struct {
	job      subrole.RoleJob // newest job
	seqs     []uint64        // every job folded in
	obs      time.Time       // earliest observation
	attempts int             // failed attempts with an unexpected client error
}

type result struct {
	member    string
	transient error         // non-nil: retry later
	retryIn   time.Duration // a rate limit's retry-after, if known
}

// maxPending caps how many members are held in memory; the rest wait in the outbox.
const maxPending = 10000

// Run drains the outbox until ctx is done, then waits for calls in flight.
func (a *Applier) Run(ctx context.Context) error {
	log := a.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	workers := a.Workers
	if workers <= 0 {
		workers = 4
	}
	minB, maxB := a.MinBackoff, a.MaxBackoff
	if minB <= 0 {
		minB = 100 * time.Millisecond
	}
	if maxB <= 0 {
		maxB = 30 * time.Second
	}

	var (
		cursor   uint64
		queue    = map[string]*pending{} // waiting members
		order    []string                // FIFO of waiting members
		inflight = map[string]*pending{}
		results  = make(chan result, workers)
		work     = make(chan *pending)
		done     = make(chan completion, 4*workers)
		backoff  time.Duration
		paused   <-chan time.Time // non-nil while backing off
		more     = true           // the outbox may hold unread jobs
		readErrs int
	)
	var workersDone, completerDone sync.WaitGroup
	for range workers {
		workersDone.Go(func() {
			for p := range work {
				results <- a.handle(ctx, log, p, done)
			}
		})
	}
	completerDone.Go(func() { a.complete(ctx, log, done) })
	defer func() {
		close(work)
		workersDone.Wait()
		close(done)
		completerDone.Wait()
	}()

	read := func() {
		for more && len(queue)+len(inflight) < maxPending {
			jobs, err := a.Outbox.RoleJobs(ctx, cursor, 500)
			if err != nil {
				if ctx.Err() == nil {
					readErrs++
					log.Error("discord: reading the outbox failed", "err", err)
				}
				return
			}
			for _, j := range jobs {
				cursor = j.Seq
				p := queue[j.DiscordUserID]
				if p == nil {
					p = &pending{obs: j.Observed}
					queue[j.DiscordUserID] = p
					order = append(order, j.DiscordUserID)
				}
				p.job = j
				p.seqs = append(p.seqs, j.Seq)
			}
			more = len(jobs) == 500
		}
	}
	// dispatch hands waiting members that are not in flight to idle workers.
	dispatch := func() {
		for paused == nil && len(inflight) < workers {
			i := slices.IndexFunc(order, func(m string) bool { return inflight[m] == nil })
			if i < 0 {
				return
			}
			m := order[i]
			order = slices.Delete(order, i, i+1)
			p := queue[m]
			delete(queue, m)
			inflight[m] = p
			work <- p
		}
	}

	more = true
	read()
	dispatch()
	for {
		var retryRead <-chan time.Time
		if readErrs > 0 {
			retryRead = time.After(minB)
		}
		select {
		case <-ctx.Done():
			for range inflight {
				<-results
			}
			return ctx.Err()
		case <-a.Outbox.OutboxReady():
			more = true
			read()
		case <-retryRead:
			readErrs = 0
			more = true
			read()
		case <-paused:
			paused = nil
		case r := <-results:
			p := inflight[r.member]
			delete(inflight, r.member)
			if r.transient != nil {
				// Put the work back at the front, merged with anything newer.
				if q := queue[r.member]; q != nil {
					q.seqs = append(p.seqs, q.seqs...)
					q.obs, q.attempts = p.obs, p.attempts
				} else {
					queue[r.member] = p
					order = append([]string{r.member}, order...)
				}
				if paused == nil {
					// One pause per round: the other calls of this round
					// failing too must not stretch it.
					backoff = min(max(backoff*2, minB), maxB)
					wait := max(backoff, r.retryIn)
					wait += time.Duration(rand.Int64N(int64(wait)/4 + 1))
					level := slog.LevelWarn
					if backoff == maxB {
						level = slog.LevelError // failing for a while: someone should look
					}
					log.Log(ctx, level, "discord: role change failed, retrying; the change waits in the outbox",
						"discord_user", r.member, "err", r.transient, "retry_in", wait)
					paused = time.After(wait)
				}
			} else {
				backoff = 0
			}
			if !more || len(queue)+len(inflight) < maxPending/2 {
				read()
			}
		}
		dispatch()
	}
}

// handle applies one member's coalesced jobs and completes them unless the
// failure is transient.
func (a *Applier) handle(ctx context.Context, log *slog.Logger, p *pending, done chan<- completion) result {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	j := p.job
	out := Applied{DiscordUserID: j.DiscordUserID, TwitchUserID: j.TwitchUserID, EventID: j.EventID,
		Jobs: len(p.seqs), Observed: p.obs}
	s, guild := a.Bot.Session, a.Bot.GuildID
	opt := discordgo.WithContext(ctx)

	member, err := s.GuildMember(guild, j.DiscordUserID, opt)
	var change subrole.RoleChange
	var before []string
	if err == nil {
		before = managedOf(member.Roles, j.Managed)
		change = subrole.Diff(member.Roles, j.Desired, j.Managed)
		reason := discordgo.WithAuditLogReason(auditReason(j.Reason))
		for _, r := range change.Add {
			if out.Called.IsZero() {
				out.Called = now()
			}
			if err = s.GuildMemberRoleAdd(guild, j.DiscordUserID, r, opt, reason); err != nil {
				err = fmt.Errorf("add role %s: %w", r, err)
				break
			}
			out.Added = append(out.Added, r)
		}
		for _, r := range change.Remove {
			if err != nil {
				break
			}
			if out.Called.IsZero() {
				out.Called = now()
			}
			if err = s.GuildMemberRoleRemove(guild, j.DiscordUserID, r, opt, reason); err != nil {
				err = fmt.Errorf("remove role %s: %w", r, err)
				break
			}
			out.Removed = append(out.Removed, r)
		}
	}
	if err != nil {
		switch retry, kind := classify(err); {
		case kind == failTransient:
			return result{member: j.DiscordUserID, transient: err, retryIn: retry}
		case kind == failUnexpected && p.attempts < maxUnexpected:
			// A client error Discord has no documented reason for: retry a
			// few times before giving up on this member.
			p.attempts++
			return result{member: j.DiscordUserID, transient: err}
		}
	}

	entry := subrole.AuditEntry{Time: now(), Kind: subrole.AuditRoles, DiscordUserID: j.DiscordUserID,
		TwitchUserID: j.TwitchUserID, EventID: j.EventID,
		Before: strings.Join(before, ","), After: strings.Join(j.Desired, ","),
		Detail: fmt.Sprintf("%s; added %v removed %v (%d jobs)", j.Reason, out.Added, out.Removed, len(p.seqs))}
	if err != nil {
		out.Err = err
		entry.Kind = subrole.AuditRoleFailure
		entry.Detail = fmt.Sprintf("%s: %v; %s", j.Reason, err, fixFor(err))
		log.Error("discord: role change failed for good", "discord_user", j.DiscordUserID,
			"twitch_user", j.TwitchUserID, "event_id", j.EventID, "err", err, "fix", fixFor(err))
	}
	// The completer removes the jobs and records the audit entry, grouping
	// what several workers finish into one commit; the worker moves on.
	done <- completion{seqs: p.seqs, audit: entry, out: out}
	return result{member: j.DiscordUserID}
}

// completeWithRetry removes finished jobs, retrying a failed commit with
// backoff: the read cursor has moved past them, so until they are removed a
// restart would check them again. It gives up only when shutting down.
func (a *Applier) completeWithRetry(ctx context.Context, seqs []uint64, audit []subrole.AuditEntry) error {
	wait := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := a.Outbox.CompleteRoleJobs(context.WithoutCancel(ctx), seqs, audit)
		if err == nil || (ctx.Err() != nil && attempt >= 3) {
			return err
		}
		time.Sleep(wait)
		wait = min(wait*2, 5*time.Second)
	}
}

// completion is a handled member whose jobs are to be removed from the outbox.
type completion struct {
	seqs  []uint64
	audit subrole.AuditEntry
	out   Applied
}

// complete removes handled jobs from the outbox, everything that is waiting
// in one commit, until done is closed and drained. Completing is not cut
// short by shutdown: the calls were made. If a commit fails the jobs stay in
// the store and are checked again (a no-op) after the next start.
func (a *Applier) complete(ctx context.Context, log *slog.Logger, done <-chan completion) {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	for c := range done {
		batch := []completion{c}
	more:
		for len(batch) < 500 {
			select {
			case c, ok := <-done:
				if !ok {
					break more
				}
				batch = append(batch, c)
			default:
				break more
			}
		}
		var seqs []uint64
		audit := make([]subrole.AuditEntry, 0, len(batch))
		for _, c := range batch {
			seqs = append(seqs, c.seqs...)
			audit = append(audit, c.audit)
		}
		if err := a.completeWithRetry(ctx, seqs, audit); err != nil {
			log.Error("discord: recording finished role changes failed; they are checked again after a restart (no change is made twice)",
				"jobs", len(seqs), "err", err)
			continue
		}
		t := now()
		for _, c := range batch {
			c.out.Done = t
			if a.OnApplied != nil {
				a.OnApplied(c.out)
			}
		}
	}
}

// failure kinds of a Discord call.
type failure int

const (
	failTransient  failure = iota // retry until it works: outages, rate limits, a token being fixed
	failPermanent                 // record and drop: the member, role or permission is wrong
	failUnexpected                // an undocumented client error: retry a few times, then drop
)

// maxUnexpected is how often an unexpected client error is retried for one member.
const maxUnexpected = 5

// classify says how to treat a failed Discord call, and how long Discord
// asked us to wait, if it said. Only errors that name a member, role or
// permission problem are permanent: a 401 (a token being reset), a 403
// without a code (a Cloudflare block) or 40333 (Discord's internal network
// error), 5xx, 429 and network errors are retried until they pass, so a
// Discord incident never drops a role change.
func classify(err error) (time.Duration, failure) {
	var rl *discordgo.RateLimitError
	if errors.As(err, &rl) {
		return rl.RetryAfter, failTransient
	}
	switch code(err) {
	case discordgo.ErrCodeMissingPermissions, discordgo.ErrCodeUnknownMember, discordgo.ErrCodeUnknownRole,
		discordgo.ErrCodeMissingAccess:
		return 0, failPermanent
	case 40333:
		return 0, failTransient
	}
	switch st := status(err); {
	case st == 0, st == 401, st == 429, st >= 500:
		return 0, failTransient
	case st == 403 && code(err) == 0:
		return 0, failTransient
	}
	return 0, failUnexpected
}

// fixFor tells an operator how to fix a permanent failure.
func fixFor(err error) string {
	switch code(err) {
	case discordgo.ErrCodeMissingPermissions:
		return "give the bot the Manage Roles permission and drag its role above every role subrole manages (Server Settings > Roles)"
	case discordgo.ErrCodeUnknownMember:
		return "the member left the server; nothing to do"
	case discordgo.ErrCodeMissingAccess:
		return "the bot cannot see the server or channel: check its permissions and SUBROLE_DISCORD_GUILD_ID"
	case discordgo.ErrCodeUnknownRole:
		return "the role was deleted; set SUBROLE_ROLE_* to an existing role ID and restart"
	}
	return "see the error; the next reconcile retries"
}

// auditReason encodes a reason for Discord's X-Audit-Log-Reason header
// (URL-encoded, at most 512 characters).
func auditReason(reason string) string {
	r := []rune(reason)
	if len(r) > 200 {
		r = r[:200]
	}
	return url.PathEscape(string(r))
}

func managedOf(roles, managed []string) []string {
	var out []string
	for _, r := range roles {
		if slices.Contains(managed, r) {
			out = append(out, r)
		}
	}
	slices.Sort(out)
	return out
}
