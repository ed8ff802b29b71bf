package twitchtest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The EventSub subscription statuses the fake uses.
const (
	StatusEnabled             = "enabled"
	StatusVerificationPending = "webhook_callback_verification_pending"
	StatusVerificationFailed  = "webhook_callback_verification_failed"
	StatusFailuresExceeded    = "notification_failures_exceeded"
	StatusAuthorizationRevoke = "authorization_revoked"
	StatusUserRemoved         = "user_removed"
	StatusVersionRemoved      = "version_removed"
)

// MaxTotalCost is the fake's max_total_cost, Twitch's default for an
// application.
const MaxTotalCost = 10000

// EventSubSubscription is an EventSub webhook subscription the fake holds.
type EventSubSubscription struct {
	ID        string
	Type      string
	Version   string
	Status    string
	Condition map[string]string
	Callback  string
	Secret    string // what it signs its messages with
	CreatedAt time.Time
	Cost      int
}

// Delivery is the outcome of one message the fake posted to a callback.
type Delivery struct {
	SubscriptionID string
	Status         int    // the callback's HTTP status; 0 when it was not reached
	Body           string // the callback's answer
	Err            error
}

// eventSubState is the fake's EventSub subscriptions; guarded by Server.mu.
type eventSubState struct {
	subs    []*EventSubSubscription // in creation order
	changed chan struct{}           // closed and replaced on every change
	ctx     context.Context         // cancelled by Close: stops verifications
	cancel  context.CancelFunc
	wg      sync.WaitGroup         // verifications in flight
	hold    bool                   // SetVerificationHold
	held    []EventSubSubscription // created while held, not yet verified
}

// eventSubTypes lists the types and versions the fake accepts, with the
// condition field each needs.
var eventSubTypes = map[string]struct {
	version   string
	condition string
}{
	SubscribeType:           {"1", "broadcaster_user_id"},
	SubscriptionEndType:     {"1", "broadcaster_user_id"},
	SubscriptionMessageType: {"1", "broadcaster_user_id"},
	SubscriptionGiftType:    {"1", "broadcaster_user_id"},
	AuthorizationRevokeType: {"1", "client_id"},
}

// changedLocked wakes WaitEventSub; the caller holds s.mu.
func (s *Server) changedLocked() {
	if s.es.changed != nil {
		close(s.es.changed)
		s.es.changed = nil
	}
}

// verifyCtxLocked returns the context verifications run under; the caller
// holds s.mu.
func (s *Server) verifyCtxLocked() context.Context {
	if s.es.ctx == nil {
		s.es.ctx, s.es.cancel = context.WithCancel(context.Background())
	}
	return s.es.ctx
}

// closeEventSub stops verifications in flight and waits for them.
func (s *Server) closeEventSub() {
	s.mu.Lock()
	if s.es.cancel != nil {
		s.es.cancel()
	}
	s.mu.Unlock()
	s.es.wg.Wait()
}

func (sub *EventSubSubscription) clone() EventSubSubscription {
	c := *sub
	c.Condition = maps.Clone(sub.Condition)
	return c
}

// EventSubSubscriptions returns every EventSub subscription the fake holds,
// in creation order.
func (s *Server) EventSubSubscriptions() []EventSubSubscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]EventSubSubscription, 0, len(s.es.subs))
	for _, sub := range s.es.subs {
		out = append(out, sub.clone())
	}
	return out
}

// AddEventSubSubscription adds a subscription as if it had been created
// earlier (by another application instance, an older callback, or a
// secret since rotated), without verification. Empty ID, Status, Version
// and CreatedAt get a random id, "enabled", "1" and now.
func (s *Server) AddEventSubSubscription(sub EventSubSubscription) EventSubSubscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sub.ID == "" {
		sub.ID = newUUID()
	}
	if sub.Status == "" {
		sub.Status = StatusEnabled
	}
	if sub.Version == "" {
		sub.Version = "1"
	}
	if sub.CreatedAt.IsZero() {
		sub.CreatedAt = s.now()
	}
	sub.Condition = maps.Clone(sub.Condition)
	s.es.subs = append(s.es.subs, &sub)
	s.changedLocked()
	return sub.clone()
}

// WaitEventSub waits until ok accepts the fake's subscriptions (as
// EventSubSubscriptions returns them) or ctx is done.
func (s *Server) WaitEventSub(ctx context.Context, ok func([]EventSubSubscription) bool) error {
	for {
		subs := s.EventSubSubscriptions()
		if ok(subs) {
			return nil
		}
		s.mu.Lock()
		if s.es.changed == nil {
			s.es.changed = make(chan struct{})
		}
		ch := s.es.changed
		s.mu.Unlock()
		if !slices.EqualFunc(subs, s.EventSubSubscriptions(), func(a, b EventSubSubscription) bool { return a.ID == b.ID && a.Status == b.Status }) {
			continue // changed between the look and the wait
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("twitchtest: wait for eventsub subscriptions: %w", ctx.Err())
		}
	}
}

// senderFor returns a Sender that signs and posts as subscription sub.
func (s *Server) senderFor(sub EventSubSubscription) *Sender {
	snd := s.Sender(sub.Callback, sub.Secret)
	snd.Client = s.opts.CallbackClient
	snd.SubscriptionIDs = map[string]string{sub.Type: sub.ID}
	return snd
}

// RevokeEventSubSubscription revokes a subscription as Twitch does: its
// status becomes status (StatusFailuresExceeded, StatusAuthorizationRevoke,
// StatusUserRemoved, StatusVersionRemoved) and a signed revocation message
// is posted to its callback. It returns that delivery.
func (s *Server) RevokeEventSubSubscription(ctx context.Context, id, status string) (Delivery, error) {
	s.mu.Lock()
	i := slices.IndexFunc(s.es.subs, func(sub *EventSubSubscription) bool { return sub.ID == id })
	if i < 0 {
		s.mu.Unlock()
		return Delivery{}, fmt.Errorf("twitchtest: no eventsub subscription %s", id)
	}
	s.es.subs[i].Status = status
	sub := s.es.subs[i].clone()
	s.changedLocked()
	s.mu.Unlock()
	return s.deliver(ctx, sub, func(snd *Sender) Message { return snd.Revocation(sub.Type, status) }), nil
}

// Publish delivers a notification to every enabled subscription of its
// type, as Twitch does when the event happens: build makes the message with
// a Sender that signs with that subscription's secret and names its id
// (e.g. func(s *Sender) Message { return s.Subscribe(...) }). It returns one
// Delivery per subscription, and an error when none is enabled.
func (s *Server) Publish(ctx context.Context, build func(*Sender) Message) ([]Delivery, error) {
	probe := build(s.Sender("", ""))
	s.mu.Lock()
	var targets []EventSubSubscription
	for _, sub := range s.es.subs {
		if sub.Status == StatusEnabled && sub.Type == probe.SubscriptionType && s.conditionMatchesLocked(sub) {
			targets = append(targets, sub.clone())
		}
	}
	s.mu.Unlock()
	if len(targets) == 0 {
		return nil, fmt.Errorf("twitchtest: no enabled %s subscription to deliver to", probe.SubscriptionType)
	}
	out := make([]Delivery, 0, len(targets))
	for _, sub := range targets {
		out = append(out, s.deliver(ctx, sub, build))
	}
	return out, nil
}

// conditionMatchesLocked reports whether sub is about the fake's channel or
// application.
func (s *Server) conditionMatchesLocked(sub *EventSubSubscription) bool {
	if id, ok := sub.Condition["broadcaster_user_id"]; ok {
		return id == s.opts.BroadcasterID
	}
	return sub.Condition["client_id"] == s.opts.ClientID
}

// deliver posts one message for sub to its callback.
func (s *Server) deliver(ctx context.Context, sub EventSubSubscription, build func(*Sender) Message) Delivery {
	snd := s.senderFor(sub)
	status, body, err := snd.Send(ctx, build(snd))
	s.logf("eventsub: delivered to %s (%s): %d %v", sub.ID, sub.Type, status, err)
	return Delivery{SubscriptionID: sub.ID, Status: status, Body: body, Err: err}
}

// revokeAuthorizationLocked revokes the subscriptions that needed userID's
// authorization and returns them; the caller holds s.mu and delivers the
// revocations after unlocking.
func (s *Server) revokeAuthorizationLocked(userID string) []EventSubSubscription {
	var out []EventSubSubscription
	for _, sub := range s.es.subs {
		if sub.Condition["broadcaster_user_id"] == userID && sub.Status == StatusEnabled {
			sub.Status = StatusAuthorizationRevoke
			out = append(out, sub.clone())
		}
	}
	if len(out) > 0 {
		s.changedLocked()
	}
	return out
}

// authorizedLocked reports whether userID has authorized the application
// with scope (some token of theirs, expired or not, was issued with it and
// not revoked); the caller holds s.mu.
func (s *Server) authorizedLocked(userID, scope string) bool {
	for _, g := range s.access {
		if g.userID == userID && !g.revoked && hasScope(g, scope) {
			return true
		}
	}
	return false
}

// --- Helix /eventsub/subscriptions ---

// eventSubJSON is one subscription in Helix's format; the caller holds s.mu.
func eventSubJSON(sub *EventSubSubscription) map[string]any {
	return map[string]any{"id": sub.ID, "type": sub.Type, "version": sub.Version, "status": sub.Status,
		"condition": maps.Clone(sub.Condition), "transport": map[string]any{"method": "webhook", "callback": sub.Callback},
		"created_at": sub.CreatedAt.UTC().Format(TimeLayout), "cost": sub.Cost}
}

// totalsLocked returns total and total_cost; the caller holds s.mu.
func (s *Server) totalsLocked() (int, int) {
	cost := 0
	for _, sub := range s.es.subs {
		if sub.Status == StatusEnabled || sub.Status == StatusVerificationPending {
			cost += sub.Cost
		}
	}
	return len(s.es.subs), cost
}

// helixEventSub serves GET, POST and DELETE /helix/eventsub/subscriptions.
func (s *Server) helixEventSub(r *http.Request, body []byte, now time.Time) reply {
	return s.helix(r, now, func(g *grant) reply {
		if g.userID != "" {
			return helixErr(http.StatusBadRequest, "webhook subscriptions must be managed with an app access token")
		}
		switch r.Method {
		case http.MethodGet:
			return s.listEventSub(r)
		case http.MethodPost:
			return s.createEventSub(body, now)
		case http.MethodDelete:
			return s.deleteEventSub(r)
		}
		return helixErr(http.StatusMethodNotAllowed, "Method Not Allowed")
	})
}

func (s *Server) listEventSub(r *http.Request) reply {
	q := r.URL.Query()
	offset := 0
	if c := q.Get("after"); c != "" {
		b, err := base64.RawURLEncoding.DecodeString(c)
		n, err2 := strconv.Atoi(strings.TrimPrefix(string(b), "es:"))
		if err != nil || err2 != nil || !strings.HasPrefix(string(b), "es:") || n < 0 {
			return helixErr(http.StatusBadRequest, "Invalid cursor")
		}
		offset = n
	}
	size := s.opts.EventSubPageSize
	if size <= 0 {
		size = 100
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var matched []*EventSubSubscription
	for _, sub := range s.es.subs {
		if (q.Get("status") == "" || sub.Status == q.Get("status")) && (q.Get("type") == "" || sub.Type == q.Get("type")) &&
			(q.Get("subscription_id") == "" || sub.ID == q.Get("subscription_id")) {
			matched = append(matched, sub)
		}
	}
	end := min(offset+size, len(matched))
	data := []any{}
	for _, sub := range matched[min(offset, len(matched)):end] {
		data = append(data, eventSubJSON(sub))
	}
	pagination := map[string]any{}
	if end < len(matched) {
		pagination["cursor"] = base64.RawURLEncoding.EncodeToString([]byte("es:" + strconv.Itoa(end)))
	}
	total, cost := s.totalsLocked()
	return reply{status: http.StatusOK, body: map[string]any{"data": data, "total": total, "total_cost": cost,
		"max_total_cost": MaxTotalCost, "pagination": pagination}}
}

// createEventSub validates a POST body the way Twitch does, stores the
// subscription as pending and starts its verification.
func (s *Server) createEventSub(body []byte, now time.Time) reply {
	var in struct {
		Type      string            `json:"type"`
		Version   string            `json:"version"`
		Condition map[string]string `json:"condition"`
		Transport struct {
			Method   string `json:"method"`
			Callback string `json:"callback"`
			Secret   string `json:"secret"`
		} `json:"transport"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return helixErr(http.StatusBadRequest, "Invalid JSON body")
	}
	spec, ok := eventSubTypes[in.Type]
	switch {
	case !ok || in.Version != spec.version:
		return helixErr(http.StatusBadRequest, fmt.Sprintf("unsupported subscription type %q version %q", in.Type, in.Version))
	case in.Condition[spec.condition] == "" || len(in.Condition) != 1:
		return helixErr(http.StatusBadRequest, "the condition must have exactly the field "+spec.condition)
	case in.Transport.Method != "webhook":
		return helixErr(http.StatusBadRequest, "the fake supports the webhook transport only")
	case len(in.Transport.Secret) < 10 || len(in.Transport.Secret) > 100:
		return helixErr(http.StatusBadRequest, "the transport secret must be 10 to 100 characters")
	}
	if msg := s.checkCallback(in.Transport.Callback); msg != "" {
		return helixErr(http.StatusBadRequest, msg)
	}
	sub := &EventSubSubscription{ID: newUUID(), Type: in.Type, Version: in.Version, Status: StatusVerificationPending,
		Condition: maps.Clone(in.Condition), Callback: in.Transport.Callback, Secret: in.Transport.Secret, CreatedAt: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if spec.condition == "client_id" {
		if in.Condition["client_id"] != s.opts.ClientID {
			return helixErr(http.StatusForbidden, "the client_id in the condition must be the application's")
		}
		sub.Cost = 1 // needs no user's authorization, so it costs
	} else if !s.authorizedLocked(in.Condition["broadcaster_user_id"], ScopeChannelSubscriptions) {
		return helixErr(http.StatusForbidden, "subscription missing proper authorization")
	}
	same := 0
	for _, o := range s.es.subs {
		if o.Type != sub.Type || !maps.Equal(o.Condition, sub.Condition) {
			continue
		}
		same++
		if o.Version == sub.Version && o.Callback == sub.Callback && (o.Status == StatusEnabled || o.Status == StatusVerificationPending) {
			return helixErr(http.StatusConflict, "subscription already exists")
		}
	}
	if same >= 3 {
		return helixErr(http.StatusTooManyRequests, "the subscription limit for this type and condition is reached")
	}
	if _, cost := s.totalsLocked(); cost+sub.Cost > MaxTotalCost {
		return helixErr(http.StatusTooManyRequests, "max_total_cost exceeded")
	}
	s.es.subs = append(s.es.subs, sub)
	s.changedLocked()
	if s.es.hold {
		s.es.held = append(s.es.held, sub.clone())
	} else {
		s.startVerifyLocked(sub.clone())
	}
	total, cost := s.totalsLocked()
	return reply{status: http.StatusAccepted, body: map[string]any{"data": []any{eventSubJSON(sub)}, "total": total,
		"total_cost": cost, "max_total_cost": MaxTotalCost}}
}

// startVerifyLocked verifies sub in the background; the caller holds s.mu.
func (s *Server) startVerifyLocked(sub EventSubSubscription) {
	ctx := s.verifyCtxLocked()
	s.es.wg.Add(1)
	go func() {
		defer s.es.wg.Done()
		s.verify(ctx, sub)
	}()
}

// SetVerificationHold makes Twitch slow: while hold is true, new
// subscriptions stay webhook_callback_verification_pending and no challenge
// is sent; setting it back to false sends the challenges of the ones
// created meanwhile.
func (s *Server) SetVerificationHold(hold bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.es.hold = hold
	if !hold {
		for _, sub := range s.es.held {
			s.startVerifyLocked(sub)
		}
		s.es.held = nil
	}
}

// RemoveEventSubSubscription deletes a subscription as if someone else had
// (another tool, or Twitch cleaning up), without telling its callback.
func (s *Server) RemoveEventSubSubscription(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.es.subs)
	s.es.subs = slices.DeleteFunc(s.es.subs, func(sub *EventSubSubscription) bool { return sub.ID == id })
	s.changedLocked()
	return len(s.es.subs) < n
}

// checkCallback returns why Twitch would refuse callback, or "".
func (s *Server) checkCallback(callback string) string {
	u, err := url.Parse(callback)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "the callback must be an absolute https URL"
	}
	if s.opts.InsecureCallbacks {
		return ""
	}
	if u.Scheme != "https" {
		return "the callback must use https"
	}
	if p := u.Port(); p != "" && p != "443" {
		return "the callback must use port 443"
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil && (ip.IsLoopback() || ip.IsPrivate()) {
		return "the callback must be reachable from the internet"
	}
	return ""
}

// verify sends the webhook_callback_verification challenge and enables the
// subscription when the callback answers 200 with exactly the challenge.
func (s *Server) verify(ctx context.Context, sub EventSubSubscription) {
	var challenge string
	d := s.deliver(ctx, sub, func(snd *Sender) Message {
		m := snd.Challenge(sub.Type)
		challenge = m.Challenge
		return m
	})
	status := StatusVerificationFailed
	if d.Err == nil && d.Status == http.StatusOK && d.Body == challenge {
		status = StatusEnabled
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.es.subs {
		if o.ID == sub.ID && o.Status == StatusVerificationPending {
			o.Status = status
			s.changedLocked()
		}
	}
	s.logf("eventsub: %s %s -> %s", sub.ID, sub.Type, status)
}

func (s *Server) deleteEventSub(r *http.Request) reply {
	id := r.URL.Query().Get("id")
	if id == "" {
		return helixErr(http.StatusBadRequest, `Missing required parameter "id"`)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.es.subs, func(sub *EventSubSubscription) bool { return sub.ID == id })
	if i < 0 {
		return helixErr(http.StatusNotFound, "subscription not found")
	}
	s.es.subs = slices.Delete(s.es.subs, i, i+1)
	s.changedLocked()
	return reply{status: http.StatusNoContent}
}

// errNoSubscription is returned by helpers that need a subscription of a type.
var errNoSubscription = errors.New("twitchtest: no such eventsub subscription")

// EventSubSubscriptionOf returns the first subscription of type subType in
// status (any status if ""), for tests that revoke "the channel.subscribe
// subscription".
func (s *Server) EventSubSubscriptionOf(subType, status string) (EventSubSubscription, error) {
	for _, sub := range s.EventSubSubscriptions() {
		if sub.Type == subType && (status == "" || sub.Status == status) {
			return sub, nil
		}
	}
	return EventSubSubscription{}, fmt.Errorf("%w: %s %s", errNoSubscription, subType, status)
}
