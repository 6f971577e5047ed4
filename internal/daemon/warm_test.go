//go:build linux

package daemon

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/backend/hostgw"
	"github.com/weft-net/weft/internal/backend/vxlan"

	"github.com/weft-net/weft/internal/testenv"
)

// userspacePeers is vxlan posing as a backend whose peers live in userspace
// (backend.PeerForgetter, as udp's do), so that the daemon keeps a peer
// snapshot for it; udp itself cannot run in-process here (its TUN would be
// created in the test's own network namespace).
type userspacePeers struct{ backend.Backend }

func (userspacePeers) ForgetPeer(string) {}

func warmBackends() backend.Registry {
	vx := vxlan.Type()
	vx.New = func(d backend.Deps) (backend.Backend, error) {
		b, err := vxlan.New(d)
		return userspacePeers{b}, err
	}
	return backend.Registry{vx, hostgw.Type()}
}

// A restart resumes from the peer snapshot before the store answers, then
// reconciles: a peer deleted while weftd was down goes; a corrupt snapshot
// is ignored with a log line and the node still comes up from the store; a
// configuration changed in the store meanwhile starts the backend afresh.
func TestWarmStartFromSnapshot(t *testing.T) {
	n := newNode(t, "192.168.100.11")
	c := newCluster(t, testNetConf("vxlan"))
	p5 := c.peerLease(t, "10.244.5.0/24", "192.168.100.15", "0a:00:00:00:00:05", "vxlan")
	c.peerLease(t, "10.244.6.0/24", "192.168.100.16", "0a:00:00:00:00:06", "vxlan")
	file := tempFile(t, "subnet.env")
	d := startDaemonWith(t, warmBackends(), n, c, file)
	snap := SnapshotPath(file)
	testenv.WaitFor(t, 2*time.Second, "snapshot written", func() bool {
		b, err := os.ReadFile(snap)
		return err == nil && strings.Contains(string(b), "10.244.6.0-24")
	})
	d.stop(t)

	// Deleted while down: loaded from the snapshot, then removed.
	c.del(t, p5)
	d = startDaemonWith(t, warmBackends(), n, c, file)
	logs := d.log.String()
	for _, w := range []string{"resumed the data path from the peer snapshot", "peers=2",
		`peer of the snapshot is gone from the store; removing it" lease=10.244.5.0-24`} {
		if !strings.Contains(logs, w) {
			t.Errorf("restart log lacks %q:\n%s", w, logs)
		}
	}
	want := sorted(vxlanPeerState("10.244.6.0/24", "10.244.6.0", "0a:00:00:00:00:06", "192.168.100.16"))
	if got := sorted(n.kernel(t)); got != want {
		t.Fatalf("kernel after the warm restart =\n%s\nwant\n%s", got, want)
	}
	testenv.WaitFor(t, 2*time.Second, "snapshot rewritten without the gone peer", func() bool {
		b, err := os.ReadFile(snap)
		return err == nil && !strings.Contains(string(b), "10.244.5.0-24")
	})
	d.stop(t)

	// Corrupt: ignored, logged, and the node comes up from the store.
	if err := os.WriteFile(snap, []byte(`{"version":1,"netconf":`), 0o600); err != nil {
		t.Fatal(err)
	}
	d = startDaemonWith(t, warmBackends(), n, c, file)
	if logs := d.log.String(); !strings.Contains(logs, `msg="ignoring the peer snapshot"`) || !strings.Contains(logs, "corrupt") ||
		strings.Contains(logs, "resumed the data path") {
		t.Errorf("corrupt snapshot: log\n%s", logs)
	}
	if got := sorted(n.kernel(t)); got != want {
		t.Fatalf("kernel after a restart with a corrupt snapshot =\n%s\nwant\n%s", got, want)
	}
	d.stop(t)

	// The store's configuration changed while weftd was down: the backend
	// from the snapshot is dropped and the store's is used.
	c.put(t, prefix+"/config", testNetConf("host-gw"), false)
	c.peerLease(t, "10.244.7.0/24", "192.168.100.17", "", "host-gw")
	d = startDaemonWith(t, warmBackends(), n, c, file)
	if logs := d.log.String(); !strings.Contains(logs, "the network configuration changed since the peer snapshot") {
		t.Errorf("changed configuration: log\n%s", logs)
	}
	testenv.WaitFor(t, 2*time.Second, "host-gw route", func() bool {
		return strings.Contains(n.kernel(t), "10.244.7.0/24 via 192.168.100.17 dev eth0")
	})
	// host-gw keeps its peers in the kernel: the old snapshot is removed and
	// no new one is written.
	if _, err := os.Stat(snap); !os.IsNotExist(err) {
		t.Errorf("a host-gw node kept a peer snapshot: %v", err)
	}
}

// A kernel backend (vxlan) writes no snapshot: its state outlives weftd.
func TestNoSnapshotForKernelBackends(t *testing.T) {
	n := newNode(t, "192.168.100.11")
	c := newCluster(t, testNetConf("vxlan"))
	c.peerLease(t, "10.244.5.0/24", "192.168.100.15", "0a:00:00:00:00:05", "vxlan")
	file := tempFile(t, "subnet.env")
	d := startDaemon(t, n, c, file)
	c.peerLease(t, "10.244.6.0/24", "192.168.100.16", "0a:00:00:00:00:06", "vxlan")
	testenv.WaitFor(t, time.Second, "new peer programmed", func() bool { return strings.Contains(n.kernel(t), "10.244.6.0/24") })
	time.Sleep(2 * snapshotDelay)
	if _, err := os.Stat(SnapshotPath(file)); !os.IsNotExist(err) {
		t.Errorf("vxlan wrote a peer snapshot: %v", err)
	}
	d.stop(t)
}
