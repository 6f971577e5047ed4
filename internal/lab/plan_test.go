//go:build linux

package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// describe renders a topology as text, one namespace per line, so that a
// whole plan compares at once.
func describe(t *Topology) string {
	var b strings.Builder
	for _, s := range t.Switches {
		fmt.Fprintf(&b, "%s bridge=%s subnets=%v gw=%v\n", s.NS, s.Bridge, s.Subnets, s.Gateway)
	}
	for _, h := range t.hosts() {
		fmt.Fprintf(&b, "%s fwd=%v far=%v gw=%v", h.NS, h.Forwarding, h.Far, h.Gateway)
		for _, l := range h.Links {
			fmt.Fprintf(&b, " %s%v<->%s/%s", l.Name, l.Addrs, l.PeerNS, l.Peer)
			if l.Bridge != "" {
				fmt.Fprintf(&b, "@%s", l.Bridge)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestPlanFull(t *testing.T) {
	topo, err := Plan(Options{Name: "lab1", Nodes: 3, Far: []int{3}, Outside: true, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	want := `lab1-sw bridge=br0 subnets=[192.168.100.0/24 fd00:100::/64] gw=[192.168.100.1 fd00:100::1]
lab1-sw2 bridge=br0 subnets=[192.168.200.0/24 fd00:200::/64] gw=[192.168.200.1 fd00:200::1]
lab1-rt fwd=true far=false gw=[] sw[192.168.100.1/24 fd00:100::1/64]<->lab1-sw/rt@br0 sw2[192.168.200.1/24 fd00:200::1/64]<->lab1-sw2/rt@br0 out[203.0.113.1/24 fd00:203::1/64]<->lab1-out/eth0
lab1-out fwd=false far=false gw=[203.0.113.1 fd00:203::1] eth0[203.0.113.10/24 fd00:203::a/64]<->lab1-rt/out
lab1-n1 fwd=true far=false gw=[192.168.100.1 fd00:100::1] eth0[192.168.100.11/24 fd00:100::b/64]<->lab1-sw/n1@br0
lab1-n2 fwd=true far=false gw=[192.168.100.1 fd00:100::1] eth0[192.168.100.12/24 fd00:100::c/64]<->lab1-sw/n2@br0
lab1-n3 fwd=true far=true gw=[192.168.200.1 fd00:200::1] eth0[192.168.200.13/24 fd00:200::d/64]<->lab1-sw2/n3@br0
`
	if got := describe(topo); got != want {
		t.Errorf("plan:\n%s\nwant:\n%s", got, want)
	}
	wantNS := []string{"lab1-sw", "lab1-sw2", "lab1-rt", "lab1-out", "lab1-n1", "lab1-n2", "lab1-n3"}
	if got := topo.Namespaces(); !reflect.DeepEqual(got, wantNS) {
		t.Errorf("namespaces %v, want %v", got, wantNS)
	}
	if got, want := topo.Nodes[2].Addrs(), []netip.Addr{netip.MustParseAddr("192.168.200.13"), netip.MustParseAddr("fd00:200::d")}; !reflect.DeepEqual(got, want) {
		t.Errorf("node 3 addrs %v, want %v", got, want)
	}
}

func TestPlanMinimal(t *testing.T) {
	topo, err := Plan(Options{Name: "a", Nodes: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := `a-sw bridge=br0 subnets=[192.168.100.0/24] gw=[192.168.100.1]
a-n1 fwd=true far=false gw=[192.168.100.1] eth0[192.168.100.11/24]<->a-sw/n1@br0
`
	if got := describe(topo); got != want {
		t.Errorf("plan:\n%s\nwant:\n%s", got, want)
	}
	if topo.MTU != 1500 {
		t.Errorf("mtu %d, want 1500", topo.MTU)
	}
}

// Every link name fits IFNAMSIZ and is unique within its namespace, for the
// largest lab.
func TestPlanLinkNames(t *testing.T) {
	topo, err := Plan(Options{Name: "abcdefgh", Nodes: MaxNodes, Far: []int{1, MaxNodes}, Outside: true, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	add := func(ns, name string) {
		if len(name) > MaxLinkLen || name == "" {
			t.Errorf("link %q in %s: bad length", name, ns)
		}
		if seen[ns+"/"+name] && !strings.HasSuffix(ns, "-rt") && !strings.HasSuffix(ns, "-out") {
			t.Errorf("link %s in %s twice", name, ns)
		}
		seen[ns+"/"+name] = true
	}
	for _, h := range topo.hosts() {
		for _, l := range h.Links {
			add(h.NS, l.Name)
			add(l.PeerNS, l.Peer)
		}
	}
	if n := len(topo.Nodes[MaxNodes-1].NS); n > 4+MaxNameLen {
		t.Errorf("node namespace %q unexpectedly long", topo.Nodes[MaxNodes-1].NS)
	}
	if got := PodNSName("abcdefgh", MaxNodes, MaxPods); got != "abcdefgh-n64-p999" {
		t.Errorf("pod ns %q", got)
	}
}

func TestPlanInvalid(t *testing.T) {
	for _, o := range []Options{
		{Name: "", Nodes: 1},
		{Name: "toolongname", Nodes: 1},
		{Name: "Upper", Nodes: 1},
		{Name: "a-b", Nodes: 1},
		{Name: "1ab", Nodes: 1},
		{Name: "ok", Nodes: 0},
		{Name: "ok", Nodes: MaxNodes + 1},
		{Name: "ok", Nodes: 2, Far: []int{3}},
		{Name: "ok", Nodes: 1, MTU: 100},
		{Name: "ok", Nodes: 2, Far: []int{2}, FarUnderlay: []netip.Prefix{netip.MustParsePrefix("192.168.100.0/25")}},
		{Name: "ok", Nodes: 1, IPv6: true, Underlay: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}},
		{Name: "ok", Nodes: 1, Underlay: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/30")}},
	} {
		if _, err := Plan(o); !errors.Is(err, ErrInvalid) {
			t.Errorf("Plan(%+v) = %v, want ErrInvalid", o, err)
		}
	}
}

func TestRandomName(t *testing.T) {
	a, err := RandomName("wt")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := RandomName("wt")
	if len(a) != MaxNameLen || !strings.HasPrefix(a, "wt") || a == b {
		t.Errorf("RandomName: %q %q", a, b)
	}
	if _, err := RandomName("toolong"); !errors.Is(err, ErrInvalid) {
		t.Errorf("RandomName(toolong) = %v", err)
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	topo, err := Plan(Options{Name: "st", Nodes: 2, Far: []int{2}, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	topo.Pods = []Pod{{Node: 1, Index: 1, NS: "st-n1-p1", Path: "/run/netns/st-n1-p1"}}
	if err := writeState(dir, topo); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(dir, "st")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, topo) {
		t.Errorf("round trip:\n%+v\nwant\n%+v", got, topo)
	}
	if _, err := LoadState(dir, "other"); !errors.Is(err, ErrNotFound) {
		t.Errorf("LoadState(missing) = %v, want ErrNotFound", err)
	}
}

func TestCheckPodSubnets(t *testing.T) {
	p4, p6 := netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")
	if err := checkPodSubnets([]netip.Prefix{p4, p6}, 1); err != nil {
		t.Error(err)
	}
	for _, s := range [][]netip.Prefix{nil, {p4, p4}, {netip.MustParsePrefix("10.0.0.0/31")}} {
		if err := checkPodSubnets(s, 1); !errors.Is(err, ErrInvalid) {
			t.Errorf("checkPodSubnets(%v) = %v", s, err)
		}
	}
	if got := hostAddr(p4, 2).String(); got != "10.244.1.2/24" {
		t.Errorf("hostAddr = %s", got)
	}
}
