//go:build linux

// Package e2e holds weft's end-to-end tests: real weftd binaries in lab node
// namespaces, an embedded etcd on the lab switch, pods attached by the real
// CNI plugin, traffic across nodes. The tests need root and the binaries of
// `make build` (WEFT_BIN_DIR), or build them.
package e2e
