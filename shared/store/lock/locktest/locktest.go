// Package locktest connects tests to the real Redis and gives each test its
// own key prefix, deleting every key under it at cleanup, so tests run in
// parallel and leave nothing behind.
package locktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Addr is the server tests use: $REDIS_ADDR, or the local Redis.
func Addr() string {
	if a := os.Getenv("REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// Client dials the test Redis and closes the client at cleanup. Each call
// returns a new client, so a test can give every simulated replica its own
// connection (and break one without touching the others). Under -short
// (make test-short) it skips the test instead: the fast tier runs without
// servers.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Redis (" + Addr() + "): skipped under -short; make test runs it")
	}
	rdb := redis.NewClient(&redis.Options{Addr: Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("connect to Redis at %s (is redis-server running?): %v", Addr(), err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Prefix returns a fresh key prefix such as "test:9f1c2a3b:" and deletes
// every key under it when the test ends. Under -short it skips the test,
// as Client does.
func Prefix(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Redis (" + Addr() + "): skipped under -short; make test runs it")
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "test:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		rdb := redis.NewClient(&redis.Options{Addr: Addr()})
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("scan %s*: %v", prefix, err)
			return
		}
		if len(keys) > 0 {
			if err := rdb.Del(ctx, keys...).Err(); err != nil {
				t.Errorf("delete %s*: %v", prefix, err)
			}
		}
	})
	return prefix
}
