package netpol

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/netfilter/netfiltertest"
	"github.com/weft-net/weft/internal/netlinkx"
	"github.com/weft-net/weft/internal/testenv"

	"github.com/weft-net/weft/internal/netlinkx/netlinkxtest"
)

// A node-like topology for tests that send real packets through weft's
// table. Per node, a namespace with a bridge cni0 (as the CNI bridge plugin
// makes it) holding the pods' gateway addresses, br_netfilter on, so that
// bridged pod-to-pod traffic meets the forward hook like routed traffic;
// per pod, a namespace joined to the bridge by a veth, its default routes
// via the bridge. The two nodes are joined by a veth pair and route each
// other's pod networks over it (host-gw's shape): same-node traffic is
// bridged, cross-node traffic routed, and both pass each node's forward
// hook. Each node has its own Syncer, over its own namespace's nftables and
// conntrack, for its own pods.

// dpNode is a node namespace and the syncer of its pods' rules.
type dpNode struct {
	name   string // spec.nodeName of its pods
	ns     string
	idx    int // its pod networks are 10.244.<idx>.0/24 and fd00:<idx>::/64
	kernel *nsKernel
	syncer *Syncer
	rs     *Ruleset
}

// dpPod is a pod: its Cluster entry and its namespace.
type dpPod struct {
	*Pod
	ns   string
	node *dpNode
}

// addr returns the pod's address of family fam.
func (p *dpPod) addr(fam Family) netip.Addr {
	for _, a := range p.IPs {
		if familyOf(a) == fam {
			return a
		}
	}
	panic(fmt.Sprintf("pod %s has no IPv%d address", p.Key(), fam))
}

// dpNet is the whole topology and the Cluster describing it.
type dpNet struct {
	c     *Cluster
	nodes []*dpNode
	pods  []*dpPod
	// sctp tells whether the kernel makes SCTP sockets.
	sctp bool
}

// The ports every pod serves (by protocol), and its named ports: the same
// names resolve to different numbers on different pods.
func servedPorts() map[Protocol][]uint16 {
	return map[Protocol][]uint16{TCP: {80, 81, 82}, UDP: {53, 80, 81}, SCTP: {80, 81}}
}

func namedPortsOf(name string) []NamedPort {
	web := map[string]uint16{"a": 80, "b": 81, "c": 82}[name]
	dns := map[string]uint16{"a": 53, "b": 53, "c": 81}[name]
	return []NamedPort{{"web", TCP, web}, {"dns", UDP, dns}, {"assoc", SCTP, 81}}
}

// newDPNet builds two nodes: n1 holds pods a and b of namespaces x, y and
// z, n2 holds their pods c. Everything goes when the test ends.
func newDPNet(t *testing.T) *dpNet {
	t.Helper()
	testenv.Privileged(t, "sends packets between pod namespaces through weft's nftables table", "ip", "nft", "ping", "stdbuf")
	d := &dpNet{c: NewCluster()}
	for _, ns := range []string{"x", "y", "z"} {
		d.c.Namespaces[ns] = &Namespace{Name: ns, Labels: map[string]string{"ns": ns, "kubernetes.io/metadata.name": ns}}
	}
	for i := 1; i <= 2; i++ {
		d.nodes = append(d.nodes, newDPNode(t, i))
	}
	d.link(t)
	for _, ns := range []string{"x", "y", "z"} {
		for _, name := range []string{"a", "b", "c"} {
			node := d.nodes[0]
			if name == "c" {
				node = d.nodes[1]
			}
			d.pods = append(d.pods, d.newPod(t, node, ns, name))
		}
	}
	d.sctp = sctpAvailable(d.pods[0].ns)
	for _, p := range d.pods {
		serveEcho(t, p, d.sctp)
	}
	d.waitAddresses(t)
	return d
}

// waitAddresses waits until no namespace of the topology holds a tentative
// IPv6 address: the links' link-local addresses go through duplicate
// address detection (about a second), and until then neighbour discovery
// through them fails, so a first probe could time out for reasons that are
// not the rules'.
func (d *dpNet) waitAddresses(t *testing.T) {
	t.Helper()
	var nss []string
	for _, n := range d.nodes {
		nss = append(nss, n.ns)
	}
	for _, p := range d.pods {
		nss = append(nss, p.ns)
	}
	deadline := time.Now().Add(testenv.Scale(t, 15*time.Second))
	for _, ns := range nss {
		for strings.TrimSpace(testenv.IP(t, "-n", ns, "-6", "addr", "show", "tentative")) != "" {
			if time.Now().After(deadline) {
				t.Fatalf("namespace %s still has tentative IPv6 addresses:\n%s", ns, testenv.IP(t, "-n", ns, "-6", "addr", "show", "tentative"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func newDPNode(t *testing.T, idx int) *dpNode {
	n := &dpNode{name: fmt.Sprintf("n%d", idx), idx: idx, ns: testenv.Namespace(t, "weftnp-")}
	testenv.IP(t, "-n", n.ns, "link", "add", "cni0", "type", "bridge")
	testenv.IP(t, "-n", n.ns, "addr", "add", fmt.Sprintf("10.244.%d.1/24", idx), "dev", "cni0")
	testenv.IP(t, "-n", n.ns, "addr", "add", fmt.Sprintf("fd00:%d::1/64", idx), "dev", "cni0", "nodad")
	testenv.IP(t, "-n", n.ns, "link", "set", "cni0", "up")
	if err := netfiltertest.InNS(n.ns, func() error { return nodeSysctls(t) }); err != nil {
		t.Fatalf("node %s: %v", n.ns, err)
	}
	n.kernel = &nsKernel{ns: n.ns}
	if err := netfiltertest.InNS(n.ns, func() (err error) { n.kernel.k, err = NewKernel(); return err }); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", n.name)
	n.syncer = NewSyncer(n.kernel, newNLConntrack(t, n.ns), log)
	return n
}

// nodeSysctls turns on forwarding and checks br_netfilter: bridged traffic
// must go through the inet forward hook (bridge-nf-call-ip*tables, per
// namespace on this kernel).
func nodeSysctls(t *testing.T) error {
	for _, key := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if err := os.WriteFile("/proc/sys/"+key, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", key, err)
		}
	}
	for _, key := range []string{"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"} {
		b, err := os.ReadFile("/proc/sys/" + key)
		if err != nil {
			return fmt.Errorf("read %s (is br_netfilter loaded?): %w", key, err)
		}
		if strings.TrimSpace(string(b)) == "1" {
			continue
		}
		t.Logf("%s was %s: setting it to 1", key, strings.TrimSpace(string(b)))
		if err := os.WriteFile("/proc/sys/"+key, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", key, err)
		}
	}
	return nil
}

// link joins the nodes with a veth pair and routes each one's pod networks
// through the other.
func (d *dpNet) link(t *testing.T) {
	n1, n2 := d.nodes[0], d.nodes[1]
	testenv.IP(t, "-n", n1.ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", n2.ns)
	for _, n := range d.nodes {
		testenv.IP(t, "-n", n.ns, "addr", "add", fmt.Sprintf("10.243.0.%d/24", n.idx), "dev", "eth0")
		testenv.IP(t, "-n", n.ns, "addr", "add", fmt.Sprintf("fd00:ff::%d/64", n.idx), "dev", "eth0", "nodad")
		testenv.IP(t, "-n", n.ns, "link", "set", "eth0", "up")
		other := 3 - n.idx
		testenv.IP(t, "-n", n.ns, "route", "add", fmt.Sprintf("10.244.%d.0/24", other), "via", fmt.Sprintf("10.243.0.%d", other))
		testenv.IP(t, "-n", n.ns, "-6", "route", "add", fmt.Sprintf("fd00:%d::/64", other), "via", fmt.Sprintf("fd00:ff::%d", other))
	}
}

// newPod makes pod ns/name on node: a namespace, a veth to the bridge, its
// addresses and default routes.
func (d *dpNet) newPod(t *testing.T, node *dpNode, kns, name string) *dpPod {
	host := 10 + len(d.pods)
	p := &dpPod{ns: testenv.Namespace(t, "weftnp-"), node: node, Pod: &Pod{
		Namespace: kns, Name: name, Node: node.name, Labels: map[string]string{"pod": name, "app": "web"},
		IPs: []netip.Addr{
			netip.MustParseAddr(fmt.Sprintf("10.244.%d.%d", node.idx, host)),
			netip.MustParseAddr(fmt.Sprintf("fd00:%d::%d", node.idx, host)),
		},
		Ports: namedPortsOf(name),
	}}
	peer := fmt.Sprintf("veth%d", host)
	testenv.IP(t, "-n", p.ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", node.ns)
	testenv.IP(t, "-n", node.ns, "link", "set", peer, "master", "cni0", "up")
	testenv.IP(t, "-n", p.ns, "addr", "add", p.IPs[0].String()+"/24", "dev", "eth0")
	testenv.IP(t, "-n", p.ns, "addr", "add", p.IPs[1].String()+"/64", "dev", "eth0", "nodad")
	testenv.IP(t, "-n", p.ns, "link", "set", "eth0", "up")
	testenv.IP(t, "-n", p.ns, "route", "add", "default", "via", fmt.Sprintf("10.244.%d.1", node.idx))
	testenv.IP(t, "-n", p.ns, "-6", "route", "add", "default", "via", fmt.Sprintf("fd00:%d::1", node.idx))
	d.c.Pods[p.Key()] = p.Pod
	return p
}

// pod returns the pod "namespace/name".
func (d *dpNet) pod(key string) *dpPod {
	for _, p := range d.pods {
		if p.Key() == key {
			return p
		}
	}
	panic("no pod " + key)
}

// apply compiles the cluster for each node and has its syncer write it.
func (d *dpNet) apply(t *testing.T) {
	t.Helper()
	for _, n := range d.nodes {
		rs, errs := Compile(d.c, n.name)
		if len(errs) > 0 {
			t.Fatalf("compile for %s: %v", n.name, errs)
		}
		if err := n.syncer.Apply(context.Background(), rs); err != nil {
			t.Fatalf("apply on %s: %v", n.name, err)
		}
		n.rs = rs
	}
}

// counters returns each node's drop counters' packets, keyed "node/counter".
func (d *dpNet) counters(t *testing.T) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, n := range d.nodes {
		c, err := n.kernel.Census(context.Background())
		if err != nil {
			t.Fatalf("census of %s: %v", n.name, err)
		}
		for name, v := range c.Counters {
			out[n.name+"/"+name] = v
		}
	}
	return out
}

// nlConntrack is the syncer's Conntrack over netlinkx, in one namespace:
// netlinkx.Connection and Packet have the same fields, so one converts to
// the other.
type nlConntrack struct{ h *netlinkx.Handle }

func newNLConntrack(t *testing.T, ns string) nlConntrack {
	t.Helper()
	h, _ := netlinkxtest.In(t, ns)
	return nlConntrack{h}
}

func (c nlConntrack) DeleteConnections(match func(Packet) bool) (int, error) {
	return c.h.DeleteConnections(func(conn netlinkx.Connection) bool { return match(Packet(conn)) })
}
