//go:build linux

package bench

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// A simulated Node is a whole kubelet-registered Node (5-10 KB of JSON)
// carrying exactly what a flannel vxlan node publishes.
func TestSimNode(t *testing.T) {
	peers, err := simPeers(3, map[netip.Prefix]bool{netip.MustParsePrefix("10.0.2.0/24"): true})
	if err != nil {
		t.Fatal(err)
	}
	p := peers[1]
	data := simNode(p)
	if len(data) < 5000 || len(data) > 10000 {
		t.Errorf("node is %d bytes of JSON, want 5-10 KB like a real one", len(data))
	}
	var n corev1.Node
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&n); err != nil {
		t.Fatal(err)
	}
	if n.Name != "ip-172-20-0-1.bench.internal" || n.Spec.PodCIDR != "10.0.3.0/24" || len(n.Spec.PodCIDRs) != 1 || n.Spec.PodCIDRs[0] != "10.0.3.0/24" {
		t.Errorf("name %s podCIDR %s %v", n.Name, n.Spec.PodCIDR, n.Spec.PodCIDRs)
	}
	want := map[string]string{
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"}`,
		"flannel.alpha.coreos.com/public-ip":           "172.20.0.1",
	}
	flannel := 0
	for k, v := range n.Annotations {
		if strings.HasPrefix(k, flannelPrefix) {
			flannel++
			if want[k] != v {
				t.Errorf("annotation %s = %q, want %q", k, v, want[k])
			}
		}
	}
	if flannel != len(want) {
		t.Errorf("%d flannel annotations, want %d: %v", flannel, len(want), n.Annotations)
	}
	if len(n.ManagedFields) < 4 || len(n.Status.Images) < 5 || len(n.Status.Conditions) != 5 || len(n.Status.Addresses) < 2 {
		t.Errorf("not a full node: %d managedFields, %d images, %d conditions, %d addresses",
			len(n.ManagedFields), len(n.Status.Images), len(n.Status.Conditions), len(n.Status.Addresses))
	}
	for _, mf := range n.ManagedFields {
		if !json.Valid(mf.FieldsV1.GetRawBytes()) {
			t.Errorf("managedFields of %s: invalid JSON %s", mf.Manager, mf.FieldsV1.GetRawString())
		}
	}
}

func TestParseMemory(t *testing.T) {
	rss, hwm, err := parseMemory([]byte("Name:\tweftd\nVmPeak:\t 1300000 kB\nVmHWM:\t   30720 kB\nVmRSS:\t   20480 kB\nThreads:\t7\n"))
	if err != nil || rss != 20<<20 || hwm != 30<<20 {
		t.Fatalf("rss %d hwm %d, %v", rss, hwm, err)
	}
	if _, _, err := parseMemory([]byte("Name:\tzombie\nState:\tZ\n")); err == nil {
		t.Error("no error for a status without memory lines")
	}
}

func TestKubeFigures(t *testing.T) {
	run := func(weftd, direct, list, cpu, lcpu time.Duration, rss, hwm int64) kubeRun {
		return kubeRun{joinRun: joinRun{weftd: weftd, direct: direct, weftdCPU: cpu, rss: rss}, hwm: hwm,
			list: listRun{wall: list, cpu: lcpu, alloc: 8 << 20}}
	}
	runs := []kubeRun{
		run(900*time.Millisecond, 300*time.Millisecond, 200*time.Millisecond, 800*time.Millisecond, 200*time.Millisecond, 30<<20, 36<<20),
		run(700*time.Millisecond, 100*time.Millisecond, 400*time.Millisecond, 600*time.Millisecond, 400*time.Millisecond, 32<<20, 38<<20),
		run(800*time.Millisecond, 200*time.Millisecond, 300*time.Millisecond, 700*time.Millisecond, 300*time.Millisecond, 31<<20, 37<<20),
	}
	idle := kubeRun{joinRun: joinRun{rss: 20 << 20}, hwm: 25 << 20}
	var lat, base []time.Duration
	for i := 1; i <= 20; i++ {
		lat, base = append(lat, time.Duration(i)*time.Millisecond), append(base, time.Duration(i)*500*time.Microsecond)
	}
	kp := KubePlane{Nodes: 5000}
	kubeFigures(&kp, runs, idle, lat, base)
	near := func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
	for _, c := range []struct {
		f               Figure
		value, baseline float64
	}{
		{kp.Join, 0.8, 0.2},
		{kp.JoinVsList, 0.8, 0.5}, // per run: list + direct = 0.5, 0.5, 0.5
		{kp.NodeRouteP50, 10, 5},
		{kp.NodeRouteP95, 19, 9.5},
		{kp.RSS, 31, 20},
		{kp.PeakRSS, 37, 25},
		{kp.CPU, 0.7, 0.3},
	} {
		if !near(c.f.Value.Median, c.value) || !near(c.f.Baseline.Median, c.baseline) || c.f.BaselineIs == "" || c.f.Better != "lower" {
			t.Errorf("%s: %+v, want %v against %v", c.f.Name, c.f, c.value, c.baseline)
		}
	}
	if kp.ListAllocMiB.Median != 8 || !near(kp.ListSeconds.Median, 0.3) {
		t.Errorf("list: %+v %+v", kp.ListSeconds, kp.ListAllocMiB)
	}
	if len(kp.Figures()) != 7 {
		t.Errorf("%d figures", len(kp.Figures()))
	}
	var out bytes.Buffer
	writeKubeNotes(&out, &Result{Kube: []KubePlane{kp}})
	if !strings.Contains(out.String(), "kube 5000 nodes: one Node is") {
		t.Errorf("notes:\n%s", out.String())
	}
	out.Reset()
	writeKubeNotes(&out, &Result{KubeSkipped: "skipped: kubernetes binaries not found"})
	if !strings.Contains(out.String(), "kube control plane: skipped: kubernetes binaries not found") {
		t.Errorf("skip line:\n%s", out.String())
	}
}
