//go:build linux

package kubeapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/proc"
)

const (
	kcmName = "kube-controller-manager"
	// probeNode is the Node Start creates to see the controller manager
	// allocate a podCIDR; it is deleted once it has one.
	probeNode = "weft-kubeapi-probe"
)

// startControllerManager starts the controller manager and waits until it
// allocates podCIDRs.
func (c *ControlPlane) startControllerManager(ctx context.Context) error {
	begin := time.Now()
	p, err := startProc(kcmName, c.logPath(kcmName), c.o.NetNS, c.o.Detach, c.kcmArgs())
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.kcm = p
	c.mu.Unlock()
	c.log.Info("started kube-controller-manager", "pid", p.Pid(), "log", p.Log())
	cidrs, err := c.probeNodeIPAM(ctx, p)
	if err != nil {
		return err
	}
	c.log.Info("kube-controller-manager allocates podCIDRs", "probe", cidrs,
		"took", time.Since(begin).Round(time.Millisecond))
	return nil
}

func (c *ControlPlane) kcmArgs() []string {
	o := c.o
	args := []string{
		o.Bins.ControllerManager,
		"--kubeconfig=" + c.kcmKubeconfig(),
		// Nothing scrapes it, and a fixed default port would collide
		// between control planes in one namespace.
		"--secure-port=0",
		"--leader-elect=false",
		"--controllers=" + strings.Join(o.Controllers, ","),
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + c.pki.path(saKeyFile),
		"--root-ca-file=" + c.pki.path(caCertFile),
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + joinPrefixes(o.ClusterCIDRs),
		"--service-cluster-ip-range=" + joinPrefixes(o.ServiceCIDRs),
		"--configure-cloud-routes=false",
		"--profiling=false",
	}
	return append(args, maskSizeArgs(o)...)
}

// maskSizeArgs returns the node CIDR size flags: --node-cidr-mask-size for a
// single-stack cluster, the per-family flags for dual-stack (the controller
// manager refuses the former there).
func maskSizeArgs(o Options) []string {
	if len(o.NodeCIDRMaskSizes) == 0 {
		return nil
	}
	if len(o.ClusterCIDRs) == 1 {
		return []string{"--node-cidr-mask-size=" + strconv.Itoa(o.NodeCIDRMaskSizes[0])}
	}
	var out []string
	for i, p := range o.ClusterCIDRs {
		flag := "--node-cidr-mask-size-ipv4="
		if p.Addr().Is6() {
			flag = "--node-cidr-mask-size-ipv6="
		}
		out = append(out, flag+strconv.Itoa(o.NodeCIDRMaskSizes[i]))
	}
	return out
}

// node is the part of a Node the probe reads.
type node struct {
	Spec struct {
		PodCIDR  string   `json:"podCIDR"`
		PodCIDRs []string `json:"podCIDRs"`
	} `json:"spec"`
}

// probeNodeIPAM creates the probe Node, waits until the controller manager
// has given it a podCIDR for every cluster CIDR, deletes it and returns the
// podCIDRs it got.
func (c *ControlPlane) probeNodeIPAM(ctx context.Context, p *proc.Proc) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.o.StartTimeout)
	defer cancel()
	obj := map[string]any{
		"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{"name": probeNode, "labels": map[string]string{"weft.dev/kubeapi-probe": "true"}},
	}
	status, err := c.doJSON(ctx, http.MethodPost, "/api/v1/nodes", obj, nil)
	if err != nil && status != http.StatusConflict {
		return nil, fmt.Errorf("create probe node: %w", err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var n node
		if _, err := c.doJSON(ctx, http.MethodGet, "/api/v1/nodes/"+probeNode, nil, &n); err != nil {
			return nil, p.Failure(fmt.Errorf("read probe node: %w", err))
		}
		if len(n.Spec.PodCIDRs) == len(c.o.ClusterCIDRs) {
			if _, err := c.doJSON(ctx, http.MethodDelete, "/api/v1/nodes/"+probeNode, nil, nil); err != nil {
				return nil, fmt.Errorf("delete probe node: %w", err)
			}
			return n.Spec.PodCIDRs, nil
		}
		select {
		case <-p.Done():
			return nil, p.ExitError()
		case <-ctx.Done():
			return nil, p.Failure(fmt.Errorf("wait for kube-controller-manager to give node %s a podCIDR: %w",
				probeNode, ctx.Err()))
		case <-tick.C:
		}
	}
}
