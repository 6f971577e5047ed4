package udp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/netlinkx"
)

// reportEvery is how often changed drop counters are logged.
const reportEvery = 2 * time.Second

// Ensure opens the socket and flannel0 (creating it, or attaching to the one
// a previous weftd left), configures it and runs the data path. Called again
// with the device intact, it only re-checks the configuration.
func (u *UDP) Ensure(ctx context.Context, own lease.Lease) error {
	if !own.Subnet.IsValid() {
		return fmt.Errorf("the own lease %s has no IPv4 subnet", own.Key())
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.peers.setOwn(own.Subnet.Masked(), u.d.Net.IPv4.Network)
	if u.conn == nil {
		c, err := listen(u.d.External.PublicIP, u.port, !u.o.NoGSO, !u.o.NoGRO)
		if err != nil {
			return err
		}
		u.conn = c
		rctx, cancel := context.WithCancel(ctx)
		u.stop = cancel
		go u.report(rctx)
	}
	h := u.d.Netlink.Raw()
	link, err := h.LinkByName(DeviceName)
	if u.dp != nil && err == nil && link.Attrs().Index == u.index {
		return u.configureLocked(link, own)
	}
	if u.dp != nil {
		u.log.Info("flannel0 changed under the data path; reattaching", "err", err)
		u.dp.stop()
		u.dp = nil
	}
	return u.attachLocked(ctx, own)
}

// attachLocked opens the TUN queues (replacing a device of the name that
// cannot be attached to, such as flannel's single-queue flannel0),
// configures the device and starts the workers.
func (u *UDP) attachLocked(ctx context.Context, own lease.Lease) error {
	h := u.d.Netlink.Raw()
	o := tunOptions{queues: u.o.Queues, offload: !u.o.NoVnet}
	tun, err := openTUN(DeviceName, o)
	if errors.Is(err, errIncompatible) {
		if link, lerr := h.LinkByName(DeviceName); lerr == nil {
			u.log.Info("replacing an incompatible flannel0", "type", link.Type())
			if err := h.LinkDel(link); err != nil {
				return fmt.Errorf("delete incompatible %s: %w", DeviceName, err)
			}
		}
		tun, err = openTUN(DeviceName, o)
	}
	if err != nil {
		return err
	}
	link, err := h.LinkByName(DeviceName)
	if err == nil {
		err = u.configureLocked(link, own)
	}
	if err != nil {
		tun.Close()
		return fmt.Errorf("configure %s: %w", DeviceName, err)
	}
	u.index = link.Attrs().Index
	u.dp = &datapath{tun: tun, conn: u.conn, peers: u.peers, stats: &u.stats, log: u.log, noMerge: u.o.NoMerge, batch: u.o.Batch, vnet: o.offload}
	u.dp.start(ctx)
	u.log.Info("data path running", "device", DeviceName, "queues", len(tun.queues), "vnet-hdr", o.offload,
		"uso", tun.uso, "udp-gro", u.conn.gro, "batch", u.o.Batch, "merge", !u.o.NoMerge, "port", u.port, "mtu", u.mtu)
	return nil
}

// configureLocked sets the MTU, the single <subnet>.0/32 address and the
// link up. The route <Network> dev flannel0 is the reconciler's
// (NodeRoutes).
func (u *UDP) configureLocked(link netlink.Link, own lease.Lease) error {
	h := u.d.Netlink.Raw()
	if link.Attrs().MTU != u.mtu {
		if err := h.LinkSetMTU(link, u.mtu); err != nil {
			return fmt.Errorf("set mtu of %s: %w", DeviceName, err)
		}
	}
	addr := netip.PrefixFrom(own.Subnet.Masked().Addr(), 32)
	have, err := u.d.Netlink.LinkAddrs(link)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", DeviceName, err)
	}
	for _, a := range have {
		if a != addr && !a.Addr().IsLinkLocalUnicast() {
			if err := h.AddrDel(link, &netlink.Addr{IPNet: netlinkx.IPNet(a)}); err != nil {
				return fmt.Errorf("remove stale address %s from %s: %w", a, DeviceName, err)
			}
		}
	}
	if err := h.AddrReplace(link, &netlink.Addr{IPNet: netlinkx.IPNet(addr)}); err != nil {
		return fmt.Errorf("add %s to %s: %w", addr, DeviceName, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", DeviceName, err)
	}
	return nil
}

// report logs changed counters until ctx ends; then it stops the data path
// and closes the socket (the device stays).
func (u *UDP) report(ctx context.Context) {
	tick := time.NewTicker(reportEvery)
	defer tick.Stop()
	var last [5]uint64
	for {
		select {
		case <-ctx.Done():
			u.mu.Lock()
			u.closeLocked()
			u.mu.Unlock()
			return
		case <-tick.C:
		}
		s := &u.stats
		now := [5]uint64{s.UnknownSource.Load(), s.Spoofed.Load(), s.Malformed.Load(), s.NoRoute.Load(), s.SendErrors.Load()}
		if now != last {
			u.log.Info("udp data path drops", "unknown-source", now[0], "spoofed", now[1], "malformed", now[2],
				"no-route", now[3], "send-errors", now[4], "rx", s.RxPackets.Load(), "tx", s.TxPackets.Load())
			last = now
		}
	}
}

// Close stops the data path and closes the socket; flannel0, its address
// and its route stay (as when weftd exits). The backend can be set up again
// with Ensure.
func (u *UDP) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stop != nil {
		u.stop()
		u.stop = nil
	}
	u.closeLocked()
	return nil
}

// closeLocked closes the socket first, so that the receive worker returns
// at once, then stops the workers.
func (u *UDP) closeLocked() {
	if u.conn != nil {
		u.conn.Close()
		u.conn = nil
	}
	if u.dp != nil {
		u.dp.stop()
		u.dp = nil
	}
}
