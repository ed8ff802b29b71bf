package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// t0 is a fixed time for tests, in UTC so values compare with DeepEqual
// after a JSON round trip.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

// openTemp opens a store in a fresh file and closes it when the test ends.
func openTemp(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "subrole.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// reopen closes s and opens its file again.
func reopen(t testing.TB, s *Store) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(s.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// asSchema closes s, rewrites its file with change into what an older
// schema wrote (stamping version), and opens it again, which migrates it.
func asSchema(t *testing.T, s *Store, version int, change func(*bolt.Tx) error) *Store {
	t.Helper()
	path := s.Path()
	s.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(btx *bolt.Tx) error {
		if err := change(btx); err != nil {
			return err
		}
		return btx.Bucket([]byte(bucketMeta)).Put([]byte(metaSchemaVersion), []byte(strconv.Itoa(version)))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("open schema %d: %v", version, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustUpdate(t testing.TB, s *Store, fn func(subrole.Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func mustView(t testing.TB, s *Store, fn func(subrole.Tx) error) {
	t.Helper()
	if err := s.View(context.Background(), fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}

// count returns the number of keys in a bucket.
func count(t testing.TB, s *Store, bucket string) int {
	t.Helper()
	n := 0
	err := s.Bolt().View(func(tx *bolt.Tx) error {
		n = tx.Bucket([]byte(bucket)).Stats().KeyN
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func equal(t testing.TB, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	sub := subrole.Subscription{
		TwitchUserID: "t1", TwitchLogin: "alice", Tier: subrole.Tier2, IsGift: true,
		GifterID: "t9", GifterLogin: "bob", StreakMonths: 3, CumulativeMonths: 7, GiftsGiven: 2,
		Started: t0, LastEvent: t0.Add(time.Hour), LastEventType: "channel.subscribe", Source: subrole.SourceEventSub,
	}
	link := subrole.Link{DiscordUserID: "d1", TwitchUserID: "t1", TwitchLogin: "alice", Linked: t0}
	event := subrole.Event{
		MessageID: "m1", Type: subrole.EventSubscribe, Sent: t0, Received: t0.Add(time.Second),
		UserID: "t1", UserLogin: "alice", Tier: subrole.Tier1, Raw: []byte(`{"user_id":"t1"}`),
	}
	job := subrole.RoleJob{
		Seq: 99, DiscordUserID: "d1", TwitchUserID: "t1", Desired: []string{"r1"}, Managed: []string{"r1", "r2"},
		Reason: "subscribed", EventID: "m1", Observed: t0, Created: t0.Add(time.Millisecond),
	}
	audit := subrole.AuditEntry{
		Seq: 99, Time: t0, Kind: subrole.AuditLink, TwitchUserID: "t1", DiscordUserID: "d1",
		EventID: "m1", Before: "none", After: "tier 1", Detail: "linked",
	}
	rev := subrole.Revocation{SubscriptionID: "s1", Type: subrole.EventSubscribe, Status: "authorization_revoked", At: t0}
	check := subrole.Check{At: t0, TwitchUserID: "t1"}

	tests := []struct {
		name  string
		write func(subrole.Tx) error
		read  func(*testing.T, subrole.Tx)
	}{{
		name:  "subscription",
		write: func(tx subrole.Tx) error { return tx.PutSubscription(sub) },
		read: func(t *testing.T, tx subrole.Tx) {
			got, err := tx.Subscription("t1")
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "Subscription", got, sub)
			var all []subrole.Subscription
			if err := tx.ForEachSubscription(func(s subrole.Subscription) error { all = append(all, s); return nil }); err != nil {
				t.Fatal(err)
			}
			equal(t, "ForEachSubscription", all, []subrole.Subscription{sub})
		},
	}, {
		name:  "link",
		write: func(tx subrole.Tx) error { return tx.PutLink(link) },
		read: func(t *testing.T, tx subrole.Tx) {
			got, err := tx.LinkByDiscord("d1")
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "LinkByDiscord", got, link)
			got, err = tx.LinkByTwitch("t1")
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "LinkByTwitch", got, link)
			var all []subrole.Link
			if err := tx.ForEachLink(func(l subrole.Link) error { all = append(all, l); return nil }); err != nil {
				t.Fatal(err)
			}
			equal(t, "ForEachLink", all, []subrole.Link{link})
		},
	}, {
		name:  "seen",
		write: func(tx subrole.Tx) error { return tx.MarkSeen("m1", t0) },
		read: func(t *testing.T, tx subrole.Tx) {
			for id, want := range map[string]bool{"m1": true, "m2": false, "": false} {
				got, err := tx.SeenMessage(id)
				if err != nil || got != want {
					t.Errorf("SeenMessage(%q) = %v, %v; want %v", id, got, err, want)
				}
			}
		},
	}, {
		name: "inbox",
		write: func(tx subrole.Tx) error {
			seq, err := tx.AppendInbox(event)
			if err == nil && seq != 1 {
				err = fmt.Errorf("AppendInbox = %d, want 1", seq)
			}
			return err
		},
		read: func(t *testing.T, tx subrole.Tx) {
			got, err := tx.Inbox(0, 10)
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "Inbox", got, []subrole.InboxEntry{{Seq: 1, Event: event}})
		},
	}, {
		name: "outbox",
		write: func(tx subrole.Tx) error {
			seq, err := tx.AppendRoleJob(job)
			if err == nil && seq != 1 {
				err = fmt.Errorf("AppendRoleJob = %d, want 1", seq)
			}
			return err
		},
		read: func(t *testing.T, tx subrole.Tx) {
			got, err := tx.RoleJobs(0, 10)
			if err != nil {
				t.Fatal(err)
			}
			want := job
			want.Seq = 1
			equal(t, "RoleJobs", got, []subrole.RoleJob{want})
		},
	}, {
		name:  "audit",
		write: func(tx subrole.Tx) error { return tx.AppendAudit(audit) },
		read: func(t *testing.T, tx subrole.Tx) {
			got, err := tx.Audit(0, 10)
			if err != nil {
				t.Fatal(err)
			}
			want := audit
			want.Seq = 1
			equal(t, "Audit", got, []subrole.AuditEntry{want})
		},
	}, {
		name:  "revocation",
		write: func(tx subrole.Tx) error { return tx.PutRevocation(rev) },
		read: func(t *testing.T, tx subrole.Tx) {
			got, err := tx.Revocations()
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "Revocations", got, []subrole.Revocation{rev})
		},
	}, {
		name:  "check",
		write: func(tx subrole.Tx) error { return tx.ScheduleCheck(check) },
		read: func(t *testing.T, tx subrole.Tx) {
			got, ok, err := tx.NextCheck()
			if err != nil || !ok {
				t.Fatalf("NextCheck = %v, %v", ok, err)
			}
			equal(t, "NextCheck", got, check)
			due, err := tx.DueChecks(t0, 10)
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "DueChecks", due, []subrole.Check{check})
		},
	}, {
		name: "meta",
		write: func(tx subrole.Tx) error {
			if err := tx.PutMeta("cursor", []byte("abc")); err != nil {
				return err
			}
			return tx.PutMeta("empty", nil)
		},
		read: func(t *testing.T, tx subrole.Tx) {
			got, err := tx.Meta("cursor")
			if err != nil || string(got) != "abc" {
				t.Errorf(`Meta("cursor") = %q, %v; want "abc"`, got, err)
			}
			got, err = tx.Meta("empty")
			if err != nil || len(got) != 0 {
				t.Errorf(`Meta("empty") = %q, %v; want ""`, got, err)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTemp(t, Options{})
			mustUpdate(t, s, func(tx subrole.Tx) error {
				if err := tt.write(tx); err != nil {
					return err
				}
				tt.read(t, tx) // a transaction sees its own writes
				return nil
			})
			mustView(t, s, func(tx subrole.Tx) error { tt.read(t, tx); return nil })
			s = reopen(t, s)
			mustView(t, s, func(tx subrole.Tx) error { tt.read(t, tx); return nil })
		})
	}
}

func TestNotFound(t *testing.T) {
	s := openTemp(t, Options{})
	tests := []struct {
		name string
		call func(subrole.Tx) error
	}{
		{"Subscription", func(tx subrole.Tx) error { _, err := tx.Subscription("t1"); return err }},
		{"LinkByDiscord", func(tx subrole.Tx) error { _, err := tx.LinkByDiscord("d1"); return err }},
		{"LinkByTwitch", func(tx subrole.Tx) error { _, err := tx.LinkByTwitch("t1"); return err }},
		{"Meta", func(tx subrole.Tx) error { _, err := tx.Meta("nothing"); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.View(context.Background(), tt.call)
			if !errors.Is(err, subrole.ErrNotFound) {
				t.Fatalf("got %v, want an error wrapping ErrNotFound", err)
			}
			if !strings.HasPrefix(err.Error(), "store: ") {
				t.Errorf("error %q lacks the store: prefix", err)
			}
		})
	}
}

func TestLinks(t *testing.T) {
	s := openTemp(t, Options{})
	link := func(d, tw, login string) subrole.Link {
		return subrole.Link{DiscordUserID: d, TwitchUserID: tw, TwitchLogin: login, Linked: t0}
	}
	put := func(l subrole.Link) error {
		return s.Update(context.Background(), func(tx subrole.Tx) error { return tx.PutLink(l) })
	}
	// want checks what each Discord and Twitch user is linked to ("" = nothing).
	want := func(t *testing.T, byDiscord, byTwitch map[string]string) {
		t.Helper()
		mustView(t, s, func(tx subrole.Tx) error {
			for d, tw := range byDiscord {
				l, err := tx.LinkByDiscord(d)
				if tw == "" && !errors.Is(err, subrole.ErrNotFound) || tw != "" && (err != nil || l.TwitchUserID != tw) {
					t.Errorf("LinkByDiscord(%s) = %+v, %v; want twitch %q", d, l, err, tw)
				}
			}
			for tw, d := range byTwitch {
				l, err := tx.LinkByTwitch(tw)
				if d == "" && !errors.Is(err, subrole.ErrNotFound) || d != "" && (err != nil || l.DiscordUserID != d) {
					t.Errorf("LinkByTwitch(%s) = %+v, %v; want discord %q", tw, l, err, d)
				}
			}
			return nil
		})
		if err := s.Check(); err != nil {
			t.Error(err)
		}
	}

	t.Run("link", func(t *testing.T) {
		if err := put(link("d1", "t1", "alice")); err != nil {
			t.Fatal(err)
		}
		want(t, map[string]string{"d1": "t1"}, map[string]string{"t1": "d1"})
	})
	t.Run("same pair again updates", func(t *testing.T) {
		if err := put(link("d1", "t1", "alice_renamed")); err != nil {
			t.Fatal(err)
		}
		mustView(t, s, func(tx subrole.Tx) error {
			l, err := tx.LinkByTwitch("t1")
			if err != nil || l.TwitchLogin != "alice_renamed" {
				t.Errorf("LinkByTwitch(t1) = %+v, %v; want the new login", l, err)
			}
			return nil
		})
	})
	t.Run("twitch account taken", func(t *testing.T) {
		err := put(link("d2", "t1", "alice"))
		if !errors.Is(err, subrole.ErrConflict) {
			t.Fatalf("got %v, want an error wrapping ErrConflict", err)
		}
		want(t, map[string]string{"d1": "t1", "d2": ""}, map[string]string{"t1": "d1"})
	})
	t.Run("relink replaces the old index entry", func(t *testing.T) {
		if err := put(link("d1", "t2", "alice2")); err != nil {
			t.Fatal(err)
		}
		want(t, map[string]string{"d1": "t2"}, map[string]string{"t1": "", "t2": "d1"})
	})
	t.Run("freed twitch account can be linked", func(t *testing.T) {
		if err := put(link("d2", "t1", "alice")); err != nil {
			t.Fatal(err)
		}
		want(t, map[string]string{"d1": "t2", "d2": "t1"}, map[string]string{"t1": "d2", "t2": "d1"})
	})
	t.Run("delete", func(t *testing.T) {
		mustUpdate(t, s, func(tx subrole.Tx) error {
			if err := tx.DeleteLink("d1"); err != nil {
				return err
			}
			return tx.DeleteLink("nobody") // missing: not an error
		})
		want(t, map[string]string{"d1": "", "d2": "t1"}, map[string]string{"t1": "d2", "t2": ""})
	})
	t.Run("empty ids", func(t *testing.T) {
		if err := put(link("", "t3", "x")); err == nil {
			t.Error("PutLink with empty discord id succeeded")
		}
		if err := put(link("d3", "", "x")); err == nil {
			t.Error("PutLink with empty twitch id succeeded")
		}
	})
}

// TestForEach checks the order of the walks, that an error stops them, and
// that fn may write while walking.
func TestForEach(t *testing.T) {
	s := openTemp(t, Options{})
	ids := []string{"c", "a", "e", "b", "d"}
	mustUpdate(t, s, func(tx subrole.Tx) error {
		for _, id := range ids {
			if err := tx.PutSubscription(subrole.Subscription{TwitchUserID: id}); err != nil {
				return err
			}
			if err := tx.PutLink(subrole.Link{DiscordUserID: "d" + id, TwitchUserID: id}); err != nil {
				return err
			}
		}
		return nil
	})
	stop := errors.New("stop")
	mustUpdate(t, s, func(tx subrole.Tx) error {
		var subs, links []string
		err := tx.ForEachSubscription(func(sub subrole.Subscription) error {
			subs = append(subs, sub.TwitchUserID)
			sub.Tier = subrole.Tier3 // writing while walking
			if err := tx.PutSubscription(sub); err != nil {
				return err
			}
			if sub.TwitchUserID == "a" { // and inserting before the cursor
				if err := tx.PutSubscription(subrole.Subscription{TwitchUserID: "0"}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		equal(t, "ForEachSubscription order", subs, []string{"a", "b", "c", "d", "e"})
		err = tx.ForEachLink(func(l subrole.Link) error {
			links = append(links, l.DiscordUserID)
			if l.DiscordUserID == "dc" {
				return stop
			}
			return tx.DeleteLink(l.DiscordUserID)
		})
		if err != stop {
			t.Errorf("ForEachLink returned %v, want fn's error unchanged", err)
		}
		equal(t, "ForEachLink order", links, []string{"da", "db", "dc"})
		return nil
	})
	mustView(t, s, func(tx subrole.Tx) error {
		sub, err := tx.Subscription("e")
		if err != nil || sub.Tier != subrole.Tier3 {
			t.Errorf("Subscription(e) = %+v, %v; want tier 3", sub, err)
		}
		return nil
	})
	if n := count(t, s, bucketLinks); n != 3 {
		t.Errorf("%d links left, want 3", n)
	}
}

// TestSequences checks the order, paging and deletion of the inbox, outbox
// and audit log, which share their layout.
func TestSequences(t *testing.T) {
	type box struct {
		append func(tx subrole.Tx, i int) error
		list   func(tx subrole.Tx, after uint64, max int) ([]uint64, []int, error) // seqs and payload markers
		delete func(tx subrole.Tx, seq uint64) error
	}
	boxes := map[string]box{
		"inbox": {
			append: func(tx subrole.Tx, i int) error {
				_, err := tx.AppendInbox(subrole.Event{MessageID: fmt.Sprint(i), StreakMonths: i})
				return err
			},
			list: func(tx subrole.Tx, after uint64, max int) (seqs []uint64, marks []int, err error) {
				entries, err := tx.Inbox(after, max)
				for _, e := range entries {
					seqs, marks = append(seqs, e.Seq), append(marks, e.Event.StreakMonths)
				}
				return seqs, marks, err
			},
			delete: func(tx subrole.Tx, seq uint64) error { return tx.DeleteInbox(seq) },
		},
		"outbox": {
			append: func(tx subrole.Tx, i int) error {
				_, err := tx.AppendRoleJob(subrole.RoleJob{DiscordUserID: fmt.Sprint(i)})
				return err
			},
			list: func(tx subrole.Tx, after uint64, max int) (seqs []uint64, marks []int, err error) {
				jobs, err := tx.RoleJobs(after, max)
				for _, j := range jobs {
					var m int
					fmt.Sscan(j.DiscordUserID, &m)
					seqs, marks = append(seqs, j.Seq), append(marks, m)
				}
				return seqs, marks, err
			},
			delete: func(tx subrole.Tx, seq uint64) error { return tx.DeleteRoleJob(seq) },
		},
		"audit": {
			append: func(tx subrole.Tx, i int) error {
				return tx.AppendAudit(subrole.AuditEntry{Kind: subrole.AuditRoles, Detail: fmt.Sprint(i)})
			},
			list: func(tx subrole.Tx, after uint64, max int) (seqs []uint64, marks []int, err error) {
				entries, err := tx.Audit(after, max)
				for _, e := range entries {
					var m int
					fmt.Sscan(e.Detail, &m)
					seqs, marks = append(seqs, e.Seq), append(marks, m)
				}
				return seqs, marks, err
			},
		},
	}
	for name, b := range boxes {
		t.Run(name, func(t *testing.T) {
			s := openTemp(t, Options{})
			// 300 entries, so that keys above 255 check the byte order.
			for i := 1; i <= 300; i += 100 {
				mustUpdate(t, s, func(tx subrole.Tx) error {
					for j := i; j < i+100; j++ {
						if err := b.append(tx, j*10); err != nil {
							return err
						}
					}
					return nil
				})
			}
			pages := []struct {
				after     uint64
				max       int
				wantFirst uint64
				wantN     int
			}{
				{0, -1, 1, 300},
				{0, 0, 0, 0},
				{0, 2, 1, 2},
				{254, 3, 255, 3},
				{299, 10, 300, 1},
				{300, 10, 0, 0},
				{^uint64(0), 10, 0, 0},
			}
			mustView(t, s, func(tx subrole.Tx) error {
				for _, p := range pages {
					seqs, marks, err := b.list(tx, p.after, p.max)
					if err != nil {
						t.Fatal(err)
					}
					if len(seqs) != p.wantN || p.wantN > 0 && seqs[0] != p.wantFirst {
						t.Errorf("list(%d, %d) = %v, want %d entries from %d", p.after, p.max, seqs, p.wantN, p.wantFirst)
					}
					for i, seq := range seqs {
						if i > 0 && seq != seqs[i-1]+1 || marks[i] != int(seq)*10 {
							t.Fatalf("list(%d, %d): entry %d is seq %d with payload %d, out of order", p.after, p.max, i, seq, marks[i])
						}
					}
				}
				return nil
			})
			if b.delete == nil {
				return
			}
			mustUpdate(t, s, func(tx subrole.Tx) error {
				for _, seq := range []uint64{2, 3, 999} { // 999 is missing: not an error
					if err := b.delete(tx, seq); err != nil {
						return err
					}
				}
				return nil
			})
			mustView(t, s, func(tx subrole.Tx) error {
				seqs, _, err := b.list(tx, 0, 3)
				equal(t, "after delete", seqs, []uint64{1, 4, 5})
				return err
			})
			// Positions are never reused.
			mustUpdate(t, s, func(tx subrole.Tx) error {
				if err := b.delete(tx, 300); err != nil {
					return err
				}
				return b.append(tx, 3010)
			})
			mustView(t, s, func(tx subrole.Tx) error {
				seqs, _, err := b.list(tx, 299, -1)
				equal(t, "after append", seqs, []uint64{301})
				return err
			})
		})
	}
}

func TestRevocationsOrder(t *testing.T) {
	s := openTemp(t, Options{})
	var want []subrole.Revocation
	for i := range 5 {
		r := subrole.Revocation{SubscriptionID: fmt.Sprint("s", 5-i), Status: "user_removed", At: t0.Add(time.Duration(i) * time.Minute)}
		want = append(want, r)
		mustUpdate(t, s, func(tx subrole.Tx) error { return tx.PutRevocation(r) })
	}
	mustView(t, s, func(tx subrole.Tx) error {
		got, err := tx.Revocations()
		equal(t, "Revocations", got, want)
		return err
	})
}

func TestChecks(t *testing.T) {
	s := openTemp(t, Options{})
	at := func(minutes int, id string) subrole.Check {
		return subrole.Check{At: t0.Add(time.Duration(minutes) * time.Minute), TwitchUserID: id}
	}
	mustView(t, s, func(tx subrole.Tx) error {
		if c, ok, err := tx.NextCheck(); ok || err != nil {
			t.Errorf("NextCheck on empty store = %+v, %v, %v", c, ok, err)
		}
		return nil
	})
	mustUpdate(t, s, func(tx subrole.Tx) error {
		for _, c := range []subrole.Check{at(30, "a"), at(10, "b"), at(20, "c"), at(10, "a"), at(20, "c")} {
			if err := tx.ScheduleCheck(c); err != nil {
				return err
			}
		}
		// A time far in the future sorts last, not first.
		return tx.ScheduleCheck(subrole.Check{At: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), TwitchUserID: "z"})
	})
	if n := count(t, s, bucketChecks); n != 5 {
		t.Errorf("%d checks stored, want 5 (same user and time twice is one check)", n)
	}
	tests := []struct {
		now  time.Time
		max  int
		want []subrole.Check
	}{
		{t0, -1, nil},
		{t0.Add(10 * time.Minute), -1, []subrole.Check{at(10, "a"), at(10, "b")}},
		{t0.Add(20*time.Minute - 1), -1, []subrole.Check{at(10, "a"), at(10, "b")}},
		{t0.Add(20 * time.Minute), -1, []subrole.Check{at(10, "a"), at(10, "b"), at(20, "c")}},
		{t0.Add(time.Hour), 2, []subrole.Check{at(10, "a"), at(10, "b")}},
		{t0.Add(time.Hour), 0, nil},
		{time.Time{}, -1, nil},
	}
	mustView(t, s, func(tx subrole.Tx) error {
		for _, tt := range tests {
			got, err := tx.DueChecks(tt.now, tt.max)
			if err != nil {
				t.Fatal(err)
			}
			equal(t, fmt.Sprintf("DueChecks(%s, %d)", tt.now.Format(time.TimeOnly), tt.max), got, tt.want)
		}
		next, ok, err := tx.NextCheck()
		if err != nil || !ok {
			t.Fatalf("NextCheck = %v, %v", ok, err)
		}
		equal(t, "NextCheck", next, at(10, "a"))
		return nil
	})
	mustUpdate(t, s, func(tx subrole.Tx) error {
		for _, c := range []subrole.Check{at(10, "a"), at(10, "b"), at(99, "missing"), {TwitchUserID: "zero time"}} {
			if err := tx.DeleteCheck(c); err != nil {
				return err
			}
		}
		return nil
	})
	mustView(t, s, func(tx subrole.Tx) error {
		next, _, err := tx.NextCheck()
		equal(t, "NextCheck after delete", next, at(20, "c"))
		return err
	})
	err := s.Update(context.Background(), func(tx subrole.Tx) error { return tx.ScheduleCheck(subrole.Check{TwitchUserID: "a"}) })
	if err == nil {
		t.Error("ScheduleCheck at the zero time succeeded")
	}
}

func TestPruneSeen(t *testing.T) {
	s := openTemp(t, Options{})
	minute := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	mustUpdate(t, s, func(tx subrole.Tx) error {
		for i := range 10 {
			if err := tx.MarkSeen(fmt.Sprint("m", i), minute(i)); err != nil {
				return err
			}
		}
		return tx.MarkSeen("m1", minute(20)) // seen again later: moves in the time index
	})
	if n := count(t, s, bucketSeenByTime); n != 10 {
		t.Fatalf("%d time index entries, want 10", n)
	}
	steps := []struct {
		before   time.Time
		max      int
		want     int
		wantSeen map[string]bool
	}{
		{minute(0), -1, 0, map[string]bool{"m0": true}},
		{minute(5), 0, 0, map[string]bool{"m0": true}},
		{minute(5), 2, 2, map[string]bool{"m0": false, "m1": true, "m2": false, "m3": true}},
		{minute(6), -1, 3, map[string]bool{"m1": true, "m3": false, "m4": false, "m5": false, "m6": true}},
		{time.Time{}, -1, 0, map[string]bool{"m6": true}},
		{minute(21), -1, 5, map[string]bool{"m1": false, "m6": false, "m9": false}},
	}
	for i, st := range steps {
		var n int
		mustUpdate(t, s, func(tx subrole.Tx) (err error) {
			n, err = tx.PruneSeen(st.before, st.max)
			return err
		})
		if n != st.want {
			t.Errorf("step %d: PruneSeen(%s, %d) = %d, want %d", i, st.before.Format(time.TimeOnly), st.max, n, st.want)
		}
		mustView(t, s, func(tx subrole.Tx) error {
			for id, want := range st.wantSeen {
				if got, _ := tx.SeenMessage(id); got != want {
					t.Errorf("step %d: SeenMessage(%s) = %v, want %v", i, id, got, want)
				}
			}
			return nil
		})
		if err := s.Check(); err != nil {
			t.Errorf("step %d: %v", i, err)
		}
	}
	if a, b := len(s.seen.m), count(t, s, bucketSeenByTime); a != 0 || b != 0 {
		t.Errorf("%d seen ids and %d index entries left, want none", a, b)
	}
	err := s.Update(context.Background(), func(tx subrole.Tx) error { return tx.MarkSeen("m", time.Time{}) })
	if err == nil {
		t.Error("MarkSeen at the zero time succeeded")
	}
}

// TestViewWrites checks that every write method fails in a View, even when
// it would have nothing to write.
func TestViewWrites(t *testing.T) {
	s := openTemp(t, Options{})
	writes := map[string]func(subrole.Tx) error{
		"MarkSeen":        func(tx subrole.Tx) error { return tx.MarkSeen("m", t0) },
		"PruneSeen":       func(tx subrole.Tx) error { _, err := tx.PruneSeen(t0, 1); return err },
		"AppendInbox":     func(tx subrole.Tx) error { _, err := tx.AppendInbox(subrole.Event{}); return err },
		"DeleteInbox":     func(tx subrole.Tx) error { return tx.DeleteInbox(1) },
		"PutSubscription": func(tx subrole.Tx) error { return tx.PutSubscription(subrole.Subscription{TwitchUserID: "t"}) },
		"PutLink":         func(tx subrole.Tx) error { return tx.PutLink(subrole.Link{DiscordUserID: "d", TwitchUserID: "t"}) },
		"DeleteLink":      func(tx subrole.Tx) error { return tx.DeleteLink("d") },
		"AppendRoleJob":   func(tx subrole.Tx) error { _, err := tx.AppendRoleJob(subrole.RoleJob{}); return err },
		"DeleteRoleJob":   func(tx subrole.Tx) error { return tx.DeleteRoleJob(1) },
		"AppendAudit":     func(tx subrole.Tx) error { return tx.AppendAudit(subrole.AuditEntry{}) },
		"PutRevocation":   func(tx subrole.Tx) error { return tx.PutRevocation(subrole.Revocation{}) },
		"ScheduleCheck":   func(tx subrole.Tx) error { return tx.ScheduleCheck(subrole.Check{At: t0, TwitchUserID: "t"}) },
		"DeleteCheck":     func(tx subrole.Tx) error { return tx.DeleteCheck(subrole.Check{At: t0, TwitchUserID: "t"}) },
		"PutMeta":         func(tx subrole.Tx) error { return tx.PutMeta("k", []byte("v")) },
		"PutDashboardSession": func(tx subrole.Tx) error {
			return tx.PutDashboardSession(subrole.DashboardSession{Key: "k", Expires: t0})
		},
		"DeleteDashboardSession": func(tx subrole.Tx) error { return tx.DeleteDashboardSession("k") },
		"PruneDashboardSessions": func(tx subrole.Tx) error { _, err := tx.PruneDashboardSessions(t0); return err },
	}
	for name, write := range writes {
		t.Run(name, func(t *testing.T) {
			err := s.View(context.Background(), write)
			if !errors.Is(err, berrors.ErrTxNotWritable) {
				t.Fatalf("got %v, want an error wrapping ErrTxNotWritable", err)
			}
			if !strings.HasPrefix(err.Error(), "store: ") {
				t.Errorf("error %q lacks the store: prefix", err)
			}
		})
	}
}

func TestSchemaVersion(t *testing.T) {
	s := openTemp(t, Options{})
	mustView(t, s, func(tx subrole.Tx) error {
		v, err := tx.Meta(metaSchemaVersion)
		if want := strconv.Itoa(SchemaVersion); err != nil || string(v) != want {
			t.Errorf("schema version = %q, %v; want %s", v, err, want)
		}
		return nil
	})
	err := s.Update(context.Background(), func(tx subrole.Tx) error { return tx.PutMeta(metaSchemaVersion, []byte("7")) })
	if err == nil {
		t.Error("PutMeta overwrote the schema version")
	}
	path := s.Path()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	setVersion := func(v string) {
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte(bucketMeta)).Put([]byte(metaSchemaVersion), []byte(v))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setVersion(strconv.Itoa(SchemaVersion + 1))
	s, err = Open(path, Options{})
	want := fmt.Sprintf("store: database schema %d is newer than this binary supports (%d)", SchemaVersion+1, SchemaVersion)
	if err == nil {
		s.Close()
	}
	if err == nil || err.Error() != want {
		t.Fatalf("Open with a newer schema: got %v, want %q", err, want)
	}
	setVersion("1")
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("Open with schema 1: %v", err)
	}
	s.Close()
}

func TestOpen(t *testing.T) {
	t.Run("permissions", func(t *testing.T) {
		s := openTemp(t, Options{})
		fi, err := os.Stat(s.Path())
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("file mode %v, want 0600", perm)
		}
	})
	t.Run("locked", func(t *testing.T) {
		s := openTemp(t, Options{})
		start := time.Now()
		_, err := Open(s.Path(), Options{Timeout: 200 * time.Millisecond})
		if !errors.Is(err, berrors.ErrTimeout) || !strings.Contains(err.Error(), s.Path()) {
			t.Fatalf("second Open: got %v, want ErrTimeout naming %s", err, s.Path())
		}
		// bbolt polls the lock every 50ms and gives up within one poll of the timeout.
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Errorf("second Open gave up after %v, before its timeout", d)
		}
	})
	t.Run("not a database", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "junk.db")
		if err := os.WriteFile(path, []byte(strings.Repeat("junk", 2000)), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("Open of a junk file: got %v, want an error naming the path", err)
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		s := openTemp(t, Options{})
		path := s.Path()
		s.Close()
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte(bucketChecks)) })
		db.Close()
		if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), bucketChecks) {
			t.Errorf("Open without the checks bucket: got %v", err)
		}
	})
}

func TestCheck(t *testing.T) {
	s := openTemp(t, Options{})
	mustUpdate(t, s, func(tx subrole.Tx) error {
		if err := tx.PutLink(subrole.Link{DiscordUserID: "d1", TwitchUserID: "t1"}); err != nil {
			return err
		}
		return tx.MarkSeen("m1", t0)
	})
	if err := s.Check(); err != nil {
		t.Fatalf("Check of a sound file: %v", err)
	}
	corruptions := map[string]func(tx *bolt.Tx) error{
		"dangling twitch index": func(tx *bolt.Tx) error {
			return tx.Bucket([]byte(bucketLinksTwitch)).Put([]byte("t2"), []byte("d9"))
		},
		"missing twitch index": func(tx *bolt.Tx) error {
			return tx.Bucket([]byte(bucketLinksTwitch)).Delete([]byte("t1"))
		},
	}
	for name, corrupt := range corruptions {
		t.Run(name, func(t *testing.T) {
			// Break the file in a transaction that is rolled back afterwards.
			errRollback := errors.New("rollback")
			err := s.Bolt().Update(func(tx *bolt.Tx) error {
				if err := corrupt(tx); err != nil {
					return err
				}
				if len(checkIndexes(tx)) == 0 {
					t.Error("checkIndexes found nothing wrong")
				}
				return errRollback
			})
			if err != errRollback {
				t.Fatal(err)
			}
		})
	}
	// And once through Check itself, on disk.
	if err := s.Bolt().Update(corruptions["dangling twitch index"]); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err == nil || !strings.Contains(err.Error(), "t2") {
		t.Errorf("Check after corruption: got %v, want a report about t2", err)
	}
}

func TestClosed(t *testing.T) {
	s := openTemp(t, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ran := false
	fn := func(subrole.Tx) error { ran = true; return nil }
	if err := s.Update(context.Background(), fn); !errors.Is(err, ErrClosed) {
		t.Errorf("Update after Close: %v, want ErrClosed", err)
	}
	if err := s.View(context.Background(), fn); !errors.Is(err, ErrClosed) {
		t.Errorf("View after Close: %v, want ErrClosed", err)
	}
	if err := s.Check(); !errors.Is(err, ErrClosed) {
		t.Errorf("Check after Close: %v, want ErrClosed", err)
	}
	if ran {
		t.Error("fn ran after Close")
	}
}

func TestViewContext(t *testing.T) {
	s := openTemp(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	err := s.View(ctx, func(subrole.Tx) error { ran = true; return nil })
	if !errors.Is(err, context.Canceled) || ran {
		t.Errorf("View with a cancelled context = %v, ran %v", err, ran)
	}
	want := errors.New("mine")
	if err := s.View(context.Background(), func(subrole.Tx) error { return want }); err != want {
		t.Errorf("View returned %v, want fn's error unchanged", err)
	}
}
