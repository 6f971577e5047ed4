package kube

import (
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kubeapi"
	"github.com/weft-net/weft/internal/lease"

	"github.com/weft-net/weft/internal/testenv"
)

// testRealNodePublicIP runs on a real API server: Node name, created with
// node-public-ip v4 (and node-public-ipv6 v6 unless ""), is read by the
// store through api (kube-weft.yml's ServiceAccount in TestRealAPIServer:
// nodes get); the lease acquired with those addresses publishes them as
// public-ip / public-ipv6 (read back through admin); an operator's
// public-ip-overwrite added later wins for what is published (RenewLease)
// while node-public-ip stays as the operator left it; a malformed value
// is an error naming it. The Node is deleted at the end.
func testRealNodePublicIP(t *testing.T, cp *kubeapi.ControlPlane, api, admin API, nc *config.NetConf, name, v4, v6 string) {
	ctx := tctx(t)
	ann := map[string]string{"node-public-ip": v4}
	if v6 != "" {
		ann["node-public-ipv6"] = v6
	}
	if err := cp.Apply(ctx, nodeManifest(name, ann)); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := cp.Kubectl(ctx, "delete", "node", name); err != nil {
			t.Error(err)
		}
	}()
	var logs testenv.LogBuffer
	s := newTestStore(t, api, nc, logs.Logger(), func(o *Options) { o.NodeName, o.PodName, o.PodNamespace = name, "", "" })
	g4, g6, err := s.PublicAddrs(ctx, nc)
	if err != nil || g4 != addrOrZero(v4) || g6 != addrOrZero(v6) {
		t.Fatalf("public addresses %v %v (%v), want %s %s", g4, g6, err, v4, v6)
	}
	attrs := lease.Attrs{PublicIP: g4, PublicIPv6: g6, BackendType: "host-gw"}
	own := acquireUntilUp(t, s, acquireReq(nc, attrs))
	published := func(key string) string {
		t.Helper()
		n, err := admin.GetNode(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return n.Annotations[DefaultPrefix+"/"+key]
	}
	want := map[string]string{"public-ip": v4, "node-public-ip": v4}
	if v6 != "" {
		want["public-ipv6"], want["node-public-ipv6"] = v6, v6
	}
	for k, v := range want {
		if got := published(k); got != v {
			t.Errorf("annotation %s = %q, want %q", k, got, v)
		}
	}
	if _, err := cp.Kubectl(ctx, "annotate", "node", name, DefaultPrefix+"/public-ip-overwrite=203.0.113.8"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RenewLease(ctx, own); err != nil {
		t.Fatal(err)
	}
	if got, gotNode := published("public-ip"), published("node-public-ip"); got != "203.0.113.8" || gotNode != v4 {
		t.Errorf("with an overwrite: public-ip %q, node-public-ip %q; want 203.0.113.8 and %s", got, gotNode, v4)
	}
	if _, err := cp.Kubectl(ctx, "annotate", "node", name, "--overwrite", DefaultPrefix+"/node-public-ip=10.9.0.500"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PublicAddrs(ctx, nc); err == nil ||
		!strings.Contains(err.Error(), `annotation `+DefaultPrefix+`/node-public-ip "10.9.0.500" is not an IP address`) {
		t.Errorf("malformed node-public-ip: %v", err)
	}
	if t.Failed() {
		t.Logf("store log:\n%s", logs.String())
	}
}
