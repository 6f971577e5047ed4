// Package kerneltest is an in-memory kernel.Kernel for tests that run
// without root: links with their addresses, the main table's routes,
// neighbours and FDB entries, the notices a kernel sends when they change,
// and a log of every write.
package kerneltest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/weft-net/weft/internal/kernel"
)

var _ kernel.Kernel = (*Fake)(nil)

type neighKey struct {
	link int
	ip   netip.Addr
}

type fdbKey struct {
	link int
	mac  kernel.MAC
}

// Fake is an in-memory kernel. Its methods are safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	links    map[int]kernel.Link
	addrs    map[int][]netip.Prefix
	routes   map[netip.Prefix]kernel.Route
	neighs   map[neighKey]kernel.Neigh
	fdb      map[fdbKey]kernel.FDB
	defaults []int
	next     int
	calls    []string
	fail     map[string]error
	monitors []*monitor
}

// New returns a kernel with only a loopback link.
func New() *Fake {
	f := &Fake{links: map[int]kernel.Link{}, addrs: map[int][]netip.Prefix{}, routes: map[netip.Prefix]kernel.Route{},
		neighs: map[neighKey]kernel.Neigh{}, fdb: map[fdbKey]kernel.FDB{}, fail: map[string]error{}, next: 1}
	f.links[1] = kernel.Link{Index: 1, Name: "lo", MTU: 65536, Up: true}
	f.addrs[1] = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}
	return f
}

// AddExternal adds an up link without a kind (a NIC) with its addresses and,
// when defaultRoute, makes it the default route's link. It returns the index.
func (f *Fake) AddExternal(name string, mtu int, defaultRoute bool, addrs ...netip.Prefix) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	f.links[f.next] = kernel.Link{Index: f.next, Name: name, MTU: mtu, Up: true}
	f.addrs[f.next] = slices.Clone(addrs)
	if defaultRoute {
		f.defaults = append(f.defaults, f.next)
	}
	return f.next
}

// FailOn makes every write whose log line (see Calls) starts with prefix
// fail with err, until cleared with a nil err.
func (f *Fake) FailOn(prefix string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.fail, prefix)
		return
	}
	f.fail[prefix] = err
}

// Calls returns the log of writes so far ("add vxlan flannel.1", "mtu 1450
// flannel.1", "addr flannel.1 10.244.1.0/32", "route 10.244.2.0/24 via
// 10.244.2.0 dev #3 onlink", ...) and clears it.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// write logs a write and returns the error FailOn set for it.
func (f *Fake) write(format string, args ...any) error {
	line := fmt.Sprintf(format, args...)
	for p, err := range f.fail {
		if strings.HasPrefix(line, p) {
			return fmt.Errorf("%s: %w", line, err)
		}
	}
	f.calls = append(f.calls, line)
	return nil
}

func (f *Fake) name(index int) string {
	if l, ok := f.links[index]; ok {
		return l.Name
	}
	return fmt.Sprintf("#%d", index)
}

func (f *Fake) link(index int) (kernel.Link, error) {
	l, ok := f.links[index]
	if !ok {
		return kernel.Link{}, fmt.Errorf("link #%d: %w", index, kernel.ErrLinkNotFound)
	}
	return l, nil
}

// Links implements kernel.Kernel.
func (f *Fake) Links() ([]kernel.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Collect(maps.Values(f.links))
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	for i := range out {
		out[i] = cloneLink(out[i])
	}
	return out, nil
}

func cloneLink(l kernel.Link) kernel.Link {
	if l.VXLAN != nil {
		v := *l.VXLAN
		l.VXLAN = &v
	}
	if l.IPIP != nil {
		v := *l.IPIP
		l.IPIP = &v
	}
	return l
}

// LinkByName implements kernel.Kernel.
func (f *Fake) LinkByName(name string) (kernel.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.links {
		if l.Name == name {
			return cloneLink(l), nil
		}
	}
	return kernel.Link{}, fmt.Errorf("link %s: %w", name, kernel.ErrLinkNotFound)
}

// AddLink implements kernel.Kernel. A new link is down; its MTU is 1500
// unless the spec gives one.
func (f *Fake) AddLink(s kernel.LinkSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.links {
		if l.Name == s.Name {
			return fmt.Errorf("add %s: file exists", s.Name)
		}
	}
	if err := f.write("add %s %s", s.Kind, s.Name); err != nil {
		return err
	}
	return f.addLinkLocked(kernel.Link{Name: s.Name, Kind: s.Kind, MTU: s.MTU, MAC: s.MAC, VXLAN: s.VXLAN, IPIP: s.IPIP})
}

// MustLink returns the link of that name, failing t when there is none.
func (f *Fake) MustLink(t testing.TB, name string) kernel.Link {
	t.Helper()
	l, err := f.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// AddTUN adds a TUN link as a process opening /dev/net/tun would.
func (f *Fake) AddTUN(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.links {
		if l.Name == name {
			return fmt.Errorf("add %s: file exists", name)
		}
	}
	if err := f.write("add tun %s", name); err != nil {
		return err
	}
	return f.addLinkLocked(kernel.Link{Name: name, Kind: kernel.KindTUN})
}

func (f *Fake) addLinkLocked(l kernel.Link) error {
	f.next++
	l.Index = f.next
	if l.MTU == 0 {
		l.MTU = 1500
	}
	if l.MAC.IsZero() && l.Kind != kernel.KindTUN && l.Kind != kernel.KindIPIP && l.Kind != kernel.KindWireGuard {
		l.MAC = kernel.MAC{0x02, 0xfa, 0xce, 0, byte(l.Index >> 8), byte(l.Index)}
	}
	f.links[l.Index] = cloneLink(l)
	f.notify(kernel.Notice{Kind: kernel.LinkChanged, LinkIndex: l.Index, LinkName: l.Name})
	return nil
}

// DeleteLink implements kernel.Kernel: the link goes with its addresses,
// the routes through it, its neighbours and FDB entries.
func (f *Fake) DeleteLink(index int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[index]
	if !ok {
		return nil
	}
	if err := f.write("del %s", l.Name); err != nil {
		return err
	}
	delete(f.links, index)
	delete(f.addrs, index)
	maps.DeleteFunc(f.routes, func(_ netip.Prefix, r kernel.Route) bool { return r.LinkIndex == index })
	maps.DeleteFunc(f.neighs, func(k neighKey, _ kernel.Neigh) bool { return k.link == index })
	maps.DeleteFunc(f.fdb, func(k fdbKey, _ kernel.FDB) bool { return k.link == index })
	f.defaults = slices.DeleteFunc(f.defaults, func(i int) bool { return i == index })
	f.notify(kernel.Notice{Kind: kernel.LinkGone, LinkIndex: index, LinkName: l.Name})
	return nil
}

func (f *Fake) setLink(index int, what string, change func(*kernel.Link)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.link(index)
	if err != nil {
		return err
	}
	if err := f.write("%s %s", what, l.Name); err != nil {
		return err
	}
	change(&l)
	f.links[index] = l
	f.notify(kernel.Notice{Kind: kernel.LinkChanged, LinkIndex: index, LinkName: l.Name})
	return nil
}

// SetLinkMTU implements kernel.Kernel.
func (f *Fake) SetLinkMTU(index, mtu int) error {
	return f.setLink(index, fmt.Sprintf("mtu %d", mtu), func(l *kernel.Link) { l.MTU = mtu })
}

// SetLinkMAC implements kernel.Kernel.
func (f *Fake) SetLinkMAC(index int, mac kernel.MAC) error {
	return f.setLink(index, "mac "+mac.String(), func(l *kernel.Link) { l.MAC = mac })
}

// SetLinkUp implements kernel.Kernel.
func (f *Fake) SetLinkUp(index int) error {
	return f.setLink(index, "up", func(l *kernel.Link) { l.Up = true })
}

// SetLinkDown sets a link down, as an operator's `ip link set down` would.
func (f *Fake) SetLinkDown(index int) error {
	return f.setLink(index, "down", func(l *kernel.Link) { l.Up = false })
}

// Addrs implements kernel.Kernel.
func (f *Fake) Addrs(index int) ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.link(index); err != nil {
		return nil, err
	}
	return slices.Clone(f.addrs[index]), nil
}

// AddAddr implements kernel.Kernel.
func (f *Fake) AddAddr(index int, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.link(index); err != nil {
		return err
	}
	if err := f.write("addr %s %s", f.name(index), p); err != nil {
		return err
	}
	if !slices.Contains(f.addrs[index], p) {
		f.addrs[index] = append(f.addrs[index], p)
		f.notify(kernel.Notice{Kind: kernel.AddrChanged, LinkIndex: index, Dst: p})
	}
	return nil
}

// DeleteAddr implements kernel.Kernel.
func (f *Fake) DeleteAddr(index int, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.addrs[index], p) {
		return nil
	}
	if err := f.write("deladdr %s %s", f.name(index), p); err != nil {
		return err
	}
	f.addrs[index] = slices.DeleteFunc(f.addrs[index], func(q netip.Prefix) bool { return q == p })
	f.notify(kernel.Notice{Kind: kernel.AddrChanged, LinkIndex: index, Dst: p})
	return nil
}

// ListRoutes implements kernel.Kernel.
func (f *Fake) ListRoutes(networks []netip.Prefix) ([]kernel.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []kernel.Route
	for _, r := range f.routes {
		for _, n := range networks {
			if r.Dst.Bits() >= n.Bits() && n.Contains(r.Dst.Addr()) {
				out = append(out, r)
				break
			}
		}
	}
	return out, nil
}

// ReplaceRoute implements kernel.Kernel. A route through a missing link
// fails; whether a gateway is reachable is not modelled.
func (f *Fake) ReplaceRoute(r kernel.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !r.Blackhole {
		if _, err := f.link(r.LinkIndex); err != nil {
			return fmt.Errorf("route %s: %w", r, err)
		}
	}
	if err := f.write("route %s", r); err != nil {
		return err
	}
	r.Dst = r.Dst.Masked()
	f.routes[r.Dst] = r
	return nil
}

// DeleteRoute implements kernel.Kernel.
func (f *Fake) DeleteRoute(r kernel.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	got, ok := f.routes[r.Dst.Masked()]
	if !ok || got.Blackhole != r.Blackhole {
		return nil
	}
	if err := f.write("delroute %s", got); err != nil {
		return err
	}
	delete(f.routes, r.Dst.Masked())
	f.notify(kernel.Notice{Kind: kernel.RouteGone, Dst: got.Dst, LinkIndex: got.LinkIndex})
	return nil
}

// DefaultRouteLinks implements kernel.Kernel.
func (f *Fake) DefaultRouteLinks() ([]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.defaults), nil
}

// RouteTo implements kernel.Kernel: the link with an address whose subnet
// holds dst, else the first default route's.
func (f *Fake) RouteTo(dst netip.Addr) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, as := range f.addrs {
		for _, a := range as {
			if a.Masked().Contains(dst) {
				return i, nil
			}
		}
	}
	if len(f.defaults) > 0 {
		return f.defaults[0], nil
	}
	return 0, fmt.Errorf("route to %s: network is unreachable", dst)
}

// ListNeighs implements kernel.Kernel.
func (f *Fake) ListNeighs(link int) ([]kernel.Neigh, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []kernel.Neigh
	for k, n := range f.neighs {
		if k.link == link {
			out = append(out, n)
		}
	}
	return out, nil
}

// SetNeigh implements kernel.Kernel.
func (f *Fake) SetNeigh(n kernel.Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.link(n.LinkIndex); err != nil {
		return fmt.Errorf("neigh %s: %w", n, err)
	}
	if err := f.write("neigh %s", n); err != nil {
		return err
	}
	f.neighs[neighKey{n.LinkIndex, n.IP}] = n
	return nil
}

// DeleteNeigh implements kernel.Kernel.
func (f *Fake) DeleteNeigh(n kernel.Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := neighKey{n.LinkIndex, n.IP}
	if _, ok := f.neighs[k]; !ok {
		return nil
	}
	if err := f.write("delneigh %s", n); err != nil {
		return err
	}
	delete(f.neighs, k)
	f.notify(kernel.Notice{Kind: kernel.NeighGone, IP: n.IP, LinkIndex: n.LinkIndex})
	return nil
}

// ListFDB implements kernel.Kernel.
func (f *Fake) ListFDB(link int) ([]kernel.FDB, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []kernel.FDB
	for k, e := range f.fdb {
		if k.link == link {
			out = append(out, e)
		}
	}
	return out, nil
}

// SetFDB implements kernel.Kernel.
func (f *Fake) SetFDB(e kernel.FDB) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.link(e.LinkIndex); err != nil {
		return fmt.Errorf("fdb %s: %w", e, err)
	}
	if err := f.write("fdb %s", e); err != nil {
		return err
	}
	f.fdb[fdbKey{e.LinkIndex, e.MAC}] = e
	return nil
}

// DeleteFDB implements kernel.Kernel.
func (f *Fake) DeleteFDB(e kernel.FDB) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := fdbKey{e.LinkIndex, e.MAC}
	if _, ok := f.fdb[k]; !ok {
		return nil
	}
	if err := f.write("delfdb %s", e); err != nil {
		return err
	}
	delete(f.fdb, k)
	f.notify(kernel.Notice{Kind: kernel.FDBGone, MAC: e.MAC, LinkIndex: e.LinkIndex})
	return nil
}

// Dump is the kernel's routes, neighbours and FDB entries, one per line,
// sorted, with link names: "route 10.244.2.0/24 via 10.244.2.0 dev
// flannel.1 onlink", "neigh 10.244.2.0 lladdr 0a:... dev flannel.1", "fdb
// 0a:... dst 192.168.1.2 dev flannel.1".
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for _, r := range f.routes {
		s := "route " + r.String()
		s = strings.Replace(s, fmt.Sprintf("dev #%d", r.LinkIndex), "dev "+f.name(r.LinkIndex), 1)
		lines = append(lines, s)
	}
	for _, n := range f.neighs {
		lines = append(lines, fmt.Sprintf("neigh %s lladdr %s dev %s", n.IP, n.MAC, f.name(n.LinkIndex)))
	}
	for _, e := range f.fdb {
		lines = append(lines, fmt.Sprintf("fdb %s dst %s dev %s", e.MAC, e.Dst, f.name(e.LinkIndex)))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// Monitor implements kernel.Kernel: every change made through the fake
// (by the code under test or by the test, as "someone else") is sent, in
// order, without ever blocking the writer.
func (f *Fake) Monitor(ctx context.Context, out chan<- kernel.Notice, wg *sync.WaitGroup) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	m := &monitor{wake: make(chan struct{}, 1)}
	f.mu.Lock()
	f.monitors = append(f.monitors, m)
	f.mu.Unlock()
	wg.Go(func() {
		defer func() {
			f.mu.Lock()
			f.monitors = slices.DeleteFunc(f.monitors, func(x *monitor) bool { return x == m })
			f.mu.Unlock()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-m.wake:
			}
			for _, n := range m.take() {
				select {
				case out <- n:
				case <-ctx.Done():
					return
				}
			}
		}
	})
	return nil
}

// Overflow sends every monitor a Lost notice, as a kernel whose socket
// overran would.
func (f *Fake) Overflow() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notify(kernel.Notice{Kind: kernel.Lost, Err: errors.New("no buffer space available (fake)")})
}

func (f *Fake) notify(n kernel.Notice) {
	for _, m := range f.monitors {
		m.put(n)
	}
}

// monitor queues notices for one subscriber without bound.
type monitor struct {
	mu    sync.Mutex
	queue []kernel.Notice
	wake  chan struct{}
}

func (m *monitor) put(n kernel.Notice) {
	m.mu.Lock()
	m.queue = append(m.queue, n)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *monitor) take() []kernel.Notice {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.queue
	m.queue = nil
	return q
}
