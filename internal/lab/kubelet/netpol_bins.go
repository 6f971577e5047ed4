//go:build linux

package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// E2E is what runs Kubernetes' own NetworkPolicy end-to-end suite
// ("[sig-network] Netpol", k8s.io/kubernetes v1.36.3) against a lab: the
// binaries of hack/e2e-bins.sh and the image of hack/agnhost-image.sh.
type E2E struct {
	// BinDir holds e2e.test, agnhost and kube-proxy (hack/e2e-bins.sh).
	BinDir string
	// ImageDir holds agnhost.tar, the suite's agnhost image under the
	// reference weft.local/e2e-test-images/agnhost:<version>, and
	// repo-list.yaml, the KUBE_TEST_REPO_LIST file that points the suite at
	// it (hack/agnhost-image.sh).
	ImageDir string
}

// Test returns the path of e2e.test.
func (e E2E) Test() string { return filepath.Join(e.BinDir, "e2e.test") }

// KubeProxy returns the path of kube-proxy, for Bins.KubeProxy.
func (e E2E) KubeProxy() string { return filepath.Join(e.BinDir, "kube-proxy") }

// AgnhostImage returns the path of agnhost's OCI archive, for
// Options.ExtraImages.
func (e E2E) AgnhostImage() string { return filepath.Join(e.ImageDir, "agnhost.tar") }

// RepoList returns the path of the suite's KUBE_TEST_REPO_LIST file.
func (e E2E) RepoList() string { return filepath.Join(e.ImageDir, "repo-list.yaml") }

// FindE2E runs hack/e2e-bins.sh and hack/agnhost-image.sh (each builds once
// and then only prints its directory; `make e2e-bins` builds both ahead) and
// returns what they name.
func FindE2E(ctx context.Context, repo string) (E2E, error) {
	var e E2E
	var err error
	if e.BinDir, err = runHack(ctx, repo, "e2e-bins.sh"); err != nil {
		return e, err
	}
	if e.ImageDir, err = runHack(ctx, repo, "agnhost-image.sh"); err != nil {
		return e, err
	}
	for _, p := range []string{e.Test(), e.KubeProxy(), e.AgnhostImage(), e.RepoList()} {
		if _, err := os.Stat(p); err != nil {
			return e, fmt.Errorf("e2e suite: %w", err)
		}
	}
	return e, nil
}
