package kube

import (
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/weft-net/weft/internal/config"

	"github.com/weft-net/weft/internal/testenv"
)

// fakeAPI is API over client-go's fake clientset (an in-memory object
// tracker; it ignores paging and field selectors). Its watches see only
// what happens after they start (no replay from a resourceVersion), so a
// test that changes a Node right after a watch's list waits for the watch
// (waitWatching).
type fakeAPI struct {
	cs      *fake.Clientset
	watches atomic.Int32 // node watches started
}

func newFake(objs ...runtime.Object) *fakeAPI { return &fakeAPI{cs: fake.NewClientset(objs...)} }

func (f *fakeAPI) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	return f.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
}

func (f *fakeAPI) ListNodes(ctx context.Context, opts metav1.ListOptions, each func(*corev1.Node)) (metav1.ListMeta, error) {
	l, err := f.cs.CoreV1().Nodes().List(ctx, opts)
	if err != nil {
		return metav1.ListMeta{}, err
	}
	for i := range l.Items {
		each(&l.Items[i])
	}
	return l.ListMeta, nil
}

func (f *fakeAPI) WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	w, err := f.cs.CoreV1().Nodes().Watch(ctx, opts)
	if err == nil {
		f.watches.Add(1)
	}
	return w, err
}

// waitWatching waits until a node watch has started.
func (f *fakeAPI) waitWatching(t testing.TB) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); f.watches.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no node watch started within 10 s")
		}
	}
}

func (f *fakeAPI) PatchNodeStatus(ctx context.Context, name string, patch []byte) error {
	_, err := f.cs.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	return err
}

func (f *fakeAPI) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	return f.cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
}

// node helpers

func (f *fakeAPI) node(t testing.TB, name string) *corev1.Node {
	t.Helper()
	n, err := f.cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get node %s: %v", name, err)
	}
	return n
}

func (f *fakeAPI) put(t testing.TB, n *corev1.Node) {
	t.Helper()
	nodes := f.cs.CoreV1().Nodes()
	if _, err := nodes.Update(context.Background(), n, metav1.UpdateOptions{}); err == nil {
		return
	}
	if _, err := nodes.Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("put node %s: %v", n.Name, err)
	}
}

func (f *fakeAPI) del(t testing.TB, name string) {
	t.Helper()
	if err := f.cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete node %s: %v", name, err)
	}
}

// patches returns the patches sent to nodes/status.
func (f *fakeAPI) patches() []string {
	var out []string
	for _, a := range f.cs.Actions() {
		if p, ok := a.(k8stesting.PatchAction); ok && a.GetResource().Resource == "nodes" {
			out = append(out, a.GetSubresource()+" "+string(p.GetPatchType())+" "+string(p.GetPatch()))
		}
	}
	return out
}

// kubeNode builds a Node; annotations are given without the prefix.
func kubeNode(name string, cidrs []string, ann map[string]string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: cidrs}}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
	}
	if ann != nil {
		n.Annotations = map[string]string{}
		for k, v := range ann {
			n.Annotations[DefaultPrefix+"/"+k] = v
		}
	}
	return n
}

// peerAnn is what a flannel vxlan node publishes.
func peerAnn(ip, mac string) map[string]string {
	return map[string]string{"kube-subnet-manager": "true", "backend-type": "vxlan",
		"backend-data": `{"VNI":1,"VtepMAC":"` + mac + `"}`, "public-ip": ip}
}

func mustNetConf(t testing.TB, s string) *config.NetConf {
	t.Helper()
	nc, _, err := config.ParseNetConf([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

const netConfV4 = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`

func newTestStore(t testing.TB, api API, nc *config.NetConf, log *slog.Logger, mod ...func(*Options)) *Store {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := Options{API: api, NodeName: "n1", NetConf: nc, SetNodeNetworkUnavailable: true, Logger: log,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, NotYetWait: 2 * time.Second}
	for _, m := range mod {
		m(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tctx(t testing.TB) context.Context { return testenv.Context(t, 30*time.Second) }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
