package certs_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/subrole/subrole/certs"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/acme/autocert"
)

func TestCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subrole.db")
	db := openDB(t, path)
	c, err := certs.NewCache(db, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// A miss is autocert.ErrCacheMiss itself: autocert compares with ==.
	if _, err := c.Get(ctx, "subs.example.com"); err != autocert.ErrCacheMiss {
		t.Fatalf("Get of a missing key: %v, want autocert.ErrCacheMiss", err)
	}
	if err := c.Put(ctx, "subs.example.com", []byte("pem one")); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, "subs.example.com")
	if err != nil || string(got) != "pem one" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	got[0] = 'X' // the caller owns the returned slice
	if again, _ := c.Get(ctx, "subs.example.com"); string(again) != "pem one" {
		t.Fatalf("modifying a returned value changed the cache: %q", again)
	}
	if err := c.Put(ctx, "subs.example.com", []byte("pem two")); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Get(ctx, "subs.example.com"); string(got) != "pem two" {
		t.Fatalf("Put did not replace: %q", got)
	}
	if err := c.Put(ctx, "acme_account+key", []byte("key")); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "subs.example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "subs.example.com"); err != autocert.ErrCacheMiss {
		t.Fatalf("Get after Delete: %v", err)
	}
	if err := c.Delete(ctx, "never-there"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}

	// A done context changes nothing.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Put(done, "acme_account+key", []byte("other")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a done context: %v", err)
	}
	if err := c.Delete(done, "acme_account+key"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Delete with a done context: %v", err)
	}
	if _, err := c.Get(done, "acme_account+key"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a done context: %v", err)
	}

	// Entries survive reopening the file, in their own bucket.
	db.Close()
	db = openDB(t, path)
	defer db.Close()
	c, err = certs.NewCache(db, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, "acme_account+key"); err != nil || string(got) != "key" {
		t.Fatalf("after reopen: %q, %v", got, err)
	}
	db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte(certs.DefaultCacheBucket)).Get([]byte("acme_account+key")) == nil {
			t.Errorf("entry not in bucket %s", certs.DefaultCacheBucket)
		}
		return nil
	})

	// A failing file is an error prefixed certs:, not a miss.
	db.Close()
	if _, err := c.Get(ctx, "acme_account+key"); err == nil || err == autocert.ErrCacheMiss {
		t.Fatalf("Get on a closed file: %v", err)
	}
}
