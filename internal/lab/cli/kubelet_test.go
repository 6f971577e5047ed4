//go:build linux

package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/kubelet"
	"github.com/weft-net/weft/internal/testbin"
	"github.com/weft-net/weft/internal/testenv"
)

// envKubelet selects the real-node lab tests, as in internal/lab/kubelet.
const envKubelet = "WEFT_TEST_KUBELET"

// readyNode is a row of the kubelet lab's node table: a Node with a podCIDR,
// weft's pod Running and Ready true.
var readyNode = regexp.MustCompile(`(?m)^n\d\s+192\.168\.100\.\d+\s+10\.244\.\d+\.0/24\s+kube-flannel-ds-\S+ \(Running\)\s+true\s+n\d-p1=10\.244\.`)

// `weft lab up --kubelet` leaves a lab of 3 real nodes running after the
// command exited (every process in a session of its own); status, exec and
// list find it; down removes all of it: no namespace, process, mount,
// cgroup, host path, changed sysctl or lock left (kubelet's Leftovers).
func TestLabUpKubelet(t *testing.T) {
	r, repo, name, dir := kubeletLabRun(t)
	downed := false
	t.Cleanup(func() {
		if !downed {
			if out, err := r.run("lab", "down", "--name", name); err != nil {
				t.Errorf("lab down in cleanup: %v\n%s", err, out)
			}
		}
	})

	out, err := r.run("lab", "up", "--kubelet", "--name", name, "--repo", repo, "--wait", "5m")
	t.Logf("weft lab up --kubelet --name %s:\n%s", name, out)
	if err != nil {
		t.Fatalf("lab up --kubelet: %v", err)
	}
	if got := readyNode.FindAllString(out, -1); len(got) != 3 {
		t.Errorf("lab up: %d Ready nodes with weft's pod Running, want 3", len(got))
	}
	if !strings.Contains(out, "all 6 pod-to-pod pings answered") {
		t.Errorf("lab up: not every ping answered")
	}

	// The command exited: every process it started runs on, detached.
	l, err := kubelet.Attach(nil, name, dir)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, p := range l.Processes() {
		count[p.Name]++
		if !p.Running() {
			t.Errorf("%s (node %d, pid %d) is gone after lab up", p.Name, p.Node, p.PID)
			continue
		}
		if sid := sessionID(t, p.PID); sid != p.PID {
			t.Errorf("%s (pid %d) is in session %d, not one of its own", p.Name, p.PID, sid)
		}
	}
	for proc, want := range map[string]int{"kubelet": 3, "containerd": 3, "mountns": 3, "kube-apiserver": 1,
		"kube-controller-manager": 1, "kube-scheduler": 1, "etcd": 1} {
		if count[proc] != want {
			t.Errorf("kubelet.json records %d %s processes, want %d: %v", count[proc], proc, want, l.Processes())
		}
	}

	out, err = r.run("lab", "status", "--name", name)
	t.Logf("weft lab status --name %s:\n%s", name, out)
	if err != nil {
		t.Errorf("lab status: %v", err)
	}
	if got := readyNode.FindAllString(out, -1); len(got) != 3 || !strings.Contains(out, "all 6 pod-to-pod pings answered") ||
		strings.Contains(out, "GONE") {
		t.Errorf("lab status: %d Ready nodes (want 3), or a ping failed, or a process is gone", len(got))
	}

	out, err = r.run("lab", "exec", "--name", name, "n1", "--", "ip", "route")
	t.Logf("weft lab exec --name %s n1 -- ip route:\n%s", name, out)
	if err != nil || !strings.Contains(out, "dev flannel.1") || !strings.Contains(out, "dev cni0") {
		t.Errorf("lab exec n1 -- ip route: %v: no route through flannel.1 and cni0", err)
	}
	out, err = r.run("lab", "exec", "--name", name, "n2-p1", "--", "hostname")
	if err != nil || !strings.HasPrefix(out, kubelet.TestDeployment+"-") {
		t.Errorf("lab exec n2-p1 -- hostname (a test pod): %v\n%s", err, out)
	}
	out, err = r.run("lab", "list")
	if err != nil || !slicesContainsLine(out, name) {
		t.Errorf("lab list does not list %s: %v\n%s", name, err, out)
	}

	downed = true
	downKubeletLab(t, r, l, name)
	for _, p := range l.Processes() {
		if p.Running() {
			t.Errorf("%s (pid %d) still runs after lab down", p.Name, p.PID)
		}
	}
}

// sessionID returns a process's session (field 6 of /proc/<pid>/stat).
func sessionID(t *testing.T, pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Errorf("stat of pid %d: %v", pid, err)
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // from field 3 on
	if len(f) < 4 {
		return 0
	}
	sid, _ := strconv.Atoi(f[3])
	return sid
}

func slicesContainsLine(out, line string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

// `weft lab up --kubelet` killed once its nodes' kubelets run (the lock's
// process gone, the lab half made): `weft lab down` still removes all of it,
// the sysctls kubelet changed included.
func TestLabUpKubeletKilled(t *testing.T) {
	r, repo, name, dir := kubeletLabRun(t)
	downed := false
	t.Cleanup(func() {
		if !downed {
			_, _ = r.run("lab", "down", "--name", name)
		}
	})
	var upOut strings.Builder
	c := r.cmd("lab", "up", "--kubelet", "--name", name, "--repo", repo, "--wait", "5m")
	c.Stdout, c.Stderr = &upOut, &upOut
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var l *kubelet.Lab
	var err error
	deadline := time.Now().Add(6 * time.Minute)
	for {
		if l, err = kubelet.Attach(nil, name, dir); err == nil {
			running := 0
			for _, p := range l.Processes() {
				if p.Name == "kubelet" && p.Running() {
					running++
				}
			}
			if running == 3 {
				break
			}
		}
		if time.Now().After(deadline) {
			_ = c.Process.Kill()
			_ = c.Wait()
			t.Fatalf("no 3 kubelets running after 6 minutes: %v\n%s", err, upOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = c.Process.Kill()
	_ = c.Wait()
	t.Logf("weft lab up killed after:\n%s", upOut.String())
	k, err := kubelet.CurrentLock()
	if err != nil || k == nil || k.Name != name {
		t.Errorf("the killed lab's lock is not held: %v %v", k, err)
	}
	time.Sleep(2 * time.Second) // the kubelets change the sysctls
	downed = true
	downKubeletLab(t, r, l, name)
}

// kubeletLabRun skips unless the real-node tier is selected and gives a test
// a runner of the built weft, the source tree, a fresh lab name and the
// lab's directory.
func kubeletLabRun(t *testing.T) (r labRunner, repo, name, dir string) {
	t.Helper()
	testenv.EndToEnd(t, "runs `weft lab up --kubelet`: containerd and kubelet in every node of a lab", "ip", "nsenter", "unshare",
		"iptables", "runc", "ping")
	if os.Getenv(envKubelet) != "1" {
		t.Skipf("set %s=1 to run the real-node lab (containerd and kubelet per node; about half a minute)", envKubelet)
	}
	binDir := os.Getenv(testbin.EnvVar)
	if binDir == "" {
		t.Skipf("needs %s (make build; and make image's weft-image.oci.tar beside it)", testbin.EnvVar)
	}
	repo, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	r = labRunner{t: t, weft: filepath.Join(binDir, "weft"), root: t.TempDir()}
	if name, err = lab.RandomName("wc"); err != nil {
		t.Fatal(err)
	}
	return r, repo, name, filepath.Join(r.root, name)
}

// downKubeletLab runs `weft lab down` and checks that nothing of the lab is left.
func downKubeletLab(t *testing.T, r labRunner, l *kubelet.Lab, name string) {
	t.Helper()
	out, err := r.run("lab", "down", "--name", name)
	t.Logf("weft lab down --name %s:\n%s", name, out)
	if err != nil {
		t.Fatalf("lab down: %v", err)
	}
	if left := l.Leftovers(); len(left) > 0 {
		t.Errorf("left after lab down:\n  %s", strings.Join(left, "\n  "))
	}
	if left := leftovers(t, name, r.root); len(left) > 0 {
		t.Errorf("left after lab down: %v", left)
	}
}
