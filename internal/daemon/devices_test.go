//go:build linux

package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/testenv"
)

// TestDeviceRepairs changes what the daemon configures on its device, the
// way an operator's commands or another agent would, and expects each
// change undone within 1 s by the reconciler's device pass (netlink
// notices, not the periodic check): the MTU, the address, a stray address,
// the up flag (which also flushes the routes through the device), and the
// MAC.
func TestDeviceRepairs(t *testing.T) {
	n := newNode(t, "192.168.100.11")
	c := newCluster(t, testNetConf("vxlan"))
	c.peerLease(t, "10.244.5.0/24", "192.168.100.15", "0a:00:00:00:00:05", "vxlan")
	d := startDaemon(t, n, c, tempFile(t, "subnet.env"))
	addr := d.own.Subnet.Masked().Addr().String() + "/32"
	want := sorted(vxlanPeerState("10.244.5.0/24", "10.244.5.0", "0a:00:00:00:00:05", "192.168.100.15"))
	dev := func() string { return sh(t, "ip", "-n", n.name, "-d", "addr", "show", "flannel.1") }
	mac := sh(t, "ip", "-n", n.name, "-br", "link", "show", "flannel.1")
	mac = strings.Fields(mac)[2]
	healthy := func() bool {
		s := dev()
		return strings.Contains(s, "mtu 1450") && strings.Contains(s, "inet "+addr) && !strings.Contains(s, "10.99.0.1") &&
			strings.Contains(s, ",UP") && strings.Contains(s, "link/ether "+mac) && sorted(n.kernel(t)) == want
	}
	if !healthy() {
		t.Fatalf("flannel.1 after start-up:\n%s\nkernel:\n%s", dev(), n.kernel(t))
	}
	var last string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last seen:\n%s", last)
		}
	})
	for _, cmd := range [][]string{
		{"link", "set", "flannel.1", "mtu", "1400"},
		{"addr", "del", addr, "dev", "flannel.1"},
		{"addr", "add", "10.99.0.1/24", "dev", "flannel.1"},
		{"link", "set", "flannel.1", "down"},
		{"link", "set", "flannel.1", "address", "0a:11:22:33:44:55"},
	} {
		before := scrape(t, d).Value("weft_reconcile_repairs_total", map[string]string{"object": "link"})
		sh(t, append([]string{"ip", "-n", n.name}, cmd...)...)
		took := testenv.WaitFor(t, time.Second, "repair after ip "+strings.Join(cmd, " "), func() bool {
			ok := healthy()
			last = dev() + "\n" + n.kernel(t)
			return ok
		})
		t.Logf("repaired after %q in %v", strings.Join(cmd, " "), took)
		testenv.WaitFor(t, time.Second, "weft_reconcile_repairs_total{object=link} counting the repair", func() bool {
			return scrape(t, d).Value("weft_reconcile_repairs_total", map[string]string{"object": "link"}) > before
		})
	}
}
