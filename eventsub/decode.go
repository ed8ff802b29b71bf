package eventsub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/subrole/subrole"
)

// The headers Twitch sends with every webhook request, in canonical form.
const (
	HeaderMessageID           = "Twitch-Eventsub-Message-Id"
	HeaderMessageRetry        = "Twitch-Eventsub-Message-Retry"
	HeaderMessageType         = "Twitch-Eventsub-Message-Type"
	HeaderMessageSignature    = "Twitch-Eventsub-Message-Signature"
	HeaderMessageTimestamp    = "Twitch-Eventsub-Message-Timestamp"
	HeaderSubscriptionType    = "Twitch-Eventsub-Subscription-Type"
	HeaderSubscriptionVersion = "Twitch-Eventsub-Subscription-Version"
)

// MessageType is the value of the Twitch-Eventsub-Message-Type header.
type MessageType string

// The webhook message types.
const (
	// MessageNotification carries an event.
	MessageNotification MessageType = "notification"
	// MessageVerification carries the challenge that proves we own the
	// callback; Twitch sends it once after a subscription is created.
	MessageVerification MessageType = "webhook_callback_verification"
	// MessageRevocation says Twitch revoked one of our subscriptions.
	MessageRevocation MessageType = "revocation"
)

// ErrUnknownMessageType is returned (wrapped) by Decode for a
// Twitch-Eventsub-Message-Type other than the three MessageType constants.
var ErrUnknownMessageType = errors.New("eventsub: unknown message type")

// FieldError reports a missing or invalid field of a webhook message. Decode
// returns it for every problem except an unknown message type.
type FieldError struct {
	// Field names what is wrong: a header name, "body" for the JSON as a
	// whole, or a JSON path such as "event.tier" or "subscription.type".
	Field string
	// Problem says what is wrong with it, for example "missing".
	Problem string
}

// Error returns "eventsub: <field>: <problem>".
func (e *FieldError) Error() string { return "eventsub: " + e.Field + ": " + e.Problem }

func missing(field string) error { return &FieldError{Field: field, Problem: "missing"} }

// Subscription is the part of a message's "subscription" object subrole
// uses.
type Subscription struct {
	ID                string            // subscription.id
	Type              subrole.EventType // subscription.type, known or not
	Version           string            // subscription.version
	Status            string            // subscription.status: "enabled", or why it was revoked
	BroadcasterUserID string            // subscription.condition.broadcaster_user_id, if any
	ClientID          string            // subscription.condition.client_id, if any
}

// Message is one decoded EventSub webhook message.
type Message struct {
	ID        string      // Twitch-Eventsub-Message-Id
	Type      MessageType // Twitch-Eventsub-Message-Type
	Timestamp time.Time   // Twitch-Eventsub-Message-Timestamp
	Retry     int         // Twitch-Eventsub-Message-Retry; 0 when absent or not a number

	Subscription Subscription // the body's subscription object

	// Challenge is the string to answer a MessageVerification with.
	Challenge string

	// BroadcasterID is event.broadcaster_user_id of a notification of a known
	// channel.* type.
	BroadcasterID string
	// ClientID is event.client_id of a user.authorization.revoke
	// notification.
	ClientID string

	// Event is the decoded event of a notification whose subscription type
	// is Known; otherwise it is the zero Event. Event.Received is left zero
	// for the caller to set.
	Event subrole.Event
}

// Revocation returns the revocation a MessageRevocation reports; At is the
// message timestamp.
func (m *Message) Revocation() subrole.Revocation {
	return subrole.Revocation{
		SubscriptionID: m.Subscription.ID,
		Type:           m.Subscription.Type,
		Version:        m.Subscription.Version,
		Status:         m.Subscription.Status,
		At:             m.Timestamp,
	}
}

// Decode decodes a webhook message from its request headers and raw body. It
// does not verify the signature (see Verify) or judge the timestamp's age.
//
// The id, type and timestamp headers are required; the timestamp must be RFC
// 3339 (Twitch sends nanoseconds). For a notification, subscription.type is
// required; when the type is one subrole knows (subrole.EventType.Known) the
// event is decoded into m.Event and every field subrole relies on is checked.
// A notification of an unknown type is not an error: m.Event stays zero.
//
// Errors are *FieldError, or wrap ErrUnknownMessageType.
func Decode(header http.Header, body []byte) (Message, error) {
	var m Message
	m.ID = header.Get(HeaderMessageID)
	if m.ID == "" {
		return m, missing(HeaderMessageID)
	}
	m.Type = MessageType(header.Get(HeaderMessageType))
	if m.Type == "" {
		return m, missing(HeaderMessageType)
	}
	ts := header.Get(HeaderMessageTimestamp)
	if ts == "" {
		return m, missing(HeaderMessageTimestamp)
	}
	t, err := parseTimestamp(ts)
	if err != nil {
		return m, err
	}
	m.Timestamp = t
	m.Retry = parseRetry(header.Get(HeaderMessageRetry))
	return m, m.decodeBody(body, false)
}

// parseTimestamp parses a Twitch-Eventsub-Message-Timestamp value.
func parseTimestamp(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, &FieldError{Field: HeaderMessageTimestamp, Problem: "not an RFC 3339 time"}
	}
	return t, nil
}

// parseRetry parses a Twitch-Eventsub-Message-Retry value, 0 when invalid.
func parseRetry(s string) int {
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// wireEnvelope is the body of every webhook message. The event is decoded in
// the same pass as the rest; its raw bytes are found afterwards by
// objectMember.
type wireEnvelope struct {
	Challenge    string            `json:"challenge"`
	Subscription *wireSubscription `json:"subscription"`
	Event        wireEvent         `json:"event"`
}

type wireSubscription struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Type      string `json:"type"`
	Version   string `json:"version"`
	Condition struct {
		BroadcasterUserID string `json:"broadcaster_user_id"`
		ClientID          string `json:"client_id"`
	} `json:"condition"`
}

// wireEvent holds the "event" fields of every type subrole knows. A JSON null
// leaves a field at its zero value, which is how Twitch's nullable
// streak_months, cumulative_total and anonymous gifters' user fields become 0
// and "". The two pointers tell a missing required number from a zero.
type wireEvent struct {
	UserID            string `json:"user_id"`
	UserLogin         string `json:"user_login"`
	BroadcasterUserID string `json:"broadcaster_user_id"`
	ClientID          string `json:"client_id"`
	Tier              string `json:"tier"`
	IsGift            bool   `json:"is_gift"`
	CumulativeMonths  *int   `json:"cumulative_months"`
	StreakMonths      int    `json:"streak_months"`
	Total             *int   `json:"total"`
	CumulativeTotal   int    `json:"cumulative_total"`
	IsAnonymous       bool   `json:"is_anonymous"`
}

// decodeBody fills m from body according to m.Type. m.ID, m.Type and
// m.Timestamp must be set. When own is true the caller hands body over and
// m.Event.Raw may point into it; otherwise Raw is a copy.
func (m *Message) decodeBody(body []byte, own bool) error {
	switch m.Type {
	case MessageNotification, MessageVerification, MessageRevocation:
	default:
		return fmt.Errorf("%w %.40q", ErrUnknownMessageType, string(m.Type))
	}
	var env wireEnvelope
	var eventErr error // a type error inside "event": fatal only for a known type
	if err := json.Unmarshal(body, &env); err != nil {
		te, ok := errors.AsType[*json.UnmarshalTypeError](err)
		if !ok || (te.Field != "event" && !strings.HasPrefix(te.Field, "event.")) {
			return jsonError(err)
		}
		eventErr = err // encoding/json decoded the rest as best it could
	}
	if s := env.Subscription; s != nil {
		m.Subscription = Subscription{
			ID:                s.ID,
			Type:              subrole.EventType(s.Type),
			Version:           s.Version,
			Status:            s.Status,
			BroadcasterUserID: s.Condition.BroadcasterUserID,
			ClientID:          s.Condition.ClientID,
		}
	}
	switch m.Type {
	case MessageVerification:
		if env.Challenge == "" {
			return missing("challenge")
		}
		m.Challenge = env.Challenge
		return nil
	case MessageRevocation:
		switch {
		case env.Subscription == nil:
			return missing("subscription")
		case m.Subscription.ID == "":
			return missing("subscription.id")
		case m.Subscription.Type == "":
			return missing("subscription.type")
		case m.Subscription.Status == "":
			return missing("subscription.status")
		case m.Subscription.Status == "enabled":
			return &FieldError{Field: "subscription.status", Problem: `"enabled" in a revocation`}
		}
		return nil
	}
	// MessageNotification.
	if env.Subscription == nil {
		return missing("subscription")
	}
	if m.Subscription.Type == "" {
		return missing("subscription.type")
	}
	raw, n := objectMember(body, "event")
	switch {
	case n > 1:
		return &FieldError{Field: "event", Problem: "more than one"}
	case len(raw) == 0 || raw[0] != '{':
		return &FieldError{Field: "event", Problem: "missing or not an object"}
	}
	if !m.Subscription.Type.Known() {
		return nil
	}
	if eventErr != nil {
		return jsonError(eventErr)
	}
	if !own {
		raw = bytes.Clone(raw)
	}
	return m.decodeEvent(&env.Event, raw[:len(raw):len(raw)])
}

// decodeEvent turns the event object of a notification of a known type into
// m.Event; raw is its JSON.
func (m *Message) decodeEvent(we *wireEvent, raw []byte) error {
	t := m.Subscription.Type
	m.Event = subrole.Event{
		MessageID: m.ID,
		Type:      t,
		Sent:      m.Timestamp,
		UserID:    we.UserID,
		UserLogin: we.UserLogin,
		Raw:       raw,
	}
	e := &m.Event
	if t == subrole.EventAuthorizationRevoke {
		if we.ClientID == "" {
			return missing("event.client_id")
		}
		if we.UserID == "" {
			return missing("event.user_id")
		}
		m.ClientID = we.ClientID
		return nil
	}

	// The channel.subscribe/.subscription.* types.
	if we.BroadcasterUserID == "" {
		return missing("event.broadcaster_user_id")
	}
	m.BroadcasterID = we.BroadcasterUserID
	if we.Tier == "" {
		return missing("event.tier")
	}
	tier, err := subrole.ParseTier(we.Tier)
	if err != nil {
		return &FieldError{Field: "event.tier", Problem: fmt.Sprintf("unknown tier %.16q (want 1000, 2000 or 3000)", we.Tier)}
	}
	e.Tier = tier

	switch t {
	case subrole.EventSubscribe, subrole.EventSubscriptionEnd:
		e.IsGift = we.IsGift
	case subrole.EventSubscriptionMessage:
		switch {
		case we.CumulativeMonths == nil:
			return missing("event.cumulative_months")
		case *we.CumulativeMonths < 0:
			return &FieldError{Field: "event.cumulative_months", Problem: "negative"}
		case we.StreakMonths < 0:
			return &FieldError{Field: "event.streak_months", Problem: "negative"}
		}
		e.CumulativeMonths = *we.CumulativeMonths
		e.StreakMonths = we.StreakMonths
	case subrole.EventSubscriptionGift:
		e.Anonymous = we.IsAnonymous
		switch {
		case we.Total == nil:
			return missing("event.total")
		case *we.Total < 1:
			return &FieldError{Field: "event.total", Problem: "less than 1"}
		case we.CumulativeTotal < 0:
			return &FieldError{Field: "event.cumulative_total", Problem: "negative"}
		}
		e.GiftTotal = *we.Total
		e.GiftCumulative = we.CumulativeTotal
	}
	if e.UserID == "" && !e.Anonymous {
		return missing("event.user_id")
	}
	return nil
}

// jsonError turns an encoding/json error into a *FieldError naming the field
// ("body" for the document as a whole).
func jsonError(err error) error {
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		field := te.Field
		if field == "" {
			field = "body"
		}
		return &FieldError{Field: field, Problem: fmt.Sprintf("got JSON %s, want %s", te.Value, jsonKind(te.Type))}
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return &FieldError{Field: "body", Problem: fmt.Sprintf("invalid JSON at offset %d", se.Offset)}
	}
	return &FieldError{Field: "body", Problem: "invalid JSON"}
}

// jsonKind names the JSON value a Go type decodes from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "another value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Struct:
		return "an object"
	}
	return "another value"
}
