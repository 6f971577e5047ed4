//go:build linux

package kubeapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/kubeapi"
	"github.com/weft-net/weft/internal/kubeapi/kubeapitest"
)

// requireIntegration skips under -short: these tests run real binaries.
func requireIntegration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: starts a real kube-apiserver and kube-controller-manager (not in -short mode)")
	}
}

// TestControlPlane shares one control plane across its subtests, which run
// in order: the last one restarts the apiserver.
func TestControlPlane(t *testing.T) {
	requireIntegration(t)
	t.Parallel()
	begin := time.Now()
	cp := kubeapitest.Start(t, kubeapi.Options{})
	t.Logf("control plane up in %s at %s; %s", time.Since(begin).Round(time.Millisecond), cp.URL(), rss(cp))

	t.Run("readyz", func(t *testing.T) {
		out, err := cp.Kubectl(t.Context(), "get", "--raw", "/readyz")
		if err != nil || strings.TrimSpace(out) != "ok" {
			t.Fatalf("readyz = %q, %v", out, err)
		}
	})

	t.Run("podCIDR allocated", func(t *testing.T) {
		if err := cp.Apply(t.Context(), nodeManifest("n1")); err != nil {
			t.Fatal(err)
		}
		cidr := waitPodCIDR(t, cp, "n1", 10*time.Second)
		p, err := netip.ParsePrefix(cidr)
		if err != nil || p.Bits() != 24 || !netip.MustParsePrefix("10.244.0.0/16").Contains(p.Addr()) {
			t.Fatalf("podCIDR %q (%v): want a /24 of 10.244.0.0/16", cidr, err)
		}
	})

	t.Run("RBAC", func(t *testing.T) { testRBAC(t, cp) })

	t.Run("apiserver restart", func(t *testing.T) {
		if err := cp.Apply(t.Context(), nodeManifest("r1")); err != nil {
			t.Fatal(err)
		}
		before := waitPodCIDR(t, cp, "r1", 10*time.Second)
		begin := time.Now()
		if err := cp.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		if _, err := cp.Kubectl(t.Context(), "get", "--raw", "/readyz", "--request-timeout=2s"); err == nil {
			t.Fatal("apiserver still answers after StopAPIServer")
		}
		t.Logf("apiserver stopped in %s", time.Since(begin).Round(time.Millisecond))
		begin = time.Now()
		if err := cp.StartAPIServer(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Logf("apiserver ready again in %s", time.Since(begin).Round(time.Millisecond))
		if err := cp.StartAPIServer(t.Context()); !errors.Is(err, kubeapi.ErrRunning) {
			t.Errorf("second StartAPIServer = %v, want ErrRunning", err)
		}
		if out, err := cp.Kubectl(t.Context(), "get", "--raw", "/readyz"); err != nil || strings.TrimSpace(out) != "ok" {
			t.Fatalf("readyz after restart = %q, %v", out, err)
		}
		if after := waitPodCIDR(t, cp, "r1", 10*time.Second); after != before {
			t.Errorf("podCIDR of r1 after restart = %s, want %s (same etcd)", after, before)
		}
	})
}

// testRBAC checks that a service account without roles is forbidden (403,
// so its token authenticates) to list nodes, and allowed once bound to
// flannel's ClusterRole.
func testRBAC(t *testing.T, cp *kubeapi.ControlPlane) {
	ctx := t.Context()
	if err := cp.Apply(ctx, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: weft-test\n---\n"+
		"apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: nobody\n  namespace: weft-test\n"); err != nil {
		t.Fatal(err)
	}
	kc, err := cp.ServiceAccountKubeconfig(ctx, "weft-test", "nobody", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cp.Kubectl(ctx, "--kubeconfig="+kc, "get", "nodes")
	if err == nil || !strings.Contains(err.Error(), "Forbidden") ||
		!strings.Contains(err.Error(), `"system:serviceaccount:weft-test:nobody" cannot list resource "nodes"`) {
		t.Fatalf("unbound service account listing nodes: %q, %v; want Forbidden", out, err)
	}
	if err := cp.Apply(ctx, flannelRBAC); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err = cp.Kubectl(ctx, "--kubeconfig="+kc, "get", "nodes", "-o", "name")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bound service account listing nodes: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(out, "node/") {
		t.Errorf("nodes seen by the bound service account: %q", out)
	}
}

// flannelRBAC binds weft-test/nobody to kube-flannel.yml's ClusterRole.
const flannelRBAC = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: weft-test-flannel
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get]
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [nodes/status]
  verbs: [patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: weft-test-flannel
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: weft-test-flannel
subjects:
- kind: ServiceAccount
  name: nobody
  namespace: weft-test
`

// TestDualStack runs a dual-stack control plane and sees a Node get one
// podCIDR per family, of the sizes asked for.
func TestDualStack(t *testing.T) {
	requireIntegration(t)
	t.Parallel()
	cp := kubeapitest.Start(t, kubeapi.Options{
		ClusterCIDRs:      []netip.Prefix{netip.MustParsePrefix("10.245.0.0/16"), netip.MustParsePrefix("fd00:245::/56")},
		NodeCIDRMaskSizes: []int{26, 64},
	})
	if err := cp.Apply(t.Context(), nodeManifest("d1")); err != nil {
		t.Fatal(err)
	}
	waitPodCIDR(t, cp, "d1", 10*time.Second)
	out, err := cp.Kubectl(t.Context(), "get", "node", "d1", "-o", "jsonpath={.spec.podCIDRs}")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "/26") || !strings.Contains(out, "fd00:245:0:") || !strings.Contains(out, "/64") {
		t.Errorf("podCIDRs = %s, want a /26 of 10.245.0.0/16 and a /64 of fd00:245::/56", out)
	}
}

func nodeManifest(name string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Node\nmetadata:\n  name: %s\n", name)
}

// waitPodCIDR waits until the Node has a podCIDR and returns it.
func waitPodCIDR(t *testing.T, cp *kubeapi.ControlPlane, name string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	for {
		out, err := cp.Kubectl(ctx, "get", "node", name, "-o", "jsonpath={.spec.podCIDR}")
		if err == nil && strings.TrimSpace(out) != "" {
			return strings.TrimSpace(out)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node %s has no podCIDR after %s (last: %q, %v)", name, timeout, out, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// rss describes the resident memory of the control plane's processes.
func rss(cp *kubeapi.ControlPlane) string {
	var parts []string
	for _, p := range cp.Processes() {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				parts = append(parts, p.Name+" "+strings.Join(strings.Fields(line)[1:], " "))
			}
		}
	}
	return "RSS: " + strings.Join(parts, ", ")
}

// TestFailedStartStopsEverything makes the controller manager fail (an
// unknown controller) after the apiserver is up: Start must report the exit
// with the log's tail and leave no process running.
func TestFailedStartStopsEverything(t *testing.T) {
	requireIntegration(t)
	t.Parallel()
	bins := kubeapitest.Bins(t)
	etcd := kubeapitest.Etcd(t)
	dir := t.TempDir()
	_, err := kubeapi.Start(t.Context(), kubeapi.Options{Dir: dir, Bins: bins, EtcdURL: etcd,
		Controllers: []string{"no-such-controller"}})
	if !errors.Is(err, kubeapi.ErrExited) || !strings.Contains(err.Error(), "kube-controller-manager") ||
		!strings.Contains(err.Error(), "last lines of") {
		t.Fatalf("Start = %v; want the controller manager's exit with its log", err)
	}
	if pids := processesMentioning(t, dir); len(pids) > 0 {
		t.Errorf("processes still running after a failed Start: %v", pids)
	}
}

// processesMentioning returns the processes whose command line contains s.
func processesMentioning(t *testing.T, s string) []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), s) {
			out = append(out, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}
