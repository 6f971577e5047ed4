//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/config"
)

func noEnv(string) (string, bool) { return "", false }

func TestRunHelpAndVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, noEnv, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "--subnet-lease-renew-margin") {
		t.Errorf("--help output lacks flags:\n%s", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"--version"}, noEnv, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "weftd 0.") {
		t.Errorf("--version = %q, %v", out.String(), err)
	}
}

func TestRunKubeModeValidatesNetConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "net-conf.json")
	env := func(k string) (string, bool) {
		if k == "NODE_NAME" {
			return "node-a", true
		}
		return "", false
	}
	var out, errOut bytes.Buffer
	args := []string{"--kube-subnet-mgr", "--net-config-path", path}
	if err := os.WriteFile(path, []byte(`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","VNI":"one"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), args, env, &out, &errOut); !errors.Is(err, config.ErrNetConf) || !strings.Contains(err.Error(), "Backend.VNI") {
		t.Errorf("run with a bad VNI = %v, want an error naming Backend.VNI", err)
	}
	if err := os.WriteFile(path, []byte(`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","MacPrefix":"0E-2A"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	// A good config gets as far as connecting: neither --kubeconfig-file
	// nor --kube-api-url, and not in a pod.
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if err := run(context.Background(), args, env, &out, &errOut); err == nil || !strings.Contains(err.Error(), "in-cluster config") {
		t.Errorf("run with a good config = %v", err)
	}
	if !strings.Contains(errOut.String(), "MacPrefix is a Windows-only option") {
		t.Errorf("warning not logged:\n%s", errOut.String())
	}
}

// The built binary: exit status and one-line errors, as an operator sees them.
func TestBinaryExitStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "weftd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		env  []string
		code int
		want string
	}{
		{[]string{"--subnet-lease-renew-margin", "2000"}, nil, 2, "weftd: --subnet-lease-renew-margin: 2000 is outside 1..1439\n"},
		{nil, []string{"FLANNELD_IPTABLES_RESYNC=x"}, 2, "weftd: FLANNELD_IPTABLES_RESYNC (--iptables-resync): \"x\" is not a whole number\n"},
		{[]string{"--version"}, nil, 0, ""},
		{[]string{"--etcd-username=u", "--etcd-password=topsecret", "--kube-subnet-mgr", "--net-config-path=/nonexistent"},
			[]string{"NODE_NAME=n"}, 1, "read --net-config-path"},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, tc.env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("weftd %q: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
		if tc.want != "" && tc.code == 2 && strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("weftd %q: stderr is not one line: %q", tc.args, stderr.String())
		}
		if strings.Contains(stderr.String(), "topsecret") {
			t.Errorf("weftd %q printed the password", tc.args)
		}
	}
}
