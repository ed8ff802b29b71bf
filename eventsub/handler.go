package eventsub

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/subrole/subrole"
)

// MaxBodyBytes is the largest request body the Handler reads; a larger one is
// answered 413. Twitch's notifications are a few kilobytes at most.
const MaxBodyBytes = 1 << 20

// DefaultMaxAge is how old a message may be when Handler.MaxAge is zero; it
// is what Twitch recommends for guarding against replays.
const DefaultMaxAge = 10 * time.Minute

// FutureSkew is how far a message timestamp may be ahead of the Handler's
// clock. It tolerates clock drift between Twitch and us; a timestamp further
// ahead is refused (403), because accepting it would stretch the replay
// window beyond MaxAge.
const FutureSkew = time.Minute

// Reasons the Handler logs (key "reason") and passes to OnRejected. They are
// stable: alerts and a ban layer may depend on them.
const (
	ReasonMethodNotAllowed   = "method_not_allowed"   // 405: not a POST
	ReasonMissingHeader      = "missing_header"       // 400: an EventSub header is missing or empty
	ReasonMalformedSignature = "malformed_signature"  // 403: not "sha256=" + 64 hex digits
	ReasonBodyTooLarge       = "body_too_large"       // 413: body over MaxBodyBytes
	ReasonBodyUnreadable     = "body_unreadable"      // 400: reading the body failed
	ReasonBadSignature       = "bad_signature"        // 403: HMAC mismatch with Secret and PreviousSecret
	ReasonBadTimestamp       = "bad_timestamp"        // 400: signed, but the timestamp is not RFC 3339
	ReasonStaleTimestamp     = "stale_timestamp"      // 403: signed, but older than MaxAge
	ReasonFutureTimestamp    = "future_timestamp"     // 403: signed, but more than FutureSkew ahead
	ReasonUnknownMessageType = "unknown_message_type" // 400: signed, but the message type is unknown
	ReasonMalformedPayload   = "malformed_payload"    // 400: signed, but the body does not decode
)

// Reasons for signed notifications the Handler answers 204 without calling
// the Sink. They are logged at warn level but are not rejections: OnRejected
// is not called, because Twitch must not retry them.
const (
	ReasonUnknownSubscriptionType = "unknown_subscription_type"
	ReasonWrongBroadcaster        = "wrong_broadcaster"
	ReasonWrongClientID           = "wrong_client_id"
)

// Sink receives verified events; the core (subrole.Service) implements it.
// Implementations must be safe for concurrent use and should return quickly:
// Twitch expects an answer within a few seconds.
type Sink interface {
	// AcceptEvent durably records e unless its message id was seen before
	// (duplicate=true, nothing changed). When it returns nil the event is on
	// disk. Any error makes the Handler answer 500 so that Twitch retries.
	AcceptEvent(ctx context.Context, e subrole.Event) (duplicate bool, err error)
	// RecordRevocation durably records that Twitch revoked one of our
	// subscriptions, deduplicated by message id like events. Errors are
	// treated as for AcceptEvent.
	RecordRevocation(ctx context.Context, messageID string, r subrole.Revocation) (duplicate bool, err error)
}

// Handler is the http.Handler for Twitch's EventSub webhook (POST
// /twitch_eventsub). Set its fields before the first request and do not
// change them afterwards. A Handler is safe for concurrent use and must not
// be copied after first use.
type Handler struct {
	// Secret is the secret given to Twitch when creating the subscriptions.
	// Required: while it is empty every request is answered 500. Twitch
	// accepts 10 to 100 characters.
	Secret string
	// PreviousSecret is also accepted, so that subscriptions created with the
	// old secret keep working while the secret is rotated. Empty means none.
	PreviousSecret string
	// AcceptPrevious, if not nil, is asked before PreviousSecret is tried:
	// once every subscription signed with the old secret is gone, it returns
	// false and the old secret is refused. Nil means PreviousSecret is always
	// accepted.
	AcceptPrevious func() bool

	// BroadcasterID is the only broadcaster whose channel.* events are
	// accepted; events for any other broadcaster are logged at warn level and
	// answered 204 without effect. Empty accepts every broadcaster.
	BroadcasterID string
	// ClientID is the only client id whose user.authorization.revoke events
	// are accepted, handled like BroadcasterID. Empty accepts every client.
	ClientID string

	// Sink receives accepted events and revocations. Required: while it is
	// nil, notifications and revocations are answered 500.
	Sink Sink

	// Logger receives the Handler's log lines. Nil logs nothing.
	Logger *slog.Logger
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// MaxAge is how old a message timestamp may be. Zero or negative means
	// DefaultMaxAge (10 minutes).
	MaxAge time.Duration

	// OnVerified, if not nil, is called once for every request whose
	// signature is valid, before its timestamp and body are judged: such a
	// request comes from Twitch (or replays one of its messages), so a ban or
	// rate-limit layer should never penalise it, even when OnRejected
	// follows (a stale timestamp, a malformed body).
	OnVerified func(r *http.Request)
	// OnRejected, if not nil, is called once for every request answered 4xx,
	// with one of the Reason constants.
	OnRejected func(r *http.Request, reason string)

	macs macPool
}

// Validate reports configuration mistakes that would make the Handler refuse
// every request or accept forgeries. Call it at start.
func (h *Handler) Validate() error {
	var errs []error
	if n := len(h.Secret); n < 10 || n > 100 {
		errs = append(errs, fmt.Errorf("eventsub: Secret must be 10 to 100 characters, got %d", n))
	}
	if n := len(h.PreviousSecret); n != 0 && (n < 10 || n > 100) {
		errs = append(errs, fmt.Errorf("eventsub: PreviousSecret must be empty or 10 to 100 characters, got %d", n))
	}
	if h.Sink == nil {
		errs = append(errs, errors.New("eventsub: Sink is nil"))
	}
	if h.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("eventsub: MaxAge is negative (%v)", h.MaxAge))
	}
	return errors.Join(errs...)
}

// ServeHTTP verifies and answers one webhook request; see the package
// documentation for the steps and status codes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.reject(w, r, "", http.StatusMethodNotAllowed, ReasonMethodNotAllowed)
		return
	}
	if h.Secret == "" {
		h.log(r.Context(), slog.LevelError, "eventsub: handler has no secret, refusing request",
			slog.String("remote_addr", r.RemoteAddr))
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}

	hdr := r.Header
	id := hdr.Get(HeaderMessageID)
	ts := hdr.Get(HeaderMessageTimestamp)
	sig := hdr.Get(HeaderMessageSignature)
	typ := hdr.Get(HeaderMessageType)
	var absent string
	switch {
	case id == "":
		absent = HeaderMessageID
	case ts == "":
		absent = HeaderMessageTimestamp
	case sig == "":
		absent = HeaderMessageSignature
	case typ == "":
		absent = HeaderMessageType
	}
	if absent != "" {
		h.reject(w, r, id, http.StatusBadRequest, ReasonMissingHeader, slog.String("header", absent))
		return
	}
	want, ok := parseSignature(sig)
	if !ok {
		h.reject(w, r, id, http.StatusForbidden, ReasonMalformedSignature)
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		if errors.Is(err, errBodyTooLarge) {
			h.reject(w, r, id, http.StatusRequestEntityTooLarge, ReasonBodyTooLarge)
		} else {
			h.reject(w, r, id, http.StatusBadRequest, ReasonBodyUnreadable, slog.String("error", err.Error()))
		}
		return
	}
	if !h.verify(id, ts, body, &want) {
		h.reject(w, r, id, http.StatusForbidden, ReasonBadSignature)
		return
	}
	if h.OnVerified != nil {
		h.OnVerified(r)
	}

	now := h.now()
	t, err := parseTimestamp(ts)
	if err != nil {
		h.reject(w, r, id, http.StatusBadRequest, ReasonBadTimestamp, slog.String("timestamp", clip(ts)))
		return
	}
	if age := now.Sub(t); age > h.maxAge() {
		h.reject(w, r, id, http.StatusForbidden, ReasonStaleTimestamp, slog.Duration("age", age))
		return
	}
	if ahead := t.Sub(now); ahead > FutureSkew {
		h.reject(w, r, id, http.StatusForbidden, ReasonFutureTimestamp, slog.Duration("ahead", ahead))
		return
	}

	m := Message{ID: id, Type: MessageType(typ), Timestamp: t, Retry: parseRetry(hdr.Get(HeaderMessageRetry))}
	if err := m.decodeBody(body, true); err != nil {
		var fe *FieldError
		switch {
		case errors.Is(err, ErrUnknownMessageType):
			h.reject(w, r, id, http.StatusBadRequest, ReasonUnknownMessageType, slog.String("message_type", clip(typ)))
		case errors.As(err, &fe):
			h.reject(w, r, id, http.StatusBadRequest, ReasonMalformedPayload,
				slog.String("message_type", typ), slog.String("field", fe.Field), slog.String("problem", fe.Problem))
		default:
			h.reject(w, r, id, http.StatusBadRequest, ReasonMalformedPayload, slog.String("error", err.Error()))
		}
		return
	}

	switch m.Type {
	case MessageVerification:
		h.challenge(w, r, &m)
	case MessageRevocation:
		h.revocation(w, r, &m)
	default:
		h.notification(w, r, &m, now)
	}
}

// challenge answers a verified webhook_callback_verification.
func (h *Handler) challenge(w http.ResponseWriter, r *http.Request, m *Message) {
	h.log(r.Context(), slog.LevelInfo, "eventsub: answering webhook verification challenge",
		slog.String("event_id", m.ID),
		slog.String("subscription_type", clip(string(m.Subscription.Type))),
		slog.String("subscription_id", clip(m.Subscription.ID)))
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, m.Challenge)
}

// notification hands a verified notification to the Sink.
func (h *Handler) notification(w http.ResponseWriter, r *http.Request, m *Message, now time.Time) {
	ctx := r.Context()
	t := m.Subscription.Type
	switch {
	case !t.Known():
		h.ignore(w, r, m, ReasonUnknownSubscriptionType)
		return
	case t == subrole.EventAuthorizationRevoke:
		if h.ClientID != "" && m.ClientID != h.ClientID {
			h.ignore(w, r, m, ReasonWrongClientID, slog.String("client_id", clip(m.ClientID)))
			return
		}
	case h.BroadcasterID != "" && m.BroadcasterID != h.BroadcasterID:
		h.ignore(w, r, m, ReasonWrongBroadcaster, slog.String("broadcaster_id", clip(m.BroadcasterID)))
		return
	}
	if h.Sink == nil {
		h.log(ctx, slog.LevelError, "eventsub: handler has no sink, refusing event", slog.String("event_id", m.ID))
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	m.Event.Received = now
	dup, err := h.Sink.AcceptEvent(ctx, m.Event)
	if err != nil {
		h.log(ctx, slog.LevelError, "eventsub: recording event failed; Twitch will retry",
			slog.String("event_id", m.ID), slog.String("type", string(t)),
			slog.String("twitch_user", m.Event.UserID), slog.Int("retry", m.Retry), slog.Any("error", err))
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	if h.Logger != nil && h.Logger.Enabled(ctx, slog.LevelDebug) {
		msg := "eventsub: event accepted"
		if dup {
			msg = "eventsub: duplicate event ignored"
		}
		h.Logger.LogAttrs(ctx, slog.LevelDebug, msg, slog.String("event_id", m.ID),
			slog.String("type", string(t)), slog.String("twitch_user", m.Event.UserID), slog.Int("retry", m.Retry))
	}
	w.WriteHeader(http.StatusNoContent)
}

// revocation records a verified revocation.
func (h *Handler) revocation(w http.ResponseWriter, r *http.Request, m *Message) {
	ctx := r.Context()
	rev := m.Revocation()
	attrs := []slog.Attr{
		slog.String("event_id", m.ID),
		slog.String("subscription_id", clip(rev.SubscriptionID)),
		slog.String("subscription_type", clip(string(rev.Type))),
		slog.String("status", clip(rev.Status)),
	}
	if h.Sink == nil {
		h.log(ctx, slog.LevelError, "eventsub: Twitch revoked a subscription, and the handler has no sink to record it", attrs...)
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	dup, err := h.Sink.RecordRevocation(ctx, m.ID, rev)
	switch {
	case err != nil:
		h.log(ctx, slog.LevelError, "eventsub: Twitch revoked a subscription, and recording it failed; Twitch will retry",
			append(attrs, slog.Any("error", err))...)
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	case dup:
		h.log(ctx, slog.LevelInfo, "eventsub: duplicate revocation ignored", attrs...)
	default:
		h.log(ctx, slog.LevelError, "eventsub: Twitch revoked a subscription; recreate it", attrs...)
	}
	w.WriteHeader(http.StatusNoContent)
}

// ignore answers a verified notification 204 without calling the sink.
func (h *Handler) ignore(w http.ResponseWriter, r *http.Request, m *Message, reason string, attrs ...slog.Attr) {
	h.log(r.Context(), slog.LevelWarn, "eventsub: ignoring notification", append([]slog.Attr{
		slog.String("reason", reason),
		slog.String("remote_addr", r.RemoteAddr),
		slog.String("event_id", m.ID),
		slog.String("subscription_type", clip(string(m.Subscription.Type))),
	}, attrs...)...)
	w.WriteHeader(http.StatusNoContent)
}

// reject logs a refused request once, tells OnRejected and answers status
// with its standard text. id is the message id header, "" when absent.
func (h *Handler) reject(w http.ResponseWriter, r *http.Request, id string, status int, reason string, attrs ...slog.Attr) {
	if h.Logger != nil {
		base := []slog.Attr{
			slog.String("reason", reason),
			slog.Int("status", status),
			slog.String("remote_addr", r.RemoteAddr),
		}
		if id != "" {
			base = append(base, slog.String("event_id", clip(id)))
		}
		h.Logger.LogAttrs(r.Context(), slog.LevelWarn, "eventsub: request rejected", append(base, attrs...)...)
	}
	if h.OnRejected != nil {
		h.OnRejected(r, reason)
	}
	http.Error(w, http.StatusText(status), status)
}

func (h *Handler) log(ctx context.Context, level slog.Level, msg string, attrs ...slog.Attr) {
	if h.Logger != nil {
		h.Logger.LogAttrs(ctx, level, msg, attrs...)
	}
}

// verify checks the signature against Secret, then PreviousSecret.
func (h *Handler) verify(id, ts string, body []byte, want *[sha256.Size]byte) bool {
	m := h.macs.get(h.Secret)
	ok := m.verify(id, ts, body, want)
	h.macs.put(m)
	if !ok && h.PreviousSecret != "" && (h.AcceptPrevious == nil || h.AcceptPrevious()) {
		ok = newMAC(h.PreviousSecret).verify(id, ts, body, want)
	}
	return ok
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Handler) maxAge() time.Duration {
	if h.MaxAge > 0 {
		return h.MaxAge
	}
	return DefaultMaxAge
}

var errBodyTooLarge = errors.New("eventsub: request body too large")

// initialBodyBuffer bounds the buffer readBody sizes from Content-Length.
// The header is the sender's claim, read before anything is verified: a
// buffer of its full size would let anyone make the service hold 1 MiB for
// every slow request that claims it. Twitch's notifications are a few KiB;
// larger bodies grow the buffer as they arrive.
const initialBodyBuffer = 16 << 10

// readBody reads the whole body, at most MaxBodyBytes, into a buffer sized
// from Content-Length when the client sent one (at most initialBodyBuffer
// to start with).
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > MaxBodyBytes {
		return nil, errBodyTooLarge
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	rd := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	size := 512
	if r.ContentLength > 0 {
		size = min(int(r.ContentLength)+1, initialBodyBuffer) // +1: room for the read that sees EOF
	}
	buf := make([]byte, 0, size)
	for {
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				return nil, errBodyTooLarge
			}
			return nil, err
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
	}
}

// clip shortens a value from the request for logging.
func clip(s string) string {
	const max = 100
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
