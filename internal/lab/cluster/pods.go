//go:build linux

package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weft-net/weft/internal/lab"
)

// cniFor returns libcni and the conflist of node, with the plugins from
// BinDir/cni.
func (c *Cluster) cniFor(node int) (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	list, err := c.confList(node)
	if err != nil {
		return nil, nil, fmt.Errorf("conflist of node %d: %w", node, err)
	}
	// The plugins' stderr (their logs) goes to the node's cni.log, as a
	// runtime would keep it, not to the lab's terminal.
	logf, err := os.OpenFile(filepath.Join(c.NodeDir(node), "cni.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("open cni log: %w", err)
	}
	c.mu.Lock()
	c.closers = append(c.closers, logf)
	c.mu.Unlock()
	ex := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: logf}, PluginDecoder: version.PluginDecoder{}}
	cni := libcni.NewCNIConfigWithCacheDir([]string{filepath.Join(c.o.BinDir, "cni")}, filepath.Join(c.NodeDir(node), "cni", "cache"), ex)
	return cni, list, nil
}

func podID(node, i int) string { return fmt.Sprintf("lab-n%d-p%d", node, i) }

// AddPod creates pod i's namespace on node and attaches it with the CNI
// plugin, as a container runtime does (from the node's namespace).
func (c *Cluster) AddPod(ctx context.Context, node, i int) (Pod, error) {
	p, err := c.lab.AddPodNS(ctx, node, i)
	if err != nil {
		return Pod{}, err
	}
	cni, list, err := c.cniFor(node)
	if err != nil {
		return Pod{}, err
	}
	rt := &libcni.RuntimeConf{ContainerID: podID(node, i), NetNS: p.Path, IfName: "eth0"}
	var res types.Result
	err = lab.Do(c.NodeNS(node), func() (err error) {
		res, err = cni.AddNetworkList(ctx, list, rt)
		return err
	})
	if err != nil {
		return Pod{}, fmt.Errorf("cni add pod %d on node %d: %w", i, node, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return Pod{}, fmt.Errorf("cni result of pod %d on node %d: %w", i, node, err)
	}
	pod := Pod{Node: node, Index: i, NS: p.NS, ContainerID: rt.ContainerID}
	for _, ip := range r.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			pod.Addrs = append(pod.Addrs, a.Unmap())
		}
	}
	c.mu.Lock()
	c.pods = append(c.pods, pod)
	c.mu.Unlock()
	return pod, nil
}

// Ping is one pod-to-pod round trip.
type Ping struct {
	From, To Pod
	Addr     netip.Addr
	RTT      time.Duration
	Err      error
}

// PingMatrix pings every pod's every address from every other pod.
func (c *Cluster) PingMatrix(ctx context.Context) []Ping {
	pods := c.Pods()
	var out []Ping
	for _, from := range pods {
		for _, to := range pods {
			if from.NS == to.NS {
				continue
			}
			for _, a := range to.Addrs {
				rtt, err := lab.Ping(ctx, from.NS, a)
				out = append(out, Ping{From: from, To: to, Addr: a, RTT: rtt, Err: err})
			}
		}
	}
	return out
}
