package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	goruntime "runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"

	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"

	"github.com/weft-net/weft/internal/testenv"
)

func keysOf(leases []lease.Lease) []string {
	var out []string
	for _, l := range leases {
		out = append(out, l.Key())
	}
	return out
}

func evString(evs []lease.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Type.String()+" "+e.Lease.Key())
	}
	return strings.Join(s, ", ")
}

// watchT runs WatchLeases in the background.
type watchT struct {
	t    *testing.T
	ch   chan []lease.Event
	errc chan error
}

func startWatch(t *testing.T, s *Store, from store.Snapshot) *watchT {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchT{t: t, ch: make(chan []lease.Event, 64), errc: make(chan error, 1)}
	go func() { w.errc <- s.WatchLeases(ctx, from, w.ch) }()
	t.Cleanup(func() {
		cancel()
		if err := <-w.errc; !errors.Is(err, context.Canceled) {
			t.Errorf("WatchLeases returned %v", err)
		}
	})
	return w
}

func (w *watchT) want(want string) {
	w.t.Helper()
	var got []lease.Event
	deadline := time.After(10 * time.Second)
	for evString(got) != want {
		select {
		case b := <-w.ch:
			if len(b) == 0 {
				w.t.Error("empty batch")
			}
			got = append(got, b...)
		case err := <-w.errc:
			w.t.Fatalf("watch ended: %v", err)
		case <-deadline:
			w.t.Fatalf("events %q, want %q", evString(got), want)
		}
	}
}

func (w *watchT) quiet(d time.Duration) {
	w.t.Helper()
	select {
	case b := <-w.ch:
		w.t.Fatalf("unexpected events %s", evString(b))
	case <-time.After(d):
	}
}

// Anything anyone may write on a Node: skipped, logged once by name, never a
// crash; Nodes that are not flannel's are neither.
func TestListSkipsMalformed(t *testing.T) {
	var logs testenv.LogBuffer
	bare := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bare"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.9.0/24"}}
	noCIDR := kubeNode("no-cidr", nil, peerAnn("192.168.1.8", mac1))
	badIP := kubeNode("bad-ip", []string{"10.244.3.0/24"}, peerAnn("192.168.1.300", mac1))
	badData := kubeNode("bad-data", []string{"10.244.4.0/24"}, peerAnn("192.168.1.4", mac1))
	badData.Annotations[DefaultPrefix+"/backend-data"] = `{"VNI":1,`
	onlyManaged := kubeNode("only-managed", []string{"10.244.5.0/24"}, map[string]string{"kube-subnet-manager": "true"})
	outside := kubeNode("outside", []string{"10.9.0.0/24"}, peerAnn("192.168.1.6", mac1))
	dup := kubeNode("zz-dup", []string{"10.244.1.0/24"}, peerAnn("192.168.1.7", mac1))
	good := kubeNode("good", []string{"10.244.1.0/24"}, peerAnn("192.168.1.1", mac1))
	api := newFake(bare, noCIDR, badIP, badData, onlyManaged, outside, dup, good)
	s := newTestStore(t, api, mustNetConf(t, netConfV4), logs.Logger())
	for range 3 {
		snap, err := s.ListLeases(tctx(t))
		if err != nil || strings.Join(keysOf(snap.Leases), " ") != "10.244.1.0-24" || snap.Revision == 0 {
			t.Fatalf("list %v rev %d, %v", keysOf(snap.Leases), snap.Revision, err)
		}
	}
	for name, why := range map[string]string{"no-cidr": "has no IPv4 podCIDR", "bad-ip": "192.168.1.300",
		"bad-data": "backend-data", "only-managed": "public-ip is missing", "outside": "not inside network",
		"zz-dup": "is node good's too"} {
		if n := logs.Count("key="+name, why); n != 1 {
			t.Errorf("%s logged %d times with %q, want once", name, n, why)
		}
	}
	if n := logs.Count("bare"); n != 0 {
		t.Errorf("an unmanaged node was logged:\n%s", logs.String())
	}
}

func TestListPages(t *testing.T) {
	var nodes []runtime.Object
	for i := range 25 {
		nodes = append(nodes, kubeNode(fmt.Sprintf("n%02d", i), []string{fmt.Sprintf("10.244.%d.0/24", i)}, peerAnn("192.168.1.1", mac1)))
	}
	api := newFake(nodes...)
	var calls []string
	api.cs.PrependReactor("list", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		// Serve pages as the API server does, from the tracker's list.
		opts := a.(k8stesting.ListActionImpl).ListOptions
		calls = append(calls, fmt.Sprintf("rv=%q limit=%d continue=%q", opts.ResourceVersion, opts.Limit, opts.Continue))
		all, err := api.cs.Tracker().List(corev1.SchemeGroupVersion.WithResource("nodes"), corev1.SchemeGroupVersion.WithKind("Node"), "")
		if err != nil {
			return true, nil, err
		}
		list := all.(*corev1.NodeList)
		start := 0
		_, _ = fmt.Sscan(opts.Continue, &start) // "" is the first page
		end := min(start+int(opts.Limit), len(list.Items))
		page := &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "77"}, Items: list.Items[start:end]}
		if end < len(list.Items) {
			page.Continue = fmt.Sprint(end)
		}
		return true, page, nil
	})
	s := newTestStore(t, api, mustNetConf(t, netConfV4), nil, func(o *Options) { o.PageSize = 10 })
	snap, err := s.ListLeasesStream(tctx(t), nil)
	if err != nil || len(snap.Leases) != 25 || snap.Revision != 77 {
		t.Fatalf("list: %d leases at %d, %v", len(snap.Leases), snap.Revision, err)
	}
	// The daemon's start-up list: the first page from the API server's
	// cache, as an informer's first list; a continue token carries its
	// resourceVersion.
	if got := strings.Join(calls, "; "); got != `rv="0" limit=10 continue=""; rv="" limit=10 continue="10"; rv="" limit=10 continue="20"` {
		t.Errorf("requests %s", got)
	}
	// ListLeases (weft status, the conformance suite) reads consistently.
	calls = nil
	if snap, err := s.ListLeases(tctx(t)); err != nil || len(snap.Leases) != 25 {
		t.Fatalf("consistent list: %d leases, %v", len(snap.Leases), err)
	}
	if got := strings.Join(calls, "; "); got != `rv="" limit=10 continue=""; rv="" limit=10 continue="10"; rv="" limit=10 continue="20"` {
		t.Errorf("consistent list requests %s", got)
	}
}

// ListLeasesStream hands the leases over as they are read, in parts of
// firstPart doubling up to partSize; together the parts are the snapshot.
func TestListLeasesStream(t *testing.T) {
	const n = 2*partSize + 40
	var nodes []runtime.Object
	for i := range n {
		nodes = append(nodes, kubeNode(fmt.Sprintf("n%03d", i), []string{fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)},
			peerAnn("192.168.1.1", mac1)))
	}
	nodes = append(nodes, kubeNode("bad", []string{"10.9.9.0/24"}, peerAnn("192.168.1.300", mac1)))
	s := newTestStore(t, newFake(nodes...), mustNetConf(t, `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`), nil)
	var sizes []int
	var streamed []string
	snap, err := s.ListLeasesStream(tctx(t), func(part []lease.Lease) {
		sizes = append(sizes, len(part))
		streamed = append(streamed, keysOf(part)...)
	})
	if err != nil || len(snap.Leases) != n {
		t.Fatalf("list: %d leases, %v", len(snap.Leases), err)
	}
	var want []int
	for left, next := n, firstPart; left > 0; next = min(2*next, partSize) {
		want = append(want, min(next, left))
		left -= want[len(want)-1]
	}
	if want[0] != firstPart || slices.Max(want) != partSize || fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Errorf("parts of %v leases, want %v", sizes, want)
	}
	if strings.Join(streamed, " ") != strings.Join(keysOf(snap.Leases), " ") {
		t.Errorf("the parts are not the snapshot")
	}
}

func TestWatch(t *testing.T) {
	api := newFake(kubeNode("a", []string{"10.244.1.0/24"}, peerAnn("192.168.1.1", mac1)))
	s := newTestStore(t, api, mustNetConf(t, netConfV4), nil)
	snap, err := s.ListLeases(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, s, snap)
	api.put(t, kubeNode("b", []string{"10.244.2.0/24"}, peerAnn("192.168.1.2", mac1)))
	w.want("added 10.244.2.0-24")
	b := kubeNode("b", []string{"10.244.2.0/24"}, peerAnn("192.168.1.2", mac2))
	api.put(t, b)
	w.want("added 10.244.2.0-24")
	b.Labels = map[string]string{"x": "y"} // not a lease change
	api.put(t, b)
	w.quiet(200 * time.Millisecond)
	api.del(t, "a")
	w.want("removed 10.244.1.0-24")
	// Losing its annotations removes b's lease; getting them back adds it.
	b.Annotations = nil
	api.put(t, b)
	w.want("removed 10.244.2.0-24")
	api.put(t, kubeNode("b", []string{"10.244.2.0/24"}, peerAnn("192.168.1.2", mac2)))
	w.want("added 10.244.2.0-24")
	// A malformed node sharing b's podCIDR neither adds nor removes it.
	api.put(t, kubeNode("c", []string{"10.244.2.0/24"}, map[string]string{"kube-subnet-manager": "true"}))
	api.put(t, kubeNode("d", []string{"10.244.3.0/24"}, peerAnn("192.168.1.3", mac1)))
	w.want("added 10.244.3.0-24")
}

// The watch fails while a Node is deleted; when it comes back, its
// history has expired (410): the store lists again and delivers the
// deletion.
func TestWatchRestartMissesNoDeletion(t *testing.T) {
	var logs testenv.LogBuffer
	api := newFake(kubeNode("a", []string{"10.244.1.0/24"}, peerAnn("192.168.1.1", mac1)),
		kubeNode("b", []string{"10.244.2.0/24"}, peerAnn("192.168.1.2", mac1)))
	var calls atomic.Int32
	first := watch.NewFake()
	api.cs.PrependWatchReactor("nodes", func(k8stesting.Action) (bool, watch.Interface, error) {
		switch calls.Add(1) {
		case 1:
			return true, first, nil
		case 2:
			return true, nil, apierrors.NewServiceUnavailable("connection refused")
		case 3:
			gone := watch.NewFakeWithChanSize(1, false)
			gone.Error(&metav1.Status{Status: metav1.StatusFailure, Code: http.StatusGone, Reason: metav1.StatusReasonExpired,
				Message: "too old resource version"})
			return true, gone, nil
		}
		return false, nil, nil // the tracker's watch
	})
	s := newTestStore(t, api, mustNetConf(t, netConfV4), logs.Logger())
	snap, err := s.ListLeases(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, s, snap)
	b := kubeNode("b", []string{"10.244.2.0/24"}, peerAnn("192.168.1.2", mac2))
	api.put(t, b)   // nobody watches the tracker yet
	first.Modify(b) // what the first watch delivers
	w.want("added 10.244.2.0-24")
	api.del(t, "a") // while the watch is down
	first.Stop()
	w.want("removed 10.244.1.0-24")
	// The fake's watch replays no deletions (a real API server's does from
	// the list's resourceVersion): delete b once the tracker's watch is on.
	for calls.Load() < 4 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	api.del(t, "b")
	w.want("removed 10.244.2.0-24")
	if calls.Load() < 4 || logs.Count("node watch failed") < 1 || logs.Count("history expired") != 1 {
		t.Errorf("%d watch calls; logs:\n%s", calls.Load(), logs.String())
	}
}

// A zero Snapshot starts with every lease as Added.
func TestWatchFromZero(t *testing.T) {
	api := newFake(kubeNode("a", []string{"10.244.1.0/24"}, peerAnn("192.168.1.1", mac1)),
		kubeNode("b", []string{"10.244.2.0/24"}, peerAnn("192.168.1.2", mac1)))
	s := newTestStore(t, api, mustNetConf(t, netConfV4), nil)
	w := startWatch(t, s, store.Snapshot{})
	w.want("added 10.244.1.0-24, added 10.244.2.0-24")
	api.waitWatching(t)
	api.del(t, "a")
	w.want("removed 10.244.1.0-24")
}

// A Node with no annotations at all (flannel v0.28.9 panics on it): no
// event, no crash, nothing logged.
func TestWatchNodeWithoutAnnotations(t *testing.T) {
	var logs testenv.LogBuffer
	api := newFake()
	s := newTestStore(t, api, mustNetConf(t, netConfV4), logs.Logger())
	w := startWatch(t, s, store.Snapshot{})
	api.waitWatching(t)
	api.put(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bare"}, Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24"}})
	api.put(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bare2"}})
	api.put(t, kubeNode("a", []string{"10.244.2.0/24"}, peerAnn("192.168.1.1", mac1)))
	w.want("added 10.244.2.0-24")
	if strings.Contains(logs.String(), "bare") {
		t.Errorf("logged:\n%s", logs.String())
	}
}

// Events already queued when one arrives go out in one batch.
func TestWatchFoldsBursts(t *testing.T) {
	s := newTestStore(t, newFake(), mustNetConf(t, netConfV4), nil)
	w := &watcher{s: s, cfg: s.o.NetConf, tr: store.NewTracker(nil), byName: map[string]string{}}
	ch := make(chan watch.Event, 8)
	for i := 2; i <= 4; i++ {
		ch <- watch.Event{Type: watch.Added, Object: kubeNode(fmt.Sprint("n", i), []string{fmt.Sprintf("10.244.%d.0/24", i)}, peerAnn("192.168.1.1", mac1))}
	}
	ch <- watch.Event{Type: watch.Deleted, Object: kubeNode("n3", []string{"10.244.3.0/24"}, nil)}
	close(ch)
	first := watch.Event{Type: watch.Added, Object: kubeNode("n1", []string{"10.244.1.0/24"}, peerAnn("192.168.1.1", mac1))}
	batch, closed, err := w.fold(first, ch)
	if err != nil || !closed || evString(batch) != "added 10.244.1.0-24, added 10.244.2.0-24, added 10.244.3.0-24, added 10.244.4.0-24, removed 10.244.3.0-24" {
		t.Errorf("batch %q closed %v err %v", evString(batch), closed, err)
	}
}

// What a watch keeps per Node is its lease, not the Node: listing 5,000
// Nodes of realistic size (images, conditions, labels) retains a small
// fraction of what the objects take.
func TestMemoryPerNode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 5,000 nodes")
	}
	const nodes = 5000
	var objs []runtime.Object
	for i := range nodes {
		n := kubeNode(fmt.Sprintf("node-%04d", i), []string{fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256)},
			peerAnn(fmt.Sprintf("192.168.%d.%d", i/256, i%256), mac1))
		n.Labels = map[string]string{"kubernetes.io/hostname": n.Name, "node.kubernetes.io/instance-type": "m5.large"}
		for j := range 30 {
			n.Status.Images = append(n.Status.Images, corev1.ContainerImage{Names: []string{
				fmt.Sprintf("registry.example.com/team/image-%d@sha256:%064d", j, j)}, SizeBytes: 1 << 26})
		}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "kubelet is posting ready status"}}
		objs = append(objs, n)
	}
	api := newFake(objs...)
	s := newTestStore(t, api, mustNetConf(t, `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`), nil)
	before := heapInUse()
	snap, err := s.ListLeases(tctx(t))
	if err != nil || len(snap.Leases) != nodes {
		t.Fatalf("%d leases, %v", len(snap.Leases), err)
	}
	kept := heapInUse() - before
	goruntime.KeepAlive(snap)
	goruntime.KeepAlive(api)
	goruntime.KeepAlive(objs)
	t.Logf("%d nodes: %d KiB kept (%d B per node)", nodes, kept/1024, kept/nodes)
	if kept/nodes > 1024 {
		t.Errorf("%d B kept per node, want under 1 KiB", kept/nodes)
	}
}

func heapInUse() int64 {
	var m goruntime.MemStats
	goruntime.GC()
	goruntime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
