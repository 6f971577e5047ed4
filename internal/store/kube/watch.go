package kube

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"
	"github.com/weft-net/weft/internal/store"
)

// maxBatch bounds the watch events folded into one batch.
const maxBatch = 512

// nodeSet is the leases of a list of Nodes and the Node holding each.
type nodeSet struct {
	leases []lease.Lease
	owner  map[string]string // lease key -> Node name
	rv     string            // the list's resourceVersion
}

// ListLeasesStream hands the leases over in parts of firstPart, then twice
// as many each time up to partSize: the caller's writes start as soon as
// the first few Nodes are decoded instead of waiting for a full part (at
// the start of a 5,000-Node list, 256 Nodes took ~130 ms to arrive), and
// later parts amortise the caller's pass over them.
const (
	firstPart = 32
	partSize  = 256
)

// ListLeases lists the Nodes, PageSize at a time, and returns the leases of
// those that publish one; its Revision is the list's resourceVersion. Nodes
// without kube-subnet-manager: "true" are not leases; managed Nodes whose
// podCIDRs or annotations are malformed are skipped and logged once. It
// retries API errors with backoff until ctx ends.
//
// It is a consistent read (resourceVersion ""): it sees every write made
// before it, as weft status and the store's tests expect. The daemon's
// start-up lists through ListLeasesStream instead.
func (s *Store) ListLeases(ctx context.Context) (store.Snapshot, error) {
	return s.listLeases(ctx, "", nil)
}

// ListLeasesStream is ListLeases, and calls part with the leases in batches
// (firstPart, doubling up to partSize) as they are read, so that a caller
// can program the first peers while the rest are still on the wire
// (store.StreamLister). Like an informer's first list it reads at
// resourceVersion "0": the API server answers from its watch cache, which
// may lag a write by milliseconds, instead of reading etcd, and the watch
// that follows from the list's resourceVersion brings anything newer. (A
// consistent read in small pages measured ~0.1 s faster at 5,000 Nodes on
// kube-apiserver 1.36, whose watch cache serves those too; API servers
// before 1.31 read every such page from etcd, and 5,000 agents listing 30
// MB each from etcd at once is the load an informer's read avoids.)
func (s *Store) ListLeasesStream(ctx context.Context, part func([]lease.Lease)) (store.Snapshot, error) {
	return s.listLeases(ctx, "0", part)
}

func (s *Store) listLeases(ctx context.Context, rv string, part func([]lease.Lease)) (store.Snapshot, error) {
	cfg, err := s.config(ctx)
	if err != nil {
		return store.Snapshot{}, err
	}
	set, err := s.listRetry(ctx, cfg, rv, part)
	if err != nil {
		return store.Snapshot{}, err
	}
	rev, _ := strconv.ParseInt(set.rv, 10, 64)
	return store.Snapshot{Leases: set.leases, Revision: rev}, nil
}

func (s *Store) listRetry(ctx context.Context, cfg *config.NetConf, rv string, part func([]lease.Lease)) (nodeSet, error) {
	bo := newBackoff(s.o.RetryMin, s.o.RetryMax)
	for {
		set, err := s.list(ctx, cfg, rv, part)
		if err == nil {
			return set, nil
		}
		if ctx.Err() != nil {
			return nodeSet{}, ctx.Err()
		}
		wait := bo.next(err)
		s.log.Warn("list nodes failed; retrying", "err", err, "in", wait)
		if err := sleep(ctx, wait); err != nil {
			return nodeSet{}, err
		}
	}
}

// list reads every Node, a page at a time, keeping only their leases (the
// API decodes one Node at a time). rv is the resourceVersion to read at:
// "0" for the API server's cache, "" for a consistent read. part, when set,
// gets the leases in batches as they are read; after a failed attempt the
// next one starts again, so part may see a lease twice.
func (s *Store) list(ctx context.Context, cfg *config.NetConf, rv string, part func([]lease.Lease)) (nodeSet, error) {
	set := nodeSet{owner: map[string]string{}}
	sent, next := 0, firstPart
	flush := func() {
		if part != nil && len(set.leases) > sent {
			part(slices.Clone(set.leases[sent:]))
			sent = len(set.leases)
			next = min(2*next, partSize)
		}
	}
	each := func(n *corev1.Node) {
		sn := s.k.strip(n)
		l, err := s.k.parseNode(cfg, sn)
		if err == nil {
			if other, dup := set.owner[l.Key()]; dup {
				err = dupError(l.Key(), other)
			}
		}
		if s.report(sn.Name, err) {
			set.owner[l.Key()] = sn.Name
			set.leases = append(set.leases, l)
			if len(set.leases)-sent >= next {
				flush()
			}
		}
	}
	opts := metav1.ListOptions{Limit: s.o.PageSize, ResourceVersion: rv}
	for {
		meta, err := s.o.API.ListNodes(ctx, opts, each)
		if err != nil {
			return nodeSet{}, fmt.Errorf("list nodes: %w", err)
		}
		flush()
		set.rv = meta.ResourceVersion
		if meta.Continue == "" {
			return set, nil
		}
		// The continue token holds the list's resourceVersion, and the
		// API server refuses a request that also gives one.
		opts.Continue, opts.ResourceVersion = meta.Continue, ""
	}
}

// report logs a managed Node whose lease is not valid, once per reason
// (store.BadKeys), and reports whether err is nil.
func (s *Store) report(name string, err error) bool {
	switch {
	case err == nil || errors.Is(err, errNotManaged):
		s.bad.Clear(name)
	default:
		s.bad.Skip(name, err)
	}
	return err == nil
}

func dupError(key, other string) error {
	return fmt.Errorf("its lease %s is node %s's too; keeping %s's", key, other, other)
}

// WatchLeases sends the changes of the Nodes' leases after from. It watches
// the Nodes from from.Revision (a resourceVersion) with bookmarks, resumes
// after disconnects from the last resourceVersion it saw (retrying with
// backoff while the API server is unreachable), and when that history has
// expired (410 Gone) lists again and sends the difference from what it had
// sent. A zero Snapshot, or one whose leases do not name their Nodes (not
// ListLeases'), starts with such a list. It returns only when ctx ends.
func (s *Store) WatchLeases(ctx context.Context, from store.Snapshot, out chan<- []lease.Event) error {
	cfg, err := s.config(ctx)
	if err != nil {
		return err
	}
	w := &watcher{s: s, cfg: cfg, out: out, tr: store.NewTracker(from.Leases)}
	if !w.adopt(from) {
		if err := w.relist(ctx); err != nil {
			return err
		}
	}
	return w.run(ctx)
}

// watcher is one WatchLeases call's state: what it has sent and which Node
// holds each lease sent (tr, and byName the other way), so that a Node that
// is deleted, loses its annotations or turns malformed removes its own lease
// and nobody else's.
type watcher struct {
	s   *Store
	cfg *config.NetConf
	out chan<- []lease.Event
	tr  *store.Tracker

	byName map[string]string // Node name -> lease key
	rv     string            // where the watch resumes
}

// adopt starts from a snapshot whose leases name their Nodes.
func (w *watcher) adopt(from store.Snapshot) bool {
	if from.Revision == 0 {
		return false
	}
	w.byName = make(map[string]string, len(from.Leases))
	for _, l := range from.Leases {
		if l.Node == "" {
			return false
		}
		w.byName[l.Node] = l.Key()
	}
	w.rv = strconv.FormatInt(from.Revision, 10)
	return true
}

// relist lists the Nodes again and sends the difference from what was sent.
func (w *watcher) relist(ctx context.Context) error {
	// A consistent read, as client-go's reflector relists: the watch cache
	// of another API server may lag behind what was already sent.
	set, err := w.s.listRetry(ctx, w.cfg, "", nil)
	if err != nil {
		return err
	}
	evs := w.tr.Reset(set.leases)
	w.byName, w.rv = make(map[string]string, len(set.owner)), set.rv
	for k, name := range set.owner {
		w.byName[name] = k
	}
	return store.SendBatch(ctx, w.out, evs)
}

// WatchHealth implements store.HealthReporter.
func (s *Store) WatchHealth() *store.WatchHealth { return &s.health }

func (w *watcher) run(ctx context.Context) error {
	bo := newBackoff(w.s.o.RetryMin, w.s.o.RetryMax)
	for {
		start := time.Now()
		got, err := w.watch(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if got {
			bo.reset()
		}
		if err != nil {
			w.s.health.Interrupted()
		}
		switch {
		case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
			w.s.log.Info("node watch history expired; listing the nodes again", "from", w.rv, "err", err)
			if err := w.relist(ctx); err != nil {
				return err
			}
			continue
		case time.Since(start) >= w.s.o.RetryMin && err == nil:
			continue // the server ended a watch that ran its course
		}
		wait := bo.next(err)
		if err != nil {
			w.s.log.Warn("node watch failed; resuming", "from", w.rv, "err", err, "in", wait)
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// watch runs one watch request from w.rv until it ends; got reports whether
// it delivered anything.
func (w *watcher) watch(ctx context.Context) (got bool, _ error) {
	timeout := int64(300 + rand.IntN(300)) // the server ends it; spread the re-watches
	wi, err := w.s.o.API.WatchNodes(ctx, metav1.ListOptions{ResourceVersion: w.rv, AllowWatchBookmarks: true,
		TimeoutSeconds: &timeout})
	if err != nil {
		return false, fmt.Errorf("watch nodes from %q: %w", w.rv, err)
	}
	w.s.health.Running()
	defer wi.Stop()
	ch := wi.ResultChan()
	for {
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case ev, ok := <-ch:
			if !ok {
				return got, nil
			}
			got = true
			batch, closed, err := w.fold(ev, ch)
			if serr := store.SendBatch(ctx, w.out, batch); serr != nil {
				return got, serr
			}
			if err != nil || closed {
				return got, err
			}
		}
	}
}

// fold handles ev and the events already queued behind it, up to maxBatch,
// into one batch, so that a burst (a relist's worth of changes, many nodes
// joining) costs the daemon one reconcile rather than one per Node.
func (w *watcher) fold(ev watch.Event, ch <-chan watch.Event) (batch []lease.Event, closed bool, err error) {
	for i := 1; ; i++ {
		if batch, err = w.handle(ev, batch); err != nil || i == maxBatch {
			return batch, false, err
		}
		var ok bool
		select {
		case ev, ok = <-ch:
			if !ok {
				return batch, true, nil
			}
		default:
			return batch, false, nil
		}
	}
}

// handle applies one watch event and appends the lease events it causes.
func (w *watcher) handle(ev watch.Event, batch []lease.Event) ([]lease.Event, error) {
	if ev.Type == watch.Error {
		return batch, fmt.Errorf("watch nodes from %q: %w", w.rv, apierrors.FromObject(ev.Object))
	}
	m, ok := ev.Object.(metav1.Object)
	if !ok {
		return batch, fmt.Errorf("watch nodes: unexpected %T", ev.Object)
	}
	if rv := m.GetResourceVersion(); rv != "" {
		w.rv = rv
	}
	n, isNode := ev.Object.(*corev1.Node)
	switch {
	case ev.Type == watch.Bookmark || !isNode:
		return batch, nil
	case ev.Type == watch.Deleted:
		w.s.bad.Clear(n.Name)
		return w.forget(n.Name, batch), nil
	}
	return w.put(w.s.k.strip(n), batch), nil
}

// put records Node n's current state.
func (w *watcher) put(n node, batch []lease.Event) []lease.Event {
	l, err := w.s.k.parseNode(w.cfg, n)
	if err == nil {
		if other, taken := w.tr.Node(l.Key()); taken && other != n.Name {
			err = dupError(l.Key(), other)
		}
	}
	ok := w.s.report(n.Name, err)
	if old, had := w.byName[n.Name]; had && (!ok || old != l.Key()) {
		batch = w.forget(n.Name, batch)
	}
	if !ok {
		return batch
	}
	w.byName[n.Name] = l.Key()
	if ev, send := w.tr.Put(l); send {
		batch = append(batch, ev)
	}
	return batch
}

// forget removes the lease Node name held, if any.
func (w *watcher) forget(name string, batch []lease.Event) []lease.Event {
	key, had := w.byName[name]
	if !had {
		return batch
	}
	delete(w.byName, name)
	if ev, ok := w.tr.Remove(key); ok {
		batch = append(batch, ev)
	}
	return batch
}
