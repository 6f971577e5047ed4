package netpol

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/netfilter/netfiltertest"
)

// A probe is one attempt at a connection from a pod to a pod: a TCP
// connect, a UDP request and its echo, an SCTP association, or one ICMP
// echo request and its reply.

// Probe protocols: IP protocol numbers, ICMP for both families (the packet
// of an IPv6 ping is ICMPv6, 58).
const (
	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17
	protoSCTP = 132
)

// deniedWait is how long a probe the rules should deny waits: under TCP's
// first SYN retransmission (1 s after the SYN) and SCTP's INIT one (3 s),
// so that each denied probe sends exactly one packet, which the drop
// counters then show. A probe that connects in this time was allowed,
// whatever the machine's speed; one that does not is confirmed by the
// counters, not by the time.
const deniedWait = 800 * time.Millisecond

type probe struct {
	src, dst *dpPod
	fam      Family
	proto    uint8
	port     uint16
}

func (p probe) dstAddr() netip.Addr { return p.dst.addr(p.fam) }

// packet is the probe's first packet, as Evaluate takes it.
func (p probe) packet() Packet {
	proto := p.proto
	if proto == protoICMP && p.fam == 6 {
		proto = 58
	}
	return Packet{Src: p.src.addr(p.fam), Dst: p.dstAddr(), Proto: proto, DstPort: p.port}
}

func (p probe) String() string {
	what := protoLabel(p.proto)
	if p.proto != protoICMP {
		what += "/" + strconv.Itoa(int(p.port))
	}
	return fmt.Sprintf("%s -> %s %s IPv%d", p.src.Key(), p.dst.Key(), what, p.fam)
}

// result is what a probe saw: whether it connected, and how long its
// socket lived, from its first packet to its close (the retransmissions of
// that packet it may have sent: sent).
type result struct {
	connected bool
	lived     time.Duration
}

// sent returns the fewest and the most packets a probe that got no answer
// sent: its first, and the retransmissions due while its socket lived
// (TCP's SYN after 1, 3, 7 s; SCTP's INIT after 3, 9 s); slack covers a
// close at about the time a retransmission is due.
func (p probe) sent(lived time.Duration) (least, most int) {
	var at []time.Duration
	switch p.proto {
	case protoTCP:
		at = []time.Duration{time.Second, 3 * time.Second, 7 * time.Second, 15 * time.Second}
	case protoSCTP:
		at = []time.Duration{3 * time.Second, 9 * time.Second, 21 * time.Second}
	}
	const slack = 250 * time.Millisecond
	least, most = 1, 1
	for _, t := range at {
		if t < lived-slack {
			least++
		}
		if t < lived+slack {
			most++
		}
	}
	return least, most
}

// send runs the probe, waiting for a connection or an answer up to wait:
// deniedWait for probes the rules should deny, a generous time otherwise.
// An error is a failure of the test's own machinery.
func (p probe) send(ctx context.Context, wait time.Duration, expectAllowed bool) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	target := net.JoinHostPort(p.dstAddr().String(), strconv.Itoa(int(p.port)))
	switch p.proto {
	case protoTCP, protoSCTP:
		return streamConnect(ctx, p.src.ns, int(p.proto), p.dstAddr(), p.port)
	case protoUDP:
		ok, err := udpRoundTrip(ctx, p.src.ns, target, expectAllowed)
		return result{connected: ok}, err
	case protoICMP:
		// ping's own time limit decides, from its start (which may be
		// slow on a slow kernel); the context only stops a ping that hangs.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wait+time.Minute)
		defer cancel()
		ok, err := pingOnce(ctx, p.src.ns, p.dstAddr(), wait, expectAllowed)
		return result{connected: ok}, err
	}
	return result{}, fmt.Errorf("probe of protocol %d", p.proto)
}

// dialIn dials from namespace ns; the connection may be used anywhere.
func dialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := netfiltertest.InNS(ns, func() (err error) {
		d := net.Dialer{KeepAlive: -1}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// udpRoundTrip sends a datagram and waits for its echo. A probe that should
// be allowed sends again every 200 ms (a datagram may wait for neighbour
// resolution); one that should be denied sends once.
func udpRoundTrip(ctx context.Context, ns, target string, again bool) (bool, error) {
	c, err := dialIn(ctx, ns, "udp", target)
	if err != nil {
		return false, fmt.Errorf("udp socket: %w", err)
	}
	defer c.Close()
	msg, buf := []byte("weft-netpol"), make([]byte, 64)
	for {
		if _, err := c.Write(msg); err != nil {
			return false, nil // an ICMP error from a previous try
		}
		deadline, _ := ctx.Deadline()
		if next := time.Now().Add(200 * time.Millisecond); again && next.Before(deadline) {
			deadline = next
		}
		if err := c.SetReadDeadline(deadline); err != nil {
			return false, err
		}
		n, err := c.Read(buf)
		if err == nil {
			return bytes.Equal(buf[:n], msg), nil
		}
		var ne net.Error
		if !again || ctxDone(ctx) || !errors.As(err, &ne) || !ne.Timeout() {
			return false, nil
		}
	}
}

func ctxDone(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

// streamConnect connects a TCP or (one-to-one) SCTP socket from ns to
// dst:port, until ctx ends, and closes it. The first packet (SYN, INIT)
// leaves in connect itself, before any wait. A TCP socket is connected
// when it turns writable without error; an SCTP one when its association
// is established.
func streamConnect(ctx context.Context, ns string, proto int, dst netip.Addr, port uint16) (result, error) {
	var start time.Time
	f, err := streamSocket(ns, proto, func(fd int) error {
		start = time.Now()
		err := unix.Connect(fd, sockaddr(net.IP(dst.AsSlice()), port))
		if err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return fmt.Errorf("connect: %w", err)
		}
		return nil
	})
	if err != nil {
		return result{}, err
	}
	connected := false
	if proto == protoTCP {
		connected = tcpConnected(ctx, f)
	} else {
		connected = sctpEstablishedBy(ctx, f)
	}
	err = f.Close()
	return result{connected: connected, lived: time.Since(start)}, err
}

// tcpConnected waits until the connecting socket f is writable or ctx ends,
// and reports whether it connected.
func tcpConnected(ctx context.Context, f *os.File) bool {
	deadline, _ := ctx.Deadline()
	if f.SetWriteDeadline(deadline) != nil {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	// Write calls the function at once, after forgetting a readiness the
	// poller saw before: so it asks the kernel itself (poll, no wait)
	// whether the socket is writable, and waits for the next edge if not.
	connected := false
	err = rc.Write(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if n, err := unix.Poll(pfd, 0); err != nil || n == 0 {
			return false
		}
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		connected = err == nil && v == 0
		return true
	})
	return err == nil && connected
}

// The SCTP_STATUS socket option (linux/sctp.h; level SOL_SCTP, which is
// IPPROTO_SCTP): struct sctp_status starts
// with the association's id and state, both 32-bit; the whole is under 256
// bytes.
const (
	sctpStatus      = 14
	sctpEstablished = 4 // SCTP_ESTABLISHED of enum sctp_sstat_state
)

// sctpEstablishedBy polls the association state of the connecting SCTP
// socket f (it reports writable at once, whatever its state) until it is
// established or ctx ends.
func sctpEstablishedBy(ctx context.Context, f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	for {
		state := int32(-1)
		_ = rc.Control(func(fd uintptr) {
			var buf [256]byte
			n := uint32(len(buf))
			_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.IPPROTO_SCTP, sctpStatus,
				uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
			if errno == 0 && n >= 8 {
				state = int32(binary.NativeEndian.Uint32(buf[4:8]))
			}
		})
		if state == sctpEstablished {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// pingOnce sends one echo request with ping(8), started in ns. A ping that
// should be allowed keeps sending once a second until a reply or the end of
// wait; one that should be denied sends exactly one request.
func pingOnce(ctx context.Context, ns string, dst netip.Addr, wait time.Duration, again bool) (bool, error) {
	// -W (wait for the reply) takes fractions of a second, -w (the
	// deadline) only whole seconds.
	args := []string{"-n", "-q", "-c", "1", "-W", strconv.FormatFloat(wait.Seconds(), 'f', 1, 64), dst.String()}
	if again {
		args = []string{"-n", "-q", "-c", "1", "-w", strconv.Itoa(int(math.Ceil(wait.Seconds()))), dst.String()}
	}
	cmd := exec.Command("ping", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := netfiltertest.InNS(ns, cmd.Start); err != nil {
		return false, fmt.Errorf("start ping: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	defer stop()
	err := cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ee) && ee.ExitCode() == 1 && bytes.Contains(out.Bytes(), []byte(" 0 received")):
		return false, nil // no reply
	}
	return false, fmt.Errorf("ping %s: %w: %s", dst, err, out.Bytes())
}

// roundTrip writes a message on c and reads its echo within wait.
func roundTrip(c io.ReadWriter, deadline interface{ SetDeadline(time.Time) error }, wait time.Duration) error {
	if err := deadline.SetDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	msg := []byte("weft-rt\n")
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read the echo: %w", err)
	}
	return nil
}
