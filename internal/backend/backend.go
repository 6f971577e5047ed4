//go:build linux

// Package backend defines the data-plane backends' interface, the external
// interface they run over, and the registry the daemon picks a backend from.
// A backend creates its devices; their configuration (MTU, MAC, addresses,
// up) and the routes, neighbours and FDB entries of its peers are desired
// state, written and repaired by the one reconciler, never by the backend
// itself.
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
)

// External is the node's interface for inter-node traffic.
type External struct {
	Name  string
	Index int
	MTU   int
	// Addrs are the interface's addresses with their prefix lengths; a peer
	// whose public address lies in one of them is directly connected.
	Addrs []netip.Prefix
	// PublicIP and PublicIPv6 are what other nodes send to (--public-ip or
	// the interface's address); the zero Addr when that family has none.
	PublicIP, PublicIPv6 netip.Addr
}

// DirectlyConnected reports whether a is on one of the interface's subnets.
func (e External) DirectlyConnected(a netip.Addr) bool {
	for _, p := range e.Addrs {
		if p.Masked().Contains(a) && p.Bits() < p.Addr().BitLen() {
			return true
		}
	}
	return false
}

// Backend is one data plane.
type Backend interface {
	// Attrs returns what the node publishes in its lease (BackendType and
	// BackendData). It may create or adopt devices whose identity (a VTEP
	// MAC) the data must carry.
	Attrs(ctx context.Context) (lease.Attrs, error)
	// Ensure makes the backend's devices exist, of the right kind and
	// settings (creating them, or replacing a device of the name that cannot
	// be kept), and remembers the own lease. It is idempotent and is called
	// at start, whenever the reconciler finds a device missing or replaced,
	// and when the own lease changes. Their MTU, MAC, addresses and up flag
	// are not its job: Devices hands them to the reconciler.
	Ensure(ctx context.Context, own lease.Lease) error
	// Devices returns the backend's devices as desired state for the
	// reconciler (name, MTU, MAC, addresses), for the lease of the last
	// Ensure (or Observe).
	// Peer returns the kernel objects that make one peer's subnets
	// reachable, or why the peer's lease cannot be used by this backend (the
	// caller logs that once per lease and installs nothing for it).
	Peer(own lease.Lease, peer lease.Lease) (reconcile.Objects, error)
	// Links returns the indices of the devices the backend manages (their
	// neighbours and FDB entries belong to weft).
	Links() []int
	Devices() []kernel.Device
	// MTU is the MTU pods must use (FLANNEL_MTU).
	MTU() int
}

// NodeRouter is an optional capability of a Backend whose device needs
// routes of its own, independent of any peer (udp: <Network> dev flannel0).
// The daemon hands them to the reconciler with the node's own objects, so
// that they are repaired like a peer's; it asks again after Ensure.
type NodeRouter interface {
	NodeRoutes() []kernel.Route
}

// Observer is an optional capability of a Backend, for weft status: Observe
// finds the backend's devices as they are, creating and changing nothing, so
// that Peer and Links then describe what the daemon would want in the
// kernel. It returns the names of the devices that are missing.
type Observer interface {
	Observe(own lease.Lease) (missing []string, err error)
}

// PeerForgetter is an optional capability of a Backend whose peers live in
// userspace (udp's peer table), where the kernel-object reconciler cannot
// remove them: the daemon calls ForgetPeer when a peer's lease is gone.
// Unknown keys are ignored.
type PeerForgetter interface {
	ForgetPeer(key string)
}

// PeerPruner is an optional capability of a Backend whose peers live outside
// the reconciler (WireGuard's peers on its device): PrunePeers is called
// once the daemon has given the backend every listed lease, after which
// the backend may remove the peers no lease wants (a restart does not drop
// its predecessor's peers before their leases are known).
type PeerPruner interface {
	PrunePeers()
}

// PeerSyncer is an optional capability of a Backend whose peers live outside
// the reconciler and that keeps them in a loop of its own (the kernel sends
// no notice of their changes): SyncPeers asks for a check now. The daemon
// calls it on every full sync of the reconciler (the periodic check, lost
// notices, a recreated device), so that those peers are repaired by the same
// checks as every other kernel object.
type PeerSyncer interface {
	SyncPeers()
}

// PeerDiffer is an optional capability of a Backend whose peers live outside
// the reconciler, for weft status: after Peer was called for every lease,
// DiffPeers names each way the peers in the kernel (or the userspace data
// path) differ from what the leases want, changing nothing.
type PeerDiffer interface {
	DiffPeers() ([]string, error)
}

// Deps are what a backend is built with.
type Deps struct {
	Net      *config.NetConf
	External External
	// Kernel is the kernel the backend reads and creates its devices in.
	Kernel kernel.Kernel
	Logger *slog.Logger
	// Options are weftd's options; nil means the defaults. Registry.New
	// hands the type its node settings from Options.Backends as Settings.
	Options *config.Options
	// Settings are the type's node settings as weftd parsed them (the value
	// Type.Settings made); nil means their defaults (see SettingsOf).
	Settings config.FlagAdder
	// ReadOnly forbids the backend to change the kernel when it is built
	// (weft status builds one to compute what the daemon would want).
	ReadOnly bool
}

// SettingsOf returns d.Settings as the type's settings, or def() when
// weftd gave none (a test's Deps).
func SettingsOf[S config.FlagAdder](d Deps, def func() S) S {
	if s, ok := d.Settings.(S); ok {
		return s
	}
	return def()
}

// Path is a node's choice between a type's kernel and userspace data paths
// (ipip, wireguard): a flag value.
type Path string

// The data-path choices: auto keeps the kind of an existing device, else
// asks the kernel and falls back to userspace, saying so.
const (
	PathAuto      Path = "auto"
	PathKernel    Path = "kernel"
	PathUserspace Path = "userspace"
)

func (p *Path) String() string { return string(*p) }

// Set implements flag.Value.
func (p *Path) Set(s string) error {
	switch v := Path(s); v {
	case PathAuto, PathKernel, PathUserspace:
		*p = v
		return nil
	}
	return fmt.Errorf("%q: want %s, %s or %s", s, PathAuto, PathKernel, PathUserspace)
}

// Factory builds a backend.
type Factory func(Deps) (Backend, error)

// Type is one backend type as its package defines it: everything the rest
// of weft needs to know of it without naming it.
type Type struct {
	// Name is net-conf.json's Backend.Type and the lease's BackendType.
	Name string
	// Validate reads and checks the type's options in c.Backend.Options
	// (errors wrap config.ErrNetConf), returning warnings to log; nil means
	// the type has no options (any given are warned about as unknown).
	Validate func(c *config.NetConf) ([]string, error)
	// New builds the backend.
	New Factory
	// Settings, when set, returns the type's node settings at their
	// defaults: what may differ between nodes (the data path a node's
	// kernel allows), as weftd flags of the type's own, where net-conf.json's
	// Backend options are the network's.
	Settings func() config.FlagAdder
}

// Validator makes a Type's Validate from a package's option parser.
func Validator[O any](parse func(*config.NetConf) (O, []string, error)) func(*config.NetConf) ([]string, error) {
	return func(c *config.NetConf) ([]string, error) {
		_, w, err := parse(c)
		return w, err
	}
}

// Registry is the list of backend types of a build, in the order messages
// show them: the one list that config validation, weftd, weft lab and weft
// lab bench read. It is built explicitly (no init-time registration).
type Registry []Type

// Names lists the types.
func (r Registry) Names() []string {
	out := make([]string, len(r))
	for i, t := range r {
		out[i] = t.Name
	}
	return out
}

// Lookup returns the type named name.
func (r Registry) Lookup(name string) (Type, bool) {
	for _, t := range r {
		if t.Name == name {
			return t, true
		}
	}
	return Type{}, false
}

// Validate implements config.BackendTypes.
func (r Registry) Validate(c *config.NetConf) ([]string, bool, error) {
	t, ok := r.Lookup(c.Backend.Type)
	if !ok {
		return nil, false, nil
	}
	if t.Validate == nil {
		w, err := c.Backend.ReadOptions(nil)
		return w, true, err
	}
	w, err := t.Validate(c)
	return w, true, err
}

// Settings returns every type's node settings at their defaults, by type
// name, for config.ParseOptions.
func (r Registry) Settings() map[string]config.FlagAdder {
	out := map[string]config.FlagAdder{}
	for _, t := range r {
		if t.Settings != nil {
			out[t.Name] = t.Settings()
		}
	}
	return out
}

// New builds the backend named by d.Net.Backend.Type, after validating its
// options (config.NetConf.ConfigureBackend).
func (r Registry) New(d Deps) (Backend, error) {
	if _, err := d.Net.ConfigureBackend(r); err != nil {
		return nil, err
	}
	t, _ := r.Lookup(d.Net.Backend.Type)
	if d.Options != nil && d.Settings == nil {
		d.Settings = d.Options.Backends[t.Name]
	}
	b, err := t.New(d)
	if err != nil {
		return nil, fmt.Errorf("start %s backend: %w", t.Name, err)
	}
	return b, nil
}

// Why PeerCheck refuses a lease, for callers that count by reason.
var (
	ErrOtherType = errors.New("another backend type")
	ErrSelf      = errors.New("this node's own")
)

// PeerCheck validates the fields every backend needs of a peer lease: the
// same backend type, and not the node itself. Its errors wrap ErrOtherType
// or ErrSelf.
func PeerCheck(own lease.Lease, peer lease.Lease, backendType string) error {
	switch {
	case peer.Attrs.BackendType != backendType:
		return fmt.Errorf("its BackendType %q is not this node's %q%w", peer.Attrs.BackendType, backendType, quiet{ErrOtherType})
	case peer.Key() == own.Key():
		return fmt.Errorf("it is this node's own lease%w", quiet{ErrSelf})
	case peer.Attrs.PublicIP.IsValid() && peer.Attrs.PublicIP == own.Attrs.PublicIP,
		peer.Attrs.PublicIPv6.IsValid() && peer.Attrs.PublicIPv6 == own.Attrs.PublicIPv6:
		return fmt.Errorf("it carries this node's own public address%w", quiet{ErrSelf})
	}
	return nil
}

// quiet wraps a sentinel without adding to the message: the log line keeps
// its wording, errors.Is still finds the reason.
type quiet struct{ err error }

func (q quiet) Error() string { return "" }
func (q quiet) Unwrap() error { return q.err }
