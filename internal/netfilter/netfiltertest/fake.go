// Package netfiltertest holds test helpers for weft's netfilter code: Fake,
// an in-memory netfilter.Manager for the daemon's unit tests, and the
// network-namespace helpers the kernel tests of both modes share. It is
// imported only by tests and never ships in a binary.
package netfiltertest

import (
	"context"
	"sync"

	"github.com/weft-net/weft/internal/netfilter"
)

// Fake is an in-memory netfilter.Manager. It validates configs like the real
// one and remembers the rules it would have installed.
type Fake struct {
	mu      sync.Mutex
	err     error             // returned by Set and Cleanup when non-nil
	cfg     *netfilter.Config // last successful Set, nil after Cleanup
	rules   []netfilter.FamilyRules
	sets    int
	running bool
}

var _ netfilter.Manager = (*Fake)(nil)

// SetErr makes later Set and Cleanup calls fail with err (nil to stop).
func (f *Fake) SetErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// Set implements netfilter.Manager.
func (f *Fake) Set(_ context.Context, cfg netfilter.Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sets++
	if f.err != nil {
		return f.err
	}
	f.cfg, f.rules = &cfg, netfilter.Desired(cfg)
	return nil
}

// Run implements netfilter.Manager: it blocks until ctx is done.
func (f *Fake) Run(ctx context.Context) error {
	f.mu.Lock()
	f.running = true
	f.mu.Unlock()
	<-ctx.Done()
	f.mu.Lock()
	f.running = false
	f.mu.Unlock()
	return nil
}

// Cleanup implements netfilter.Manager.
func (f *Fake) Cleanup(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.cfg, f.rules = nil, nil
	return nil
}

// Config returns the config of the last successful Set, and false when there
// is none (never set, or cleaned up).
func (f *Fake) Config() (netfilter.Config, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cfg == nil {
		return netfilter.Config{}, false
	}
	return *f.cfg, true
}

// Rules returns the rules the last successful Set would have installed.
func (f *Fake) Rules() []netfilter.FamilyRules {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]netfilter.FamilyRules(nil), f.rules...)
}

// Sets returns how many times Set was called with a valid config.
func (f *Fake) Sets() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sets
}

// Running reports whether Run is currently running.
func (f *Fake) Running() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running
}
