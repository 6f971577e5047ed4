//go:build linux

package e2e

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/testenv"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/lab/labtest"
	"github.com/weft-net/weft/internal/testbin"
)

// binDir is where weftd and cni/ are: WEFT_BIN_DIR (make test), else built
// once by TestMain.
type binaries struct{ dir string }

func (b binaries) get(t testing.TB) string {
	t.Helper()
	if b.dir == "" {
		if testing.Short() {
			t.Skip("-short: end-to-end tests need the binaries of make build (WEFT_BIN_DIR)")
		}
		t.Fatal("binaries were not built")
	}
	return b.dir
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	if os.Geteuid() != 0 || os.Getenv("WEFT_BIN_DIR") != "" || testing.Short() {
		bins.dir = os.Getenv("WEFT_BIN_DIR")
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "weft-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := testbin.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bins.dir = dir
	return m.Run()
}

var bins binaries

func needRoot(t testing.TB) {
	t.Helper()
	testenv.EndToEnd(t, "runs the real binaries in a lab of network namespaces")
}

// up starts a cluster for the test and removes it when the test ends; on
// failure it prints every node's weftd log.
func up(t *testing.T, o cluster.Options) *cluster.Cluster {
	t.Helper()
	needRoot(t)
	name, err := lab.RandomName("e")
	if err != nil {
		t.Fatal(err)
	}
	o.Lab.Name = name
	o.BinDir = bins.get(t)
	o.Dir = t.TempDir()
	o.Logger = slog.New(slog.DiscardHandler)
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = testenv.Scale(t, 30*time.Second)
	}
	logKernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(t, 2*time.Minute))
	defer cancel()
	c, err := cluster.Up(ctx, o)
	if err != nil {
		dumpLogs(t, o.Dir)
		_ = lab.Down(context.Background(), o.Logger, name, "")
		t.Fatalf("cluster up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, o.Dir)
		}
		if err := c.Down(context.Background()); err != nil {
			t.Errorf("cluster down: %v", err)
		}
	})
	return c
}

// logKernel names the kernel the test runs on (the kernel tier runs the
// same tests on other kernel lines: make test-kernels).
func logKernel(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatalf("read the kernel's release: %v", err)
	}
	t.Logf("kernel %s", strings.TrimSpace(string(b)))
}

func dumpLogs(t *testing.T, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "n*", "weftd.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		t.Logf("== %s\n%s", l, b)
	}
}

func run(t testing.TB, ns string, argv ...string) string {
	t.Helper()
	out, err := lab.Exec(context.Background(), ns, argv...)
	if err != nil {
		t.Fatalf("%s in %s: %v\n%s", strings.Join(argv, " "), ns, err, out)
	}
	return out
}

// listenIn listens on TCP at addr, a free port, inside namespace ns; the
// listener is closed when the test ends.
func listenIn(t testing.TB, ns string, addr netip.Addr) net.Listener {
	t.Helper()
	return labtest.ListenIn(t, ns, addr)
}
