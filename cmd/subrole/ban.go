package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/subrole/subrole/guard"
	"github.com/subrole/subrole/store"
)

// The ban list commands work whether or not the service is running. A
// running service holds the bbolt file's lock, so they first try its admin
// socket (SUBROLE_ADMIN_SOCKET, a Unix socket next to the file, mode 0600:
// whoever may read the database may manage bans, nobody else); when nothing
// answers there, they open the file themselves. If the file is locked and
// the socket does not answer, they say so instead of waiting.

const banUsage = `usage:
  subrole ban list [-all] [-json]                      bans in force (-all: expired ones kept for escalation too)
  subrole ban add [-for 24h|3d] [-reason text] ADDR...  ban addresses or CIDR prefixes (default: until removed)
  subrole ban remove ADDR...                            lift bans (an address lifts every ban containing it)

ADDR is an IPv4 or IPv6 address or a CIDR prefix; a bare IPv6 address means its
/64 (SUBROLE_BAN_IPV6_PREFIX). SUBROLE_DATA and SUBROLE_ADMIN_SOCKET say where
the service keeps its bans.
`

// banCmd runs "subrole ban ...".
func banCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, banUsage)
		return nil
	}
	data, socket, v6, err := banConfig(getenv)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("ban "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	all := fs.Bool("all", false, "list: include expired bans kept for escalation")
	asJSON := fs.Bool("json", false, "list: print JSON")
	forStr := fs.String("for", "", "add: how long, e.g. 24h or 3d (default: until removed)")
	reason := fs.String("reason", "", "add: a note kept with the ban")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var prefixes []netip.Prefix
	for _, a := range fs.Args() {
		p, err := guard.ParsePrefix(a, v6)
		if err != nil {
			return fmt.Errorf("ban %s: %w", args[0], err)
		}
		prefixes = append(prefixes, p)
	}
	var d time.Duration
	if *forStr != "" {
		if d, err = parseDuration(*forStr); err != nil || d <= 0 {
			return fmt.Errorf("ban add: -for must be a positive duration like 24h or 3d, got %q", *forStr)
		}
	}

	list, err := openBanList(ctx, data, socket, v6)
	if err != nil {
		return err
	}
	defer list.close()

	switch args[0] {
	case "list", "ls":
		if len(prefixes) > 0 {
			return errors.New("ban list: takes no addresses")
		}
		bans, err := list.list(ctx, *all)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(nonNil(bans))
		}
		printBans(stdout, bans, time.Now())
		return nil
	case "add":
		if len(prefixes) == 0 {
			return errors.New("ban add: give at least one address or prefix\n" + banUsage)
		}
		for _, p := range prefixes {
			b, err := list.add(ctx, p, d, *reason)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "banned %s %s\n", b.Prefix, until(b, time.Now()))
		}
		return nil
	case "remove", "rm", "del", "delete":
		if len(prefixes) == 0 {
			return errors.New("ban remove: give at least one address or prefix\n" + banUsage)
		}
		var missing []string
		for _, p := range prefixes {
			removed, err := list.remove(ctx, p)
			if err != nil {
				return err
			}
			if len(removed) == 0 {
				missing = append(missing, p.String())
			}
			for _, b := range removed {
				fmt.Fprintf(stdout, "lifted %s (%s)\n", b.Prefix, b.Reason)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("ban remove: no ban matches %s", strings.Join(missing, ", "))
		}
		return nil
	}
	return fmt.Errorf("unknown ban command %q\n%s", args[0], banUsage)
}

// banConfig reads the few settings the ban commands need, so that they work
// without the service's credentials in the environment.
func banConfig(getenv func(string) string) (data, socket string, v6 int, err error) {
	var problems []string
	bad := func(name, format string, args ...any) {
		problems = append(problems, name+": "+fmt.Sprintf(format, args...))
	}
	get := func(name string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		for _, s := range settings {
			if s.name == name {
				return s.def
			}
		}
		return ""
	}
	data = get("SUBROLE_DATA")
	v6 = ipv6Prefix(get, bad)
	socket = adminSocket(data, get)
	if len(problems) > 0 {
		return "", "", 0, errors.New("configuration:\n  " + strings.Join(problems, "\n  "))
	}
	return data, socket, v6, nil
}

// banList is the ban list, through the running service or the file.
type banList interface {
	list(ctx context.Context, all bool) ([]guard.Ban, error)
	add(ctx context.Context, p netip.Prefix, d time.Duration, reason string) (guard.Ban, error)
	remove(ctx context.Context, p netip.Prefix) ([]guard.Ban, error)
	close()
}

// openBanList reaches the running service through its socket, or opens the
// file when no service answers.
func openBanList(ctx context.Context, data, socket string, v6 int) (banList, error) {
	var sockErr error
	if socket != "" {
		c := newAdminClient(socket)
		if sockErr = c.ping(ctx); sockErr == nil {
			return c, nil
		}
	}
	if _, err := os.Stat(data); err != nil {
		return nil, fmt.Errorf("ban: SUBROLE_DATA: %w", err)
	}
	db, err := openWithoutService("ban", data, socket, sockErr)
	if err != nil {
		return nil, err
	}
	g, err := guard.New(ctx, guard.Config{Store: db, IPv6Prefix: v6})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &fileBanList{g: g, db: db}, nil
}

// fileBanList works on the file while the service is stopped.
type fileBanList struct {
	g  *guard.Guard
	db *store.Store
}

func (f *fileBanList) list(_ context.Context, all bool) ([]guard.Ban, error) {
	return f.g.Bans(all), nil
}
func (f *fileBanList) add(ctx context.Context, p netip.Prefix, d time.Duration, reason string) (guard.Ban, error) {
	return f.g.Ban(ctx, p, d, reason)
}
func (f *fileBanList) remove(ctx context.Context, p netip.Prefix) ([]guard.Ban, error) {
	return f.g.Unban(ctx, p)
}
func (f *fileBanList) close() { f.db.Close() }

// adminClient manages bans through the running service's admin socket.
type adminClient struct{ socketAPI }

func newAdminClient(socket string) *adminClient {
	return &adminClient{socketAPI{socket: socket, timeout: 10 * time.Second}}
}

// do calls the admin API (socketAPI.call), its errors marked as the ban
// command's.
func (c *adminClient) do(ctx context.Context, method, path string, body, out any) error {
	if err := c.call(ctx, method, path, body, out); err != nil {
		return fmt.Errorf("ban: %w", err)
	}
	return nil
}

func (c *adminClient) list(ctx context.Context, all bool) ([]guard.Ban, error) {
	var out []guard.Ban
	path := "/bans"
	if all {
		path += "?all=1"
	}
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

func (c *adminClient) add(ctx context.Context, p netip.Prefix, d time.Duration, reason string) (guard.Ban, error) {
	var out guard.Ban
	err := c.do(ctx, http.MethodPost, "/bans", banRequest{Prefix: p.String(), Duration: d.String(), Reason: reason}, &out)
	return out, err
}

func (c *adminClient) remove(ctx context.Context, p netip.Prefix) ([]guard.Ban, error) {
	var out []guard.Ban
	return out, c.do(ctx, http.MethodDelete, "/bans?prefix="+p.String(), nil, &out)
}

// banRequest is the body of POST /bans on the admin socket.
type banRequest struct {
	Prefix   string `json:"prefix"`
	Duration string `json:"duration"` // Go duration; "0s" or "" means until removed
	Reason   string `json:"reason"`
}

// adminHandler is the admin API served on the admin socket: GET /bans
// (?all=1), POST /bans (banRequest), DELETE /bans?prefix=P. Every change is
// logged by the guard as a security event.
func adminHandler(g *guard.Guard, v6 int, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /bans", func(w http.ResponseWriter, r *http.Request) {
		reply(w, nonNil(g.Bans(r.URL.Query().Get("all") == "1")))
	})
	mux.HandleFunc("POST /bans", func(w http.ResponseWriter, r *http.Request) {
		var req banRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			http.Error(w, "bad request body", http.StatusBadRequest)
			return
		}
		p, err := guard.ParsePrefix(req.Prefix, v6)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var d time.Duration
		if req.Duration != "" {
			if d, err = time.ParseDuration(req.Duration); err != nil || d < 0 {
				http.Error(w, "bad duration "+req.Duration, http.StatusBadRequest)
				return
			}
		}
		b, err := g.Ban(r.Context(), p, d, req.Reason)
		if err != nil {
			log.Error("admin: ban failed", "prefix", p.String(), "err", err)
			http.Error(w, "storing the ban failed; see the service log", http.StatusInternalServerError)
			return
		}
		reply(w, b)
	})
	mux.HandleFunc("DELETE /bans", func(w http.ResponseWriter, r *http.Request) {
		p, err := guard.ParsePrefix(r.URL.Query().Get("prefix"), v6)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		removed, err := g.Unban(r.Context(), p)
		if err != nil {
			log.Error("admin: unban failed", "prefix", p.String(), "err", err)
			http.Error(w, "storing the change failed; see the service log", http.StatusInternalServerError)
			return
		}
		reply(w, nonNil(removed))
	})
	return mux
}

func nonNil(b []guard.Ban) []guard.Ban {
	if b == nil {
		return []guard.Ban{}
	}
	return b
}

// printBans writes the ban list as a table.
func printBans(w io.Writer, bans []guard.Ban, now time.Time) {
	if len(bans) == 0 {
		fmt.Fprintln(w, "no bans")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tUNTIL\tSTRIKES\tREASON")
	for _, b := range bans {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", b.Prefix, until(b, now), b.Strikes, b.Reason)
	}
	tw.Flush()
}

// until describes when a ban ends.
func until(b guard.Ban, now time.Time) string {
	switch {
	case b.Permanent():
		return "until removed"
	case !b.Active(now):
		return "expired " + b.Until.UTC().Format(time.RFC3339)
	default:
		return "until " + b.Until.UTC().Format(time.RFC3339)
	}
}
