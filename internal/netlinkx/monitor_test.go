//go:build linux

package netlinkx

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/kernel"
)

// recv waits for the next notice.
func recv(t *testing.T, out <-chan kernel.Notice, what string) kernel.Notice {
	t.Helper()
	select {
	case n := <-out:
		return n
	case <-time.After(10 * time.Second):
		t.Fatalf("no notice after 10 s, waiting for %s", what)
		return kernel.Notice{}
	}
}

func mustWrite(t *testing.T, h *Handle, ws []kernel.Write) {
	t.Helper()
	for i, err := range h.WriteBatch(ws) {
		if err != nil {
			t.Fatalf("%s: %v", ws[i], err)
		}
	}
}

// The kernel hands the monitor deletions only: 2,000 peers written (6,000
// additions) reach it as nothing, and deleting one peer's FDB entry,
// neighbour and route reaches it as exactly those three notices.
func TestMonitorSeesOnlyDeletions(t *testing.T) {
	h, link := testNS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan kernel.Notice, 16)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if err := h.Monitor(ctx, out, &wg); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, h, peerWrites(2000, link, true))
	mustWrite(t, h, peerWrites(1, link, false)) // peer 0: 10.1.0.0/24
	got := map[kernel.NoticeKind]kernel.Notice{}
	for range 3 {
		n := recv(t, out, "peer 0's three deletions")
		if _, dup := got[n.Kind]; dup {
			t.Fatalf("a second notice of kind %d: %+v (additions let through?)", n.Kind, n)
		}
		got[n.Kind] = n
	}
	if r := got[kernel.RouteGone]; r.Dst != netip.MustParsePrefix("10.1.0.0/24") || r.LinkIndex != link {
		t.Errorf("route notice %+v", r)
	}
	if n := got[kernel.NeighGone]; n.IP != netip.MustParseAddr("10.1.0.0") || n.LinkIndex != link {
		t.Errorf("neighbour notice %+v", n)
	}
	if f := got[kernel.FDBGone]; f.MAC != (kernel.MAC{0x0a, 0, 0, 0, 0, 0}) || f.LinkIndex != link {
		t.Errorf("fdb notice %+v", f)
	}
	select {
	case n := <-out:
		t.Errorf("an unexpected notice: %+v", n)
	case <-time.After(100 * time.Millisecond):
	}
}

// A burst of deletions larger than the socket's buffer while the receiver
// is not reading overflows it: the monitor reports kernel.Lost and goes on, so a
// route deleted afterwards is still reported (the netlink library's own
// subscription ends at the first error, leaving deletions to the 30 s
// resync).
func TestMonitorSurvivesOverflow(t *testing.T) {
	h, link := testNS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan kernel.Notice) // not read until the burst is over
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if err := h.Monitor(ctx, out, &wg); err != nil {
		t.Fatal(err)
	}
	// Device routes share one fib_info, so 40,000 of them write fast.
	const n = 40000
	burst := func(op kernel.WriteOp) []kernel.Write {
		ws := make([]kernel.Write, n)
		for i := range ws {
			ws[i] = kernel.Write{Op: op, Route: kernel.Route{LinkIndex: link,
				Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + byte(i>>16), byte(i >> 8), byte(i)}), 32)}}
		}
		return ws
	}
	mustWrite(t, h, burst(kernel.OpReplaceRoute))
	mustWrite(t, h, burst(kernel.OpDeleteRoute))
	last := kernel.Route{Dst: netip.MustParsePrefix("10.250.0.0/24"), LinkIndex: link}
	mustWrite(t, h, []kernel.Write{{Op: kernel.OpReplaceRoute, Route: last}})
	gone := 0
	for lost := false; !lost; {
		m := recv(t, out, fmt.Sprintf("a kernel.Lost notice (%d route notices so far)", gone))
		switch {
		case m.Kind == kernel.Lost:
			lost = true
		case m.Kind == kernel.RouteGone && m.Dst == last.Dst:
			t.Fatalf("%s reported before it was deleted", last.Dst)
		case m.Kind == kernel.RouteGone:
			gone++
		}
	}
	// Drain what is still queued, then delete one more route.
	for drained := false; !drained; {
		select {
		case <-out:
			gone++
		case <-time.After(200 * time.Millisecond):
			drained = true
		}
	}
	t.Logf("%d deletions: %d reported, the rest lost to the overflow", n, gone)
	mustWrite(t, h, []kernel.Write{{Op: kernel.OpDeleteRoute, Route: last}})
	for {
		m := recv(t, out, "the route deleted after the overflow")
		if m.Kind == kernel.RouteGone && m.Dst == last.Dst {
			return
		}
	}
}

// The socket filter works in the kernel: of 500 routes added and one
// deleted, the filtered socket receives the deletion alone.
func TestFilteredSubscription(t *testing.T) {
	h, link := testNS(t)
	s, err := h.subscribeFiltered([]uint{unix.RTNLGRP_IPV4_ROUTE}, unix.RTM_DELROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetReceiveTimeout(&unix.Timeval{Sec: 5}); err != nil {
		t.Fatal(err)
	}
	ws := make([]kernel.Write, 500)
	for i := range ws {
		ws[i] = kernel.Write{Op: kernel.OpReplaceRoute, Route: kernel.Route{LinkIndex: link,
			Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), 32)}}
	}
	mustWrite(t, h, ws)
	del := ws[321]
	del.Op = kernel.OpDeleteRoute
	mustWrite(t, h, []kernel.Write{del})
	msgs, _, err := s.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Header.Type != unix.RTM_DELROUTE {
		t.Fatalf("first message: %d messages, type %d; want one RTM_DELROUTE (%d)", len(msgs), msgs[0].Header.Type, unix.RTM_DELROUTE)
	}
	n, ok := routeNotice(msgs[0])
	if !ok || n.Dst.String() != "10.200.1.65/32" || n.LinkIndex != link {
		t.Errorf("parsed %+v, want 10.200.1.65/32 on link %d", n, link)
	}
}
