//go:build linux

package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// datapath is the running workers over one set of TUN queues and the socket.
type datapath struct {
	tun     *tunDevice
	conn    conn
	peers   *table
	stats   *Stats
	log     *slog.Logger
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	noMerge bool
	vnet    bool // the queues carry virtio-net headers
	batch   int  // messages per recvmmsg
	mtu     int  // the device's
}

// start runs a worker per TUN queue reading it (the kernel spreads flows
// over the queues) and one worker reading the socket: two readers of one
// socket reorder a flow's datagrams, which measured as ~95,000 TCP
// retransmits in 8 s for no gain.
func (d *datapath) start(ctx context.Context) {
	ctx, d.cancel = context.WithCancel(ctx)
	for _, q := range d.tun.queues {
		d.wg.Add(1)
		go func() { defer d.wg.Done(); d.txLoop(ctx, q) }()
	}
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.rxLoop(ctx, d.tun.queues[0]) }()
	go func() {
		<-ctx.Done()
		d.tun.Close() // wakes the TUN readers; the socket is the backend's
	}()
}

// stop ends the workers and detaches the TUN queues (the device stays).
func (d *datapath) stop() {
	d.cancel()
	d.tun.Close()
	d.wg.Wait()
}

// tunWriter writes vnet header + packet to a queue; without IFF_VNET_HDR
// the (always empty) header is left out.
func tunWriter(q *os.File, vnet bool) func([]byte) error {
	skip := 0
	if !vnet {
		skip = vnetHdrLen
	}
	return func(b []byte) error {
		_, err := q.Write(b[skip:])
		return err
	}
}

func (d *datapath) txLoop(ctx context.Context, q *os.File) {
	t := newTxPath(d.peers, d.stats, d.conn, tunWriter(q, d.vnet))
	buf := make([]byte, vnetHdrLen+maxIPLen)
	skip := 0
	if !d.vnet {
		skip = vnetHdrLen // reads land after an empty header
	}
	for {
		n, err := q.Read(buf[skip:])
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, os.ErrClosed) {
				d.log.Error("tun read failed; the device must be recreated", "err", err)
			}
			return
		}
		t.packet(buf[:skip+n])
	}
}

func (d *datapath) rxLoop(ctx context.Context, q *os.File) {
	size := maxIPLen
	if !d.conn.gro() { // no read is larger than the underlay's packets
		size = 16 << 10
	}
	b := newBatch(d.batch, size)
	r := &rxPath{peers: d.peers, stats: d.stats, co: newCoalescer(tunWriter(q, d.vnet)), mtu: d.mtu}
	r.co.noMerge = d.noMerge || !d.vnet // merged packets need the GSO header
	for ctx.Err() == nil {
		_ = d.conn.setReadDeadline(time.Now().Add(time.Second))
		n, err := d.conn.read(b)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				d.log.Warn("receive", "err", err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		for i := range n {
			src, pkts, size := d.conn.message(&b.msgs[i])
			r.datagram(src, pkts, size)
		}
		// One flush per batch: the segments of a flow that arrived in one
		// recvmmsg become one GSO packet for the TUN (with UDP GRO the
		// kernel merged most of them already; ipip has no GRO).
		if err := r.co.flush(); err != nil && errors.Is(err, os.ErrClosed) {
			return
		}
	}
}
