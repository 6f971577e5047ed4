package kube

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
	"github.com/weft-net/weft/internal/store/storetest"
)

// notInKubeMode names the conformance tests whose contract does not hold in
// kube mode, and why (see the package documentation).
var notInKubeMode = map[string]string{
	"AcquireNew":               "the subnet is assigned, not picked, and a kube lease has no Expiration",
	"AcquireReusesOwn":         "a node is its Node's name, not its public address",
	"AcquirePrevious":          "the subnet is the podCIDR: Previous is not used",
	"AcquireDuplicateIdentity": "a node is its Node's name, not its public address",
	"AcquireDualStack":         "the subnet is assigned, not picked (TestAcquireDualStack covers dual-stack podCIDRs)",
	"AcquireReplacesMisfit":    "the subnet is assigned, not picked",
	"Reservation":              "kube mode has no reservations",
	"Exhausted":                "the subnet is assigned, not picked: no pool to exhaust",
	"RaceDistinct":             "the subnet is assigned by the node IPAM controller, not by racing nodes",
	"RaceSamePublicIP":         "a node is its Node's name, not its public address",
	"FlannelValues":            "a lease is not taken over by its address (TestParseFlannelNode reads flannel's values)",
	"FlannelValuesPerBackend":  "a lease is not taken over by its address (TestPublishedMatchesFlannel covers each backend)",
	"WatchFromZero":            "kube mode has no reservations (TestWatchFromZero covers the rest)",
	"WatchCompacted":           "the fake API keeps no history to compact (TestWatchRestartMissesNoDeletion covers 410 Gone)",
	"KeepLeaseDeleted":         "a deleted Node comes back only when its kubelet registers it again (TestRenew, TestKeepLeaseZeroExpiration)",
	"KeepLeaseExpired":         "a kube lease has no TTL",
	"KeepLeaseRenews":          "a kube lease has no TTL: nothing renews it on a timer (TestKeepLeaseZeroExpiration)",
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		name := t.Name()[strings.LastIndexByte(t.Name(), '/')+1:]
		if why, ok := notInKubeMode[name]; ok {
			t.Skip("not in kube mode: " + why)
		}
		return &harness{api: newFake(), conf: filepath.Join(t.TempDir(), "net-conf.json")}
	})
}

// harness is a cluster on the fake API. Entries are Nodes: Put creates one
// named after the key, with the key's subnets as podCIDRs and the value's
// fields as annotations (a value that is not JSON becomes a malformed
// public-ip). Each Store is a node of its own, whose podCIDR the harness
// assigns, as the node IPAM controller would, when the node acquires: the
// first free /24 of 10.5.0.0/16.
type harness struct {
	api   *fakeAPI
	conf  string
	nodes atomic.Int32
}

func (h *harness) Store(t *testing.T, log *slog.Logger) store.Store {
	name := fmt.Sprintf("weft-node-%d", h.nodes.Add(1))
	h.api.put(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
	s := newTestStore(t, h.api, nil, log, func(o *Options) { o.NodeName, o.NetConfPath = name, h.conf })
	return &ipamStore{Store: s, h: h, t: t, name: name}
}

// ipamStore assigns the node's podCIDR before its first AcquireLease.
type ipamStore struct {
	*Store
	h    *harness
	t    *testing.T
	name string
}

func (s *ipamStore) AcquireLease(ctx context.Context, req store.AcquireRequest) (lease.Lease, error) {
	s.h.assign(s.t, s.name)
	return s.Store.AcquireLease(ctx, req)
}

func (h *harness) assign(t *testing.T, name string) {
	n := h.api.node(t, name)
	if hasPodCIDR(n) {
		return
	}
	list, err := h.api.cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 256; i++ {
		p := netip.MustParsePrefix(fmt.Sprintf("10.5.%d.0/24", i))
		free := true
		for _, o := range list.Items {
			for _, c := range o.Spec.PodCIDRs {
				if q, err := netip.ParsePrefix(c); err == nil && q.Overlaps(p) {
					free = false
				}
			}
		}
		if free {
			n.Spec.PodCIDR, n.Spec.PodCIDRs = p.String(), []string{p.String()}
			h.api.put(t, n)
			return
		}
	}
	t.Fatal("harness: 10.5.0.0/16 is full")
}

func (h *harness) SetConfig(t *testing.T, netconf string) {
	if err := os.WriteFile(h.conf, []byte(netconf), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) Put(t *testing.T, name, value string, _ bool) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	v4, v6, err := lease.ParseKey(name)
	switch {
	case err != nil:
		n.Spec.PodCIDRs = []string{name}
	case v4.IsValid():
		n.Spec.PodCIDRs = append(n.Spec.PodCIDRs, v4.String())
	}
	if v6.IsValid() {
		n.Spec.PodCIDRs = append(n.Spec.PodCIDRs, v6.String())
	}
	n.Spec.PodCIDR = n.Spec.PodCIDRs[0]
	k := newKeys(DefaultPrefix)
	n.Annotations = map[string]string{k.managed: "true"}
	a, err := lease.ParseAttrs([]byte(value))
	if err != nil {
		n.Annotations[k.publicIP] = value
		h.api.put(t, n)
		return
	}
	bd, _ := dataString(a.BackendData)
	n.Annotations[k.backendType], n.Annotations[k.backendData] = a.BackendType, bd
	n.Annotations[k.publicIP] = addrOr(a.PublicIP, netip.Addr{}, "0.0.0.0")
	if a.PublicIPv6.IsValid() {
		v6bd, _ := dataString(a.BackendV6Data)
		n.Annotations[k.publicIPv6], n.Annotations[k.backendV6Data] = a.PublicIPv6.String(), v6bd
	}
	h.api.put(t, n)
}

// find returns the Nodes named name or holding the lease key name.
func (h *harness) find(t *testing.T, name string) []corev1.Node {
	list, err := h.api.cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Node
	for _, n := range list.Items {
		v4, v6, err := podSubnets(n.Spec.PodCIDRs)
		if n.Name == name || (err == nil && lease.FormatKey(v4, v6) == name) {
			out = append(out, n)
		}
	}
	return out
}

func (h *harness) Delete(t *testing.T, name string) {
	for _, n := range h.find(t, name) {
		h.api.del(t, n.Name)
	}
}

func (h *harness) Expire(t *testing.T, name string) { h.Delete(t, name) }

func (h *harness) Get(t *testing.T, name string) (string, bool, bool) {
	nodes := h.find(t, name)
	if len(nodes) == 0 {
		return "", false, false
	}
	k, a := newKeys(DefaultPrefix), nodes[0].Annotations
	var attrs lease.Attrs
	attrs.PublicIP, _ = parseAddr(a, k.publicIP, false)
	attrs.PublicIPv6, _ = parseAddr(a, k.publicIPv6, true)
	attrs.BackendType = a[k.backendType]
	attrs.BackendData, _ = canonical(a, k.backendData)
	attrs.BackendV6Data, _ = canonical(a, k.backendV6Data)
	v, err := attrs.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(v), false, true
}

func (h *harness) Compact(*testing.T) {}
