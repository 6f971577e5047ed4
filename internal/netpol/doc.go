// Package netpol enforces Kubernetes NetworkPolicy (networking.k8s.io/v1)
// for the pods of one node, in the kernel, with nftables.
//
// # Shape
//
// Cluster holds what policy needs from the API, stripped (pods' addresses,
// labels and named ports; namespaces' labels; the policies). Compile turns
// it into a Ruleset: plain data naming every nftables object of weft's table
// for this node. The controller's Compiler does the same on every change,
// compiling again only the policies that read what changed. Syncer writes a Ruleset with knftables, only the
// differences from what it wrote before, in one transaction per change, and
// on its periodic check compares a census of the kernel's table with the
// Ruleset and rewrites whatever someone else removed (counted as repairs).
// Evaluate answers, from a Ruleset alone, what the kernel does with a
// connection's first packet; the syncer uses it to cut the conntrack entries
// of connections a change denies, and the tests compare it with the kernel
// and with kube-network-policies' evaluator. Controller (kube.go) keeps
// Cluster from informers and drives the rest.
//
// # The table: inet weft-netpol
//
// Two base chains on the forward hook (routed pod traffic, and bridged pod
// traffic through br_netfilter): "egress" at priority filter-1 and "ingress"
// at filter. Each first accepts ct state established,related and IPv6
// neighbour discovery (not a connection; policy does not govern it); egress
// then drops TCP packets that conntrack picks up mid-stream (ct state new
// without SYN) to or from a policed pod, so that a connection a change cut
// cannot come back in the other orientation. Each then looks
// the packet's pod address up in a verdict map written inside the chain's
// last rules (egress: the source; ingress: the destination; one per family)
// holding only this node's pods that a policy selects in that direction. A
// pod's element jumps (goto) to the chain of the set of policies selecting
// it ("pods-in-<hash>"), shared by every pod with the same set: it runs
// the policies' chains, each of which accepts what one of its rules allows
// (jumping in turn to those that may accept any port, and for those whose
// rules all name ports, looking the port up once and jumping only to those
// allowing it: dispatch.go); what none allows is counted on each of those
// policies' drop counters and dropped. An accept in "egress" ends that base chain only, so
// a packet between two pods of this node meets the destination's ingress
// policies too. Pods no policy selects are not in the maps: their traffic
// is untouched, as the API requires.
//
// A policy rule becomes one nftables rule (two when it has named and
// numbered ports), matching sets written inside it (anonymous sets):
//
//	peers (from/to):   ip saddr|daddr { ... }  (ip6 likewise): the peer
//	                   pods' addresses and the ipBlocks' ranges with their
//	                   excepts cut out;
//	numbered ports:    meta l4proto . th dport { tcp . 80, ... }: protocol
//	                   . port range (endPort);
//	named ports:       ip daddr . meta l4proto . th dport { ... }: the
//	                   destination pods' addresses with the port their
//	                   container port of that name has (ingress: the pods
//	                   the policy selects; egress: the peers).
//
// The Ruleset names these sets (Ruleset.Sets, Rule.Peer...); render.go
// writes each inside its rule, and leaves out a rule whose set is empty (it
// matches nothing). The table has no named set or map: nft reads every
// element of every set of the table before it adds or deletes one element
// (nft 1.0.6: 400-550 ms at 29,000 elements), while a rule with its set
// inside costs what any rule does. A change rewrites the chains whose rules
// or sets changed.
//
// A rule with no peers and no ports accepts. Conntrack lets replies back in;
// established connections that a change denies are cut (their conntrack
// entries deleted) so that a new deny takes effect on running flows too.
package netpol
