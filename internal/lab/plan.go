//go:build linux

package lab

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
)

// Topology is a lab's plan: every namespace, link and address. Plan computes
// it from Options, Up builds it, and the state file holds it as JSON.
type Topology struct {
	Name     string   `json:"name"`
	MTU      int      `json:"mtu"`
	IPv6     bool     `json:"ipv6"`
	Switches []Switch `json:"switches"`
	Nodes    []Host   `json:"nodes"`
	Router   *Host    `json:"router,omitempty"`
	Outside  *Host    `json:"outside,omitempty"`
	Pods     []Pod    `json:"pods,omitempty"`
}

// Switch is an underlay segment: a Linux bridge alone in its own namespace.
type Switch struct {
	Name    string         `json:"name"`    // "sw" (near) or "sw2" (far)
	NS      string         `json:"ns"`      // "<lab>-sw"
	Bridge  string         `json:"bridge"`  // the bridge inside NS
	Subnets []netip.Prefix `json:"subnets"` // the segment's IPv4 and IPv6 prefixes
	Gateway []netip.Addr   `json:"gateway"` // the router's addresses on it
	// Service are the bridge's own addresses on the near switch, where lab
	// services every node can reach listen (the lab's etcd).
	Service []netip.Prefix `json:"service,omitempty"`
}

// ServiceAddr returns the near switch's first service address (the lab's etcd
// listens there), or the zero Addr.
func (t Topology) ServiceAddr() netip.Addr {
	for _, s := range t.Switches {
		if len(s.Service) > 0 {
			return s.Service[0].Addr()
		}
	}
	return netip.Addr{}
}

// ServiceNS returns the namespace of the switch that has the service
// address, or "".
func (t Topology) ServiceNS() string {
	for _, s := range t.Switches {
		if len(s.Service) > 0 {
			return s.NS
		}
	}
	return ""
}

// Host is a namespace with links: a node, the router or the outside host.
type Host struct {
	Name       string       `json:"name"` // "n1", "rt", "out"
	NS         string       `json:"ns"`   // "<lab>-n1"
	Index      int          `json:"index,omitempty"`
	Far        bool         `json:"far,omitempty"`
	Links      []Link       `json:"links"`
	Gateway    []netip.Addr `json:"gateway,omitempty"` // default routes, one per family
	Forwarding bool         `json:"forwarding"`        // ip_forward (and IPv6 forwarding)
}

// Link is one veth pair seen from its Host: Name and Addrs are inside the
// host's namespace, Peer inside PeerNS, enslaved to Bridge when not empty.
type Link struct {
	Name   string         `json:"name"`
	Addrs  []netip.Prefix `json:"addrs"`
	PeerNS string         `json:"peer_ns"`
	Peer   string         `json:"peer"`
	Bridge string         `json:"bridge,omitempty"`
}

// Pod is a pod namespace. Link is nil until WirePod wires it; a pod left to
// the CNI plugin stays an empty namespace.
type Pod struct {
	Node    int          `json:"node"`
	Index   int          `json:"index"`
	NS      string       `json:"ns"`   // "<lab>-n1-p1"
	Path    string       `json:"path"` // "/run/netns/<lab>-n1-p1"
	Link    *Link        `json:"link,omitempty"`
	Gateway []netip.Addr `json:"gateway,omitempty"`
}

// Addrs returns the addresses of the host's first link (a node's underlay
// addresses: IPv4 first, then IPv6), without prefix lengths.
func (h Host) Addrs() []netip.Addr {
	if len(h.Links) == 0 {
		return nil
	}
	return addrsOf(h.Links[0].Addrs)
}

// Namespaces lists every namespace of the plan, switches first and pods last.
func (t *Topology) Namespaces() []string {
	var out []string
	for _, s := range t.Switches {
		out = append(out, s.NS)
	}
	for _, h := range t.hosts() {
		out = append(out, h.NS)
	}
	for _, p := range t.Pods {
		out = append(out, p.NS)
	}
	return out
}

// hosts returns the router, the outside host and the nodes, in build order.
func (t *Topology) hosts() []*Host {
	var out []*Host
	if t.Router != nil {
		out = append(out, t.Router)
	}
	if t.Outside != nil {
		out = append(out, t.Outside)
	}
	for i := range t.Nodes {
		out = append(out, &t.Nodes[i])
	}
	return out
}

// NSName returns the namespace name of role in lab name ("<name>-<role>").
func NSName(name, role string) string { return name + "-" + role }

// PodNSName returns the namespace of pod i on node n.
func PodNSName(name string, node, i int) string {
	return NSName(name, "n"+strconv.Itoa(node)+"-p"+strconv.Itoa(i))
}

// RandomName returns prefix followed by random [a-z0-9] up to MaxNameLen
// characters; prefix must leave room for at least four of them.
func RandomName(prefix string) (string, error) {
	if n := MaxNameLen - len(prefix); n < 4 {
		return "", fmt.Errorf("%w: name prefix %q longer than %d", ErrInvalid, prefix, MaxNameLen-4)
	}
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, MaxNameLen-len(prefix))
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random lab name: %w", err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	name := prefix + string(b)
	return name, ValidateName(name)
}

// Plan computes the topology Options describe, without touching the kernel.
func Plan(o Options) (*Topology, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	near, err := o.subnets(o.Underlay, DefaultUnderlay(), "underlay")
	if err != nil {
		return nil, err
	}
	t := &Topology{Name: o.Name, MTU: o.MTU, IPv6: o.IPv6}
	if t.MTU == 0 {
		t.MTU = 1500
	}
	sw := planSwitch(o.Name, "sw", near)
	sw.Service = hostAddrs(near, ServiceHostOffset)
	t.Switches = append(t.Switches, sw)
	if len(o.Far) > 0 {
		far, err := o.subnets(o.FarUnderlay, DefaultFarUnderlay(), "far underlay")
		if err != nil {
			return nil, err
		}
		if overlaps(near, far) {
			return nil, fmt.Errorf("%w: far underlay %v overlaps underlay %v", ErrInvalid, far, near)
		}
		t.Switches = append(t.Switches, planSwitch(o.Name, "sw2", far))
	}
	if o.Router || o.Outside || len(o.Far) > 0 {
		t.Router = &Host{Name: "rt", NS: NSName(o.Name, "rt"), Forwarding: true}
		for _, s := range t.Switches {
			t.Router.Links = append(t.Router.Links, Link{Name: s.Name, Addrs: hostAddrs(s.Subnets, RouterHostOffset),
				PeerNS: s.NS, Peer: "rt", Bridge: s.Bridge})
		}
	}
	if o.Outside {
		if err := planOutside(o, t); err != nil {
			return nil, err
		}
	}
	for i := 1; i <= o.Nodes; i++ {
		sw := t.Switches[0]
		far := slices.Contains(o.Far, i)
		if far {
			sw = t.Switches[1]
		}
		t.Nodes = append(t.Nodes, Host{Name: "n" + strconv.Itoa(i), NS: NSName(o.Name, "n"+strconv.Itoa(i)),
			Index: i, Far: far, Forwarding: true, Gateway: sw.Gateway,
			Links: []Link{{Name: NodeIface, Addrs: hostAddrs(sw.Subnets, NodeHostOffset+i),
				PeerNS: sw.NS, Peer: "n" + strconv.Itoa(i), Bridge: sw.Bridge}}})
	}
	return t, nil
}

// planSwitch plans a switch; its gateway is the router's address on it, which
// nodes use as their default route whether or not the router exists (a
// default route is what the daemon's interface detection looks for).
func planSwitch(lab, name string, subnets []netip.Prefix) Switch {
	return Switch{Name: name, NS: NSName(lab, name), Bridge: "br0", Subnets: subnets,
		Gateway: addrsOf(hostAddrs(subnets, RouterHostOffset))}
}

func planOutside(o Options, t *Topology) error {
	out, err := o.subnets(o.OutsideNet, DefaultOutsideNet(), "outside network")
	if err != nil {
		return err
	}
	for _, s := range t.Switches {
		if overlaps(s.Subnets, out) {
			return fmt.Errorf("%w: outside network %v overlaps %v", ErrInvalid, out, s.Subnets)
		}
	}
	t.Outside = &Host{Name: "out", NS: NSName(o.Name, "out"), Gateway: addrsOf(hostAddrs(out, RouterHostOffset)),
		Links: []Link{{Name: "eth0", Addrs: hostAddrs(out, OutsideHostOffset), PeerNS: t.Router.NS, Peer: "out"}}}
	// The router's end of the point-to-point link.
	t.Router.Links = append(t.Router.Links, Link{Name: "out", Addrs: hostAddrs(out, RouterHostOffset),
		PeerNS: t.Outside.NS, Peer: "eth0"})
	return nil
}

func overlaps(a, b []netip.Prefix) bool {
	for _, x := range a {
		for _, y := range b {
			if x.Overlaps(y) {
				return true
			}
		}
	}
	return false
}
