//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"time"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/store"
)

// linkInfo is a link with its addresses.
type linkInfo struct {
	link  kernel.Link
	addrs []netip.Prefix
}

// givenAddrs are public addresses given for this node outside its flags:
// by the store (the kube store's node-public-ip annotations, see
// publicAddrSource) or, for a warm start, by the peer snapshot. Each valid
// one stands in for --public-ip / --public-ipv6, as in flanneld.
type givenAddrs struct {
	v4, v6 netip.Addr
	from   [2]string // what gave each, for the log: "node-public-ip", "the peer snapshot"
}

// choice says how chooseExternal chose, for the log.
type choice struct {
	how        string     // what picked the interface: "--iface eth0", "node-public-ip 192.0.2.1", "default route"
	from       [2]string  // what gave the IPv4 and the IPv6 public address
	notOnIface netip.Addr // the given address that should have picked the interface but is on none
}

// familyAddr is the public address asked for in one family, if any.
type familyAddr struct {
	on, v6      bool
	addr        netip.Addr
	from        string // "--public-ip", "node-public-ip", ...
	flag, label string
}

// chooseExternal picks the interface for inter-node traffic and the public
// addresses as flanneld v0.28 does (main.go, ipmatch.LookupExtIface):
//
//   - The public address of a family is the one given (node-public-ip),
//     else --public-ip / --public-ipv6, else the interface's first global
//     one.
//   - The interface is --iface (name or address, first match), else
//     --iface-regex (name or address), else --iface-can-reach; without any
//     of them, the interface that holds the public address asked for
//     (IPv4's, else IPv6's), else the default route's. flanneld exits when
//     no interface holds the address it looks for; weft goes on to IPv6's,
//     then takes the default route's and says so in the choice
//     (notOnIface), so that an address behind a NAT given with --public-ip
//     keeps working as before. When IPv4's and IPv6's are both asked for
//     and held by two different interfaces, it is an error, as in flanneld.
func chooseExternal(h kernel.Kernel, o *config.Options, nc *config.NetConf, given givenAddrs) (backend.External, choice, error) {
	links, err := allLinks(h)
	if err != nil {
		return backend.External{}, choice{}, err
	}
	fams := [2]familyAddr{
		{on: nc.IPv4.Enabled, addr: o.PublicIP, from: "--public-ip", flag: "--public-ip", label: "IPv4"},
		{on: nc.IPv6.Enabled, v6: true, addr: o.PublicIPv6, from: "--public-ipv6", flag: "--public-ipv6", label: "global IPv6"},
	}
	for i, g := range [2]netip.Addr{given.v4, given.v6} {
		if g.IsValid() {
			fams[i].addr, fams[i].from = g, given.from[i]
		}
	}
	li, ch, err := pickLink(h, links, o, fams)
	if err != nil {
		return backend.External{}, choice{}, err
	}
	ext := backend.External{Name: li.link.Name, Index: li.link.Index, MTU: li.link.MTU, Addrs: li.addrs}
	for i, f := range fams {
		if !f.on {
			continue
		}
		dst := &ext.PublicIP
		if f.v6 {
			dst = &ext.PublicIPv6
		}
		if *dst, ch.from[i] = f.addr, f.from; !dst.IsValid() {
			*dst, ch.from[i] = firstGlobal(li.addrs, f.v6), "interface "+ext.Name
		}
		if !dst.IsValid() {
			return backend.External{}, choice{}, fmt.Errorf("interface %s (%s) has no %s address; give %s or choose another with --iface",
				ext.Name, ch.how, f.label, f.flag)
		}
	}
	if ext.MTU <= 0 {
		return backend.External{}, choice{}, fmt.Errorf("interface %s reports MTU %d", ext.Name, ext.MTU)
	}
	return ext, ch, nil
}

// publicAddrSource is a store that can hold public addresses given for this
// node (the kube store: the own Node's node-public-ip and node-public-ipv6
// annotations, which flanneld reads at start). The daemon asks for them
// before it chooses the external interface.
type publicAddrSource interface {
	// PublicAddrs returns them for the families cfg enables, the zero Addr
	// where none is given. A malformed value is an error naming it; an
	// error wrapping store.ErrNotYet means the node is not known yet.
	PublicAddrs(ctx context.Context, cfg *config.NetConf) (v4, v6 netip.Addr, err error)
}

// external chooses the external interface and public addresses for dm.nc
// with the addresses the store gives (chooseExternal) and logs the choice.
// A warm start whose interface or addresses differ is dropped; it reports
// whether the warm start stands.
func (dm *Daemon) external(ctx context.Context, warm bool) (bool, error) {
	given, err := dm.givenAddrs(ctx)
	if err != nil {
		return false, err
	}
	ext, ch, err := chooseExternal(dm.nl, &dm.o, dm.nc, given)
	if err != nil {
		return false, fmt.Errorf("choose the external interface: %w", err)
	}
	if warm && (ext.Index != dm.ext.Index || ext.PublicIP != dm.ext.PublicIP || ext.PublicIPv6 != dm.ext.PublicIPv6) {
		dm.log.Info("the external interface or public address is not the peer snapshot's; starting the backend afresh",
			"snapshot-public-ip", dm.ext.PublicIP, "public-ip", ext.PublicIP, "snapshot-public-ipv6", dm.ext.PublicIPv6,
			"public-ipv6", ext.PublicIPv6)
		dm.dropWarm()
		warm = false
	}
	dm.ext = ext
	if a := ch.notOnIface; a.IsValid() {
		from := ch.from[0]
		if a.Is6() {
			from = ch.from[1]
		}
		dm.log.Warn("the public address is on no interface of this node; using the default route's interface "+
			"(flanneld exits here)", "address", a, "from", from, "interface", ext.Name)
	}
	args := []any{"name", ext.Name, "chosen-by", ch.how, "mtu", ext.MTU}
	for i, a := range []netip.Addr{ext.PublicIP, ext.PublicIPv6} {
		if a.IsValid() {
			args = append(args, [2]string{"public-ip", "public-ipv6"}[i], a, [2]string{"public-ip-from", "public-ipv6-from"}[i], ch.from[i])
		}
	}
	dm.log.Info("external interface", args...)
	return warm, nil
}

// givenAddrs asks a store that can hold public addresses given for this
// node (publicAddrSource) for them, retrying until it answers: while the
// API server is unreachable, the Node is not registered yet or a value is
// malformed, /readyz says why, and a corrected value is taken without a
// restart. Other stores give none.
func (dm *Daemon) givenAddrs(ctx context.Context) (givenAddrs, error) {
	src, ok := dm.d.Store.(publicAddrSource)
	if !ok {
		return givenAddrs{}, nil
	}
	const notYetRetry = 500 * time.Millisecond
	wait, last := 200*time.Millisecond, ""
	for {
		v4, v6, err := src.PublicAddrs(ctx, dm.nc)
		if err == nil {
			return givenAddrs{v4: v4, v6: v6, from: [2]string{"node-public-ip", "node-public-ipv6"}}, nil
		}
		if ctx.Err() != nil {
			return givenAddrs{}, ctx.Err()
		}
		dm.health.setReason("public address given for this node: " + err.Error())
		pause := wait + rand.N(wait/2)
		if errors.Is(err, store.ErrNotYet) {
			pause = notYetRetry
		} else {
			wait = min(2*wait, 10*time.Second)
		}
		if err.Error() != last {
			dm.log.Warn("read the public address given for this node; retrying", "err", err, "retry-in", pause)
		}
		last = err.Error()
		select {
		case <-ctx.Done():
			return givenAddrs{}, ctx.Err()
		case <-time.After(pause):
		}
	}
}

func allLinks(h kernel.Kernel) ([]linkInfo, error) {
	links, err := h.Links()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := make([]linkInfo, 0, len(links))
	for _, l := range links {
		addrs, err := h.Addrs(l.Index)
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", l.Name, err)
		}
		out = append(out, linkInfo{link: l, addrs: addrs})
	}
	return out, nil
}

func pickLink(h kernel.Kernel, links []linkInfo, o *config.Options, fams [2]familyAddr) (linkInfo, choice, error) {
	if len(o.Iface) > 0 {
		for _, want := range o.Iface {
			for _, li := range links {
				if li.link.Name == want || hasAddr(li, want) {
					return li, choice{how: "--iface " + want}, nil
				}
			}
		}
		return linkInfo{}, choice{}, fmt.Errorf("no interface matches --iface %q", o.Iface)
	}
	if len(o.IfaceRegex) > 0 {
		for _, expr := range o.IfaceRegex {
			re, err := regexp.Compile(expr)
			if err != nil {
				return linkInfo{}, choice{}, fmt.Errorf("--iface-regex %q: %w", expr, err)
			}
			for _, li := range links {
				if re.MatchString(li.link.Name) || anyAddrMatches(li, re) {
					return li, choice{how: "--iface-regex " + expr}, nil
				}
			}
		}
		return linkInfo{}, choice{}, fmt.Errorf("no interface matches --iface-regex %q", o.IfaceRegex)
	}
	if o.IfaceCanReach.IsValid() {
		idx, err := h.RouteTo(o.IfaceCanReach)
		if err != nil {
			return linkInfo{}, choice{}, fmt.Errorf("--iface-can-reach %s: %w", o.IfaceCanReach, err)
		}
		if li, ok := byIndex(links, idx); ok {
			return li, choice{how: "--iface-can-reach"}, nil
		}
	}
	li, ch, ok, err := byPublicAddr(links, fams)
	if ok || err != nil {
		return li, ch, err
	}
	idx, err := h.DefaultRouteLinks()
	if err != nil {
		return linkInfo{}, choice{}, fmt.Errorf("find the default route: %w", err)
	}
	for _, i := range idx {
		if li, ok := byIndex(links, i); ok {
			ch.how = "default route"
			return li, ch, nil
		}
	}
	return linkInfo{}, choice{}, errors.New("no default route to pick the external interface from; give --iface")
}

// byPublicAddr finds the interface that holds the public address asked for
// (IPv4's, else IPv6's), as flanneld does when no --iface option is given.
// It reports false when none is asked for or no interface holds one (then
// ch.notOnIface names the first asked for). An IPv6 address asked for too
// must not be on another interface than the IPv4 one.
func byPublicAddr(links []linkInfo, fams [2]familyAddr) (linkInfo, choice, bool, error) {
	var ch choice
	for i, f := range fams {
		if !f.on || !f.addr.IsValid() {
			continue
		}
		li, ok := holding(links, f.addr)
		if !ok {
			if !ch.notOnIface.IsValid() {
				ch.notOnIface = f.addr
			}
			continue
		}
		if other := fams[1]; i == 0 && other.on && other.addr.IsValid() {
			if li6, ok := holding(links, other.addr); ok && li6.link.Index != li.link.Index {
				return linkInfo{}, choice{}, false, fmt.Errorf("the IPv4 public address %s (%s) is on %s but the IPv6 one %s (%s) "+
					"is on %s: both must be on one interface; give --iface", f.addr, f.from, li.link.Name, other.addr, other.from,
					li6.link.Name)
			}
		}
		return li, choice{how: fmt.Sprintf("%s %s", f.from, f.addr)}, true, nil
	}
	return linkInfo{}, ch, false, nil
}

// holding returns the link that has address a.
func holding(links []linkInfo, a netip.Addr) (linkInfo, bool) {
	for _, li := range links {
		for _, p := range li.addrs {
			if p.Addr() == a {
				return li, true
			}
		}
	}
	return linkInfo{}, false
}

func byIndex(links []linkInfo, idx int) (linkInfo, bool) {
	for _, li := range links {
		if li.link.Index == idx {
			return li, true
		}
	}
	return linkInfo{}, false
}

func hasAddr(li linkInfo, s string) bool {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return false
	}
	for _, p := range li.addrs {
		if p.Addr() == a.Unmap() {
			return true
		}
	}
	return false
}

func anyAddrMatches(li linkInfo, re *regexp.Regexp) bool {
	for _, p := range li.addrs {
		if re.MatchString(p.Addr().String()) {
			return true
		}
	}
	return false
}

func firstGlobal(addrs []netip.Prefix, v6 bool) netip.Addr {
	for _, p := range addrs {
		a := p.Addr()
		if a.Is6() == v6 && a.IsGlobalUnicast() {
			return a
		}
	}
	return netip.Addr{}
}
