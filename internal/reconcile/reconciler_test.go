package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/kernel"
	"github.com/weft-net/weft/internal/kernel/kerneltest"
)

// fakeKernel is an in-memory kernel that records writes to routes,
// neighbours and FDB entries; its links are kerneltest's.
type fakeKernel struct {
	*kerneltest.Fake
	st     State
	writes int
	fail   map[string]bool // object String() -> fail the next write
}

var _ Kernel = (*fakeKernel)(nil)

func newFake() *fakeKernel {
	return &fakeKernel{Fake: kerneltest.New(), st: NewState(), fail: map[string]bool{}}
}

func (f *fakeKernel) check(o fmt.Stringer) error {
	f.writes++
	if f.fail[o.String()] {
		delete(f.fail, o.String())
		return errors.New("injected failure")
	}
	return nil
}

func (f *fakeKernel) ListRoutes(networks []netip.Prefix) ([]kernel.Route, error) {
	var out []kernel.Route
	for _, r := range f.st.Routes {
		for _, n := range networks {
			if n.Contains(r.Dst.Addr()) {
				out = append(out, r)
				break
			}
		}
	}
	return out, nil
}

func (f *fakeKernel) ListNeighs(link int) ([]kernel.Neigh, error) {
	var out []kernel.Neigh
	for _, n := range f.st.Neighs {
		if n.LinkIndex == link {
			out = append(out, n)
		}
	}
	return out, nil
}

func (f *fakeKernel) ListFDB(link int) ([]kernel.FDB, error) {
	var out []kernel.FDB
	for _, e := range f.st.FDB {
		if e.LinkIndex == link {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *fakeKernel) ReplaceRoute(r kernel.Route) error {
	if err := f.check(r); err != nil {
		return err
	}
	f.st.AddRoute(r)
	return nil
}

func (f *fakeKernel) DeleteRoute(r kernel.Route) error {
	if err := f.check(r); err != nil {
		return err
	}
	delete(f.st.Routes, r.Dst)
	return nil
}

func (f *fakeKernel) SetNeigh(n kernel.Neigh) error {
	if err := f.check(n); err != nil {
		return err
	}
	f.st.AddNeigh(n)
	return nil
}

func (f *fakeKernel) DeleteNeigh(n kernel.Neigh) error {
	if err := f.check(n); err != nil {
		return err
	}
	delete(f.st.Neighs, neighKey{n.LinkIndex, n.IP})
	return nil
}

func (f *fakeKernel) SetFDB(e kernel.FDB) error {
	if err := f.check(e); err != nil {
		return err
	}
	f.st.AddFDB(e)
	return nil
}

func (f *fakeKernel) DeleteFDB(e kernel.FDB) error {
	if err := f.check(e); err != nil {
		return err
	}
	delete(f.st.FDB, fdbKey{e.LinkIndex, e.MAC})
	return nil
}

// dump renders a State as sorted text, for whole-state comparisons.
func dump(s State) string {
	var lines []string
	for _, r := range s.Routes {
		lines = append(lines, "route "+r.String())
	}
	for _, n := range s.Neighs {
		lines = append(lines, "neigh "+n.String())
	}
	for _, e := range s.FDB {
		lines = append(lines, "fdb "+e.String())
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

const vx = 7 // link index of the vxlan device

// peer returns the vxlan objects of a peer with subnet 10.244.<n>.0/24.
func peer(n int, link int) Objects {
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", n))
	mac := kernel.MAC{0x02, 0, 0, 0, 0, byte(n)}
	return Objects{
		FDB:    []kernel.FDB{{MAC: mac, Dst: netip.AddrFrom4([4]byte{192, 168, 100, byte(n)}), LinkIndex: link}},
		Neighs: []kernel.Neigh{{IP: subnet.Addr(), MAC: mac, LinkIndex: link}},
		Routes: []kernel.Route{{Dst: subnet, Gw: subnet.Addr(), LinkIndex: link, OnLink: true}},
	}
}

func union(objs ...Objects) State {
	out := NewState()
	for _, s := range objs {
		for _, r := range s.Routes {
			out.AddRoute(r)
		}
		for _, n := range s.Neighs {
			out.AddNeigh(n)
		}
		for _, e := range s.FDB {
			out.AddFDB(e)
		}
	}
	return out
}

func scope() Scope {
	return Scope{Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		Own: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, Links: []int{vx}}
}

func newRec(k Kernel) *Reconciler {
	r := New(k, slog.New(slog.DiscardHandler))
	r.SetScope(scope())
	return r
}

func TestSequenceOfPeers(t *testing.T) {
	ctx := context.Background()
	k := newFake()
	r := newRec(k)
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		do   func()
		want State
	}{
		{"add 2 and 3", func() { r.SetPeer("2", peer(2, vx)); r.SetPeer("3", peer(3, vx)) }, union(peer(2, vx), peer(3, vx))},
		{"same again is harmless", func() { r.SetPeer("2", peer(2, vx)) }, union(peer(2, vx), peer(3, vx))},
		{"remove 2", func() { r.RemovePeer("2") }, union(peer(3, vx))},
		{"remove unknown", func() { r.RemovePeer("9") }, union(peer(3, vx))},
		{"3 moves to another device", func() { r.SetPeer("3", peer(3, 8)) }, union(peer(3, 8))},
	}
	for _, s := range steps {
		s.do()
		if _, err := r.Apply(ctx); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got, want := dump(k.st), dump(s.want); got != want {
			t.Fatalf("%s: kernel =\n%s\nwant\n%s", s.name, got, want)
		}
	}
}

func TestApplyOnlyTouchesChanges(t *testing.T) {
	ctx := context.Background()
	k := newFake()
	r := newRec(k)
	for i := 2; i < 102; i++ {
		r.SetPeer(fmt.Sprint(i), peer(i, vx))
	}
	if _, err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	k.writes = 0
	r.SetPeer("200", peer(200, vx))
	if _, err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if k.writes != 3 {
		t.Errorf("one new peer cost %d writes, want 3", k.writes)
	}
	k.writes = 0
	if _, err := r.Apply(ctx); err != nil || k.writes != 0 {
		t.Errorf("an idle Apply wrote %d objects (%v)", k.writes, err)
	}
}

// Sync adopts the kernel: stale objects of peers that are gone (a node deleted
// while weftd was down) go, objects outside the scope stay, wrong ones are
// rewritten.
func TestSyncRemovesStaleKeepsForeign(t *testing.T) {
	ctx := context.Background()
	k := newFake()
	k.st = union(peer(9, vx), peer(2, vx))
	k.st.AddRoute(kernel.Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("192.168.1.1"), LinkIndex: 3}) // wrong
	foreign := []kernel.Route{
		{Dst: netip.MustParsePrefix("10.1.0.0/16"), Gw: netip.MustParseAddr("192.168.1.1"), LinkIndex: 3}, // outside the network
		{Dst: netip.MustParsePrefix("10.244.1.0/24"), LinkIndex: 5},                                       // own subnet (cni0)
		{Dst: netip.MustParsePrefix("10.244.0.0/16"), LinkIndex: 5},                                       // the network itself
	}
	for _, f := range foreign {
		k.st.AddRoute(f)
	}
	k.st.AddNeigh(kernel.Neigh{IP: netip.MustParseAddr("192.168.1.1"), MAC: kernel.MAC{1}, LinkIndex: 3}) // not our device
	r := newRec(k)
	r.SetPeer("2", peer(2, vx))
	st, err := r.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := union(peer(2, vx))
	for _, f := range foreign {
		want.AddRoute(f)
	}
	want.AddNeigh(kernel.Neigh{IP: netip.MustParseAddr("192.168.1.1"), MAC: kernel.MAC{1}, LinkIndex: 3})
	if got := dump(k.st); got != dump(want) {
		t.Fatalf("kernel =\n%s\nwant\n%s", got, dump(want))
	}
	if st.Deleted != 3 || st.Added != 1 {
		t.Errorf("stats = %+v, want 3 deleted (stale peer), 1 rewritten", st)
	}
}

func TestForgetRestores(t *testing.T) {
	ctx := context.Background()
	k := newFake()
	r := newRec(k)
	r.SetPeer("2", peer(2, vx))
	if _, err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	// Someone deletes all three objects; netlink notices reach Forget*.
	want := dump(k.st)
	p := peer(2, vx)
	for _, rt := range p.Routes {
		delete(k.st.Routes, rt.Dst)
		if !r.ForgetRoute(rt.Dst) {
			t.Error("ForgetRoute of an applied route = false")
		}
	}
	for _, n := range p.Neighs {
		delete(k.st.Neighs, neighKey{n.LinkIndex, n.IP})
		r.ForgetNeigh(n.LinkIndex, n.IP)
	}
	for _, e := range p.FDB {
		delete(k.st.FDB, fdbKey{e.LinkIndex, e.MAC})
		r.ForgetFDB(e.LinkIndex, e.MAC)
	}
	if r.ForgetRoute(netip.MustParsePrefix("10.9.0.0/24")) {
		t.Error("ForgetRoute of a foreign route = true")
	}
	if _, err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if got := dump(k.st); got != want {
		t.Fatalf("after Apply kernel =\n%s\nwant\n%s", got, want)
	}
	// The device goes: ForgetLink, then the peer is replayed on the new index.
	k.st = NewState()
	r.ForgetLink(vx)
	r.SetPeer("2", peer(2, 8))
	if _, err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if got := dump(k.st); got != dump(union(peer(2, 8))) {
		t.Fatalf("after ForgetLink kernel =\n%s", got)
	}
}

func TestFailedWritesAreRetried(t *testing.T) {
	ctx := context.Background()
	k := newFake()
	r := newRec(k)
	p := peer(2, vx)
	for _, rt := range p.Routes {
		k.fail[rt.String()] = true
	}
	r.SetPeer("2", p)
	st, err := r.Apply(ctx)
	if err == nil || st.Failed != 1 || !strings.Contains(err.Error(), "replace route 10.244.2.0/24") {
		t.Fatalf("Apply = %+v, %v; want one failed route", st, err)
	}
	if _, err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if got := dump(k.st); got != dump(union(p)) {
		t.Fatalf("after retry kernel =\n%s", got)
	}
	// A failed delete is retried too.
	for _, rt := range p.Routes {
		k.fail[rt.String()] = true
	}
	r.RemovePeer("2")
	if _, err := r.Apply(ctx); err == nil {
		t.Fatal("Apply with a failing delete succeeded")
	}
	if _, err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if len(k.st.Routes)+len(k.st.Neighs)+len(k.st.FDB) != 0 {
		t.Fatalf("after retry kernel =\n%s", dump(k.st))
	}
}

// Two peers claiming the same subnet (a bad writer): removing one keeps the
// other's objects.
func TestDuplicateObjects(t *testing.T) {
	ctx := context.Background()
	k := newFake()
	r := newRec(k)
	r.SetPeer("a", peer(2, vx))
	r.SetPeer("b", peer(2, vx))
	r.RemovePeer("a")
	if _, err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if dump(k.st) != dump(union(peer(2, vx))) {
		t.Fatalf("kernel =\n%s", dump(k.st))
	}
}

func TestParseMAC(t *testing.T) {
	m, err := kernel.ParseMAC("22:56:a3:21:8b:8d")
	if err != nil || m.String() != "22:56:a3:21:8b:8d" {
		t.Errorf("ParseMAC = %v, %v", m, err)
	}
	for _, bad := range []string{"", "22:56:a3", "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "zz:56:a3:21:8b:8d"} {
		if _, err := kernel.ParseMAC(bad); err == nil {
			t.Errorf("ParseMAC(%q) succeeded", bad)
		}
	}
}

// Adopt, Apply per batch of peers and then Prune is a Sync spread over a
// start-up: the batches write only what is missing or wrong, and nothing a
// previous run left is deleted before Prune, when every peer is known.
func TestAdoptApplyPrune(t *testing.T) {
	ctx := context.Background()
	k := newFake()
	wrong := peer(3, vx)
	wrong.Routes[0].Gw = netip.MustParseAddr("10.244.33.0")
	k.st = union(peer(2, vx), wrong, peer(9, vx)) // 9: a node gone while weftd was down
	r := newRec(k)
	if err := r.Adopt(); err != nil {
		t.Fatal(err)
	}
	if k.writes != 0 {
		t.Fatalf("Adopt wrote %d objects", k.writes)
	}
	for _, batch := range [][]int{{2, 3}, {4}} {
		for _, i := range batch {
			r.SetPeer(fmt.Sprint(i), peer(i, vx))
		}
		st, err := r.Apply(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Deleted != 0 {
			t.Fatalf("batch %v deleted %d objects before every peer was known", batch, st.Deleted)
		}
	}
	if k.writes != 4 { // 3's route, 4's three objects
		t.Errorf("the batches cost %d writes, want 4", k.writes)
	}
	if got, want := dump(k.st), dump(union(peer(2, vx), peer(3, vx), peer(4, vx), peer(9, vx))); got != want {
		t.Fatalf("kernel before Prune =\n%s\nwant\n%s", got, want)
	}
	st, err := r.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted != 3 || st.Added != 0 {
		t.Errorf("Prune: %+v, want 3 deleted (peer 9), 0 added", st)
	}
	if got, want := dump(k.st), dump(union(peer(2, vx), peer(3, vx), peer(4, vx))); got != want {
		t.Fatalf("kernel after Prune =\n%s\nwant\n%s", got, want)
	}
}

// A route to the node's own subnet is the bridge's and never weft's, except
// a blackhole route: that one Sync adopts, keeps while desired and removes
// when it is not.
func TestOwnSubnetBlackhole(t *testing.T) {
	ctx := context.Background()
	k := newFake()
	own := netip.MustParsePrefix("10.244.1.0/24")
	k.st.AddRoute(kernel.Route{Dst: own, LinkIndex: 5}) // cni0's
	r := newRec(k)
	bh := kernel.Route{Dst: own, Blackhole: true}
	r.SetPeer("\x00node", Objects{Routes: []kernel.Route{bh}})
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := k.st.Routes[own]; got != bh { // the fake keeps one route per destination
		t.Fatalf("own subnet route %v, want %v", got, bh)
	}
	r.RemovePeer("\x00node")
	st, err := r.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.st.Routes[own]; ok || st.Deleted != 1 {
		t.Errorf("after the blackhole is no longer wanted: %v left, %d deleted", k.st.Routes[own], st.Deleted)
	}
	k.st.AddRoute(kernel.Route{Dst: own, LinkIndex: 5})
	if st, err := r.Sync(ctx); err != nil || st.Deleted != 0 {
		t.Errorf("Sync touched the bridge's route: %+v, %v", st, err)
	}
}

// Diff names what Sync would write and writes nothing: a peer's missing
// objects, a route that differs, and a gone node's objects to delete.
func TestDiff(t *testing.T) {
	k := newFake()
	wrong := peer(3, vx)
	wrong.Routes[0].Gw = netip.MustParseAddr("10.244.33.0")
	k.st = union(peer(2, vx), wrong, peer(9, vx))
	r := newRec(k)
	for _, i := range []int{2, 3, 4} {
		r.SetPeer(fmt.Sprint(i), peer(i, vx))
	}
	ws, err := r.Diff()
	if err != nil {
		t.Fatal(err)
	}
	if k.writes != 0 {
		t.Fatalf("Diff wrote %d objects", k.writes)
	}
	var got []string
	for _, w := range ws {
		got = append(got, w.Op.String())
	}
	slices.Sort(got)
	want := []string{"delete fdb", "delete neighbour", "delete route", "replace route", "replace route", "set fdb", "set neighbour"}
	if !slices.Equal(got, want) {
		t.Errorf("Diff = %v\nwant %v (4's three objects, 3's route, 9's three objects)", ws, want)
	}
	if ws, _ := newRec(k).Diff(); len(ws) != 9 {
		t.Errorf("with no peer wanted, Diff = %v, want the 9 objects in scope deleted", ws)
	}
}

// Prune marks only the keys whose applied object differs from the desired
// one: after a start-up's batches have written every peer it writes
// nothing, and it still rewrites an object whose applied copy differs
// even when no pass marked it (its safety net).
func TestPruneMarksOnlyDifferences(t *testing.T) {
	ctx := context.Background()
	k := newFake()
	r := newRec(k)
	if err := r.Adopt(); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < 6; i++ {
		r.SetPeer(fmt.Sprint(i), peer(i, vx))
	}
	if _, err := r.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	writes := k.writes
	if st, err := r.Prune(ctx); err != nil || st.Added+st.Deleted != 0 || k.writes != writes {
		t.Fatalf("Prune after every peer was written: %+v, %d writes, %v", st, k.writes-writes, err)
	}
	rt := peer(3, vx).Routes[0]
	r.mu.Lock()
	stale := rt
	stale.Gw = netip.MustParseAddr("10.244.33.0")
	r.applied.Routes[rt.Dst.Masked()] = stale // as if a write had gone unrecorded
	r.mu.Unlock()
	st, err := r.Prune(ctx)
	if err != nil || st.Ops[kernel.OpReplaceRoute] != 1 || st.Added != 1 || st.Deleted != 0 {
		t.Fatalf("Prune with one route out of place: %+v, %v", st, err)
	}
	if got, want := dump(k.st), dump(union(peer(2, vx), peer(3, vx), peer(4, vx), peer(5, vx))); got != want {
		t.Fatalf("kernel after Prune =\n%s\nwant\n%s", got, want)
	}
}
