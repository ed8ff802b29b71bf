package store

import (
	"strconv"
	"testing"

	"github.com/subrole/subrole"
	bolt "go.etcd.io/bbolt"
)

// TestAppendOnlyBucketsFillTheirPages checks that the buckets keyed by
// sequence number keep their leaf pages nearly full as entries are appended
// over many commits.
func TestAppendOnlyBucketsFillTheirPages(t *testing.T) {
	s := openTemp(t, Options{})
	for c := range 200 {
		mustUpdate(t, s, func(tx subrole.Tx) error {
			for i := range 10 {
				n := c*10 + i
				id := "message-" + strconv.Itoa(n)
				if err := tx.AppendAudit(subrole.AuditEntry{Time: t0, Kind: subrole.AuditEvent, EventID: id, TwitchUserID: strconv.Itoa(n)}); err != nil {
					return err
				}
				if _, err := tx.AppendInbox(subrole.Event{MessageID: id, Type: subrole.EventSubscribe, UserID: strconv.Itoa(n)}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	err := s.db.View(func(btx *bolt.Tx) error {
		for _, name := range []string{bucketAudit, bucketInbox} {
			st := btx.Bucket([]byte(name)).Stats()
			if st.LeafPageN < 4 {
				t.Fatalf("%s: only %d leaf pages: too little data to tell", name, st.LeafPageN)
			}
			fill := float64(st.LeafInuse) / float64(st.LeafPageN*btx.DB().Info().PageSize)
			t.Logf("%s: %d leaf pages, %.0f%% full", name, st.LeafPageN, 100*fill)
			if fill < 0.85 {
				t.Errorf("%s: leaf pages %.0f%% full on average (%d pages), want at least 85%%", name, 100*fill, st.LeafPageN)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
