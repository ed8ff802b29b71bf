package twitch_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/subrole/subrole/twitch"
	"github.com/subrole/subrole/twitch/twitchtest"
)

// TestRateWaitOutlastsClientTimeout: the HTTP client's timeout bounds each
// attempt, not the wait for a spent Helix budget to reset, so a bulk reader
// (the reconcile) waits rather than failing.
func TestRateWaitOutlastsClientTimeout(t *testing.T) {
	tw := twitchtest.NewServer(twitchtest.Options{RateLimit: 1, RateWindow: 1500 * time.Millisecond})
	defer tw.Close()
	c, err := twitch.New(twitch.Config{ClientID: tw.ClientID(), ClientSecret: tw.ClientSecret(), AuthURL: tw.AuthURL(), APIURL: tw.HelixURL(),
		HTTPClient: &http.Client{Timeout: 300 * time.Millisecond}, MaxRateWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tok := tw.IssueToken(tw.BroadcasterID(), twitch.ScopeChannelSubscriptions)
	ctx := context.Background()
	start := time.Now()
	for i := range 2 {
		if _, _, err := c.Subscriptions(ctx, tok.AccessToken, tw.BroadcasterID(), nil, ""); err != nil {
			t.Fatalf("call %d after %s: %v", i, time.Since(start), err)
		}
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Fatalf("the second call did not wait for the reset (%s)", took)
	}
	for _, call := range tw.CallsTo(http.MethodGet, "/helix/subscriptions") {
		if call.Status != http.StatusOK {
			t.Fatalf("a request hit the spent budget: %d", call.Status)
		}
	}
}
