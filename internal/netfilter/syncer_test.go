package netfilter_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/netfilter"

	"github.com/weft-net/weft/internal/testenv"
)

// Plain tests: no root, no kernel.

func TestDesired(t *testing.T) {
	cfg := testCfg()
	got := netfilter.Desired(cfg)
	if len(got) != 2 || got[0].Family != netfilter.IPv4 || got[1].Family != netfilter.IPv6 {
		t.Fatalf("families = %+v", got)
	}
	c, p := netip.MustParsePrefix(c6), netip.MustParsePrefix(p6)
	want := []netfilter.Rule{
		{Mark: 0x4000, Verdict: netfilter.Return},
		{Src: netfilter.Is(p), Dst: netfilter.Is(c), Verdict: netfilter.Return},
		{Src: netfilter.Is(c), Dst: netfilter.Is(p), Verdict: netfilter.Return},
		{Src: netfilter.Not(c), Dst: netfilter.Is(p), Verdict: netfilter.Return},
		{Src: netfilter.Is(c), Dst: netfilter.Not(netip.MustParsePrefix("ff00::/8")), Verdict: netfilter.Masquerade, FullyRandom: true},
		{Src: netfilter.Not(c), Dst: netfilter.Is(c), Verdict: netfilter.Masquerade, FullyRandom: true},
	}
	if !slices.Equal(got[1].Masq, want) {
		t.Errorf("IPv6 masquerade rules:\n%+v\nwant\n%+v", got[1].Masq, want)
	}
	if len(got[0].Forward) != 2 || got[0].Forward[1].Dst != netfilter.Is(netip.MustParsePrefix(c4)) {
		t.Errorf("IPv4 forward rules: %+v", got[0].Forward)
	}
	cfg.Masquerade, cfg.Forward = false, false
	for _, fr := range netfilter.Desired(cfg) {
		if !fr.Empty() {
			t.Errorf("masquerade and forward off: %+v", fr)
		}
	}
}

func TestValidate(t *testing.T) {
	n := func(c, p string) netfilter.Network {
		return netfilter.Network{Cluster: netip.MustParsePrefix(c), Subnet: netip.MustParsePrefix(p)}
	}
	for _, tc := range []struct {
		nets []netfilter.Network
		err  string
	}{
		{[]netfilter.Network{n(c4, p4), n(c6, p6)}, ""},
		{[]netfilter.Network{n(c4, "10.245.1.0/24")}, "not inside"},
		{[]netfilter.Network{n(c4, "10.0.0.0/8")}, "not inside"},
		{[]netfilter.Network{n(c4, p6)}, "another address family"},
		{[]netfilter.Network{n(c4, "10.244.1.1/24")}, "host bits"},
		{[]netfilter.Network{n(c4, p4), n(c4, "10.244.2.0/24")}, "more than one ipv4"},
		{[]netfilter.Network{{Cluster: netip.MustParsePrefix(c4)}}, "required"},
	} {
		err := netfilter.Config{Networks: tc.nets}.Validate()
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Validate(%v) = %v, want %q", tc.nets, err, tc.err)
		}
	}
}

// fakeBackend records Apply calls; broken families report a repair.
type fakeBackend struct {
	mu      sync.Mutex
	applied []netfilter.FamilyRules
	broken  map[netfilter.Family]bool
	err     map[netfilter.Family]error
}

func (f *fakeBackend) Apply(_ context.Context, want netfilter.FamilyRules) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, want)
	if err := f.err[want.Family]; err != nil {
		return false, err
	}
	changed := f.broken[want.Family]
	f.broken[want.Family] = false
	return changed, nil
}

func (f *fakeBackend) calls() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s []string
	for _, a := range f.applied {
		s = append(s, fmt.Sprintf("%s:%d/%d", a.Family, len(a.Masq), len(a.Forward)))
	}
	f.applied = nil
	return strings.Join(s, " ")
}

func TestSyncerSequence(t *testing.T) {
	b := &fakeBackend{broken: map[netfilter.Family]bool{}, err: map[netfilter.Family]error{}}
	logs := &testenv.LogBuffer{}
	s := netfilter.NewSyncer(b, slog.New(slog.NewTextHandler(logs, nil)), time.Hour)
	ctx := context.Background()
	only4 := testCfg()
	only4.Networks = only4.Networks[:1]
	steps := []struct {
		do   func() error
		want string
	}{
		{func() error { return s.Set(ctx, testCfg()) }, "ipv4:6/2 ipv6:6/2"},
		{func() error { return s.Set(ctx, only4) }, "ipv4:6/2 ipv6:0/0"},
		{func() error { return s.Resync(ctx) }, "ipv4:6/2 ipv6:0/0"},
		{func() error { return s.Set(ctx, only4) }, "ipv4:6/2"},
		{func() error { return s.Cleanup(ctx) }, "ipv4:0/0 ipv6:0/0"},
		{func() error { return s.Resync(ctx) }, ""},
	}
	for i, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := b.calls(); got != st.want {
			t.Errorf("step %d: applied %q, want %q", i, got, st.want)
		}
	}
	if err := s.Set(ctx, netfilter.Config{Networks: []netfilter.Network{{}}}); err == nil {
		t.Error("Set accepted an invalid config")
	}
	b.err[netfilter.IPv6] = fmt.Errorf("list: %w", exec.ErrNotFound)
	if err := s.Cleanup(ctx); err != nil {
		t.Errorf("Cleanup with ip6tables missing: %v", err)
	}
	if err := s.Set(ctx, testCfg()); !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), "ipv6") {
		t.Errorf("Set with ip6tables missing = %v", err)
	}
}

func TestRunRepairsAndStops(t *testing.T) {
	b := &fakeBackend{broken: map[netfilter.Family]bool{}, err: map[netfilter.Family]error{}}
	logs := &testenv.LogBuffer{}
	s := netfilter.NewSyncer(b, slog.New(slog.NewTextHandler(logs, nil)), 10*time.Millisecond)
	if err := s.Set(context.Background(), testCfg()); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.broken[netfilter.IPv6] = true
	b.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), `msg="repaired masquerade and forward rules" family=ipv6`) {
		if time.Now().After(deadline) {
			t.Fatalf("no repair logged:\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
	if err := netfilter.NewSyncer(b, discard(), 0).Run(context.Background()); err == nil {
		t.Error("Run with a zero interval did not fail")
	}
}
