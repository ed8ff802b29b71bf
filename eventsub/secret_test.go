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
		gen, changed, err := SecretGeneration(ctx, db, step.secret)
		if err != nil || gen != step.gen || changed != step.changed {
			t.Fatalf("step %d: generation %d changed %v err %v, want %d %v", i, gen, changed, err, step.gen, step.changed)
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
	if got := CallbackURL("https://subs.example.com", 3); got != "https://subs.example.com/twitch_eventsub?g=3" {
		t.Fatalf("CallbackURL = %s", got)
	}
}
