//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/metrics"
	"github.com/weft-net/weft/internal/netfilter"
	"github.com/weft-net/weft/internal/netlinkx"
	"github.com/weft-net/weft/internal/reconcile"
	"github.com/weft-net/weft/internal/store"
	"github.com/weft-net/weft/internal/subnetfile"
)

// ErrCannotTell wraps the errors for which weft status cannot compare the
// kernel with the store (the store unreachable, no configuration).
var ErrCannotTell = errors.New("cannot tell")

// StatusDeps are what Status reads: the same store, backends and rule mode
// as the node's weftd.
type StatusDeps struct {
	Store    store.Store
	Backends backend.Registry
	// CheckRules describes how the kernel's masquerade and forward rules
	// differ from cfg (node.CheckRules); nil skips the rules.
	CheckRules func(ctx context.Context, nc *config.NetConf, cfg netfilter.Config) ([]string, error)
	// Kernel, when set, is the kernel to read (a test's namespace).
	Kernel kernel.Kernel
	// HTTP asks the local weftd's health server; nil means
	// http.DefaultClient.
	HTTP *http.Client
}

// Report is weft status' answer.
type Report struct {
	InSync   bool       `json:"in_sync"`
	Problems []string   `json:"problems,omitempty"` // what is not as it should be, one object each
	Node     NodeReport `json:"node"`
	Peers    []PeerRow  `json:"peers"`
	Daemon   DaemonRow  `json:"daemon"`
}

// NodeReport is the node's own side.
type NodeReport struct {
	Lease      string     `json:"lease,omitempty"`
	Subnet     string     `json:"subnet,omitempty"`
	IPv6Subnet string     `json:"ipv6_subnet,omitempty"`
	PublicIP   string     `json:"public_ip,omitempty"`
	Renewed    *time.Time `json:"renewed,omitempty"`
	Expires    *time.Time `json:"expires,omitempty"`
	Backend    string     `json:"backend"`
	Interface  string     `json:"interface"`
	Devices    []string   `json:"devices"`
	Rules      string     `json:"rules"` // what masquerade and forward rules the options ask for
}

// PeerRow is one peer lease.
type PeerRow struct {
	Lease    string `json:"lease"`
	Node     string `json:"node,omitempty"`
	PublicIP string `json:"public_ip"`
	// Renewed is when the peer's lease was last granted or renewed (etcd;
	// asked per peer up to maxPeerTimes peers), Expires when it expires.
	Renewed *time.Time `json:"renewed,omitempty"`
	Expires *time.Time `json:"expires,omitempty"`
	// Ignored is why the backend cannot use the lease ("" when it is a
	// peer).
	Ignored string `json:"ignored,omitempty"`
}

// DaemonRow is what the local weftd says when it answers.
type DaemonRow struct {
	Answered bool    `json:"answered"`
	Ready    bool    `json:"ready"`
	Reason   string  `json:"reason,omitempty"`
	Peers    float64 `json:"peers"`
	Repairs  float64 `json:"repairs"`
	Errors   float64 `json:"write_errors"`
}

// Status reads the store and the kernel itself, as the node's weftd with
// options o would, and compares what the kernel holds with what the store
// says it should hold: the backend's devices, every peer's routes,
// neighbours and FDB entries, the node's own routes, and the masquerade and
// forward rules. It changes nothing. Errors that keep it from comparing wrap
// ErrCannotTell.
func Status(ctx context.Context, o config.Options, d StatusDeps) (Report, error) {
	var rep Report
	nc, err := d.Store.NetworkConfig(ctx)
	if err != nil {
		return rep, fmt.Errorf("%w: network configuration: %w", ErrCannotTell, err)
	}
	if _, err := nc.ConfigureBackend(d.Backends); err != nil {
		return rep, fmt.Errorf("%w: %w", ErrCannotTell, err)
	}
	snap, err := d.Store.ListLeases(ctx)
	if err != nil {
		return rep, fmt.Errorf("%w: list leases: %w", ErrCannotTell, err)
	}
	nl := d.Kernel
	if nl == nil {
		h, err := netlinkx.New()
		if err != nil {
			return rep, fmt.Errorf("%w: %w", ErrCannotTell, err)
		}
		defer h.Close()
		nl = h
	}
	var given givenAddrs
	if src, ok := d.Store.(publicAddrSource); ok { // as weftd's start asks, once; a Node not registered gives none
		if given.v4, given.v6, err = src.PublicAddrs(ctx, nc); err != nil && !errors.Is(err, store.ErrNotYet) {
			return rep, fmt.Errorf("%w: public address given for this node: %w", ErrCannotTell, err)
		}
	}
	ext, _, err := chooseExternal(nl, &o, nc, given)
	if err != nil {
		return rep, fmt.Errorf("%w: choose the external interface: %w", ErrCannotTell, err)
	}
	quiet := slog.New(slog.DiscardHandler)
	be, err := d.Backends.New(backend.Deps{Net: nc, External: ext, Kernel: nl, Logger: quiet, Options: &o, ReadOnly: true})
	if err != nil {
		return rep, fmt.Errorf("%w: %w", ErrCannotTell, err)
	}
	if c, ok := be.(io.Closer); ok {
		defer c.Close()
	}
	dm := &Daemon{o: o, log: quiet, nl: nl, nc: nc, be: be, ext: ext, m: metrics.New(""),
		peers: map[string]lease.Lease{}, bad: map[string]string{}}
	own, found := ownLease(snap.Leases, o.SubnetFile, ext, o.NodeName)
	rep.Node = NodeReport{Backend: nc.Backend.Type, Interface: ext.Name, Rules: rulesWanted(o)}
	if !found {
		rep.Problems = append(rep.Problems, "no lease in the store for this node (public IP "+ext.PublicIP.String()+")")
	} else {
		dm.own = own
		rep.Node.Lease, rep.Node.PublicIP = own.Key(), own.Attrs.PublicIP.String()
		rep.Node.Subnet, rep.Node.IPv6Subnet = prefixText(own.Subnet), prefixText(own.IPv6Subnet)
		rep.Node.Renewed, rep.Node.Expires = leaseTimes(ctx, d.Store, own)
	}
	if ob, ok := be.(backend.Observer); ok {
		missing, err := ob.Observe(own)
		if err != nil {
			return rep, fmt.Errorf("%w: %w", ErrCannotTell, err)
		}
		for _, dev := range missing {
			rep.Problems = append(rep.Problems, "missing device "+dev)
		}
	}
	for _, dev := range be.Devices() {
		rep.Node.Devices = append(rep.Node.Devices, dev.Name)
	}
	dm.rec = reconcile.New(nl, quiet)
	dm.rec.SetScope(dm.scope())
	if found {
		// What the device pass would change (a missing device is named
		// above already).
		dm.rec.SetDevices(be.Devices())
		diffs, err := dm.rec.DiffDevices()
		if err != nil {
			return rep, fmt.Errorf("%w: read the devices: %w", ErrCannotTell, err)
		}
		rep.Problems = append(rep.Problems, diffs...)
		dm.setNodeObjects()
	}
	for _, l := range snap.Leases {
		if l.Key() == own.Key() {
			continue
		}
		dm.putPeer(l)
		row := PeerRow{Lease: l.Key(), Node: l.Node, PublicIP: l.Attrs.PublicIP.String(), Ignored: dm.bad[l.Key()]}
		if len(snap.Leases) <= maxPeerTimes {
			row.Renewed, row.Expires = leaseTimes(ctx, d.Store, l)
		}
		rep.Peers = append(rep.Peers, row)
	}
	writes, err := dm.rec.Diff()
	if err != nil {
		return rep, fmt.Errorf("%w: read the kernel: %w", ErrCannotTell, err)
	}
	names := linkNames(nl)
	for _, w := range writes {
		rep.Problems = append(rep.Problems, names(describe(w)))
	}
	if pd, ok := be.(backend.PeerDiffer); ok && found {
		diffs, err := pd.DiffPeers()
		if err != nil {
			return rep, fmt.Errorf("%w: %w", ErrCannotTell, err)
		}
		rep.Problems = append(rep.Problems, diffs...)
	}
	if d.CheckRules != nil && found && (o.IPMasq || o.IPTablesForwardRules) {
		diffs, err := d.CheckRules(ctx, nc, dm.rulesConfig())
		if err != nil {
			return rep, fmt.Errorf("%w: check the masquerade and forward rules: %w", ErrCannotTell, err)
		}
		rep.Problems = append(rep.Problems, diffs...)
	}
	rep.Daemon = askDaemon(ctx, d.HTTP, o)
	rep.InSync = len(rep.Problems) == 0
	return rep, nil
}

// describe names one difference by the write that would fix it.
func describe(w kernel.Write) string {
	var what string
	switch w.Op {
	case kernel.OpReplaceRoute, kernel.OpDeleteRoute:
		what = w.Route.String()
	case kernel.OpSetNeigh, kernel.OpDeleteNeigh:
		what = w.Neigh.String()
	default:
		what = w.FDB.String()
	}
	if w.Op.IsDelete() {
		return "extra " + w.Op.Object() + " " + what
	}
	return "missing or different " + w.Op.Object() + " " + what
}

// linkNames returns a function that writes "dev #<index>" in a description
// as "dev <name>".
func linkNames(nl kernel.Kernel) func(string) string {
	names := map[string]string{}
	if links, err := nl.Links(); err == nil {
		for _, l := range links {
			names[strconv.Itoa(l.Index)] = l.Name
		}
	}
	re := regexp.MustCompile(`dev #(\d+)`)
	return func(s string) string {
		return re.ReplaceAllStringFunc(s, func(m string) string {
			if n, ok := names[strings.TrimPrefix(m, "dev #")]; ok {
				return "dev " + n
			}
			return m
		})
	}
}

// ownLease finds the node's lease: the subnet of its subnet.env, else the
// lease of its Node (kube) or of its public address.
func ownLease(leases []lease.Lease, subnetFile string, ext backend.External, nodeName string) (lease.Lease, bool) {
	if env, err := subnetfile.Read(subnetFile); err == nil {
		for _, l := range leases {
			if env.Subnet.IsValid() && l.Subnet == env.Subnet.Masked() || env.IPv6Subnet.IsValid() && l.IPv6Subnet == env.IPv6Subnet.Masked() {
				return l, true
			}
		}
	}
	i := slices.IndexFunc(leases, func(l lease.Lease) bool {
		return nodeName != "" && l.Node == nodeName ||
			ext.PublicIP.IsValid() && l.Attrs.PublicIP == ext.PublicIP ||
			ext.PublicIPv6.IsValid() && l.Attrs.PublicIPv6 == ext.PublicIPv6
	})
	if i < 0 {
		return lease.Lease{}, false
	}
	return leases[i], true
}

func rulesWanted(o config.Options) string {
	switch {
	case o.IPMasq && o.IPTablesForwardRules:
		return "masquerade, forward"
	case o.IPMasq:
		return "masquerade"
	case o.IPTablesForwardRules:
		return "forward"
	}
	return "none"
}

func prefixText(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// maxPeerTimes bounds the per-peer store requests for lease times.
const maxPeerTimes = 200

// leaseTimes asks the store when l was renewed and expires; nil where it
// cannot say (a store without expiry, a reservation).
func leaseTimes(ctx context.Context, st store.Store, l lease.Lease) (renewed, expires *time.Time) {
	er, ok := st.(store.ExpiryReader)
	if !ok {
		return nil, nil
	}
	r, e, err := er.Expiry(ctx, l)
	if err != nil || e.IsZero() {
		return nil, nil
	}
	r, e = r.UTC().Truncate(time.Second), e.UTC().Truncate(time.Second)
	return &r, &e
}

// askDaemon reads the local weftd's /readyz and /metrics, when its health
// server is on.
func askDaemon(ctx context.Context, cli *http.Client, o config.Options) DaemonRow {
	var row DaemonRow
	if o.HealthzPort <= 0 {
		return row
	}
	if cli == nil {
		cli = &http.Client{Timeout: 2 * time.Second}
	}
	host := o.HealthzIP
	if !host.IsValid() || host.IsUnspecified() {
		host = netip.MustParseAddr("127.0.0.1")
	}
	base := "http://" + net.JoinHostPort(host.String(), strconv.Itoa(o.HealthzPort))
	get := func(path string) (int, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return 0, nil, err
		}
		resp, err := cli.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		return resp.StatusCode, body, err
	}
	status, body, err := get("/readyz")
	if err != nil {
		return row
	}
	row.Answered, row.Ready = true, status == http.StatusOK
	if !row.Ready {
		row.Reason = strings.TrimRight(string(body), "\r\n")
	}
	if status, body, err = get("/metrics"); err == nil && status == http.StatusOK {
		if fams, err := metrics.ParseText(body); err == nil {
			row.Peers = fams.Value("weft_peers", nil)
			row.Repairs = fams.Value("weft_reconcile_repairs_total", nil)
			row.Errors = fams.Value("weft_reconcile_errors_total", nil)
		}
	}
	return row
}
