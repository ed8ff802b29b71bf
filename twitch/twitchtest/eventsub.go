package twitchtest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The EventSub message types, the values of the Twitch-Eventsub-Message-Type
// header.
const (
	TypeNotification = "notification"
	TypeVerification = "webhook_callback_verification"
	TypeRevocation   = "revocation"
)

// The subscription types the builders produce.
const (
	SubscribeType           = "channel.subscribe"
	SubscriptionMessageType = "channel.subscription.message"
	SubscriptionEndType     = "channel.subscription.end"
	SubscriptionGiftType    = "channel.subscription.gift"
	AuthorizationRevokeType = "user.authorization.revoke"
)

// Defaults for the zero Sender fields, the values of Twitch's documentation
// examples.
const (
	DefaultBroadcasterID    = "1337"
	DefaultBroadcasterLogin = "cooler_user"
	DefaultClientID         = "crq72vsaoijkc83xx42hz6i37"
)

// TimeLayout is how Twitch writes EventSub timestamps: RFC 3339 in UTC with
// nanoseconds.
const TimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Message is one EventSub webhook request. Its fields are exported so that a
// test can tamper with a message before sending it; call Sign afterwards to
// make the signature match again, or don't, to forge one. Sending the same
// Message twice is a redelivery with the same message id, which is what
// Twitch does when it is unsure an earlier delivery arrived.
type Message struct {
	ID                  string // Twitch-Eventsub-Message-Id, a random UUID
	Timestamp           string // Twitch-Eventsub-Message-Timestamp, in TimeLayout; any string can be sent
	Type                string // Twitch-Eventsub-Message-Type: TypeNotification, TypeVerification or TypeRevocation
	Retry               int    // Twitch-Eventsub-Message-Retry
	SubscriptionType    string // Twitch-Eventsub-Subscription-Type
	SubscriptionVersion string // Twitch-Eventsub-Subscription-Version
	Body                []byte // the JSON body
	Signature           string // Twitch-Eventsub-Message-Signature, "sha256=<hex>"; empty sends no header
	Secret              string // the key Sign uses; the Sender sets its own Secret

	// Challenge is the challenge in the body of a TypeVerification message,
	// which the webhook must answer with. Changing it does not change Body.
	Challenge string
}

// Sign sets Signature to the HMAC-SHA256 of ID + Timestamp + Body keyed with
// Secret, as Twitch computes it.
func (m *Message) Sign() {
	mac := hmac.New(sha256.New, []byte(m.Secret))
	mac.Write([]byte(m.ID))
	mac.Write([]byte(m.Timestamp))
	mac.Write(m.Body)
	var sum [sha256.Size]byte
	m.Signature = "sha256=" + hex.EncodeToString(mac.Sum(sum[:0]))
}

// Header returns the request headers Twitch sends with m. Empty string
// fields are left out, so a test can drop a header by clearing its field.
func (m Message) Header() http.Header {
	h := make(http.Header, 8)
	set := func(k, v string) {
		if v != "" {
			h[k] = []string{v}
		}
	}
	set("Content-Type", "application/json")
	set("Twitch-Eventsub-Message-Id", m.ID)
	set("Twitch-Eventsub-Message-Retry", strconv.Itoa(m.Retry))
	set("Twitch-Eventsub-Message-Type", m.Type)
	set("Twitch-Eventsub-Message-Signature", m.Signature)
	set("Twitch-Eventsub-Message-Timestamp", m.Timestamp)
	set("Twitch-Eventsub-Subscription-Type", m.SubscriptionType)
	set("Twitch-Eventsub-Subscription-Version", m.SubscriptionVersion)
	return h
}

// NewRequest returns the POST request that delivers m to url. Handing it to
// an http.Handler directly (with httptest.NewRecorder) tests a webhook
// without a network.
func (m Message) NewRequest(ctx context.Context, url string) (*http.Request, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(m.Body))
	if err != nil {
		return nil, fmt.Errorf("twitchtest: new request: %w", err)
	}
	r.Header = m.Header()
	return r, nil
}

// Sender builds, signs and sends EventSub webhook messages like Twitch. Set
// its fields before first use and do not change them afterwards. A Sender is
// safe for concurrent use and must not be copied after first use.
type Sender struct {
	// Callback is the webhook URL: where Send posts, and the transport
	// callback in every body. Required by Send.
	Callback string
	// Secret signs every message. Empty signs with an empty key, which a
	// correct webhook refuses.
	Secret string
	// Client sends the requests. Nil means a client like Twitch's: a 10
	// second timeout, redirects not followed, and enough idle connections
	// per host for benchmarks that send from many goroutines.
	Client *http.Client
	// Now returns the current time, used for message timestamps and
	// subscription creation times. Nil means time.Now.
	Now func() time.Time

	// BroadcasterID, BroadcasterLogin are the broadcaster in conditions and
	// events. Empty means DefaultBroadcasterID and DefaultBroadcasterLogin.
	BroadcasterID, BroadcasterLogin string
	// ClientID is the application's client id in user.authorization.revoke
	// conditions and events. Empty means DefaultClientID.
	ClientID string

	// SubscriptionIDs fixes the subscription id of some subscription types.
	// Types not in it get a random id, created on first use and stable for
	// the Sender's life, so that a Revocation refers to the same
	// subscription as earlier notifications. Nil is fine; the map is only
	// read.
	SubscriptionIDs map[string]string

	clientOnce    sync.Once
	defaultClient *http.Client

	mu   sync.Mutex
	subs map[string]subscriptionInfo
}

type subscriptionInfo struct {
	id        string
	createdAt string
}

// SubscriptionID returns the id of the Sender's subscription of type subType.
func (s *Sender) SubscriptionID(subType string) string { return s.subscription(subType).id }

func (s *Sender) subscription(subType string) subscriptionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	if info, ok := s.subs[subType]; ok {
		return info
	}
	id := s.SubscriptionIDs[subType]
	if id == "" {
		id = newUUID()
	}
	info := subscriptionInfo{id: id, createdAt: s.now().UTC().Format(TimeLayout)}
	if s.subs == nil {
		s.subs = make(map[string]subscriptionInfo)
	}
	s.subs[subType] = info
	return info
}

// Subscribe returns a channel.subscribe notification: userID (login) started
// a subscription at tier ("1000", "2000" or "3000"; Prime is "1000"). Each
// recipient of a gift gets one with isGift true.
func (s *Sender) Subscribe(userID, login, tier string, isGift bool) Message {
	return s.Notification(SubscribeType, "1", subscribeEvent{
		userFields:        s.user(userID, login),
		broadcasterFields: s.broadcaster(),
		Tier:              tier,
		IsGift:            isGift,
	})
}

// Resub returns a channel.subscription.message notification: userID shared a
// resubscription at tier, subscribed for cumulative months in total, streak in
// a row and duration months paid ahead. A streak of 0 or less is sent as
// null, as for a user who does not share it. The resub message is empty.
func (s *Sender) Resub(userID, login, tier string, cumulative, streak, duration int) Message {
	var st *int
	if streak > 0 {
		st = &streak
	}
	return s.Notification(SubscriptionMessageType, "1", resubEvent{
		userFields:        s.user(userID, login),
		broadcasterFields: s.broadcaster(),
		Tier:              tier,
		Message:           resubMessage{Text: "", Emotes: nil},
		CumulativeMonths:  cumulative,
		StreakMonths:      st,
		DurationMonths:    duration,
	})
}

// End returns a channel.subscription.end notification: userID's
// subscription at tier ended.
func (s *Sender) End(userID, login, tier string, isGift bool) Message {
	return s.Notification(SubscriptionEndType, "1", subscribeEvent{
		userFields:        s.user(userID, login),
		broadcasterFields: s.broadcaster(),
		Tier:              tier,
		IsGift:            isGift,
	})
}

// Gift returns a channel.subscription.gift notification: gifterID gave total
// subscriptions at tier; cumulative is the gifter's all-time total, nil when
// not shared. An anonymous gift has null user fields and a null
// cumulative_total whatever gifterID, login and cumulative are. The
// recipients' channel.subscribe notifications are separate messages.
func (s *Sender) Gift(gifterID, login, tier string, total int, cumulative *int, anonymous bool) Message {
	ev := giftEvent{
		broadcasterFields: s.broadcaster(),
		Total:             total,
		Tier:              tier,
		IsAnonymous:       anonymous,
	}
	if !anonymous {
		ev.UserID, ev.UserLogin, ev.UserName = &gifterID, &login, &login
		if cumulative != nil {
			n := *cumulative
			ev.CumulativeTotal = &n
		}
	}
	return s.Notification(SubscriptionGiftType, "1", ev)
}

// AuthRevoke returns a user.authorization.revoke notification: userID
// revoked the application's access. An empty login is sent as null, as
// Twitch does when the user no longer exists.
func (s *Sender) AuthRevoke(userID, login string) Message {
	ev := authRevokeEvent{ClientID: s.clientID(), UserID: userID}
	if login != "" {
		ev.UserLogin, ev.UserName = &login, &login
	}
	return s.Notification(AuthorizationRevokeType, "1", ev)
}

// Notification returns a signed notification of any subscription type and
// version with event as its "event" object (anything encoding/json
// marshals). The builders above use it; tests use it for types subrole does
// not handle.
func (s *Sender) Notification(subType, version string, event any) Message {
	return s.message(TypeNotification, subType, version, notificationBody{
		Subscription: s.wireSubscription(subType, version, "enabled"),
		Event:        event,
	}, "")
}

// Challenge returns the webhook_callback_verification message Twitch sends
// after a subscription of type subType is created. The webhook must answer
// 200 with m.Challenge as the whole text/plain body.
func (s *Sender) Challenge(subType string) Message {
	challenge := rand.Text()
	return s.message(TypeVerification, subType, "1", verificationBody{
		Challenge:    challenge,
		Subscription: s.wireSubscription(subType, "1", "webhook_callback_verification_pending"),
	}, challenge)
}

// Revocation returns the revocation message for the Sender's subscription of
// type subType, with status the reason: "authorization_revoked",
// "user_removed", "notification_failures_exceeded" or "version_removed".
func (s *Sender) Revocation(subType, status string) Message {
	return s.message(TypeRevocation, subType, "1", revocationBody{
		Subscription: s.wireSubscription(subType, "1", status),
	}, "")
}

// Send posts m to Callback and returns the response status and body (at most
// 64 KiB of it). A non-2xx status is not an error.
func (s *Sender) Send(ctx context.Context, m Message) (status int, body string, err error) {
	if s.Callback == "" {
		return 0, "", errors.New("twitchtest: Sender.Callback is empty")
	}
	req, err := m.NewRequest(ctx, s.Callback)
	if err != nil {
		return 0, "", err
	}
	resp, err := s.client().Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("twitchtest: send message %s: %w", m.ID, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	io.Copy(io.Discard, resp.Body) // let the connection be reused
	if err != nil {
		return resp.StatusCode, string(b), fmt.Errorf("twitchtest: read response to %s: %w", m.ID, err)
	}
	return resp.StatusCode, string(b), nil
}

// message marshals body and returns it as a signed Message.
func (s *Sender) message(typ, subType, version string, body any, challenge string) Message {
	b, err := json.Marshal(body)
	if err != nil {
		// Only an event passed to Notification can fail to marshal.
		panic(fmt.Sprintf("twitchtest: marshal %s body: %v", subType, err))
	}
	m := Message{
		ID:                  newUUID(),
		Timestamp:           s.now().UTC().Format(TimeLayout),
		Type:                typ,
		SubscriptionType:    subType,
		SubscriptionVersion: version,
		Body:                b,
		Secret:              s.Secret,
		Challenge:           challenge,
	}
	m.Sign()
	return m
}

func (s *Sender) wireSubscription(subType, version, status string) wireSubscription {
	info := s.subscription(subType)
	sub := wireSubscription{
		ID:        info.id,
		Type:      subType,
		Version:   version,
		Status:    status,
		Transport: wireTransport{Method: "webhook", Callback: s.Callback},
		CreatedAt: info.createdAt,
	}
	if subType == AuthorizationRevokeType {
		sub.Condition.ClientID = s.clientID()
		sub.Cost = 1 // needs no user authorization, so it costs
	} else {
		sub.Condition.BroadcasterUserID = s.broadcasterID()
	}
	return sub
}

func (s *Sender) client() *http.Client {
	if s.Client != nil {
		return s.Client
	}
	s.clientOnce.Do(func() {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 256
		s.defaultClient = &http.Client{
			Transport:     t,
			Timeout:       10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	})
	return s.defaultClient
}

func (s *Sender) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Sender) broadcasterID() string {
	if s.BroadcasterID != "" {
		return s.BroadcasterID
	}
	return DefaultBroadcasterID
}

func (s *Sender) broadcaster() broadcasterFields {
	login := s.BroadcasterLogin
	if login == "" {
		login = DefaultBroadcasterLogin
	}
	return broadcasterFields{BroadcasterUserID: s.broadcasterID(), BroadcasterUserLogin: login, BroadcasterUserName: login}
}

func (s *Sender) clientID() string {
	if s.ClientID != "" {
		return s.ClientID
	}
	return DefaultClientID
}

// user returns the user fields; the display name is the login.
func (s *Sender) user(id, login string) userFields {
	return userFields{UserID: id, UserLogin: login, UserName: login}
}

// newUUID returns a random version 4 UUID.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// The JSON bodies, with fields in the order of Twitch's documentation.

type wireSubscription struct {
	ID        string        `json:"id"`
	Type      string        `json:"type"`
	Version   string        `json:"version"`
	Status    string        `json:"status"`
	Cost      int           `json:"cost"`
	Condition wireCondition `json:"condition"`
	Transport wireTransport `json:"transport"`
	CreatedAt string        `json:"created_at"`
}

type wireCondition struct {
	BroadcasterUserID string `json:"broadcaster_user_id,omitempty"`
	ClientID          string `json:"client_id,omitempty"`
}

type wireTransport struct {
	Method   string `json:"method"`
	Callback string `json:"callback"`
}

type notificationBody struct {
	Subscription wireSubscription `json:"subscription"`
	Event        any              `json:"event"`
}

type verificationBody struct {
	Challenge    string           `json:"challenge"`
	Subscription wireSubscription `json:"subscription"`
}

type revocationBody struct {
	Subscription wireSubscription `json:"subscription"`
}

type userFields struct {
	UserID    string `json:"user_id"`
	UserLogin string `json:"user_login"`
	UserName  string `json:"user_name"`
}

type broadcasterFields struct {
	BroadcasterUserID    string `json:"broadcaster_user_id"`
	BroadcasterUserLogin string `json:"broadcaster_user_login"`
	BroadcasterUserName  string `json:"broadcaster_user_name"`
}

// subscribeEvent is the event of channel.subscribe and channel.subscription.end.
type subscribeEvent struct {
	userFields
	broadcasterFields
	Tier   string `json:"tier"`
	IsGift bool   `json:"is_gift"`
}

type resubEvent struct {
	userFields
	broadcasterFields
	Tier             string       `json:"tier"`
	Message          resubMessage `json:"message"`
	CumulativeMonths int          `json:"cumulative_months"`
	StreakMonths     *int         `json:"streak_months"`
	DurationMonths   int          `json:"duration_months"`
}

type resubMessage struct {
	Text   string       `json:"text"`
	Emotes []resubEmote `json:"emotes"`
}

type resubEmote struct {
	Begin int    `json:"begin"`
	End   int    `json:"end"`
	ID    string `json:"id"`
}

type giftEvent struct {
	UserID    *string `json:"user_id"`
	UserLogin *string `json:"user_login"`
	UserName  *string `json:"user_name"`
	broadcasterFields
	Total           int    `json:"total"`
	Tier            string `json:"tier"`
	CumulativeTotal *int   `json:"cumulative_total"`
	IsAnonymous     bool   `json:"is_anonymous"`
}

type authRevokeEvent struct {
	ClientID  string  `json:"client_id"`
	UserID    string  `json:"user_id"`
	UserLogin *string `json:"user_login"`
	UserName  *string `json:"user_name"`
}
