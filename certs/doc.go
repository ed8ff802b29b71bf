/*
Package certs gives subrole's HTTPS listener its certificate: from an ACME CA
such as Let's Encrypt (Autocert), or from certificate and key files that
another tool renews (Files). It also keeps the ACME state in the service's own
bbolt file (Cache) and watches the served certificate's expiry.

# Basics

Autocert wraps golang.org/x/crypto/acme/autocert: a Manager with a host
policy that allows exactly the public host, the account key and certificates
in a Cache on a bbolt bucket, TLSConfig for the HTTPS listener (it answers
tls-alpn-01 challenges, ALPN "acme-tls/1") and HTTPHandler for the port 80
listener (http-01 challenges; everything else goes to a fallback, usually
RedirectHTTPS). Run obtains the certificate before anything else needs it
("warming"), retrying with backoff, and closes Ready once it is there; the
service waits on Ready before it creates EventSub subscriptions, so Twitch's
verification request never waits for issuance. Renewal is autocert's (a third
of the lifetime, at most 30 days, before expiry).

Files serves a PEM certificate chain and key and reloads them when their
modification time or size changes, checked at most once per second during
handshakes and at every Check. A bad new pair (half written, mismatched,
expired) is refused and the old one kept.

Both watch the served certificate: Status reports it (for /readyz, metrics and
a dashboard), and an EventExpiring is emitted while fewer than ExpiryWarning
(14 days by default) remain.

# Caveats

The package never logs. Everything an operator should hear about arrives as an
Event through the OnEvent callback of the configuration, and the last failure
is kept in Status: the service turns events into log lines, so their format
and keys are decided in one place. Errors returned are prefixed "certs:".

autocert swallows the errors of its background renewals. Autocert therefore
watches the ACME conversation itself: every problem document the CA returns
(and every failure to reach it) becomes an EventACMEProblem carrying an
*ACMEError, and a renewal that is more than two hours overdue becomes an
EventError that includes the last ACME problem.

Cache.Get returns autocert.ErrCacheMiss itself, never wrapped: autocert
compares it with ==.
*/
package certs
