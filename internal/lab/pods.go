//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
)

// MaxPods bounds the pod index per node (it keeps link names short).
const MaxPods = 999

// AddPodNS creates pod namespace i of node ("<lab>-n<node>-p<i>"), empty: no
// link, loopback down, as a container runtime hands it to a CNI plugin. It
// returns the existing pod when the namespace was already added.
func (l *Lab) AddPodNS(ctx context.Context, node, i int) (Pod, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, _, err := l.addPodNSLocked(ctx, node, i)
	return p, err
}

// addPodNSLocked returns the pod and whether this call created its namespace.
func (l *Lab) addPodNSLocked(ctx context.Context, node, i int) (Pod, bool, error) {
	if node < 1 || node > len(l.topo.Nodes) {
		return Pod{}, false, fmt.Errorf("add pod %d on node %d: %w", i, node, ErrNotFound)
	}
	if i < 1 || i > MaxPods {
		return Pod{}, false, fmt.Errorf("%w: pod index %d, want 1..%d", ErrInvalid, i, MaxPods)
	}
	if k := l.podIndexLocked(node, i); k >= 0 {
		return l.topo.Pods[k], false, nil
	}
	ns := PodNSName(l.topo.Name, node, i)
	if err := createNS(ctx, ns); err != nil {
		return Pod{}, false, err
	}
	p := Pod{Node: node, Index: i, NS: ns, Path: NSPath(ns)}
	l.topo.Pods = append(l.topo.Pods, p)
	if err := l.saveLocked(); err != nil {
		return Pod{}, false, errors.Join(err, l.dropPodLocked(node, i))
	}
	l.log.Debug("pod netns created", "ns", ns)
	return p, true, nil
}

func (l *Lab) podIndexLocked(node, i int) int {
	return slices.IndexFunc(l.topo.Pods, func(p Pod) bool { return p.Node == node && p.Index == i })
}

// dropPodLocked deletes a pod's namespace and forgets it.
func (l *Lab) dropPodLocked(node, i int) error {
	k := l.podIndexLocked(node, i)
	if k < 0 {
		return nil
	}
	err := deleteNS(l.topo.Pods[k].NS)
	l.topo.Pods = slices.Delete(l.topo.Pods, k, k+1)
	return errors.Join(err, l.saveLocked())
}

// DeletePod deletes pod i of node: its namespace and, with it, its link.
func (l *Lab) DeletePod(node, i int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropPodLocked(node, i)
}

// WirePod wires pod i of node the way the bridge CNI plugin would, for tests
// that do not run the plugin: bridge "cni0" in the node namespace with the
// first host address of each subnet (<subnet>.1), a veth "veth-p<i>" on it
// whose peer is the pod's "eth0" with host address 1+i (<subnet>.2 for pod 1)
// and a default route via <subnet>.1 per family. The pod namespace is created
// when AddPodNS did not create it already. subnets are the node's pod
// subnets, at most one per family.
func (l *Lab) WirePod(ctx context.Context, node, i int, subnets ...netip.Prefix) (_ Pod, retErr error) {
	if err := checkPodSubnets(subnets, i); err != nil {
		return Pod{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	p, created, err := l.addPodNSLocked(ctx, node, i)
	if err != nil {
		return Pod{}, err
	}
	if p.Link != nil {
		return Pod{}, fmt.Errorf("%w: pod %s is already wired", ErrInvalid, p.NS)
	}
	nodeNS := l.topo.Nodes[node-1].NS
	host := "veth-p" + strconv.Itoa(i)
	h := newHandles()
	defer h.close()
	defer func() {
		if retErr == nil {
			return
		}
		if created {
			retErr = errors.Join(retErr, l.dropPodLocked(node, i))
		} else if nl, _, err := h.get(nodeNS); err == nil {
			if ln, err := nl.LinkByName(host); err == nil {
				retErr = errors.Join(retErr, nl.LinkDel(ln))
			}
		}
	}()
	ln := Link{Name: "eth0", Addrs: hostAddrs(subnets, 1+i), PeerNS: nodeNS, Peer: host, Bridge: PodBridge}
	gws := addrsOf(hostAddrs(subnets, 1))
	if err := l.wire(ctx, h, p.NS, ln, hostAddrs(subnets, 1), gws); err != nil {
		return Pod{}, fmt.Errorf("wire pod %s: %w", p.NS, err)
	}
	p.Link, p.Gateway = &ln, gws
	l.topo.Pods[l.podIndexLocked(node, i)] = p
	if err := l.saveLocked(); err != nil {
		return Pod{}, err
	}
	l.log.Debug("pod wired", "ns", p.NS, "addrs", ln.Addrs)
	return p, nil
}

// wire makes the node's bridge with the gateway addresses, the veth from the
// node into the pod, and configures the pod's end.
func (l *Lab) wire(ctx context.Context, h *handles, podNS string, ln Link, gwPrefixes []netip.Prefix, gws []netip.Addr) error {
	if _, err := h.ensureBridge(ln.PeerNS, PodBridge, l.topo.MTU, true); err != nil {
		return err
	}
	if err := h.configure(ln.PeerNS, PodBridge, gwPrefixes, nil); err != nil {
		return err
	}
	if err := setSysctls(podNS, fastIPv6Sysctls()); err != nil {
		return err
	}
	if err := h.addVeth(ln.PeerNS, ln.Peer, podNS, ln.Name, ln.Bridge, l.topo.MTU); err != nil {
		return err
	}
	nl, _, err := h.get(podNS)
	if err != nil {
		return err
	}
	if err := linkUp(nl, podNS, "lo"); err != nil {
		return err
	}
	if err := h.configure(podNS, ln.Name, ln.Addrs, gws); err != nil {
		return err
	}
	ipv6 := slices.ContainsFunc(ln.Addrs, func(p netip.Prefix) bool { return p.Addr().Is6() })
	if err := h.waitReady(ctx, podNS, ln.Name, ipv6); err != nil {
		return err
	}
	if err := h.waitReady(ctx, ln.PeerNS, ln.Peer, false); err != nil {
		return err
	}
	return h.waitReady(ctx, ln.PeerNS, PodBridge, ipv6)
}

func checkPodSubnets(subnets []netip.Prefix, i int) error {
	if len(subnets) == 0 || len(subnets) > 2 {
		return fmt.Errorf("%w: want one or two pod subnets, got %v", ErrInvalid, subnets)
	}
	if len(subnets) == 2 && subnets[0].Addr().Is6() == subnets[1].Addr().Is6() {
		return fmt.Errorf("%w: two pod subnets of one family: %v", ErrInvalid, subnets)
	}
	for _, s := range subnets {
		if !s.IsValid() || !hostAddr(s, 2+i).Addr().IsValid() || !s.Contains(hostAddr(s, 2+i).Addr()) {
			return fmt.Errorf("%w: pod subnet %v has no room for pod %d", ErrInvalid, s, i)
		}
	}
	return nil
}
