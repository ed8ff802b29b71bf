package eventsub

import (
	"context"
	"strings"
	"testing"
	"time"
)

// unverifiableAPI is a Helix whose webhook callback never passes
// verification: a pending subscription is reported
// webhook_callback_verification_failed from the next list on.
type unverifiableAPI struct{ *memAPI }

func (a unverifiableAPI) ListSubscriptions(ctx context.Context) ([]Registration, error) {
	a.mu.Lock()
	for i := range a.subs {
		if a.subs[i].Status == StatusVerificationPending {
			a.subs[i].Status = StatusVerificationFailed
		}
	}
	a.mu.Unlock()
	return a.memAPI.ListSubscriptions(ctx)
}

// setStatus sets the status of every subscription at callback.
func (a *memAPI) setStatus(callback, status string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range a.subs {
		if a.subs[i].Callback == callback {
			a.subs[i].Status = status
		}
	}
}

// rotateUnverified syncs generation 1 in place, then makes a Manager of
// generation 2 whose first Sync fails because Twitch does not verify the
// new subscriptions (they stay pending).
func rotateUnverified(t *testing.T) (*memAPI, *Manager) {
	t.Helper()
	api := &memAPI{}
	m, _ := newManager(api)
	m.Callback = testCallback + "?g=1&i=abc"
	m.Secret = "old-secret-123"
	if _, err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	api.byStatus() // the challenges are answered
	m2, _ := newManager(api)
	m2.Callback = testCallback + "?g=2&i=abc"
	m2.WaitEnabled = 10 * time.Millisecond // never enabled: only bounds the test's duration
	api.never = true
	if _, err := m2.Sync(context.Background()); err == nil || !m2.Rotating() {
		t.Fatalf("rotation finished without the new subscriptions enabled: %v", err)
	}
	if got := api.byStatus(); got[testCallback+"?g=1&i=abc enabled"] != 5 || got[testCallback+"?g=2&i=abc "+StatusVerificationPending] != 5 {
		t.Fatalf("after the first Sync: %v", got)
	}
	return api, m2
}

// TestRotationKeepsOldWhileReplacementPending: the next Sync (the retry)
// must not take the still-pending replacements as done: the working old
// subscriptions stay, the previous secret stays accepted, and the Sync
// fails until the new ones are enabled.
func TestRotationKeepsOldWhileReplacementPending(t *testing.T) {
	api, m2 := rotateUnverified(t)
	for range 2 {
		rep, err := m2.Sync(context.Background())
		if err == nil || !strings.Contains(err.Error(), "not enabled") {
			t.Fatalf("Sync succeeded with the replacements pending: %+v %v", rep, err)
		}
		if len(rep.Deleted) != 0 || len(rep.Created) != 0 || !m2.Rotating() || m2.Problem() == "" {
			t.Fatalf("report %+v rotating %v problem %q", rep, m2.Rotating(), m2.Problem())
		}
		if got := api.byStatus(); got[testCallback+"?g=1&i=abc enabled"] != 5 || got[testCallback+"?g=2&i=abc "+StatusVerificationPending] != 5 {
			t.Fatalf("old subscriptions deleted while their replacements are pending: %v", got)
		}
	}
	// Twitch verifies them at last: the old ones go, rotation ends.
	api.never = false
	rep, err := m2.Sync(context.Background())
	if err != nil || len(rep.Deleted) != 5 || len(rep.Created) != 0 || m2.Rotating() || m2.Problem() != "" {
		t.Fatalf("%+v %v rotating %v problem %q", rep, err, m2.Rotating(), m2.Problem())
	}
	if got := api.byStatus(); got[testCallback+"?g=2&i=abc enabled"] != 5 || len(got) != 1 {
		t.Fatalf("after rotation %v", got)
	}
}

// TestRotationKeepsOldWhenReplacementFails: a pending replacement that then
// fails verification is deleted and reported, and the old subscriptions keep
// delivering.
func TestRotationKeepsOldWhenReplacementFails(t *testing.T) {
	api, m2 := rotateUnverified(t)
	api.setStatus(testCallback+"?g=2&i=abc", StatusVerificationFailed)
	rep, err := m2.Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), "could not verify") || !m2.Rotating() || !strings.Contains(m2.Problem(), "could not verify") {
		t.Fatalf("%+v %v rotating %v problem %q", rep, err, m2.Rotating(), m2.Problem())
	}
	if got := api.byStatus(); got[testCallback+"?g=1&i=abc enabled"] != 5 {
		t.Fatalf("old subscriptions deleted although their replacements failed: %v", got)
	}
}

// TestRotationPrefersEnabled: of two current subscriptions for one target,
// the enabled one is kept and the pending duplicate is the stale one.
func TestRotationPrefersEnabled(t *testing.T) {
	api := &memAPI{never: true}
	m, _ := newManager(api)
	m.WaitEnabled = 10 * time.Millisecond
	for _, w := range m.Wanted() {
		w.Status = StatusVerificationPending
		api.add(w) // listed first: a pending duplicate
		w.Status = StatusEnabled
		api.add(w)
	}
	rep, err := m.Sync(context.Background())
	if err != nil || len(rep.Kept) != 5 || len(rep.Created) != 0 || len(rep.Deleted) != 5 || m.Rotating() {
		t.Fatalf("%+v %v", rep, err)
	}
	if got := api.byStatus(); got[testCallback+ownQuery+" enabled"] != 5 || len(got) != 1 {
		t.Fatalf("subscriptions %v", got)
	}
}

// TestVerificationFailureReported: a fresh install whose callback Twitch
// cannot verify fails every Sync with the reason, and /readyz (Problem) and
// the status page (LastError) say so.
func TestVerificationFailureReported(t *testing.T) {
	api := unverifiableAPI{&memAPI{}}
	m, _ := newManager(api)
	for i := range 3 {
		rep, err := m.Sync(context.Background())
		if err == nil || !strings.Contains(err.Error(), "could not verify") {
			t.Fatalf("sync %d: %+v %v", i, rep, err)
		}
		if st := m.Status(); !strings.Contains(st.LastError, "could not verify") || !strings.Contains(m.Problem(), "could not verify") {
			t.Fatalf("sync %d: status %+v problem %q", i, st, m.Problem())
		}
	}
}

// TestPendingWithoutStaleReported: subscriptions Twitch never verifies fail
// the Sync even with nothing to replace, on the Sync that created them and
// on the next ones.
func TestPendingWithoutStaleReported(t *testing.T) {
	api := &memAPI{never: true}
	m, _ := newManager(api)
	m.WaitEnabled = 10 * time.Millisecond
	for i := range 2 {
		rep, err := m.Sync(context.Background())
		if err == nil || !strings.Contains(err.Error(), "not enabled") || m.Problem() == "" {
			t.Fatalf("sync %d: %+v %v problem %q", i, rep, err, m.Problem())
		}
	}
	if api.creates != 5 {
		t.Fatalf("%d creates: the pending ones were re-created", api.creates)
	}
	api.never = false
	if _, err := m.Sync(context.Background()); err != nil || m.Problem() != "" {
		t.Fatalf("%v %q", err, m.Problem())
	}
}

// TestLimitOnOneTargetOthersSynced: one type at Twitch's limit with
// subscriptions that are not subrole's is reported, and the other types are
// still created and their stale ones replaced.
func TestLimitOnOneTargetOthersSynced(t *testing.T) {
	api := &memAPI{}
	cond := map[string]string{"broadcaster_user_id": "1337"}
	for _, h := range []string{"a", "b", "c"} {
		api.add(Registration{Type: "channel.subscribe", Version: "1", Status: StatusEnabled, Condition: cond, Callback: "https://" + h + ".other.example/x"})
	}
	m, _ := newManager(api)
	m.Callback = testCallback + "?g=2&i=abc"
	for _, w := range m.Wanted()[1:] {
		w.Callback = testCallback + "?g=1&i=abc"
		w.Status = StatusEnabled
		api.add(w)
	}
	rep, err := m.Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), "channel.subscribe already has 3") {
		t.Fatalf("%+v %v", rep, err)
	}
	if len(rep.Created) != 4 || len(rep.Deleted) != 4 || rep.Foreign != 3 || m.Rotating() {
		t.Fatalf("report %+v rotating %v", rep, m.Rotating())
	}
	got := api.byStatus()
	if got[testCallback+"?g=2&i=abc enabled"] != 4 || got[testCallback+"?g=1&i=abc enabled"] != 0 || len(got) != 4 {
		t.Fatalf("subscriptions %v", got)
	}
	if !strings.Contains(m.Problem(), "channel.subscribe already has 3") {
		t.Fatalf("problem %q", m.Problem())
	}
}

// revokingAPI is a Helix on which Twitch revokes each new subscription
// (authorization_revoked) before it is verified.
type revokingAPI struct{ *memAPI }

func (a revokingAPI) ListSubscriptions(ctx context.Context) ([]Registration, error) {
	a.mu.Lock()
	for i := range a.subs {
		if a.subs[i].Status == StatusVerificationPending {
			a.subs[i].Status = StatusAuthRevoked
		}
	}
	a.mu.Unlock()
	return a.memAPI.ListSubscriptions(ctx)
}

// TestWaitEndsOnRevoked: Sync stops waiting at once for a subscription
// revoked before it was enabled (it never will be), so the revocations
// queued behind the Sync are handled.
func TestWaitEndsOnRevoked(t *testing.T) {
	api := revokingAPI{&memAPI{}}
	m, _ := newManager(api)
	m.WaitEnabled = time.Hour // a Sync that waits for it makes the test time out
	rep, err := m.Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), StatusAuthRevoked) || len(rep.Created) != 5 {
		t.Fatalf("%+v %v", rep, err)
	}
}
