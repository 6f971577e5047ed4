//go:build linux

package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
)

// Lab is a built lab. Its methods are safe for concurrent use.
type Lab struct {
	log      *slog.Logger
	stateDir string

	mu   sync.Mutex
	topo Topology // Pods change under mu; the rest is fixed after Up
}

// Up builds the lab Options describe. On error nothing of the lab is left:
// Up removes every namespace named "<Name>-*" it may have made. If any such
// namespace exists before Up starts, Up returns an error wrapping ErrExists
// and touches nothing.
func Up(ctx context.Context, log *slog.Logger, o Options) (_ *Lab, retErr error) {
	topo, err := Plan(o)
	if err != nil {
		return nil, err
	}
	log = logger(log).With("component", "lab", "lab", o.Name)
	existing, err := listNS(NSName(o.Name, ""))
	if err != nil {
		return nil, err
	}
	if len(existing) > 0 {
		return nil, fmt.Errorf("up lab %s: %w: namespaces %v", o.Name, ErrExists, existing)
	}
	defer func() {
		if retErr == nil {
			return
		}
		if err := down(context.WithoutCancel(ctx), log, o.Name, o.StateDir); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("roll back lab %s: %w", o.Name, err))
		}
	}()
	h := newHandles()
	defer h.close()
	if err := build(ctx, log, h, topo); err != nil {
		return nil, fmt.Errorf("up lab %s: %w", o.Name, err)
	}
	l := &Lab{log: log, stateDir: o.StateDir, topo: *topo}
	if err := l.saveLocked(); err != nil {
		return nil, err
	}
	log.Info("lab up", "nodes", len(topo.Nodes), "router", topo.Router != nil, "outside", topo.Outside != nil,
		"ipv6", topo.IPv6)
	return l, nil
}

// build creates the namespaces, bridges and links of topo and configures them.
func build(ctx context.Context, log *slog.Logger, h *handles, topo *Topology) error {
	for _, ns := range topo.Namespaces() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := createNS(ctx, ns); err != nil {
			return err
		}
		log.Debug("netns created", "ns", ns)
		nl, _, err := h.get(ns)
		if err != nil {
			return err
		}
		if err := linkUp(nl, ns, "lo"); err != nil {
			return err
		}
		if kv := nsSysctls(topo, ns); len(kv) > 0 {
			if err := setSysctls(ns, kv); err != nil {
				return err
			}
		}
	}
	for _, s := range topo.Switches {
		if _, err := h.ensureBridge(s.NS, s.Bridge, topo.MTU, false); err != nil {
			return err
		}
		if len(s.Service) > 0 {
			var gws []netip.Addr
			if topo.Router != nil {
				gws = s.Gateway // far nodes reach the services through the router
			}
			if err := h.configure(s.NS, s.Bridge, s.Service, gws); err != nil {
				return err
			}
		}
	}
	created := map[string]bool{}
	for _, host := range topo.hosts() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := buildHost(log, h, topo, host, created); err != nil {
			return err
		}
	}
	for _, host := range topo.hosts() {
		for _, ln := range host.Links {
			if err := h.waitReady(ctx, host.NS, ln.Name, topo.IPv6); err != nil {
				return err
			}
			if err := h.waitReady(ctx, ln.PeerNS, ln.Peer, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// buildHost creates those of its links that do not
// exist yet (from the peer's side: the switch, or the router for the
// outside host) and configures its ends.
func buildHost(log *slog.Logger, h *handles, topo *Topology, host *Host, created map[string]bool) error {
	for _, ln := range host.Links {
		if created[host.NS+"/"+ln.Name] {
			continue
		}
		if err := h.addVeth(ln.PeerNS, ln.Peer, host.NS, ln.Name, ln.Bridge, topo.MTU); err != nil {
			return err
		}
		created[host.NS+"/"+ln.Name], created[ln.PeerNS+"/"+ln.Peer] = true, true
		log.Debug("veth created", "ns", host.NS, "link", ln.Name, "peer_ns", ln.PeerNS, "peer", ln.Peer)
	}
	for _, ln := range host.Links {
		if err := h.configure(host.NS, ln.Name, ln.Addrs, host.Gateway); err != nil {
			return err
		}
	}
	return nil
}

// nsSysctls returns the sysctls of namespace ns, set before any link is made
// in it: forwarding for nodes and the router, and fastIPv6Sysctls.
func nsSysctls(topo *Topology, ns string) map[string]string {
	kv := fastIPv6Sysctls()
	for _, h := range topo.hosts() {
		if h.NS == ns && h.Forwarding {
			kv["net.ipv4.ip_forward"] = "1"
			if topo.IPv6 {
				kv["net.ipv6.conf.all.forwarding"] = "1"
			}
		}
	}
	return kv
}

// fastIPv6Sysctls turn off duplicate address detection and the router
// solicitation delay for new links, so that a link-local address is usable as
// soon as the link is up: while it is tentative the kernel sends no neighbour
// solicitation for forwarded packets, which stalls the first IPv6 packet
// through a router (or into a pod) for up to three seconds. Set in every lab
// namespace, IPv6 underlay or not (pods may be dual-stack).
func fastIPv6Sysctls() map[string]string {
	return map[string]string{
		"net.ipv6.conf.all.accept_dad":                    "0",
		"net.ipv6.conf.default.accept_dad":                "0",
		"net.ipv6.conf.default.router_solicitation_delay": "0",
	}
}

// Name returns the lab's name.
func (l *Lab) Name() string { return l.topo.Name }

// Topology returns a copy of the lab's current topology.
func (l *Lab) Topology() Topology {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.topo
	t.Pods = slices.Clone(t.Pods)
	return t
}

// Nodes returns the lab's nodes, node 1 first.
func (l *Lab) Nodes() []Host { return slices.Clone(l.topo.Nodes) }

// Node returns node i (1-based).
func (l *Lab) Node(i int) (Host, error) {
	if i < 1 || i > len(l.topo.Nodes) {
		return Host{}, fmt.Errorf("lab %s node %d: %w", l.topo.Name, i, ErrNotFound)
	}
	return l.topo.Nodes[i-1], nil
}

// Outside returns the outside host, if the lab has one.
func (l *Lab) Outside() (Host, bool) {
	if l.topo.Outside == nil {
		return Host{}, false
	}
	return *l.topo.Outside, true
}

// Down removes the lab: see the package function Down.
func (l *Lab) Down(ctx context.Context) error {
	return down(ctx, l.log, l.topo.Name, l.stateDir)
}

// saveLocked writes the state file when the lab has a state directory.
func (l *Lab) saveLocked() error {
	if l.stateDir == "" {
		return nil
	}
	return writeState(l.stateDir, &l.topo)
}
