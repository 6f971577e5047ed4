package testenv

import (
	"context"
	"testing"
	"time"
)

// Context returns a context that ends when d, stretched by Scale, has
// passed or when the test ends.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Scale(t, d))
	t.Cleanup(cancel)
	return ctx
}

// WaitFor polls cond every 10 ms until it holds and returns how long that
// took; when d, stretched by Scale, passes first, it fails the test naming
// what it waited for.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	limit := Scale(t, d)
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}
