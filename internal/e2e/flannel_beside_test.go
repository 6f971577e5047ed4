//go:build linux

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/testenv"
)

// FlanneldEnv names the variable that gives the path of flanneld v0.28.9's
// binary (hack/flannel-image.sh builds it into flannel's image; make
// test-kernels takes it out for these tests).
const FlanneldEnv = "WEFT_FLANNELD"

// flanneld returns the flanneld binary the tests run beside weft, or skips.
func flanneld(t *testing.T) string {
	t.Helper()
	p := os.Getenv(FlanneldEnv)
	if p == "" {
		t.Skipf("%s is unset: it names flanneld v0.28.9's binary (make test-kernels sets it)", FlanneldEnv)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v", FlanneldEnv, err)
	}
	return p
}

// startFlanneld runs flanneld as node's daemon, on the lab's etcd and the
// node's own files (subnet.env where the CNI plugin reads it, the
// WireGuard key in the node's directory), and waits until it has written
// subnet.env. It is killed when the test ends; on failure its log is
// printed.
func startFlanneld(t *testing.T, c *cluster.Cluster, node int, bin string) {
	t.Helper()
	dir := c.NodeDir(node)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "flanneld.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--etcd-endpoints", c.Endpoint(), "--etcd-prefix", cluster.Prefix, "--iface", lab.NodeIface,
		"--subnet-file", c.SubnetFile(node))
	cmd.Env = append(os.Environ(), "WIREGUARD_KEY_FILE="+filepath.Join(dir, "wgkey"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := lab.StartIn(c.NodeNS(node), cmd); err != nil {
		logf.Close()
		t.Fatalf("start flanneld on node %d: %v", node, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("== flanneld on node %d (%s)\n%s", node, logPath, b)
		}
	})
	deadline := time.Now().Add(testenv.Scale(t, 30*time.Second))
	for {
		if _, err := c.SubnetEnv(node); err == nil {
			return
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("flanneld on node %d exited before writing subnet.env:\n%s", node, b)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("flanneld on node %d wrote no subnet.env within %v; see %s", node, testenv.Scale(t, 30*time.Second), logPath)
		}
	}
}

// besideFlannel runs a weft node beside a flanneld v0.28.9 node of the same
// backend, in both orders (the one that starts first makes the device and
// leases the first subnet, the other joins), and pings every pod from
// every other; check looks at the weft node (1) afterwards.
func besideFlannel(t *testing.T, netConf string, check func(t *testing.T, c *cluster.Cluster)) {
	bin := flanneld(t)
	for _, order := range []string{"weft-first", "flannel-first"} {
		t.Run(order, func(t *testing.T) {
			// Node 1 runs weftd, node 2 flanneld; neither is started by Up.
			c := up(t, cluster.Options{Lab: lab.Options{Nodes: 2}, NetConf: netConf, Idle: []int{1, 2}})
			ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(t, 2*time.Minute))
			defer cancel()
			startWeft := func() {
				if err := c.StartWeftd(1); err != nil {
					t.Fatal(err)
				}
				if err := c.WaitReady(ctx, 1); err != nil {
					t.Fatal(err)
				}
			}
			if order == "weft-first" {
				startWeft()
				startFlanneld(t, c, 2, bin)
			} else {
				startFlanneld(t, c, 2, bin)
				startWeft()
			}
			for n := 1; n <= 2; n++ {
				if _, err := c.AddPod(ctx, n, 1); err != nil {
					t.Fatal(err)
				}
			}
			assertMatrix(t, c)
			check(t, c)
		})
	}
}

// flannel's ipip backend (its kernel device, which needs the ipip module)
// beside weft's kernel path: each node routes the other's subnet via its
// public address on flannel.ipip.
func TestIPIPBesideFlannel(t *testing.T) {
	needRoot(t)
	if err := kernelCanMake(t, "ipip", "local", "192.0.2.1"); err != nil {
		t.Skipf("the kernel has no ipip module (%v): flanneld's ipip backend needs it", err)
	}
	conf := `{"Network":"10.244.0.0/16","Backend":{"Type":"ipip"}}`
	besideFlannel(t, conf, func(t *testing.T, c *cluster.Cluster) {
		n2, _ := c.Lab().Node(2)
		if r := routeTo(t, c, 1, 2); !strings.Contains(r, "via "+n2.Addrs()[0].String()+" dev flannel.ipip") {
			t.Errorf("weft's route to flanneld's subnet: %q", r)
		}
		if link := run(t, c.NodeNS(1), "ip", "-d", "link", "show", "flannel.ipip"); !strings.Contains(link, "ipip ") {
			t.Errorf("weft's flannel.ipip is not a kernel ipip device: %s", link)
		}
	})
}

// flannel's wireguard backend (kernel WireGuard) beside weft's: each has
// the other as a peer, with the public key of its lease.
func TestWireGuardBesideFlannel(t *testing.T) {
	needRoot(t)
	if err := kernelCanMake(t, "wireguard"); err != nil {
		t.Skipf("the kernel has no WireGuard (%v): flanneld's wireguard backend needs it", err)
	}
	conf := `{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}`
	besideFlannel(t, conf, func(t *testing.T, c *cluster.Cluster) {
		if link := run(t, c.NodeNS(1), "ip", "-d", "link", "show", "flannel-wg"); !strings.Contains(link, "wireguard") {
			t.Errorf("weft's flannel-wg is not a kernel wireguard device: %s", link)
		}
		k2 := wgKey(t, c, 2)
		waitWG(t, c, 1, time.Second, "flanneld's key among weft's peers", func(p string) bool { return strings.Contains(p, k2) })
		k1 := wgKey(t, c, 1)
		waitWG(t, c, 2, time.Second, "weft's key among flanneld's peers", func(p string) bool { return strings.Contains(p, k1) })
	})
}
