//go:build linux

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, &out); err != nil || !strings.HasPrefix(out.String(), "weft 0.") {
		t.Errorf("weft version = %q, %v", out.String(), err)
	}
	if err := run(context.Background(), nil, &out, &out); err == nil {
		t.Error("weft with no command succeeded")
	}
	if err := run(context.Background(), []string{"frob"}, &out, &out); err == nil || !strings.Contains(err.Error(), `unknown command "frob"`) {
		t.Errorf("weft frob = %v", err)
	}
}

// TestProductLinksNoLab keeps the product binaries standing alone: the lab,
// the bench, the test harnesses, the embedded etcd server and Helm are
// built only into weft-lab and tests.
func TestProductLinksNoLab(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../weftd", "../weft-cni", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{"github.com/weft-net/weft/internal/lab", "github.com/weft-net/weft/internal/kubeapi",
		"github.com/weft-net/weft/internal/testenv", "github.com/weft-net/weft/internal/testbin",
		"github.com/weft-net/weft/internal/e2e", "github.com/weft-net/weft/internal/netlinkx/netlinkxtest",
		"github.com/weft-net/weft/internal/kernel/kerneltest", "go.etcd.io/etcd/server", "helm.sh/helm",
		"sigs.k8s.io/kube-network-policies"} // the reference the NetworkPolicy tests compare with
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 50 {
		t.Fatalf("go list -deps listed %d packages, want the binaries' whole dependency set", len(pkgs))
	}
	for _, p := range pkgs {
		for _, f := range forbidden {
			if p == f || strings.HasPrefix(p, f+"/") {
				t.Errorf("a product binary links %s", p)
			}
		}
	}
}

func TestFindLab(t *testing.T) {
	dir := t.TempDir()
	self := func() (string, error) { return filepath.Join(dir, "weft"), nil }
	nowhere := func(string) (string, error) { return "", exec.ErrNotFound }
	if _, err := findLab(self, nowhere); err == nil || !strings.Contains(err.Error(), "weft-lab binary") {
		t.Errorf("findLab with no weft-lab = %v, want an error naming the binary", err)
	}
	inPath := func(string) (string, error) { return "/usr/local/bin/weft-lab", nil }
	if got, err := findLab(self, inPath); err != nil || got != "/usr/local/bin/weft-lab" {
		t.Errorf("findLab from PATH = %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "weft-lab"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := findLab(self, inPath); err != nil || got != filepath.Join(dir, "weft-lab") {
		t.Errorf("findLab beside weft = %q, %v, want the one beside weft first", got, err)
	}
}
