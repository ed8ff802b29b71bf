package main

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/subrole/subrole/twitch/twitchtest"
)

// The webhook benchmarks of issue 2, over real loopback HTTP: the service's
// ack path beside its two baselines. Each runs at exactly 1, 16 and 64
// concurrent connections (b.RunParallel would run a multiple of GOMAXPROCS
// goroutines, and concurrency 1 matters: it shows whether a lone request
// waits on a timer). Custom metrics: acks/s, p50-ms and p99-ms of the ack
// latency, events/commit. "subrole bench webhook" runs the same comparison
// with medians and ratios; see BENCHMARKS.md.
//
//	go test -run '^$' -bench Webhook -benchtime 5s ./cmd/subrole

// BenchmarkWebhookInMemory is the ceiling: verify, decode, 204.
func BenchmarkWebhookInMemory(b *testing.B) { benchmarkWebhook(b, targetMemory) }

// BenchmarkWebhookNaiveBatch is the naive durable handler: db.Batch with its defaults.
func BenchmarkWebhookNaiveBatch(b *testing.B) { benchmarkWebhook(b, targetBatch) }

// BenchmarkWebhookService is the real path: AcceptEvent through the commit loop, core running.
func BenchmarkWebhookService(b *testing.B) { benchmarkWebhook(b, targetService) }

// benchmarkWebhook measures target at concurrency 1, 16 and 64.
func benchmarkWebhook(b *testing.B, target string) {
	for _, c := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			srv, err := startWebhookTarget(target, b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer srv.stop()
			client := newLoadClient(c)
			defer client.CloseIdleConnections()
			warm := prebuilt(srv.url, 1_000_000_000, 4*c)
			msgs := prebuilt(srv.url, 1, b.N)
			sendAll(b, client, srv.url, c, warm)
			c0 := srv.commits()
			b.ResetTimer()
			res := sendAll(b, client, srv.url, c, msgs)
			b.StopTimer()
			lat := res.ackLatencies(time.Time{}, time.Time{}).sorted()
			b.ReportMetric(float64(lat.pct(50))/1e6, "p50-ms")
			b.ReportMetric(float64(lat.pct(99))/1e6, "p99-ms")
			b.ReportMetric(res.rate(), "acks/s")
			if n := srv.commits() - c0; n > 0 {
				b.ReportMetric(float64(res.Acked)/float64(n), "events/commit")
			}
		})
	}
}

// sendAll delivers msgs over conns connections, failing b on any error.
func sendAll(b *testing.B, client *http.Client, url string, conns int, msgs []twitchtest.Message) loadResult {
	b.Helper()
	var next atomicCounter
	res := runLoad(context.Background(), client, url, loadSpec{Conns: conns, Count: len(msgs)},
		func() (twitchtest.Message, bool, bool) {
			i := next.next()
			return msgs[min(i, len(msgs)-1)], false, i < len(msgs)
		}, nil)
	if res.Acked != len(msgs) {
		b.Fatalf("%d of %d acknowledged; errors: %s", res.Acked, len(msgs), res.errorSummary())
	}
	return res
}
