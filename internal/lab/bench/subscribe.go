//go:build linux

package bench

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/netlinkx"
)

// routeEvent is a route added or deleted, stamped when it was read.
type routeEvent struct {
	dst netip.Prefix
	typ uint16
	at  time.Time
}

// routeSub is a netlink route subscription in a lab namespace.
type routeSub struct {
	events chan routeEvent
}

// subscribeRoutes subscribes to the route changes of ns until ctx ends.
func subscribeRoutes(ctx context.Context, ns string) (*routeSub, error) {
	nsh, err := netns.GetFromPath(lab.NSPath(ns))
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer nsh.Close() // the subscription's socket keeps the namespace
	ch := make(chan netlink.RouteUpdate, 4096)
	if err := netlink.RouteSubscribeWithOptions(ch, ctx.Done(), netlink.RouteSubscribeOptions{
		Namespace: &nsh, ReceiveBufferSize: 8 << 20, ReceiveBufferForceSize: true}); err != nil {
		return nil, fmt.Errorf("subscribe to routes in %s: %w", ns, err)
	}
	s := &routeSub{events: make(chan routeEvent, 4096)}
	go func() {
		for u := range ch {
			if u.Dst == nil {
				continue
			}
			select {
			case s.events <- routeEvent{dst: netlinkx.PrefixFromIPNet(u.Dst), typ: u.Type, at: time.Now()}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return s, nil
}

// wait returns when the event for dst of type typ was read; other events
// are dropped.
func (s *routeSub) wait(ctx context.Context, dst netip.Prefix, typ uint16) (time.Time, error) {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-s.events:
			if e.dst == dst && e.typ == typ {
				return e.at, nil
			}
		case <-timeout:
			return time.Time{}, fmt.Errorf("no route event %d for %s within 10 s", typ, dst)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}
