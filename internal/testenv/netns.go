package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Namespace creates a network namespace named prefix and a random suffix
// (unique per run), with lo up, and deletes it when the test ends (also on
// failure), reporting a failed deletion. The caller has called Privileged
// or EndToEnd.
func Namespace(t testing.TB, prefix string) string {
	t.Helper()
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := prefix + hex.EncodeToString(b[:])
	IP(t, "netns", "add", name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	IP(t, "-n", name, "link", "set", "lo", "up")
	return name
}

// NodeNamespace is Namespace standing for a node: an interface eth0 (one
// end of a veth pair whose other end, wire0, stays in the namespace, up: a
// NIC without the dummy module) holding addr, and, when gw is valid, a
// default route through gw.
func NodeNamespace(t testing.TB, prefix string, addr netip.Prefix, gw netip.Addr) string {
	t.Helper()
	name := Namespace(t, prefix)
	IP(t, "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "wire0")
	IP(t, "-n", name, "link", "set", "wire0", "up")
	IP(t, "-n", name, "addr", "add", addr.String(), "dev", "eth0")
	IP(t, "-n", name, "link", "set", "eth0", "up")
	if gw.IsValid() {
		IP(t, "-n", name, "route", "add", "default", "via", gw.String())
	}
	return name
}

// IP runs ip(8) with args and fails the test with its output when it
// fails.
func IP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
