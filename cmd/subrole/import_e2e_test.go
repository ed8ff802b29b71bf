package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/store"
)

// The end-to-end tests of "subrole import" and "subrole export", through
// run() against a real database file, the fake Discord and the admin socket.

// writeFile writes a file in a temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// storedLinks returns the links in the stopped service's file as
// "discord>twitch" pairs, and how many role jobs wait in its outbox.
func (w *world) storedLinks(t *testing.T) (links []string, jobs int) {
	t.Helper()
	w.withDB(t, func(db *store.Store) {
		err := db.View(context.Background(), func(tx subrole.Tx) error {
			j, err := tx.RoleJobs(0, -1)
			jobs = len(j)
			if err != nil {
				return err
			}
			return tx.ForEachLink(func(l subrole.Link) error {
				links = append(links, l.DiscordUserID+">"+l.TwitchUserID)
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	return links, jobs
}

// memberCalls counts the fake Discord's calls about one member.
func (w *world) memberCalls(member string) int {
	n := 0
	for _, c := range w.discord.Calls() {
		if strings.Contains(c.Path, "/members/"+member) {
			n++
		}
	}
	return n
}

// importReport runs "subrole import -json ARGS..." and decodes its report.
func (w *world) importReport(t *testing.T, args ...string) subrole.ImportReport {
	t.Helper()
	out, err := w.cli(t, append([]string{"import", "-json"}, args...)...)
	if err != nil {
		t.Fatalf("import %v: %v\n%s", args, err, out)
	}
	var ans struct {
		Report subrole.ImportReport `json:"report"`
	}
	// The ignored-columns note goes to stderr, which cli merges: decode from the JSON's start.
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &ans); err != nil {
		t.Fatalf("import -json: %v\n%s", err, out)
	}
	return ans.Report
}

// TestImportEndToEnd: a spreadsheet is checked, planned and imported into
// the stopped service's file; the service then gives roles to the members
// whose subscription is known; the same file again, through the running
// service, changes nothing.
func TestImportEndToEnd(t *testing.T) {
	w := newTestWorld(t)
	w.useAdminSocket(t)
	w.withStore(t, func(tx subrole.Tx) error { // known subscriptions, from events before the move
		if err := storeSub(tx, 1, subrole.Tier1, false, false); err != nil {
			return err
		}
		return storeSub(tx, 2, subrole.Tier3, true, false)
	})
	for i := 1; i <= 3; i++ {
		w.addMember(discordID(i), fmt.Sprintf("viewer%d", i))
	}
	// As Excel saves it: a byte order mark, CRLF, quotes, an extra column.
	sheet := writeFile(t, "links.csv", "\ufeffDiscord ID,Twitch ID,Twitch Name,Note\r\n"+
		fmt.Sprintf("%s,%s,Viewer1,\"moved from NeiBot, 2024\"\r\n", discordID(1), twitchID(1))+
		fmt.Sprintf("\"%s\",%s,viewer2,\r\n", discordID(2), twitchID(2))+
		fmt.Sprintf("%s,%s,,\r\n", discordID(3), twitchID(3)))

	// A file with a bad row imports nothing, and says where and what.
	bad := writeFile(t, "bad.csv", "discord_user_id,twitch_user_id\n"+discordID(1)+","+twitchID(1)+"\n12345,"+twitchID(2)+"\n"+discordID(3)+","+twitchID(1)+"\n")
	out, err := w.cli(t, "import", bad)
	if err == nil || !strings.Contains(err.Error(), "line 3, discord_user_id: \"12345\" has 5 digits") ||
		!strings.Contains(err.Error(), "line 4, twitch_user_id: "+twitchID(1)+" appears again (first at line 2)") || !strings.Contains(err.Error(), "nothing was imported") {
		t.Fatalf("bad file: %v\n%s", err, out)
	}

	// A dry run plans and writes nothing.
	out, err = w.cli(t, "import", sheet, "-dry-run")
	if err != nil || !strings.Contains(out, "     3 new") || !strings.Contains(out, "dry run, nothing written: would import 3 links; would queue role updates for 2 members") ||
		!strings.Contains(out, "1 of these links are to Twitch accounts with no known subscription state") || !strings.Contains(out, "ignored unknown columns: Note") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if links, jobs := w.storedLinks(t); len(links) != 0 || jobs != 0 {
		t.Fatalf("dry run stored %v and %d jobs", links, jobs)
	}

	// The import, into the file of the stopped service.
	out, err = w.cli(t, "import", sheet)
	if err != nil || !strings.Contains(out, "into the stopped service's file") || !strings.Contains(out, "imported 3 links; queued role updates for 2 members") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	links, jobs := w.storedLinks(t)
	if !slices.Equal(links, []string{discordID(1) + ">" + twitchID(1), discordID(2) + ">" + twitchID(2), discordID(3) + ">" + twitchID(3)}) || jobs != 2 {
		t.Fatalf("stored %v and %d jobs", links, jobs)
	}

	// The service starts and applies the queued roles.
	in := w.start(t)
	w.waitRoles(t, discordID(1), worldRoleLinked, worldRoleTier1, worldRoleSub)
	w.waitRoles(t, discordID(2), worldRoleLinked, worldRoleTier3, worldRoleSub)
	if n := w.memberCalls(discordID(3)); n != 0 {
		t.Fatalf("member 3, whose subscription is unknown, got %d calls before a reconcile", n)
	}

	// The same file again, through the running service: nothing changes.
	time.Sleep(50 * time.Millisecond) // let the applier finish
	before := len(w.discord.Calls())
	rep := w.importReport(t, sheet)
	if rep.Unchanged != 3 || rep.Applied != 0 || rep.RoleJobs != 0 {
		t.Fatalf("second import %+v", rep)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(w.discord.Calls()) - before; n != 0 {
		t.Fatalf("second import made %d Discord calls", n)
	}
	// Standard input, sniffed as JSON, through the socket.
	var stdout syncBuffer
	err = importCmd(context.Background(), []string{"-dry-run", "-"}, w.getenv,
		strings.NewReader(`{"links": [{"discord_user_id": "`+discordID(1)+`", "twitch_user_id": "`+twitchID(1)+`"}]}`), &stdout, &stdout)
	if err != nil || !strings.Contains(stdout.String(), "-: 1 links (json), into the running service") || !strings.Contains(stdout.String(), "     1 unchanged") {
		t.Fatalf("stdin: %v\n%s", err, stdout.String())
	}
	in.stop(t)
	if strings.Contains(in.logs.String(), "level=ERROR") {
		t.Fatalf("errors logged:\n%s", in.logs)
	}
}

// TestImportConflictsEndToEnd: through the running service, changed links
// and conflicts are listed and left alone, and applied with -replace.
func TestImportConflictsEndToEnd(t *testing.T) {
	w := newTestWorld(t)
	w.useAdminSocket(t)
	w.linkMembers(t, 2) // viewer 1 and 2, with the linked role
	w.withStore(t, func(tx subrole.Tx) error { return storeSub(tx, 3, subrole.Tier2, false, false) })
	w.addMember(discordID(9), "newcomer")
	w.addMember(discordID(4), "viewer4")
	w.start(t)

	file := writeFile(t, "links.json", fmt.Sprintf(`[
		{"discord_user_id": %q, "twitch_user_id": %q, "twitch_login": "viewer3"},
		{"discord_user_id": %q, "twitch_user_id": %q},
		{"discord_user_id": %q, "twitch_user_id": %q}
	]`, discordID(1), twitchID(3), discordID(9), twitchID(2), discordID(4), twitchID(4)))
	out, err := w.cli(t, "import", file)
	if err != nil || !strings.Contains(out, "1 new") || !strings.Contains(out, "1 changed") || !strings.Contains(out, "1 conflicts") ||
		!strings.Contains(out, "not applied (2; rerun with -replace") ||
		!strings.Contains(out, fmt.Sprintf("[0]: Discord %s -> Twitch %s (viewer3): the member is linked to Twitch %s", discordID(1), twitchID(3), twitchID(1))) ||
		!strings.Contains(out, fmt.Sprintf("[1]: Discord %s -> Twitch %s: Twitch %s is linked to Discord %s", discordID(9), twitchID(2), twitchID(2), discordID(2))) {
		t.Fatalf("import without -replace: %v\n%s", err, out)
	}
	// Both old links stand; the member whose subscription is unknown got no call.
	w.waitRoles(t, discordID(1), worldRoleLinked)
	w.waitRoles(t, discordID(2), worldRoleLinked)
	if n := w.memberCalls(discordID(4)); n != 0 {
		t.Fatalf("member 4 got %d calls", n)
	}

	rep := w.importReport(t, "-replace", file)
	if rep.Unchanged != 1 || rep.Changed != 1 || rep.Conflicts != 1 || rep.Applied != 2 || rep.Unlinked != 1 || rep.RoleJobs != 2 {
		t.Fatalf("import -replace %+v", rep)
	}
	w.waitRoles(t, discordID(1), worldRoleLinked, worldRoleTier2, worldRoleSub) // moved to a tier 2 account
	w.waitRoles(t, discordID(2))                                                // lost their account to member 9

	out, err = w.cli(t, "export", "-format", "json")
	var got linksAnswer
	if err != nil || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	var pairs []string
	for _, l := range got.Links {
		pairs = append(pairs, l.DiscordUserID+">"+l.TwitchUserID)
	}
	if want := []string{discordID(1) + ">" + twitchID(3), discordID(4) + ">" + twitchID(4), discordID(9) + ">" + twitchID(2)}; !slices.Equal(pairs, want) {
		t.Fatalf("links after -replace %v, want %v", pairs, want)
	}
}

// TestExportImportRoundTrip: the links exported from a running service,
// imported into another machine's file, export the same bytes.
func TestExportImportRoundTrip(t *testing.T) {
	w := newTestWorld(t)
	w.useAdminSocket(t)
	w.linkMembers(t, 3)
	w.withStore(t, func(tx subrole.Tx) error {
		return tx.PutLink(subrole.Link{DiscordUserID: discordID(7), TwitchUserID: twitchID(7), TwitchLogin: "seven",
			Linked: time.Date(2023, 3, 4, 5, 6, 7, 890, time.UTC)})
	})
	in := w.start(t)
	for _, format := range []string{"csv", "json"} {
		backup := filepath.Join(t.TempDir(), "links."+format)
		if out, err := w.cli(t, "export", backup); err != nil || !strings.Contains(out, "exported 4 links to "+backup+" ("+format+")") {
			t.Fatalf("export: %v\n%s", err, out)
		}
		// Another machine: a new file, the service stopped.
		other := newWorld(filepath.Join(t.TempDir(), "other.db"))
		t.Cleanup(other.close)
		other.withDB(t, func(*store.Store) {}) // the file exists, as after a first start
		if out, err := other.cli(t, "import", backup); err != nil || !strings.Contains(out, "imported 4 links") {
			t.Fatalf("import on the other machine: %v\n%s", err, out)
		}
		again, err := other.cli(t, "export", "-format", format, "-")
		if err != nil {
			t.Fatal(err)
		}
		orig, _ := os.ReadFile(backup)
		if !bytes.Equal(orig, []byte(again)) {
			t.Fatalf("%s round trip differs:\n%s\n---\n%s", format, orig, again)
		}
	}
	in.stop(t)

	// The file is held by a running service whose admin socket is off: a
	// clear error, not a wait.
	w.env["SUBROLE_ADMIN_SOCKET"] = "off"
	w.start(t)
	_, err := w.cli(t, "export")
	if err == nil || !strings.Contains(err.Error(), "a running service holds the file, and SUBROLE_ADMIN_SOCKET is off") {
		t.Fatalf("export from a held file: %v", err)
	}
}
