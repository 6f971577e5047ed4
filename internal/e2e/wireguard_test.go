//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/testenv"
)

// This machine's kernel has no WireGuard, so every node here runs the
// userspace path (wireguard-go on a persistent TUN); wg(8) reaches it on
// the node's control socket (cluster.WG).

func upWG(t *testing.T, nodes int, netConf string) *cluster.Cluster {
	return up(t, cluster.Options{Lab: lab.Options{Nodes: nodes}, Backend: "wireguard", NetConf: netConf, Pods: 1})
}

// wgKey returns the public key node publishes in its lease.
func wgKey(t *testing.T, c *cluster.Cluster, node int) string {
	t.Helper()
	l, err := c.Lease(tctx(t), node)
	if err != nil {
		t.Fatal(err)
	}
	var d struct{ PublicKey string }
	if err := json.Unmarshal(l.Attrs.BackendData, &d); err != nil || d.PublicKey == "" {
		t.Fatalf("node %d lease data %s: %v", node, l.Attrs.BackendData, err)
	}
	return d.PublicKey
}

// wg runs wg(8) with args in node, against its weftd's devices.
func wg(t *testing.T, c *cluster.Cluster, node int, args ...string) string {
	t.Helper()
	out, err := lab.Exec(tctx(t), c.NodeNS(node), lab.WireGuardExec(c.NodeDir(node), append([]string{"wg"}, args...))...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitWG polls `wg show flannel-wg peers` on node until cond holds and
// returns how long that took; it fails the test after limit.
func waitWG(t *testing.T, c *cluster.Cluster, node int, limit time.Duration, what string, cond func(peers string) bool) time.Duration {
	t.Helper()
	limit = testenv.Scale(t, limit)
	start := time.Now()
	for {
		if cond(wg(t, c, node, "show", "flannel-wg", "peers")) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v; peers now:\n%s", what, limit, wg(t, c, node, "show", "flannel-wg", "peers"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The WireGuard peers are desired state: one removed by hand is back within
// 1 s, one added by hand is removed, and the peer of a lease deleted from
// the store goes within 1 s.
func TestWireGuardPeersDesiredState(t *testing.T) {
	c := upWG(t, 3, "")
	assertMatrix(t, c)
	k2, k3 := wgKey(t, c, 2), wgKey(t, c, 3)
	if peers := wg(t, c, 1, "show", "flannel-wg", "peers"); !strings.Contains(peers, k2) || !strings.Contains(peers, k3) {
		t.Fatalf("node 1 peers %q, want %s and %s", peers, k2, k3)
	}
	// wg's own view of a peer: endpoint and allowed IPs as flannel sets them.
	env2, _ := c.SubnetEnv(2)
	n2, _ := c.Lab().Node(2)
	if dump := wg(t, c, 1, "show", "flannel-wg", "dump"); !strings.Contains(dump, k2+"\t(none)\t"+n2.Addrs()[0].String()+":51820\t"+env2.Subnet.Masked().String()) {
		t.Errorf("node 2's peer on node 1:\n%s", dump)
	}

	wg(t, c, 1, "set", "flannel-wg", "peer", k2, "remove")
	took := waitWG(t, c, 1, time.Second, "peer removed by hand restored", func(p string) bool { return strings.Contains(p, k2) })
	t.Logf("a peer removed with wg set ... remove was back after %v", took.Round(time.Millisecond))

	stranger, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	sk := stranger.PublicKey().String()
	wg(t, c, 1, "set", "flannel-wg", "peer", sk, "allowed-ips", "10.99.0.0/24", "endpoint", "192.0.2.1:51820")
	took = waitWG(t, c, 1, time.Second, "peer added by hand removed", func(p string) bool { return !strings.Contains(p, sk) })
	t.Logf("a peer added by hand was gone after %v", took.Round(time.Millisecond))

	// The device deleted: wireguard-go starts again on a new TUN, with the
	// address, the route and the peers.
	ifindex := func() string {
		out, _ := lab.Exec(context.Background(), c.NodeNS(1), "cat", "/sys/class/net/flannel-wg/ifindex")
		return strings.TrimSpace(out)
	}
	old := ifindex()
	run(t, c.NodeNS(1), "ip", "link", "del", "flannel-wg")
	took = waitWG(t, c, 1, 2*time.Second, "device deleted: recreated with its peers", func(p string) bool {
		now := ifindex()
		return now != "" && now != old && strings.Contains(p, k2) && strings.Contains(p, k3)
	})
	t.Logf("flannel-wg deleted: back with its peers after %v", took.Round(time.Millisecond))
	assertPing(t, c.Pods()[0].NS, c.Pods()[1].Addrs[0], true)

	// Node 3 leaves: its weftd stops and its lease is deleted.
	if err := c.KillWeftd(3, false); err != nil {
		t.Fatal(err)
	}
	env3, _ := c.SubnetEnv(3)
	if err := c.Delete(tctx(t), cluster.Prefix+"/subnets/"+strings.ReplaceAll(env3.Subnet.Masked().String(), "/", "-")); err != nil {
		t.Fatal(err)
	}
	took = waitWG(t, c, 1, time.Second, "peer of a deleted lease removed", func(p string) bool { return !strings.Contains(p, k3) })
	t.Logf("the peer of a deleted lease was gone after %v", took.Round(time.Millisecond))
	assertPing(t, c.Pods()[0].NS, c.Pods()[1].Addrs[0], true)
}

// assertPing checks that ns reaches addr (or, with want false, that it
// does not).
func assertPing(t *testing.T, ns string, addr netip.Addr, want bool) {
	t.Helper()
	_, err := lab.Exec(context.Background(), ns, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", addr.String())
	if got := err == nil; got != want {
		t.Errorf("ping %s -> %s: answered %v, want %v (%v)", ns, addr, got, want, err)
	}
}

// On the underlay, the two nodes exchange UDP between their ListenPorts and
// nothing else, and a marker a pod sends to another never appears in
// clear.
func TestWireGuardWire(t *testing.T) {
	c := upWG(t, 2, "")
	pods := c.Pods()
	n1, _ := c.Lab().Node(1)
	n2, _ := c.Lab().Node(2)
	pcap := filepath.Join(t.TempDir(), "underlay.pcap")
	dump := lab.Command(context.Background(), c.NodeNS(1), "tcpdump", "-i", "eth0", "-U", "-n", "-w", pcap,
		"ip", "and", "host", n1.Addrs()[0].String(), "and", "host", n2.Addrs()[0].String())
	var stderr bytes.Buffer
	dump.Stderr = &stderr
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = dump.Process.Kill(); _ = dump.Wait() }()
	for !strings.Contains(stderr.String(), "listening on") {
		time.Sleep(20 * time.Millisecond)
	}
	marker := []byte("weft-wireguard-marker-7f3a9c")
	pc := listenUDPIn(t, pods[1].NS, pods[1].Addrs[0], 7777)
	if err := lab.Do(pods[0].NS, func() error {
		conn, err := net.Dial("udp", net.JoinHostPort(pods[1].Addrs[0].String(), "7777"))
		if err != nil {
			return err
		}
		defer conn.Close()
		for range 5 {
			if _, err := conn.Write(marker); err != nil {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 200)
	n, _, err := pc.ReadFrom(buf)
	if err != nil || !bytes.Equal(buf[:n], marker) {
		t.Fatalf("the pod did not receive the marker: %q %v", buf[:n], err)
	}
	transfer(t, pods[0].NS, pods[1].NS, pods[1].Addrs[0], 1<<20)
	time.Sleep(200 * time.Millisecond)
	_ = dump.Process.Signal(syscall.SIGTERM)
	_ = dump.Wait()

	raw, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, marker) {
		t.Error("the marker crossed the underlay in clear")
	}
	out, err := exec.Command("tcpdump", "-r", pcap, "-n", "-q").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	a, b := n1.Addrs()[0].String()+".51820", n2.Addrs()[0].String()+".51820"
	for _, l := range lines {
		if !(strings.Contains(l, a+" > "+b+": UDP") || strings.Contains(l, b+" > "+a+": UDP")) {
			t.Errorf("not WireGuard between the ListenPorts: %s", l)
		}
	}
	if len(lines) < 10 {
		t.Errorf("only %d packets captured", len(lines))
	}
	t.Logf("%d underlay packets, all UDP %s <-> %s", len(lines), a, b)
}

// With a PSK every node is configured with it and traffic flows; a node
// started (without a device, as a new node) with another PSK completes no
// handshake and gets no traffic.
func TestWireGuardPSK(t *testing.T) {
	psk, err := wgtypes.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	conf := func(k wgtypes.Key) string {
		return `{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PSK":"` + k.String() + `"}}`
	}
	c := upWG(t, 3, conf(psk))
	assertMatrix(t, c)
	if keys := wg(t, c, 1, "show", "flannel-wg", "preshared-keys"); strings.Count(keys, psk.String()) != 2 {
		t.Errorf("node 1's peers' pre-shared keys:\n%s\nwant the PSK on both", keys)
	}
	if logs, _ := os.ReadFile(c.LogFile(1)); bytes.Contains(logs, []byte(psk.String())) {
		t.Error("the PSK is in weftd's log")
	}
	other, _ := wgtypes.GenerateKey()
	if err := c.KillWeftd(3, false); err != nil {
		t.Fatal(err)
	}
	// Node 3 starts as a new node would, without a device: a kernel
	// device kept across the restart keeps its sessions, made with the old
	// PSK, until they are rekeyed (WireGuard changes a peer's PSK for the
	// next handshake only), and would carry traffic until then.
	run(t, c.NodeNS(3), "ip", "link", "del", "flannel-wg")
	if err := c.Put(tctx(t), cluster.Prefix+"/config", conf(other)); err != nil {
		t.Fatal(err)
	}
	if err := c.StartWeftd(3); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(tctx(t), 3); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(tctx(t), cluster.Prefix+"/config", conf(psk)); err != nil {
		t.Fatal(err)
	}
	if keys := wg(t, c, 3, "show", "flannel-wg", "preshared-keys"); strings.Count(keys, other.String()) != 2 {
		t.Errorf("node 3's peers' pre-shared keys:\n%s\nwant the other PSK", keys)
	}
	pods := c.Pods()
	assertPing(t, pods[0].NS, pods[1].Addrs[0], true)
	assertPing(t, pods[2].NS, pods[0].Addrs[0], false)
	assertPing(t, pods[0].NS, pods[2].Addrs[0], false)
}

// The private key file is created 0400 and reused across restarts (the
// same public key in the lease). A file that holds no key, or one others
// may read, stops weftd with an error naming the file, which is left as it
// was.
func TestWireGuardKeyFile(t *testing.T) {
	c := upWG(t, 2, "")
	file := filepath.Join(c.NodeDir(1), "wgkey")
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o400 {
		t.Fatalf("key file %s: %v mode %v, want 0400", file, err, st.Mode())
	}
	data, _ := os.ReadFile(file)
	priv, err := wgtypes.ParseKey(string(data))
	if err != nil {
		t.Fatal(err)
	}
	if got := wgKey(t, c, 1); got != priv.PublicKey().String() {
		t.Fatalf("lease key %s is not the file's", got)
	}
	if err := c.KillWeftd(1, false); err != nil {
		t.Fatal(err)
	}
	if err := c.StartWeftd(1); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(tctx(t), 1); err != nil {
		t.Fatal(err)
	}
	if got := wgKey(t, c, 1); got != priv.PublicKey().String() {
		t.Errorf("after a restart the lease carries %s, not the file's key", got)
	}
	assertMatrix(t, c)
	if err := c.KillWeftd(1, false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		content []byte
		mode    os.FileMode
		want    string
	}{
		{[]byte("not a key\n"), 0o400, "holds no valid private key"},
		{data, 0o644, "run `chmod 0400 " + file + "`"},
	} {
		if err := os.Chmod(file, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, tc.content, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(file, tc.mode); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		args := c.WeftdArgs(1)
		cmd := lab.Command(ctx, c.NodeNS(1), args...)
		cmd.Env = c.WeftdEnv(1)
		out, err := cmd.CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("weftd with a bad key file: %v, want a non-zero exit\n%s", err, out)
		}
		if !bytes.Contains(out, []byte(file)) || !bytes.Contains(out, []byte(tc.want)) {
			t.Errorf("weftd's error does not name %s and say %q:\n%s", file, tc.want, out)
		}
		if now, _ := os.ReadFile(file); !bytes.Equal(now, tc.content) {
			t.Errorf("the key file was rewritten: %q", now)
		}
		if st, _ := os.Stat(file); st.Mode().Perm() != tc.mode {
			t.Errorf("the key file's mode changed to %v", st.Mode())
		}
		if tc.mode == 0o400 && bytes.Contains(out, tc.content[:5]) {
			t.Errorf("weftd printed the file's content:\n%s", out)
		}
	}
}

// kill -9 and restart under a 100 Hz ping: the TUN and its route stay, the
// new weftd resumes from the peer snapshot, and a new handshake brings the
// traffic back (see killRestart).
func TestWireGuardKillRestart(t *testing.T) { killRestart(t, "wireguard", "flannel-wg") }

// 32 MiB each way, verified, through TSO and GRO on both TUNs and UDP
// GSO/GRO on the underlay; then the memory wireguard-go's buffer pools took
// goes back to the OS: each weftd's RSS is under 80 MiB within 30 s of the
// traffic stopping (it stayed at 200-250 MiB for minutes before trimMemory;
// idle it is about 30 MiB).
func TestWireGuardTransferVerified(t *testing.T) {
	c := upWG(t, 2, "")
	pods := c.Pods()
	transfer(t, pods[0].NS, pods[1].NS, pods[1].Addrs[0], 32<<20)
	transfer(t, pods[1].NS, pods[0].NS, pods[0].Addrs[0], 32<<20)
	rss := func(node int) int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid(node)))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
				kb, _ := strconv.Atoi(f[1])
				return kb >> 10
			}
		}
		t.Fatal("no VmRSS")
		return 0
	}
	// A few seconds at full speed fill the pools as a busy node's would.
	iperf(t, pods[0].NS, pods[1].NS, pods[1].Addrs[0], 3)
	peak := []int{rss(1), rss(2)}
	start := time.Now()
	for rss(1) >= 80 || rss(2) >= 80 {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("weftd RSS %d and %d MiB 30 s after the transfers (%d and %d MiB at their end); want under 80", rss(1), rss(2), peak[0], peak[1])
		}
		time.Sleep(time.Second)
	}
	t.Logf("weftd RSS %d and %d MiB at the end of the transfers, %d and %d MiB %v later", peak[0], peak[1], rss(1), rss(2), time.Since(start).Round(time.Second))
}

// Dual-stack in flannel's Modes: separate (flannel-wg for IPv4 on
// ListenPort, flannel-wg-v6 for IPv6 on ListenPortV6) and auto (both
// families on flannel-wg).
func TestWireGuardDualStack(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		devs  map[string][]string // device -> routes on it
		ports string
	}{
		{"separate", map[string][]string{"flannel-wg": {"10.244.0.0/16"}, "flannel-wg-v6": {"fd00:10:244::/56"}}, "51820 51821"},
		{"auto", map[string][]string{"flannel-wg": {"10.244.0.0/16", "fd00:10:244::/56"}}, "51820"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			conf := `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"wireguard","Mode":"` + tc.mode + `"}}`
			c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2, IPv6: true}, Backend: "wireguard", NetConf: conf, Pods: 1})
			if n := podsWithIPv6(c); n != 2 {
				t.Fatalf("%d pods have an IPv6 address, want 2: %+v", n, c.Pods())
			}
			assertMatrix(t, c)
			var ports []string
			for dev, routes := range tc.devs {
				for _, r := range routes {
					fam := map[bool]string{true: "-6", false: "-4"}[strings.Contains(r, ":")]
					if got := run(t, c.NodeNS(1), "ip", fam, "route", "show", r); !strings.Contains(got, "dev "+dev) {
						t.Errorf("route %s: %q, want it on %s", r, got, dev)
					}
				}
				ports = append(ports, strings.TrimSpace(wg(t, c, 1, "show", dev, "listen-port")))
			}
			slices.Sort(ports)
			if strings.Join(ports, " ") != tc.ports {
				t.Errorf("listen ports %v, want %s", ports, tc.ports)
			}
			l, err := c.Lease(tctx(t), 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Attrs.BackendData) == 0 || len(l.Attrs.BackendV6Data) == 0 {
				t.Errorf("lease data %s / %s, want both families", l.Attrs.BackendData, l.Attrs.BackendV6Data)
			}
		})
	}
}

// The kernel path, where the kernel has WireGuard: flannel-wg is a kernel
// wireguard device configured over generic netlink, pods ping across (a
// node behind the router too), the device keeps its peers through a kill
// -9 of weftd without a ping lost, and a peer added while weftd was down is
// removed once the leases are listed.
func TestWireGuardKernelPath(t *testing.T) {
	needRoot(t)
	if err := kernelCanMake(t, "wireguard"); err != nil {
		t.Skipf("the kernel has no WireGuard (%v): the kernel path is tested where it has it; here the userspace "+
			"path's tests run, and the kernel path's netlink and wgctrl calls are tested on fakes (internal/backend/wireguard)", err)
	}
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 3, Far: []int{3}}, Backend: "wireguard", Pods: 1,
		WeftdArgs: []string{"--wireguard-path=kernel"}})
	if link := run(t, c.NodeNS(1), "ip", "-d", "link", "show", "flannel-wg"); !strings.Contains(link, "wireguard") ||
		!strings.Contains(link, "mtu 1420") {
		t.Errorf("flannel-wg: %s", link)
	}
	assertMatrix(t, c)
	pods := c.Pods()
	res, _ := floodPing(t, pods[0].NS, pods[1].Addrs[0], 300)
	time.Sleep(500 * time.Millisecond)
	if err := c.KillWeftd(1, true); err != nil {
		t.Fatal(err)
	}
	stranger, _ := wgtypes.GeneratePrivateKey()
	sk := stranger.PublicKey().String()
	wg(t, c, 1, "set", "flannel-wg", "peer", sk, "allowed-ips", "10.99.0.0/24")
	if err := c.StartWeftd(1); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(tctx(t), 1); err != nil {
		t.Fatal(err)
	}
	if r := <-res; r[0] != r[1] {
		t.Errorf("lost %d of %d pings across a kill -9 of weftd on the kernel path", r[0]-r[1], r[0])
	}
	waitWG(t, c, 1, time.Second, "stale peer removed after the list", func(p string) bool { return !strings.Contains(p, sk) })
}

// weft status reads the userspace devices' peers through their control
// sockets: in sync on a healthy node; with weftd stopped (SIGSTOP, so its
// wireguard-go answers nobody) it cannot tell, and says which device.
func TestWireGuardStatus(t *testing.T) {
	c := upWG(t, 2, "")
	weft := filepath.Join(bins.get(t), "weft")
	code, out, err := c.Status(context.Background(), 1, weft)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || !strings.Contains(out, "kernel   in sync with the store") {
		t.Fatalf("healthy wireguard node: exit %d\n%s", code, out)
	}
	pid := c.Pid(1)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(pid, syscall.SIGCONT) }()
	code, out, err = c.Status(context.Background(), 1, weft)
	if err != nil {
		t.Fatal(err)
	}
	if code != 2 || !strings.Contains(out, "read the wireguard peers of flannel-wg") {
		t.Errorf("weftd stopped: exit %d, want 2 naming flannel-wg\n%s", code, out)
	}
}
