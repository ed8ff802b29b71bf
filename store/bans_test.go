package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/subrole/subrole/store"
)

func TestBans(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subrole.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	got, err := s.LoadBans(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("LoadBans on a new file = %v, %v", got, err)
	}
	err = s.WriteBans(ctx, map[string][]byte{"203.0.113.7/32": []byte(`{"a":1}`), "2001:db8::/64": []byte(`{"b":2}`)})
	if err != nil {
		t.Fatal(err)
	}
	err = s.WriteBans(ctx, map[string][]byte{"203.0.113.7/32": nil, "198.51.100.0/24": []byte(`{"c":3}`), "never/32": nil})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err = s.LoadBans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got["2001:db8::/64"]) != `{"b":2}` || string(got["198.51.100.0/24"]) != `{"c":3}` {
		t.Fatalf("after reopen: %q", got)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.WriteBans(done, map[string][]byte{"2001:db8::/64": nil}); !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteBans with a done context: %v", err)
	}
	s.Close()
	if _, err := s.LoadBans(ctx); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("LoadBans after Close: %v", err)
	}
}
