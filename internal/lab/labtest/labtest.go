//go:build linux

// Package labtest gives a test a lab of its own: New skips the test when not
// root (or under -short), builds the lab under a random name (so two test binaries, or -count=2,
// never collide) and registers its removal with t.Cleanup, which also runs when
// the test fails.
package labtest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/weft-net/weft/internal/testenv"

	"github.com/weft-net/weft/internal/lab"
)

// NamePrefix starts the name of every lab New builds; `weft lab down` of a
// leftover "wt*" lab is always safe.
const NamePrefix = "wt"

// RequireRoot skips the test unless it runs as root with iproute2
// installed, and under -short (which means plain tests only).
func RequireRoot(t testing.TB) {
	t.Helper()
	testenv.Privileged(t, "creates a lab of network namespaces", "ip")
}

// Logger returns a debug-level logger writing to the test's output.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// New builds the lab o describes, naming it NamePrefix plus a random suffix
// when o.Name is empty, and removes it when the test ends. It fails the test
// when the lab cannot be built.
func New(t testing.TB, o lab.Options) *lab.Lab {
	t.Helper()
	RequireRoot(t)
	if o.Name == "" {
		name, err := lab.RandomName(NamePrefix)
		if err != nil {
			t.Fatal(err)
		}
		o.Name = name
	}
	log := Logger(t)
	// Registered before Up so that even a lab Up could not roll back goes.
	t.Cleanup(func() {
		if err := lab.Down(context.WithoutCancel(t.Context()), log, o.Name, o.StateDir); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	l, err := lab.Up(t.Context(), log, o)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return l
}
