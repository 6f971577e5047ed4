package netpol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/internal/netfilter/netfiltertest"
)

// Echo servers in the pods: TCP, UDP and (when the kernel has it) SCTP on
// every port of servedPorts, on both families. Each echoes what it gets.
// They stop, and the test waits for their goroutines, when the test ends.

// serve starts pod p's echo servers.
func serveEcho(t *testing.T, p *dpPod, sctp bool) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var closers []io.Closer
	track := func(c io.Closer) {
		mu.Lock()
		defer mu.Unlock()
		closers = append(closers, c)
	}
	t.Cleanup(func() {
		mu.Lock()
		for _, c := range closers {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	for proto, ports := range servedPorts() {
		for _, port := range ports {
			if proto == SCTP && !sctp {
				continue
			}
			var err error
			switch proto {
			case TCP:
				err = serveTCP(p.ns, port, &wg, track)
			case UDP:
				err = serveUDP(p.ns, port, &wg, track)
			case SCTP:
				err = serveSCTP(p.ns, port, &wg, track)
			}
			if err != nil {
				t.Fatalf("pod %s: %s server on port %d: %v", p.Key(), proto, port, err)
			}
		}
	}
}

// echo copies what c sends back to it until either side closes.
func echoConn(c io.ReadWriteCloser, wg *sync.WaitGroup, track func(io.Closer)) {
	track(c)
	wg.Go(func() {
		defer c.Close()
		_, _ = io.Copy(c, c)
	})
}

func serveTCP(ns string, port uint16, wg *sync.WaitGroup, track func(io.Closer)) error {
	var ln net.Listener
	if err := netfiltertest.InNS(ns, func() (err error) {
		// No keepalives: an idle connection sends nothing, so a cut
		// one adds nothing to the drop counters later tests read.
		lc := net.ListenConfig{KeepAlive: -1}
		ln, err = lc.Listen(context.Background(), "tcp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		return err
	}
	track(ln)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			echoConn(c, wg, track)
		}
	})
	return nil
}

func serveUDP(ns string, port uint16, wg *sync.WaitGroup, track func(io.Closer)) error {
	var pc net.PacketConn
	if err := netfiltertest.InNS(ns, func() (err error) {
		pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		return err
	}
	track(pc)
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	})
	return nil
}

// sctpAvailable reports whether namespace ns can make an SCTP socket (the
// kernel has SCTP built in or as a module it loads on demand).
func sctpAvailable(ns string) bool {
	err := netfiltertest.InNS(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
		if err == nil {
			unix.Close(fd)
		}
		return err
	})
	return err == nil
}

// streamSocket makes a non-blocking stream socket of proto (TCP, or
// one-to-one style SCTP) in ns for both families, runs prepare on it, and
// wraps it in a pollable *os.File (Go has no SCTP in package net; read and
// write on such a socket are a stream's).
func streamSocket(ns string, proto int, prepare func(fd int) error) (*os.File, error) {
	var f *os.File
	err := netfiltertest.InNS(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("socket of protocol %d: %w", proto, err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			unix.Close(fd)
			return fmt.Errorf("socket: IPV6_V6ONLY: %w", err)
		}
		if err := prepare(fd); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), "sctp")
		return nil
	})
	return f, err
}

// sockaddr returns ip:port as an AF_INET6 socket address (IPv4 mapped).
func sockaddr(ip net.IP, port uint16) *unix.SockaddrInet6 {
	sa := &unix.SockaddrInet6{Port: int(port)}
	copy(sa.Addr[:], ip.To16())
	return sa
}

func serveSCTP(ns string, port uint16, wg *sync.WaitGroup, track func(io.Closer)) error {
	ln, err := streamSocket(ns, unix.IPPROTO_SCTP, func(fd int) error {
		if err := unix.Bind(fd, sockaddr(net.IPv6unspecified, port)); err != nil {
			return fmt.Errorf("sctp bind port %d: %w", port, err)
		}
		if err := unix.Listen(fd, 64); err != nil {
			return fmt.Errorf("sctp listen: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	track(ln)
	rc, err := ln.SyscallConn()
	if err != nil {
		return fmt.Errorf("sctp listener: %w", err)
	}
	wg.Go(func() {
		for {
			var nfd int
			var aerr error
			if err := rc.Read(func(fd uintptr) bool {
				nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
				return !errors.Is(aerr, unix.EAGAIN)
			}); err != nil {
				return // closed
			}
			if aerr != nil {
				continue
			}
			echoConn(os.NewFile(uintptr(nfd), "sctp-conn"), wg, track)
		}
	})
	return nil
}
