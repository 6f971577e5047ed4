package testenv

import (
	"sync"
	"testing"
	"time"
)

// A LogBuffer takes writes from several goroutines while it is read, and
// counts the lines holding every substring asked for.
func TestLogBuffer(t *testing.T) {
	var l LogBuffer
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 50 {
				l.Logger().Info("peer added", "worker", i)
				_ = l.String()
			}
		})
	}
	wg.Wait()
	if n := l.Count("peer added"); n != 200 {
		t.Errorf("Count(peer added) = %d, want 200", n)
	}
	if n := l.Count("peer added", "worker=2"); n != 50 {
		t.Errorf("Count(peer added, worker=2) = %d, want 50", n)
	}
	if n := l.Count("no such line"); n != 0 {
		t.Errorf("Count of an absent line = %d", n)
	}
}

// WaitFor returns once the condition holds.
func TestWaitFor(t *testing.T) {
	start := time.Now()
	took := WaitFor(t, 5*time.Second, "the clock", func() bool { return time.Since(start) > 30*time.Millisecond })
	if took < 30*time.Millisecond {
		t.Errorf("WaitFor returned after %v, before the condition held", took)
	}
	if err := Context(t, time.Minute).Err(); err != nil {
		t.Errorf("a fresh Context has ended: %v", err)
	}
}
