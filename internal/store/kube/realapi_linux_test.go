package kube

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weft-net/weft/deploy"
	"github.com/weft-net/weft/internal/kubeapi"
	"github.com/weft-net/weft/internal/kubeapi/kubeapitest"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"

	"github.com/weft-net/weft/internal/testenv"
)

// flannelPod is the pod a kube-flannel DaemonSet runs on n1 (the store finds
// its node through POD_NAME).
const flannelPod = `
apiVersion: v1
kind: Pod
metadata: {name: kube-flannel-ds-x, namespace: kube-flannel}
spec:
  nodeName: n1
  containers: [{name: flannel, image: example.invalid/flannel}]
`

// nodeManifest is a Node as a kubelet registers it; ann are annotations
// without the prefix (a flannel peer's, or none).
func nodeManifest(name string, ann map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"apiVersion":"v1","kind":"Node","metadata":{"name":%q,"annotations":{`, name)
	sep := ""
	for k, v := range ann {
		fmt.Fprintf(&b, `%s%q:%q`, sep, DefaultPrefix+"/"+k, v)
		sep = ","
	}
	b.WriteString(`}}}`)
	return b.String()
}

// The store against a real kube-apiserver and kube-controller-manager
// (internal/kubeapi; `make kube-bins`), with kube-flannel.yml's RBAC.
func TestRealAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and kube-controller-manager")
	}
	cp := kubeapitest.Start(t, kubeapi.Options{})
	ctx := tctx(t)
	rbac, err := deploy.RBAC() // kube-weft.yml's: the store must work with exactly these permissions
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Apply(ctx, rbac+"---\n"+flannelPod+"---\n"+nodeManifest("n1", nil)); err != nil {
		t.Fatal(err)
	}
	saConf, err := cp.ServiceAccountKubeconfig(ctx, "kube-flannel", "flannel", 0)
	if err != nil {
		t.Fatal(err)
	}
	api, err := Connect("", saConf, "weftd/test")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := Connect("", cp.AdminKubeconfig(), "test")
	if err != nil {
		t.Fatal(err)
	}
	nc := mustNetConf(t, netConfV4)
	var logs testenv.LogBuffer
	s := newTestStore(t, api, nc, logs.Logger(), func(o *Options) {
		o.NodeName, o.PodName, o.PodNamespace = "", "kube-flannel-ds-x", "kube-flannel"
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("store log:\n%s", logs.String())
		}
	})
	own := acquireUntilUp(t, s, acquireReq(nc, vxAttrs("192.168.10.1")))
	t.Run("PublishAndMarkUp", func(t *testing.T) { testRealPublish(t, s, admin, own) })
	t.Run("Watch", func(t *testing.T) { testRealWatch(t, cp, s, own) })
	t.Run("Outage", func(t *testing.T) { testRealOutage(t, cp, own) })
	t.Run("APIServerRestart", func(t *testing.T) { testRealRestart(t, cp, s) })
	t.Run("NodePublicIP", func(t *testing.T) {
		testRealNodePublicIP(t, cp, api, admin, mustNetConf(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`),
			"n8", "192.0.2.8", "")
	})
}

// acquireUntilUp retries ErrNotYet (the controller may not have assigned the
// podCIDR yet), as the daemon does.
func acquireUntilUp(t *testing.T, s *Store, req store.AcquireRequest) lease.Lease {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		l, err := s.AcquireLease(tctx(t), req)
		if err == nil {
			return l
		}
		if !errors.Is(err, store.ErrNotYet) || time.Now().After(deadline) {
			t.Fatalf("acquire: %v", err)
		}
	}
}

func testRealPublish(t *testing.T, s *Store, admin API, own lease.Lease) {
	if own.Subnet.Bits() != 24 || !netip.MustParsePrefix("10.244.0.0/16").Contains(own.Subnet.Addr()) {
		t.Fatalf("lease %s", own.Key())
	}
	if err := s.MarkUp(tctx(t)); err != nil {
		t.Fatal(err)
	}
	n, err := admin.GetNode(tctx(t), "n1")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range peerAnn("192.168.10.1", mac1) {
		if got := n.Annotations[DefaultPrefix+"/"+k]; got != v {
			t.Errorf("annotation %s = %q, want %q", k, got, v)
		}
	}
	var found bool
	for _, c := range n.Status.Conditions {
		found = found || (c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionFalse &&
			c.Reason == "FlannelIsUp" && c.Message == "Flannel is running on this node")
	}
	if !found {
		t.Errorf("conditions %+v", n.Status.Conditions)
	}
	if r, err := s.RenewLease(tctx(t), own); err != nil || !r.Equal(own) {
		t.Errorf("renew: %+v %v", r, err)
	}
}

// podCIDRKey waits for the controller to give Node name a podCIDR and
// returns its lease key.
func podCIDRKey(t *testing.T, api API, name string) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		n, err := api.GetNode(tctx(t), name)
		if err == nil && len(n.Spec.PodCIDRs) > 0 {
			v4, v6, _ := podSubnets(n.Spec.PodCIDRs)
			return lease.FormatKey(v4, v6)
		}
	}
	t.Fatalf("node %s got no podCIDR", name)
	return ""
}

func testRealWatch(t *testing.T, cp *kubeapi.ControlPlane, s *Store, own lease.Lease) {
	ctx := tctx(t)
	snap, err := s.ListLeases(ctx)
	if err != nil || len(snap.Leases) != 1 || snap.Leases[0].Key() != own.Key() || snap.Revision == 0 {
		t.Fatalf("list %v at %d: %v", keysOf(snap.Leases), snap.Revision, err)
	}
	w := startWatch(t, s, snap)
	if err := cp.Apply(ctx, nodeManifest("n2", peerAnn("192.168.10.2", mac2))); err != nil {
		t.Fatal(err)
	}
	key := podCIDRKey(t, s.o.API, "n2")
	w.want("added " + key)
	if _, err := cp.Kubectl(ctx, "annotate", "node", "n2", "--overwrite", DefaultPrefix+"/public-ip=not-an-address"); err != nil {
		t.Fatal(err)
	}
	w.want("removed " + key) // a peer that turns malformed is removed
	if _, err := cp.Kubectl(ctx, "delete", "node", "n2"); err != nil {
		t.Fatal(err)
	}
	w.quiet(500 * time.Millisecond) // already removed
}

// testRealOutage cuts the store off the API server (a TCP proxy between
// them) while a Node is deleted: when it is back, the watch resumes from the
// last resourceVersion it saw and delivers the deletion.
func testRealOutage(t *testing.T, cp *kubeapi.ControlPlane, own lease.Lease) {
	ctx := tctx(t)
	if err := cp.Apply(ctx, nodeManifest("n3", peerAnn("192.168.10.3", mac2))); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, strings.TrimPrefix(cfg.Host, "https://"))
	cfg.Host = "https://" + p.addr()
	api, err := newRESTAPI(cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	s := newTestStore(t, api, mustNetConf(t, netConfV4), nil)
	key := podCIDRKey(t, api, "n3")
	w := startWatch(t, s, store.Snapshot{})
	w.want("added " + own.Key() + ", added " + key)
	p.cut(true)
	if _, err := cp.Kubectl(ctx, "delete", "node", "n3"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	w.quiet(100 * time.Millisecond)
	p.cut(false)
	w.want("removed " + key)
}

func testRealRestart(t *testing.T, cp *kubeapi.ControlPlane, s *Store) {
	ctx := tctx(t)
	snap, err := s.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, s, snap)
	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RenewLease(ctx, snap.Leases[0]); err == nil || errors.Is(err, store.ErrLeaseNotFound) {
		t.Errorf("renew with the API server down: %v", err)
	}
	time.Sleep(time.Second)
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cp.Apply(ctx, nodeManifest("n4", peerAnn("192.168.10.4", mac2))); err != nil {
		t.Fatal(err)
	}
	w.want("added " + podCIDRKey(t, s.o.API, "n4"))
}

// proxy forwards TCP to target and can cut every connection.
type proxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool       // guarded by mu
	conns []net.Conn // guarded by mu
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: target}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); p.cut(true); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { p.serve(c) })
		}
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns = append(p.conns, c, up)
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
}

// cut closes every connection and refuses new ones while down.
func (p *proxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// A dual-stack cluster: the controller assigns an IPv4 and an IPv6 podCIDR.
func TestRealAPIServerDualStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and kube-controller-manager")
	}
	cp := kubeapitest.Start(t, kubeapi.Options{ClusterCIDRs: []netip.Prefix{
		netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")}})
	ctx := tctx(t)
	if err := cp.Apply(ctx, nodeManifest("n1", nil)); err != nil {
		t.Fatal(err)
	}
	api, err := Connect("", cp.AdminKubeconfig(), "weftd/test")
	if err != nil {
		t.Fatal(err)
	}
	nc := mustNetConf(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`)
	s := newTestStore(t, api, nc, nil)
	own := acquireUntilUp(t, s, acquireReq(nc, attrsOf("192.168.10.1", "fd99::1", "host-gw", "", "")))
	if !own.Subnet.IsValid() || own.IPv6Subnet.Bits() != 64 || !strings.Contains(own.Key(), "&fd00:10:244:") {
		t.Fatalf("lease %s", own.Key())
	}
	snap, err := s.ListLeases(ctx)
	if err != nil || len(snap.Leases) != 1 || !snap.Leases[0].Attrs.Equal(own.Attrs) || snap.Leases[0].Key() != own.Key() {
		t.Fatalf("list %+v: %v", snap.Leases, err)
	}
	testRealNodePublicIP(t, cp, api, api, nc, "n8", "192.0.2.8", "2001:db8::8")
}
