//go:build linux

// Package e2e holds the root-only tests of weft's CNI plugin: they drive the
// built plugin binary (bin/cni/flannel) and the reference bridge, host-local,
// portmap and loopback plugins through libcni, as a container runtime does,
// with a "node" network namespace standing in for the host and one namespace
// per pod. Nothing runs in the caller's own network namespace. Tests skip when
// not root; they use $WEFT_BIN_DIR/cni when set and otherwise build the five
// binaries once per test binary.
package e2e
