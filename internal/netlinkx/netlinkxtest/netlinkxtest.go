//go:build linux

// Package netlinkxtest opens netlinkx handles in the network namespaces a
// test made (testenv.Namespace, testenv.NodeNamespace), closed when the
// test ends.
package netlinkxtest

import (
	"testing"

	"github.com/vishvananda/netns"

	"github.com/weft-net/weft/internal/netlinkx"
)

// In returns a handle in the namespace called name, and the namespace's
// handle (for code that enters it or subscribes in it); both are closed
// when the test ends.
func In(t testing.TB, name string) (*netlinkx.Handle, netns.NsHandle) {
	t.Helper()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	h, err := netlinkx.NewAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	t.Cleanup(h.Close)
	return h, ns
}
