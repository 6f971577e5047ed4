//go:build linux

package labtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/lab"
)

// Probes of traffic that must survive a restart of weftd: a stream of new
// TCP connections and one long-lived connection, counted in a Tally, and the
// conntrack entry of that connection.

// ListenIn listens on TCP at addr, a free port, inside lab namespace ns;
// the listener is closed when the test ends.
func ListenIn(t testing.TB, ns string, addr netip.Addr) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := lab.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(addr.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// EchoServer accepts TCP connections at addr (a free port) in lab namespace
// ns and echoes what each sends, until the test ends.
func EchoServer(t testing.TB, ns string, addr netip.Addr) netip.AddrPort {
	t.Helper()
	ln := ListenIn(t, ns, addr)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_, _ = io.Copy(conn, conn)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// DialFrom connects to addr from the network namespace at path (a lab
// namespace's lab.NSPath, or /proc/<pid>/ns/net of a container). The socket
// keeps that namespace, so the connection may be used from any goroutine.
// The dialing thread goes back to its namespace afterwards: a thread that
// ended would take with it the children started from it with
// PR_SET_PDEATHSIG (the kubelet lab's kubelets and containerds).
func DialFrom(ctx context.Context, path, network, addr string) (net.Conn, error) {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	var conn net.Conn
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		var d net.Dialer
		conn, err = d.DialContext(ctx, network, addr)
		if rerr := netns.Set(orig); rerr != nil {
			// Stay locked: the thread ends with this goroutine rather
			// than run others in the wrong namespace.
			errc <- errors.Join(err, fmt.Errorf("restore netns after %s: %w", path, rerr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	if err := <-errc; err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("dial %s from %s: %w", addr, path, err)
	}
	return conn, nil
}

// Tally counts the successes and failures of a probe; it is safe for
// concurrent use.
type Tally struct {
	mu        sync.Mutex
	ok, fails int
	firstErr  error
}

// Add counts one attempt: a success when err is nil.
func (y *Tally) Add(err error) {
	y.mu.Lock()
	defer y.mu.Unlock()
	if err == nil {
		y.ok++
		return
	}
	y.fails++
	if y.firstErr == nil {
		y.firstErr = err
	}
}

// Counts returns the successes and failures so far.
func (y *Tally) Counts() (ok, failed int) {
	y.mu.Lock()
	defer y.mu.Unlock()
	return y.ok, y.fails
}

func (y *Tally) String() string {
	y.mu.Lock()
	defer y.mu.Unlock()
	s := fmt.Sprintf("%d ok, %d failed", y.ok, y.fails)
	if y.firstErr != nil {
		s += fmt.Sprintf(" (first: %v)", y.firstErr)
	}
	return s
}

// NewFlows opens a new TCP connection to dst from the namespace at nsPath
// every 10 ms until ctx ends, and closes it at once. Each is a new conntrack
// entry, so each needs the masquerade rule at the moment it starts (the
// entry of a running ping or connection outlives a missing rule). It calls
// done.Done when it returns.
func NewFlows(ctx context.Context, nsPath string, dst netip.AddrPort, y *Tally, done *sync.WaitGroup) {
	defer done.Done()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := DialFrom(dctx, nsPath, "tcp", dst.String())
		cancel()
		if err == nil {
			err = conn.Close()
		}
		y.Add(err)
	}
}

// Established sends 8 bytes on conn (to an EchoServer) every 10 ms and reads
// their echo, until ctx ends or a round trip fails. It calls done.Done when
// it returns.
func Established(ctx context.Context, conn net.Conn, y *Tally, done *sync.WaitGroup) {
	defer done.Done()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	msg, buf := []byte("weft-rt\n"), make([]byte, 8)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		err := conn.SetDeadline(time.Now().Add(3 * time.Second))
		if err == nil {
			_, err = conn.Write(msg)
		}
		if err == nil {
			_, err = io.ReadFull(conn, buf)
		}
		y.Add(err)
		if err != nil {
			return
		}
	}
}

// Flow is the conntrack entry of one TCP connection as a node sees it.
type Flow struct {
	Orig, Reply string // "src:sport>dst:dport"
	Start       uint64 // creation time (needs nf_conntrack_timestamp)
	Packets     uint64 // original direction (needs nf_conntrack_acct)
}

func (f Flow) String() string {
	return fmt.Sprintf("%s reply %s start %d packets %d", f.Orig, f.Reply, f.Start, f.Packets)
}

// Same reports whether g is the entry f, seen later: the same tuples (so
// the same masquerade port) and the same creation time.
func (f Flow) Same(g Flow) bool {
	return f.Orig == g.Orig && f.Reply == g.Reply && f.Start == g.Start && f.Start != 0
}

// TrackFlows turns on conntrack's timestamps and packet counters in lab
// namespace ns (a node of the test's own lab), for ConntrackFlow; set it
// before the flows to watch start.
func TrackFlows(t testing.TB, ns string) {
	t.Helper()
	for _, key := range []string{"net.netfilter.nf_conntrack_acct", "net.netfilter.nf_conntrack_timestamp"} {
		if err := lab.Do(ns, func() error {
			return os.WriteFile(filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/")), []byte("1"), 0o644)
		}); err != nil {
			t.Fatalf("sysctl %s=1 in %s: %v", key, ns, err)
		}
	}
}

// ErrNoFlow is returned by ConntrackFlow when no entry matches.
var ErrNoFlow = errors.New("no conntrack entry")

// ConntrackFlow returns lab namespace ns's IPv4 or IPv6 TCP conntrack entry
// whose original direction leaves from src.
func ConntrackFlow(ns string, src netip.AddrPort) (Flow, error) {
	fam := netlink.InetFamily(unix.AF_INET)
	if src.Addr().Is6() {
		fam = unix.AF_INET6
	}
	var flows []*netlink.ConntrackFlow
	if err := lab.Do(ns, func() (err error) {
		flows, err = netlink.ConntrackTableList(netlink.ConntrackTable, fam)
		return err
	}); err != nil {
		return Flow{}, fmt.Errorf("conntrack table of %s: %w", ns, err)
	}
	tuple := func(x netlink.IPTuple) string {
		a, _ := netip.AddrFromSlice(x.SrcIP)
		b, _ := netip.AddrFromSlice(x.DstIP)
		return netip.AddrPortFrom(a.Unmap(), x.SrcPort).String() + ">" + netip.AddrPortFrom(b.Unmap(), x.DstPort).String()
	}
	for _, f := range flows {
		a, _ := netip.AddrFromSlice(f.Forward.SrcIP)
		if f.Forward.Protocol == unix.IPPROTO_TCP && a.Unmap() == src.Addr() && f.Forward.SrcPort == src.Port() {
			return Flow{Orig: tuple(f.Forward), Reply: tuple(f.Reverse), Start: f.TimeStart, Packets: f.Forward.Packets}, nil
		}
	}
	return Flow{}, fmt.Errorf("%w from %s in %s", ErrNoFlow, src, ns)
}
