// Package netpol builds weft's e2e.test (hack/e2e-bins.sh: `go test -c`):
// Kubernetes' end-to-end test binary with only the specs of
// k8s.io/kubernetes/test/e2e/network/netpol ("[sig-network] Netpol") linked
// in, instead of every e2e area that test/e2e links. Its test file does what
// test/e2e's e2e_test.go and e2e.go do for those specs: the same flags
// (framework.RegisterCommonFlags and RegisterClusterFlags, klog's and
// --version), the same TestContext set-up, the suite set-up the framework
// expects before any spec, and ginkgo's run under the same suite name, so
// that a caller cannot tell it from the full binary while it runs netpol.
package netpol
