/*
Package guard is subrole's request-level security: it finds the client's IP
address (behind trusted proxies only), sets security headers, caps request
bodies, turns panics into plain 500s, rate limits each client, recognizes
scanners, and keeps a ban list that survives restarts. It replaces the
original setup's Nginx rules and log-tailing ban script, in process.

Request-level security has no home among the other packages: eventsub speaks
Twitch's wire format, certs provides certificates, store persists, cmd/subrole
wires; all of them need the client IP and the ban decision, none should own it.

# Basics

Wrap the service's handler once: g.Handler(routes). For every request it

  - resolves the client IP: RemoteAddr, or, when RemoteAddr is one of
    Config.TrustedProxies, the right-most untrusted X-Forwarded-For entry
    (r.RemoteAddr is rewritten to it, port 0, so every log line downstream
    names the client); X-Forwarded-Proto counts only from a trusted proxy;
  - sets X-Content-Type-Options, Referrer-Policy, X-Frame-Options, a strict
    Content-Security-Policy (a handler may replace it) and, on HTTPS, HSTS;
  - refuses bodies over Config.MaxBodyBytes (413) and recovers panics (500,
    the stack goes to the log, never to the client);
  - answers requests for well-known attack paths (/.env, /.git/, *.php,
    path traversal ...) 404 and counts them as KindProbe;
  - answers banned clients 403 and clients over their token bucket 429;
  - counts 404 answers toward KindNotFound.

Other packages report abuse they detect with Report (the web package reports
invalid OAuth states as KindBadState; the service maps EventSub rejections to
KindBadSignature). A client reaching a kind's Threshold is banned: IPv4
addresses alone, IPv6 addresses by their /64 (Config.IPv6Prefix). Ban
durations escalate for repeat offenders (BanBase, x4 per strike, at most
BanMax). Bans are kept in a BanStore (the service's bbolt file) and logged as
security events: warn-level lines with the key security_event.

# Twitch is never banned

Requests matching Config.Exempt skip the ban and rate checks: the service
exempts its EventSub webhook, whose HMAC signature is a stronger judge than
any heuristic, and ACME http-01 challenges. The webhook calls Verified for
every request with a valid signature; from then on nothing counts against
that request, whatever follows (a stale timestamp, a 404). Its rejections are
counted only through Report, which ignores verified requests. So a banned
address can still deliver validly signed events, and no burst of them
charges anyone's bucket.

# Caveats

Report and Verified find their request's state in its context; requests
that did not pass through Handler are judged by r.RemoteAddr alone.

Counters and buckets live in memory, at most Config.MaxClients of them; only
bans are persisted. Ban writes are grouped: a burst of bans costs one write
transaction, so a distributed scan cannot crowd out the service's own
commits.
*/
package guard
