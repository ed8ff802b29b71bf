// Package twitchtest is a fake Twitch for tests, demos and benchmarks, in the
// spirit of net/http/httptest.
//
// Server is the fake Twitch on 127.0.0.1: OAuth under /oauth2 (authorize,
// which approves as the user a test chooses or denies; token for
// authorization_code, rotating refresh_token and client_credentials;
// validate; revoke) and Helix under /helix (users, subscriptions/user,
// subscriptions with cursor paging), in Twitch's JSON formats with
// Ratelimit-* headers, per-path fault injection (FailNext) and a record of
// every call. Tests and the demo set its users and subscriptions. The
// subscriber list is sorted once per change, so paging through 100,000
// subscribers is cheap.
//
// EventSub subscription management is under /helix/eventsub/subscriptions
// (app access token only): GET pages through them with total, total_cost
// and max_total_cost; POST validates the body as Twitch does (type, version,
// exactly the condition field, webhook transport, secret of 10-100
// characters, an https callback on port 443 unless Options.InsecureCallbacks,
// the broadcaster's authorization for channel.* types, 409 for an equal
// enabled or pending one, 429 past 3 per type and condition), answers 202
// with the subscription pending, then sends a signed
// webhook_callback_verification to the callback and enables the
// subscription only if the answer is 200 with exactly the challenge; DELETE
// answers 204, or 404 for an unknown id. Every message of a subscription is
// signed with the secret it was created with, so secret rotation can be
// tested. Tests revoke subscriptions (RevokeEventSubSubscription, or
// RevokeUser for a broadcaster who disconnects the application), deliver
// notifications to every enabled subscription of a type (Publish), slow
// verification down (SetVerificationHold) and inspect what exists
// (EventSubSubscriptions, WaitEventSub).
//
// A Sender builds, signs and posts EventSub webhook messages exactly as
// Twitch does (same headers, same JSON bodies, HMAC-SHA256 signatures), and
// every Message can be tampered with before it is sent to forge what Twitch
// never sends: bad signatures, stale timestamps, redeliveries.
// Server.Sender returns one for the Server's channel and application.
//
// The package imports nothing from subrole, so that it checks the webhook
// against an independent implementation of Twitch's side of the protocol.
package twitchtest
