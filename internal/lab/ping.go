//go:build linux

package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Ping timing.
const (
	// PingInterval is how often Ping sends another echo request while it
	// waits for a reply.
	PingInterval = 200 * time.Millisecond
	// DefaultPingTimeout applies when the context has no deadline.
	DefaultPingTimeout = 5 * time.Second
)

// Ping sends ICMP echo requests from namespace ns (the caller's own
// namespace when ns is "") to dst, one every PingInterval, until a reply
// arrives or ctx is done (DefaultPingTimeout when ctx has no deadline), and
// returns the round-trip time of the request that was answered. It uses a raw
// ICMP socket opened inside ns, so it needs root (CAP_NET_RAW in ns) but not
// the ping binary. A failing send (no route yet) is retried like a lost
// request, so Ping also waits for a path to appear.
func Ping(ctx context.Context, ns string, dst netip.Addr) (time.Duration, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultPingTimeout)
		defer cancel()
	}
	dst = dst.Unmap()
	network, laddr, proto := "ip4:icmp", "0.0.0.0", 1
	if dst.Is6() {
		network, laddr, proto = "ip6:ipv6-icmp", "::", 58
	}
	var conn *icmp.PacketConn
	open := func() (err error) { conn, err = icmp.ListenPacket(network, laddr); return err }
	var err error
	if ns == "" {
		err = open()
	} else {
		err = Do(ns, open) // the socket belongs to the namespace it was made in
	}
	if err != nil {
		return 0, fmt.Errorf("ping %s from %q: open icmp socket: %w", dst, ns, err)
	}
	defer conn.Close()
	rtt, err := pingConn(ctx, conn, dst, proto)
	if err != nil {
		return 0, fmt.Errorf("ping %s from %q: %w", dst, ns, err)
	}
	return rtt, nil
}

// pingConn runs the send/receive loop on an open ICMP socket.
func pingConn(ctx context.Context, conn *icmp.PacketConn, dst netip.Addr, proto int) (time.Duration, error) {
	var idb [2]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return 0, fmt.Errorf("random echo id: %w", err)
	}
	id := int(binary.BigEndian.Uint16(idb[:]))
	sent := map[int]time.Time{}
	buf := make([]byte, 1500)
	deadline, _ := ctx.Deadline()
	var sendErr error // the last send error (no route yet, say); retried
	for seq := 1; ; seq++ {
		if err := ctx.Err(); err != nil {
			return 0, errors.Join(fmt.Errorf("no reply to %d echo requests: %w", len(sent), err), sendErr)
		}
		// The clock starts before the send: between namespaces the whole
		// round trip runs inside the sendto system call.
		t0 := time.Now()
		if sendErr = sendEcho(conn, dst, id, seq); sendErr == nil {
			sent[seq] = t0
		}
		next := time.Now().Add(PingInterval)
		if deadline.Before(next) {
			next = deadline
		}
		if err := conn.SetReadDeadline(next); err != nil {
			return 0, fmt.Errorf("set read deadline: %w", err)
		}
		for {
			n, peer, err := conn.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break // send the next request
			}
			if err != nil {
				return 0, fmt.Errorf("read icmp: %w", err)
			}
			if rttSeq, ok := matchReply(buf[:n], peer, dst, proto, id); ok {
				if t, ok := sent[rttSeq]; ok {
					return time.Since(t), nil
				}
			}
		}
	}
}

func sendEcho(conn *icmp.PacketConn, dst netip.Addr, id, seq int) error {
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if dst.Is6() {
		typ = ipv6.ICMPTypeEchoRequest
	}
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("weft-lab-ping")}}
	b, err := msg.Marshal(nil) // the kernel fills in the ICMPv6 checksum
	if err != nil {
		return fmt.Errorf("marshal echo: %w", err)
	}
	if _, err := conn.WriteTo(b, &net.IPAddr{IP: net.IP(dst.AsSlice())}); err != nil {
		return fmt.Errorf("send echo: %w", err)
	}
	return nil
}

// matchReply returns the sequence number of b when it is an echo reply from
// dst to our id.
func matchReply(b []byte, peer net.Addr, dst netip.Addr, proto, id int) (int, bool) {
	ipa, ok := peer.(*net.IPAddr)
	if !ok {
		return 0, false
	}
	from, ok := netip.AddrFromSlice(ipa.IP)
	if !ok || from.Unmap() != dst {
		return 0, false
	}
	m, err := icmp.ParseMessage(proto, b)
	if err != nil || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
		return 0, false
	}
	echo, ok := m.Body.(*icmp.Echo)
	if !ok || echo.ID != id {
		return 0, false
	}
	return echo.Seq, true
}
