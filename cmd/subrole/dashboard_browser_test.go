package main

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// chromiumPath is where Debian's chromium package puts the browser.
const chromiumPath = "/usr/bin/chromium"

// headlessChromium starts a headless chromium with a fresh profile, cut off
// from everything but what the test serves on loopback, and returns a
// browser context. Without a browser the test is skipped, unless
// SUBROLE_REQUIRE_BROWSER is set (CI sets it): then it fails.
func headlessChromium(t *testing.T) (context.Context, *consoleErrors) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("SUBROLE_REQUIRE_BROWSER") != "" {
			t.Fatalf("SUBROLE_REQUIRE_BROWSER is set but %s is missing (apt-get install chromium): %v", chromiumPath, err)
		}
		t.Skipf("no browser at %s (apt-get install chromium, or set SUBROLE_REQUIRE_BROWSER to make this fail)", chromiumPath)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(bctx); err != nil { // start the browser and open the tab
		t.Fatalf("starting chromium: %v", err)
	}
	errs := &consoleErrors{}
	err := chromedp.Listen(bctx, func(ev any) {
		switch ev := ev.(type) {
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError && !strings.Contains(ev.Entry.URL, "favicon") {
				errs.add(string(ev.Entry.Source) + ": " + ev.Entry.Text)
			}
		case *runtime.EventExceptionThrown:
			errs.add("exception: " + ev.ExceptionDetails.Text)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(bctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("enabling the log domain: %v", err)
	}
	return bctx, errs
}

// consoleErrors collects what the page reports as errors: CSP violations,
// failed loads, script exceptions.
type consoleErrors struct {
	mu   sync.Mutex
	list []string
}

func (c *consoleErrors) add(s string) { c.mu.Lock(); c.list = append(c.list, s); c.mu.Unlock() }
func (c *consoleErrors) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string{}, c.list...)
}

// TestDashboardInBrowser: the streamer signs in through the fake Twitch in
// a real browser, opens the dashboard, and watches a subscription's role
// change arrive without reloading: the entry appears at the top and the
// counters change. The service is the real one, started through run().
func TestDashboardInBrowser(t *testing.T) {
	bctx, console := headlessChromium(t)
	w := newTestWorld(t)
	w.linkMembers(t, 2)
	member := discordID(1)
	first := w.start(t)
	base := w.env["SUBROLE_PUBLIC_URL"]
	w.twitchAPI.SetAuthorizingUser(w.twitchAPI.BroadcasterID()) // the streamer approves the sign-in

	run := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(bctx, a)
		if err != nil {
			html, _ := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS("main")))
			t.Fatalf("%s: %v\n%s", what, err, html)
		}
		return v
	}
	count := func(what, expr string) int {
		t.Helper()
		n, err := chromedp.Run(bctx, chromedp.Evaluate[int](expr))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return n
	}

	// Opening /dashboard without a session signs in through Twitch and
	// lands on the dashboard, whose script opens the live feed.
	open, cancelOpen := context.WithTimeout(bctx, 30*time.Second)
	defer cancelOpen()
	if err := chromedp.Do(open, chromedp.Navigate(base+"/dashboard"), chromedp.WaitVisible(chromedp.CSS(`#feed-state.live`))); err != nil {
		html, _ := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS("body")))
		t.Fatalf("opening the dashboard: %v\n%s", err, html)
	}
	if loc := run("location", chromedp.Location()); loc != base+"/dashboard" {
		t.Fatalf("signed in at %s", loc)
	}
	if who := run("who", chromedp.Text(chromedp.CSS(`.who-am-i`))); !strings.Contains(who, twitchtest.DefaultBroadcasterLogin) {
		t.Fatalf("signed in as %q", who)
	}
	if tier1 := run("tier 1 counter", chromedp.Text(chromedp.CSS(`[data-stat="tier1"]`))); tier1 != "0" {
		t.Fatalf("tier 1 counter %q before the event", tier1)
	}
	before := count("role entries", `window.notReloaded = true; document.querySelectorAll('#entries li.kind-roles').length`)

	// Twitch sends a signed channel.subscribe for the linked member.
	w.send(t, w.twitch.Subscribe(twitchID(1), "viewer1", "1000", false), 204)
	w.waitRoles(t, member, worldRoleLinked, worldRoleTier1, worldRoleSub)

	entry := run("the role change appearing", chromedp.Poll[string](`(() => {
		const li = [...document.querySelectorAll('#entries li.kind-roles')].find(li => li.textContent.includes('Tier 1'));
		return li ? li.textContent : false;
	})()`, chromedp.WithPollingTimeout(20*time.Second)))
	for _, want := range []string{member, "Linked → Linked, Tier 1, Subscriber", "Roles"} {
		if !strings.Contains(entry, want) {
			t.Errorf("the new entry %q lacks %q", entry, want)
		}
	}
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.querySelector('[data-stat="tier1"]').textContent === "1" &&
		document.querySelector('[data-stat="outbox"]').textContent === "0"`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		html, _ := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS(".stats")))
		t.Fatalf("the counters did not change: %v\n%s", err, html)
	}
	newest := run("newest entry", chromedp.Text(chromedp.CSS(`#entries li:first-child`)))
	after := count("role entries", `document.querySelectorAll('#entries li.kind-roles').length`)
	reloaded := count("reload marker", `window.notReloaded === true ? 0 : 1`)
	if !strings.Contains(newest, "Tier 1") || after != before+1 || reloaded != 0 {
		t.Errorf("newest entry %q, role entries %d → %d, reloaded %d", newest, before, after, reloaded)
	}

	// The service restarts (a deploy): the page says it is reconnecting,
	// connects again by itself once the service is back, and shows what
	// happens next, still without a reload.
	first.stop(t)
	backup, err := os.ReadFile(w.env["SUBROLE_DATA"]) // a backup, taken while the service is stopped
	if err != nil {
		t.Fatal(err)
	}
	run("the page noticing the restart", chromedp.Poll[string](`(() => {
		const s = document.querySelector('#feed-state');
		return !s.classList.contains('live') && document.querySelector('#feed-ended').hidden ? s.textContent : false;
	})()`, chromedp.WithPollingTimeout(20*time.Second)))
	secondRun := w.start(t)
	second := discordID(2)
	w.send(t, w.twitch.Subscribe(twitchID(2), "viewer2", "2000", false), 204)
	w.waitRoles(t, second, worldRoleLinked, worldRoleTier2, worldRoleSub)
	entry = run("an entry after the restart", chromedp.Poll[string](`(() => {
		const li = [...document.querySelectorAll('#entries li.kind-roles')].find(li => li.textContent.includes('Tier 2'));
		return li && document.querySelector('#feed-state').classList.contains('live') ? li.textContent : false;
	})()`, chromedp.WithPollingTimeout(40*time.Second)))
	if !strings.Contains(entry, second) {
		t.Errorf("the entry after the restart %q lacks member %s", entry, second)
	}
	if reloaded := count("reload marker", `window.notReloaded === true ? 0 : 1`); reloaded != 0 {
		t.Errorf("the page reloaded across the restart")
	}

	// The backup is restored: the log is shorter than what the page has
	// shown. The page is told so when it reconnects, and reloads to show
	// the restored log, live again. (What the restored log then shows is
	// not checked: the new service may repair the lost changes at once.)
	secondRun.stop(t)
	if err := os.WriteFile(w.env["SUBROLE_DATA"], backup, 0o600); err != nil {
		t.Fatal(err)
	}
	w.start(t)
	// Evaluated in a loop, not polled: the reload ends a poll in progress.
	for deadline := time.Now().Add(40 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ok, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`(() => {
			const s = document.querySelector('#feed-state');
			return window.notReloaded !== true && !!s && s.classList.contains('live');
		})()`))
		if err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			html, _ := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS("main")))
			t.Fatalf("the page did not reload and go live after the restore (%v)\n%s", err, html)
		}
	}

	// A feed the server refuses (a fifth tab of one session, over the cap
	// of 4) is retried by the page, which goes live once a slot is free.
	openTab := func(live bool) (context.Context, context.CancelFunc) {
		tab, closeTab := chromedp.NewContext(bctx)
		if err := chromedp.Do(tab); err != nil { // open the tab on its own context: a cancelled first context closes it
			t.Fatal(err)
		}
		wait, cancelWait := context.WithTimeout(tab, 20*time.Second)
		defer cancelWait()
		sel := `#feed-state`
		if live {
			sel = `#feed-state.live`
		}
		if err := chromedp.Do(wait, chromedp.Navigate(base+"/dashboard"), chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
			t.Fatalf("opening a tab: %v", err)
		}
		return tab, closeTab
	}
	_, closeSecond := openTab(true)
	for range 2 {
		_, closeTab := openTab(true)
		defer closeTab()
	}
	fifth, closeFifth := openTab(false)
	defer closeFifth()
	time.Sleep(3 * time.Second) // refused, and retried at least once
	if live, err := chromedp.Run(fifth, chromedp.Evaluate[bool](`document.querySelector('#feed-state').classList.contains('live') ||
		!document.querySelector('#feed-ended').hidden`)); err != nil || live {
		t.Fatalf("a fifth feed of one session is live or ended (%v); want it refused and waiting", err)
	}
	closeSecond() // frees a slot
	if _, err := chromedp.Run(fifth, chromedp.Poll[bool](`document.querySelector('#feed-state').classList.contains('live')`,
		chromedp.WithPollingTimeout(40*time.Second))); err != nil {
		t.Fatalf("the refused tab did not connect once a slot was free: %v", err)
	}
	if errs := console.get(); len(errs) > 0 {
		t.Errorf("the page reported errors: %q", errs)
	}
}
