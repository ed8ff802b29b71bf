package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gorilla/mux"
)

// routes lists every HTTP route of the service.
func routes(log *slog.Logger, webhook http.Handler, ready readiness, pages func(handle func(string, http.HandlerFunc, ...string))) http.Handler {
	r := mux.NewRouter()
	r.Handle("/twitch_eventsub", webhook) // the handler answers 405 itself, with Allow
	// Member linking's browser pages: GET /link/start (the /link button),
	// GET /discord_callback and GET /twitch_callback (OAuth redirects),
	// GET /broadcaster/connect, GET /assets/subrole.css.
	if pages != nil {
		pages(func(path string, h http.HandlerFunc, methods ...string) { r.HandleFunc(path, h).Methods(methods...) })
	}
	r.HandleFunc("/healthz", handleHealthz).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/readyz", handleReadyz(ready)).Methods(http.MethodGet, http.MethodHead)
	r.MethodNotAllowedHandler = methodNotAllowed(r) // 405 with Allow
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Debug("http: not found", "path", r.URL.Path, "remote", r.RemoteAddr)
		http.Error(w, "not found", http.StatusNotFound)
	})
	return r
}

// handleHealthz answers 200 while the process serves HTTP.
func handleHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// handleReadyz answers 200 when the service can do its job, else 503 with the reasons.
func handleReadyz(ready readiness) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if p := ready.problems(); len(p) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: "+strings.Join(p, "; "))
			return
		}
		fmt.Fprintln(w, "ready")
		// Degraded but serving: say what an operator should fix.
		for _, warn := range ready.warnings() {
			fmt.Fprintln(w, "warning: "+warn)
		}
	}
}
