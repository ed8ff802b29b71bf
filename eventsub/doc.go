// Package eventsub is the Twitch EventSub webhook: it takes Twitch's wire
// format in and hands domain values (subrole.Event, subrole.Revocation) to a
// Sink, which the core implements.
//
// # Basics
//
// Mount a Handler on POST /twitch_eventsub:
//
//	h := &eventsub.Handler{Secret: secret, BroadcasterID: "1337", ClientID: clientID, Sink: svc, Logger: log}
//	if err := h.Validate(); err != nil { ... }
//	mux.Handle("POST /twitch_eventsub", h)
//
// Every request goes through the same steps, in this order; the first step
// that fails answers the request:
//
//	method is POST                                          else 405 (Allow: POST)
//	Twitch-Eventsub-Message-Id, -Timestamp, -Signature and
//	-Type headers present                                   else 400
//	signature is "sha256=" + 64 hex digits                  else 403
//	body at most MaxBodyBytes                               else 413
//	HMAC-SHA256(Secret or PreviousSecret, id+timestamp+body) else 403
//	(OnVerified is called here)
//	timestamp parses as RFC 3339                            else 400
//	timestamp not older than MaxAge (10 minutes)            else 403
//	timestamp not more than FutureSkew (1 minute) ahead     else 403
//	message type known                                      else 400
//	body decodes                                            else 400
//
// Then, by message type:
//
//   - webhook_callback_verification: 200, Content-Type text/plain, the raw
//     challenge as the whole body.
//   - notification: the event goes to Sink.AcceptEvent; 204 when it was
//     recorded or was a duplicate, 500 when the sink failed (Twitch retries).
//     An unknown subscription type, an event for another broadcaster
//     (BroadcasterID) or another application (ClientID) is logged at warn
//     level and answered 204 without calling the sink, so Twitch does not
//     retry something that will never succeed.
//   - revocation: logged at error level and recorded with
//     Sink.RecordRevocation; 204, or 500 when the sink failed.
//
// The signature is checked before anything that depends on the body or the
// timestamp, so an unsigned request is never answered 2xx and never reaches
// the sink. Responses carry short fixed texts and never internal errors.
//
// # Logging and hooks
//
// Every refused request is logged once at warn level with a stable "reason"
// key (one of the Reason constants), "remote_addr" and, when the header was
// present, "event_id" (the message id). Neither secrets nor signatures are
// ever logged. OnRejected receives the same reason; OnVerified is called for
// every request whose signature is valid, which lets a ban or rate-limit
// layer never penalise Twitch.
//
// # Subscription management
//
// Manager keeps the application's webhook subscriptions (channel.subscribe,
// .end, .message, .gift for the broadcaster; user.authorization.revoke for
// the client id) in place through an API (GET, POST, DELETE
// /eventsub/subscriptions; cmd/subrole adapts the twitch client to it).
// Sync reuses enabled ones, deletes its own failed or revoked ones,
// replaces its own at another callback, secret generation or version (the
// new one first, the old one once the new one is enabled), makes room under
// Twitch's limit of 3 per type and condition by deleting its own stale ones
// only, treats 409 as "exists", and never touches a subscription whose
// callback is not subrole's. It waits for the subscriptions it created and
// its own still pending, and fails while any is not enabled (a callback
// Twitch could not verify is reported, also when found failed later) or
// a type is at the limit with others' subscriptions; the other types are
// still synced. HandleRevocation re-syncs after a revocation
// subrole can fix, and for authorization_revoked or user_removed raises an
// error and creates nothing until BroadcasterConnected: no create loop.
//
// SecretGeneration and CallbackID implement secret rotation: the callback
// carries the secret's generation and the installation's id (?g=N&i=ID); the
// id keeps two installations of one Twitch application apart, and the
// generation is bumped when the configured secret
// changes, so the old subscriptions become stale and are replaced; while any
// remain, Manager.Rotating reports true and Handler.AcceptPrevious lets the
// previous secret verify their messages.
//
// # Caveats
//
// Twitch signs only the message id, the timestamp and the body: the
// Twitch-Eventsub-Message-Type header is not covered by the signature. The
// handler therefore checks that the body has the shape of the claimed type (a
// notification has an event object, a revocation a status other than
// "enabled", a verification a challenge), and dedupe in the Sink by message
// id covers replays inside the MaxAge window.
//
// Decode and Verify are the pure halves of the Handler, exported so they can
// be fuzzed and reused (for example by a websocket or conduit transport).
package eventsub
