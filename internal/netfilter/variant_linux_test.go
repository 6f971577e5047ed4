package netfilter_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/netfilter/iptables"
	"github.com/weft-net/weft/internal/netfilter/netfiltertest"
)

// TestLegacyForwardDrop is the node iptables-wrapper exists for: kubelet and
// kube-proxy in iptables-legacy, and a legacy FORWARD policy DROP (Docker's).
// weft's FORWARD accept rules in iptables-nft do not stop the legacy policy
// from dropping pod traffic; in the variant Detect chooses they let it pass.
func TestLegacyForwardDrop(t *testing.T) {
	netfiltertest.RequireRoot(t, netfiltertest.VariantBinaries()...)
	tp := newTopology(t)
	netfiltertest.Restore(t, tp.node, "iptables-legacy", netfiltertest.KubeNodeRules)
	netfiltertest.MustRun(t, "ip", "netns", "exec", tp.node, "iptables-legacy", "-w", "5", "-P", "FORWARD", "DROP")
	pod2 := listenUDP(t, tp.pod2, "10.244.2.2:9999")
	ctx := context.Background()
	run := netfiltertest.Runner(tp.node)

	if forwarded(t, tp, pod2) {
		t.Fatal("without weft's rules the legacy FORWARD policy DROP lets pod traffic pass: the test cannot tell")
	}
	// weft's rules in the wrong variant: accepted by nft, dropped by legacy.
	wrong := iptables.NewManager(run, discard(), iptables.Choice{Variant: "nft"}.Options(), time.Hour)
	if err := wrong.Set(ctx, testCfg()); err != nil {
		t.Fatal(err)
	}
	if forwarded(t, tp, pod2) {
		t.Fatal("with weft's rules in iptables-nft the legacy FORWARD policy DROP let pod traffic pass: the test cannot tell")
	}
	if err := wrong.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}

	choice, err := iptables.Detect(ctx, run, iptables.ModeAuto)
	if err != nil {
		t.Fatal(err)
	}
	if choice.Variant != "legacy" {
		t.Fatalf("Detect = %+v, want legacy", choice)
	}
	mgr := iptables.NewManager(run, discard(), choice.Options(), time.Hour)
	if err := mgr.Set(ctx, testCfg()); err != nil {
		t.Fatal(err)
	}
	want := []string{"iptables nat FLANNEL-POSTRTG", "iptables filter FLANNEL-FWD", "ip6tables nat FLANNEL-POSTRTG", "ip6tables filter FLANNEL-FWD"}
	if got := netfiltertest.OwnChains(t, tp.node, "iptables-legacy"); !sameSet(got, want) {
		t.Errorf("weft's chains in iptables-legacy: %q, want %q", got, want)
	}
	if got := netfiltertest.OwnChains(t, tp.node, "iptables-nft"); len(got) != 0 {
		t.Errorf("weft's chains in iptables-nft: %q, want none", got)
	}
	if !forwarded(t, tp, pod2) {
		t.Error("with weft's legacy FLANNEL-FWD rules, pod traffic is still dropped by the legacy FORWARD policy")
	}
}

// forwarded sends datagrams from pod to the server in pod2 through the node
// and reports whether they arrived (true) or the node's legacy FORWARD
// policy dropped them (false); it fails t when neither happens in time.
func forwarded(t *testing.T, tp topology, srv *net.UDPConn) bool {
	t.Helper()
	dropped := netfiltertest.PolicyPackets(t, tp.node, "iptables-legacy", "filter", "FORWARD")
	msg := fmt.Sprintf("hello %d", time.Now().UnixNano())
	err := netfiltertest.InNS(tp.pod, func() error {
		c, err := net.Dial("udp", srv.LocalAddr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		for range 3 { // the first may wait for ARP
			if _, err := c.Write([]byte(msg)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send from pod: %v", err)
	}
	buf := make([]byte, 64)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if err := srv.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if n, _, err := srv.ReadFromUDPAddrPort(buf); err == nil && string(buf[:n]) == msg {
			return true
		}
		if netfiltertest.PolicyPackets(t, tp.node, "iptables-legacy", "filter", "FORWARD") > dropped {
			return false
		}
	}
	t.Fatal("the datagrams neither arrived nor were dropped by the legacy FORWARD policy within 20 s")
	return false
}

// sameSet reports whether a and b hold the same strings in any order.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
