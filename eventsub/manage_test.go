package eventsub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/subrole/subrole"
)

// memAPI is an in-memory Helix EventSub API. New subscriptions start
// pending and are enabled on the next list, like a webhook that answered
// the challenge.
type memAPI struct {
	mu      sync.Mutex
	subs    []Registration
	n       int
	creates int
	deletes int
	secrets map[string]string // id -> secret
	fail409 bool
	never   bool // never enable (the callback does not answer)
	forbid  bool // refuse channel.* creates with 403
	refused int
}

func (a *memAPI) ListSubscriptions(ctx context.Context) ([]Registration, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := slices.Clone(a.subs)
	for i := range a.subs {
		if a.subs[i].Status == StatusVerificationPending && !a.never {
			a.subs[i].Status = StatusEnabled
		}
	}
	return out, nil
}

func (a *memAPI) CreateSubscription(ctx context.Context, s Registration, secret string) (Registration, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail409 {
		return Registration{}, fmt.Errorf("helix: 409: %w", ErrExists)
	}
	if a.forbid && s.Type != string(subrole.EventAuthorizationRevoke) {
		a.refused++
		return Registration{}, fmt.Errorf("helix: 403: %w", ErrNeedsBroadcaster)
	}
	a.creates++
	a.n++
	s.ID = fmt.Sprintf("sub-%d", a.n)
	s.Status = StatusVerificationPending
	s.Condition = maps.Clone(s.Condition)
	a.subs = append(a.subs, s)
	if a.secrets == nil {
		a.secrets = map[string]string{}
	}
	a.secrets[s.ID] = secret
	return s, nil
}

func (a *memAPI) DeleteSubscription(ctx context.Context, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.deletes++
	a.subs = slices.DeleteFunc(a.subs, func(s Registration) bool { return s.ID == id })
	return nil
}

func (a *memAPI) add(s Registration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	s.ID = fmt.Sprintf("old-%d", a.n)
	if s.Method == "" {
		s.Method = "webhook"
	}
	a.subs = append(a.subs, s)
}

// byStatus counts subscriptions by callback and status, after the pending
// ones had their chance to answer the challenge.
func (a *memAPI) byStatus() map[string]int {
	a.ListSubscriptions(context.Background())
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int{}
	for _, s := range a.subs {
		out[s.Callback+" "+s.Status]++
	}
	return out
}

const (
	testCallback = "https://subs.example.com/twitch_eventsub"
	ownQuery     = "?g=1&i=abc" // this installation's generation and id
)

func newManager(api API) (*Manager, *bytes.Buffer) {
	var logs bytes.Buffer
	return &Manager{API: api, Callback: testCallback + ownQuery, Secret: "new-secret-123", BroadcasterID: "1337", ClientID: "cid",
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), WaitEnabled: 2 * time.Second, Poll: time.Millisecond}, &logs
}

func TestSyncCreatesThenReuses(t *testing.T) {
	api := &memAPI{}
	m, _ := newManager(api)
	rep, err := m.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Created) != 5 || api.creates != 5 {
		t.Fatalf("created %v", rep.Created)
	}
	types := map[string]map[string]string{}
	for _, s := range api.subs {
		types[s.Type] = s.Condition
		if api.secrets[s.ID] != "new-secret-123" || s.Callback != testCallback+ownQuery || s.Version != "1" {
			t.Fatalf("subscription %+v secret %q", s, api.secrets[s.ID])
		}
	}
	if types["channel.subscribe"]["broadcaster_user_id"] != "1337" || types["user.authorization.revoke"]["client_id"] != "cid" || len(types) != 5 {
		t.Fatalf("conditions %v", types)
	}
	// A restart reuses them all.
	m2, _ := newManager(api)
	rep, err = m2.Sync(context.Background())
	if err != nil || len(rep.Created) != 0 || len(rep.Kept) != 5 || api.creates != 5 {
		t.Fatalf("second sync %+v %v", rep, err)
	}
}

func TestSyncReplacesStaleAndBroken(t *testing.T) {
	api := &memAPI{}
	cond := map[string]string{"broadcaster_user_id": "1337"}
	api.add(Registration{Type: "channel.subscribe", Version: "1", Status: StatusEnabled, Condition: cond, Callback: "https://old.example.com/twitch_eventsub?g=1&i=abc"})
	api.add(Registration{Type: "channel.subscription.end", Version: "1", Status: StatusFailuresExceeded, Condition: cond, Callback: testCallback + ownQuery})
	api.add(Registration{Type: "channel.subscription.gift", Version: "1", Status: StatusEnabled, Condition: cond, Callback: "https://other-app.example.com/hooks"})
	m, _ := newManager(api)
	rep, err := m.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Deleted) != 2 || rep.Foreign != 1 || len(rep.Created) != 5 {
		t.Fatalf("report %+v", rep)
	}
	got := api.byStatus()
	if got[testCallback+ownQuery+" enabled"] != 5 || got["https://other-app.example.com/hooks enabled"] != 1 || len(got) != 2 {
		t.Fatalf("subscriptions %v", got)
	}
}

func TestSyncLimitOfThree(t *testing.T) {
	api := &memAPI{}
	cond := map[string]string{"broadcaster_user_id": "1337"}
	for i := range 3 {
		api.add(Registration{Type: "channel.subscribe", Version: "1", Status: StatusEnabled, Condition: cond, Callback: fmt.Sprintf("https://other%d.example.com/x", i)})
	}
	m, _ := newManager(api)
	_, err := m.Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not subrole's") {
		t.Fatalf("err = %v", err)
	}
	if got := api.byStatus(); got["https://other0.example.com/x enabled"] != 1 {
		t.Fatalf("touched a foreign subscription: %v", got)
	}

	// With two foreign and our stale one, the stale one makes room.
	api = &memAPI{}
	for i := range 2 {
		api.add(Registration{Type: "channel.subscribe", Version: "1", Status: StatusEnabled, Condition: cond, Callback: fmt.Sprintf("https://other%d.example.com/x", i)})
	}
	api.add(Registration{Type: "channel.subscribe", Version: "1", Status: StatusEnabled, Condition: cond, Callback: "https://old.example.com/twitch_eventsub?g=1&i=abc"})
	m, _ = newManager(api)
	if _, err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := api.byStatus(); got["https://old.example.com/twitch_eventsub?g=1&i=abc enabled"] != 0 || got[testCallback+ownQuery+" enabled"] != 5 {
		t.Fatalf("subscriptions %v", got)
	}
}

func TestSync409IsExists(t *testing.T) {
	api := &memAPI{fail409: true}
	m, logs := newManager(api)
	if _, err := m.Sync(context.Background()); err != nil {
		t.Fatalf("409 treated as failure: %v", err)
	}
	if !strings.Contains(logs.String(), "already exists") {
		t.Fatal("409 not logged")
	}
}

func TestSecretRotation(t *testing.T) {
	api := &memAPI{}
	m, _ := newManager(api)
	m.Callback = testCallback + "?g=1&i=abc"
	m.Secret = "old-secret-123"
	if _, err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	api.byStatus() // the challenges are answered
	// Rotate: new secret, new generation; the callback that never answers keeps rotation open.
	m2, _ := newManager(api)
	m2.Callback = testCallback + "?g=2&i=abc"
	api.never = true
	if _, err := m2.Sync(context.Background()); err == nil || !m2.Rotating() {
		t.Fatalf("rotation finished without the new subscriptions enabled: %v", err)
	}
	if got := api.byStatus(); got[testCallback+"?g=1&i=abc enabled"] != 5 {
		t.Fatalf("old subscriptions deleted before the new ones worked: %v", got)
	}
	api.never = false
	if _, err := m2.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m2.Rotating() {
		t.Fatal("still rotating")
	}
	got := api.byStatus()
	if got[testCallback+"?g=2&i=abc enabled"] != 5 || len(got) != 1 {
		t.Fatalf("after rotation %v", got)
	}
	for _, s := range api.subs {
		if api.secrets[s.ID] != "new-secret-123" {
			t.Fatalf("%s signed with %q", s.ID, api.secrets[s.ID])
		}
	}
}

func TestRevocationRepair(t *testing.T) {
	api := &memAPI{}
	m, logs := newManager(api)
	if _, err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Twitch gave up on one: it is deleted and re-created.
	api.mu.Lock()
	api.subs[0].Status = StatusFailuresExceeded
	typ := api.subs[0].Type
	api.mu.Unlock()
	rep, err := m.HandleRevocation(context.Background(), subrole.Revocation{Type: subrole.EventType(typ), Version: "1", Status: StatusFailuresExceeded})
	if err != nil || len(rep.Created) != 1 || len(rep.Deleted) != 1 {
		t.Fatalf("repair %+v %v", rep, err)
	}

	// The broadcaster withdrew the authorization: alert, no create loop.
	api.mu.Lock()
	api.subs = nil
	api.mu.Unlock()
	creates := api.creates
	for range 3 {
		if _, err := m.HandleRevocation(context.Background(), subrole.Revocation{Type: subrole.EventSubscribe, Version: "1", Status: StatusAuthRevoked}); !errors.Is(err, ErrNeedsBroadcaster) {
			t.Fatalf("err = %v", err)
		}
		rep, err := m.Sync(context.Background())
		if err != nil || len(rep.Waiting) != 4 {
			t.Fatalf("sync while waiting: %+v %v", rep, err)
		}
	}
	// Only user.authorization.revoke, which needs no broadcaster, came back.
	if api.creates != creates+1 {
		t.Fatalf("%d creates without the broadcaster's authorization, want only user.authorization.revoke", api.creates-creates)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !m.NeedsBroadcaster() || !strings.Contains(m.Problem(), "connects again") {
		t.Fatalf("no error-level alert, or no problem reported: %q", m.Problem())
	}
	m.BroadcasterConnected()
	if rep, err := m.Sync(context.Background()); err != nil || len(rep.Created) != 4 || m.Problem() != "" {
		t.Fatalf("after reconnect %+v %v %q", rep, err, m.Problem())
	}
}

// TestSyncWithoutBroadcaster: before the broadcaster authorizes subrole, the
// channel subscriptions wait and Twitch is not asked for them; a 403 from
// Twitch stops the asking until they connect.
func TestSyncWithoutBroadcaster(t *testing.T) {
	api := &memAPI{}
	m, _ := newManager(api)
	var authErr error = errors.New("not connected")
	m.Authorized = func() error { return authErr }
	rep, err := m.Sync(context.Background())
	if err != nil || len(rep.Created) != 1 || len(rep.Waiting) != 4 || api.creates != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	if p := m.Problem(); !strings.Contains(p, "wait for the broadcaster") {
		t.Fatalf("problem %q", p)
	}
	authErr = nil
	if p := m.Problem(); p != "" {
		t.Fatalf("problem after connecting %q", p)
	}

	// Twitch refuses them (the authorization is gone on Twitch's side).
	api.forbid = true
	rep, err = m.Sync(context.Background())
	if err != nil || len(rep.Waiting) != 4 || !m.NeedsBroadcaster() || api.refused != 1 {
		t.Fatalf("after 403: %+v %v refused=%d", rep, err, api.refused)
	}
	for range 3 {
		m.Sync(context.Background())
	}
	if api.refused != 1 {
		t.Fatalf("asked Twitch %d times after a 403", api.refused)
	}
	api.forbid = false
	m.BroadcasterConnected()
	if rep, err := m.Sync(context.Background()); err != nil || len(rep.Created) != 4 || len(rep.Kept) != 1 {
		t.Fatalf("after reconnect %+v %v", rep, err)
	}
}

// TestSyncReplacesRevoked: a subscription found revoked (the revocation
// message was missed) or failed is deleted and re-created; one whose
// callback Twitch could not verify is also reported.
func TestSyncReplacesRevoked(t *testing.T) {
	api := &memAPI{}
	m, _ := newManager(api)
	cond := map[string]string{"broadcaster_user_id": "1337"}
	api.add(Registration{Type: "channel.subscribe", Version: "1", Status: StatusAuthRevoked, Condition: cond, Callback: testCallback + ownQuery})
	api.add(Registration{Type: "channel.subscription.end", Version: "1", Status: StatusVerificationFailed, Condition: cond, Callback: testCallback + ownQuery})
	rep, err := m.Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), "could not verify channel.subscription.end") || len(rep.Deleted) != 2 || len(rep.Created) != 5 {
		t.Fatalf("%+v %v", rep, err)
	}
	if got := api.byStatus(); got[testCallback+ownQuery+" enabled"] != 5 || len(got) != 1 {
		t.Fatalf("subscriptions %v", got)
	}
	// Once the new ones are verified, the next Sync is clean.
	if _, err := m.Sync(context.Background()); err != nil || m.Problem() != "" {
		t.Fatalf("%v %q", err, m.Problem())
	}
}

// TestRotationHeldWhileWaiting: old-generation subscriptions that cannot be
// replaced yet (no broadcaster) are kept, and the previous secret stays
// accepted.
func TestRotationHeldWhileWaiting(t *testing.T) {
	api := &memAPI{}
	m, _ := newManager(api)
	m.Callback = testCallback + "?g=1&i=abc"
	if _, err := m.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	m2, _ := newManager(api)
	m2.Callback = testCallback + "?g=2&i=abc"
	m2.Authorized = func() error { return errors.New("not connected") }
	rep, err := m2.Sync(context.Background())
	if err != nil || !m2.Rotating() || len(rep.Deleted) != 1 || len(rep.Created) != 1 {
		t.Fatalf("%+v %v rotating=%v", rep, err, m2.Rotating())
	}
	if got := api.byStatus(); got[testCallback+"?g=1&i=abc enabled"] != 4 {
		t.Fatalf("old channel subscriptions deleted without replacement: %v", got)
	}
}

func TestOurs(t *testing.T) {
	m := &Manager{Callback: "https://a.example/twitch_eventsub?g=2&i=abc"}
	for cb, want := range map[string]bool{
		"https://a.example/twitch_eventsub":                 true, // before callbacks carried ids
		"https://a.example/twitch_eventsub?g=3":             true,
		"https://old.example/twitch_eventsub?g=1&i=abc":     true,  // this installation at an older public URL
		"https://old.example/sub/twitch_eventsub?g=1&i=abc": true,  // under a path
		"https://staging.example/twitch_eventsub?g=1&i=zzz": false, // another installation of the same application
		"https://a.example/twitch_eventsub?g=1&i=zzz":       false,
		"https://old.example/twitch_eventsub?g=1":           false, // no id, another host
		"https://other.example/twitch_eventsub":             false, // another tool of the same application
		"https://a.example/other":                           false,
		"https://a.example/twitch_eventsub/more":            false,
	} {
		if got := m.Ours(Registration{Callback: cb, Method: "webhook"}); got != want {
			t.Errorf("Ours(%s) = %v", cb, got)
		}
	}
	if m.Ours(Registration{Method: "websocket"}) {
		t.Error("websocket subscription counted as ours")
	}
}

func TestRevocationStatuses(t *testing.T) {
	tests := []struct {
		name        string
		rev         subrole.Revocation
		wantErr     error  // errors.Is
		wantErrText string // or a substring
		creates     bool
	}{
		{"user removed", subrole.Revocation{Type: subrole.EventSubscribe, Version: "1", Status: StatusUserRemoved}, ErrNeedsBroadcaster, "", false},
		{"version removed, an older one", subrole.Revocation{Type: subrole.EventSubscribe, Version: "0", Status: StatusVersionRemoved}, nil, "", true},
		{"version removed, the newest we know", subrole.Revocation{Type: subrole.EventSubscribe, Version: "1", Status: StatusVersionRemoved}, nil, "upgrade subrole", false},
		{"authorization revoke subscription revoked", subrole.Revocation{Type: subrole.EventAuthorizationRevoke, Version: "1", Status: StatusAuthRevoked}, nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := &memAPI{}
			m, logs := newManager(api)
			if _, err := m.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			api.byStatus()
			// Twitch marks the subscription revoked.
			api.mu.Lock()
			for i := range api.subs {
				if api.subs[i].Type == string(tt.rev.Type) {
					api.subs[i].Status = tt.rev.Status
				}
			}
			api.mu.Unlock()
			creates := api.creates
			_, err := m.HandleRevocation(context.Background(), tt.rev)
			switch {
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			case tt.wantErrText != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErrText)):
				t.Fatalf("err = %v, want %q", err, tt.wantErrText)
			case tt.wantErr == nil && tt.wantErrText == "" && err != nil:
				t.Fatalf("err = %v", err)
			}
			if got := api.creates > creates; got != tt.creates {
				t.Fatalf("re-created: %v, want %v", got, tt.creates)
			}
			if err != nil && !strings.Contains(logs.String(), "level=ERROR") {
				t.Fatal("no error-level alert")
			}
		})
	}
}
