//go:build linux

// Package vxlan is the vxlan backend (seed 000 shows its kernel state on real
// nodes). Per address family it owns a device flannel.<VNI> (flannel-v6.<VNI>)
// with the own subnet's .0 address, a stable locally administered MAC,
// nolearning, local = the public address, dev = the external interface. Per
// peer it wants a permanent neighbour <subnet>.0 -> VTEP MAC, an FDB entry
// VTEP MAC -> peer public address, and a route <subnet> via <subnet>.0 onlink;
// with DirectRouting a peer on a directly connected subnet gets a plain route
// via its public address instead.
//
// The VTEP MAC survives restarts and device recreation: an existing device's
// MAC is kept, and a new device gets a MAC derived from the node's public
// address and the VNI, so it is the same every time without any state.
package vxlan

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/reconcile"
)

// Overhead is what VXLAN encapsulation over IPv4 costs: 14 (inner Ethernet) +
// 8 (VXLAN) + 8 (UDP) + 20 (IPv4).
const Overhead = 50

// overheadV6 is the cost over an IPv6 underlay.
const overheadV6 = 70

// Data is the lease's BackendData: {"VNI":1,"VtepMAC":"22:56:a3:21:8b:8d"}.
type Data struct {
	VNI     int    `json:"VNI"`
	VtepMAC string `json:"VtepMAC"`
}

// family is one address family's device.
type family struct {
	v6      bool
	name    string
	local   netip.Addr
	mac     kernel.MAC
	index   int
	enabled bool
}

// VXLAN is the backend.
type VXLAN struct {
	d    backend.Deps
	opts Options
	fams []*family
	mtu  int
	own  lease.Lease // of the last Ensure or Observe
}

var _ backend.Backend = (*VXLAN)(nil)

// New is the backend.Factory.
func New(d backend.Deps) (backend.Backend, error) {
	opts, _, err := ParseOptions(d.Net)
	if err != nil {
		return nil, err
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	v := &VXLAN{d: d, opts: opts}
	vni := strconv.Itoa(v.opts.VNI)
	v.fams = []*family{
		{name: "flannel." + vni, local: d.External.PublicIP, enabled: d.Net.IPv4.Enabled},
		{v6: true, name: "flannel-v6." + vni, local: d.External.PublicIPv6, enabled: d.Net.IPv6.Enabled},
	}
	for _, f := range v.fams {
		if f.enabled && !f.local.IsValid() {
			fam := "IPv4"
			if f.v6 {
				fam = "IPv6"
			}
			return nil, fmt.Errorf("vxlan over %s needs a public %s address on %s (or --public-ip/--public-ipv6)", fam, fam, d.External.Name)
		}
	}
	// One MTU for every device and for the pods (FLANNEL_MTU): the external
	// MTU minus the larger encapsulation in use, 70 bytes when a device
	// runs over IPv6 (whose kernel limit would refuse more), else 50.
	v.mtu = v.opts.MTU
	if v.mtu == 0 {
		over := Overhead
		if d.Net.IPv6.Enabled {
			over = overheadV6
		}
		v.mtu = d.External.MTU - over
	}
	return v, nil
}

func (v *VXLAN) enabled() []*family {
	var out []*family
	for _, f := range v.fams {
		if f.enabled {
			out = append(out, f)
		}
	}
	return out
}

// Attrs adopts an existing device's MAC (or derives one) and publishes it.
func (v *VXLAN) Attrs(context.Context) (lease.Attrs, error) {
	a := lease.Attrs{PublicIP: v.d.External.PublicIP, PublicIPv6: v.d.External.PublicIPv6, BackendType: Name}
	for _, f := range v.enabled() {
		f.mac = v.stableMAC(f)
		data, err := json.Marshal(Data{VNI: v.opts.VNI, VtepMAC: f.mac.String()})
		if err != nil {
			return lease.Attrs{}, fmt.Errorf("encode vxlan data: %w", err)
		}
		if f.v6 {
			a.BackendV6Data = data
		} else {
			a.BackendData = data
		}
	}
	if !v.d.Net.IPv4.Enabled {
		a.PublicIP = netip.Addr{}
	}
	return a, nil
}

func (v *VXLAN) stableMAC(f *family) kernel.MAC {
	if l, err := v.d.Kernel.LinkByName(f.name); err == nil && !l.MAC.IsZero() {
		return l.MAC
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("weft-vtep/%s/%d", f.local, v.opts.VNI)))
	var m kernel.MAC
	copy(m[:], sum[:6])
	m[0] = m[0]&^0x01 | 0x02 // unicast, locally administered
	return m
}

// Observe finds each device as it is (backend.Observer): its index and MAC,
// changing nothing.
func (v *VXLAN) Observe(own lease.Lease) ([]string, error) {
	v.own = own
	var missing []string
	for _, f := range v.enabled() {
		l, err := v.d.Kernel.LinkByName(f.name)
		if err != nil {
			missing = append(missing, f.name)
			continue
		}
		f.index = l.Index
		f.mac = v.stableMAC(f)
	}
	return missing, nil
}

// Ensure creates each device, or replaces one whose settings differ.
func (v *VXLAN) Ensure(_ context.Context, own lease.Lease) error {
	v.own = own
	for _, f := range v.enabled() {
		if err := v.ensureDevice(f); err != nil {
			return err
		}
	}
	return nil
}

func (v *VXLAN) spec(f *family) kernel.LinkSpec {
	return kernel.LinkSpec{Name: f.name, Kind: kernel.KindVXLAN, MTU: v.mtu, MAC: f.mac,
		VXLAN: &kernel.VXLAN{VNI: v.opts.VNI, Dev: v.d.External.Index, Local: f.local, Port: v.opts.Port,
			Learning: v.opts.Learning, GBP: v.opts.GBP}}
}

func (v *VXLAN) ensureDevice(f *family) error {
	k := v.d.Kernel
	if f.mac.IsZero() {
		f.mac = v.stableMAC(f)
	}
	want := v.spec(f)
	link, err := k.LinkByName(f.name)
	if err == nil && !compatible(link, *want.VXLAN) {
		v.d.Logger.Info("recreating vxlan device with changed settings", "device", f.name)
		if err := k.DeleteLink(link.Index); err != nil {
			return fmt.Errorf("delete incompatible %s: %w", f.name, err)
		}
		err = kernel.ErrLinkNotFound
	}
	if errors.Is(err, kernel.ErrLinkNotFound) {
		if err := k.AddLink(want); err != nil {
			return fmt.Errorf("create %s: %w", f.name, err)
		}
		v.d.Logger.Info("created vxlan device", "device", f.name, "vni", v.opts.VNI, "mac", f.mac.String(), "mtu", v.mtu)
		link, err = k.LinkByName(f.name)
	}
	if err != nil {
		return fmt.Errorf("find %s: %w", f.name, err)
	}
	f.index = link.Index
	return nil
}

// compatible reports whether an existing device can be kept.
func compatible(l kernel.Link, want kernel.VXLAN) bool {
	x := l.VXLAN
	return x != nil && x.VNI == want.VNI && x.Dev == want.Dev && x.Learning == want.Learning &&
		x.GBP == want.GBP && (x.Port == want.Port || want.Port == 0) && x.Local == want.Local
}

// Peer computes the neighbour, FDB entry and route of one peer.
func (v *VXLAN) Peer(own lease.Lease, p lease.Lease) (reconcile.Objects, error) {
	var st reconcile.Objects
	if err := backend.PeerCheck(own, p, Name); err != nil {
		return st, err
	}
	for _, f := range v.enabled() {
		if err := v.addPeer(&st, f, p); err != nil {
			return reconcile.Objects{}, err
		}
	}
	return st, nil
}

func (v *VXLAN) addPeer(st *reconcile.Objects, f *family, p lease.Lease) error {
	subnet, public, raw := p.Subnet, p.Attrs.PublicIP, p.Attrs.BackendData
	if f.v6 {
		subnet, public, raw = p.IPv6Subnet, p.Attrs.PublicIPv6, p.Attrs.BackendV6Data
	}
	if !subnet.IsValid() {
		return nil
	}
	if !public.IsValid() {
		return fmt.Errorf("it has no public address for %s", subnet)
	}
	if v.opts.DirectRouting && v.d.External.DirectlyConnected(public) {
		st.Routes = append(st.Routes, kernel.Route{Dst: subnet, Gw: public, LinkIndex: v.d.External.Index})
		return nil
	}
	var d Data
	if err := json.Unmarshal(raw, &d); err != nil {
		return fmt.Errorf("its vxlan BackendData is not valid: %w", err)
	}
	mac, err := kernel.ParseMAC(d.VtepMAC)
	if err != nil {
		return fmt.Errorf("its VtepMAC: %w", err)
	}
	zero := subnet.Masked().Addr()
	st.FDB = append(st.FDB, kernel.FDB{MAC: mac, Dst: public, LinkIndex: f.index})
	st.Neighs = append(st.Neighs, kernel.Neigh{IP: zero, MAC: mac, LinkIndex: f.index})
	st.Routes = append(st.Routes, kernel.Route{Dst: subnet, Gw: zero, LinkIndex: f.index, OnLink: true})
	return nil
}

// Links returns the devices' indices.
func (v *VXLAN) Links() []int {
	var out []int
	for _, f := range v.enabled() {
		if f.index > 0 {
			out = append(out, f.index)
		}
	}
	return out
}

// Devices returns each device with its MAC, the MTU and the own subnet's
// .0 address (/32, /128).
func (v *VXLAN) Devices() []kernel.Device {
	var out []kernel.Device
	for _, f := range v.enabled() {
		subnet := v.own.Subnet
		if f.v6 {
			subnet = v.own.IPv6Subnet
		}
		d := kernel.Device{Name: f.name, MTU: v.mtu, MAC: f.mac}
		if subnet.IsValid() {
			d.Addrs = []netip.Prefix{netip.PrefixFrom(subnet.Masked().Addr(), subnet.Addr().BitLen())}
		}
		out = append(out, d)
	}
	return out
}

// MTU is the external MTU minus the encapsulation, or the configured MTU.
func (v *VXLAN) MTU() int { return v.mtu }
