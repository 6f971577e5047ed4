//go:build linux

// Package lab builds a whole weft cluster on one machine out of network
// namespaces: an underlay switch, N node namespaces, an optional router with a
// second ("far") underlay subnet, an optional outside-world namespace, and pod
// namespaces. The daemon's end-to-end tests use it today and `weft lab
// up/down/status/exec` will use it later, so it is a library: Up builds a lab
// from Options, Down(name) removes one by name, LoadState reads the state file
// another process wrote, and Command, Exec, Do and Ping run things inside a
// namespace.
//
// The rest of the lab sits under this package: cluster runs etcd (or a
// Kubernetes control plane), weftd and CNI-attached pods on a topology; cli is
// `weft lab`; bench is `weft lab bench`; labetcd is the embedded etcd of the
// lab and the tests; labtest gives a test a lab of its own.
//
// # Design notes
//
//   - The root namespace is never touched. Every namespace is named
//     "<lab>-<role>" and every link lives inside one of them: a veth pair is
//     created from inside the namespace of one end with its peer placed
//     directly into the namespace of the other (IFLA_NET_NS_FD), so no link
//     ever exists in the root namespace, not even for an instant or after an
//     error. No route, rule or sysctl of the root namespace is written.
//   - Because links live in the lab's namespaces, their names need not be
//     unique across labs: a node's underlay interface is always "eth0", which
//     is what the daemon's tests pass to --iface. Two labs side by side differ
//     only in their namespace names.
//   - Down discovers a lab from the kernel, not from memory: it lists
//     /run/netns for "<lab>-*", kills every process whose network namespace is
//     one of them, and deletes the namespaces (which destroys their links). It
//     therefore works after the building process crashed, and is idempotent.
//     Lab names are [a-z][a-z0-9]{0,7}, so the "<lab>-" prefix of one lab can
//     never match another lab's namespaces.
//   - Plan is pure: it turns Options into a Topology (names and addresses)
//     without touching the kernel, so the address plan is tested without root.
//     The Topology is what Up builds and what the JSON state file holds.
//   - Up rolls back with a named retErr: on any failure it runs Down by name,
//     which removes whatever part of the lab exists.
//   - Up returns a lab that is ready: every link is operationally up and, with
//     IPv6, has a usable link-local address (duplicate address detection is
//     off in lab namespaces). Before that the kernel sends no neighbour
//     solicitation for forwarded IPv6 packets and the first one through the
//     router stalls for seconds.
//   - Code that must run inside a namespace runs on a locked OS thread in a
//     goroutine of its own (Do); the thread's namespace is restored afterwards,
//     and a thread whose restore failed is never unlocked, so the Go runtime
//     discards it instead of reusing it.
package lab

import (
	"fmt"
	"net/netip"
	"slices"
)

// DefaultUnderlay returns the near underlay subnets: 192.168.100.0/24 and, with
// IPv6, fd00:100::/64.
func DefaultUnderlay() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("192.168.100.0/24"), netip.MustParsePrefix("fd00:100::/64")}
}

// DefaultFarUnderlay returns the far underlay subnets behind the router:
// 192.168.200.0/24 and, with IPv6, fd00:200::/64.
func DefaultFarUnderlay() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("192.168.200.0/24"), netip.MustParsePrefix("fd00:200::/64")}
}

// DefaultOutsideNet returns the subnets between the router and the outside
// namespace: 203.0.113.0/24 (TEST-NET-3) and, with IPv6, fd00:203::/64.
func DefaultOutsideNet() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("fd00:203::/64")}
}

// Limits and fixed names.
const (
	MaxNameLen = 8  // a lab name is at most this long
	MaxNodes   = 64 // nodes per lab
	MaxLinkLen = 15 // IFNAMSIZ - 1

	// NodeIface is a node's underlay interface, in every lab.
	NodeIface = "eth0"
	// PodBridge is the bridge WirePod puts in a node namespace.
	PodBridge = "cni0"
	// NodeHostOffset: node i gets host address NodeHostOffset+i on its subnet.
	NodeHostOffset = 10
	// RouterHostOffset is the router's (the gateway's) host address on each subnet.
	RouterHostOffset = 1
	// ServiceHostOffset is the near switch's own address (lab services).
	ServiceHostOffset = 2
	// OutsideHostOffset is the outside namespace's host address on its subnet.
	OutsideHostOffset = 10
)

// Error is the type of the package's sentinel errors; being a string type,
// they can be constants (the package holds no globals). Test with errors.Is.
type Error string

func (e Error) Error() string { return string(e) }

// Sentinel errors.
const (
	// ErrInvalid is wrapped by every error about bad Options or arguments.
	ErrInvalid = Error("invalid lab argument")
	// ErrExists is wrapped by Up's error when a namespace of the lab exists.
	ErrExists = Error("lab already exists")
	// ErrNotFound is wrapped when a lab, node or pod does not exist.
	ErrNotFound = Error("not found")
)

// Options describe a lab to build. The zero value of every field but Name and
// Nodes has a useful default.
type Options struct {
	// Name is the lab's name, 1 to 8 characters of [a-z0-9] starting with a
	// letter; every namespace is "<Name>-<role>". See RandomName.
	Name string
	// Nodes is the number of node namespaces, 1 to MaxNodes.
	Nodes int
	// Far lists the (1-based) nodes that sit on the far underlay subnet behind
	// the router. Any far node implies the router.
	Far []int
	// Outside adds "<Name>-out", a host behind the router that is not part of
	// the cluster (masquerade tests). It implies the router.
	Outside bool
	// Router adds "<Name>-rt" even without far nodes or Outside.
	Router bool
	// IPv6 adds an IPv6 address to every underlay interface and turns on
	// IPv6 forwarding in nodes and the router.
	IPv6 bool
	// MTU of every underlay link; 0 means 1500.
	MTU int
	// Underlay, FarUnderlay and OutsideNet override the defaults; each holds
	// one IPv4 prefix and, when IPv6 is on, one IPv6 prefix.
	Underlay, FarUnderlay, OutsideNet []netip.Prefix
	// StateDir, when not empty, receives "<Name>.json" describing the lab.
	StateDir string
}

// ValidateName reports whether name can name a lab: 1 to MaxNameLen
// characters of [a-z0-9], starting with a letter.
func ValidateName(name string) error {
	ok := len(name) >= 1 && len(name) <= MaxNameLen && name[0] >= 'a' && name[0] <= 'z'
	for _, c := range []byte(name) {
		ok = ok && (c >= 'a' && c <= 'z' || c >= '0' && c <= '9')
	}
	if !ok {
		return fmt.Errorf("%w: lab name %q must be 1..%d of [a-z0-9] starting with a letter", ErrInvalid, name, MaxNameLen)
	}
	return nil
}

func (o Options) validate() error {
	if err := ValidateName(o.Name); err != nil {
		return err
	}
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		return fmt.Errorf("%w: %d nodes, want 1..%d", ErrInvalid, o.Nodes, MaxNodes)
	}
	for _, f := range o.Far {
		if f < 1 || f > o.Nodes {
			return fmt.Errorf("%w: far node %d outside 1..%d", ErrInvalid, f, o.Nodes)
		}
	}
	if o.MTU != 0 && (o.MTU < 1280 || o.MTU > 65535) {
		return fmt.Errorf("%w: mtu %d, want 1280..65535", ErrInvalid, o.MTU)
	}
	return nil
}

// subnets returns the prefixes of one network for the enabled families, the
// defaults filled in, IPv4 first.
func (o Options) subnets(given, def []netip.Prefix, what string) ([]netip.Prefix, error) {
	if len(given) == 0 {
		given = def
	}
	var out []netip.Prefix
	for _, want6 := range []bool{false, true} {
		if want6 && !o.IPv6 {
			continue
		}
		i := slices.IndexFunc(given, func(p netip.Prefix) bool { return p.Addr().Is6() == want6 })
		if i < 0 {
			return nil, fmt.Errorf("%w: %s has no %s prefix", ErrInvalid, what, family(want6))
		}
		p := given[i].Masked()
		if p.Addr().Is4() && p.Bits() > 24 || p.Addr().Is6() && p.Bits() > 120 {
			return nil, fmt.Errorf("%w: %s prefix %s too small", ErrInvalid, what, p)
		}
		out = append(out, p)
	}
	return out, nil
}

func family(is6 bool) string {
	if is6 {
		return "IPv6"
	}
	return "IPv4"
}

// hostAddr returns host number n of p as a prefix of p's length.
func hostAddr(p netip.Prefix, n int) netip.Prefix {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return netip.PrefixFrom(a, p.Bits())
}

// hostAddrs applies hostAddr to each prefix.
func hostAddrs(ps []netip.Prefix, n int) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, hostAddr(p, n))
	}
	return out
}

// addrsOf strips the prefix lengths.
func addrsOf(ps []netip.Prefix) []netip.Addr {
	out := make([]netip.Addr, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Addr())
	}
	return out
}
