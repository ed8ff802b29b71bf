package guard_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/subrole/subrole/guard"
)

// BenchmarkHandler measures the guard's cost per request in front of an
// empty handler: a client within its rate, many clients, and the exempt
// webhook path; the baseline is the request construction alone.
func BenchmarkHandler(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	for _, bc := range []struct {
		name    string
		path    string
		clients int
	}{
		{"baseline, no guard", "/", 1},
		{"one client", "/", 1},
		{"100k clients", "/", 100_000},
		{"exempt webhook", "/twitch_eventsub", 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			g, _ := guard.New(context.Background(), guard.Config{
				Rate:   -1,
				Exempt: func(r *http.Request) bool { return r.URL.Path == "/twitch_eventsub" },
			})
			h := g.Handler(ok)
			if bc.name == "baseline, no guard" {
				h = ok
			}
			var n atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := httptest.NewRecorder()
				for pb.Next() {
					i := n.Add(1) % int64(bc.clients)
					r := httptest.NewRequest("GET", bc.path, nil)
					r.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255)
					h.ServeHTTP(w, r)
				}
			})
		})
	}
}
