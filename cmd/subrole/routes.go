package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/gorilla/mux"
)

// routes lists every HTTP route of the service.
func routes(log *slog.Logger, webhook http.Handler, ready readiness, pages func(handle func(string, http.HandlerFunc, ...string))) http.Handler {
	r := mux.NewRouter()
	r.Handle("/twitch_eventsub", webhook) // the handler answers 405 itself, with Allow
	// Member linking's browser pages: GET /link/start (the /link button),
	// GET /discord_callback and GET /twitch_callback (OAuth redirects),
	// GET /broadcaster/connect, GET /assets/subrole.css; the dashboard:
	// GET /dashboard, GET /dashboard/login, POST /dashboard/logout,
	// GET /dashboard/events (its live feed), GET /assets/dashboard.js.
	if pages != nil {
		pages(func(path string, h http.HandlerFunc, methods ...string) { r.HandleFunc(path, h).Methods(methods...) })
	}
	r.HandleFunc("/healthz", handleHealthz).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/readyz", handleReadyz(ready.problems, ready.warnings)).Methods(http.MethodGet, http.MethodHead)
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

// handleReadyz answers 200 when the service can do its job, else 503 with
// the reasons. Callers on this host (monitoring, the operator) get the
// details; anyone else only the headline of each reason, because the details
// can carry error text from Twitch, Discord or the CA.
func handleReadyz(problems, warnings func() []string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		show := headline
		if fromThisHost(r) {
			show = func(s string) string { return s }
		}
		if p := problems(); len(p) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for i := range p {
				p[i] = show(p[i])
			}
			fmt.Fprintln(w, "not ready: "+strings.Join(p, "; "))
			return
		}
		fmt.Fprintln(w, "ready")
		// Degraded but serving: say what an operator should fix.
		for _, warn := range warnings() {
			fmt.Fprintln(w, "warning: "+show(warn))
		}
	}
}

// headline returns a readiness reason without its details (what follows
// the first ": ").
func headline(s string) string {
	h, _, _ := strings.Cut(s, ": ")
	return h
}

// fromThisHost reports whether the client (as the guard resolved it, behind
// trusted proxies) is on this host.
func fromThisHost(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
