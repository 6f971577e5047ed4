//go:build linux

package netlinkx

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/testenv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNS makes a namespace with eth0 (192.168.100.11/24, a veth pair) and a
// vxlan device flannel.1, and returns a handle in it.
func testNS(t *testing.T) (*Handle, int) {
	t.Helper()
	testenv.Privileged(t, "creates a network namespace")
	name := testenv.NodeNamespace(t, "nlx-", netip.MustParsePrefix("192.168.100.11/24"), netip.Addr{})
	testenv.IP(t, "-n", name, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", "192.168.100.11", "dev", "eth0", "dstport", "8472", "nolearning")
	testenv.IP(t, "-n", name, "link", "set", "flannel.1", "up")
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	h, err := NewAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	l, err := h.h.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	return h, l.Attrs().Index
}

func peerWrites(n, link int, set bool) []kernel.Write {
	var ws []kernel.Write
	ops := []kernel.WriteOp{kernel.OpSetFDB, kernel.OpSetNeigh, kernel.OpReplaceRoute}
	if !set {
		ops = []kernel.WriteOp{kernel.OpDeleteRoute, kernel.OpDeleteNeigh, kernel.OpDeleteFDB}
	}
	for _, op := range ops {
		for i := range n {
			s := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 1+i/256, i%256))
			mac := kernel.MAC{0x0a, 0, 0, 0, byte(i >> 8), byte(i)}
			ws = append(ws, kernel.Write{Op: op,
				FDB:   kernel.FDB{MAC: mac, Dst: netip.AddrFrom4([4]byte{192, 168, 101, byte(i)}), LinkIndex: link},
				Neigh: kernel.Neigh{IP: s.Addr(), MAC: mac, LinkIndex: link},
				Route: kernel.Route{Dst: s, Gw: s.Addr(), LinkIndex: link, OnLink: true}})
		}
	}
	return ws
}

func TestWriteBatch(t *testing.T) {
	h, link := testNS(t)
	const n = 700 // more than one batch
	for _, err := range h.WriteBatch(peerWrites(n, link, true)) {
		if err != nil {
			t.Fatal(err)
		}
	}
	routes, _ := h.ListRoutes([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	neighs, _ := h.ListNeighs(link)
	fdb, _ := h.ListFDB(link)
	if len(routes) != n || len(neighs) != n || len(fdb) != n {
		t.Fatalf("after the batch: %d routes, %d neighbours, %d fdb entries; want %d each", len(routes), len(neighs), len(fdb), n)
	}
	if r := routes[0]; !r.OnLink || r.LinkIndex != link || r.Gw != r.Dst.Addr() {
		t.Errorf("route read back as %+v", r)
	}
	// The same writes again are harmless (replace), and deletes of present
	// and then absent objects both succeed.
	for _, ws := range [][]kernel.Write{peerWrites(n, link, true), peerWrites(n, link, false), peerWrites(n, link, false)} {
		for _, err := range h.WriteBatch(ws) {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	routes, _ = h.ListRoutes([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	neighs, _ = h.ListNeighs(link)
	fdb, _ = h.ListFDB(link)
	if len(routes)+len(neighs)+len(fdb) != 0 {
		t.Fatalf("after deleting: %d routes, %d neighbours, %d fdb entries", len(routes), len(neighs), len(fdb))
	}
	// One bad write (a device that does not exist) fails alone.
	ws := peerWrites(3, link, true)
	ws[4].Neigh.LinkIndex = 9999
	errs := h.WriteBatch(ws)
	for i, err := range errs {
		if (i == 4) != (err != nil) {
			t.Errorf("write %d (%s): %v", i, ws[i], err)
		}
	}
}

// A route weft did not write (proto boot: flannel's, or `ip route add`'s)
// is deleted by the reconciler's delete, which names no protocol; a
// delete naming weft's protocol got "no such process", which the batch
// takes for "already gone", and the route stayed.
func TestDeleteRouteOfAnotherProtocol(t *testing.T) {
	h, link := testNS(t)
	dst := netip.MustParsePrefix("10.244.99.0/24")
	if err := h.h.RouteAdd(&netlink.Route{Dst: IPNet(dst), Gw: dst.Addr().AsSlice(), LinkIndex: link,
		Flags: int(netlink.FLAG_ONLINK), Protocol: unix.RTPROT_BOOT}); err != nil {
		t.Fatal(err)
	}
	routes, err := h.ListRoutes([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")})
	if err != nil || len(routes) != 1 {
		t.Fatalf("routes before: %+v, %v", routes, err)
	}
	for _, err := range h.WriteBatch([]kernel.Write{{Op: kernel.OpDeleteRoute, Route: routes[0]}}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if routes, _ := h.ListRoutes([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}); len(routes) != 0 {
		t.Errorf("the proto boot route survived its delete: %+v", routes)
	}
}

// Only a batch's last request asks for an ACK; the others report only
// failures. Each failure must land on its own write, wherever it is in a
// sendmsg (first, middle, the last one that carries the ACK) and in which
// sendmsg, and a batch where every write fails must report them all.
func TestWriteBatchErrors(t *testing.T) {
	h, link := testNS(t)
	const n = batchSize + 100 // routes: two sendmsgs
	ws := peerWrites(n, link, true)[2*n:]
	bad := map[int]bool{0: true, 7: true, batchSize - 1: true, batchSize: true, n - 1: true}
	for i := range bad {
		ws[i].Route.LinkIndex = 9999
	}
	for i, err := range h.WriteBatch(ws) {
		if bad[i] != (err != nil) {
			t.Errorf("write %d (%s): %v", i, ws[i], err)
		}
	}
	routes, err := h.ListRoutes([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	if err != nil || len(routes) != n-len(bad) {
		t.Fatalf("%d routes after the batch, want %d (%v)", len(routes), n-len(bad), err)
	}
	for i := range ws {
		ws[i].Route.LinkIndex = 9999
	}
	for i, err := range h.WriteBatch(ws) {
		if err == nil {
			t.Fatalf("write %d (%s) to a missing device succeeded", i, ws[i])
		}
	}
}
