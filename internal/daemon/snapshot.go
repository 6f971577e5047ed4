//go:build linux

package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/atomicfile"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
)

// The peer snapshot lets a restarted weftd resume its data path before the
// store answers. With the udp backend every packet passes through weftd, so
// a kill -9 and restart would otherwise drop traffic for the whole start-up
// (exec, store connection, lease, peer list). weftd writes what it knows,
// the network configuration, its own lease and every peer lease, atomically
// beside subnet.env after every change (SnapshotPath); the next weftd loads
// it before it contacts the store, sets up the backend and its peers from it,
// and then reconciles with the store as usual: leases gone meanwhile are
// removed, a changed configuration starts the backend afresh. A snapshot that
// is corrupt, of another store or network, of another public address, or
// older than the lease TTL is ignored with a log line.

// snapshotVersion is the format's version; another version is ignored.
const snapshotVersion = 1

// snapshotMaxAge is how old a snapshot may be: a lease that has not been
// renewed for the lease TTL (24 h) has expired, so older peers are stale.
const snapshotMaxAge = 24 * time.Hour

// SnapshotPath is where weftd keeps the peer snapshot for subnetFile:
// /run/flannel/subnet.env.peers.json beside /run/flannel/subnet.env.
func SnapshotPath(subnetFile string) string { return subnetFile + ".peers.json" }

// snapshotFile is the file's JSON. Leases are stored as their key and
// flannel's value, so that loading them is the store's own parsing.
type snapshotFile struct {
	Version int             `json:"version"`
	Written time.Time       `json:"written"`
	Store   string          `json:"store"`
	NetConf config.NetConf  `json:"netconf"`
	Own     snapshotLease   `json:"own"`
	Peers   []snapshotLease `json:"peers"`
}

type snapshotLease struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// snapshot is a loaded, validated snapshot.
type snapshot struct {
	written time.Time
	nc      *config.NetConf
	own     lease.Lease
	peers   []lease.Lease
}

// storeIdentity names the store the daemon uses, so that a snapshot taken
// against another store (another etcd prefix or cluster, or kube mode) is
// not mistaken for this one's.
func storeIdentity(o *config.Options) string {
	if o.KubeSubnetMgr {
		return "kube " + o.KubeAnnotationPrefix + " " + o.KubeAPIURL + " " + o.KubeConfigFile
	}
	eps := slices.Clone(o.EtcdEndpoints)
	slices.Sort(eps)
	return "etcd " + o.EtcdPrefix + " " + strings.Join(eps, ",")
}

func encodeLease(l lease.Lease) (snapshotLease, error) {
	v, err := l.Attrs.MarshalJSON()
	if err != nil {
		return snapshotLease{}, fmt.Errorf("encode lease %s: %w", l.Key(), err)
	}
	return snapshotLease{Key: l.Key(), Value: v}, nil
}

func decodeLease(s snapshotLease) (lease.Lease, error) {
	v4, v6, err := lease.ParseKey(s.Key)
	if err != nil {
		return lease.Lease{}, err
	}
	a, err := lease.ParseAttrs(s.Value)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("lease %s: %w", s.Key, err)
	}
	return lease.Lease{Subnet: v4, IPv6Subnet: v6, Attrs: a}, nil
}

// encodeSnapshot renders the snapshot file.
func encodeSnapshot(now time.Time, store string, nc *config.NetConf, own lease.Lease, peers []lease.Lease) ([]byte, error) {
	f := snapshotFile{Version: snapshotVersion, Written: now.UTC(), Store: store, NetConf: *nc, Peers: make([]snapshotLease, 0, len(peers))}
	var err error
	if f.Own, err = encodeLease(own); err != nil {
		return nil, err
	}
	for _, p := range peers {
		sl, err := encodeLease(p)
		if err != nil {
			return nil, err
		}
		f.Peers = append(f.Peers, sl)
	}
	return json.Marshal(f)
}

// errNoSnapshot means there is no snapshot file (a first start).
var errNoSnapshot = errors.New("no peer snapshot")

// decodeSnapshot parses and validates a snapshot for store at now. The
// network configuration is checked as the store's would be (its own lease
// must fit it), and every lease as the store parses leases.
func decodeSnapshot(data []byte, store string, now time.Time) (*snapshot, error) {
	var f snapshotFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("corrupt: %w", err)
	}
	switch age := now.Sub(f.Written); {
	case f.Version != snapshotVersion:
		return nil, fmt.Errorf("format version %d, not %d", f.Version, snapshotVersion)
	case f.Store != store:
		return nil, fmt.Errorf("taken against another store (%q, this is %q)", f.Store, store)
	case age > snapshotMaxAge:
		return nil, fmt.Errorf("stale: written %s ago, more than the lease TTL %s", age.Round(time.Second), snapshotMaxAge)
	case age < -time.Minute:
		return nil, fmt.Errorf("written in the future (%s)", f.Written.Format(time.RFC3339))
	}
	nc := f.NetConf
	if len(nc.Families()) == 0 || nc.Backend.Type == "" {
		return nil, errors.New("corrupt: no network configuration")
	}
	own, err := decodeLease(f.Own)
	if err != nil {
		return nil, fmt.Errorf("corrupt own lease: %w", err)
	}
	for _, fam := range nc.Families() {
		s := own.Subnet
		if fam.Network.Addr().Is6() {
			s = own.IPv6Subnet
		}
		if !s.IsValid() || !fam.Network.Contains(s.Addr()) || s.Bits() < fam.Network.Bits() {
			return nil, fmt.Errorf("of another network: own lease %s is not in %s", own.Key(), fam.Network)
		}
	}
	sn := &snapshot{written: f.Written, nc: &nc, own: own, peers: make([]lease.Lease, 0, len(f.Peers))}
	for _, p := range f.Peers {
		l, err := decodeLease(p)
		if err != nil {
			return nil, fmt.Errorf("corrupt peer: %w", err)
		}
		sn.peers = append(sn.peers, l)
	}
	return sn, nil
}

// readSnapshot loads the snapshot at path; errNoSnapshot when there is none.
func readSnapshot(path, store string, now time.Time) (*snapshot, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNoSnapshot
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return decodeSnapshot(data, store, now)
}

// writeSnapshot stores the daemon's current knowledge. The file may hold
// net-conf.json secrets (a WireGuard PSK), so it is 0600.
func writeSnapshot(path string, data []byte) error {
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("write peer snapshot: %w", err)
	}
	return nil
}
