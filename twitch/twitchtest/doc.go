// Package twitchtest is a fake Twitch for tests, demos and benchmarks, in the
// spirit of net/http/httptest.
//
// Server is the fake Twitch on 127.0.0.1: OAuth under /oauth2 (authorize,
// which approves as the user a test chooses or denies; token for
// authorization_code, rotating refresh_token and client_credentials;
// validate; revoke) and Helix under /helix (users, subscriptions/user,
// subscriptions with cursor paging), in Twitch's JSON formats with
// Ratelimit-* headers, per-path fault injection (FailNext) and a record of
// every call. Tests and the demo set its users and subscriptions. It is one
// type meant to grow (EventSub subscription management joins it).
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
