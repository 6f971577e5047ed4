// Package testbin gives tests the binaries `make build` makes (weft, weft-lab, weftd
// and a CNI_PATH in cni/): the directory WEFT_BIN_DIR names (make test sets
// it to ./bin), or a fresh build. Only tests import it.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// EnvVar names the directory of prebuilt binaries.
const EnvVar = "WEFT_BIN_DIR"

const plugins = "github.com/containernetworking/plugins/plugins/"

// Build puts weft, weft-lab, weftd, cni/flannel, cni/weft and the reference plugins
// into dir, as `make build` lays out ./bin.
func Build(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "cni"), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for _, args := range [][]string{
		{"-o", dir + "/", "github.com/weft-net/weft/cmd/weft", "github.com/weft-net/weft/cmd/weftd",
			"github.com/weft-net/weft/cmd/weft-lab"},
		{"-o", filepath.Join(dir, "cni", "flannel"), "github.com/weft-net/weft/cmd/weft-cni"},
		{"-o", filepath.Join(dir, "cni", "weft"), "github.com/weft-net/weft/cmd/weft-cni"},
		{"-o", filepath.Join(dir, "cni") + "/", plugins + "main/bridge", plugins + "ipam/host-local", plugins + "meta/portmap",
			plugins + "main/loopback"},
	} {
		if out, err := exec.Command("go", append([]string{"build"}, args...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("go build %v: %w\n%s", args, err, out)
		}
	}
	return nil
}

// Dir returns WEFT_BIN_DIR when set, else builds into tmp and returns it.
func Dir(tmp string) (string, error) {
	if d := os.Getenv(EnvVar); d != "" {
		return d, nil
	}
	return tmp, Build(tmp)
}
