package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/eventsub"
	"github.com/subrole/subrole/twitch"
)

// "subrole eventsub list|delete" talk to Helix directly with the app access
// token (client credentials from SUBROLE_TWITCH_CLIENT_ID/SECRET): they need
// no database and work whether or not the service runs. "subrole eventsub
// sync" and "subrole reconcile" go through the running service's admin
// socket: a new subscription is verified by Twitch calling the service's
// webhook, and a reconcile needs the service's Discord session and the
// broadcaster's token, so without a running service they could not work.

const eventsubUsage = `usage:
  subrole eventsub list [-json]   every EventSub subscription of the Twitch application: ours and others', status, callback
  subrole eventsub sync           make the running service sync its subscriptions now (through its admin socket)
  subrole eventsub delete ID...   delete subscriptions by id (the service re-creates one it needs at its next sync)

list and delete use SUBROLE_TWITCH_CLIENT_ID, SUBROLE_TWITCH_CLIENT_SECRET (and
SUBROLE_TWITCH_API_URL, SUBROLE_TWITCH_AUTH_URL, SUBROLE_PUBLIC_URL); sync uses
SUBROLE_DATA and SUBROLE_ADMIN_SOCKET to find the service.
`

const reconcileUsage = `usage:
  subrole reconcile [-json]   run a reconcile pass in the running service now and print its counts

The pass reads the broadcaster's subscribers from Helix, fixes every drift in
the stored state and, unless SUBROLE_ENFORCE_ROLES=off, restores roles edited
by hand. It goes through the service's admin socket (SUBROLE_DATA,
SUBROLE_ADMIN_SOCKET); progress goes to stderr, the result to stdout.
`

// cliGetter returns a settings reader with the defaults of settings.
func cliGetter(getenv func(string) string) func(string) string {
	return func(name string) string {
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
}

// serviceClient is an HTTP client for the running service's admin socket,
// without a timeout (a reconcile takes minutes).
type serviceClient struct {
	socket string
	hc     *http.Client
}

// dialService returns a client for the admin socket, or an error that says
// why the service cannot be reached.
func dialService(ctx context.Context, getenv func(string) string, what string) (*serviceClient, error) {
	get := cliGetter(getenv)
	socket := adminSocket(get("SUBROLE_DATA"), get)
	if socket == "" {
		return nil, fmt.Errorf("%s needs the running service's admin socket, and SUBROLE_ADMIN_SOCKET is off", what)
	}
	c := &serviceClient{socket: socket, hc: socketClient(socket, 0)}
	pingCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := c.do(pingCtx, http.MethodGet, "/status")
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%s needs the running service, and nothing answers on its admin socket %s: is it running, with the same SUBROLE_DATA / SUBROLE_ADMIN_SOCKET?", what, socket)
		}
		return nil, fmt.Errorf("%s: admin socket %s: %w", what, socket, err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("%s: the service on %s is too old for it", what, socket)
	}
	return c, nil
}

func (c *serviceClient) do(ctx context.Context, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://subrole"+path, nil)
	if err != nil {
		return nil, err
	}
	return c.hc.Do(req)
}

// getJSON requests path and decodes a 200 JSON answer into out.
func (c *serviceClient) getJSON(ctx context.Context, method, path string, out any) error {
	resp, err := c.do(ctx, method, path)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the service refused: %s", strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, out)
}

// reconcileCmd runs "subrole reconcile".
func reconcileCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, reconcileUsage) }
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		if fs.Arg(0) == "help" {
			fmt.Fprint(stdout, reconcileUsage)
			return nil
		}
		return fmt.Errorf("reconcile: takes no arguments\n%s", reconcileUsage)
	}
	c, err := dialService(ctx, getenv, "subrole reconcile")
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, "/reconcile")
	if err != nil {
		return fmt.Errorf("reconcile: admin socket %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("reconcile: %s", strings.TrimSpace(string(b)))
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var l reconcileLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("reconcile: undecodable answer from the service: %w", err)
		}
		switch {
		case l.Error != "":
			return fmt.Errorf("reconcile: %s", l.Error)
		case l.Done && l.Report != nil:
			if *asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(l.Report)
			}
			printReconcile(stdout, *l.Report)
			return nil
		case l.Report != nil && l.Stage != subrole.StageDone:
			r := l.Report
			fmt.Fprintf(stderr, "reconcile: %s (%d Helix requests, %d subscribers, %d fixes, %d roles restored)\n",
				l.Stage, r.HelixRequests, r.Subscribers, r.Drifts(), r.RolesRepaired)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	return errors.New("reconcile: the service ended the answer without a result; see its log")
}

// printReconcile writes a report as a table.
func printReconcile(w io.Writer, r subrole.ReconcileReport) {
	fmt.Fprintf(w, "reconcile done in %s: strategy %s, %d Helix requests, %d subscribers\n",
		r.Finished.Sub(r.Started).Round(time.Millisecond), r.Strategy, r.HelixRequests, r.Subscribers)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, row := range []struct {
		n    int
		what string
	}{
		{r.MissedEnd, "missed ends (roles removed)"},
		{r.MissedSubscribe, "missed subscriptions"},
		{r.TierChange, "tier changes"},
		{r.GiftToPaid, "gifts turned paid"},
		{r.RolesRepaired, "members whose roles were edited by hand"},
		{r.Skipped, "left to newer events"},
		{r.RoleJobs, "role jobs queued"},
	} {
		fmt.Fprintf(tw, "%d\t  %s\n", row.n, row.what)
	}
	tw.Flush()
}

// eventsubCmd runs "subrole eventsub ...".
func eventsubCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, eventsubUsage)
		return nil
	}
	fs := flag.NewFlagSet("eventsub "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "list: print JSON")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	switch args[0] {
	case "sync":
		c, err := dialService(ctx, getenv, "subrole eventsub sync")
		if err != nil {
			return err
		}
		var ans syncAnswer
		if err := c.getJSON(ctx, http.MethodPost, "/eventsub/sync", &ans); err != nil {
			return fmt.Errorf("eventsub sync: %w", err)
		}
		r := ans.Report
		fmt.Fprintf(stdout, "kept %d, created %d, deleted %d; %d subscriptions of other callbacks left alone\n",
			len(r.Kept), len(r.Created), len(r.Deleted), r.Foreign)
		if len(r.Waiting) > 0 {
			fmt.Fprintf(stdout, "waiting for the broadcaster to connect: %s\n", strings.Join(r.Waiting, ", "))
		}
		if ans.Problem != "" {
			fmt.Fprintln(stdout, "problem:", ans.Problem)
		}
		if ans.Error != "" {
			return fmt.Errorf("eventsub sync: %s", ans.Error)
		}
		return nil
	case "list", "ls", "delete", "del", "rm":
	default:
		return fmt.Errorf("unknown eventsub command %q\n%s", args[0], eventsubUsage)
	}

	get := cliGetter(getenv)
	var missing []string
	for _, name := range []string{"SUBROLE_TWITCH_CLIENT_ID", "SUBROLE_TWITCH_CLIENT_SECRET"} {
		if get(name) == "" {
			missing = append(missing, name+": is required")
		}
	}
	if len(missing) > 0 {
		return errors.New("configuration:\n  " + strings.Join(missing, "\n  "))
	}
	tc, err := twitch.New(twitch.Config{ClientID: get("SUBROLE_TWITCH_CLIENT_ID"), ClientSecret: get("SUBROLE_TWITCH_CLIENT_SECRET"),
		AuthURL: get("SUBROLE_TWITCH_AUTH_URL"), APIURL: get("SUBROLE_TWITCH_API_URL")})
	if err != nil {
		return err
	}
	if args[0] != "list" && args[0] != "ls" {
		if fs.NArg() == 0 {
			return errors.New("eventsub delete: give at least one subscription id\n" + eventsubUsage)
		}
		for _, id := range fs.Args() {
			if err := tc.DeleteEventSubSubscription(ctx, id); err != nil {
				if errors.Is(err, twitch.ErrNotFound) {
					return fmt.Errorf("eventsub delete: no subscription %s", id)
				}
				return fmt.Errorf("eventsub delete: %w", err)
			}
			fmt.Fprintf(stdout, "deleted %s\n", id)
		}
		return nil
	}
	list, err := tc.EventSubSubscriptions(ctx)
	if err != nil {
		return fmt.Errorf("eventsub list: %w", err)
	}
	// Which are ours: by the public URL, and, when the service answers, by
	// the callback (secret generation) it uses now.
	current := ""
	if c, err := dialService(ctx, getenv, "status"); err == nil {
		var st healthStatus
		if c.getJSON(ctx, http.MethodGet, "/status", &st) == nil {
			current = st.EventSub.Callback
		}
	}
	m := &eventsub.Manager{Callback: current}
	if current == "" && get("SUBROLE_PUBLIC_URL") != "" {
		m.Callback = strings.TrimSuffix(get("SUBROLE_PUBLIC_URL"), "/") + eventsub.CallbackPath
	}
	type row struct {
		twitch.EventSubSubscription
		Owner string `json:"owner"` // "subrole" (current), "subrole (stale)", "subrole", "other"
	}
	rows := make([]row, 0, len(list.Subscriptions))
	for _, s := range list.Subscriptions {
		owner := "other"
		if m.Ours(eventsub.Registration{Method: s.Method, Callback: s.Callback}) {
			switch {
			case current == "":
				owner = "subrole"
			case s.Callback == current:
				owner = "subrole (current)"
			default:
				owner = "subrole (stale)"
			}
		}
		rows = append(rows, row{s, owner})
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"subscriptions": rows, "total": list.Total, "total_cost": list.TotalCost, "max_total_cost": list.MaxTotalCost})
	}
	if len(rows) == 0 {
		fmt.Fprintln(stdout, "no EventSub subscriptions")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTYPE\tV\tSTATUS\tCONDITION\tOWNER\tCALLBACK")
	for _, r := range rows {
		var cond []string
		for k, v := range r.Condition {
			cond = append(cond, k+"="+v)
		}
		cb := r.Callback
		if cb == "" {
			cb = "(" + r.Method + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Type, r.Version, r.Status, strings.Join(cond, ","), r.Owner, cb)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d subscriptions, cost %d of %d\n", list.Total, list.TotalCost, list.MaxTotalCost)
	return nil
}
