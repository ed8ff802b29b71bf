// Package twitchtest is a fake Twitch for tests, demos and benchmarks, in the
// spirit of net/http/httptest.
//
// For now it holds the EventSub sending side: a Sender builds, signs and
// posts webhook messages exactly as Twitch does (same headers, same JSON
// bodies, HMAC-SHA256 signatures), and every Message can be tampered with
// before it is sent to forge what Twitch never sends: bad signatures, stale
// timestamps, redeliveries. A fake Helix API and OAuth server will join it.
//
// The package imports nothing from subrole, so that it checks the webhook
// against an independent implementation of Twitch's side of the protocol.
package twitchtest
