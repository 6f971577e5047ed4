//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
)

func upUDP(t *testing.T, nodes int) *cluster.Cluster {
	t.Helper()
	return up(t, cluster.Options{Lab: lab.Options{Nodes: nodes}, Backend: "udp", Pods: 1})
}

// The udp backend's kernel state is flannel's: flannel0 with <subnet>.0/32,
// MTU external - 28, and the one route <Network> dev flannel0; pods on three
// nodes ping each other, and a 1,400-byte ping with DF set goes through.
func TestUDPPingMatrix(t *testing.T) {
	c := upUDP(t, 3)
	assertMatrix(t, c)
	env, _ := c.SubnetEnv(1)
	ns := c.NodeNS(1)
	addr := run(t, ns, "ip", "-4", "-br", "addr", "show", "flannel0")
	if !strings.Contains(addr, env.Subnet.Masked().Addr().String()+"/32") {
		t.Errorf("flannel0 address: %q, want %s/32", addr, env.Subnet.Masked().Addr())
	}
	if r := strings.TrimSpace(run(t, ns, "ip", "route", "show", "10.244.0.0/16")); !strings.Contains(r, "dev flannel0") {
		t.Errorf("network route: %q", r)
	}
	link := run(t, ns, "ip", "link", "show", "flannel0")
	if !strings.Contains(link, "mtu "+strconv.Itoa(env.MTU)) {
		t.Errorf("flannel0 %q, want mtu %d (subnet.env)", link, env.MTU)
	}
	pods := c.Pods()
	if out, err := lab.Exec(context.Background(), pods[0].NS, "ping", "-n", "-c", "2", "-W", "2", "-M", "do", "-s", "1372",
		pods[1].Addrs[0].String()); err != nil {
		t.Errorf("1,400-byte ping with DF: %v\n%s", err, out)
	}
	// The network route is the reconciler's: deleted, it is back and the
	// pods ping again within 1 s (it was a 2 s loop of the backend's own).
	run(t, ns, "ip", "route", "del", "10.244.0.0/16", "dev", "flannel0")
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		if _, err = lab.Ping(ctx, pods[0].NS, pods[1].Addrs[0]); err == nil {
			break
		}
	}
	if err != nil {
		t.Errorf("after the network route's deletion: pods do not ping within 1 s: %v", err)
	} else {
		t.Logf("after the network route's deletion: pods ping again after %v", time.Since(start).Round(time.Millisecond))
	}
	m := scrapeNode(t, c, 1)
	if v := m.Value("weft_reconcile_repairs_total", map[string]string{"object": "route"}); v < 1 {
		t.Errorf("weft_reconcile_repairs_total{object=route} = %v after the route was put back, want at least 1", v)
	}
	if v := m.Value("weft_peers", map[string]string{"backend": "udp"}); v != 2 {
		t.Errorf("weft_peers{backend=udp} = %v, want the 2 other nodes", v)
	}
	if v := m.Value("weft_datapath_packets_total", map[string]string{"encap": "udp", "direction": "in"}); v <= 0 {
		t.Errorf("weft_datapath_packets_total{encap=udp,direction=in} = %v after the pings, want more than 0", v)
	}
}

// A TCP transfer between pods whose bytes are verified end to end: 64 MiB in
// both directions through the offload path (TSO reads, UDP GSO, GRO merge).
func TestUDPTransferVerified(t *testing.T) {
	c := upUDP(t, 2)
	pods := c.Pods()
	// flannel0's tx counters on node 1 count what the kernel hands weftd:
	// with the TUN's TSO offload on, TCP arrives as segments far larger than
	// the MTU, which weftd cuts for the wire.
	stat := func(name string) int64 {
		v, err := strconv.ParseInt(strings.TrimSpace(run(t, c.NodeNS(1), "cat", "/sys/class/net/flannel0/statistics/"+name)), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	bytes0, packets0 := stat("tx_bytes"), stat("tx_packets")
	transfer(t, pods[0].NS, pods[1].NS, pods[1].Addrs[0], 64<<20)
	avg := (stat("tx_bytes") - bytes0) / max(stat("tx_packets")-packets0, 1)
	t.Logf("node 1 read %d-byte packets from flannel0 on average during the transfer", avg)
	if avg < 4000 {
		t.Errorf("average read from flannel0 was %d bytes: large TCP segments did not go through the offload path", avg)
	}
	transfer(t, pods[1].NS, pods[0].NS, pods[0].Addrs[0], 64<<20)
}

// transfer sends n random bytes from clientNS to a server in serverNS and
// compares SHA-256 sums of what was sent and received.
func transfer(t *testing.T, clientNS, serverNS string, addr netip.Addr, n int64) {
	t.Helper()
	ln := listenIn(t, serverNS, addr)
	got := make(chan []byte, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer conn.Close()
		h := sha256.New()
		if _, err := io.Copy(h, conn); err != nil {
			t.Errorf("receive: %v", err)
		}
		got <- h.Sum(nil)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := lab.DialContext(ctx, clientNS, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	h := sha256.New()
	start := time.Now()
	if _, err := io.Copy(io.MultiWriter(conn, h), io.LimitReader(rand.Reader, n)); err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatalf("close the sending side: %v", err)
	}
	select {
	case sum := <-got:
		if !bytes.Equal(sum, h.Sum(nil)) {
			t.Fatalf("received bytes differ from those sent")
		}
	case <-ctx.Done():
		t.Fatal("transfer did not finish")
	}
	conn.Close()
	t.Logf("%d MiB %s -> %s verified in %v", n>>20, clientNS, serverNS, time.Since(start).Round(time.Millisecond))
}

// kill -9 weftd under `ping -i 0.01` and start it again at once, twice:
// flannel0 and its route stay, and the new weftd resumes the data path from
// the peer snapshot before etcd answers (20-30 ms after the kill on an idle
// machine), losing only the pings of that gap (1-2 idle;
// flannel v0.28.9 loses 20-22 in the same test). The gap, from the kill to
// the data path running again, is logged.
func TestUDPKillRestart(t *testing.T) { killRestart(t, "udp", "flannel0") }

// killRestart is the kill -9 test of a backend on the userspace tunnel
// engine whose TUN is device.
func killRestart(t *testing.T, backend, device string) {
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2}, Backend: backend, Pods: 1})
	pods := c.Pods()
	idx := run(t, c.NodeNS(1), "cat", "/sys/class/net/"+device+"/ifindex")
	const count = 300
	for i := range 2 {
		res, _ := floodPing(t, pods[0].NS, pods[1].Addrs[0], count)
		time.Sleep(time.Second)
		killed := time.Now()
		if err := c.KillWeftd(1, true); err != nil {
			t.Fatal(err)
		}
		if err := c.StartWeftd(1); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitReady(context.Background(), 1); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		if r := run(t, c.NodeNS(1), "ip", "route", "show", "dev", device); r == "" {
			t.Errorf("%s's routes went with weftd", device)
		}
		r := <-res
		resumed, ok := logTime(t, c.LogFile(1), "resumed the data path from the peer snapshot", killed)
		if !ok {
			t.Errorf("restart %d: weftd did not resume from the peer snapshot", i+1)
		}
		started, _ := logTime(t, c.LogFile(1), "starting weftd", killed)
		t.Logf("restart %d under ping -i 0.01: %d sent, %d received; after the kill: weftd logging at %v, data path back at %v",
			i+1, r[0], r[1], started.Sub(killed).Round(time.Millisecond), resumed.Sub(killed).Round(time.Millisecond))
		// The pings lost are those sent while no process forwarded: one per
		// 10 ms of the gap from the kill to the resumed data path, plus one
		// in flight at each end. The gap is the process's own start-up,
		// which make test's parallel load stretches (20-30 ms idle, 75 ms
		// seen under load).
		gap := resumed.Sub(killed)
		allowed := int(gap/(10*time.Millisecond)) + 2
		if r[0] != count || r[0]-r[1] > allowed {
			t.Errorf("restart %d lost %d of %d pings with the data path back %v after the kill; want at most %d",
				i+1, r[0]-r[1], r[0], gap.Round(time.Millisecond), allowed)
		}
		// From the snapshot means before the store answered: the resume
		// is logged before the lease is (an order, which load does not
		// change; the gap itself is 20-30 ms idle and was seen at 295 ms
		// with the machine's two cores loaded tenfold).
		if leased, okL := logTime(t, c.LogFile(1), "lease reused", killed); ok && (!okL || !resumed.Before(leased)) {
			t.Errorf("restart %d: the data path was back %v after the kill, not before the store answered (lease reused at %v)",
				i+1, gap.Round(time.Millisecond), leased.Sub(killed).Round(time.Millisecond))
		}
	}
	if now := run(t, c.NodeNS(1), "cat", "/sys/class/net/"+device+"/ifindex"); now != idx {
		t.Errorf("%s was recreated (ifindex %s -> %s); want it kept", device, idx, now)
	}
	// The other side sees the restarted node again: traffic both ways.
	transfer(t, pods[1].NS, pods[0].NS, pods[0].Addrs[0], 4<<20)
}

// The store is unreachable when weftd restarts: the data path comes back
// from the peer snapshot alone, pods keep talking at 100 Hz without a loss
// while /readyz says 503, and once etcd answers the node is ready.
func TestUDPRestartWhileStoreDown(t *testing.T) {
	c := upUDP(t, 2)
	pods := c.Pods()
	etcdHost, _, err := net.SplitHostPort(strings.TrimPrefix(c.Endpoint(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	block := []string{"OUTPUT", "-d", etcdHost, "-p", "tcp", "--dport", "2379", "-j", "DROP"}
	if err := c.KillWeftd(1, true); err != nil {
		t.Fatal(err)
	}
	run(t, c.NodeNS(1), append([]string{"iptables", "-I"}, block...)...)
	started := time.Now()
	if err := c.StartWeftd(1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := logTime(t, c.LogFile(1), "resumed the data path from the peer snapshot", started); ok {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(c.LogFile(1))
			t.Fatalf("weftd did not resume from the snapshot:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	res, _ := floodPing(t, pods[0].NS, pods[1].Addrs[0], 200)
	r := <-res
	if r[0] != 200 || r[1] != 200 {
		t.Errorf("with etcd unreachable, %d of %d pings answered; want all", r[1], r[0])
	}
	if ready, err := c.Ready(context.Background(), 1); err != nil || ready {
		t.Errorf("/readyz with etcd unreachable: ready=%v err=%v, want 503", ready, err)
	}
	run(t, c.NodeNS(1), append([]string{"iptables", "-D"}, block...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	assertMatrix(t, c)
}

// logTime returns the time of the first line of the log at or after since
// that contains msg.
func logTime(t *testing.T, file, msg string, since time.Time) (time.Time, bool) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, msg) || !strings.HasPrefix(line, "time=") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err == nil && !at.Before(since.Truncate(time.Millisecond)) {
			return at, true
		}
	}
	return time.Time{}, false
}

var dropLine = regexp.MustCompile(`unknown-source=(\d+) spoofed=(\d+)`)

// lastDrops returns the last drop counters node's weftd logged.
func lastDrops(t *testing.T, c *cluster.Cluster, node int) (unknown, spoofed int) {
	t.Helper()
	b, _ := os.ReadFile(c.LogFile(node))
	m := dropLine.FindAllSubmatch(b, -1)
	if len(m) == 0 {
		return 0, 0
	}
	u, _ := strconv.Atoi(string(m[len(m)-1][1]))
	s, _ := strconv.Atoi(string(m[len(m)-1][2]))
	return u, s
}

// A namespace that is no peer sends crafted datagrams to port 8285 (from
// port 8285, carrying packets that claim a peer pod's source): none reaches
// the pod, and the node's drop counter rises.
func TestUDPDropsStrangers(t *testing.T) {
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2, Outside: true}, Backend: "udp", Pods: 1})
	pods := c.Pods()
	out, _ := c.Lab().Outside()
	node1, _ := c.Lab().Node(1)
	pc := listenUDPIn(t, pods[0].NS, pods[0].Addrs[0], 7777)
	var sock net.PacketConn
	if err := lab.Do(out.NS, func() (err error) {
		sock, err = net.ListenPacket("udp4", ":8285")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	inner := craftUDP(pods[1].Addrs[0], pods[0].Addrs[0], 7777, []byte("intruder"))
	dst := &net.UDPAddr{IP: node1.Addrs()[0].AsSlice(), Port: 8285}
	const sent = 50
	for range sent {
		if _, err := sock.WriteTo(inner, dst); err != nil {
			t.Fatal(err)
		}
	}
	_ = pc.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	if n, from, err := pc.ReadFrom(make([]byte, 100)); err == nil {
		t.Errorf("pod received %d bytes from %s sent by a stranger", n, from)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		unknown, _ := lastDrops(t, c, 1)
		if unknown >= sent {
			t.Logf("node 1 dropped %d datagrams from unknown sources", unknown)
			if v := scrapeNode(t, c, 1).Value("weft_datapath_drops_total", map[string]string{"encap": "udp", "reason": "unknown-source"}); v < sent {
				t.Errorf("weft_datapath_drops_total{encap=udp,reason=unknown-source} = %v, want at least %d", v, sent)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("drop counter %d after sending %d crafted datagrams", unknown, sent)
		}
		time.Sleep(200 * time.Millisecond)
	}
	assertMatrix(t, c)
}

// craftUDP builds an IPv4 UDP packet (no UDP checksum).
func craftUDP(src, dst netip.Addr, port uint16, payload []byte) []byte {
	n := 28 + len(payload)
	b := make([]byte, n)
	b[0], b[8], b[9] = 0x45, 64, 17
	b[2], b[3] = byte(n>>8), byte(n)
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	b[10], b[11] = byte(^sum>>8), byte(^sum)
	b[20], b[21], b[22], b[23] = 0x30, 0x39, byte(port>>8), byte(port)
	b[24], b[25] = byte((n-20)>>8), byte(n-20)
	copy(b[28:], payload)
	return b
}

// A pod pinging an address of the network that no node holds gets ICMP
// host unreachable (from the network's first address), not silence.
func TestUDPUnknownDestinationUnreachable(t *testing.T) {
	c := upUDP(t, 2)
	pods := c.Pods()
	a := freeSubnet(c, 2).Addr().As4()
	a[3] = 7
	dst := netip.AddrFrom4(a)
	out, err := lab.Exec(context.Background(), pods[0].NS, "ping", "-n", "-c", "1", "-W", "2", dst.String())
	want := "From 10.244.0.0 icmp_seq=1 Destination Host Unreachable"
	if err == nil || !strings.Contains(out, want) {
		t.Errorf("ping %s: err %v, output:\n%s\nwant %q", dst, err, out, want)
	}
}

// Peers come and go while traffic flows: node 3 is stopped, its lease
// deleted and it rejoins with a new one, while pods on nodes 1 and 2 ping at
// 100 Hz without losing a packet; afterwards every pod reaches every other.
func TestUDPPeerChurn(t *testing.T) {
	peerChurn(t, "udp", func(c *cluster.Cluster, node3Pod cluster.Pod) {
		// Node 1 forgot node 3's peer: a packet to node 3's pod now gets an
		// ICMP unreachable from node 1's udp path instead of being sent.
		out, _ := lab.Exec(context.Background(), c.Pods()[0].NS, "ping", "-n", "-c", "1", "-W", "1", node3Pod.Addrs[0].String())
		if !strings.Contains(out, "Unreachable") {
			t.Errorf("ping to the removed peer's pod: want Destination Host Unreachable, got:\n%s", out)
		}
	})
}

// peerChurn is the churn test of backend; gone checks node 1 after node 3's
// lease was deleted.
func peerChurn(t *testing.T, backend string, gone func(c *cluster.Cluster, node3Pod cluster.Pod)) {
	c := up(t, cluster.Options{Lab: lab.Options{Nodes: 3}, Backend: backend, Pods: 1})
	pods := c.Pods()
	env3, _ := c.SubnetEnv(3)
	res, _ := floodPing(t, pods[0].NS, pods[1].Addrs[0], 300)
	time.Sleep(300 * time.Millisecond)
	observed := scrapeNode(t, c, 1).Value("weft_lease_to_kernel_seconds", nil)
	if err := c.KillWeftd(3, false); err != nil {
		t.Fatal(err)
	}
	key := cluster.Prefix + "/subnets/" + strings.ReplaceAll(env3.Subnet.Masked().String(), "/", "-")
	if err := c.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	for _, p := range pods {
		if p.Node == 3 {
			gone(c, p)
		}
	}
	if err := c.StartWeftd(3); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r[0] != r[1] {
		t.Errorf("nodes 1-2 lost %d of %d pings while node 3 left and rejoined", r[0]-r[1], r[0])
	}
	// Node 1 saw node 3's lease go and come back: two more observations
	// of lease to kernel at least (the rejoin may write it twice).
	if now := scrapeNode(t, c, 1).Value("weft_lease_to_kernel_seconds", nil); now < observed+2 {
		t.Errorf("weft_lease_to_kernel_seconds count %v -> %v across a lease deletion and a new lease, want at least 2 more", observed, now)
	}
	assertMatrix(t, c)
}

// TestUDPThroughput (WEFT_UDP_BENCH=1) measures pod-to-pod single-stream TCP
// with iperf3 for kernel vxlan and for each step of the udp data path, in
// one run, with the CPU seconds the whole machine spent per GB.
func TestUDPThroughput(t *testing.T) {
	if os.Getenv("WEFT_UDP_BENCH") == "" {
		t.Skip("set WEFT_UDP_BENCH=1 to measure throughput (needs iperf3)")
	}
	secs := 8
	steps := []struct{ name, backend, opts string }{
		{"vxlan (kernel)", "vxlan", ""},
		{"udp: plain loop (1 queue, recvmsg, no offloads)", "udp", "queues=1,batch=1,novnet,nogso,nogro,nomerge"},
		{"udp: + recvmmsg batches", "udp", "queues=1,novnet,nogso,nogro,nomerge"},
		{"udp: + TUN TSO (vnet hdr) + UDP GSO", "udp", "queues=1,nogro,nomerge"},
		{"udp: + UDP GRO + TCP merge into the TUN", "udp", "queues=1"},
		{"udp: + multi-queue (default)", "udp", ""},
	}
	if s := os.Getenv("WEFT_UDP_BENCH_STEPS"); s != "" {
		var keep []struct{ name, backend, opts string }
		for _, st := range steps {
			if strings.Contains(s, st.backend) || strings.Contains(s, st.opts) && st.opts != "" {
				keep = append(keep, st)
			}
		}
		steps = keep
	}
	for _, st := range steps {
		c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2}, Backend: st.backend, Pods: 1,
			WeftdArgs: []string{"--udp-tuning=" + st.opts}})
		pods := c.Pods()
		gbps, cpuPerGB := iperf(t, pods[0].NS, pods[1].NS, pods[1].Addrs[0], secs)
		t.Logf("RESULT %-50s %6.2f Gbit/s  %6.2f CPU-s/GB", st.name, gbps, cpuPerGB)
		if os.Getenv("WEFT_UDP_BENCH_DIAG") != "" {
			for n := 1; n <= 2; n++ {
				out, _ := lab.Exec(context.Background(), c.NodeNS(n), "sh", "-c", "ip -s link show flannel0; ip -s link show eth0; grep Udp: /proc/net/snmp; nstat -az | grep -i -E 'drop|Rcvbuf|backlog|Prune|Collapse' | grep -v ' 0 '")
				t.Logf("node %d:\n%s", n, out)
			}
		}
		if err := c.Down(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// iperf runs a single-stream iperf3 from client to server and returns the
// received rate and the machine's busy CPU seconds per GB moved.
func iperf(t *testing.T, clientNS, serverNS string, addr netip.Addr, secs int) (float64, float64) {
	t.Helper()
	srv := lab.Command(context.Background(), serverNS, "iperf3", "-s", "-1", "-B", addr.String())
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	time.Sleep(300 * time.Millisecond)
	busy0 := busyCPU(t)
	out, err := lab.Exec(context.Background(), clientNS, "iperf3", "-c", addr.String(), "-t", strconv.Itoa(secs), "-f", "g")
	busy1 := busyCPU(t)
	if err != nil {
		t.Fatalf("iperf3: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`([\d.]+) ([GM])Bytes\s+([\d.]+) Gbits/sec\s+(\d*)\s*receiver`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("iperf3 output:\n%s", out)
	}
	gb, _ := strconv.ParseFloat(m[1], 64)
	if m[2] == "M" {
		gb /= 1024
	}
	gbps, _ := strconv.ParseFloat(m[3], 64)
	if r := regexp.MustCompile(`(\d+)\s+sender`).FindStringSubmatch(out); r != nil {
		t.Logf("retransmits: %s", r[1])
	}
	return gbps, (busy1 - busy0) / (gb * 1.073741824)
}

// busyCPU returns the seconds all CPUs have spent not idle.
func busyCPU(t *testing.T) float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	var busy float64
	for i, v := range f[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy / 100
}
