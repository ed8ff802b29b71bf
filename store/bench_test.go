package store

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
)

// BenchmarkUpdateParallel compares the commit loop with bbolt's DB.Batch on
// the webhook's work: mark a message id seen and append it to the inbox, with
// fsync on. SetParallelism(p) runs p goroutines per GOMAXPROCS.
func BenchmarkUpdateParallel(b *testing.B) {
	modes := []struct {
		name   string
		update func(s *Store, fn func(subrole.Tx) error) error
	}{
		{"loop", func(s *Store, fn func(subrole.Tx) error) error {
			return s.Update(context.Background(), fn)
		}},
		{"batch", func(s *Store, fn func(subrole.Tx) error) error {
			return s.db.Batch(func(btx *bolt.Tx) error { return fn(&tx{tx: btx, seen: &s.seen}) })
		}},
	}
	for _, mode := range modes {
		for _, p := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("%s/p=%d", mode.name, p), func(b *testing.B) {
				s := openTemp(b, Options{})
				var next atomic.Uint64
				b.SetParallelism(p)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						id := strconv.FormatUint(next.Add(1), 10)
						err := mode.update(s, func(tx subrole.Tx) error {
							if err := tx.MarkSeen(id, t0); err != nil {
								return err
							}
							_, err := tx.AppendInbox(subrole.Event{MessageID: id, Type: subrole.EventSubscribe, UserID: id})
							return err
						})
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.StopTimer()
				if mode.name == "loop" {
					b.ReportMetric(float64(b.N)/float64(s.commits.Load()), "updates/commit")
				}
			})
		}
	}
}

// BenchmarkAcceptRandomIDs measures the commit loop on what accepting an
// EventSub notification writes in production: a random message id (Twitch's
// are UUIDs) marked seen, the subscription state of a random one of 100,000
// users, and an audit entry, with 100,000 ids already seen (a busy day) and
// fsync on. pages/commit and pages/event count the pages bbolt wrote: unlike
// time, they do not depend on the machine's load.
func BenchmarkAcceptRandomIDs(b *testing.B) {
	const users = 100_000
	s := openTemp(b, Options{})
	for i := range 100 {
		mustUpdate(b, s, func(tx subrole.Tx) error {
			for j := range 1000 {
				if err := tx.MarkSeen(rand.Text(), t0.Add(time.Duration(i*1000+j))); err != nil {
					return err
				}
				if err := tx.PutSubscription(subrole.Subscription{TwitchUserID: strconv.Itoa(i*1000 + j), Tier: subrole.Tier1}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	b.SetParallelism(32) // 64 concurrent webhook requests on 2 CPUs
	commits0, writes0 := s.commits.Load(), pagesWritten(s)
	var next atomic.Uint64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id, user := rand.Text(), strconv.Itoa(int(next.Add(7919)%users))
			err := s.Update(context.Background(), func(tx subrole.Tx) error {
				if seen, err := tx.SeenMessage(id); err != nil || seen {
					return err
				}
				if err := tx.MarkSeen(id, t0.Add(time.Hour)); err != nil {
					return err
				}
				if err := tx.PutSubscription(subrole.Subscription{TwitchUserID: user, Tier: subrole.Tier2}); err != nil {
					return err
				}
				return tx.AppendAudit(subrole.AuditEntry{Time: t0, Kind: subrole.AuditEvent, EventID: id, TwitchUserID: user})
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	commits, writes := s.commits.Load()-commits0, pagesWritten(s)-writes0
	b.ReportMetric(float64(b.N)/float64(commits), "events/commit")
	b.ReportMetric(float64(writes)/float64(commits), "pages/commit")
	b.ReportMetric(float64(writes)/float64(b.N), "pages/event")
}

// pagesWritten returns how many pages bbolt has written to the file.
func pagesWritten(s *Store) int64 {
	st := s.db.Stats()
	return st.TxStats.GetWrite()
}
