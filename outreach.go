package subrole

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Member outreach: direct messages subrole sends on its own.
//
//   - A welcome when a member who is not linked joins the guild (MemberJoined).
//   - One follow-up a while later if they are still in the guild and still
//     not linked.
//   - A monthly relink request to linked members, on the first of each month
//     in the configured time zone, when no reconcile can repair drift (the
//     broadcaster has not connected the channel) or always, by policy.
//
// Every message is a durable job in the store, claimed (removed) in a commit
// before it is sent, so a re-delivered gateway event, a reconnect or a
// restart never sends it twice. The price is at most once: a crash between
// the claim and Discord's answer loses that one message (the audit log shows
// the claim without an outcome). RunOutreach sends the due jobs, one at a
// time and paced, and is woken by MemberJoined, WakeOutreach, the next job's
// time and the next month's start.

// OutreachKind is the kind of an outreach message.
type OutreachKind string

// The outreach messages.
const (
	OutreachWelcome  OutreachKind = "welcome"  // to a member who joined and is not linked
	OutreachFollowUp OutreachKind = "followup" // a reminder to a member still not linked
	OutreachRelink   OutreachKind = "relink"   // a monthly request to a linked member to relink
)

// AuditOutreach is the audit kind of outreach: what was sent, skipped,
// queued or could not be delivered, and why.
const AuditOutreach AuditKind = "outreach"

// ErrDMClosed means a member does not accept direct messages from the bot
// (Discord error 50007). Messengers wrap it; it is never retried.
var ErrDMClosed = errors.New("the member does not accept direct messages from the bot")

// RetryAfterError is a transient failure for which the other side said how
// long to wait (a rate limit). Messengers may return it, wrapped or not.
type RetryAfterError struct {
	After time.Duration
	Err   error
}

// Error describes the failure and the wait.
func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %s)", e.Err, e.After)
}

// Unwrap returns the failure.
func (e *RetryAfterError) Unwrap() error { return e.Err }

// Messenger delivers outreach messages; the discord package implements it.
type Messenger interface {
	// SendOutreach sends the message of kind k to a member by DM. A member
	// who does not accept DMs fails with an error wrapping ErrDMClosed;
	// any other error is treated as transient and retried a few times.
	SendOutreach(ctx context.Context, discordUserID string, k OutreachKind) error
	// InGuild reports whether the user is a member of the guild now. An
	// error means it could not tell (retried like a failed send).
	InGuild(ctx context.Context, discordUserID string) (bool, error)
}

// RelinkMode says when linked members get a monthly relink request.
type RelinkMode int

// The relink modes.
const (
	RelinkOff    RelinkMode = iota // never
	RelinkAuto                     // only in months that start while the broadcaster is not connected
	RelinkAlways                   // every month
)

// String returns "off", "auto" or "always".
func (m RelinkMode) String() string {
	switch m {
	case RelinkAuto:
		return "auto"
	case RelinkAlways:
		return "always"
	}
	return "off"
}

// DefaultRejoinGap is OutreachPolicy.RejoinGap's default.
const DefaultRejoinGap = 30 * 24 * time.Hour

// OutreachPolicy says which outreach messages are sent. The zero value
// sends none.
type OutreachPolicy struct {
	// Welcome DMs members who join and are not linked.
	Welcome bool
	// FollowUp is how long after such a join one reminder is sent if the
	// member is still in the guild and not linked. Zero sends none.
	FollowUp time.Duration
	// RejoinGap is how long after a recorded join another join of the same
	// member counts as a new one (welcome and follow-up again); until then
	// it is treated as the same join. Zero means DefaultRejoinGap.
	RejoinGap time.Duration
	// Relink says when linked members get a monthly relink request.
	Relink RelinkMode
	// Location is the time zone whose month boundaries count. Nil means UTC.
	Location *time.Location
}

func (p OutreachPolicy) rejoinGap() time.Duration {
	if p.RejoinGap > 0 {
		return p.RejoinGap
	}
	return DefaultRejoinGap
}

// OutreachJob is one scheduled outreach message.
type OutreachJob struct {
	At            time.Time    `json:"at"`
	Kind          OutreachKind `json:"kind"`
	DiscordUserID string       `json:"discord_user_id"`
	Month         string       `json:"month,omitempty"`    // relink: the month it is for, "2006-01" in the policy's zone
	Joined        time.Time    `json:"joined,omitzero"`    // follow-up: the recorded join it follows (OutreachRecord.Joined)
	Attempts      int          `json:"attempts,omitempty"` // failed attempts so far
	// Unreadable, set by the store, says why the stored job could not be
	// decoded; At, Kind and DiscordUserID then come from its key. Such a
	// job is set aside in the audit log, never sent.
	Unreadable string `json:"-"`
	// StoreKey, set by the store when it reads a job, is where the job is
	// kept; DeleteOutreach deletes that key when it is set, so that even
	// a job whose key does not say its kind and user can be removed.
	StoreKey []byte `json:"-"`
}

// OutreachRecord is what outreach remembers about one Discord user.
type OutreachRecord struct {
	DiscordUserID string `json:"discord_user_id"`
	// Joined is when the join that got outreach was recorded (service
	// clock); JoinedAt is Discord's joined_at of that join.
	Joined   time.Time `json:"joined,omitzero"`
	JoinedAt time.Time `json:"joined_at,omitzero"`
	// DMClosed is when a DM last failed because the member refuses DMs.
	DMClosed time.Time `json:"dm_closed,omitzero"`
	// RelinkMonth is the last month a relink request was claimed for.
	RelinkMonth string `json:"relink_month,omitempty"`
}

// MemberJoin is a member joining the guild, as the gateway reported it.
type MemberJoin struct {
	DiscordUserID string
	Bot           bool
	JoinedAt      time.Time // Discord's joined_at; zero when unknown
}

// JoinOutcome is what MemberJoined decided.
type JoinOutcome string

// The join outcomes.
const (
	JoinQueued    JoinOutcome = "queued"    // a welcome and/or follow-up was scheduled
	JoinBot       JoinOutcome = "bot"       // bots get nothing
	JoinLinked    JoinOutcome = "linked"    // already linked: nothing to ask
	JoinDuplicate JoinOutcome = "duplicate" // the same join again, or a rejoin within the gap
	JoinOff       JoinOutcome = "off"       // the policy sends nothing on join
)

// decideJoin is MemberJoined's pure decision. rec is the user's record
// (found false: none).
func decideJoin(p OutreachPolicy, j MemberJoin, linked bool, rec OutreachRecord, found bool, now time.Time) JoinOutcome {
	switch {
	case j.Bot:
		return JoinBot
	case linked:
		return JoinLinked
	case !p.Welcome && p.FollowUp <= 0:
		return JoinOff
	case found && !rec.Joined.IsZero() && !j.JoinedAt.IsZero() && j.JoinedAt.Equal(rec.JoinedAt):
		return JoinDuplicate // the gateway delivered this join again
	case found && !rec.Joined.IsZero() && now.Sub(rec.Joined) < p.rejoinGap():
		return JoinDuplicate
	}
	return JoinQueued
}

// MemberJoined records that a member joined the guild and, if the policy
// says so and the member is neither a bot nor linked, schedules their
// welcome and follow-up, in one commit with an audit entry. The same join
// delivered again (or a rejoin within the policy's RejoinGap) schedules
// nothing.
func (s *Service) MemberJoined(ctx context.Context, j MemberJoin) (JoinOutcome, error) {
	if j.DiscordUserID == "" {
		return "", errors.New("subrole: member joined: no discord user id")
	}
	var out JoinOutcome
	err := s.store.Update(ctx, func(tx Tx) error {
		var err error
		out, err = s.recordJoin(tx, j, s.now(), false)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("subrole: member %s joined: %w", j.DiscordUserID, err)
	}
	if out == JoinQueued {
		signal(s.outreachReady)
	}
	return out, nil
}

// recordJoin is MemberJoined inside tx. A join found by a catch-up
// (caughtUp) is audited only when it queues something: the members the
// catch-up finds already handled are most of the list.
func (s *Service) recordJoin(tx Tx, j MemberJoin, now time.Time, caughtUp bool) (JoinOutcome, error) {
	p := s.outreach
	_, err := tx.LinkByDiscord(j.DiscordUserID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", err
	}
	linked := err == nil
	rec, err := tx.Outreach(j.DiscordUserID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", err
	}
	found := err == nil
	out := decideJoin(p, j, linked, rec, found, now)
	if out != JoinQueued && caughtUp {
		return out, nil
	}
	switch out {
	case JoinBot, JoinOff:
		return out, nil
	case JoinLinked:
		// Recorded all the same, so that a catch-up after they unlink does
		// not take this join for one nobody heard.
		if err := tx.PutOutreach(OutreachRecord{DiscordUserID: j.DiscordUserID, Joined: now, JoinedAt: j.JoinedAt,
			RelinkMonth: rec.RelinkMonth}); err != nil {
			return "", err
		}
		return out, tx.AppendAudit(AuditEntry{Time: now, Kind: AuditOutreach, DiscordUserID: j.DiscordUserID,
			Detail: "member joined; already linked: no welcome"})
	case JoinDuplicate:
		return out, tx.AppendAudit(AuditEntry{Time: now, Kind: AuditOutreach, DiscordUserID: j.DiscordUserID,
			Detail: fmt.Sprintf("member joined; a join was already recorded at %s: nothing sent again (rejoins get outreach after %s)",
				rec.Joined.UTC().Format(time.RFC3339), p.rejoinGap())})
	}
	rec = OutreachRecord{DiscordUserID: j.DiscordUserID, Joined: now, JoinedAt: j.JoinedAt, RelinkMonth: rec.RelinkMonth}
	if err := tx.PutOutreach(rec); err != nil {
		return "", err
	}
	var queued []string
	if p.Welcome {
		if err := tx.ScheduleOutreach(OutreachJob{At: now, Kind: OutreachWelcome, DiscordUserID: j.DiscordUserID}); err != nil {
			return "", err
		}
		queued = append(queued, "welcome now")
	}
	if p.FollowUp > 0 {
		at := now.Add(p.FollowUp)
		if err := tx.ScheduleOutreach(OutreachJob{At: at, Kind: OutreachFollowUp, DiscordUserID: j.DiscordUserID, Joined: now}); err != nil {
			return "", err
		}
		queued = append(queued, "follow-up at "+at.UTC().Format(time.RFC3339))
	}
	how := "member joined"
	if caughtUp {
		how = fmt.Sprintf("member joined at %s while the bot had no gateway session (found by the catch-up)", j.JoinedAt.UTC().Format(time.RFC3339))
	}
	return out, tx.AppendAudit(AuditEntry{Time: now, Kind: AuditOutreach, DiscordUserID: j.DiscordUserID,
		Detail: fmt.Sprintf("%s, not linked: queued %v", how, queued)})
}

// Joins missed without a gateway session.
//
// Joins arrive as GUILD_MEMBER_ADD on the gateway. When the bot resumes its
// session, Discord replays what it missed; when it cannot (the session
// expired during a long outage, or the service was stopped), the joins of
// the gap are never delivered. So every new session compares the member
// list with the joins watermark, the time up to which joins are known to
// have been handled, and treats the members who joined after it as joins
// now. MemberJoined's checks make a join found twice, or by both paths,
// count once.

// metaJoinsThrough is the meta key of the joins watermark (RFC 3339; empty
// or missing: not set, and the next session starts afresh), and
// metaJoinsFloor of the time joins began to be handled: no catch-up looks
// before it, so the members there before are never taken for newcomers.
const (
	metaJoinsThrough = "outreach_joins_through"
	metaJoinsFloor   = "outreach_joins_floor"
)

const (
	// joinCatchUpSlack widens the catch-up window, for the difference
	// between Discord's clock (joined_at) and ours.
	joinCatchUpSlack = 5 * time.Minute
	// MaxJoinCatchUp is how far back a catch-up looks: a welcome more than
	// a week late would not be one.
	MaxJoinCatchUp = 7 * 24 * time.Hour
)

// JoinCatchUp is what a new gateway session has to do about the joins it
// may have missed (BeginJoinCatchUp).
type JoinCatchUp struct {
	// Needed says whether to list the members at all. It is false on the
	// first session ever (the members already there are not newcomers)
	// and when the policy sends nothing on join.
	Needed bool
	// Since: members whose joined_at is after it may have been missed.
	Since time.Time
	// Started is when the catch-up began: the watermark once it is done.
	Started time.Time
}

// BeginJoinCatchUp starts the catch-up of a new gateway session. Call it
// before listing the members; when it is not Needed there is nothing more
// to do. While the policy sends nothing on join, joins are not recorded,
// so the watermark is cleared: turning it on later starts afresh instead
// of welcoming everyone who joined while it was off.
func (s *Service) BeginJoinCatchUp(ctx context.Context) (JoinCatchUp, error) {
	now := s.now()
	c := JoinCatchUp{Started: now}
	stamp := []byte(now.UTC().Format(time.RFC3339Nano))
	err := s.store.Update(ctx, func(tx Tx) error {
		c.Needed = false
		if !s.outreach.Welcome && s.outreach.FollowUp <= 0 {
			return tx.PutMeta(metaJoinsThrough, nil)
		}
		through, okThrough, err := metaTime(tx, metaJoinsThrough)
		if err != nil {
			return err
		}
		floor, okFloor, err := metaTime(tx, metaJoinsFloor)
		if err != nil {
			return err
		}
		if !okThrough || !okFloor { // the first session: the members here now are not newcomers
			if err := tx.PutMeta(metaJoinsFloor, stamp); err != nil {
				return err
			}
			return tx.PutMeta(metaJoinsThrough, stamp)
		}
		// A watermark ahead of the clock (it was wrong, or is now) counts
		// as now: joins would otherwise go unseen until the clock caught up.
		c.Needed, c.Since = true, laterOf(earlierOf(through, now).Add(-joinCatchUpSlack), floor, now.Add(-MaxJoinCatchUp))
		return nil
	})
	if err != nil {
		return JoinCatchUp{}, fmt.Errorf("subrole: begin join catch-up: %w", err)
	}
	return c, nil
}

// metaTime reads an RFC 3339 time kept in meta; missing, empty or
// unreadable is not set (the callers start afresh).
func metaTime(tx Tx, key string) (time.Time, bool, error) {
	b, err := tx.Meta(key)
	if errors.Is(err, ErrNotFound) || (err == nil && len(b) == 0) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	return t, err == nil, nil
}

func earlierOf(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func laterOf(first time.Time, more ...time.Time) time.Time {
	for _, t := range more {
		if t.After(first) {
			first = t
		}
	}
	return first
}

// CatchUpJoins records as joins the members (the whole member list, as
// listed after BeginJoinCatchUp returned c) who joined after c.Since, then
// moves the joins watermark to c.Started, all in one commit, with an audit
// entry for each join it queued outreach for. A member whose stored
// records cannot be read is skipped with an audit entry, not allowed to
// stop every catch-up. It returns how many joins it queued outreach for.
func (s *Service) CatchUpJoins(ctx context.Context, c JoinCatchUp, members []MemberJoin) (int, error) {
	var recent []MemberJoin
	for _, m := range members {
		if m.DiscordUserID != "" && !m.Bot && m.JoinedAt.After(c.Since) {
			recent = append(recent, m)
		}
	}
	queued := 0
	err := s.store.Update(ctx, func(tx Tx) error {
		queued = 0
		now := s.now()
		for _, m := range recent {
			out, err := s.recordJoin(tx, m, now, true)
			if err != nil {
				if err := tx.AppendAudit(AuditEntry{Time: now, Kind: AuditOutreach, DiscordUserID: m.DiscordUserID,
					Detail: fmt.Sprintf("member joined at %s while the bot had no gateway session; not checked, nothing queued: %v",
						m.JoinedAt.UTC().Format(time.RFC3339), err)}); err != nil {
					return err
				}
				continue
			}
			if out == JoinQueued {
				queued++
			}
		}
		return tx.PutMeta(metaJoinsThrough, []byte(c.Started.UTC().Format(time.RFC3339Nano)))
	})
	if err != nil {
		return 0, fmt.Errorf("subrole: join catch-up: %w", err)
	}
	if queued > 0 {
		signal(s.outreachReady)
	}
	return queued, nil
}

// WakeOutreach makes RunOutreach look at its schedule now, cutting short
// even the pause between two messages (a join does not). It never
// blocks. The schedule wakes RunOutreach by itself; this is for a clock
// that jumps (tests).
func (s *Service) WakeOutreach() { signal(s.outreachWake) }

// OutreachRunner configures RunOutreach.
type OutreachRunner struct {
	// Messenger sends the messages. Required.
	Messenger Messenger
	// BroadcasterConnected reports whether the broadcaster's authorization
	// works (so reconcile passes repair drift). RelinkAuto sends relink
	// requests only in months that start while it reports false. Nil means
	// never connected.
	BroadcasterConnected func(context.Context) bool
	// Pace is the least time between two messages, so that a month's
	// relink requests stay clear of Discord's rate limits and spam
	// heuristics. Zero means one second.
	Pace time.Duration
	// MaxAttempts is how often a message is tried before it is given up.
	// Zero means 5.
	MaxAttempts int
	// RetryAfter is the wait after the first failed attempt; it doubles
	// with each further one. Zero means one minute.
	RetryAfter time.Duration
}

// metaRelinkMonth is the meta key of the last month whose relink requests
// were decided ("2006-01" in the policy's zone).
const metaRelinkMonth = "outreach_relink_month"

// monthOf returns t's month in loc as "2006-01".
func monthOf(t time.Time, loc *time.Location) string {
	if loc == nil {
		loc = time.UTC
	}
	return t.In(loc).Format("2006-01")
}

// nextMonthStart returns the start of the month after t's, in loc.
func nextMonthStart(t time.Time, loc *time.Location) time.Time {
	if loc == nil {
		loc = time.UTC
	}
	y, m, _ := t.In(loc).Date()
	return time.Date(y, m+1, 1, 0, 0, 0, 0, loc)
}

// relinkDecision is the pure decision of a month's relink requests.
type relinkDecision int

const (
	relinkNothing  relinkDecision = iota // the month was already decided
	relinkBaseline                       // first run: remember the month, send nothing
	relinkSkip                           // a new month, but the policy says no
	relinkSend                           // a new month: queue a request for every linked member
)

// decideRelink decides a month's relink requests. last is the last decided
// month ("" when none was ever decided), month the current one; connected
// is asked only when the answer depends on it. A month before the last
// decided one (the zone was changed to one behind, or the clock stepped
// back) is not decided again: "2006-01" strings sort by time.
func decideRelink(mode RelinkMode, last, month string, connected func() bool) relinkDecision {
	switch {
	case month <= last:
		return relinkNothing
	case last == "":
		return relinkBaseline
	case mode == RelinkAlways:
		return relinkSend
	case mode == RelinkAuto && !connected():
		return relinkSend
	}
	return relinkSkip
}

// RunOutreach sends due outreach messages and starts each month's relink
// requests until ctx is done. A store failure is logged and retried with
// backoff, never fatal.
func (s *Service) RunOutreach(ctx context.Context, r OutreachRunner) error {
	if r.Pace <= 0 {
		r.Pace = time.Second
	}
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = 5
	}
	if r.RetryAfter <= 0 {
		r.RetryAfter = time.Minute
	}
	backoff := time.Second
	for {
		wait, pause, err := s.outreachStep(ctx, r)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			s.log.Error("outreach: failed, will retry", "err", err, "retry_in", backoff)
			wait, pause, backoff = backoff, 0, min(backoff*2, time.Minute)
		} else {
			backoff = time.Second
		}
		if pause > 0 {
			// The pace or a 429's retry_after: a join (outreachReady)
			// must not cut it short, or a raid of joins is a burst of DMs.
			timer := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				timer.Stop()
				return ctx.Err()
			case <-timer.C:
				wait = max(wait-pause, 0)
			case <-s.outreachWake:
				wait = 0
			}
			timer.Stop()
		}
		timer := time.NewTimer(min(wait, maxSleep))
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		case <-s.outreachReady:
		case <-s.outreachWake:
		}
		timer.Stop()
	}
}

// outreachStep starts the month's relink requests if due, then handles at
// most one due job, and returns how long RunOutreach may wait (woken
// early by a join) and how long of that it must pause before the next
// message whatever happens (the pace, a rate limit).
func (s *Service) outreachStep(ctx context.Context, r OutreachRunner) (wait, pause time.Duration, err error) {
	if err := s.planRelink(ctx, r); err != nil {
		return 0, 0, err
	}
	pause, err = s.sendDueOutreach(ctx, r)
	if err != nil {
		return 0, 0, err
	}
	now := s.now()
	wait = nextMonthStart(now, s.outreach.Location).Sub(now)
	var next OutreachJob
	var ok bool
	err = s.store.View(ctx, func(tx Tx) error {
		var err error
		next, ok, err = tx.NextOutreach()
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("subrole: outreach: %w", err)
	}
	if ok {
		wait = min(wait, max(next.At.Sub(now), 0))
	}
	return max(wait, pause), pause, nil
}

// planRelink decides the current month's relink requests once: on the
// first run it only remembers the month; in each later month it queues a
// request for every linked member if the policy says so.
func (s *Service) planRelink(ctx context.Context, r OutreachRunner) error {
	p := s.outreach
	now := s.now()
	month := monthOf(now, p.Location)
	var last string
	err := s.store.View(ctx, func(tx Tx) error {
		b, err := tx.Meta(metaRelinkMonth)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		last = string(b)
		return err
	})
	if err != nil {
		return fmt.Errorf("subrole: outreach: read relink month: %w", err)
	}
	if month <= last {
		return nil
	}
	connected := false
	if last != "" && p.Relink == RelinkAuto && r.BroadcasterConnected != nil {
		connected = r.BroadcasterConnected(ctx) // may ask Twitch: outside the transaction
	}
	decision := decideRelink(p.Relink, last, month, func() bool { return connected })
	queued := 0
	err = s.store.Update(ctx, func(tx Tx) error {
		queued = 0
		b, err := tx.Meta(metaRelinkMonth)
		if err == nil && month <= string(b) {
			return nil // decided meanwhile
		} else if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if err := tx.PutMeta(metaRelinkMonth, []byte(month)); err != nil {
			return err
		}
		var detail string
		switch decision {
		case relinkBaseline:
			return nil
		case relinkSkip:
			detail = fmt.Sprintf("relink requests for %s not sent: SUBROLE_RELINK=%s", month, p.Relink)
			if p.Relink == RelinkAuto {
				detail += " and the broadcaster is connected, so reconcile passes keep roles right"
			}
		case relinkSend:
			err := tx.ForEachLink(func(l Link) error {
				queued++
				return tx.ScheduleOutreach(OutreachJob{At: now, Kind: OutreachRelink, DiscordUserID: l.DiscordUserID, Month: month})
			})
			if err != nil {
				return err
			}
			detail = fmt.Sprintf("relink requests for %s queued for %d linked members (SUBROLE_RELINK=%s)", month, queued, p.Relink)
			if p.Relink == RelinkAuto {
				detail += ": the broadcaster is not connected, so no reconcile can repair drift"
			}
		}
		return tx.AppendAudit(AuditEntry{Time: now, Kind: AuditOutreach, Detail: detail})
	})
	if err != nil {
		return fmt.Errorf("subrole: outreach: plan relink requests for %s: %w", month, err)
	}
	switch decision {
	case relinkSend:
		s.log.Info("outreach: sending relink requests", "month", month, "members", queued, "mode", p.Relink.String())
	case relinkSkip:
		s.log.Info("outreach: no relink requests this month", "month", month, "mode", p.Relink.String(), "broadcaster_connected", connected)
	}
	return nil
}

// claimOutcome is what claiming a due job found.
type claimOutcome int

const (
	claimSend   claimOutcome = iota // send it
	claimCancel                     // not needed any more (the reason is audited)
)

// decideSend is the pure decision whether a due job is still wanted, and
// why not. linked reports whether the member is linked now; month is the
// current month in the policy's zone. A kind the policy no longer sends
// (turned off since it was queued) is dropped, and so is a relink request
// whose month is over (the new month's request is queued by itself).
func decideSend(p OutreachPolicy, j OutreachJob, rec OutreachRecord, linked bool, month string) (claimOutcome, string) {
	if (j.Kind == OutreachWelcome && !p.Welcome) || (j.Kind == OutreachFollowUp && p.FollowUp <= 0) ||
		(j.Kind == OutreachRelink && p.Relink == RelinkOff) {
		return claimCancel, fmt.Sprintf("%s not sent: turned off since it was queued", j.Kind)
	}
	switch j.Kind {
	case OutreachWelcome:
		if linked {
			return claimCancel, "welcome not sent: the member linked meanwhile"
		}
	case OutreachFollowUp:
		switch {
		case linked:
			return claimCancel, "follow-up not sent: the member linked"
		case !j.Joined.IsZero() && !j.Joined.Equal(rec.Joined):
			// A follow-up longer than the rejoin gap: the rejoin has its own.
			return claimCancel, "follow-up not sent: it was for an earlier join"
		case !rec.DMClosed.IsZero() && !rec.DMClosed.Before(rec.Joined):
			return claimCancel, "follow-up not sent: the member does not accept DMs (the welcome failed with 50007)"
		}
	case OutreachRelink:
		switch {
		case !linked:
			return claimCancel, "relink request not sent: the member is no longer linked"
		case j.Month < month:
			return claimCancel, "relink request for " + j.Month + " not sent: that month is over"
		case rec.RelinkMonth == j.Month:
			return claimCancel, "relink request for " + j.Month + " already sent"
		}
	default:
		return claimCancel, fmt.Sprintf("dropped outreach job of unknown kind %q", j.Kind)
	}
	return claimSend, ""
}

// sendDueOutreach claims the earliest due job in one commit (so it is
// never sent twice), checks the member is still in the guild, sends it,
// and records the outcome: sent, undeliverable (DMs closed), or retried
// later with backoff until MaxAttempts. It returns how long to pause
// before the next message (Pace, or a rate limit's wait) when it sent or
// tried one.
func (s *Service) sendDueOutreach(ctx context.Context, r OutreachRunner) (time.Duration, error) {
	var job OutreachJob
	var outcome claimOutcome
	var found bool
	err := s.store.Update(ctx, func(tx Tx) error {
		found = false
		now := s.now()
		due, err := tx.DueOutreach(now, 1)
		if err != nil || len(due) == 0 {
			return err
		}
		job, found = due[0], true
		if err := tx.DeleteOutreach(job); err != nil {
			return err
		}
		if job.Unreadable != "" {
			outcome = claimCancel
			return tx.AppendAudit(AuditEntry{Time: now, Kind: AuditOutreach, DiscordUserID: job.DiscordUserID,
				Detail: fmt.Sprintf("%s due %s set aside, not sent: the stored job cannot be read: %s",
					job.Kind, job.At.UTC().Format(time.RFC3339), job.Unreadable)})
		}
		_, err = tx.LinkByDiscord(job.DiscordUserID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		linked := err == nil
		rec, err := tx.Outreach(job.DiscordUserID)
		if errors.Is(err, ErrNotFound) {
			rec, err = OutreachRecord{DiscordUserID: job.DiscordUserID}, nil
		}
		if err != nil {
			return err
		}
		var why string
		outcome, why = decideSend(s.outreach, job, rec, linked, monthOf(now, s.outreach.Location))
		if outcome == claimCancel {
			return tx.AppendAudit(AuditEntry{Time: now, Kind: AuditOutreach, DiscordUserID: job.DiscordUserID, Detail: why})
		}
		if job.Kind == OutreachRelink {
			rec.RelinkMonth = job.Month
			if err := tx.PutOutreach(rec); err != nil {
				return err
			}
		}
		return tx.AppendAudit(AuditEntry{Time: now, Kind: AuditOutreach, DiscordUserID: job.DiscordUserID,
			Detail: fmt.Sprintf("%s: sending (attempt %d)", job.Kind, job.Attempts+1)})
	})
	if err != nil {
		return 0, fmt.Errorf("subrole: outreach: claim a due job: %w", err)
	}
	if found && job.Unreadable != "" {
		s.log.Error("outreach: a stored job cannot be read; it was set aside in the audit log and the others go on",
			"discord_user", job.DiscordUserID, "kind", string(job.Kind), "err", job.Unreadable)
	}
	if !found || outcome == claimCancel {
		return 0, nil
	}

	log := s.log.With("discord_user", job.DiscordUserID, "kind", string(job.Kind))
	// A claimed message is finished even when shutdown begins: cut short,
	// it could be delivered without its outcome being recorded.
	sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	member, err := r.Messenger.InGuild(sendCtx, job.DiscordUserID)
	if err == nil && !member {
		return 0, s.recordOutreach(sendCtx, job, outreachResult{detail: "not sent: the member is no longer in the server"})
	}
	if err == nil {
		err = r.Messenger.SendOutreach(sendCtx, job.DiscordUserID, job.Kind)
	}
	ctx = sendCtx
	switch {
	case err == nil:
		log.Info("outreach: sent")
		return r.Pace, s.recordOutreach(ctx, job, outreachResult{detail: "sent"})
	case errors.Is(err, ErrDMClosed):
		log.Info("outreach: the member does not accept DMs; recorded, not retried")
		return r.Pace, s.recordOutreach(ctx, job, outreachResult{dmClosed: true, detail: "not delivered: the member does not accept DMs (50007); not retried"})
	}
	pause := r.Pace
	var ra *RetryAfterError
	if errors.As(err, &ra) {
		pause = max(pause, ra.After)
	}
	job.Attempts++
	if job.Attempts >= r.MaxAttempts {
		log.Error("outreach: giving up on a message after repeated failures", "attempts", job.Attempts, "err", err)
		return pause, s.recordOutreach(ctx, job, outreachResult{detail: fmt.Sprintf("given up after %d attempts: %v", job.Attempts, err)})
	}
	retry := job
	wait := r.RetryAfter << (job.Attempts - 1)
	if ra != nil {
		wait = max(wait, ra.After)
	}
	retry.At = s.now().Add(wait)
	log.Warn("outreach: sending failed, will retry", "attempt", job.Attempts, "retry_in", wait, "err", err)
	return pause, s.recordOutreach(ctx, job, outreachResult{retry: &retry, detail: fmt.Sprintf("attempt %d failed, retry at %s: %v",
		job.Attempts, retry.At.UTC().Format(time.RFC3339), err)})
}

// outreachResult is the outcome of a claimed job.
type outreachResult struct {
	retry    *OutreachJob // the job again, to be retried; nil when done
	dmClosed bool         // the member refuses DMs
	detail   string       // for the audit log
}

// recordOutreach records the outcome of a claimed job: an audit entry,
// a refusal of DMs, and the job again when it is to be retried.
func (s *Service) recordOutreach(ctx context.Context, job OutreachJob, res outreachResult) error {
	retry, closed, detail := res.retry, res.dmClosed, res.detail
	err := s.store.Update(ctx, func(tx Tx) error {
		now := s.now()
		if retry != nil {
			if err := tx.ScheduleOutreach(*retry); err != nil {
				return err
			}
			if job.Kind == OutreachRelink { // not sent yet: let the retry claim the month
				if err := forgetRelinkMonth(tx, job); err != nil {
					return err
				}
			}
		}
		if closed {
			rec, err := tx.Outreach(job.DiscordUserID)
			if errors.Is(err, ErrNotFound) {
				rec, err = OutreachRecord{DiscordUserID: job.DiscordUserID}, nil
			}
			if err != nil {
				return err
			}
			rec.DMClosed = now
			if err := tx.PutOutreach(rec); err != nil {
				return err
			}
		}
		return tx.AppendAudit(AuditEntry{Time: now, Kind: AuditOutreach, DiscordUserID: job.DiscordUserID,
			Detail: fmt.Sprintf("%s: %s", job.Kind, detail)})
	})
	if err != nil {
		return fmt.Errorf("subrole: outreach: record %s to %s: %w", job.Kind, job.DiscordUserID, err)
	}
	return nil
}

// forgetRelinkMonth undoes a relink claim whose message was not sent.
func forgetRelinkMonth(tx Tx, job OutreachJob) error {
	rec, err := tx.Outreach(job.DiscordUserID)
	if err != nil || rec.RelinkMonth != job.Month {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	rec.RelinkMonth = ""
	return tx.PutOutreach(rec)
}
