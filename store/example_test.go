package store_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/store"
)

func Example() {
	dir, err := os.MkdirTemp("", "subrole")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := store.Open(filepath.Join(dir, "subrole.db"), store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()

	// Accept an event: deduplicate and queue it in one commit.
	event := subrole.Event{MessageID: "msg-1", Type: subrole.EventSubscribe, UserID: "1234", Tier: subrole.Tier1}
	accept := func(tx subrole.Tx) error {
		seen, err := tx.SeenMessage(event.MessageID)
		if err != nil || seen {
			return err
		}
		if err := tx.MarkSeen(event.MessageID, time.Now()); err != nil {
			return err
		}
		_, err = tx.AppendInbox(event)
		return err
	}
	for range 2 { // the second delivery is a duplicate
		if err := s.Update(ctx, accept); err != nil {
			log.Fatal(err)
		}
	}

	err = s.View(ctx, func(tx subrole.Tx) error {
		entries, err := tx.Inbox(0, 10)
		if err != nil {
			return err
		}
		for _, e := range entries {
			fmt.Println(e.Seq, e.Event.Type, e.Event.UserID, e.Event.Tier)
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// 1 channel.subscribe 1234 tier 1
}
