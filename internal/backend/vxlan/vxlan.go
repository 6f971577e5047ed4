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
	"net/netip"
	"strconv"

	"github.com/vishvananda/netlink"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/netlinkx"
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
	mac     reconcile.MAC
	index   int
	enabled bool
}

// VXLAN is the backend.
type VXLAN struct {
	d    backend.Deps
	opts Options
	fams []*family
	mtu  int
}

var _ backend.Backend = (*VXLAN)(nil)

// New is the backend.Factory.
func New(d backend.Deps) (backend.Backend, error) {
	opts, _, err := ParseOptions(d.Net)
	if err != nil {
		return nil, err
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

func (v *VXLAN) stableMAC(f *family) reconcile.MAC {
	if l, err := v.d.Netlink.Raw().LinkByName(f.name); err == nil && len(l.Attrs().HardwareAddr) == 6 {
		return reconcile.MAC(l.Attrs().HardwareAddr)
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("weft-vtep/%s/%d", f.local, v.opts.VNI)))
	var m reconcile.MAC
	copy(m[:], sum[:6])
	m[0] = m[0]&^0x01 | 0x02 // unicast, locally administered
	return m
}

// Observe finds each device as it is (backend.Observer): its index and MAC,
// changing nothing.
func (v *VXLAN) Observe(lease.Lease) ([]string, error) {
	var missing []string
	for _, f := range v.enabled() {
		l, err := v.d.Netlink.Raw().LinkByName(f.name)
		if err != nil {
			missing = append(missing, f.name)
			continue
		}
		f.index = l.Attrs().Index
		f.mac = v.stableMAC(f)
	}
	return missing, nil
}

// Ensure creates or repairs each device.
func (v *VXLAN) Ensure(ctx context.Context, own lease.Lease) error {
	for _, f := range v.enabled() {
		subnet := own.Subnet
		if f.v6 {
			subnet = own.IPv6Subnet
		}
		if err := v.ensureDevice(f, subnet); err != nil {
			return err
		}
	}
	return nil
}

func (v *VXLAN) ensureDevice(f *family, subnet netip.Prefix) error {
	h := v.d.Netlink.Raw()
	if f.mac == (reconcile.MAC{}) {
		f.mac = v.stableMAC(f)
	}
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: f.name, MTU: v.mtu, HardwareAddr: f.mac.HardwareAddr()},
		VxlanId:      v.opts.VNI,
		VtepDevIndex: v.d.External.Index,
		SrcAddr:      f.local.AsSlice(),
		Port:         v.opts.Port,
		Learning:     v.opts.Learning,
		GBP:          v.opts.GBP,
	}
	link, err := h.LinkByName(f.name)
	if err == nil && !compatible(link, want) {
		v.d.Logger.Info("recreating vxlan device with changed settings", "device", f.name)
		if err := h.LinkDel(link); err != nil {
			return fmt.Errorf("delete incompatible %s: %w", f.name, err)
		}
		err = netlink.LinkNotFoundError{}
	}
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		if err := h.LinkAdd(want); err != nil {
			return fmt.Errorf("create %s: %w", f.name, err)
		}
		v.d.Logger.Info("created vxlan device", "device", f.name, "vni", v.opts.VNI, "mac", f.mac.String(), "mtu", v.mtu)
		link, err = h.LinkByName(f.name)
	}
	if err != nil {
		return fmt.Errorf("find %s: %w", f.name, err)
	}
	return v.configure(link, f, subnet)
}

// compatible reports whether an existing device can be kept.
func compatible(l netlink.Link, want *netlink.Vxlan) bool {
	x, ok := l.(*netlink.Vxlan)
	return ok && x.VxlanId == want.VxlanId && x.VtepDevIndex == want.VtepDevIndex && x.Learning == want.Learning &&
		x.GBP == want.GBP && (x.Port == want.Port || want.Port == 0) && netlinkx.AddrFromIP(x.SrcAddr) == netlinkx.AddrFromIP(want.SrcAddr)
}

// configure sets the MAC, then the MTU, the single .0 address and the device
// up (netlinkx.ConfigureDevice).
func (v *VXLAN) configure(link netlink.Link, f *family, subnet netip.Prefix) error {
	h := v.d.Netlink.Raw()
	f.index = link.Attrs().Index
	if reconcile.MAC(link.Attrs().HardwareAddr) != f.mac {
		if err := h.LinkSetHardwareAddr(link, f.mac.HardwareAddr()); err != nil {
			return fmt.Errorf("set mac of %s: %w", f.name, err)
		}
	}
	return netlinkx.ConfigureDevice(h, link, v.mtu, netip.PrefixFrom(subnet.Masked().Addr(), subnet.Addr().BitLen()))
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
		st.Routes = append(st.Routes, reconcile.Route{Dst: subnet, Gw: public, LinkIndex: v.d.External.Index})
		return nil
	}
	var d Data
	if err := json.Unmarshal(raw, &d); err != nil {
		return fmt.Errorf("its vxlan BackendData is not valid: %w", err)
	}
	mac, err := reconcile.ParseMAC(d.VtepMAC)
	if err != nil {
		return fmt.Errorf("its VtepMAC: %w", err)
	}
	zero := subnet.Masked().Addr()
	st.FDB = append(st.FDB, reconcile.FDB{MAC: mac, Dst: public, LinkIndex: f.index})
	st.Neighs = append(st.Neighs, reconcile.Neigh{IP: zero, MAC: mac, LinkIndex: f.index})
	st.Routes = append(st.Routes, reconcile.Route{Dst: subnet, Gw: zero, LinkIndex: f.index, OnLink: true})
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

// Devices returns the devices' names.
func (v *VXLAN) Devices() []string {
	var out []string
	for _, f := range v.enabled() {
		out = append(out, f.name)
	}
	return out
}

// MTU is the external MTU minus the encapsulation, or the configured MTU.
func (v *VXLAN) MTU() int { return v.mtu }
