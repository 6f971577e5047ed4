//go:build linux

package daemon

import (
	"context"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/testenv"
)

// etcd restarted from an empty data directory under a running daemon: the
// daemon writes its lease again with the same subnet soon after the
// configuration is back; a peer that writes its lease again keeps its route
// throughout; a peer whose node is gone keeps its route until its lease
// would have expired, then loses it; after the reset an ordinary deletion
// removes at once.
func TestStoreResetKeepsPeers(t *testing.T) {
	n := newNode(t, "192.168.100.11")
	c := newCluster(t, testNetConf("vxlan"))
	c.resetCheck = 300 * time.Millisecond
	d := startDaemon(t, n, c, tempFile(t, "subnet.env"))
	backKey := c.peerLease(t, "10.244.5.0/24", "192.168.100.15", "0a:00:00:00:00:05", "vxlan")
	const ttl = 15 * time.Second
	_, granted := c.peerLeaseTTL(t, "10.244.6.0/24", "192.168.100.16", "0a:00:00:00:00:06", "vxlan", ttl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const backRoute, goneRoute = "10.244.5.0/24 via 10.244.5.0 dev flannel.1 onlink", "10.244.6.0/24 via 10.244.6.0 dev flannel.1 onlink"
	testenv.WaitFor(t, 2*time.Second, "both peers programmed", func() bool {
		k := n.kernel(t)
		return strings.Contains(k, backRoute) && strings.Contains(k, goneRoute)
	})
	time.Sleep(4 * c.resetCheck) // the watch learns the leases' expiries

	// From here on the returning peer's route must never be missing.
	var missing atomic.Int64
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			out, _ := exec.Command("ip", "-n", n.name, "route", "show", "10.244.5.0/24").Output()
			if !strings.Contains(string(out), "10.244.5.0") {
				missing.Add(1)
			}
		}
	}()
	defer func() { close(stop); <-watched }()

	if err := c.etcd.Stop(0); err != nil {
		t.Fatal(err)
	}
	if err := c.etcd.Wipe(0); err != nil {
		t.Fatal(err)
	}
	if err := c.etcd.Restart(0); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	took := testenv.WaitFor(t, 15*time.Second, "the daemon notices the reset", func() bool {
		return strings.Contains(d.log.String(), "peer lease lost in a store reset; keeping its routes")
	})
	t.Logf("reset noticed %v after etcd served again", took.Round(10*time.Millisecond))
	if k := n.kernel(t); !strings.Contains(k, backRoute) || !strings.Contains(k, goneRoute) {
		t.Errorf("a peer's route went at the reset:\n%s", k)
	}

	// The operator writes the configuration again: the own lease is back
	// with the same subnet within seconds; the returning peer writes its
	// lease again.
	c.put(t, prefix+"/config", testNetConf("vxlan"), false)
	took = testenv.WaitFor(t, 10*time.Second, "own lease written again", func() bool {
		resp, err := c.cli.Get(ctx, prefix+"/subnets/"+d.own.Key())
		return err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].Lease != 0
	})
	t.Logf("own lease %s written again %v after the configuration (%v after etcd restarted)",
		d.own.Key(), took.Round(10*time.Millisecond), time.Since(restarted).Round(10*time.Millisecond))
	c.peerLease(t, "10.244.5.0/24", "192.168.100.15", "0a:00:00:00:00:05", "vxlan")

	// The gone peer keeps its route until its lease would have expired
	// (etcd granted it a moment before granted), and loses it then.
	testenv.WaitFor(t, time.Until(granted.Add(ttl+10*time.Second)), "the gone peer's route removed at its expiry", func() bool {
		return !strings.Contains(n.kernel(t), "10.244.6.0")
	})
	gone := time.Since(granted)
	t.Logf("gone peer removed %v after its lease was granted for %v", gone.Round(10*time.Millisecond), ttl)
	if gone < ttl-200*time.Millisecond {
		t.Errorf("the gone peer's route went %v after its lease was granted for %v, before it expired", gone.Round(10*time.Millisecond), ttl)
	}
	if got := missing.Load(); got != 0 {
		t.Errorf("the returning peer's route was missing in %d polls", got)
	}
	if got := scrape(t, d).Value("weft_peers", nil); got != 1 {
		t.Errorf("weft_peers = %v, want 1", got)
	}

	// After the reset, deleting a lease removes its peer at once.
	c.del(t, backKey)
	testenv.WaitFor(t, 2*time.Second, "a deleted peer removed at once", func() bool {
		return !strings.Contains(n.kernel(t), "10.244.5.0")
	})
	missing.Store(0)
}
