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
// took; when d passes first, it fails the test naming what it waited for.
// d is taken as given, since a bound may be what the test asserts ("within
// 1 s"): a wait that may take longer on a slower kernel passes Scale(t, d).
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}
