// Package netfilter owns the masquerade and forward rules weftd installs with
// --ip-masq and --iptables-forward-rules, in iptables mode (sub-package
// iptables) and nftables mode (sub-package nftables).
//
// Design notes:
//
//   - Desired state in, reconcile out. Set(cfg) turns the daemon's options into
//     a per-family rule list (Desired) once, for both modes and both address
//     families; a Backend renders that list in its own syntax and makes the
//     kernel match it. The same Apply runs at Set, on every resync tick and at
//     Cleanup (with an empty rule list), so nothing is "event-only".
//   - Both modes render the same rule list in the same order, so they are in
//     parity by construction (flannel's nftables rules differ from its
//     iptables ones and leave a rule unreachable; weft does not copy that).
//   - weft touches only its own objects: the FLANNEL-POSTRTG and FLANNEL-FWD
//     chains and the rules in POSTROUTING/FORWARD that jump to them
//     (iptables), or the tables flannel-ipv4/flannel-ipv6 (nftables). The
//     names are flannel's, so a node upgraded from flannel has its rules
//     recognised and replaced, not duplicated.
//   - Writes are atomic per family: one iptables-restore --noflush or one
//     `nft -f -` transaction, in which new rules are added before stale ones
//     are deleted; a chain or table is rewritten only when its listing differs
//     from the desired one, so Set with an unchanged config writes nothing.
package netfilter

import (
	"context"
	"net/netip"
)

// Config is the desired state of weft's masquerade and forward rules.
type Config struct {
	// Masquerade installs the masquerade rules (--ip-masq).
	Masquerade bool
	// Forward installs the FORWARD accept rules (--iptables-forward-rules).
	Forward bool
	// FullyRandomDisable drops --random-fully / fully-random from the
	// masquerade rules (--ip-masq-fully-random-disable).
	FullyRandomDisable bool
	// Networks holds at most one entry per address family.
	Networks []Network
}

// Network is one address family's cluster network C and the node's own
// subnet P, which must lie inside C.
type Network struct {
	Cluster netip.Prefix // C, e.g. 10.244.0.0/16
	Subnet  netip.Prefix // P, e.g. 10.244.1.0/24
}

// Manager is the contract the daemon uses. Both modes implement it through
// *Syncer; netfiltertest.Fake implements it in memory for the daemon's tests.
type Manager interface {
	// Set computes the rules for cfg and makes the kernel match them. It may
	// be called again with the same config harmlessly (it then writes
	// nothing). A family that was in the previous config but not in cfg has
	// its rules removed.
	Set(ctx context.Context, cfg Config) error
	// Run re-checks the rules of the last Set every resync interval and
	// restores what someone removed or changed, until ctx is done. It
	// returns nil when ctx is cancelled.
	Run(ctx context.Context) error
	// Cleanup removes weft's chains and tables (and the jumps to them) of
	// both families, and nothing else. Set may be called again afterwards.
	Cleanup(ctx context.Context) error
}

// Backend is one mode's view of the kernel. Apply is never called
// concurrently (Syncer serialises calls).
type Backend interface {
	// Apply makes weft's rules of want.Family equal to want, touching only
	// weft's own chains or tables; empty rule lists mean "absent". It
	// reports whether it had to write anything.
	Apply(ctx context.Context, want FamilyRules) (changed bool, err error)
}

// Checker is an optional capability of a Backend: Check describes how weft's
// rules of want.Family differ from want (nothing when they match), writing
// nothing (weft status).
type Checker interface {
	Check(ctx context.Context, want FamilyRules) ([]string, error)
}

var _ Manager = (*Syncer)(nil)
