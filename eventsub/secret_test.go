package eventsub

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/subrole/subrole"
	"github.com/subrole/subrole/store"
)

func TestSecretGeneration(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "subrole.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var instance string
	for i, step := range []struct {
		secret  string
		gen     uint64
		changed bool
	}{
		{"first-secret-0123", 1, false}, // first start
		{"first-secret-0123", 1, false}, // restart
		{"second-secret-456", 2, true},  // rotated
		{"second-secret-456", 2, false},
		{"first-secret-0123", 3, true}, // rotating back is another generation
	} {
		id, changed, err := SecretGeneration(ctx, db, step.secret)
		if err != nil || id.Generation != step.gen || changed != step.changed {
			t.Fatalf("step %d: generation %d changed %v err %v, want %d %v", i, id.Generation, changed, err, step.gen, step.changed)
		}
		if instance == "" {
			instance = id.Instance
		}
		if len(id.Instance) != 8 || id.Instance != instance {
			t.Fatalf("step %d: instance %q, want a stable 8-character id (%q)", i, id.Instance, instance)
		}
	}
	// The secret itself is never stored.
	db.View(ctx, func(tx subrole.Tx) error {
		b, err := tx.Meta(metaSecret)
		if err != nil || strings.Contains(string(b), "secret-0123") || !strings.Contains(string(b), `"generation":3`) {
			t.Fatalf("meta %s %v", b, err)
		}
		return nil
	})
	if got := (CallbackID{Generation: 3, Instance: "abc"}).URL("https://subs.example.com"); got != "https://subs.example.com/twitch_eventsub?g=3&i=abc" {
		t.Fatalf("URL = %s", got)
	}
}
