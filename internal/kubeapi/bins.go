//go:build linux

package kubeapi

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Version is the Kubernetes release hack/kube builds.
const Version = "v1.36.3"

// EnvBinDir names the directory of the binaries `make kube-bins` built; make
// test exports it.
const EnvBinDir = "WEFT_KUBE_BIN_DIR"

// ErrNoBinaries is wrapped by Binaries when a binary is missing.
var ErrNoBinaries = errors.New("kubernetes binaries not found (run `make kube-bins`, or set " + EnvBinDir + ")")

// Bins are the paths of the control-plane binaries.
type Bins struct {
	APIServer         string // kube-apiserver
	ControllerManager string // kube-controller-manager
	Kubectl           string // kubectl
}

// DefaultBinDir returns where hack/kube-bins.sh puts the binaries when
// WEFT_KUBE_BIN_DIR is unset: $HOME/.cache/weft/kube-<Version>.
func DefaultBinDir(home string) string {
	return filepath.Join(home, ".cache", "weft", "kube-"+Version)
}

// Binaries finds kube-apiserver, kube-controller-manager and kubectl in dir;
// an empty dir means $WEFT_KUBE_BIN_DIR, else DefaultBinDir. The error wraps
// ErrNoBinaries when one is missing.
func Binaries(dir string) (Bins, error) {
	return findBinaries(dir, os.Getenv, os.UserHomeDir)
}

func findBinaries(dir string, getenv func(string) string, home func() (string, error)) (Bins, error) {
	if dir == "" {
		dir = getenv(EnvBinDir)
	}
	if dir == "" {
		h, err := home()
		if err != nil {
			return Bins{}, fmt.Errorf("find the kube binaries: %s unset and no home directory: %w", EnvBinDir, err)
		}
		dir = DefaultBinDir(h)
	}
	b := Bins{
		APIServer:         filepath.Join(dir, "kube-apiserver"),
		ControllerManager: filepath.Join(dir, "kube-controller-manager"),
		Kubectl:           filepath.Join(dir, "kubectl"),
	}
	if err := b.check(); err != nil {
		return Bins{}, err
	}
	return b, nil
}

// check reports the first binary that is missing or not executable.
func (b Bins) check() error {
	for _, p := range []string{b.APIServer, b.ControllerManager, b.Kubectl} {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrNoBinaries, err)
		}
		if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%w: %s is not an executable file", ErrNoBinaries, p)
		}
	}
	return nil
}

func (b Bins) isZero() bool { return b == Bins{} }
