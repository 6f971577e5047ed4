// Package lease defines a node's subnet lease and the change events the
// lease stores deliver, with flannel's encodings of both: the JSON value of a
// lease ({"PublicIP":...,"PublicIPv6":...,"BackendType":...,"BackendData":...})
// and the key name of a subnet (10.5.34.0-24, 10.5.34.0-24&fd00:5:34::-64).
// A flannel node and a weft node sharing one etcd read each other's leases
// through these encodings, so they follow flannel byte for byte.
package lease

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/maphash"
	"net/netip"
	"time"
)

// Attrs are what a node publishes about itself in its lease. Backends put
// their own data (VTEP MAC, WireGuard key, ...) into BackendData and
// BackendV6Data as JSON; nothing here knows a backend's format.
type Attrs struct {
	// PublicIP and PublicIPv6 are the node's addresses other nodes send
	// encapsulated traffic to; the zero Addr when unset.
	PublicIP   netip.Addr
	PublicIPv6 netip.Addr
	// BackendType is the backend's name ("vxlan", "host-gw", ...).
	BackendType string
	// BackendData and BackendV6Data are opaque JSON owned by the backend; nil
	// when absent.
	BackendData   json.RawMessage
	BackendV6Data json.RawMessage
}

// Equal reports whether a and b are the same attributes, comparing the JSON
// data byte for byte.
func (a Attrs) Equal(b Attrs) bool {
	return a.PublicIP == b.PublicIP && a.PublicIPv6 == b.PublicIPv6 && a.BackendType == b.BackendType &&
		bytes.Equal(a.BackendData, b.BackendData) && bytes.Equal(a.BackendV6Data, b.BackendV6Data)
}

// Lease is one node's claim on a subnet (and, dual-stack, an IPv6 subnet).
type Lease struct {
	// Subnet and IPv6Subnet are the leased subnets; the zero Prefix for a
	// family that is off.
	Subnet     netip.Prefix
	IPv6Subnet netip.Prefix
	// Attrs is the published value.
	Attrs Attrs
	// Expiration is when the store drops the lease unless it is renewed. It
	// is set on leases returned by acquire and renew; leases listed or
	// watched carry the zero time when the store does not know it cheaply.
	// Reservations never expire.
	Expiration time.Time
	// Reservation marks a lease an operator created without expiry: only the
	// node whose PublicIP matches takes it, and it stays a reservation.
	Reservation bool
	// Node names the node holding the lease where the store knows it (the
	// Node object's name in kube mode; empty with etcd), for logs. It is
	// neither part of the key nor of the value, and Equal ignores it.
	Node string
}

// Hash returns a 64-bit digest of what Equal compares, under seed: equal
// leases hash alike, and unequal ones collide with probability 2^-64 for a
// seed the writers of the leases do not know (maphash.MakeSeed). It lets a
// watcher remember thousands of leases in a few bytes each.
func (l Lease) Hash(seed maphash.Seed) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	for _, p := range [2]netip.Prefix{l.Subnet, l.IPv6Subnet} {
		b, _ := p.MarshalBinary() // never fails
		writeField(&h, b)
	}
	for _, a := range [2]netip.Addr{l.Attrs.PublicIP, l.Attrs.PublicIPv6} {
		b, _ := a.MarshalBinary() // never fails
		writeField(&h, b)
	}
	writeField(&h, []byte(l.Attrs.BackendType))
	writeField(&h, l.Attrs.BackendData)
	writeField(&h, l.Attrs.BackendV6Data)
	var tail [10]byte
	if !l.Expiration.IsZero() {
		tail[0] = 1
		binary.LittleEndian.PutUint64(tail[1:9], uint64(l.Expiration.UnixNano()))
	}
	if l.Reservation {
		tail[9] = 1
	}
	h.Write(tail[:])
	return h.Sum64()
}

// writeField writes b with its length, so that no two field sequences
// write the same bytes.
func writeField(h *maphash.Hash, b []byte) {
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
	h.Write(b)
}

// Key returns the lease's key name (see FormatKey).
func (l Lease) Key() string { return FormatKey(l.Subnet, l.IPv6Subnet) }

// Equal reports whether a and b are the same lease: same subnets, attributes,
// expiration and reservation flag.
func (l Lease) Equal(o Lease) bool {
	return l.Subnet == o.Subnet && l.IPv6Subnet == o.IPv6Subnet && l.Attrs.Equal(o.Attrs) &&
		l.Expiration.Equal(o.Expiration) && l.Reservation == o.Reservation
}

// String returns the key name, enough to identify the lease in logs.
func (l Lease) String() string { return l.Key() }

// EventType says whether an event adds (or updates) or removes a lease.
type EventType int

// Event types.
const (
	// Added means the lease is new or its value changed.
	Added EventType = iota
	// Removed means the lease is gone (deleted, expired, or no longer a
	// valid lease).
	Removed
	// Lost means the store lost the lease without anyone deleting it: the
	// store was reset (etcd restarted from an empty data directory or an
	// old snapshot). The lease's node may still be alive and write it
	// again, so a consumer keeps what the lease set up until the event's
	// Lease.Expiration (when the lease would have expired had it stayed)
	// unless an Added event for the key comes first.
	Lost
)

func (t EventType) String() string {
	switch t {
	case Added:
		return "added"
	case Removed:
		return "removed"
	case Lost:
		return "lost"
	}
	return "unknown"
}

// Event is one change to the set of leases.
type Event struct {
	Type  EventType
	Lease Lease
}
