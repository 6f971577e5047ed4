//go:build linux

package wireguard

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weft-net/weft/internal/atomicfile"
)

// DefaultKeyFile is where flannel keeps the node's private key
// (WIREGUARD_KEY_FILE overrides it).
const DefaultKeyFile = "/run/flannel/wgkey"

// secret is a private or pre-shared key. It prints and logs as a placeholder,
// so that no format verb, log attribute or wrapped error can reveal it;
// only the device configuration reads its bytes.
type secret struct{ k wgtypes.Key }

func (secret) String() string               { return "(secret)" }
func (secret) GoString() string             { return "(secret)" }
func (secret) LogValue() slog.Value         { return slog.StringValue("(secret)") }
func (s secret) key() wgtypes.Key           { return s.k }
func (s secret) public() wgtypes.Key        { return s.k.PublicKey() }
func (s secret) isZero() bool               { return s.k == wgtypes.Key{} }
func (s secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("(secret)")) }

// parsePSK reads net-conf.json's PSK (already checked as base64 of 32
// bytes by the option reader); "" is no key.
func parsePSK(s string) (secret, error) {
	if s == "" {
		return secret{}, nil
	}
	k, err := wgtypes.ParseKey(s)
	if err != nil {
		return secret{}, errors.New("Backend.PSK is not a base64-encoded 32-byte key")
	}
	return secret{k}, nil
}

// loadKey returns the node's private key from path, creating the file
// (mode 0400, in a directory made 0700 when missing) with a new key when it
// does not exist. The file is read once and never rewritten: a file that
// holds no valid key, or that group or others may read, or that another user
// owns, is an error naming the file and saying how to fix it, and the file
// is left as it is. created reports whether a new key was written.
func loadKey(path string) (k secret, created bool, err error) {
	// Stat, not Lstat: a key mounted from a Kubernetes Secret is a symlink,
	// and the file it points to is what must be private.
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := createKey(path)
		return k, err == nil, err
	}
	if err != nil {
		return secret{}, false, fmt.Errorf("wireguard key file %s: %w", path, err)
	}
	if err := checkKeyFile(path, st); err != nil {
		return secret{}, false, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return secret{}, false, fmt.Errorf("read wireguard key file %s: %w", path, err)
	}
	key, err := wgtypes.ParseKey(strings.TrimSpace(string(data)))
	clear(data)
	if err != nil {
		// The parser's message may quote the content: leave it out.
		return secret{}, false, fmt.Errorf("wireguard key file %s holds no valid private key (want one base64-encoded 32-byte key, as `wg genkey` prints); it was left unchanged: fix or remove it", path)
	}
	return secret{key}, false, nil
}

// checkKeyFile refuses a key file that is not a regular file, that another
// user owns, or that group or others may access.
func checkKeyFile(path string, st fs.FileInfo) error {
	if !st.Mode().IsRegular() {
		return fmt.Errorf("wireguard key file %s is not a regular file (%s)", path, st.Mode().Type())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("wireguard key file %s has mode %04o: group or others may read the private key; run `chmod 0400 %s` (and consider the key exposed)", path, perm, path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if uid := os.Geteuid(); int(sys.Uid) != uid {
			return fmt.Errorf("wireguard key file %s is owned by uid %d, not by weftd's uid %d; run `chown %d %s`", path, sys.Uid, uid, uid, path)
		}
	}
	return nil
}

func createKey(path string) (secret, error) {
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return secret{}, fmt.Errorf("generate a wireguard private key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return secret{}, fmt.Errorf("create the directory of wireguard key file %s: %w", path, err)
	}
	if err := atomicfile.Write(path, []byte(key.String()), 0o400); err != nil {
		return secret{}, fmt.Errorf("write wireguard key file %s: %w", path, err)
	}
	return secret{key}, nil
}
