//go:build linux

package netlinkx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/kernel"
)

// Batched writes: many rtnetlink requests in one sendmsg. At 5,000 peers
// (15,000 objects) this is what keeps start-up well under a second: one
// request per system call round trip costs ~35 µs here, most of it the
// round trip itself.
//
// Only the last request of a batch asks for an ACK. The kernel handles a
// batch's requests in order, in the sending thread, and answers every
// failed one with an error message whether or not it asked for an ACK
// (netlink_rcv_skb), so the last request's ACK arrives after the errors of
// all the others: a request without an error before it succeeded. One ACK
// per request instead cost the kernel a message each and weftd a recvfrom
// each (15,000 at 5,000 peers).

// batchSize bounds the requests per sendmsg: each failed one queues an
// error message, which occupies the receive buffer until read (its
// accounted size is far above its length), so a batch of failures must fit
// socketBuffer with room to spare.
const batchSize = 512

var _ kernel.Batcher = (*Handle)(nil)

// WriteBatch performs the writes in order and returns one error per write.
func (h *Handle) WriteBatch(ws []kernel.Write) []error {
	errs := make([]error, len(ws))
	if len(ws) == 0 {
		return errs
	}
	s, err := nl.GetNetlinkSocketAt(h.ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return fill(errs, fmt.Errorf("open netlink socket: %w", err))
	}
	defer s.Close()
	if err := s.SetReceiveBufferSize(socketBuffer, true); err != nil {
		_ = s.SetReceiveBufferSize(socketBuffer, false)
	}
	var buf []byte
	for start := 0; start < len(ws); start += batchSize {
		end := min(start+batchSize, len(ws))
		buf = sendBatch(s, ws[start:end], errs[start:end], uint32(start+1), buf[:0])
	}
	return errs
}

func fill(errs []error, err error) []error {
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// sendBatch sends ws in one message buffer (built in buf, returned for
// reuse), numbered from first on, the last one asking for an ACK, and
// records the error messages that arrive up to that ACK. The socket is
// WriteBatch's own, so every message on it answers one of its requests.
func sendBatch(s *nl.NetlinkSocket, ws []kernel.Write, errs []error, first uint32, buf []byte) []byte {
	for i, w := range ws {
		buf = encode(buf, w, first+uint32(i), i == len(ws)-1)
	}
	if err := unix.Sendto(s.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		fill(errs, fmt.Errorf("send netlink batch: %w", err))
		return buf
	}
	last := first + uint32(len(ws)-1)
	for {
		msgs, _, err := s.Receive()
		if err != nil {
			fill(errs, fmt.Errorf("read netlink ack: %w", err))
			return buf
		}
		for _, m := range msgs {
			i := int(m.Header.Seq - first)
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 || i < 0 || i >= len(ws) {
				continue
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				errs[i] = ackError(ws[i], syscall.Errno(-code))
			}
			if m.Header.Seq == last {
				return buf
			}
		}
	}
}

// ackError turns a kernel error into the result of an idempotent write:
// deleting something already gone succeeds.
func ackError(w kernel.Write, errno syscall.Errno) error {
	if w.Op.IsDelete() && (errors.Is(errno, unix.ENOENT) || errors.Is(errno, unix.ESRCH)) {
		return nil
	}
	return errno
}

// encode appends one request with sequence number seq to b: RTM_NEW* with
// create|replace for a set, RTM_DEL* for a delete; with NLM_F_ACK when ack.
func encode(b []byte, w kernel.Write, seq uint32, ack bool) []byte {
	var body []byte
	newType, delType := uint16(unix.RTM_NEWNEIGH), uint16(unix.RTM_DELNEIGH)
	switch w.Op {
	case kernel.OpReplaceRoute, kernel.OpDeleteRoute:
		body, newType, delType = routeBody(w.Route, w.Op.IsDelete()), unix.RTM_NEWROUTE, unix.RTM_DELROUTE
	case kernel.OpSetNeigh, kernel.OpDeleteNeigh:
		body = neighBody(w.Neigh)
	case kernel.OpSetFDB, kernel.OpDeleteFDB:
		body = fdbBody(w.FDB)
	}
	typ, flags := newType, uint16(unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	if w.Op.IsDelete() {
		typ, flags = delType, unix.NLM_F_REQUEST
	}
	if ack {
		flags |= unix.NLM_F_ACK
	}
	var hdr [unix.SizeofNlMsghdr]byte
	binary.NativeEndian.PutUint32(hdr[0:4], uint32(len(hdr)+len(body)))
	binary.NativeEndian.PutUint16(hdr[4:6], typ)
	binary.NativeEndian.PutUint16(hdr[6:8], flags)
	binary.NativeEndian.PutUint32(hdr[8:12], seq)
	b = append(b, hdr[:]...)
	return append(b, body...)
}

func family(isV6 bool) uint8 {
	if isV6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// attr appends an rtattr, padded to 4 bytes.
func attr(b []byte, typ uint16, data []byte) []byte {
	l := 4 + len(data)
	var hdr [4]byte
	binary.NativeEndian.PutUint16(hdr[0:2], uint16(l))
	binary.NativeEndian.PutUint16(hdr[2:4], typ)
	b = append(b, hdr[:]...)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func u32(v uint32) []byte {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return b[:]
}

// routeBody is struct rtmsg and its attributes, as RouteReplace sends them.
// A route weft writes carries its protocol (RouteProtocol); a delete
// carries none, since the kernel matches a given protocol: the routes the
// reconciler removes include ones weft did not write (flannel's, proto
// boot, left by nodes deleted while no daemon ran), and a delete naming
// protocol 87 left those in place. A blackhole route has no gateway and no
// device; its metric tells it from the bridge's route to the same subnet,
// also when deleting.
func routeBody(r kernel.Route, del bool) []byte {
	dst := r.Dst.Masked()
	proto := uint8(RouteProtocol)
	if del {
		proto = unix.RTPROT_UNSPEC
	}
	typ, scope, rflags := uint8(unix.RTN_UNICAST), uint8(unix.RT_SCOPE_UNIVERSE), uint32(0)
	switch {
	case r.Blackhole:
		typ = unix.RTN_BLACKHOLE
	case !r.Gw.IsValid():
		scope = unix.RT_SCOPE_LINK
	}
	if r.OnLink {
		rflags = unix.RTNH_F_ONLINK
	}
	b := []byte{family(dst.Addr().Is6()), uint8(dst.Bits()), 0, 0, unix.RT_TABLE_MAIN, proto, scope, typ}
	b = append(b, u32(rflags)...)
	b = attr(b, unix.RTA_DST, dst.Addr().AsSlice())
	if r.Blackhole {
		return attr(b, unix.RTA_PRIORITY, u32(BlackholeMetric))
	}
	if r.Gw.IsValid() {
		b = attr(b, unix.RTA_GATEWAY, r.Gw.AsSlice())
	}
	if r.LinkIndex > 0 {
		b = attr(b, unix.RTA_OIF, u32(uint32(r.LinkIndex)))
	}
	return b
}

// ndmsg is struct ndmsg: family, 3 pad bytes, ifindex, state, flags, type.
func ndmsg(fam uint8, ifindex int, flags uint8) []byte {
	b := []byte{fam, 0, 0, 0}
	b = append(b, u32(uint32(ifindex))...)
	var st [2]byte
	binary.NativeEndian.PutUint16(st[:], unix.NUD_PERMANENT)
	b = append(b, st[:]...)
	return append(b, flags, unix.RTN_UNICAST)
}

func neighBody(n kernel.Neigh) []byte {
	b := ndmsg(family(n.IP.Is6()), n.LinkIndex, 0)
	b = attr(b, unix.NDA_DST, n.IP.AsSlice())
	return attr(b, unix.NDA_LLADDR, n.MAC[:])
}

func fdbBody(f kernel.FDB) []byte {
	b := ndmsg(unix.AF_BRIDGE, f.LinkIndex, unix.NTF_SELF)
	b = attr(b, unix.NDA_LLADDR, f.MAC[:])
	return attr(b, unix.NDA_DST, f.Dst.AsSlice())
}
