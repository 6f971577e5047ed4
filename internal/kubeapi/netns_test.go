//go:build linux

package kubeapi_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/kubeapi"
	"github.com/weft-net/weft/internal/kubeapi/kubeapitest"
	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/labetcd"
	"github.com/weft-net/weft/internal/lab/labtest"
	"github.com/weft-net/weft/internal/testenv"
)

// TestInNetworkNamespace runs etcd and the control plane inside a network
// namespace of the test's own (as `weft lab` does): the processes are in it,
// kubectl reaches the apiserver from inside it, and the root namespace does
// not.
func TestInNetworkNamespace(t *testing.T) {
	requireIntegration(t)
	t.Parallel()
	labtest.RequireRoot(t)
	bins := kubeapitest.Bins(t)
	ns := newNS(t)
	etcd, err := labetcd.Start(labetcd.Options{Dir: t.TempDir(),
		Enter: func(fn func() error) error { return lab.Do(ns, fn) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	cp := kubeapitest.Start(t, kubeapi.Options{Bins: bins, EtcdURL: etcd.Endpoints()[0], NetNS: ns})

	if out, err := cp.Kubectl(t.Context(), "get", "--raw", "/readyz"); err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("readyz from inside %s = %q, %v", ns, out, err)
	}
	nsInode := inode(t, lab.NSPath(ns))
	for _, p := range cp.Processes() {
		got := inode(t, "/proc/"+strconv.Itoa(p.PID)+"/ns/net")
		if got != nsInode {
			t.Errorf("%s (pid %d) is in netns inode %d, want %s's %d", p.Name, p.PID, got, ns, nsInode)
		}
	}
	u, err := url.Parse(cp.URL())
	if err != nil {
		t.Fatal(err)
	}
	// From the root namespace, the address must not reach this apiserver.
	// Another test's server may hold the same port there (ports are picked
	// per namespace): only a TLS handshake that our CA verifies is ours.
	if c, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		defer c.Close()
		pem, err := os.ReadFile(cp.CAFile())
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: u.Hostname()})
		if err := tc.Handshake(); err == nil {
			t.Errorf("%s answers from the root namespace", u.Host)
		} else {
			t.Logf("%s in the root namespace is another process (%v), not this apiserver", u.Host, err)
		}
	}
}

// newNS creates a network namespace with loopback up, deleted when the test
// ends (after the processes in it were stopped).
func newNS(t *testing.T) string {
	t.Helper()
	return testenv.Namespace(t, "wkapi-")
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}
