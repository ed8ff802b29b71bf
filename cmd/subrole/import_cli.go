package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/store"
)

// "subrole import" and "subrole export" move links in and out, in the link
// file format (linkfile.go). Like "subrole ban", they go through the running
// service's admin socket when it answers (POST /import, GET /links), and
// otherwise open the database file themselves.

const importUsage = `usage:
  subrole import [-dry-run] [-replace] [-format csv|json] [-json] FILE|-

Imports links (Discord member <-> Twitch account) from another bot or a
spreadsheet: CSV with a header row, or JSON (an array of objects, or an object
with a "links" array). Columns: discord_user_id and twitch_user_id (required),
twitch_login and linked (RFC 3339, default now) (optional). The format comes
from -format, the file's extension, or the content.

Every row is checked first; any problem imports nothing. Then each link is new,
unchanged, changed (the member is linked to another Twitch account) or a
conflict (the Twitch account is linked to another member). New links are
written; changed ones and conflicts only with -replace. Members whose
subscription state is known get their roles now; the others when the next
reconcile learns their subscriptions.

  -dry-run   print the plan and change nothing
  -replace   also apply changed links and conflicts (a member who loses their
             Twitch account to another member is unlinked and loses the roles)
  -format    csv or json (default: from the extension or the content)
  -json      print the report as JSON

Works while the service runs (admin socket) and while it is stopped (then
SUBROLE_DATA is written directly, and the service's configuration is needed to
compute roles).
`

const exportUsage = `usage:
  subrole export [-format csv|json] [FILE|-]

Writes every link in the format "subrole import" reads (default: CSV to
standard output; the format follows FILE's extension). Works while the service
runs (admin socket) and while it is stopped.
`

// parseInterspersed parses flags that may come before or after the
// positional arguments ("subrole import links.csv -dry-run").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// importCmd runs "subrole import".
func importCmd(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, importUsage) }
	dryRun := fs.Bool("dry-run", false, "print the plan and change nothing")
	replace := fs.Bool("replace", false, "also apply changed links and conflicts")
	formatFlag := fs.String("format", "", "csv or json")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(pos) == 1 && pos[0] == "help" {
		fmt.Fprint(stdout, importUsage)
		return nil
	}
	if len(pos) != 1 {
		return fmt.Errorf("import: give one file, or - for standard input\n%s", importUsage)
	}
	format, err := parseFormat(*formatFlag)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	name := pos[0]
	in := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		in = f
		if format == "" {
			format = formatOf(name)
		}
	}
	list, err := parseLinks(in, format)
	if err != nil {
		return fmt.Errorf("import %s: %w; nothing was imported", name, err)
	}
	if len(list.Ignored) > 0 {
		fmt.Fprintf(stderr, "import %s: ignored unknown columns: %s\n", name, strings.Join(list.Ignored, ", "))
	}
	target, err := openLinks(ctx, getenv, "import", !*dryRun)
	if err != nil {
		return err
	}
	defer target.close()
	rep, err := target.importLinks(ctx, list.Links, subrole.ImportOptions{DryRun: *dryRun, Replace: *replace})
	if err != nil {
		return fmt.Errorf("import %s: %w", name, err)
	}
	if *asJSON {
		out := struct {
			File    string               `json:"file"`
			Format  linkFormat           `json:"format"`
			Target  string               `json:"target"`
			Ignored []string             `json:"ignored_columns,omitempty"`
			Report  subrole.ImportReport `json:"report"`
			Where   []string             `json:"where,omitempty"` // the place in the file of each of report.items
		}{File: name, Format: list.Format, Target: target.String(), Ignored: list.Ignored, Report: rep}
		for _, it := range rep.Items {
			out.Where = append(out.Where, list.Where[it.Index])
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	printImport(stdout, name, list, target.String(), rep)
	return nil
}

// printImport writes the human summary of an import or a dry run.
func printImport(w io.Writer, name string, list linkList, target string, rep subrole.ImportReport) {
	fmt.Fprintf(w, "%s: %d links (%s), into %s\n", name, rep.Total, list.Format, target)
	fmt.Fprintf(w, "  %6d new\n", rep.New)
	fmt.Fprintf(w, "  %6d unchanged\n", rep.Unchanged)
	fmt.Fprintf(w, "  %6d changed: the Discord member is linked to another Twitch account\n", rep.Changed)
	fmt.Fprintf(w, "  %6d conflicts: the Twitch account is linked to another Discord member\n", rep.Conflicts)
	verb, jobs, unlinked := "imported", "queued role updates for", "unlinked"
	if rep.DryRun {
		verb, jobs, unlinked = "dry run, nothing written: would import", "would queue role updates for", "would unlink"
	}
	fmt.Fprintf(w, "%s %d links; %s %d members", verb, rep.Applied, jobs, rep.RoleJobs)
	if rep.Unlinked > 0 {
		fmt.Fprintf(w, "; %s %d members whose Twitch account goes to another member", unlinked, rep.Unlinked)
	}
	fmt.Fprintln(w)
	if rep.AwaitingReconcile > 0 {
		fmt.Fprintf(w, "%d of these links are to Twitch accounts with no known subscription state: those members get\n"+
			"their roles when the next reconcile learns their subscriptions (every SUBROLE_RECONCILE_INTERVAL;\n"+
			"\"subrole reconcile\" runs one now)\n", rep.AwaitingReconcile)
	}
	if n := rep.NotApplied(); n > 0 {
		fmt.Fprintf(w, "not applied (%d; rerun with -replace to apply them):\n", n)
	} else if len(rep.Items) > 0 {
		fmt.Fprintln(w, "replaced:")
	}
	const maxShown = 50
	for i, it := range rep.Items {
		if i == maxShown {
			fmt.Fprintf(w, "  ... and %d more (-json lists all)\n", len(rep.Items)-maxShown)
			break
		}
		fmt.Fprintf(w, "  %s: Discord %s -> Twitch %s: ", list.Where[it.Index], it.Link.DiscordUserID, linkName(it.Link))
		switch it.Outcome {
		case subrole.ImportConflict:
			fmt.Fprintf(w, "Twitch %s is linked to Discord %s", linkName(*it.Owner), it.Owner.DiscordUserID)
			if it.Previous != nil {
				fmt.Fprintf(w, ", and the member to Twitch %s", linkName(*it.Previous))
			}
		case subrole.ImportChanged:
			fmt.Fprintf(w, "the member is linked to Twitch %s", linkName(*it.Previous))
		}
		fmt.Fprintln(w)
	}
}

// linkName names a link's Twitch account: "id (login)" or "id".
func linkName(l subrole.Link) string {
	if l.TwitchLogin != "" {
		return l.TwitchUserID + " (" + l.TwitchLogin + ")"
	}
	return l.TwitchUserID
}

// exportCmd runs "subrole export".
func exportCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, exportUsage) }
	formatFlag := fs.String("format", "", "csv or json")
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(pos) == 1 && pos[0] == "help" {
		fmt.Fprint(stdout, exportUsage)
		return nil
	}
	if len(pos) > 1 {
		return fmt.Errorf("export: give at most one file\n%s", exportUsage)
	}
	format, err := parseFormat(*formatFlag)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	name := "-"
	if len(pos) == 1 {
		name = pos[0]
	}
	if format == "" && name != "-" {
		format = formatOf(name)
	}
	if format == "" {
		format = formatCSV
	}
	target, err := openLinks(ctx, getenv, "export", false)
	if err != nil {
		return err
	}
	defer target.close()
	links, err := target.links(ctx)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if name == "-" {
		return writeLinks(stdout, format, links)
	}
	// Written beside the target and renamed over it, so a failed export
	// never leaves half a backup under the name.
	var buf bytes.Buffer
	if err := writeLinks(&buf, format, links); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	// A new file of its own (0600, O_EXCL): a file already at a fixed
	// temporary name would keep its owner and mode through the rename.
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*.tmp")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(buf.Bytes())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("export: %w", err)
	}
	fmt.Fprintf(stderr, "exported %d links to %s (%s)\n", len(links), name, format)
	return nil
}

// linkTarget is where links are imported to and exported from: the running
// service, or the database file while it is stopped.
type linkTarget interface {
	importLinks(ctx context.Context, links []subrole.Link, opts subrole.ImportOptions) (subrole.ImportReport, error)
	links(ctx context.Context) ([]subrole.Link, error)
	String() string
	close()
}

// openLinks reaches the running service through its admin socket, or opens
// the database file when no service answers. needPolicy says the file
// target will queue role jobs and so needs the service's role settings.
func openLinks(ctx context.Context, getenv func(string) string, what string, needPolicy bool) (linkTarget, error) {
	get := cliGetter(getenv)
	data := get("SUBROLE_DATA")
	socket := adminSocket(data, get)
	var sockErr error
	if socket != "" {
		c := &linksClient{socketAPI{socket: socket}}
		if sockErr = c.ping(ctx); sockErr == nil {
			return c, nil
		}
	}
	if _, err := os.Stat(data); err != nil {
		return nil, fmt.Errorf("%s: SUBROLE_DATA: %w (the service creates the file when it first starts)", what, err)
	}
	var policy subrole.Policy
	if needPolicy {
		cfg, err := loadConfig(getenv)
		if err != nil {
			return nil, fmt.Errorf("%s: the service is not running, so %s is written directly, and computing members' roles needs the service's settings: %w", what, data, err)
		}
		policy = cfg.Policy
	}
	db, err := openWithoutService(what, data, socket, sockErr)
	if err != nil {
		return nil, err
	}
	return &fileLinks{path: data, db: db, svc: subrole.NewService(subrole.Config{Store: db, Policy: policy})}, nil
}

// fileLinks works on the database file while the service is stopped.
type fileLinks struct {
	path string
	db   *store.Store
	svc  *subrole.Service
}

func (f *fileLinks) importLinks(ctx context.Context, links []subrole.Link, opts subrole.ImportOptions) (subrole.ImportReport, error) {
	return f.svc.ImportLinks(ctx, links, opts)
}
func (f *fileLinks) links(ctx context.Context) ([]subrole.Link, error) { return f.svc.Links(ctx) }
func (f *fileLinks) String() string                                    { return "the stopped service's file " + f.path }
func (f *fileLinks) close()                                            { f.db.Close() }

// linksClient imports and exports links through the running service's
// admin socket. It sets no timeout of its own: a large import takes a
// while, and ctx bounds it.
type linksClient struct{ socketAPI }

func (c *linksClient) String() string { return "the running service (admin socket " + c.socket + ")" }

// call calls the admin API (socketAPI.call); a service that does not know
// the links endpoints is older than this command.
func (c *linksClient) call(ctx context.Context, method, path string, body, out any) error {
	err := c.socketAPI.call(ctx, method, path, body, out)
	var refused *refusedError
	if errors.As(err, &refused) && (refused.status == http.StatusNotFound || refused.status == http.StatusMethodNotAllowed) {
		return fmt.Errorf("the service on %s is older than this command: restart it with this version", c.socket)
	}
	return err
}

func (c *linksClient) importLinks(ctx context.Context, links []subrole.Link, opts subrole.ImportOptions) (subrole.ImportReport, error) {
	var rep subrole.ImportReport
	err := c.call(ctx, http.MethodPost, "/import", importRequest{Links: links, DryRun: opts.DryRun, Replace: opts.Replace}, &rep)
	return rep, err
}

func (c *linksClient) links(ctx context.Context) ([]subrole.Link, error) {
	var ans linksAnswer
	err := c.call(ctx, http.MethodGet, "/links", nil, &ans)
	return ans.Links, err
}

// maxAdminBody bounds POST /import's body and GET /links's answer: the
// links of the largest link file, as JSON.
const maxAdminBody = 4 * maxLinkFile

// importRequest is the body of POST /import on the admin socket.
type importRequest struct {
	Links   []subrole.Link `json:"links"`
	DryRun  bool           `json:"dry_run"`
	Replace bool           `json:"replace"`
}

// linksAnswer is GET /links's answer.
type linksAnswer struct {
	Links []subrole.Link `json:"links"`
}

// linksAPI adds the admin socket's link routes in front of next:
//
//	POST /import  importRequest; answers the subrole.ImportReport, or 400
//	              listing every invalid link (nothing is imported then)
//	GET  /links   linksAnswer: every link
func linksAPI(svc *subrole.Service, log *slog.Logger, next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", next)
	mux.HandleFunc("POST /import", func(w http.ResponseWriter, r *http.Request) {
		// A large import outlasts the socket's default deadlines.
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Now().Add(5 * time.Minute))
		rc.SetWriteDeadline(time.Now().Add(30 * time.Minute))
		var req importRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody)).Decode(&req); err != nil {
			http.Error(w, "bad request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		where := make([]string, len(req.Links))
		for i := range where {
			where[i] = fmt.Sprintf("links[%d]", i)
		}
		if p := checkLinks(req.Links, where); len(p) > 0 {
			http.Error(w, (&linkFileError{p}).Error()+"; nothing was imported", http.StatusBadRequest)
			return
		}
		log.Info("admin: import requested through the admin socket", "links", len(req.Links), "dry_run", req.DryRun, "replace", req.Replace)
		rep, err := svc.ImportLinks(r.Context(), req.Links, subrole.ImportOptions{DryRun: req.DryRun, Replace: req.Replace})
		if err != nil {
			log.Error("admin: import failed", "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, rep)
	})
	mux.HandleFunc("GET /links", func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(5 * time.Minute))
		links, err := svc.Links(r.Context())
		if err != nil {
			log.Error("admin: reading links failed", "err", err)
			http.Error(w, "reading the links failed; see the service log", http.StatusInternalServerError)
			return
		}
		if links == nil {
			links = []subrole.Link{}
		}
		writeJSON(w, linksAnswer{Links: links})
	})
	return mux
}
