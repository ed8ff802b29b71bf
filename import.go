package subrole

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ImportOutcome classifies one imported link against the stored links.
type ImportOutcome string

// The outcomes of an imported link.
const (
	ImportNew       ImportOutcome = "new"       // neither side is linked
	ImportUnchanged ImportOutcome = "unchanged" // the same pair is stored
	ImportChanged   ImportOutcome = "changed"   // the Discord member is linked to another Twitch account
	ImportConflict  ImportOutcome = "conflict"  // the Twitch account is linked to another Discord member
)

// ImportOptions says how ImportLinks treats links that differ from the
// stored ones. The zero value applies only new links.
type ImportOptions struct {
	// Replace also applies changed and conflicting links: the member's old
	// link is replaced, and a member whose Twitch account goes to someone
	// else is unlinked and loses their managed roles.
	Replace bool
	// DryRun classifies the links and writes nothing.
	DryRun bool
	// BatchSize is how many links are imported per commit. Zero means 500.
	BatchSize int
}

// ImportItem is one link that is not plainly new or unchanged.
type ImportItem struct {
	Index   int           `json:"index"` // position in the imported list
	Link    Link          `json:"link"`
	Outcome ImportOutcome `json:"outcome"`
	// Previous is the Discord member's stored link to another Twitch account.
	Previous *Link `json:"previous,omitempty"`
	// Owner is the stored link of the Twitch account to another member (conflicts).
	Owner   *Link `json:"owner,omitempty"`
	Applied bool  `json:"applied"` // written (or, in a dry run, would be)
}

// ImportReport is what ImportLinks did or, in a dry run, would do. Each link
// is classified against the state it meets when its batch commits.
type ImportReport struct {
	DryRun    bool `json:"dry_run"`
	Replace   bool `json:"replace"`
	Total     int  `json:"total"`
	New       int  `json:"new"`
	Unchanged int  `json:"unchanged"`
	Changed   int  `json:"changed"`
	Conflicts int  `json:"conflicts"`
	// Applied counts the links written (in a dry run: that would be).
	Applied int `json:"applied"`
	// Unlinked counts members whose link was removed because the import gave
	// their Twitch account to another member (Replace only).
	Unlinked int `json:"unlinked"`
	// RoleJobs counts the role jobs queued: applied links whose Twitch
	// account has stored subscription state or whose member was linked to
	// another account, and unlinked members.
	RoleJobs int `json:"role_jobs"`
	// AwaitingReconcile counts applied links whose Twitch account has no
	// stored subscription state: no role job is queued for them (it would
	// take away roles the member may rightly hold), and the next reconcile
	// learns their subscriptions and queues their roles.
	AwaitingReconcile int `json:"awaiting_reconcile"`
	// Items lists the changed and conflicting links in input order.
	Items []ImportItem `json:"items,omitempty"`
}

// NotApplied returns how many changed or conflicting links were left alone.
func (r ImportReport) NotApplied() int {
	n := 0
	for _, it := range r.Items {
		if !it.Applied {
			n++
		}
	}
	return n
}

func (r *ImportReport) add(p ImportReport) {
	r.New += p.New
	r.Unchanged += p.Unchanged
	r.Changed += p.Changed
	r.Conflicts += p.Conflicts
	r.Applied += p.Applied
	r.Unlinked += p.Unlinked
	r.RoleJobs += p.RoleJobs
	r.AwaitingReconcile += p.AwaitingReconcile
	r.Items = append(r.Items, p.Items...)
}

// ImportLinks brings in links made elsewhere (another bot, a spreadsheet, an
// export of another subrole). Each link is new, unchanged, changed or a
// conflict (see ImportOutcome). New links are written; changed and
// conflicting ones only with opts.Replace; unchanged ones are left alone, so
// importing the same links twice changes nothing the second time.
//
// A written link commits with its audit entry and its role job, like Link,
// in batches of opts.BatchSize links. A link whose Twitch account has no
// stored subscription state gets no role job; the next reconcile queues it.
//
// links must hold non-empty ids, each Discord and each Twitch id at most
// once; otherwise nothing is written. A zero Linked time means now. When a
// batch fails, the batches before it stay written and the error says how
// many links that was.
func (s *Service) ImportLinks(ctx context.Context, links []Link, opts ImportOptions) (ImportReport, error) {
	discord, twitch := make(map[string]int, len(links)), make(map[string]int, len(links))
	for i, l := range links {
		if l.DiscordUserID == "" || l.TwitchUserID == "" {
			return ImportReport{}, fmt.Errorf("subrole: import links: link %d needs a Discord and a Twitch user id", i)
		}
		if j, ok := discord[l.DiscordUserID]; ok {
			return ImportReport{}, fmt.Errorf("subrole: import links: discord user %s appears twice (links %d and %d)", l.DiscordUserID, j, i)
		}
		if j, ok := twitch[l.TwitchUserID]; ok {
			return ImportReport{}, fmt.Errorf("subrole: import links: twitch user %s appears twice (links %d and %d)", l.TwitchUserID, j, i)
		}
		discord[l.DiscordUserID], twitch[l.TwitchUserID] = i, i
	}
	size := opts.BatchSize
	if size <= 0 {
		size = 500
	}
	rep := ImportReport{DryRun: opts.DryRun, Replace: opts.Replace, Total: len(links)}
	var dry *dryLinks
	if opts.DryRun {
		dry = &dryLinks{discord: map[string]*Link{}, twitch: map[string]*Link{}}
	}
	for start := 0; start < len(links); start += size {
		batch := links[start:min(start+size, len(links))]
		var part ImportReport
		fn := func(tx Tx) error {
			part = ImportReport{}
			now := s.now()
			for i, l := range batch {
				if err := s.importLink(tx, dry, start+i, l, opts, now, &part); err != nil {
					return fmt.Errorf("discord user %s: %w", l.DiscordUserID, err)
				}
			}
			return nil
		}
		var err error
		if opts.DryRun {
			err = s.store.View(ctx, fn)
		} else {
			err = s.store.Update(ctx, fn)
		}
		if err != nil {
			if !opts.DryRun && rep.Applied > 0 {
				err = fmt.Errorf("%w (the links before number %d were imported: %d written)", err, start, rep.Applied)
			}
			if rep.RoleJobs > 0 {
				signal(s.outboxReady)
			}
			return rep, fmt.Errorf("subrole: import links: %w", err)
		}
		rep.add(part)
	}
	if rep.RoleJobs > 0 {
		signal(s.outboxReady)
	}
	if !opts.DryRun {
		s.log.Info("core: imported links", "total", rep.Total, "new", rep.New, "unchanged", rep.Unchanged,
			"changed", rep.Changed, "conflicts", rep.Conflicts, "applied", rep.Applied, "unlinked", rep.Unlinked,
			"role_jobs", rep.RoleJobs, "awaiting_reconcile", rep.AwaitingReconcile)
	}
	return rep, nil
}

// dryLinks is what a dry run would have written so far (nil: unlinked), so
// that each link meets the links before it as the import would.
type dryLinks struct {
	discord, twitch map[string]*Link
}

// link looks up a link by Discord or Twitch id, first in what the dry run
// would have written.
func (d *dryLinks) link(tx Tx, byDiscord bool, id string) (Link, bool, error) {
	m, lookup := map[string]*Link(nil), tx.LinkByTwitch
	if byDiscord {
		lookup = tx.LinkByDiscord
	}
	if d != nil {
		m = d.twitch
		if byDiscord {
			m = d.discord
		}
	}
	if l, ok := m[id]; ok {
		if l == nil {
			return Link{}, false, nil
		}
		return *l, true, nil
	}
	return lookupLink(lookup(id))
}

// importLink classifies one link against the state in tx (and, in a dry
// run, what dry says the links before it would have written) and, unless
// this is a dry run, applies it when the options allow.
func (s *Service) importLink(tx Tx, dry *dryLinks, index int, l Link, opts ImportOptions, now time.Time, rep *ImportReport) error {
	cur, hasCur, err := dry.link(tx, true, l.DiscordUserID)
	if err != nil {
		return err
	}
	owner, hasOwner, err := dry.link(tx, false, l.TwitchUserID)
	if err != nil {
		return err
	}
	item := ImportItem{Index: index, Link: l}
	switch {
	case hasCur && cur.TwitchUserID == l.TwitchUserID:
		rep.Unchanged++
		return nil
	case hasOwner: // owner is another member: the same one would be unchanged
		item.Outcome, item.Owner = ImportConflict, &owner
		rep.Conflicts++
	case hasCur:
		item.Outcome = ImportChanged
		rep.Changed++
	default:
		item.Outcome = ImportNew
		rep.New++
	}
	if hasCur {
		item.Previous = &cur
	}
	apply := item.Outcome == ImportNew || opts.Replace
	if item.Outcome != ImportNew {
		item.Applied = apply
		rep.Items = append(rep.Items, item)
	}
	if !apply {
		return nil
	}
	rep.Applied++
	sub, err := tx.Subscription(l.TwitchUserID)
	known := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	// A member moving from another account must lose that account's roles
	// even before this one's state is known.
	queue := known || hasCur
	if !queue {
		rep.AwaitingReconcile++
	}
	if opts.DryRun {
		if hasOwner {
			dry.discord[owner.DiscordUserID] = nil
			rep.Unlinked++
			rep.RoleJobs++
		}
		if hasCur {
			dry.twitch[cur.TwitchUserID] = nil
		}
		w := l // as it would be written
		if w.Linked.IsZero() {
			w.Linked = now
		}
		w.TwitchLogin = firstNonEmpty(w.TwitchLogin, sub.TwitchLogin)
		dry.discord[l.DiscordUserID], dry.twitch[l.TwitchUserID] = &w, &w
		if queue {
			rep.RoleJobs++
		}
		return nil
	}

	name := firstNonEmpty(l.TwitchLogin, sub.TwitchLogin, l.TwitchUserID)
	if hasOwner {
		if err := s.unlink(tx, owner, "", fmt.Sprintf("an import linked Twitch %s to Discord member %s", name, l.DiscordUserID)); err != nil {
			return err
		}
		if err := s.queueRoles(tx, owner, nil, "", now, "subrole: unlinked (an import gave Twitch "+name+" to another member)"); err != nil {
			return err
		}
		rep.Unlinked++
		rep.RoleJobs++
	}
	if l.Linked.IsZero() {
		l.Linked = now
	}
	l.TwitchLogin = firstNonEmpty(l.TwitchLogin, sub.TwitchLogin)
	if err := tx.PutLink(l); err != nil {
		return err
	}
	before := "unlinked"
	if hasCur {
		before = "linked to " + firstNonEmpty(cur.TwitchLogin, cur.TwitchUserID)
	}
	if err := tx.AppendAudit(AuditEntry{Time: now, Kind: AuditLink, TwitchUserID: l.TwitchUserID,
		DiscordUserID: l.DiscordUserID, Before: before, After: "linked to " + name,
		Detail: "imported"}); err != nil {
		return err
	}
	if !queue {
		return nil
	}
	if !known {
		sub = Subscription{TwitchUserID: l.TwitchUserID}
	}
	desired := DesiredRoles(s.policy, Member{Link: l, Sub: sub}, now)
	if err := s.queueRoles(tx, l, desired, "", now,
		fmt.Sprintf("subrole: imported link to Twitch %s (%s)", name, describe(sub))); err != nil {
		return err
	}
	rep.RoleJobs++
	return nil
}

// lookupLink turns a link lookup into (link, found, error).
func lookupLink(l Link, err error) (Link, bool, error) {
	if errors.Is(err, ErrNotFound) {
		return Link{}, false, nil
	}
	return l, err == nil, err
}

// Links returns every link, ordered by Discord user id, read in one
// transaction.
func (s *Service) Links(ctx context.Context) ([]Link, error) {
	var links []Link
	err := s.store.View(ctx, func(tx Tx) error {
		links = links[:0]
		return tx.ForEachLink(func(l Link) error {
			links = append(links, l)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("subrole: read links: %w", err)
	}
	return links, nil
}
