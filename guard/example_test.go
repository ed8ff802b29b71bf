package guard_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/subrole/subrole/guard"
)

// A handler reports abuse it detects; the guard in front of it bans the
// client once the kind's threshold is reached.
func Example() {
	g, _ := guard.New(context.Background(), guard.Config{})
	mux := http.NewServeMux()
	mux.HandleFunc("/callback", func(w http.ResponseWriter, r *http.Request) {
		// An unknown OAuth state: refuse it and tell the guard.
		g.Report(r, guard.KindBadState)
		http.Error(w, "bad state", http.StatusBadRequest)
	})
	h := g.Handler(mux)

	for range guard.DefaultThreshold(guard.KindBadState).Count + 1 {
		r := httptest.NewRequest("GET", "/callback?state=forged", nil)
		r.RemoteAddr = "203.0.113.7:4711"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(w.Code)
	}
	for _, b := range g.Bans(false) {
		fmt.Println(b.Prefix, b.Reason, b.Strikes)
	}
	// Output:
	// 400
	// 400
	// 400
	// 400
	// 400
	// 403
	// 203.0.113.7/32 bad_state 1
}
