//go:build linux

package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// uniqueName is an abstract socket name of this test run alone.
func uniqueName() string {
	return fmt.Sprintf("@weft-control-test-%d-%d", os.Getpid(), time.Now().UnixNano())
}

func serve(t *testing.T, name string, info Info) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, slog.New(slog.DiscardHandler), name, info) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	// Serve listens before it accepts: wait until a dial succeeds.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := Ask(context.Background(), name); err == nil || !errors.Is(err, ErrNoDaemon) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the control socket never listened")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAskServe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("weftd answers root only: run as root")
	}
	name := uniqueName()
	if _, err := Ask(context.Background(), name); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("Ask with nobody listening = %v, want ErrNoDaemon", err)
	}
	want := Info{Version: "0.test", PID: 42, Args: []string{"--ip-masq", "--iface", "eth0"},
		Env: map[string]string{"NODE_NAME": "n1"}}
	serve(t, name, want)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := Ask(ctx, name)
	if err != nil || got.PID != 42 || !slices.Equal(got.Args, want.Args) || got.Env["NODE_NAME"] != "n1" {
		t.Fatalf("Ask = %+v, %v; want %+v", got, err, want)
	}
	// A second weftd in the same namespace cannot take the socket.
	err = Serve(ctx, slog.New(slog.DiscardHandler), name, want)
	if err == nil || !strings.Contains(err.Error(), name) {
		t.Errorf("a second Serve on %s = %v, want an error naming the socket", name, err)
	}
}

// A peer that is not root gets no command line: it may hold a password.
func TestNotRootRefused(t *testing.T) {
	if name := os.Getenv("WEFT_CONTROL_TEST_ASK"); name != "" {
		_, err := Ask(context.Background(), name)
		fmt.Printf("ASK: %v\n", err)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a peer as another user")
	}
	name := uniqueName()
	serve(t, name, Info{PID: 7, Args: []string{"--etcd-password", "secret"}})
	// The test binary, where uid 65534 may run it (go test's own
	// directory is root's alone).
	dir := t.TempDir()
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := dir + "/control.test"
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-test.run=^TestNotRootRefused$", "-test.count=1")
	cmd.Env = append(os.Environ(), "WEFT_CONTROL_TEST_ASK="+name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the peer as uid 65534: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ASK: weftd (pid 7)") || !strings.Contains(string(out), "root only") ||
		strings.Contains(string(out), "secret") {
		t.Errorf("a peer that is not root got:\n%s\nwant a refusal and no command line", out)
	}
}

func TestEnvOf(t *testing.T) {
	env := map[string]string{"FLANNELD_IFACE": "eth0", "NODE_NAME": "n1", "HOME": "/root", "POD_NAME": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	got := EnvOf([]string{"FLANNELD_IFACE", "NODE_NAME", "POD_NAME", "FLANNELD_IP_MASQ"}, lookup)
	if len(got) != 2 || got["FLANNELD_IFACE"] != "eth0" || got["NODE_NAME"] != "n1" {
		t.Errorf("EnvOf = %v, want FLANNELD_IFACE and NODE_NAME only (HOME not asked for, POD_NAME empty)", got)
	}
}
