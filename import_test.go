package subrole_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/subrole/subrole"
)

// links returns every stored link as "discord>twitch" pairs.
func (f *fixture) links() []string {
	f.t.Helper()
	all, err := f.svc.Links(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, l := range all {
		out = append(out, l.DiscordUserID+">"+l.TwitchUserID)
	}
	return out
}

func (f *fixture) importLinks(opts subrole.ImportOptions, links ...subrole.Link) subrole.ImportReport {
	f.t.Helper()
	rep, err := f.svc.ImportLinks(context.Background(), links, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	return rep
}

func (f *fixture) auditCount() int {
	f.t.Helper()
	var n int
	err := f.db.View(context.Background(), func(tx subrole.Tx) error {
		a, err := tx.Audit(0, -1)
		n = len(a)
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

func jobFor(t *testing.T, jobs []subrole.RoleJob, discordID string) subrole.RoleJob {
	t.Helper()
	for _, j := range jobs {
		if j.DiscordUserID == discordID {
			return j
		}
	}
	t.Fatalf("no job for %s in %+v", discordID, jobs)
	return subrole.RoleJob{}
}

func TestImportLinks(t *testing.T) {
	f := newFixture(t, policy)
	// t1 subscribes at tier 2 before anyone links it; t2's state is unknown.
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "t1", UserLogin: "alice", Tier: subrole.Tier2})
	linked := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	in := []subrole.Link{
		{DiscordUserID: "d1", TwitchUserID: "t1", Linked: linked},
		{DiscordUserID: "d2", TwitchUserID: "t2", TwitchLogin: "bob"},
	}

	dry := f.importLinks(subrole.ImportOptions{DryRun: true}, in...)
	if dry.New != 2 || dry.Applied != 2 || dry.RoleJobs != 1 || dry.AwaitingReconcile != 1 || !dry.DryRun {
		t.Fatalf("dry run %+v", dry)
	}
	if got := f.links(); len(got) != 0 {
		t.Fatalf("dry run stored %v", got)
	}
	if jobs := f.jobs(); len(jobs) != 0 {
		t.Fatalf("dry run queued %+v", jobs)
	}
	audit := f.auditCount()

	rep := f.importLinks(subrole.ImportOptions{BatchSize: 1}, in...)
	if rep.New != 2 || rep.Applied != 2 || rep.RoleJobs != 1 || rep.AwaitingReconcile != 1 || len(rep.Items) != 0 {
		t.Fatalf("import %+v", rep)
	}
	if got := f.links(); !slices.Equal(got, []string{"d1>t1", "d2>t2"}) {
		t.Fatalf("links %v", got)
	}
	// Only the member whose subscription is known gets a job: a job for d2
	// would take away roles the reconcile may find are theirs.
	wantJob(t, f.jobs(), "d1", roleLinked, roleT2)
	if n := f.auditCount() - audit; n != 2 {
		t.Fatalf("%d audit entries, want 2", n)
	}
	all, _ := f.svc.Links(context.Background())
	if !all[0].Linked.Equal(linked) || all[0].TwitchLogin != "alice" || !all[1].Linked.Equal(f.clock.Now()) {
		t.Fatalf("stored %+v (linked time kept, login from the subscription state, zero time is now)", all)
	}

	// The same import again is a no-op: nothing written, no job.
	audit = f.auditCount()
	again := f.importLinks(subrole.ImportOptions{}, in...)
	if again.Unchanged != 2 || again.Applied != 0 || again.RoleJobs != 0 {
		t.Fatalf("second import %+v", again)
	}
	if jobs := f.jobs(); len(jobs) != 0 {
		t.Fatalf("second import queued %+v", jobs)
	}
	if n := f.auditCount(); n != audit {
		t.Fatalf("second import wrote %d audit entries", n-audit)
	}
}

func TestImportChangesAndConflicts(t *testing.T) {
	f := newFixture(t, policy)
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "t1", Tier: subrole.Tier1})
	f.send(subrole.Event{Type: subrole.EventSubscribe, UserID: "t3", Tier: subrole.Tier3})
	f.link("d1", "t1")
	f.link("d2", "t2")
	f.jobs()
	in := []subrole.Link{
		{DiscordUserID: "d1", TwitchUserID: "t3"}, // changed: d1 moves from t1 to t3
		{DiscordUserID: "d9", TwitchUserID: "t2"}, // conflict: t2 belongs to d2
		{DiscordUserID: "d5", TwitchUserID: "t5"}, // new
	}

	rep := f.importLinks(subrole.ImportOptions{}, in...)
	if rep.New != 1 || rep.Changed != 1 || rep.Conflicts != 1 || rep.Applied != 1 || rep.NotApplied() != 2 {
		t.Fatalf("without -replace %+v", rep)
	}
	if len(rep.Items) != 2 || rep.Items[0].Index != 0 || rep.Items[0].Outcome != subrole.ImportChanged || rep.Items[0].Previous.TwitchUserID != "t1" ||
		rep.Items[1].Index != 1 || rep.Items[1].Outcome != subrole.ImportConflict || rep.Items[1].Owner.DiscordUserID != "d2" || rep.Items[1].Applied {
		t.Fatalf("items %+v", rep.Items)
	}
	if got := f.links(); !slices.Equal(got, []string{"d1>t1", "d2>t2", "d5>t5"}) {
		t.Fatalf("links %v", got)
	}
	if jobs := f.jobs(); len(jobs) != 0 {
		t.Fatalf("new link without known state queued %+v", jobs)
	}

	rep = f.importLinks(subrole.ImportOptions{Replace: true}, in...)
	if rep.Unchanged != 1 || rep.Changed != 1 || rep.Conflicts != 1 || rep.Applied != 2 || rep.Unlinked != 1 || rep.RoleJobs != 2 ||
		rep.AwaitingReconcile != 1 || rep.NotApplied() != 0 {
		t.Fatalf("with -replace %+v", rep)
	}
	if got := f.links(); !slices.Equal(got, []string{"d1>t3", "d5>t5", "d9>t2"}) {
		t.Fatalf("links %v", got)
	}
	jobs := f.jobs()
	if len(jobs) != 2 {
		t.Fatalf("jobs %+v", jobs)
	}
	if j := jobFor(t, jobs, "d1"); !slices.Equal(j.Desired, []string{roleLinked, roleT3}) {
		t.Fatalf("d1 moved to a tier 3 account: %v", j.Desired)
	}
	if j := jobFor(t, jobs, "d2"); len(j.Desired) != 0 {
		t.Fatalf("d2 lost its account and keeps %v", j.Desired)
	}
	// d9 was not linked and t2's state is unknown: the reconcile gives its roles.
}

func TestImportRefusesBadLists(t *testing.T) {
	f := newFixture(t, policy)
	for name, in := range map[string][]subrole.Link{
		"empty id":          {{DiscordUserID: "d1"}},
		"discord id twice":  {{DiscordUserID: "d1", TwitchUserID: "t1"}, {DiscordUserID: "d1", TwitchUserID: "t2"}},
		"twitch id twice":   {{DiscordUserID: "d1", TwitchUserID: "t1"}, {DiscordUserID: "d2", TwitchUserID: "t1"}},
		"late duplicate":    append(manyLinks(600), subrole.Link{DiscordUserID: "d1", TwitchUserID: "x"}),
		"late empty twitch": append(manyLinks(600), subrole.Link{DiscordUserID: "x"}),
	} {
		if _, err := f.svc.ImportLinks(context.Background(), in, subrole.ImportOptions{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if got := f.links(); len(got) != 0 {
		t.Fatalf("a refused list stored %v", got)
	}
}

func manyLinks(n int) []subrole.Link {
	out := make([]subrole.Link, n)
	for i := range out {
		out[i] = subrole.Link{DiscordUserID: fmt.Sprintf("d%d", i+1), TwitchUserID: fmt.Sprintf("t%d", i+1)}
	}
	return out
}

func TestImportBatches(t *testing.T) {
	f := newFixture(t, policy)
	in := manyLinks(1234)
	rep := f.importLinks(subrole.ImportOptions{BatchSize: 100}, in...)
	if rep.New != 1234 || rep.Applied != 1234 || rep.AwaitingReconcile != 1234 {
		t.Fatalf("import %+v", rep)
	}
	if got := f.links(); len(got) != 1234 {
		t.Fatalf("%d links stored", len(got))
	}
	if rep := f.importLinks(subrole.ImportOptions{}, in...); rep.Unchanged != 1234 {
		t.Fatalf("again %+v", rep)
	}
}

// TestImportDryRunSeesEarlierLinks: a dry run reports what the import would
// do, where each link meets the links before it in the list already
// applied. Two members swapping Twitch accounts with Replace is one conflict
// that frees an account and then a new link, not two conflicts.
func TestImportDryRunSeesEarlierLinks(t *testing.T) {
	f := newFixture(t, policy)
	f.link("d1", "t1")
	f.link("d2", "t2")
	f.jobs()
	in := []subrole.Link{
		{DiscordUserID: "d1", TwitchUserID: "t2"}, // conflict: t2 is d2's; d2 is unlinked
		{DiscordUserID: "d2", TwitchUserID: "t1"}, // then d2 is unlinked and t1 free: new
	}
	dry := f.importLinks(subrole.ImportOptions{Replace: true, DryRun: true}, in...)
	real := f.importLinks(subrole.ImportOptions{Replace: true}, in...)
	dry.DryRun = false
	d, _ := json.Marshal(dry)
	r, _ := json.Marshal(real)
	if string(d) != string(r) {
		t.Fatalf("the dry run said\n%s\nthe import did\n%s", d, r)
	}
	if got := f.links(); !slices.Equal(got, []string{"d1>t2", "d2>t1"}) {
		t.Fatalf("links %v", got)
	}
}
