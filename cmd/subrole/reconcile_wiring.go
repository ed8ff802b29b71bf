package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/eventsub"
	"github.com/subrole/subrole/twitch"
)

// The admin socket's healing routes, used by "subrole reconcile" and
// "subrole eventsub sync|list" (eventsub_cli.go):
//
//	POST /reconcile      run a pass now; the answer streams NDJSON lines
//	                     (reconcileLine): progress, then the report or the
//	                     error. 409 when a pass runs, 503 when the
//	                     broadcaster is not connected.
//	POST /eventsub/sync  sync the EventSub subscriptions now; JSON syncAnswer.
//	GET  /status         JSON healthStatus.
//
// Everything else goes to the ban routes (ban.go).

// reconcileLine is one line of POST /reconcile's answer.
type reconcileLine struct {
	Stage  subrole.ReconcileStage   `json:"stage,omitempty"`
	Report *subrole.ReconcileReport `json:"report,omitempty"`
	Done   bool                     `json:"done,omitempty"`
	Error  string                   `json:"error,omitempty"`
}

// syncAnswer is POST /eventsub/sync's answer.
type syncAnswer struct {
	Report  eventsub.SyncReport `json:"report"`
	Error   string              `json:"error,omitempty"`
	Status  eventsub.Status     `json:"status"`
	Problem string              `json:"problem,omitempty"`
}

// healthStatus is GET /status's answer.
type healthStatus struct {
	EventSub struct {
		eventsub.Status
		Callback   string `json:"callback"` // with the secret generation
		Generation uint64 `json:"generation"`
		Problem    string `json:"problem,omitempty"`
	} `json:"eventsub"`
	Broadcaster   twitch.BroadcasterStatus `json:"broadcaster"`
	LastReconcile *subrole.ReconcileReport `json:"last_reconcile,omitempty"`
	ReconcileErr  string                   `json:"reconcile_error,omitempty"`
	Warnings      []string                 `json:"warnings"`
}

// adminAPI adds the healing routes in front of bans (frontend.adminMore).
func (h *healing) adminAPI(bans http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", bans)
	mux.HandleFunc("POST /reconcile", h.serveReconcile)
	mux.HandleFunc("POST /eventsub/sync", func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(2 * time.Minute)) // Sync waits for Twitch's verification
		rep, err := h.manager.Sync(r.Context())
		ans := syncAnswer{Report: rep, Status: h.manager.Status(), Problem: h.manager.Problem()}
		if err != nil {
			ans.Error = err.Error()
			h.log.Warn("admin: eventsub sync failed", "err", err)
		} else {
			h.synced.Store(true)
		}
		writeJSON(w, ans)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, h.status(r.Context()))
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// status gathers what GET /status reports.
func (h *healing) status(ctx context.Context) healthStatus {
	var st healthStatus
	st.EventSub.Status = h.manager.Status()
	st.EventSub.Callback, st.EventSub.Generation = h.manager.Callback, h.generation
	st.EventSub.Problem = h.manager.Problem()
	st.Broadcaster = h.broadcaster.Status()
	if last, ok, err := h.svc.LastReconcile(ctx); err == nil && ok {
		st.LastReconcile = &last
	}
	h.mu.Lock()
	st.ReconcileErr = h.reconcileErr
	h.mu.Unlock()
	st.Warnings = append([]string{}, h.warnings()...)
	return st
}

// serveReconcile runs a pass for "subrole reconcile", streaming progress.
func (h *healing) serveReconcile(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{}) // a pass over 100,000 subscribers takes minutes (Helix allows 800 requests a minute)
	enc := json.NewEncoder(w)
	var mu sync.Mutex
	streaming := false
	var last time.Time
	send := func(l reconcileLine) {
		mu.Lock()
		defer mu.Unlock()
		if !streaming {
			w.Header().Set("Content-Type", "application/x-ndjson")
			streaming = true
		}
		enc.Encode(l)
		rc.Flush()
	}
	var lastStage subrole.ReconcileStage
	progress := func(stage subrole.ReconcileStage, rep subrole.ReconcileReport) {
		if stage == lastStage && time.Since(last) < time.Second { // a line per stage, then one a second
			return
		}
		last, lastStage = time.Now(), stage
		send(reconcileLine{Stage: stage, Report: &rep})
	}
	h.log.Info("admin: reconcile requested through the admin socket")
	rep, err := h.reconcile(r.Context(), progress)
	if err != nil && !streaming {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, subrole.ErrReconcileRunning):
			status = http.StatusConflict
		case errors.Is(err, twitch.ErrNotConnected):
			status = http.StatusServiceUnavailable
		}
		http.Error(w, err.Error(), status)
		return
	}
	if err != nil {
		h.log.Warn("admin: reconcile failed", "err", err)
		send(reconcileLine{Error: err.Error()})
		return
	}
	send(reconcileLine{Done: true, Report: &rep})
}
