package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/store"
	"github.com/subrole/subrole/twitch/twitchtest"
	"github.com/subrole/subrole/web"
)

// dashboardLoad is the dashboard's share of "subrole bench mixed": live
// feeds held open by signed-in browsers, and page loads at a steady rate.
type dashboardLoad struct {
	open, refused, events atomic.Int64
	pageErrors            atomic.Int64
	mu                    sync.Mutex
	pages                 latencies
}

// startDashboardLoad signs in feeds+1 dashboard sessions directly in the
// store, opens one live feed per session but the last, and loads the page
// with the last session pages times a second, until ctx ends; wg waits for
// them. base is the service's origin.
func startDashboardLoad(ctx context.Context, wg *sync.WaitGroup, db *store.Store, base string, feeds int, pages float64) (*dashboardLoad, error) {
	tokens := make([]string, feeds+1)
	for i := range tokens {
		tokens[i] = subrole.NewSessionToken()
	}
	now := time.Now()
	var last uint64 // a page opens its feed after the newest entry it shows
	err := db.Update(ctx, func(tx subrole.Tx) error {
		c, err := tx.Counts()
		if err != nil {
			return err
		}
		last = c.LastAudit
		for _, tok := range tokens {
			err := tx.PutDashboardSession(subrole.DashboardSession{Key: subrole.SessionKey(tok),
				TwitchUserID: twitchtest.DefaultBroadcasterID, Created: now, Expires: now.Add(time.Hour)})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bench: dashboard sessions: %w", err)
	}
	// No client timeout: a feed lasts as long as the phase.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: feeds + 4, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}}
	d := &dashboardLoad{}
	get := func(ctx context.Context, path, token string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return nil, err
		}
		req.AddCookie(&http.Cookie{Name: "subrole_dashboard", Value: token})
		return client.Do(req)
	}
	for _, tok := range tokens[:feeds] {
		wg.Go(func() {
			resp, err := get(ctx, web.DashboardEventsPath+"?after="+strconv.FormatUint(last, 10), tok)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				d.refused.Add(1)
				return
			}
			d.open.Add(1)
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "event: audit") {
					d.events.Add(1)
				}
			}
		})
	}
	if pages > 0 {
		wg.Go(func() {
			tick := time.NewTicker(time.Duration(float64(time.Second) / pages))
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				start := time.Now()
				resp, err := get(ctx, web.DashboardPath, tokens[feeds])
				if err != nil {
					if ctx.Err() == nil {
						d.pageErrors.Add(1)
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					d.pageErrors.Add(1)
					continue
				}
				d.mu.Lock()
				d.pages = append(d.pages, time.Since(start))
				d.mu.Unlock()
			}
		})
	}
	return d, nil
}

// addTo reports the dashboard load in m.
func (d *dashboardLoad) addTo(m *metrics) {
	if d == nil {
		return
	}
	m.add("dashboard feeds open", float64(d.open.Load()), "")
	m.add("dashboard feeds refused (over the service's cap)", float64(d.refused.Load()), "")
	m.add("audit entries delivered to dashboards", float64(d.events.Load()), "")
	d.mu.Lock()
	defer d.mu.Unlock()
	m.add("dashboard page loads", float64(len(d.pages)), "")
	m.add("dashboard page load errors", float64(d.pageErrors.Load()), "")
	if len(d.pages) > 0 {
		m.addPercentiles("dashboard page load", d.pages)
	}
}
