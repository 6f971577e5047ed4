package kube

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"

	"github.com/weft-net/weft/internal/testenv"
)

func vxAttrs(ip string) lease.Attrs {
	return attrsOf(ip, "", "vxlan", `{"VNI":1,"VtepMAC":"`+mac1+`"}`, "")
}

func acquireReq(nc *config.NetConf, a lease.Attrs) store.AcquireRequest {
	return store.AcquireRequest{Config: nc, Attrs: a}
}

// The node's annotations after AcquireLease are flannel's, written with one
// strategic merge patch of metadata.annotations through nodes/status.
func TestAcquirePublishes(t *testing.T) {
	api := newFake(kubeNode("n1", []string{"10.244.1.0/24"}, nil))
	nc := mustNetConf(t, netConfV4)
	s := newTestStore(t, api, nc, nil)
	l, err := s.AcquireLease(tctx(t), acquireReq(nc, vxAttrs("192.168.10.4")))
	if err != nil {
		t.Fatal(err)
	}
	if l.Key() != "10.244.1.0-24" || !l.Attrs.Equal(vxAttrs("192.168.10.4")) || !l.Expiration.IsZero() || l.Reservation {
		t.Fatalf("lease %+v", l)
	}
	want := prefixed(peerAnn("192.168.10.4", mac1))
	if got := api.node(t, "n1").Annotations; !maps.Equal(got, want) {
		t.Errorf("annotations\n%v\nwant\n%v", got, want)
	}
	p := api.patches()
	if len(p) != 1 || !strings.HasPrefix(p[0], "status application/strategic-merge-patch+json {\"metadata\":{\"annotations\":{") {
		t.Errorf("patches %q", p)
	}
	// Acquiring again with the same attributes writes nothing.
	if _, err := s.AcquireLease(tctx(t), acquireReq(nc, vxAttrs("192.168.10.4"))); err != nil || len(api.patches()) != 1 {
		t.Errorf("second acquire: %v, patches %q", err, api.patches())
	}
}

func TestAcquireOverwrite(t *testing.T) {
	var logs testenv.LogBuffer
	api := newFake(kubeNode("n1", []string{"10.244.1.0/24"}, map[string]string{"public-ip-overwrite": "203.0.113.9"}),
		kubeNode("n2", []string{"10.244.2.0/24"}, map[string]string{"public-ip-overwrite": "not-an-ip"}))
	nc := mustNetConf(t, netConfV4)
	s := newTestStore(t, api, nc, logs.Logger())
	l, err := s.AcquireLease(tctx(t), acquireReq(nc, vxAttrs("192.168.10.4")))
	if err != nil {
		t.Fatal(err)
	}
	if got := api.node(t, "n1").Annotations[DefaultPrefix+"/public-ip"]; got != "203.0.113.9" {
		t.Errorf("public-ip %q, want the overwrite", got)
	}
	if l.Attrs.PublicIP.String() != "192.168.10.4" { // the node's own, as flannel returns it
		t.Errorf("lease public ip %s", l.Attrs.PublicIP)
	}
	// A bad overwrite is ignored, with a warning.
	s2 := newTestStore(t, api, nc, logs.Logger(), func(o *Options) { o.NodeName = "n2" })
	for range 2 {
		if _, err := s2.AcquireLease(tctx(t), acquireReq(nc, vxAttrs("192.168.10.5"))); err != nil {
			t.Fatal(err)
		}
	}
	if got := api.node(t, "n2").Annotations[DefaultPrefix+"/public-ip"]; got != "192.168.10.5" {
		t.Errorf("public-ip %q with a bad overwrite", got)
	}
	if n := logs.Count("ignoring an overwrite annotation", "not-an-ip"); n != 1 {
		t.Errorf("bad overwrite logged %d times, want once:\n%s", n, logs.String())
	}
}

func TestAcquireDualStack(t *testing.T) {
	api := newFake(kubeNode("n1", []string{"10.244.1.0/24", "fd00:10:244:1::/64"}, nil))
	nc := mustNetConf(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`)
	s := newTestStore(t, api, nc, nil)
	a := attrsOf("192.168.10.4", "fd99::4", "host-gw", "", "")
	l, err := s.AcquireLease(tctx(t), acquireReq(nc, a))
	if err != nil || l.Key() != "10.244.1.0-24&fd00:10:244:1::-64" {
		t.Fatalf("lease %s, %v", l.Key(), err)
	}
	if got := api.node(t, "n1").Annotations[DefaultPrefix+"/public-ipv6"]; got != "fd99::4" {
		t.Errorf("public-ipv6 %q", got)
	}
	// IPv6 only: the IPv4 podCIDR is ignored.
	nc6 := mustNetConf(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`)
	if l, err = s.AcquireLease(tctx(t), acquireReq(nc6, a)); err != nil || l.Subnet.IsValid() || l.IPv6Subnet.String() != "fd00:10:244:1::/64" {
		t.Errorf("IPv6-only lease %s, %v", l.Key(), err)
	}
}

// A podCIDR of another length than SubnetLen is taken as it is (flannel).
func TestAcquirePodCIDRLength(t *testing.T) {
	api := newFake(kubeNode("n1", []string{"10.244.1.128/25"}, nil))
	nc := mustNetConf(t, netConfV4)
	l, err := newTestStore(t, api, nc, nil).AcquireLease(tctx(t), acquireReq(nc, vxAttrs("192.168.10.4")))
	if err != nil || l.Subnet.String() != "10.244.1.128/25" {
		t.Fatalf("lease %s, %v", l.Key(), err)
	}
}

func TestAcquireMismatch(t *testing.T) {
	nc := mustNetConf(t, netConfV4)
	dual := mustNetConf(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`)
	for _, tc := range []struct {
		cidrs []string
		nc    *config.NetConf
		want  string
	}{
		{[]string{"10.9.1.0/24"}, nc, "podCIDR 10.9.1.0/24 of node n1 is not inside network 10.244.0.0/16"},
		{[]string{"10.244.1.0/24"}, dual, "node n1 has no IPv6 podCIDR"},
		{[]string{"fd00:10:244:1::/64"}, nc, "node n1 has no IPv4 podCIDR"},
	} {
		s := newTestStore(t, newFake(kubeNode("n1", tc.cidrs, nil)), tc.nc, nil)
		_, err := s.AcquireLease(tctx(t), acquireReq(tc.nc, vxAttrs("192.168.10.4")))
		if !errors.Is(err, config.ErrNetConf) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("podCIDRs %v: err %v, want ErrNetConf with %q", tc.cidrs, err, tc.want)
		}
	}
}

// No podCIDR yet: ErrNotYet with the reason at once, then AcquireLease
// waits on a watch and returns the moment one is assigned.
func TestAcquireWaitsForPodCIDR(t *testing.T) {
	api := newFake(kubeNode("n1", nil, nil))
	nc := mustNetConf(t, netConfV4)
	s := newTestStore(t, api, nc, nil, func(o *Options) { o.NotYetWait = 20 * time.Second })
	_, err := s.AcquireLease(tctx(t), acquireReq(nc, vxAttrs("192.168.10.4")))
	if !errors.Is(err, store.ErrNotYet) || !strings.Contains(err.Error(), "node n1 has no podCIDR yet") {
		t.Fatalf("err %v, want ErrNotYet naming the node", err)
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		n := api.node(t, "n1")
		n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.7.0/24", []string{"10.244.7.0/24"}
		api.put(t, n)
	}()
	start := time.Now()
	l, err := s.AcquireLease(tctx(t), acquireReq(nc, vxAttrs("192.168.10.4")))
	if err != nil || l.Key() != "10.244.7.0-24" {
		t.Fatalf("lease %s, %v", l.Key(), err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("came up %v after the assignment", d)
	}
	if api.node(t, "n1").Annotations[DefaultPrefix+"/kube-subnet-manager"] != "true" {
		t.Errorf("not published")
	}
}

func TestAcquireNotRegistered(t *testing.T) {
	api := newFake()
	nc := mustNetConf(t, netConfV4)
	s := newTestStore(t, api, nc, nil, func(o *Options) { o.NotYetWait = 100 * time.Millisecond })
	for range 2 { // at once, then after waiting
		_, err := s.AcquireLease(tctx(t), acquireReq(nc, vxAttrs("192.168.10.4")))
		if !errors.Is(err, store.ErrNotYet) || !strings.Contains(err.Error(), "node n1 is not registered yet") {
			t.Fatalf("err %v", err)
		}
	}
}

// POD_NAME/POD_NAMESPACE: the node is the pod's spec.nodeName.
func TestAcquirePodName(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kube-flannel-ds-x", Namespace: "kube-flannel"},
		Spec: corev1.PodSpec{NodeName: "n9"}}
	api := newFake(pod, kubeNode("n9", []string{"10.244.9.0/24"}, nil))
	nc := mustNetConf(t, netConfV4)
	s := newTestStore(t, api, nc, nil, func(o *Options) { o.NodeName, o.PodName, o.PodNamespace = "", "kube-flannel-ds-x", "kube-flannel" })
	if l, err := s.AcquireLease(tctx(t), acquireReq(nc, vxAttrs("192.168.10.9"))); err != nil || l.Key() != "10.244.9.0-24" {
		t.Fatalf("lease %s, %v", l.Key(), err)
	}
}

// A Network that contains the node's own address is warned about once,
// naming both.
func TestWarnOwnAddress(t *testing.T) {
	var logs testenv.LogBuffer
	n := kubeNode("n1", []string{"10.0.1.0/24"}, nil)
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.200.7"}, {Type: corev1.NodeHostName, Address: "n1"}}
	api := newFake(n)
	nc := mustNetConf(t, `{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan"}}`)
	s := newTestStore(t, api, nc, logs.Logger())
	for range 2 {
		if _, err := s.AcquireLease(tctx(t), acquireReq(nc, vxAttrs("10.0.200.7"))); err != nil {
			t.Fatal(err)
		}
	}
	if got := logs.Count("level=WARN", "cluster network contains this node's own address", "network=10.0.0.0/16", "address=10.0.200.7"); got != 1 {
		t.Errorf("warned %d times, want once:\n%s", got, logs.String())
	}
}

// RenewLease re-publishes annotations someone removed, writes nothing
// otherwise, and reports a lost lease.
func TestRenew(t *testing.T) {
	var logs testenv.LogBuffer
	api := newFake(kubeNode("n1", []string{"10.244.1.0/24"}, nil))
	nc := mustNetConf(t, netConfV4)
	s := newTestStore(t, api, nc, logs.Logger())
	l, err := s.AcquireLease(tctx(t), acquireReq(nc, vxAttrs("192.168.10.4")))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s.RenewLease(tctx(t), l); err != nil || !r.Equal(l) || len(api.patches()) != 1 {
		t.Fatalf("renew unchanged: %+v %v, patches %d", r, err, len(api.patches()))
	}
	n := api.node(t, "n1")
	n.Annotations = nil
	api.put(t, n)
	if r, err := s.RenewLease(tctx(t), l); err != nil || !r.Equal(l) {
		t.Fatalf("renew: %+v %v", r, err)
	}
	if got, want := api.node(t, "n1").Annotations, prefixed(peerAnn("192.168.10.4", mac1)); !maps.Equal(got, want) {
		t.Errorf("after renew: %v", got)
	}
	if logs.Count("published them again") != 1 {
		t.Errorf("re-publication not logged:\n%s", logs.String())
	}
	// The Node re-created with another podCIDR, then gone.
	api.del(t, "n1")
	api.put(t, kubeNode("n1", []string{"10.244.2.0/24"}, nil))
	if _, err := s.RenewLease(tctx(t), l); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Errorf("renew with another podCIDR: %v", err)
	}
	api.del(t, "n1")
	if _, err := s.RenewLease(tctx(t), l); !errors.Is(err, store.ErrLeaseNotFound) {
		t.Errorf("renew of a deleted node: %v", err)
	}
}

func TestMarkUp(t *testing.T) {
	api := newFake(kubeNode("n1", []string{"10.244.1.0/24"}, nil))
	nc := mustNetConf(t, netConfV4)
	if err := newTestStore(t, api, nc, nil, func(o *Options) { o.SetNodeNetworkUnavailable = false }).MarkUp(tctx(t)); err != nil ||
		len(api.patches()) != 0 {
		t.Fatalf("--set-node-network-unavailable=false: %v, patches %q", err, api.patches())
	}
	if err := newTestStore(t, api, nc, nil).MarkUp(tctx(t)); err != nil {
		t.Fatal(err)
	}
	conds := api.node(t, "n1").Status.Conditions
	if len(conds) != 1 || conds[0].Type != corev1.NodeNetworkUnavailable || conds[0].Status != corev1.ConditionFalse ||
		conds[0].Reason != "FlannelIsUp" || conds[0].Message != "Flannel is running on this node" || conds[0].LastTransitionTime.IsZero() {
		t.Errorf("conditions %+v", conds)
	}
	if p := api.patches(); len(p) != 1 || !strings.HasPrefix(p[0], "status application/strategic-merge-patch+json {\"status\":{\"conditions\":[") {
		t.Errorf("patches %q", p)
	}
	var body map[string]map[string][]map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(api.patches()[0], " ", 3)[2]), &body); err != nil ||
		body["status"]["conditions"][0]["type"] != "NetworkUnavailable" {
		t.Errorf("patch body %v %v", body, err)
	}
}

// KeepLease with a kube lease (no Expiration): no timed renewals, and
// annotations someone removed come back.
func TestKeepLeaseZeroExpiration(t *testing.T) {
	api := newFake(kubeNode("n1", []string{"10.244.1.0/24"}, nil), kubeNode("n2", []string{"10.244.2.0/24"}, peerAnn("192.168.10.5", mac2)))
	nc := mustNetConf(t, netConfV4)
	s := newTestStore(t, api, nc, nil)
	own, err := s.AcquireLease(tctx(t), acquireReq(nc, vxAttrs("192.168.10.4")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan lease.Lease, 4)
	errc := make(chan error, 1)
	renewed := make(chan lease.Lease, 16)
	go func() {
		errc <- store.KeepLease(ctx, s, own, store.KeepOptions{Request: acquireReq(nc, own.Attrs), RetryMin: 20 * time.Millisecond,
			Renewed: func(l lease.Lease) { renewed <- l }}, out)
	}()
	defer func() {
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("KeepLease: %v", err)
		}
	}()
	select {
	case l := <-renewed:
		t.Fatalf("renewed %+v with nothing changed", l)
	case <-time.After(500 * time.Millisecond):
	}
	n := api.node(t, "n1")
	delete(n.Annotations, DefaultPrefix+"/kube-subnet-manager")
	api.put(t, n)
	select {
	case <-renewed:
	case l := <-out:
		t.Fatalf("re-acquired %+v; want a renewal", l)
	case <-time.After(10 * time.Second):
		t.Fatal("removed annotations not published again")
	}
	if api.node(t, "n1").Annotations[DefaultPrefix+"/kube-subnet-manager"] != "true" {
		t.Error("annotation not back")
	}
}

func TestReadNetConf(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadNetConf(filepath.Join(dir, "missing.json"), nil); !errors.Is(err, store.ErrNoConfig) ||
		!strings.Contains(err.Error(), "read --net-config-path") {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"Network":"10.0.0.0/33"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadNetConf(bad, nil); !errors.Is(err, config.ErrNetConf) || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad file: %v", err)
	}
	var logs testenv.LogBuffer
	good := filepath.Join(dir, "good.json")
	if err := os.WriteFile(good, []byte(`{"Network":"10.0.0.0/16","Extra":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if nc, err := ReadNetConf(good, logs.Logger()); err != nil || nc.IPv4.Network != netip.MustParsePrefix("10.0.0.0/16") ||
		logs.Count("Extra") != 1 {
		t.Errorf("good file: %v %v\n%s", nc, err, logs.String())
	}
}
