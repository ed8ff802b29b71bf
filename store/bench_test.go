package store

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

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
