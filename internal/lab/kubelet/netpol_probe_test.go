//go:build linux

package kubelet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Probes of the NetworkPolicy tests (netpol_ping_test.go) in the test pods'
// network namespaces: listeners, and the 100 Hz ping with the time of each
// reply.

// podNetNS returns the path of a pod's network namespace.
func (l *testLab) podNetNS(t *testing.T, p podInfo) string {
	t.Helper()
	pid, err := l.podNetPID(p)
	if err != nil {
		t.Fatal(err)
	}
	return "/proc/" + strconv.Itoa(pid) + "/ns/net"
}

// podListen listens on TCP at addr (a free port) in the network namespace
// at path, until the test ends.
func podListen(t *testing.T, path string, addr netip.Addr) net.Listener {
	t.Helper()
	target, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	var ln net.Listener
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		ln, err = net.Listen("tcp", net.JoinHostPort(addr.String(), "0"))
		if rerr := netns.Set(orig); rerr != nil {
			errc <- errors.Join(err, rerr) // the thread stays locked and ends with this goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("listen in %s: %v", path, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// podEchoServer echoes TCP on a free port of pod p until the test ends.
func podEchoServer(t *testing.T, l *testLab, p podInfo) netip.AddrPort {
	t.Helper()
	ln := podListen(t, l.podNetNS(t, p), p.ip)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				buf := make([]byte, 512)
				for {
					n, err := conn.Read(buf)
					if err != nil {
						return
					}
					if _, err := conn.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// tsPinger is the 100 Hz ping of pinger (pingInterval) that also keeps
// when each reply came (ping -D).
type tsPinger struct {
	*pinger
	tmu     sync.Mutex
	replies []time.Time
}

var npStampRe = regexp.MustCompile(`^\[(\d+)\.(\d+)\]`)

func (l *testLab) startTSPing(t *testing.T, ctx context.Context, src, dst podInfo) *tsPinger {
	t.Helper()
	p := l.startTSPingNoWait(t, src, dst)
	p.waitReply(t, time.Time{}, 10*time.Second)
	return p
}

// startTSPingNoWait starts the ping without waiting for a reply (a ping
// that must not be answered).
func (l *testLab) startTSPingNoWait(t *testing.T, src, dst podInfo) *tsPinger {
	t.Helper()
	p := &tsPinger{pinger: &pinger{name: fmt.Sprintf("%s(%s) -> %s(%s)", src.node, src.ip, dst.node, dst.ip),
		seqs: map[int]bool{}, done: make(chan struct{})}}
	p.cmd = exec.Command("nsenter", "--net="+l.podNetNS(t, src), "--",
		"ping", "-D", "-n", "-i", pingInterval, "-W", "1", "-w", "600", dst.ip.String())
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.begin = time.Now()
	go p.read(out)
	t.Cleanup(func() { p.stop() })
	return p
}

func (p *tsPinger) read(out io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		if m := seqRe.FindStringSubmatch(line); m != nil && strings.Contains(line, "bytes from") {
			seq, _ := strconv.Atoi(m[1])
			if p.seqs[seq] || strings.Contains(line, "DUP!") {
				p.dups++
			}
			p.seqs[seq] = true
			if s := npStampRe.FindStringSubmatch(line); s != nil {
				sec, _ := strconv.ParseInt(s[1], 10, 64)
				us, _ := strconv.ParseInt((s[2] + "000000")[:6], 10, 64)
				p.tmu.Lock()
				p.replies = append(p.replies, time.Unix(sec, us*1000))
				p.tmu.Unlock()
			}
		} else if sentRe.MatchString(line) {
			p.summary = line
		}
		p.mu.Unlock()
	}
	_ = p.cmd.Wait()
}

// waitReply waits up to d for a reply received after since, and returns
// when it was received.
func (p *tsPinger) waitReply(t *testing.T, since time.Time, d time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		p.tmu.Lock()
		var at time.Time
		if i := sort.Search(len(p.replies), func(i int) bool { return p.replies[i].After(since) }); i < len(p.replies) {
			at = p.replies[i]
		}
		p.tmu.Unlock()
		if !at.IsZero() {
			return at
		}
		if time.Now().After(deadline) {
			t.Fatalf("ping %s: no reply within %v: %s", p.name, d, p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSilent waits up to d until no reply has come for quiet, and at least
// quiet after since; it returns when the last reply came.
func (p *tsPinger) waitSilent(t *testing.T, since time.Time, quiet, d time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		p.tmu.Lock()
		var last time.Time
		if len(p.replies) > 0 {
			last = p.replies[len(p.replies)-1]
		}
		p.tmu.Unlock()
		now := time.Now()
		if now.Sub(last) > quiet && now.Sub(since) > quiet {
			return last
		}
		if now.After(deadline) {
			t.Fatalf("ping %s: still answered %v after the deny-all policy was applied", p.name, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
