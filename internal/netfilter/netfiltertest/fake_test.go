package netfiltertest

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/netfilter"
)

func TestFake(t *testing.T) {
	f := &Fake{}
	ctx := context.Background()
	cfg := netfilter.Config{Masquerade: true, Networks: []netfilter.Network{{
		Cluster: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24")}}}
	if err := f.Set(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got, ok := f.Config(); !ok || !got.Masquerade || len(f.Rules()) != 1 || len(f.Rules()[0].Masq) != 6 {
		t.Errorf("after Set: %+v %v %+v", got, ok, f.Rules())
	}
	if err := f.Set(ctx, netfilter.Config{Networks: []netfilter.Network{{}}}); err == nil {
		t.Error("Fake accepted an invalid config")
	}
	boom := errors.New("boom")
	f.SetErr(boom)
	if err := f.Set(ctx, cfg); !errors.Is(err, boom) {
		t.Errorf("Set = %v, want boom", err)
	}
	f.SetErr(nil)
	if err := f.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Config(); ok || f.Sets() != 2 {
		t.Errorf("after Cleanup: config kept or Sets = %d", f.Sets())
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- f.Run(rctx) }()
	for !f.Running() {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil || f.Running() {
		t.Errorf("Run = %v, running %v", err, f.Running())
	}
}
