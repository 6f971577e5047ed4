//go:build linux

package e2e

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
)

// assertMatrix pings every pod from every other pod.
func assertMatrix(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	n := 0
	for _, p := range c.PingMatrix(context.Background()) {
		n++
		if p.Err != nil {
			t.Errorf("pod %s -> %s (%s): %v", p.From.NS, p.To.NS, p.Addr, p.Err)
		}
	}
	if n == 0 {
		t.Fatal("no pings: no pods")
	}
	t.Logf("%d pod-to-pod pings", n)
}

// podsWithIPv6 counts the lab's pods that have an IPv6 address.
func podsWithIPv6(c *cluster.Cluster) int {
	n := 0
	for _, p := range c.Pods() {
		if slices.ContainsFunc(p.Addrs, netip.Addr.Is6) {
			n++
		}
	}
	return n
}

// freeSubnet returns a /24 of the lab's network that none of the first
// nodes leases: 10.244.250.0/24, or 10.244.251.0/24 when that one is taken.
func freeSubnet(c *cluster.Cluster, nodes int) netip.Prefix {
	subnet := netip.MustParsePrefix("10.244.250.0/24")
	for n := 1; n <= nodes; n++ {
		if env, _ := c.SubnetEnv(n); env.Subnet.Masked() == subnet {
			return netip.MustParsePrefix("10.244.251.0/24")
		}
	}
	return subnet
}

// listenUDPIn opens a UDP socket on addr:port inside namespace ns, closed
// when the test ends.
func listenUDPIn(t *testing.T, ns string, addr netip.Addr, port int) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	if err := lab.Do(ns, func() (err error) {
		pc, err = net.ListenPacket("udp4", net.JoinHostPort(addr.String(), strconv.Itoa(port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc
}

// routeTo returns node's route to the subnet of other.
func routeTo(t *testing.T, c *cluster.Cluster, node, other int) string {
	t.Helper()
	env, err := c.SubnetEnv(other)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(run(t, c.NodeNS(node), "ip", "route", "show", env.Subnet.Masked().String()))
}

func TestPingMatrix(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend string
		dr      bool
		far     []int
	}{
		{"vxlan", "vxlan", false, []int{3}},
		{"vxlan-directrouting", "vxlan", true, []int{3}},
		{"host-gw", "host-gw", false, nil},
		{"ipip", "ipip", false, []int{3}},
		{"ipip-directrouting", "ipip", true, []int{3}},
		{"wireguard", "wireguard", false, []int{3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := up(t, cluster.Options{Lab: lab.Options{Nodes: 3, Far: tc.far}, Backend: tc.backend, DirectRouting: tc.dr, Pods: 2})
			assertMatrix(t, c)
			near, far := routeTo(t, c, 1, 2), ""
			if len(tc.far) > 0 {
				far = routeTo(t, c, 1, 3)
			}
			isVXLAN := func(r string) bool { return strings.Contains(r, "dev flannel.1") && strings.HasSuffix(r, "onlink") }
			// ipip: via the peer's public address on flannel.ipip, onlink.
			isIPIP := func(r string, node int) bool {
				n, _ := c.Lab().Node(node)
				return strings.Contains(r, "via "+n.Addrs()[0].String()+" dev flannel.ipip") && strings.HasSuffix(r, "onlink")
			}
			switch tc.name {
			case "vxlan":
				if !isVXLAN(near) || !isVXLAN(far) {
					t.Errorf("vxlan routes: near %q far %q", near, far)
				}
			case "vxlan-directrouting":
				if !strings.Contains(near, "via 192.168.100.12 dev eth0") {
					t.Errorf("same-subnet peer route %q, want a plain route via 192.168.100.12", near)
				}
				if !isVXLAN(far) {
					t.Errorf("far peer route %q, want vxlan", far)
				}
			case "host-gw":
				if !strings.Contains(near, "via 192.168.100.12 dev eth0") {
					t.Errorf("host-gw route %q", near)
				}
			case "ipip":
				if !isIPIP(near, 2) || !isIPIP(far, 3) {
					t.Errorf("ipip routes: near %q far %q", near, far)
				}
			case "wireguard": // one route to the whole network on flannel-wg
				for _, r := range []string{near, far} {
					if r != "" {
						t.Errorf("wireguard: a route per peer subnet %q; want only 10.244.0.0/16 dev flannel-wg", r)
					}
				}
				if r := run(t, c.NodeNS(1), "ip", "route", "show", "10.244.0.0/16"); !strings.Contains(r, "dev flannel-wg") {
					t.Errorf("wireguard network route %q", r)
				}
			case "ipip-directrouting":
				if !strings.Contains(near, "via 192.168.100.12 dev eth0") {
					t.Errorf("same-subnet peer route %q, want a plain route via 192.168.100.12", near)
				}
				if !isIPIP(far, 3) {
					t.Errorf("far peer route %q, want ipip", far)
				}
			}
			if v := scrapeNode(t, c, 1).Value("weft_peers", map[string]string{"backend": tc.backend}); v != 2 {
				t.Errorf("weft_peers{backend=%s} = %v on node 1, want its 2 peers", tc.backend, v)
			}
			if tc.backend == "wireguard" { // MTU: external - 80, in subnet.env and on the device
				env, _ := c.SubnetEnv(1)
				link := run(t, c.NodeNS(1), "ip", "link", "show", "flannel-wg")
				if env.MTU != 1420 || !strings.Contains(link, "mtu 1420") {
					t.Errorf("subnet.env MTU %d, flannel-wg %q; want 1420 (1500 - 80)", env.MTU, link)
				}
			}
			if tc.backend == "ipip" { // MTU: external - 20, in subnet.env and on the device
				env, _ := c.SubnetEnv(1)
				link := run(t, c.NodeNS(1), "ip", "link", "show", "flannel.ipip")
				if env.MTU != 1480 || !strings.Contains(link, "mtu 1480") {
					t.Errorf("subnet.env MTU %d, flannel.ipip %q; want 1480 (1500 - 20)", env.MTU, link)
				}
			}
		})
	}
}
