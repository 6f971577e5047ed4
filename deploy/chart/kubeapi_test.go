//go:build linux

package chart_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/kubeapi"
	"github.com/weft-net/weft/internal/kubeapi/kubeapitest"
)

// TestServerSideDryRun applies the chart, rendered with its defaults and with
// each of flannel's documented values sets, to a real kube-apiserver
// (internal/kubeapi; `make kube-bins`) with `kubectl apply --server-side
// --dry-run=server --validate=strict`: every object passes the API server's
// schema validation (an unknown field is an error), defaulting and
// admission, as `helm install` would send it. The release's namespace is
// made first, for real, as before `helm install` (the chart does not own it).
func TestServerSideDryRun(t *testing.T) {
	cp := kubeapitest.Start(t, kubeapi.Options{})
	if _, err := cp.Kubectl(t.Context(), "create", "namespace", namespace); err != nil {
		t.Fatal(err)
	}
	sets := []valuesCase{{name: "defaults"}}
	sets = append(sets, valuesCases(t)...)
	dir := t.TempDir()
	for i, tc := range sets {
		t.Run(tc.name, func(t *testing.T) {
			_, r := render(t, tc.values)
			// kubectl reads a comma in -f as a list of files: name the file by number.
			path := filepath.Join(dir, fmt.Sprintf("set-%02d.yaml", i))
			if err := os.WriteFile(path, []byte(r.Manifest), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := cp.Kubectl(t.Context(), "apply", "--server-side", "--dry-run=server", "--validate=strict",
				"--field-manager=helm", "-f", path)
			if err != nil {
				t.Fatalf("server-side dry run: %v", err)
			}
			var applied []string
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				obj, rest, _ := strings.Cut(l, " ")
				if rest != "serverside-applied (server dry run)" {
					t.Errorf("unexpected line %q", l)
				}
				applied = append(applied, obj)
			}
			slices.Sort(applied)
			want := []string{"clusterrole.rbac.authorization.k8s.io/flannel",
				"clusterrolebinding.rbac.authorization.k8s.io/flannel", "configmap/kube-flannel-cfg",
				"daemonset.apps/kube-flannel-ds", "serviceaccount/flannel"}
			if !slices.Equal(applied, want) {
				t.Errorf("applied %q, want %q", applied, want)
			}
			if i == 0 {
				t.Logf("%s", out)
			}
		})
	}
	// Nothing was created: the dry runs left no DaemonSet behind.
	if out, err := cp.Kubectl(t.Context(), "get", "daemonsets", "-A", "-o", "name"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("daemonsets after the dry runs: %q, %v", out, err)
	}
}
