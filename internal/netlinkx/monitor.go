package netlinkx

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/reconcile"
)

// NoticeKind says what a Notice reports.
type NoticeKind int

// Notice kinds.
const (
	// RouteGone: a route was deleted.
	RouteGone NoticeKind = iota
	// NeighGone: a neighbour entry was deleted.
	NeighGone
	// FDBGone: an FDB entry was deleted.
	FDBGone
	// LinkGone: a link was deleted.
	LinkGone
	// Lost: the subscription lost messages (socket overflow) or failed;
	// the receiver must resynchronise from a full dump.
	Lost
)

// Notice is a deletion the kernel reported.
type Notice struct {
	Kind      NoticeKind
	Dst       netip.Prefix // RouteGone
	IP        netip.Addr   // NeighGone
	MAC       reconcile.MAC
	LinkIndex int
	LinkName  string // LinkGone
	Err       error  // Lost
}

// Monitor reports deletions of routes, neighbours, FDB entries and links in
// the handle's network namespace until ctx ends. Notices are sent in kernel
// order per object type; a full out channel blocks the reader goroutines, not
// the kernel (overflow shows up as a Lost notice).
func (h *Handle) Monitor(ctx context.Context, out chan<- Notice) error {
	routes := make(chan netlink.RouteUpdate, 256)
	neighs := make(chan netlink.NeighUpdate, 256)
	links := make(chan netlink.LinkUpdate, 64)
	done := ctx.Done()
	ns := h.ns
	lost := func(err error) {
		select {
		case out <- Notice{Kind: Lost, Err: err}:
		case <-done:
		}
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{
		Namespace: &ns, ErrorCallback: lost, ReceiveBufferSize: socketBuffer, ReceiveBufferForceSize: true}); err != nil {
		return fmt.Errorf("subscribe to routes: %w", err)
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{
		Namespace: &ns, ErrorCallback: lost, ReceiveBufferSize: socketBuffer, ReceiveBufferForceSize: true}); err != nil {
		return fmt.Errorf("subscribe to neighbours: %w", err)
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{
		Namespace: &ns, ErrorCallback: lost, ReceiveBufferSize: socketBuffer, ReceiveBufferForceSize: true}); err != nil {
		return fmt.Errorf("subscribe to links: %w", err)
	}
	go func() {
		for {
			var n Notice
			var ok bool
			select {
			case <-done:
				return
			case u, open := <-routes:
				if !open {
					routes = nil
					continue
				}
				n, ok = routeNotice(u)
			case u, open := <-neighs:
				if !open {
					neighs = nil
					continue
				}
				n, ok = neighNotice(u)
			case u, open := <-links:
				if !open {
					links = nil
					continue
				}
				if u.Header.Type == unix.RTM_DELLINK {
					n, ok = Notice{Kind: LinkGone, LinkIndex: int(u.Index), LinkName: u.Attrs().Name}, true
				}
			}
			if ok {
				select {
				case out <- n:
				case <-done:
					return
				}
			}
		}
	}()
	return nil
}

func routeNotice(u netlink.RouteUpdate) (Notice, bool) {
	if u.Type != unix.RTM_DELROUTE || u.Dst == nil || u.Table != unix.RT_TABLE_MAIN {
		return Notice{}, false
	}
	return Notice{Kind: RouteGone, Dst: PrefixFromIPNet(u.Dst), LinkIndex: u.LinkIndex}, true
}

func neighNotice(u netlink.NeighUpdate) (Notice, bool) {
	if u.Type != unix.RTM_DELNEIGH || len(u.HardwareAddr) != 6 && u.Family == unix.AF_BRIDGE {
		return Notice{}, false
	}
	if u.Family == unix.AF_BRIDGE {
		return Notice{Kind: FDBGone, MAC: reconcile.MAC(u.HardwareAddr), LinkIndex: u.LinkIndex}, true
	}
	return Notice{Kind: NeighGone, IP: AddrFromIP(u.IP), LinkIndex: u.LinkIndex}, true
}
