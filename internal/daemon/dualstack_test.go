//go:build linux

package daemon

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/subnetfile"

	"github.com/weft-net/weft/internal/testenv"
)

// A dual-stack network: flannel.1 and flannel-v6.1 with their .0 and ::
// addresses, both families' neighbour, FDB entry and route per peer, and a
// lease update that changes only the IPv6 data is applied (flannel drops it).
func TestDualStackVXLAN(t *testing.T) {
	n := newNode(t, "192.168.100.11")
	sh(t, "ip", "-n", n.name, "addr", "add", "fd00:100::11/64", "dev", "eth0", "nodad")
	c := newCluster(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`)
	put := func(mac6 string) {
		v, _ := json.Marshal(map[string]any{"PublicIP": "192.168.100.15", "PublicIPv6": "fd00:100::15", "BackendType": "vxlan",
			"BackendData":   map[string]any{"VNI": 1, "VtepMAC": "0a:00:00:00:00:05"},
			"BackendV6Data": map[string]any{"VNI": 1, "VtepMAC": mac6}})
		c.put(t, prefix+"/subnets/10.244.5.0-24&fd00:10:244:5::-64", string(v), true)
	}
	put("0a:00:00:00:06:05")
	d := startDaemon(t, n, c, tempFile(t, "subnet.env"), "--public-ipv6", "fd00:100::11")
	if !d.own.IPv6Subnet.IsValid() {
		t.Fatalf("own lease %s has no IPv6 subnet", d.own.Key())
	}
	// Over IPv6 vxlan costs 70 bytes; one MTU serves both devices and pods.
	env, err := subnetfile.Read(d.file)
	if err != nil || env.MTU != 1430 || !env.IPv6Subnet.IsValid() {
		t.Errorf("subnet.env = %+v, %v; want MTU 1430 and an IPv6 subnet", env, err)
	}
	for _, dev := range []string{"flannel.1", "flannel-v6.1"} {
		if out := sh(t, "ip", "-n", n.name, "link", "show", dev); !strings.Contains(out, "mtu 1430") {
			t.Errorf("%s: %s", dev, out)
		}
	}
	v6 := func() string {
		return strings.Join([]string{
			sh(t, "ip", "-n", n.name, "-6", "route", "show", "proto", "87"),
			sh(t, "ip", "-n", n.name, "-6", "neigh", "show", "dev", "flannel-v6.1"),
			sh(t, "bridge", "-n", n.name, "fdb", "show", "dev", "flannel-v6.1"),
		}, "")
	}
	for _, w := range []string{"fd00:10:244:5::/64 via fd00:10:244:5:: dev flannel-v6.1", "fd00:10:244:5:: lladdr 0a:00:00:00:06:05 PERMANENT",
		"0a:00:00:00:06:05 dst fd00:100::15 self permanent"} {
		if !strings.Contains(v6(), w) {
			t.Errorf("IPv6 state lacks %q:\n%s", w, v6())
		}
	}
	if !strings.Contains(n.kernel(t), "10.244.5.0/24 via 10.244.5.0 dev flannel.1 onlink") {
		t.Errorf("IPv4 state:\n%s", n.kernel(t))
	}
	dev := sh(t, "ip", "-n", n.name, "-d", "addr", "show", "flannel-v6.1")
	if !strings.Contains(dev, "local fd00:100::11") || !strings.Contains(dev, d.own.IPv6Subnet.Masked().Addr().String()+"/128") {
		t.Errorf("flannel-v6.1:\n%s", dev)
	}
	// The peer's IPv6 VTEP changes, its IPv4 data does not.
	put("0a:00:00:00:06:99")
	testenv.WaitFor(t, time.Second, "an IPv6-only update applied", func() bool {
		return strings.Contains(v6(), "fd00:10:244:5:: lladdr 0a:00:00:00:06:99 PERMANENT")
	})
}
