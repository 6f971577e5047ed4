//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// resultAddrs returns the result's addresses.
func resultAddrs(t testing.TB, res *types100.Result) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, ip := range res.IPs {
		a, _ := netip.AddrFromSlice(ip.Address.IP)
		ones, _ := ip.Address.Mask.Size()
		out = append(out, netip.PrefixFrom(a.Unmap(), ones))
	}
	return out
}

func TestAddUsualConflist(t *testing.T) {
	env := env4()
	n := newNode(t, &env, "")
	pod := n.pod(t)
	res, err := n.add(context.Background(), "pod-usual", pod)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	addrs := resultAddrs(t, res)
	if len(addrs) != 1 || !netip.MustParsePrefix("10.244.1.0/24").Contains(addrs[0].Addr()) || addrs[0].Addr() == env.Subnet.Addr() {
		t.Fatalf("result addresses %v, want one inside 10.244.1.0/24 other than the gateway", addrs)
	}
	if got := globalAddrs(t, pod); !slices.Equal(got, addrs) {
		t.Errorf("pod addresses %v, want %v", got, addrs)
	}
	eth0 := links(t, pod)["eth0"]
	if eth0 == nil || eth0.Attrs().MTU != 1450 {
		t.Fatalf("pod eth0 %v, want MTU 1450", eth0)
	}
	gw := "10.244.1.1"
	rs := routes(t, pod, netlink.FAMILY_V4)
	for _, dst := range []string{"default", "10.244.0.0/16"} {
		if r, ok := rs[dst]; !ok || r.Gw.String() != gw {
			t.Errorf("pod route %s: %v, want via %s (routes %v)", dst, r, gw, rs)
		}
	}
	nodeLinks := links(t, n.ns)
	br, ok := nodeLinks["cni0"].(*netlink.Bridge)
	if !ok {
		t.Fatalf("node has no bridge cni0: %v", nodeLinks)
	}
	if got := globalAddrs(t, n.ns); !slices.Contains(got, netip.MustParsePrefix("10.244.1.1/24")) {
		t.Errorf("node addresses %v, want cni0's 10.244.1.1/24", got)
	}
	checkHairpinPorts(t, n, br, 1)
	st, err := os.Stat(filepath.Join(n.dataDir, "pod-usual"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("saved delegate configuration: %v %v", st, err)
	}
}

// checkHairpinPorts wants want veths on br, each with hairpin on.
func checkHairpinPorts(t *testing.T, n *node, br *netlink.Bridge, want int) {
	t.Helper()
	ports := 0
	err := n.do(func() error {
		for _, l := range links(t, n.ns) {
			if l.Type() != "veth" || l.Attrs().MasterIndex != br.Index {
				continue
			}
			ports++
			pi, err := netlink.LinkGetProtinfo(l)
			if err != nil {
				return fmt.Errorf("protinfo of %s: %w", l.Attrs().Name, err)
			}
			if !pi.Hairpin {
				t.Errorf("port %s of cni0 has hairpin off", l.Attrs().Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if ports != want {
		t.Errorf("cni0 has %d veth ports, want %d", ports, want)
	}
}

func TestDelReleasesAndCheckChecks(t *testing.T) {
	env := env4()
	n := newNode(t, &env, "")
	ctx := context.Background()
	pod := n.pod(t)
	res, err := n.add(ctx, "pod-a", pod)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	ip := resultAddrs(t, res)[0].Addr().String()
	if got := n.ipamFiles(t); !slices.Equal(got, []string{ip}) {
		t.Fatalf("host-local allocations %v, want [%s]", got, ip)
	}
	if err := n.check(ctx, "pod-a", pod); err != nil {
		t.Fatalf("CHECK after ADD: %v", err)
	}
	if err := n.del(ctx, "pod-a", pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got := n.ipamFiles(t); len(got) != 0 {
		t.Errorf("host-local still holds %v after DEL", got)
	}
	if got := n.savedFiles(t); len(got) != 0 {
		t.Errorf("saved files %v after DEL", got)
	}
	if c := vethCount(t, n.ns); c != 0 {
		t.Errorf("%d veths left on the node", c)
	}
	if err := n.del(ctx, "pod-a", pod); err != nil {
		t.Errorf("second DEL: %v", err)
	}

	pod2 := n.pod(t)
	if _, err := n.add(ctx, "pod-b", pod2); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	err = pod2.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
	if err != nil {
		t.Fatalf("delete the pod's eth0: %v", err)
	}
	if err := n.check(ctx, "pod-b", pod2); err == nil {
		t.Error("CHECK passed with the pod's interface deleted")
	} else {
		t.Logf("CHECK without eth0: %v", err)
	}
	if err := n.del(ctx, "pod-b", pod2); err != nil {
		t.Errorf("DEL: %v", err)
	}
}

func TestParallelPods(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: 50 pods")
	}
	const pods = 50
	env := env4()
	n := newNode(t, &env, "")
	ctx := context.Background()
	nss := make([]ns.NetNS, pods)
	for i := range nss {
		nss[i] = n.pod(t)
	}
	results := make([]*types100.Result, pods)
	errs := make([]error, pods)
	var wg sync.WaitGroup
	for i := range pods {
		wg.Go(func() { results[i], errs[i] = n.add(ctx, fmt.Sprintf("pod-%d", i), nss[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("parallel ADD: %v", err)
	}
	seen := map[netip.Addr]bool{}
	for _, r := range results {
		for _, p := range resultAddrs(t, r) {
			seen[p.Addr()] = true
		}
	}
	if len(seen) != pods || len(n.ipamFiles(t)) != pods || len(n.savedFiles(t)) != pods {
		t.Fatalf("%d distinct addresses, %d allocations, %d saved files; want %d each",
			len(seen), len(n.ipamFiles(t)), len(n.savedFiles(t)), pods)
	}
	for i := range pods {
		wg.Go(func() { errs[i] = n.del(ctx, fmt.Sprintf("pod-%d", i), nss[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("parallel DEL: %v", err)
	}
	if a, s, v := n.ipamFiles(t), n.savedFiles(t), vethCount(t, n.ns); len(a)+len(s)+v != 0 {
		t.Errorf("left after DEL: allocations %v, saved files %v, %d veths", a, s, v)
	}
}

func TestDualStack(t *testing.T) {
	env := env46()
	n := newNode(t, &env, "")
	pod := n.pod(t)
	res, err := n.add(context.Background(), "pod-ds", pod)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	var v4, v6 int
	for _, p := range resultAddrs(t, res) {
		switch {
		case netip.MustParsePrefix("10.244.1.0/24").Contains(p.Addr()):
			v4++
		case netip.MustParsePrefix("fd00:10:244:1::/64").Contains(p.Addr()):
			v6++
		default:
			t.Errorf("address %v outside the node's subnets", p)
		}
	}
	if v4 != 1 || v6 != 1 {
		t.Fatalf("result %v: want one IPv4 and one IPv6 address", resultAddrs(t, res))
	}
	if r, ok := routes(t, pod, netlink.FAMILY_V6)["fd00:10:244::/56"]; !ok || r.Gw.String() != "fd00:10:244:1::1" {
		t.Errorf("pod route to fd00:10:244::/56: %v", r)
	}
	if err := n.del(context.Background(), "pod-ds", pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got := n.ipamFiles(t); len(got) != 0 {
		t.Errorf("allocations left: %v", got)
	}
}

func TestStatus(t *testing.T) {
	n := newNode(t, nil, "")
	ctx := context.Background()
	err := n.status(ctx)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable ||
		!strings.Contains(te.Msg, n.subnetFile+" does not exist") || !strings.Contains(te.Msg, "not written it yet") {
		t.Fatalf("STATUS before subnet.env: %#v", err)
	}
	env := env4()
	n.writeEnv(t, env)
	if err := n.status(ctx); err != nil {
		t.Fatalf("STATUS after subnet.env: %v", err)
	}
}
