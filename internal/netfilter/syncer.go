package netfilter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"time"
)

// Syncer implements Manager over one Backend: it keeps the desired rules of
// the last Set and re-applies them on every resync tick.
type Syncer struct {
	backend Backend
	log     *slog.Logger
	resync  time.Duration

	mu   sync.Mutex
	want []FamilyRules // last Set, including families to remove; nil = nothing to keep
}

// NewSyncer returns a Manager that applies rules through b and re-checks
// them every resync (--iptables-resync). log is the component's logger.
func NewSyncer(b Backend, log *slog.Logger, resync time.Duration) *Syncer {
	return &Syncer{backend: b, log: log, resync: resync}
}

// Set implements Manager.
func (s *Syncer) Set(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	want := Desired(cfg)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, old := range s.want {
		if !hasFamily(want, old.Family) && !old.Empty() {
			want = append(want, FamilyRules{Family: old.Family}) // dropped from the config
		}
	}
	// Keep the new desired state even when applying fails, so Run retries it.
	s.want = want
	changed, err := s.applyLocked(ctx, want, "set")
	if err != nil {
		return fmt.Errorf("set masquerade and forward rules: %w", err)
	}
	if !changed {
		s.log.Debug("masquerade and forward rules already in place")
	}
	return nil
}

// Check describes how the kernel's rules differ from what Set(cfg) would
// make them, writing nothing (weft status).
func (s *Syncer) Check(ctx context.Context, cfg Config) ([]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c, ok := s.backend.(Checker)
	if !ok {
		return nil, errors.New("this rule mode cannot be checked")
	}
	var out []string
	for _, want := range Desired(cfg) {
		d, err := c.Check(ctx, want)
		if err != nil {
			return nil, err
		}
		out = append(out, d...)
	}
	return out, nil
}

// Run implements Manager.
func (s *Syncer) Run(ctx context.Context) error {
	if s.resync <= 0 {
		return fmt.Errorf("netfilter resync interval %v: must be positive", s.resync)
	}
	t := time.NewTicker(s.resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.Resync(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("resync masquerade and forward rules", "err", err)
		}
	}
}

// Resync re-applies the desired rules of the last Set once; Run calls it on
// every tick. It logs at Info what it repaired.
func (s *Syncer) Resync(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.applyLocked(ctx, s.want, "repaired")
	return err
}

// Cleanup implements Manager. A family whose binary is not installed has
// nothing of weft's to remove and is skipped.
func (s *Syncer) Cleanup(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.want = nil
	var errs []error
	for _, f := range Families() {
		_, err := s.applyLocked(ctx, []FamilyRules{{Family: f}}, "removed")
		if err != nil && !errors.Is(err, exec.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up masquerade and forward rules: %w", err)
	}
	return nil
}

// applyLocked applies every family, continuing past a failing one, and logs
// each family it changed with the given verb. s.mu must be held.
func (s *Syncer) applyLocked(ctx context.Context, want []FamilyRules, verb string) (bool, error) {
	var errs []error
	anyChanged := false
	for _, fr := range want {
		changed, err := s.backend.Apply(ctx, fr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", fr.Family, err))
		}
		if changed {
			anyChanged = true
			s.log.Info(verb+" masquerade and forward rules", "family", fr.Family.String(),
				"masquerade", len(fr.Masq) > 0, "forward", len(fr.Forward) > 0)
		}
	}
	return anyChanged, errors.Join(errs...)
}

func hasFamily(list []FamilyRules, f Family) bool {
	for _, fr := range list {
		if fr.Family == f {
			return true
		}
	}
	return false
}
