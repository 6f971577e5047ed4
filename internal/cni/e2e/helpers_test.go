//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/weft-net/weft/internal/testenv"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/labtest"
	"github.com/weft-net/weft/internal/subnetfile"
)

const pluginsPkg = "github.com/containernetworking/plugins/plugins/"

// builtBins builds the binaries once per test binary when WEFT_BIN_DIR is
// not set; TestMain removes the directory.
type builtBins struct {
	once sync.Once
	dir  string
	err  error
}

var bins builtBins // test-binary scoped: the one build shared by all tests

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		_ = os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// cniBinDir returns the directory holding flannel, bridge, host-local,
// portmap and loopback.
func cniBinDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("WEFT_BIN_DIR"); d != "" {
		return filepath.Join(d, "cni")
	}
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "weft-cni-e2e-bin-")
		if bins.err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", bins.dir+"/",
			"github.com/weft-net/weft/cmd/weft-cni", pluginsPkg+"main/bridge", pluginsPkg+"ipam/host-local",
			pluginsPkg+"meta/portmap", pluginsPkg+"main/loopback")
		if out, err := cmd.CombinedOutput(); err != nil {
			bins.err = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		bins.err = os.Rename(filepath.Join(bins.dir, "weft-cni"), filepath.Join(bins.dir, "flannel"))
	})
	if bins.err != nil {
		t.Fatalf("build CNI binaries: %v", bins.err)
	}
	return bins.dir
}

func requireRoot(t testing.TB) {
	t.Helper()
	testenv.Privileged(t, "creates network namespaces, bridges and veths")
}

// openNS opens a lab namespace by name and closes the handle at cleanup
// (the lab removes the namespace itself).
func openNS(t testing.TB, name string) ns.NetNS {
	t.Helper()
	n, err := ns.GetNS(lab.NSPath(name))
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// pod adds the next pod namespace of the node's lab, empty, as a container
// runtime hands it to a CNI plugin.
func (n *node) pod(t testing.TB) ns.NetNS {
	t.Helper()
	n.mu.Lock()
	n.pods++
	i := n.pods
	n.mu.Unlock()
	p, err := n.lab.AddPodNS(t.Context(), 1, i)
	if err != nil {
		t.Fatalf("add pod namespace: %v", err)
	}
	return openNS(t, p.NS)
}

// closeNS removes a namespace; calling it twice is harmless.
func closeNS(n ns.NetNS) {
	_ = n.Close()
	_ = testutils.UnmountNS(n)
}

// node is a network namespace standing in for a node's host side, with its
// own subnet.env, data directories and libcni cache, all in a temp dir.
type node struct {
	lab        *lab.Lab // one node, from the lab builder the e2e tests share
	mu         sync.Mutex
	pods       int // pod namespaces added so far
	ns         ns.NetNS
	subnetFile string
	dataDir    string
	ipamDir    string
	cacheDir   string
	bin        string
	cni        *libcni.CNIConfig
	list       *libcni.NetworkConfigList
}

func env4() subnetfile.Env {
	return subnetfile.Env{
		Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		Subnet:   netip.MustParsePrefix("10.244.1.1/24"),
		MTU:      1450,
		IPMasq:   true,
	}
}

func env46() subnetfile.Env {
	e := env4()
	e.IPv6Networks = []netip.Prefix{netip.MustParsePrefix("fd00:10:244::/56")}
	e.IPv6Subnet = netip.MustParsePrefix("fd00:10:244:1::1/64")
	return e
}

// newNode creates a node; with env non-nil, subnet.env is written. delegate
// is the flannel entry's "delegate" section.
func newNode(t testing.TB, env *subnetfile.Env, delegate string) *node {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	l := labtest.New(t, lab.Options{Nodes: 1})
	host, err := l.Node(1)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{
		lab:        l,
		ns:         openNS(t, host.NS),
		subnetFile: filepath.Join(dir, "run", "subnet.env"),
		dataDir:    filepath.Join(dir, "flannel"),
		ipamDir:    filepath.Join(dir, "ipam"),
		cacheDir:   filepath.Join(dir, "cache"),
		bin:        cniBinDir(t),
	}
	if env != nil {
		n.writeEnv(t, *env)
	}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{n.bin}, n.cacheDir, nil)
	n.list = n.confList(t, delegate)
	return n
}

func (n *node) writeEnv(t testing.TB, env subnetfile.Env) {
	t.Helper()
	if err := subnetfile.Write(n.subnetFile, env); err != nil {
		t.Fatal(err)
	}
}

// confList is the usual flannel conflist, pointed at the node's files.
func (n *node) confList(t testing.TB, delegate string) *libcni.NetworkConfigList {
	t.Helper()
	if delegate == "" {
		delegate = `{"hairpinMode":true,"isDefaultGateway":true}`
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	src := `{"cniVersion":"1.1.0","name":"cbr0","plugins":[
		{"type":"flannel","subnetFile":` + q(n.subnetFile) + `,"dataDir":` + q(n.dataDir) + `,
		 "ipam":{"dataDir":` + q(n.ipamDir) + `},"delegate":` + delegate + `},
		{"type":"portmap","capabilities":{"portMappings":true}}]}`
	l, err := libcni.ConfListFromBytes([]byte(src))
	if err != nil {
		t.Fatalf("conflist: %v", err)
	}
	return l
}

// do runs f with the calling thread in the node's namespace, so that the
// plugins libcni starts work on the node, never on the test's own host.
func (n *node) do(f func() error) error {
	return n.ns.Do(func(ns.NetNS) error { return f() })
}

func rt(id string, pod ns.NetNS) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: "eth0"}
}

func (n *node) add(ctx context.Context, id string, pod ns.NetNS) (*types100.Result, error) {
	var res types.Result
	err := n.do(func() (err error) {
		res, err = n.cni.AddNetworkList(ctx, n.list, rt(id, pod))
		return err
	})
	if err != nil {
		return nil, err
	}
	return types100.NewResultFromResult(res)
}

func (n *node) del(ctx context.Context, id string, pod ns.NetNS) error {
	return n.do(func() error { return n.cni.DelNetworkList(ctx, n.list, rt(id, pod)) })
}

func (n *node) check(ctx context.Context, id string, pod ns.NetNS) error {
	return n.do(func() error { return n.cni.CheckNetworkList(ctx, n.list, rt(id, pod)) })
}

func (n *node) status(ctx context.Context) error {
	return n.do(func() error { return n.cni.GetStatusNetworkList(ctx, n.list) })
}

// ipamFiles lists host-local's allocations (one file per address).
func (n *node) ipamFiles(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(n.ipamDir, "cbr0"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

// savedFiles lists the plugin's saved delegate configurations.
func (n *node) savedFiles(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir(n.dataDir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range ents {
		if e.Type().IsRegular() && e.Name()[0] != '.' {
			ids = append(ids, e.Name())
		}
	}
	return ids
}
