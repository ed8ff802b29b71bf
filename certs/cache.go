package certs

import (
	"bytes"
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/acme/autocert"
)

// DefaultCacheBucket is the bbolt bucket NewCache uses when given "".
const DefaultCacheBucket = "autocert"

// Cache is an autocert.Cache on one bucket of a bbolt file: the ACME account
// key, certificates with their private keys, and short-lived challenge
// tokens. Keys are autocert's ("acme_account+key", "subs.example.com",
// "subs.example.com+rsa", ...), values its PEM data. A Cache is safe for
// concurrent use.
//
// The bucket holds private keys; the file should be readable by the service
// account only (store.Open creates it with mode 0600).
type Cache struct {
	db     *bolt.DB
	bucket []byte
}

var _ autocert.Cache = (*Cache)(nil)

// NewCache returns a Cache on bucket ("" means DefaultCacheBucket) of db,
// creating the bucket if needed.
func NewCache(db *bolt.DB, bucket string) (*Cache, error) {
	if bucket == "" {
		bucket = DefaultCacheBucket
	}
	c := &Cache{db: db, bucket: []byte(bucket)}
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(c.bucket)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("certs: create cache bucket %s: %w", bucket, err)
	}
	return c, nil
}

// Get returns a copy of the data stored under key. It returns exactly
// autocert.ErrCacheMiss (not wrapped) when there is none, ctx.Err() when ctx
// is already done, and an error prefixed "certs:" when the file cannot be
// read.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var data []byte
	err := c.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(c.bucket)
		if b == nil {
			return fmt.Errorf("bucket %s is missing", c.bucket)
		}
		if v := b.Get([]byte(key)); v != nil {
			data = bytes.Clone(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("certs: cache get %s: %w", key, err)
	}
	if data == nil {
		return nil, autocert.ErrCacheMiss
	}
	return data, nil
}

// Put stores data under key, replacing what was there, and returns once it
// is on disk. It returns ctx.Err() without writing when ctx is already done.
func (c *Cache) Put(ctx context.Context, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := c.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(c.bucket)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), data)
	})
	if err != nil {
		return fmt.Errorf("certs: cache put %s: %w", key, err)
	}
	return nil
}

// Delete removes key. Deleting a missing key is not an error. It returns
// ctx.Err() without writing when ctx is already done.
func (c *Cache) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(c.bucket)
		if b == nil {
			return nil
		}
		return b.Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("certs: cache delete %s: %w", key, err)
	}
	return nil
}
