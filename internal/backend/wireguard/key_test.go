//go:build linux

package wireguard

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// A missing key file is created 0400 in a 0700 directory, and the same key
// is read back on the next start.
func TestKeyFileCreatedThenReused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "flannel", "wgkey")
	k, created, err := loadKey(path)
	if err != nil || !created {
		t.Fatalf("loadKey: created %v, %v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o400 {
		t.Errorf("key file mode %04o, want 0400", st.Mode().Perm())
	}
	if dst, _ := os.Stat(filepath.Dir(path)); dst.Mode().Perm() != 0o700 {
		t.Errorf("key directory mode %04o, want 0700", dst.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if _, err := wgtypes.ParseKey(string(data)); err != nil {
		t.Errorf("the file does not hold a key as wg genkey prints it: %v", err)
	}
	k2, created, err := loadKey(path)
	if err != nil || created || k2.key() != k.key() {
		t.Errorf("second load: created %v err %v same %v", created, err, k2.key() == k.key())
	}
}

// A file that holds no valid key is an error naming the file, without its
// content, and the file is left as it was.
func TestKeyFileCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wgkey")
	content := []byte("c2VjcmV0LWJ1dC1ub3QtYS1rZXk=\n")
	if err := os.WriteFile(path, content, 0o400); err != nil {
		t.Fatal(err)
	}
	_, _, err := loadKey(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "no valid private key") {
		t.Fatalf("err = %v, want one naming %s", err, path)
	}
	if strings.Contains(err.Error(), "c2VjcmV0") {
		t.Errorf("the error quotes the file: %v", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, content) {
		t.Errorf("the file was changed to %q", got)
	}
}

// A key others may read, or another user's, is refused with how to fix it.
func TestKeyFilePermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wgkey")
	k, _ := wgtypes.GeneratePrivateKey()
	if err := os.WriteFile(path, []byte(k.String()), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadKey(path); err == nil || !strings.Contains(err.Error(), "chmod 0400 "+path) {
		t.Errorf("mode 0640: err = %v, want the chmod advice", err)
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadKey(path); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(path, 4242, -1); err != nil {
			t.Fatal(err)
		}
		if _, _, err := loadKey(path); err == nil || !strings.Contains(err.Error(), "owned by uid 4242") {
			t.Errorf("another owner: err = %v", err)
		}
	}
}

// Keys never print: not with any verb, not in a log line, not in Options.
func TestSecretsDoNotPrint(t *testing.T) {
	k, _ := wgtypes.GeneratePrivateKey()
	s := secret{k}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "key", s, "opts", Options{PSK: k.String()})
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "key", s, "opts", Options{PSK: k.String()})
	out := fmt.Sprintf("%v %s %+v %#v %q %x", s, s, s, s, s, s) + buf.String() + Options{PSK: k.String()}.String()
	for _, leak := range []string{k.String(), fmt.Sprintf("%x", k[:4])} {
		if strings.Contains(out, leak) {
			t.Fatalf("a secret printed: %s", out)
		}
	}
}

// A key mounted from a Kubernetes Secret is a symlink to the file: the file
// it points to is read and checked.
func TestKeyFileSymlink(t *testing.T) {
	dir := t.TempDir()
	k, _ := wgtypes.GeneratePrivateKey()
	target := filepath.Join(dir, "..data", "wgkey")
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target, []byte(k.String()+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "wgkey")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	got, created, err := loadKey(link)
	if err != nil || created || got.key() != k {
		t.Fatalf("symlinked key: created %v err %v", created, err)
	}
	if err := os.Chmod(target, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadKey(link); err == nil || !strings.Contains(err.Error(), "mode 0644") {
		t.Errorf("a symlink to a 0644 key: %v", err)
	}
}
