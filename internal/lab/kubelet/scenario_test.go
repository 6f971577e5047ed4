//go:build linux

package kubelet

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestKubeletScenarios runs, on one 3-node lab, what a cluster does to its
// network besides carrying it: TCP between pods, a hostPort, a weft pod
// deleted and an in-place upgrade under a 100 Hz ping, and last (it breaks
// the lab) a Node removed. Each subtest checks the state it needs first, so
// that one failing does not hide what the next one finds.
func TestKubeletScenarios(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	l := startLab(t, ctx, 3)
	t.Run("TCP", func(t *testing.T) { testTCP(t, ctx, l) })
	t.Run("HostPort", func(t *testing.T) { testHostPort(t, ctx, l) })
	t.Run("WeftPodDeleted", func(t *testing.T) { testWeftPodDeleted(t, ctx, l) })
	t.Run("Upgrade", func(t *testing.T) { testUpgrade(t, ctx, l) })
	t.Run("NodeRemoved", func(t *testing.T) { testNodeRemoved(t, ctx, l) })
	l.down()
}

// podsByNode returns the Running test pods, one per node, in the order of
// the lab's nodes; it fails t unless every node has one.
func podsByNode(t *testing.T, ctx context.Context, l *testLab) []podInfo {
	t.Helper()
	pods, err := l.TestPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []podInfo
	for _, n := range l.nodes {
		i := slices.IndexFunc(pods, func(p podInfo) bool { return p.node == n.name && p.running && p.ip.IsValid() })
		if i < 0 {
			t.Fatalf("no Running test pod on node %s: %v", n.name, pods)
		}
		out = append(out, pods[i])
	}
	return out
}

func (l *testLab) exec(ctx context.Context, pod string, argv ...string) (string, error) {
	return l.cp.Kubectl(ctx, append([]string{"exec", "-n", TestNamespace, pod, "--"}, argv...)...)
}

func (l *testLab) nodeByName(name string) *node {
	for _, n := range l.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// testTCP: for every ordered pair of test pods on different nodes, a busybox
// nc server in one (kubectl exec) and a client in the other exchange a line
// each way.
func testTCP(t *testing.T, ctx context.Context, l *testLab) {
	pods := podsByNode(t, ctx, l)
	port := 5000
	for _, srv := range pods {
		for _, cli := range pods {
			if srv.node == cli.node {
				continue
			}
			port++
			begin := time.Now()
			got, reply, err := tcpExchange(ctx, l, srv, cli, port)
			if err != nil {
				t.Errorf("TCP %s (%s) -> %s (%s) port %d: %v", cli.node, cli.ip, srv.node, srv.ip, port, err)
				continue
			}
			if want := "ping-from-" + cli.name; !strings.Contains(got, want) {
				t.Errorf("TCP %s -> %s: server read %q, want %q", cli.node, srv.node, got, want)
			}
			if want := "pong-from-" + srv.name; !strings.Contains(reply, want) {
				t.Errorf("TCP %s -> %s: client read %q, want %q", cli.node, srv.node, reply, want)
			}
			t.Logf("TCP %s -> %s:%d ok in %v", cli.node, srv.ip, port, time.Since(begin).Round(time.Millisecond))
		}
	}
}

// tcpExchange listens with nc in srv and connects from cli (retrying until
// the listener is up), and returns what the server and the client read.
func tcpExchange(ctx context.Context, l *testLab, srv, cli podInfo, port int) (got, reply string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	type res struct {
		out string
		err error
	}
	done := make(chan res, 1)
	go func() {
		// busybox's nc ends when its standard input does, maybe before it
		// read what came in: both sides keep theirs open for a second.
		out, err := l.exec(ctx, srv.name, "sh", "-c", fmt.Sprintf("(echo pong-from-%s; sleep 1) | nc -l -p %d", srv.name, port))
		done <- res{out, err}
	}()
	// A client that comes too early costs its second of sleep: let the
	// server's exec start first.
	time.Sleep(500 * time.Millisecond)
	var lastErr error
	for try := 0; ; try++ {
		if try == 20 {
			return "", "", fmt.Errorf("client: %w", lastErr)
		}
		reply, lastErr = l.exec(ctx, cli.name, "sh", "-c",
			fmt.Sprintf("(echo ping-from-%s; sleep 1) | nc -w 3 %s %d", cli.name, srv.ip, port))
		if lastErr == nil && reply != "" {
			break
		}
		if lastErr == nil {
			lastErr = fmt.Errorf("empty reply")
		}
		select {
		case r := <-done:
			return "", "", fmt.Errorf("server ended before a client connected: %v: %s", r.err, r.out)
		case <-time.After(300 * time.Millisecond):
		}
	}
	select {
	case r := <-done:
		return r.out, reply, r.err
	case <-ctx.Done():
		return "", reply, fmt.Errorf("server: %w", ctx.Err())
	}
}

const (
	hostPortPod  = "hostport"
	hostPort     = 30080
	hostPortText = "hostport-ok"
)

// testHostPort: a pod on the first node with a hostPort (portmap, chained
// after weft's plugin in the manifest's conflist) answers on that node's
// address and the hostPort, from a test pod on every other node; the same
// port on another node does not.
func testHostPort(t *testing.T, ctx context.Context, l *testLab) {
	pods := podsByNode(t, ctx, l)
	target := l.nodes[0]
	m := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %[1]s
  namespace: %[2]s
  labels:
    app: %[1]s
spec:
  nodeName: %[3]s
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 0
  containers:
  - name: server
    image: %[4]s
    imagePullPolicy: Never
    command: ["nc", "-ll", "-p", "8080", "-e", "/bin/busybox", "echo", "%[5]s"]
    ports:
    - containerPort: 8080
      hostPort: %[6]d
      protocol: TCP
`, hostPortPod, TestNamespace, target.name, BusyboxImage, hostPortText, hostPort)
	if err := l.cp.Apply(ctx, m); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := l.cp.Kubectl(context.WithoutCancel(ctx), "delete", "pod", "-n", TestNamespace, hostPortPod,
			"--grace-period=0", "--wait=true", "--timeout=60s"); err != nil {
			t.Errorf("delete the hostPort pod: %v", err)
		}
	}()
	var srv podInfo
	err := l.poll(ctx, "the hostPort pod Running", func() (bool, string, error) {
		ps, err := l.pods(ctx, TestNamespace, "app="+hostPortPod)
		if err != nil {
			return false, "", err
		}
		for _, p := range ps {
			if p.name == hostPortPod {
				srv = p
				return p.running && p.ip.IsValid(), p.phase, nil
			}
		}
		return false, "absent", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hostPort pod %v", srv)
	for _, cli := range pods {
		if cli.node == target.name {
			continue
		}
		var out string
		var err error
		begin := time.Now()
		for try := 0; try < 10; try++ {
			out, err = l.exec(ctx, cli.name, "sh", "-c", fmt.Sprintf("nc -w 3 %s %d </dev/null", target.ip, hostPort))
			if err == nil && strings.Contains(out, hostPortText) {
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
		if err != nil || !strings.Contains(out, hostPortText) {
			t.Errorf("from %s (%s): %s:%d answered %q, %v; want %q", cli.name, cli.node, target.ip, hostPort, out, err, hostPortText)
			continue
		}
		t.Logf("hostPort %s:%d from a pod on %s: %q in %v", target.ip, hostPort, cli.node, strings.TrimSpace(out),
			time.Since(begin).Round(time.Millisecond))
	}
	// The mapping is the target node's only: the same port on another node
	// is closed (what makes the check above a portmap check).
	other := l.nodes[1]
	out, err := l.exec(ctx, pods[2].name, "sh", "-c", fmt.Sprintf("nc -w 2 %s %d </dev/null", other.ip, hostPort))
	if strings.Contains(out, hostPortText) {
		t.Errorf("%s:%d (no hostPort there) answered %q", other.ip, hostPort, out)
	} else {
		t.Logf("%s:%d (no hostPort there): %q, %v", other.ip, hostPort, strings.TrimSpace(out), err)
	}
}

// pinger is the host's ping (iputils) at 100 Hz or a little more in a pod's
// network namespace: pingInterval.
type pinger struct {
	name  string
	cmd   *exec.Cmd
	done  chan struct{}
	begin time.Time

	stopOnce sync.Once
	end      time.Time

	mu      sync.Mutex
	seqs    map[int]bool
	dups    int
	summary string
	stderr  strings.Builder
}

// pingStats is what a pinger measured. Lost counts the sequence numbers
// missing between the first and the last answered one (the packets in
// flight when ping was stopped are not losses).
type pingStats struct {
	Took                       time.Duration
	Sent, Answered, Lost, Dups int
	First, Last                int
	Gaps                       []string // "seq 1234+5" for each run of lost packets
}

func (s pingStats) String() string {
	hz := 0.0
	if s.Took > 0 {
		hz = float64(s.Sent) / s.Took.Seconds()
	}
	return fmt.Sprintf("%d sent in %v (%.0f Hz), %d answered (seq %d..%d), %d lost, %d duplicates, gaps %v", s.Sent,
		s.Took.Round(time.Millisecond), hz, s.Answered, s.First, s.Last, s.Lost, s.Dups, s.Gaps)
}

// pingInterval is ping's -i: iputils 20221126 here sends every 16 ms when
// asked for 10 ms (63 Hz), and every 9 ms (111 Hz) when asked for 9.9.
const pingInterval = "0.0099"

var (
	seqRe  = regexp.MustCompile(`icmp_seq=(\d+)`)
	sentRe = regexp.MustCompile(`(\d+) packets transmitted`)
)

// podNetPID returns a process in a pod's network namespace (any process in
// its cgroups: kubelet's cgroupfs driver names them pod<uid>).
func (l *testLab) podNetPID(p podInfo) (int, error) {
	n := l.nodeByName(p.node)
	if n == nil {
		return 0, fmt.Errorf("pod %s: no node %s", p.name, p.node)
	}
	for _, d := range cgroupDirs(n.cgroupRoot) {
		if !strings.Contains(d, "/pod"+p.uid) {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("pod %s (uid %s): no process in the cgroups of %s", p.name, p.uid, n.cgroupRoot)
}

// startPing starts a 100 Hz ping from pod src to dst and returns once the
// first reply came.
func (l *testLab) startPing(t *testing.T, ctx context.Context, src, dst podInfo) *pinger {
	t.Helper()
	pid, err := l.podNetPID(src)
	if err != nil {
		t.Fatal(err)
	}
	p := &pinger{name: fmt.Sprintf("%s(%s) -> %s(%s)", src.node, src.ip, dst.node, dst.ip), seqs: map[int]bool{},
		done: make(chan struct{})}
	p.cmd = exec.Command("nsenter", "--net=/proc/"+strconv.Itoa(pid)+"/ns/net", "--",
		"ping", "-n", "-i", pingInterval, "-W", "1", "-w", "300", dst.ip.String())
	// ping has file capabilities, so exec clears the parent-death signal:
	// -w 300 ends it even if this process is killed before stop.
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
	go func() {
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
			} else if sentRe.MatchString(line) {
				p.summary = line
			}
			p.mu.Unlock()
		}
		_ = p.cmd.Wait()
	}()
	t.Cleanup(func() { p.stop() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		n := len(p.seqs)
		p.mu.Unlock()
		if n > 0 {
			return p
		}
		if time.Now().After(deadline) {
			p.stop()
			t.Fatalf("ping %s: no reply in 10 s: %s", p.name, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop interrupts ping and returns what it measured.
func (p *pinger) stop() pingStats {
	p.stopOnce.Do(func() { p.end = time.Now() })
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := pingStats{Took: p.end.Sub(p.begin), Answered: len(p.seqs), Dups: p.dups}
	if m := sentRe.FindStringSubmatch(p.summary); m != nil {
		s.Sent, _ = strconv.Atoi(m[1])
	}
	seqs := slices.Sorted(maps.Keys(p.seqs))
	if len(seqs) == 0 {
		return s
	}
	s.First, s.Last = seqs[0], seqs[len(seqs)-1]
	for i := 1; i < len(seqs); i++ {
		// iputils' icmp_seq is 16 bits: at 111 Hz it wraps after 10 minutes,
		// far longer than any ping here.
		if gap := seqs[i] - seqs[i-1] - 1; gap > 0 {
			s.Lost += gap
			s.Gaps = append(s.Gaps, fmt.Sprintf("seq %d+%d", seqs[i-1]+1, gap))
		}
	}
	return s
}

// weftPods returns weft's DaemonSet pods by node.
func (l *testLab) weftPods(ctx context.Context) (map[string]podInfo, error) {
	ps, err := l.pods(ctx, WeftNamespace, "app=flannel")
	if err != nil {
		return nil, err
	}
	out := map[string]podInfo{}
	for _, p := range ps {
		if q, ok := out[p.node]; ok && q.running && !p.running {
			continue // a terminating pod beside its successor
		}
		out[p.node] = p
	}
	return out, nil
}

// testWeftPodDeleted: `kubectl delete pod` of the weft pod on the node of a
// test pod that pings another node's at 100 Hz; the DaemonSet makes a new
// one, Running, and the ping loses nothing (vxlan's device, routes and
// neighbours stay in the kernel while weftd is away).
func testWeftPodDeleted(t *testing.T, ctx context.Context, l *testLab) {
	pods := podsByNode(t, ctx, l)
	src, dst := pods[0], pods[1]
	before, err := l.weftPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old, ok := before[src.node]
	if !ok || !old.running {
		t.Fatalf("no Running weft pod on %s: %v", src.node, before)
	}
	p := l.startPing(t, ctx, src, dst)
	time.Sleep(500 * time.Millisecond)
	begin := time.Now()
	if _, err := l.cp.Kubectl(ctx, "delete", "pod", "-n", WeftNamespace, old.name, "--wait=false"); err != nil {
		t.Fatal(err)
	}
	var repl podInfo
	err = l.poll(ctx, "a new weft pod Running on "+src.node, func() (bool, string, error) {
		ps, err := l.pods(ctx, WeftNamespace, "app=flannel")
		if err != nil {
			return false, "", err
		}
		var st []string
		for _, q := range ps {
			if q.node == src.node && q.name != old.name && q.running && q.ready {
				repl = q
				return true, "", nil
			}
			st = append(st, q.name+":"+q.phase)
		}
		return false, strings.Join(st, " "), nil
	})
	took := time.Since(begin)
	// weftd starts, reads its Node and rewrites subnet.env: give it time to
	// do whatever it does to the datapath while still pinging.
	time.Sleep(3 * time.Second)
	s := p.stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("weft pod %s deleted, %s Running on %s after %v", old.name, repl.name, src.node, took.Round(time.Millisecond))
	t.Logf("ping %s at ~100 Hz: %v", p.name, s)
	if s.Answered < 300 {
		t.Errorf("ping %s: only %d replies: %v", p.name, s.Answered, s)
	}
	if s.Lost != 0 {
		t.Errorf("ping %s lost %d packets while weft's pod was replaced: %v", p.name, s.Lost, s)
	}
}

// upgradeTag is the second name of weft's image: the same archive, imported
// under another reference, so that applying the manifest with it changes
// the DaemonSet's pod template and rolls every pod.
const upgradeTag = "weft.local/weft:upgrade"

// upgradeMaxLost bounds the packets a 100 Hz ping may lose during the
// rolling update (weftd is replaced on every node, one at a time): nothing
// in the datapath should change, so this is 0 (see testWeftPodDeleted).
const upgradeMaxLost = 0

// subnetState is what must not change across an upgrade: every Node's
// podCIDRs and flannel annotations, and every node's /run/flannel/subnet.env.
func (l *testLab) subnetState(ctx context.Context) (map[string]string, error) {
	out, err := l.cp.Kubectl(ctx, "get", "nodes", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list corev1.NodeList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err
	}
	st := map[string]string{}
	for _, n := range list.Items {
		st[n.Name+" podCIDRs"] = strings.Join(n.Spec.PodCIDRs, ",")
		for k, v := range n.Annotations {
			if strings.HasPrefix(k, "flannel.alpha.coreos.com/") {
				st[n.Name+" "+k] = v
			}
		}
	}
	for _, n := range l.nodes {
		// The bind mount's source: the node's /run/flannel as the host sees it.
		b, err := os.ReadFile(filepath.Join(n.path("run-flannel"), "subnet.env"))
		if err != nil {
			return nil, err
		}
		st[n.name+" subnet.env"] = string(b)
	}
	return st, nil
}

// testUpgrade: weft's DaemonSet runs image A (the lab's); the manifest is
// applied again with image B (the same archive tagged anew on every node),
// a real rolling update that replaces every weft pod, while test pods ping
// across nodes at 100 Hz. The rollout completes, the pings lose at most
// upgradeMaxLost, and no subnet changes (Node podCIDRs, flannel's Node
// annotations, every node's subnet.env).
//
// TestKubeletUpgradeFromFlannel (upgrade_test.go) upgrades from flannel's
// own DaemonSet.
func testUpgrade(t *testing.T, ctx context.Context, l *testLab) {
	pods := podsByNode(t, ctx, l)
	ref, err := imageRef(l.bins.WeftImage)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.nodes {
		if _, err := n.ctr(ctx, l.bins, "images", "tag", "--force", ref, upgradeTag); err != nil {
			t.Fatalf("node %s: %v", n.name, err)
		}
	}
	before, err := l.weftPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.nodes {
		if p, ok := before[n.name]; !ok || !p.running || !slices.Contains(p.images, ref) {
			t.Fatalf("node %s: weft pod %v, want Running with %s", n.name, p, ref)
		}
	}
	subnets, err := l.subnetState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Manifest(upgradeTag)
	if err != nil {
		t.Fatal(err)
	}
	// Two pings cover the three nodes' weft pods being replaced.
	pings := []*pinger{l.startPing(t, ctx, pods[0], pods[1]), l.startPing(t, ctx, pods[2], pods[0])}
	time.Sleep(500 * time.Millisecond)
	begin := time.Now()
	if err := l.cp.Apply(ctx, m); err != nil {
		t.Fatal(err)
	}
	err = l.waitRollout(ctx, upgradeTag, before)
	took := time.Since(begin)
	checkRollout(t, ctx, l, err, took, upgradeTag, pings, upgradeMaxLost, subnets)
}

// waitRollout waits until weft's DaemonSet (kube-flannel-ds) has rolled out
// image on every node: every pod Running and ready with image alone, and
// none of them one of before's.
func (l *testLab) waitRollout(ctx context.Context, image string, before map[string]podInfo) error {
	return l.poll(ctx, "the DaemonSet rolled out with "+image, func() (bool, string, error) {
		out, err := l.cp.Kubectl(ctx, "get", "daemonset", "-n", WeftNamespace, "kube-flannel-ds", "-o", "json")
		if err != nil {
			return false, "", err
		}
		var ds appsv1.DaemonSet
		if err := json.Unmarshal([]byte(out), &ds); err != nil {
			return false, "", err
		}
		st := ds.Status
		state := fmt.Sprintf("generation %d observed %d desired %d updated %d available %d", ds.Generation,
			st.ObservedGeneration, st.DesiredNumberScheduled, st.UpdatedNumberScheduled, st.NumberAvailable)
		if st.ObservedGeneration < ds.Generation || st.DesiredNumberScheduled != int32(len(l.nodes)) ||
			st.UpdatedNumberScheduled != st.DesiredNumberScheduled || st.NumberAvailable != st.DesiredNumberScheduled {
			return false, state, nil
		}
		ps, err := l.pods(ctx, WeftNamespace, "app=flannel")
		if err != nil {
			return false, "", err
		}
		ok := 0
		for _, p := range ps {
			if !p.running || !p.ready || !slices.Equal(p.images, []string{image}) {
				return false, state + "; pod " + p.name + " " + p.phase, nil
			}
			if old, ok := before[p.node]; ok && old.name == p.name {
				return false, state + "; pod " + p.name + " not replaced", nil
			}
			ok++
		}
		return ok == len(l.nodes), state, nil
	})
}

// checkRollout ends a rollout that waitRollout waited for (with err): after
// 3 s more it stops the pings and fails t if the rollout failed, if a ping
// lost more than maxLost or got under 300 replies, or if any of subnets'
// facts changed (subnetState).
func checkRollout(t *testing.T, ctx context.Context, l *testLab, err error, took time.Duration, image string,
	pings []*pinger, maxLost int, subnets map[string]string) {
	t.Helper()
	// weftd starts, reads its Node and rewrites subnet.env: keep pinging
	// while it does whatever it does to the data path.
	time.Sleep(3 * time.Second)
	var stats []pingStats
	for _, p := range pings {
		stats = append(stats, p.stop())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rollout of %d pods to %s done in %v", len(l.nodes), image, took.Round(time.Millisecond))
	for i, p := range pings {
		t.Logf("ping %s at ~100 Hz: %v", p.name, stats[i])
		if stats[i].Answered < 300 {
			t.Errorf("ping %s: only %d replies", p.name, stats[i].Answered)
		}
		if stats[i].Lost > maxLost {
			t.Errorf("ping %s lost %d packets during the rollout, want at most %d", p.name, stats[i].Lost, maxLost)
		}
	}
	after, err := l.subnetState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range slices.Sorted(maps.Keys(subnets)) {
		if after[k] != subnets[k] {
			t.Errorf("%s changed in the upgrade: %q -> %q", k, subnets[k], after[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if _, ok := subnets[k]; !ok {
			t.Errorf("%s appeared in the upgrade: %q", k, after[k])
		}
	}
	t.Logf("%d subnet facts unchanged (podCIDRs, flannel annotations, subnet.env of %d nodes)", len(subnets), len(l.nodes))
}

// routeTo returns node n's kernel route to cidr ("" when there is none).
func routeTo(ctx context.Context, n *node, cidr string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", n.ns, "route", "show", "exact", cidr).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip -n %s route: %w: %s", n.ns, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// routeRemovalMax bounds the time from `kubectl delete node` to its route
// gone from every other node (weft removes a deleted Node's routes within
// 1 s in kube mode).
const routeRemovalMax = 10 * time.Second

// testNodeRemoved: the last node's kubelet stops and its Node is deleted;
// the route to its podCIDR goes from every other node's kernel within
// routeRemovalMax, and the other nodes keep their routes to each other and
// their pods keep talking. It leaves the lab with a node less.
func testNodeRemoved(t *testing.T, ctx context.Context, l *testLab) {
	pods := podsByNode(t, ctx, l)
	infos, err := l.nodeInfos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	victim := l.nodes[len(l.nodes)-1]
	others := l.nodes[:len(l.nodes)-1]
	cidrs := map[string]string{}
	for _, n := range l.nodes {
		ni := infos[n.name]
		if ni == nil || len(ni.podCIDRs) != 1 {
			t.Fatalf("node %s: %v, want one podCIDR", n.name, ni)
		}
		cidrs[n.name] = ni.podCIDRs[0]
	}
	for _, n := range others {
		for _, m := range l.nodes {
			if m == n {
				continue
			}
			if r, err := routeTo(ctx, n, cidrs[m.name]); err != nil || r == "" {
				t.Fatalf("node %s has no route to %s's %s before: %q, %v", n.name, m.name, cidrs[m.name], r, err)
			}
		}
	}
	if err := victim.kubelet.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if _, err := l.cp.Kubectl(ctx, "delete", "node", victim.name, "--wait=false"); err != nil {
		t.Fatal(err)
	}
	gone := map[string]time.Duration{}
	for len(gone) < len(others) && time.Since(begin) < routeRemovalMax+5*time.Second {
		for _, n := range others {
			if _, ok := gone[n.name]; ok {
				continue
			}
			r, err := routeTo(ctx, n, cidrs[victim.name])
			if err != nil {
				t.Fatal(err)
			}
			if r == "" {
				gone[n.name] = time.Since(begin)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, n := range others {
		d, ok := gone[n.name]
		switch {
		case !ok:
			r, _ := routeTo(ctx, n, cidrs[victim.name])
			t.Errorf("node %s still routes %s (deleted node %s) after %v: %s", n.name, cidrs[victim.name], victim.name,
				time.Since(begin).Round(time.Millisecond), r)
		case d > routeRemovalMax:
			t.Errorf("node %s: route to %s went after %v, want at most %v", n.name, cidrs[victim.name], d, routeRemovalMax)
		default:
			t.Logf("node %s: route to %s (deleted node %s) gone %v after kubectl delete node", n.name,
				cidrs[victim.name], victim.name, d.Round(time.Millisecond))
		}
		for _, m := range others {
			if m == n {
				continue
			}
			if r, err := routeTo(ctx, n, cidrs[m.name]); err != nil || r == "" {
				t.Errorf("node %s lost its route to %s's %s: %q, %v", n.name, m.name, cidrs[m.name], r, err)
			}
		}
	}
	if out, err := l.exec(ctx, pods[0].name, "ping", "-c1", "-W2", pods[1].ip.String()); err != nil {
		t.Errorf("after the node removal, %s -> %s: %v: %s", pods[0].node, pods[1].ip, err, out)
	}
}
