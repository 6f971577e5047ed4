//go:build linux

package lab_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/labtest"
)

// Environment of the child process TestDownAfterCrash starts: it builds the
// lab named by crashChildEnv, with its state in crashDirEnv, then waits to be
// killed.
const (
	crashChildEnv = "WEFT_LAB_TEST_CRASH_CHILD"
	crashDirEnv   = "WEFT_LAB_TEST_CRASH_DIR"
)

func TestMain(m *testing.M) {
	if name := os.Getenv(crashChildEnv); name != "" {
		os.Exit(crashChild(name, os.Getenv(crashDirEnv)))
	}
	os.Exit(m.Run())
}

// crashChild builds a lab, starts a process inside node 1, reports that
// process's pid on stdout and blocks until it is killed.
func crashChild(name, dir string) int {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	l, err := lab.Up(ctx, log, lab.Options{Name: name, Nodes: 2, Outside: true, StateDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	n1, _ := l.Node(1)
	cmd := lab.Command(ctx, n1.NS, "sleep", "600")
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ready %d\n", cmd.Process.Pid)
	select {}
}

func TestLab(t *testing.T) {
	labtest.RequireRoot(t)
	root := watchRoot(t)
	threadsBefore := threadNetns(t)
	dir := t.TempDir()
	l := labtest.New(t, lab.Options{Nodes: 3, Far: []int{3}, Outside: true, IPv6: true, StateDir: dir})
	root.check(t, "after up")
	if got := labNetns(t, l.Name()); len(got) != 7 {
		t.Errorf("lab namespaces %v, want 7", got)
	}

	t.Run("NodesPingEachOther", func(t *testing.T) { testNodesPing(t, l) })
	t.Run("Outside", func(t *testing.T) { testOutside(t, l) })
	t.Run("FarNodeIsRouted", func(t *testing.T) { testFarRouted(t, l) })
	t.Run("Forwarding", func(t *testing.T) { testForwarding(t, l) })
	t.Run("Pods", func(t *testing.T) { testPods(t, l) })
	t.Run("Do", func(t *testing.T) { testDo(t, l) })
	t.Run("State", func(t *testing.T) { testState(t, l, dir) })
	root.check(t, "after use")
	if after := threadNetns(t); len(after) != 1 || len(threadsBefore) != 1 || !sameKeys(after, threadsBefore) {
		t.Errorf("threads left in other namespaces: before %v, after %v", threadsBefore, after)
	}

	if err := l.Down(t.Context()); err != nil {
		t.Fatalf("down: %v", err)
	}
	if got := labNetns(t, l.Name()); len(got) != 0 {
		t.Errorf("namespaces left after down: %v", got)
	}
	if _, err := os.Stat(lab.StatePath(dir, l.Name())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file left after down: %v", err)
	}
	if err := l.Down(t.Context()); err != nil {
		t.Errorf("second down: %v", err)
	}
	root.check(t, "after down")
}

func testNodesPing(t *testing.T, l *lab.Lab) {
	for _, from := range l.Nodes() {
		for _, to := range l.Nodes() {
			for _, a := range to.Addrs() {
				mustPing(t, from.NS, a)
			}
		}
	}
}

func testOutside(t *testing.T, l *lab.Lab) {
	out, ok := l.Outside()
	if !ok {
		t.Fatal("no outside host")
	}
	for _, n := range l.Nodes() {
		for i, a := range out.Addrs() {
			mustPing(t, n.NS, a)
			mustPing(t, out.NS, n.Addrs()[i])
		}
	}
}

// A far node is reached through the router: what vxlan DirectRouting must
// encapsulate; a near node is on the link.
func testFarRouted(t *testing.T, l *lab.Lab) {
	n1, _ := l.Node(1)
	n2, _ := l.Node(2)
	n3, _ := l.Node(3)
	if !n3.Far || n1.Far {
		t.Fatalf("far flags: n1 %v n3 %v", n1.Far, n3.Far)
	}
	for _, c := range []struct {
		dst  netip.Addr
		want string
	}{
		{n3.Addrs()[0], "via 192.168.100.1 dev eth0"},
		{n3.Addrs()[1], "via fd00:100::1 dev eth0"},
		{n2.Addrs()[0], "192.168.100.12 dev eth0 src 192.168.100.11"},
	} {
		out, err := lab.Exec(t.Context(), n1.NS, "ip", "route", "get", c.dst.String())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, c.want) {
			t.Errorf("route to %s from n1: %q, want %q", c.dst, out, c.want)
		}
	}
}

func testForwarding(t *testing.T, l *lab.Lab) {
	for _, n := range l.Nodes() {
		for _, key := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
			out, err := lab.Exec(t.Context(), n.NS, "sysctl", "-n", key)
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(out) != "1" {
				t.Errorf("%s in %s = %q, want 1", key, n.NS, out)
			}
		}
	}
}

func testPods(t *testing.T, l *lab.Lab) {
	p4, p6 := netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")
	pod, err := l.WirePod(t.Context(), 1, 1, p4, p6)
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Addr{netip.MustParseAddr("10.244.1.1"), netip.MustParseAddr("fd00:10:244:1::1")}; !reflect.DeepEqual(pod.Gateway, want) {
		t.Errorf("pod gateway %v, want %v", pod.Gateway, want)
	}
	for _, gw := range pod.Gateway {
		mustPing(t, pod.NS, gw)
	}
	n1, _ := l.Node(1)
	mustPing(t, n1.NS, netip.MustParseAddr("10.244.1.2"))
	// Node 2 reaches the pod through node 1, as host-gw would route it.
	n2, _ := l.Node(2)
	for _, r := range [][]string{{"10.244.1.0/24", "192.168.100.11"}, {"fd00:10:244:1::/64", "fd00:100::b"}} {
		if _, err := lab.Exec(t.Context(), n2.NS, "ip", "route", "add", r[0], "via", r[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range pod.Link.Addrs {
		mustPing(t, n2.NS, a.Addr())
	}
	// The outside world has no route to pods: Ping reports the silence.
	outside, _ := l.Outside()
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if rtt, err := lab.Ping(ctx, outside.NS, pod.Link.Addrs[0].Addr()); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("outside pinged a pod: rtt %v, err %v; want a deadline error", rtt, err)
	}
	if _, err := l.WirePod(t.Context(), 1, 1, p4); !errors.Is(err, lab.ErrInvalid) {
		t.Errorf("wiring a wired pod: %v, want ErrInvalid", err)
	}

	empty, err := l.AddPodNS(t.Context(), 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if empty.NS != l.Name()+"-n2-p1" || empty.Path != "/run/netns/"+empty.NS {
		t.Errorf("pod ns %+v", empty)
	}
	out, err := lab.Exec(t.Context(), empty.NS, "ip", "-o", "link")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "lo:") {
		t.Errorf("empty pod namespace has links: %q", out)
	}
	if _, err := l.AddPodNS(t.Context(), 9, 1); !errors.Is(err, lab.ErrNotFound) {
		t.Errorf("pod on node 9: %v, want ErrNotFound", err)
	}
}

// Do runs in the namespace and every thread is back in its own afterwards.
func testDo(t *testing.T, l *lab.Lab) {
	n2, _ := l.Node(2)
	for range 20 {
		err := lab.Do(n2.NS, func() error {
			link, err := netlink.LinkByName(lab.NodeIface)
			if err != nil {
				return err
			}
			addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			if len(addrs) != 1 || addrs[0].IP.String() != "192.168.100.12" {
				return fmt.Errorf("eth0 addresses in n2: %v", addrs)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := lab.Do(n2.NS, func() error { return os.ErrClosed }); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Do error = %v, want fn's error", err)
	}
	if err := lab.Do(l.Name()+"-nope", func() error { return nil }); err == nil {
		t.Error("Do in a missing namespace succeeded")
	}
}

func testState(t *testing.T, l *lab.Lab, dir string) {
	got, err := lab.LoadState(dir, l.Name())
	if err != nil {
		t.Fatal(err)
	}
	if want := l.Topology(); !reflect.DeepEqual(*got, want) {
		t.Errorf("state file:\n%+v\nwant\n%+v", *got, want)
	}
	if len(got.Pods) != 2 || got.Pods[0].Link == nil || got.Pods[1].Link != nil {
		t.Errorf("state pods %+v", got.Pods)
	}
	loaded, err := lab.Load(nil, dir, l.Name())
	if err != nil {
		t.Fatal(err)
	}
	if n1, err := loaded.Node(1); err != nil || n1.NS != l.Name()+"-n1" {
		t.Errorf("loaded lab node 1: %+v %v", n1, err)
	}
	names, err := lab.List()
	if err != nil || !strings.Contains(" "+strings.Join(names, " ")+" ", " "+l.Name()+" ") {
		t.Errorf("List() = %v, %v; want it to hold %s", names, err, l.Name())
	}
}

// Two labs with the same addresses run side by side and go independently.
func TestTwoLabs(t *testing.T) {
	labtest.RequireRoot(t)
	root := watchRoot(t)
	labs, errs := make([]*lab.Lab, 2), make([]error, 2)
	var wg sync.WaitGroup
	for i := range labs {
		name, err := lab.RandomName(labtest.NamePrefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := lab.Down(context.Background(), nil, name, ""); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() { // both labs are built at the same time
			labs[i], errs[i] = lab.Up(t.Context(), labtest.Logger(t), lab.Options{Name: name, Nodes: 2, Far: []int{2}})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	root.check(t, "after up")
	for _, l := range labs {
		n1, _ := l.Node(1)
		n2, _ := l.Node(2)
		mustPing(t, n1.NS, n2.Addrs()[0])
	}
	if err := labs[0].Down(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := labNetns(t, labs[0].Name()); len(got) != 0 {
		t.Errorf("first lab left %v", got)
	}
	if got := labNetns(t, labs[1].Name()); len(got) != 5 {
		t.Errorf("second lab has %v, want 5 namespaces", got)
	}
	n1, _ := labs[1].Node(1)
	n2, _ := labs[1].Node(2)
	mustPing(t, n2.NS, n1.Addrs()[0])
	// A dual-stack pod in a lab whose underlay is IPv4 only.
	pod, err := labs[1].WirePod(t.Context(), 1, 3, netip.MustParsePrefix("10.244.7.0/24"), netip.MustParsePrefix("fd00:7::/64"))
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range pod.Link.Addrs {
		mustPing(t, pod.NS, pod.Gateway[i])
		mustPing(t, n1.NS, a.Addr())
	}
	if got := pod.Link.Addrs[1].String(); got != "fd00:7::4/64" {
		t.Errorf("pod 3 IPv6 address %s, want fd00:7::4/64", got)
	}
	root.check(t, "after first down")
}

// Up refuses a name in use and leaves the existing lab alone.
func TestUpExists(t *testing.T) {
	l := labtest.New(t, lab.Options{Nodes: 1})
	_, err := lab.Up(t.Context(), labtest.Logger(t), lab.Options{Name: l.Name(), Nodes: 1})
	if !errors.Is(err, lab.ErrExists) {
		t.Fatalf("second Up = %v, want ErrExists", err)
	}
	if got := labNetns(t, l.Name()); len(got) != 2 {
		t.Errorf("namespaces %v, want the 2 of the first lab", got)
	}
}

// An Up interrupted at any point leaves nothing behind.
func TestUpRollback(t *testing.T) {
	labtest.RequireRoot(t)
	root := watchRoot(t)
	name, err := lab.RandomName(labtest.NamePrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Down(context.Background(), nil, name, "") })
	for delay := time.Duration(0); ; delay += 5 * time.Millisecond {
		ctx, cancel := context.WithTimeout(t.Context(), delay)
		l, err := lab.Up(ctx, nil, lab.Options{Name: name, Nodes: 3, Far: []int{3}, Outside: true, IPv6: true})
		cancel()
		if err == nil {
			t.Logf("up completed with a %v deadline", delay)
			if err := l.Down(t.Context()); err != nil {
				t.Fatal(err)
			}
			break
		}
		if got := labNetns(t, name); len(got) != 0 {
			t.Fatalf("after Up failed with %v deadline (%v): namespaces left %v", delay, err, got)
		}
		if delay > 10*time.Second {
			t.Fatalf("up never completed: %v", err)
		}
	}
	root.check(t, "after rollbacks")
}

// Down by name cleans up a lab whose builder was SIGKILLed, including a
// process it had started in a node.
func TestDownAfterCrash(t *testing.T) {
	labtest.RequireRoot(t)
	root := watchRoot(t)
	name, err := lab.RandomName(labtest.NamePrefix)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Cleanup(func() { _ = lab.Down(context.Background(), nil, name, dir) })
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), crashChildEnv+"="+name, crashDirEnv+"="+dir)
	child.Stderr = os.Stderr
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	sleeper, perr := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ready ")))
	if err != nil || perr != nil {
		_ = child.Process.Kill()
		_ = child.Wait()
		t.Fatalf("child: %q %v %v", line, err, perr)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	if got := labNetns(t, name); len(got) != 5 {
		t.Errorf("crashed lab has %v, want 5 namespaces", got)
	}
	if gone(sleeper) {
		t.Fatalf("process %d in the lab died with its parent", sleeper)
	}

	if err := lab.Down(t.Context(), labtest.Logger(t), name, dir); err != nil {
		t.Fatalf("down: %v", err)
	}
	if got := labNetns(t, name); len(got) != 0 {
		t.Errorf("namespaces left after down: %v", got)
	}
	if !gone(sleeper) {
		t.Errorf("process %d still alive after down", sleeper)
	}
	if _, err := os.Stat(lab.StatePath(dir, name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file left after down: %v", err)
	}
	root.check(t, "after down")
}
