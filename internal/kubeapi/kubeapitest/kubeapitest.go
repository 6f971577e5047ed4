//go:build linux

// Package kubeapitest gives a test a Kubernetes control plane of its own
// (internal/kubeapi) on an in-process etcd, stopped when the test ends. Only
// tests import it.
package kubeapitest

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/weft-net/weft/internal/kubeapi"
	"github.com/weft-net/weft/internal/lab/labetcd"
)

// Bins returns the control-plane binaries, kubeapi.Binaries(""). When they
// are missing it skips the test under -short and fails it otherwise, with
// the message to run `make kube-bins`.
func Bins(t testing.TB) kubeapi.Bins {
	t.Helper()
	b, err := kubeapi.Binaries("")
	if err == nil {
		return b
	}
	if testing.Short() && errors.Is(err, kubeapi.ErrNoBinaries) {
		t.Skip("skipping: " + err.Error())
	}
	t.Fatal(err)
	return kubeapi.Bins{}
}

// Start starts a control plane for the test and stops it with t.Cleanup,
// which also prints the tail of each process's log when the test failed.
// Empty opts fields are filled: Bins from Bins(t), Dir from t.TempDir(),
// EtcdURL from an embedded etcd started here, Logger writing to the test's
// output.
func Start(t testing.TB, opts kubeapi.Options) *kubeapi.ControlPlane {
	t.Helper()
	if opts.Bins == (kubeapi.Bins{}) {
		opts.Bins = Bins(t)
	}
	if opts.Dir == "" {
		opts.Dir = filepath.Join(t.TempDir(), "kube")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if opts.EtcdURL == "" {
		opts.EtcdURL = Etcd(t) // its cleanup runs after the control plane's
	}
	cp, err := kubeapi.Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("start kubernetes control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(cp.Dir(), "*.log"))
			for _, l := range logs {
				t.Logf("%s: %s", l, tail(l))
			}
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("stop kubernetes control plane: %v", err)
		}
	})
	return cp
}

// Etcd starts an embedded single-member etcd on loopback for the test,
// closed with t.Cleanup, and returns its client URL.
func Etcd(t testing.TB) string {
	t.Helper()
	etcd, err := labetcd.Start(labetcd.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	t.Cleanup(etcd.Close)
	return etcd.Endpoints()[0]
}

// tail returns the end of a log file.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	const max = 4 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "\n" + string(b)
}
