package netpol

import (
	"bytes"
	"context"
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

// send runs the probe and reports whether it connected: within wait for
// probes the rules should deny (deniedWait), within a generous time
// otherwise. An error is a failure of the test's own machinery.
func (p probe) send(ctx context.Context, wait time.Duration, expectAllowed bool) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	target := net.JoinHostPort(p.dstAddr().String(), strconv.Itoa(int(p.port)))
	switch p.proto {
	case protoTCP:
		c, err := dialIn(ctx, p.src.ns, "tcp", target)
		if err != nil {
			return false, nil
		}
		return true, c.Close()
	case protoUDP:
		return udpRoundTrip(ctx, p.src.ns, target, expectAllowed)
	case protoSCTP:
		f, err := sctpConnect(ctx, p.src.ns, p.dstAddr(), p.port)
		if err != nil {
			return false, nil
		}
		return true, f.Close()
	case protoICMP:
		// ping's own time limit decides; the context only backs it up.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wait+2*time.Second)
		defer cancel()
		return pingOnce(ctx, p.src.ns, p.dstAddr(), wait, expectAllowed)
	}
	return false, fmt.Errorf("probe of protocol %d", p.proto)
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

// sctpConnect makes an association from ns to dst:port.
func sctpConnect(ctx context.Context, ns string, dst netip.Addr, port uint16) (*os.File, error) {
	f, err := sctpSocket(ns, func(fd int) error {
		err := unix.Connect(fd, sockaddr(net.IP(dst.AsSlice()), port))
		if err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return fmt.Errorf("sctp connect: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		if err := f.SetWriteDeadline(d); err != nil {
			f.Close()
			return nil, err
		}
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	var soErr error
	if err := rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			soErr = err
		case v != 0:
			soErr = unix.Errno(v)
		}
		return true
	}); err != nil {
		f.Close()
		return nil, err
	}
	if soErr != nil {
		f.Close()
		return nil, soErr
	}
	return f, nil
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
	case ctxDone(ctx):
		return false, nil
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
