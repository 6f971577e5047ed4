package netpol

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
)

// Protocol is a NetworkPolicy port protocol: TCP, UDP or SCTP.
type Protocol string

// The protocols NetworkPolicy knows.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// Number returns the IP protocol number of p, 0 for an unknown protocol.
func (p Protocol) Number() uint8 {
	switch p {
	case TCP:
		return 6
	case UDP:
		return 17
	case SCTP:
		return 132
	}
	return 0
}

// protocolName returns nftables' name of IP protocol n.
func protocolName(n uint8) string {
	switch n {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 132:
		return "sctp"
	}
	return fmt.Sprint(n)
}

// NamedPort is a container port with a name, which a policy's port may
// name.
type NamedPort struct {
	Name     string
	Protocol Protocol
	Port     uint16
}

// Pod is what policy needs of a pod.
type Pod struct {
	Namespace, Name string
	// Node is spec.nodeName: only this node's pods get rules here.
	Node   string
	Labels map[string]string
	// IPs are status.podIPs. A pod with none, a pod on the host network, or
	// one that has finished (its addresses may already be another pod's) is
	// neither selected nor a peer.
	IPs         []netip.Addr
	HostNetwork bool
	Finished    bool
	Ports       []NamedPort
	// Terminating (a deletion timestamp) and Created decide which of two
	// running pods holding one address has it: one that is not going away,
	// then the newer.
	Terminating bool
	Created     time.Time
}

// Key returns "namespace/name".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// live reports whether the pod takes part in policy.
func (p *Pod) live() bool { return !p.HostNetwork && !p.Finished && len(p.IPs) > 0 }

// ports resolves a named port of protocol proto: the API checks names
// unique within a container only, so several containers may have it.
func (p *Pod) ports(name string, proto Protocol) []uint16 {
	var out []uint16
	for _, np := range p.Ports {
		if np.Name == name && np.Protocol == proto {
			out = append(out, np.Port)
		}
	}
	return out
}

// Namespace is what policy needs of a namespace: its labels.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Policy is a NetworkPolicy.
type Policy struct {
	Namespace, Name string
	Spec            networkingv1.NetworkPolicySpec
}

// Key returns "namespace/name".
func (p *Policy) Key() string { return p.Namespace + "/" + p.Name }

// Cluster is everything policy depends on, keyed by "namespace/name" (pods,
// policies) and name (namespaces). Compile only reads it.
type Cluster struct {
	Pods       map[string]*Pod
	Namespaces map[string]*Namespace
	Policies   map[string]*Policy
}

// NewCluster returns an empty Cluster.
func NewCluster() *Cluster {
	return &Cluster{Pods: map[string]*Pod{}, Namespaces: map[string]*Namespace{}, Policies: map[string]*Policy{}}
}

// splitKey splits "namespace/name".
func splitKey(key string) (ns, name string) {
	ns, name, _ = strings.Cut(key, "/")
	return ns, name
}
