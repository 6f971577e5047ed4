//go:build linux

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
)

// The kernel ipip path under a 100 Hz ping between pods on two nodes: weftd
// killed with SIGKILL and started again, twice, loses no ping (the kernel
// device and routes stay, and the new weftd keeps them: same ifindex, same
// subnet); then weft's route to the peer deleted, and flannel.ipip itself
// deleted: pods ping again within 1 s (as vxlan's, TestRepairRestoresTraffic).
func TestIPIPKernelRepair(t *testing.T) {
	needIPIPModule(t)
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2}, Backend: "ipip", Pods: 1, WeftdArgs: []string{"--ipip-path=kernel"}})
	pods := c.Pods()
	envBefore, _ := c.SubnetEnv(1)
	idx := run(t, c.NodeNS(1), "cat", "/sys/class/net/flannel.ipip/ifindex")
	const count = 400
	res, _ := floodPing(t, pods[0].NS, pods[1].Addrs[0], count)
	time.Sleep(time.Second)
	for i := range 2 {
		if err := c.KillWeftd(1, true); err != nil {
			t.Fatal(err)
		}
		if err := c.StartWeftd(1); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitReady(context.Background(), 1); err != nil {
			t.Fatalf("restart %d: %v", i+1, err)
		}
	}
	if r := <-res; r[0] != count || r[1] != r[0] {
		t.Errorf("ping during two kill -9 and restarts of weftd: %d sent, %d received; want %d and no loss", r[0], r[1], count)
	}
	if now := run(t, c.NodeNS(1), "cat", "/sys/class/net/flannel.ipip/ifindex"); now != idx {
		t.Errorf("flannel.ipip was recreated across the restarts (ifindex %s -> %s)", idx, now)
	}
	if env, _ := c.SubnetEnv(1); env.Subnet != envBefore.Subnet {
		t.Errorf("subnet changed from %s to %s", envBefore.Subnet, env.Subnet)
	}
	env2, _ := c.SubnetEnv(2)
	ns := c.NodeNS(1)
	assertRepaired(t, ns, []string{"ip", "route", "del", env2.Subnet.Masked().String()}, pods[0].NS, pods[1].Addrs[0])
	assertRepaired(t, ns, []string{"ip", "link", "del", "flannel.ipip"}, pods[0].NS, pods[1].Addrs[0])
	if link := run(t, ns, "ip", "-d", "link", "show", "flannel.ipip"); !strings.Contains(link, "ipip ") || !strings.Contains(link, "mtu 1480") {
		t.Errorf("flannel.ipip after its deletion: %s", link)
	}
}
