//go:build linux

package netlinkx

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"github.com/weft-net/weft/internal/kernel"
	"golang.org/x/sys/unix"
)

// Monitor reports deletions of routes, neighbours, FDB entries, links and
// addresses, and links and addresses added or changed, in the handle's network namespace until ctx ends. Notices are sent in kernel
// order per object type; a full out channel blocks the reader goroutines, not
// the kernel (overflow shows up as a kernel.Lost notice, and the readers go on).
// Its goroutines are added to wg, which the caller waits on after ctx ends
// to know they are gone.
func (h *Handle) Monitor(ctx context.Context, out chan<- kernel.Notice, wg *sync.WaitGroup) error {
	done := ctx.Done()
	send := func(n kernel.Notice) bool {
		select {
		case out <- n:
			return true
		case <-done:
			return false
		}
	}
	lost := func(err error) { send(kernel.Notice{Kind: kernel.Lost, Err: err}) }
	type sub struct {
		groups []uint
		types  []uint16
		parse  func(syscall.NetlinkMessage) (kernel.Notice, bool)
	}
	subs := []sub{
		{[]uint{unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE}, []uint16{unix.RTM_DELROUTE}, routeNotice},
		{[]uint{unix.RTNLGRP_NEIGH}, []uint16{unix.RTM_DELNEIGH}, neighNotice},
		{[]uint{unix.RTNLGRP_LINK}, []uint16{unix.RTM_DELLINK, unix.RTM_NEWLINK}, linkNotice},
		{[]uint{unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR}, []uint16{unix.RTM_NEWADDR, unix.RTM_DELADDR}, addrNotice},
	}
	socks := make([]*nl.NetlinkSocket, 0, len(subs))
	for _, sb := range subs {
		s, err := h.subscribeFiltered(sb.groups, sb.types...)
		if err != nil {
			for _, s := range socks {
				s.Close()
			}
			return fmt.Errorf("subscribe to netlink groups %v: %w", sb.groups, err)
		}
		socks = append(socks, s)
	}
	for i, s := range socks {
		parse := subs[i].parse
		wg.Go(func() { <-done; s.Close() })
		wg.Go(func() { readDeletions(done, s, lost, send, parse) })
	}
	return nil
}

// subscribeFiltered subscribes to groups in the handle's namespace through a
// socket whose filter lets only messages of the given types in. The kernel
// drops the others before they are queued: the thousands of routes and
// neighbours weftd adds at start-up cost its reader no wake-up, copy or
// parse (at 5,000 peers that was a quarter of its start-up CPU).
func (h *Handle) subscribeFiltered(groups []uint, types ...uint16) (*nl.NetlinkSocket, error) {
	s, err := nl.SubscribeAt(h.ns, netns.None(), unix.NETLINK_ROUTE, groups...)
	if err != nil {
		return nil, err
	}
	fd := s.GetFd()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBuffer)
	}
	prog := typeFilter(types)
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		s.Close()
		return nil, fmt.Errorf("attach the socket filter: %w", err)
	}
	return s, nil
}

// typeFilter is a classic BPF program that accepts netlink messages whose
// nlmsg_type is one of types and drops the rest. The type is the 16-bit
// field at offset 4, in host byte order; BPF loads it big-endian, so each
// constant is given as those two bytes read big-endian.
func typeFilter(types []uint16) []unix.SockFilter {
	prog := []unix.SockFilter{{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 4}}
	for i, t := range types {
		var b [2]byte
		binary.NativeEndian.PutUint16(b[:], t)
		// On a match, jump over the remaining tests and the drop.
		prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K,
			Jt: uint8(len(types) - i), K: uint32(binary.BigEndian.Uint16(b[:]))})
	}
	return append(prog,
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0},          // drop
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff}, // accept all of it
	)
}

// readDeletions reads s until done (which closes s), sending what parse
// makes of each message from the kernel. An overflow (ENOBUFS: messages
// were dropped) is reported as kernel.Lost and reading goes on: the socket stays
// subscribed. Any other error is reported once and ends the reader.
func readDeletions(done <-chan struct{}, s *nl.NetlinkSocket, lost func(error), send func(kernel.Notice) bool,
	parse func(syscall.NetlinkMessage) (kernel.Notice, bool)) {
	for {
		msgs, from, err := s.Receive()
		select {
		case <-done:
			return
		default:
		}
		switch {
		case errors.Is(err, unix.ENOBUFS):
			lost(err)
			continue
		case err != nil:
			lost(err)
			return
		case from.Pid != nl.PidKernel:
			continue
		}
		for _, m := range msgs {
			if n, ok := parse(m); ok && !send(n) {
				return
			}
		}
	}
}

// routeNotice reads an RTM_DELROUTE message of the main table.
func routeNotice(m syscall.NetlinkMessage) (kernel.Notice, bool) {
	if m.Header.Type != unix.RTM_DELROUTE || len(m.Data) < unix.SizeofRtMsg {
		return kernel.Notice{}, false
	}
	msg := nl.DeserializeRtMsg(m.Data)
	attrs, err := nl.ParseRouteAttr(m.Data[unix.SizeofRtMsg:])
	if err != nil {
		return kernel.Notice{}, false
	}
	n, table, hasDst := kernel.Notice{Kind: kernel.RouteGone}, uint32(msg.Table), false
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.RTA_DST:
			addr, ok := netip.AddrFromSlice(a.Value)
			if !ok {
				return kernel.Notice{}, false
			}
			n.Dst, hasDst = netip.PrefixFrom(addr, int(msg.Dst_len)), true
		case unix.RTA_OIF:
			if len(a.Value) == 4 {
				n.LinkIndex = int(binary.NativeEndian.Uint32(a.Value))
			}
		case unix.RTA_TABLE:
			if len(a.Value) == 4 {
				table = binary.NativeEndian.Uint32(a.Value)
			}
		}
	}
	return n, hasDst && table == unix.RT_TABLE_MAIN
}

// neighNotice reads an RTM_DELNEIGH message: a neighbour, or an FDB entry
// (AF_BRIDGE).
func neighNotice(m syscall.NetlinkMessage) (kernel.Notice, bool) {
	u, err := netlink.NeighDeserialize(m.Data)
	if err != nil || m.Header.Type != unix.RTM_DELNEIGH || len(u.HardwareAddr) != 6 && u.Family == unix.AF_BRIDGE {
		return kernel.Notice{}, false
	}
	if u.Family == unix.AF_BRIDGE {
		return kernel.Notice{Kind: kernel.FDBGone, MAC: kernel.MAC(u.HardwareAddr), LinkIndex: u.LinkIndex}, true
	}
	return kernel.Notice{Kind: kernel.NeighGone, IP: AddrFromIP(u.IP), LinkIndex: u.LinkIndex}, true
}

// linkNotice reads an RTM_DELLINK or RTM_NEWLINK message.
func linkNotice(m syscall.NetlinkMessage) (kernel.Notice, bool) {
	hdr := unix.NlMsghdr{Len: m.Header.Len, Type: m.Header.Type, Flags: m.Header.Flags, Seq: m.Header.Seq, Pid: m.Header.Pid}
	l, err := netlink.LinkDeserialize(&hdr, m.Data)
	if err != nil {
		return kernel.Notice{}, false
	}
	switch m.Header.Type {
	case unix.RTM_DELLINK:
		return kernel.Notice{Kind: kernel.LinkGone, LinkIndex: l.Attrs().Index, LinkName: l.Attrs().Name}, true
	case unix.RTM_NEWLINK:
		return kernel.Notice{Kind: kernel.LinkChanged, LinkIndex: l.Attrs().Index, LinkName: l.Attrs().Name}, true
	}
	return kernel.Notice{}, false
}

// addrNotice reads an RTM_NEWADDR or RTM_DELADDR message.
func addrNotice(m syscall.NetlinkMessage) (kernel.Notice, bool) {
	if m.Header.Type != unix.RTM_NEWADDR && m.Header.Type != unix.RTM_DELADDR || len(m.Data) < unix.SizeofIfAddrmsg {
		return kernel.Notice{}, false
	}
	msg := nl.DeserializeIfAddrmsg(m.Data)
	attrs, err := nl.ParseRouteAttr(m.Data[unix.SizeofIfAddrmsg:])
	if err != nil {
		return kernel.Notice{}, false
	}
	var local, address netip.Addr
	for _, a := range attrs {
		addr, ok := netip.AddrFromSlice(a.Value)
		if !ok {
			continue
		}
		switch a.Attr.Type {
		case unix.IFA_LOCAL:
			local = addr.Unmap()
		case unix.IFA_ADDRESS:
			address = addr.Unmap()
		}
	}
	if local.IsValid() {
		address = local // on a point-to-point link IFA_ADDRESS is the peer's
	}
	if !address.IsValid() {
		return kernel.Notice{}, false
	}
	return kernel.Notice{Kind: kernel.AddrChanged, LinkIndex: int(msg.Index), Dst: netip.PrefixFrom(address, int(msg.Prefixlen))}, true
}
