package twitch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"time"
)

// EventSub subscription management (GET, POST and DELETE
// /eventsub/subscriptions) with the app access token. These calls go through
// plain net/http rather than helix: helix's CreateEventSubSubscription
// refuses a callback that is not https (so it cannot be tested on loopback)
// and sends every condition field it knows, empty ones included, while
// Twitch wants exactly the fields of the type's condition.
//
// The types here are this package's own; the eventsub package's Manager
// needs an eventsub.API, which cmd/subrole adapts from these methods, so that
// neither adapter package imports the other.

// The EventSub sentinels.
var (
	// ErrConflict means Helix refused to create a subscription because an
	// equal one exists (409 Conflict).
	ErrConflict = errors.New("twitch: an equal subscription exists")
	// ErrNotFound means the subscription does not exist (404).
	ErrNotFound = errors.New("twitch: not found")
)

// EventSubSubscription is an EventSub subscription as Helix lists it.
type EventSubSubscription struct {
	ID        string
	Type      string
	Version   string
	Status    string            // "enabled", "webhook_callback_verification_pending", ...
	Condition map[string]string // e.g. {"broadcaster_user_id": "1337"}
	Method    string            // transport: "webhook", "websocket" or "conduit"
	Callback  string            // webhook transport only
	CreatedAt time.Time
	Cost      int
}

// EventSubList is every EventSub subscription of the application.
type EventSubList struct {
	Subscriptions []EventSubSubscription
	Total         int // subscriptions Twitch counts
	TotalCost     int
	MaxTotalCost  int
}

// wireEventSub is a subscription in Helix's JSON.
type wireEventSub struct {
	ID        string            `json:"id,omitempty"`
	Type      string            `json:"type"`
	Version   string            `json:"version"`
	Status    string            `json:"status,omitempty"`
	Condition map[string]string `json:"condition"`
	Transport struct {
		Method    string `json:"method"`
		Callback  string `json:"callback,omitempty"`
		Secret    string `json:"secret,omitempty"`
		SessionID string `json:"session_id,omitempty"`
		ConduitID string `json:"conduit_id,omitempty"`
	} `json:"transport"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	Cost      int       `json:"cost,omitempty"`
}

func (w wireEventSub) subscription() EventSubSubscription {
	return EventSubSubscription{ID: w.ID, Type: w.Type, Version: w.Version, Status: w.Status,
		Condition: w.Condition, Method: w.Transport.Method, Callback: w.Transport.Callback,
		CreatedAt: w.CreatedAt, Cost: w.Cost}
}

type wireEventSubPage struct {
	Data         []wireEventSub `json:"data"`
	Total        int            `json:"total"`
	TotalCost    int            `json:"total_cost"`
	MaxTotalCost int            `json:"max_total_cost"`
	Pagination   struct {
		Cursor string `json:"cursor"`
	} `json:"pagination"`
}

// EventSubSubscriptions lists every EventSub subscription of the
// application, following the cursor through all pages, with the app token.
func (c *Client) EventSubSubscriptions(ctx context.Context) (EventSubList, error) {
	var out EventSubList
	cursor := ""
	for page := 0; ; page++ {
		if page > 1000 {
			return out, &APIError{Op: "GET /eventsub/subscriptions", Message: "more than 1000 pages: the cursor does not end", Kind: ErrRejected}
		}
		q := url.Values{}
		if cursor != "" {
			q.Set("after", cursor)
		}
		var p wireEventSubPage
		err := c.WithAppToken(ctx, func(tok string) error {
			p = wireEventSubPage{}
			return c.helixJSON(ctx, "GET /eventsub/subscriptions", tok, http.MethodGet, "/eventsub/subscriptions", q, nil, &p)
		})
		if err != nil {
			return out, err
		}
		for _, w := range p.Data {
			out.Subscriptions = append(out.Subscriptions, w.subscription())
		}
		out.Total, out.TotalCost, out.MaxTotalCost = p.Total, p.TotalCost, p.MaxTotalCost
		if p.Pagination.Cursor == "" || len(p.Data) == 0 {
			return out, nil
		}
		cursor = p.Pagination.Cursor
	}
}

// CreateEventSubSubscription creates a webhook subscription of s.Type,
// s.Version and s.Condition delivering to s.Callback, signed with secret,
// with the app token, and returns it as Twitch created it (usually
// "webhook_callback_verification_pending"). An equal existing subscription
// fails with an error wrapping ErrConflict; a subscription the broadcaster
// has not authorized (403) with one wrapping ErrMissingScope.
func (c *Client) CreateEventSubSubscription(ctx context.Context, s EventSubSubscription, secret string) (EventSubSubscription, error) {
	const op = "POST /eventsub/subscriptions"
	var body wireEventSub
	body.Type, body.Version, body.Condition = s.Type, s.Version, maps.Clone(s.Condition)
	body.Transport.Method, body.Transport.Callback, body.Transport.Secret = "webhook", s.Callback, secret
	var p wireEventSubPage
	err := c.WithAppToken(ctx, func(tok string) error {
		p = wireEventSubPage{}
		return c.helixJSON(ctx, op, tok, http.MethodPost, "/eventsub/subscriptions", nil, body, &p)
	})
	if err != nil {
		return EventSubSubscription{}, err
	}
	if len(p.Data) != 1 {
		return EventSubSubscription{}, &APIError{Op: op, Status: http.StatusAccepted, Message: fmt.Sprintf("%d subscriptions in the answer, want 1", len(p.Data)), Kind: ErrRejected}
	}
	return p.Data[0].subscription(), nil
}

// DeleteEventSubSubscription deletes a subscription with the app token. A
// subscription that does not exist fails with an error wrapping ErrNotFound.
func (c *Client) DeleteEventSubSubscription(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("twitch: DELETE /eventsub/subscriptions: empty id")
	}
	return c.WithAppToken(ctx, func(tok string) error {
		return c.helixJSON(ctx, "DELETE /eventsub/subscriptions", tok, http.MethodDelete, "/eventsub/subscriptions", url.Values{"id": {id}}, nil, nil)
	})
}

// helixJSON sends a Helix request with token and Client-Id, body (if not
// nil) as JSON, and decodes a 2xx JSON answer into out (if not nil). A
// non-2xx answer becomes an *APIError: 401 wraps ErrUnauthorized (or
// ErrMissingScope when the message names a scope), 403 ErrMissingScope,
// 404 ErrNotFound, 409 ErrConflict, 429 and 5xx ErrUnavailable, other 4xx
// ErrRejected.
func (c *Client) helixJSON(ctx context.Context, op, token, method, path string, q url.Values, body, out any) error {
	u := c.apiURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return fmt.Errorf("twitch: %s: %w", op, err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("twitch: %s: %w", op, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json") // bytes.Reader: GetBody is set, so a 429 can be retried
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Client-Id", c.clientID)
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("twitch: %s: %w", op, ctx.Err())
		}
		return &APIError{Op: op, Message: transportMessage(err), Kind: ErrUnavailable}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode/100 != 2 {
		msg := twitchMessage(data)
		e := &APIError{Op: op, Status: resp.StatusCode, Message: cmpOr(msg, http.StatusText(resp.StatusCode)), Kind: ErrRejected}
		switch st := resp.StatusCode; {
		case st == http.StatusUnauthorized && containsFold(msg, "scope"):
			e.Kind = ErrMissingScope
		case st == http.StatusUnauthorized:
			e.Kind = ErrUnauthorized
		case st == http.StatusForbidden:
			e.Kind = ErrMissingScope
		case st == http.StatusNotFound:
			e.Kind = ErrNotFound
		case st == http.StatusConflict:
			e.Kind = ErrConflict
		case st == http.StatusTooManyRequests || st >= 500:
			e.Kind = ErrUnavailable
		}
		return e
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return &APIError{Op: op, Status: resp.StatusCode, Message: "undecodable answer: " + err.Error(), Kind: ErrUnavailable}
		}
	}
	return nil
}

func containsFold(s, sub string) bool {
	return bytes.Contains(bytes.ToLower([]byte(s)), bytes.ToLower([]byte(sub)))
}
