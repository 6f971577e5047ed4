//go:build linux

package daemon

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// buildWeftd returns bin/weftd from WEFT_BIN_DIR, or builds it once.
func buildWeftd(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("WEFT_BIN_DIR"); dir != "" {
		return filepath.Join(dir, "weftd")
	}
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "weftd-bin")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "weftd")
		out, err := exec.Command("go", "build", "-o", built.path, "github.com/weft-net/weft/cmd/weftd").CombinedOutput()
		if err != nil {
			built.err = err
			t.Logf("%s", out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

var built struct {
	once sync.Once
	path string
	err  error
}
