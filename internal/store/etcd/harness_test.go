package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/weft-net/weft/internal/lab/labetcd"
	"github.com/weft-net/weft/internal/store"
	"github.com/weft-net/weft/internal/store/storetest"

	"github.com/weft-net/weft/internal/testenv"
)

var prefixSeq atomic.Int64

// harness runs the conformance suite on one etcd under a fresh prefix.
type harness struct {
	cli       *clientv3.Client
	endpoints []string
	prefix    string
}

func newClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func newHarness(t testing.TB, endpoints []string) *harness {
	return &harness{cli: newClient(t, endpoints), endpoints: endpoints,
		prefix: fmt.Sprintf("/weft-test-%d-%d/network", os.Getpid(), prefixSeq.Add(1))}
}

func tctx(t testing.TB) context.Context { return testenv.Context(t, 30*time.Second) }

func (h *harness) newStore(t testing.TB, log *slog.Logger) *Store {
	s, err := New(Options{Endpoints: h.endpoints, Prefix: h.prefix, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (h *harness) Store(t *testing.T, log *slog.Logger) store.Store { return h.newStore(t, log) }

func (h *harness) SetConfig(t *testing.T, netconf string) {
	if _, err := h.cli.Put(tctx(t), h.prefix+"/config", netconf); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) key(name string) string { return h.prefix + "/subnets/" + name }

func (h *harness) Put(t *testing.T, name, value string, reservation bool) {
	var opts []clientv3.OpOption
	if !reservation {
		g, err := h.cli.Grant(tctx(t), int64(DefaultTTL/time.Second))
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, clientv3.WithLease(g.ID))
	}
	if _, err := h.cli.Put(tctx(t), h.key(name), value, opts...); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) Delete(t *testing.T, name string) {
	if _, err := h.cli.Delete(tctx(t), h.key(name)); err != nil {
		t.Fatal(err)
	}
}

// Expire revokes the key's etcd lease: etcd deletes the key as on expiry.
func (h *harness) Expire(t *testing.T, name string) {
	resp, err := h.cli.Get(tctx(t), h.key(name))
	if err != nil || len(resp.Kvs) == 0 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("expire %s: no leased key (%v)", name, err)
	}
	if _, err := h.cli.Revoke(tctx(t), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) Get(t *testing.T, name string) (string, bool, bool) {
	resp, err := h.cli.Get(tctx(t), h.key(name))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", false, false
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].Lease == 0, true
}

func (h *harness) Compact(t *testing.T) {
	resp, err := h.cli.Get(tctx(t), "/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.cli.Compact(tctx(t), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
}

// startEmbedded starts an embedded cluster for the test.
func startEmbedded(t testing.TB, members int) *labetcd.Cluster {
	t.Helper()
	c, err := labetcd.Start(labetcd.Options{Dir: t.TempDir(), Members: members})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestConformanceEmbedded(t *testing.T) {
	c := startEmbedded(t, 1)
	storetest.Run(t, func(t *testing.T) storetest.Harness { return newHarness(t, c.Endpoints()) })
}

// etcdBinary is the Debian etcd-server binary (3.4), or $WEFT_ETCD_BINARY.
func etcdBinary() string {
	if p := os.Getenv("WEFT_ETCD_BINARY"); p != "" {
		return p
	}
	return "/usr/bin/etcd"
}

func TestConformanceEtcdServerBinary(t *testing.T) {
	bin := etcdBinary()
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s not found (apt-get install etcd-server, or set WEFT_ETCD_BINARY): %v", bin, err)
	}
	ep := startBinary(t, bin)
	storetest.Run(t, func(t *testing.T) storetest.Harness { return newHarness(t, []string{ep}) })
}

// startBinary runs an etcd binary on free loopback ports until the test ends.
func startBinary(t *testing.T, bin string) string {
	p := newEtcdProc(t, bin)
	p.start(t)
	return p.client
}

// etcdProc is an etcd binary the test starts, stops and restarts on the same
// ports and data directory.
type etcdProc struct {
	bin, dir, client, peer string
	cmd                    *exec.Cmd
	log                    *os.File
}

func newEtcdProc(t *testing.T, bin string) *etcdProc {
	ports := freePorts(t, 2)
	p := &etcdProc{bin: bin, dir: t.TempDir(),
		client: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), peer: fmt.Sprintf("http://127.0.0.1:%d", ports[1])}
	t.Cleanup(p.stop)
	return p
}

// start runs etcd and waits until it serves.
func (p *etcdProc) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(p.bin, "--name=weft", "--data-dir="+filepath.Join(p.dir, "data"),
		"--listen-client-urls="+p.client, "--advertise-client-urls="+p.client,
		"--listen-peer-urls="+p.peer, "--initial-advertise-peer-urls="+p.peer,
		"--initial-cluster=weft="+p.peer, "--log-level=error", "--logger=zap")
	log, err := os.OpenFile(filepath.Join(p.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("start %s: %v", p.bin, err)
	}
	p.cmd, p.log = cmd, log
	cli := newClient(t, []string{p.client})
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "/")
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(p.dir, "etcd.log"))
			t.Fatalf("%s not serving: %v\n%s", p.bin, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop kills the etcd this test started, if it runs.
func (p *etcdProc) stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.log.Close()
	p.cmd = nil
}

// wipe deletes the (stopped) etcd's data directory.
func (p *etcdProc) wipe(t *testing.T) {
	if err := os.RemoveAll(filepath.Join(p.dir, "data")); err != nil {
		t.Fatal(err)
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }
