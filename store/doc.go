/*
Package store keeps subrole's durable state in one bbolt file and implements
subrole.Store and subrole.Tx.

# Basics

Open the file once per process with Open, use the Store through the
subrole.Store interface, and Close it on shutdown. Update runs a function in a
read-write transaction and returns once the change is on disk; View runs one
in a read-only transaction.

Each kind of record has its own bucket. Values of domain types are JSON;
sequence keys are 8-byte big-endian integers from the bucket's NextSequence,
and time keys start with the time as 8-byte big-endian Unix nanoseconds, so
bbolt's byte order is their numeric and chronological order:

	links            Discord user id → Link
	links_by_twitch  Twitch user id → Discord user id (each side links once)
	subscriptions    Twitch user id → Subscription (binary since schema 7, see subscription.go;
	                 JSON before, still read)
	seen_by_time     time received + message id → empty (PruneSeen walks it oldest first;
	                 Open reads it into the in-memory set SeenMessage answers from, see seen.go)
	inbox            sequence → Event (accepted, not yet applied)
	outbox           sequence → RoleJob (Seq comes from the key)
	audit            sequence → AuditEntry (append-only; Seq comes from the key)
	revocations      sequence → Revocation
	checks           due time + Twitch user id → empty (DueChecks and NextCheck are cursor scans)
	meta             key → small value; "schema_version" holds SchemaVersion as JSON
	oauth_states     hex SHA-256 of a state's secret → OAuthState (used ones kept until they expire)
	oauth_states_by_expiry
	                 purpose (1 byte) + expiry + state key → empty (PruneOAuthStates walks only
	                 the expired part, CountOAuthStates only one purpose's live part)
	broadcaster      "token" → BroadcasterToken (the broadcaster's refresh and access token)
	dashboard_sessions
	                 hex SHA-256 of a session token → DashboardSession (schema 5; the token is
	                 only in the browser's cookie)
	outreach         Discord user id → OutreachRecord (the join that got a welcome, DMs refused,
	                 the last month a relink request was sent; schema 6)
	outreach_jobs    due time + kind + "/" + Discord user id → OutreachJob (scheduled DMs: welcome,
	                 follow-up, relink; DueOutreach and NextOutreach are cursor scans; schema 6)
	bans             IP prefix ("203.0.113.7/32") → ban record, JSON encoded by package guard
	                 (created by the first WriteBans, so it needs no migration)

Open creates the buckets, records SchemaVersion and migrates older files.
Other packages may keep their own buckets in the same file through Bolt
(package certs keeps the ACME account and certificates in "autocert").

Update groups concurrent calls into one transaction and one fsync without
waiting on a timer; see Update. After a commit that appended audit entries
the commit loop leaves a value on AuditCommitted's channel if none is
waiting there, and never waits: the dashboard's live feed wakes on it and
reads the new entries in its own read transaction.

# Caveats

The function passed to Update may run more than once, in a transaction shared
with other callers' functions, and may see their writes. It must act only
through its Tx, must not call the Store itself, and must not keep results from
a call that did not commit. Neither the Tx nor anything read through it may be
used after the function returns.

A file can be opened by one process at a time: bbolt holds a file lock, and a
second Open waits Options.Timeout and then fails.

Times in keys (seen messages, checks, outreach jobs) must lie between 1970 and 2262 and are
read back in UTC.

The store never logs; every failure is returned as an error, prefixed
"store:". Lookups of a missing record return an error wrapping
subrole.ErrNotFound, and PutLink an error wrapping subrole.ErrConflict when a
Twitch account is linked to someone else.
*/
package store
