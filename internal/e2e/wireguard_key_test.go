//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// A node's key changed (weftd stopped, a new private key written to its key
// file, weftd started again): its lease carries the new public key, the
// other node replaces the peer (the old key gone, the new one in) within
// 1 s of the restarted node being ready, and pods ping across again.
func TestWireGuardKeyChange(t *testing.T) {
	c := upWG(t, 2, "")
	assertMatrix(t, c)
	old := wgKey(t, c, 2)
	if err := c.KillWeftd(2, false); err != nil {
		t.Fatal(err)
	}
	priv, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(c.NodeDir(2), "wgkey")
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(priv.String()+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := c.StartWeftd(2); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(tctx(t), 2); err != nil {
		t.Fatal(err)
	}
	if got := wgKey(t, c, 2); got != priv.PublicKey().String() {
		t.Fatalf("node 2's lease carries %s, want the new key's %s", got, priv.PublicKey())
	}
	took := waitWG(t, c, 1, time.Second, "peer of the changed key replaced", func(p string) bool {
		return strings.Contains(p, priv.PublicKey().String()) && !strings.Contains(p, old)
	})
	t.Logf("node 1 had the new key as its peer, and not the old one, %v after node 2 was ready", took.Round(time.Millisecond))
	pods := c.Pods()
	assertPing(t, pods[0].NS, pods[1].Addrs[0], true)
	assertPing(t, pods[1].NS, pods[0].Addrs[0], true)
}
