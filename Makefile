# weft build and test entry points. `make build` fills ./bin; `make test` runs
# every test (root-only tests skip with a message when not root).
GO        ?= go
BIN       := $(CURDIR)/bin
PLUGINS   := github.com/containernetworking/plugins/plugins
CNI_TOOLS := $(PLUGINS)/main/bridge $(PLUGINS)/ipam/host-local $(PLUGINS)/meta/portmap $(PLUGINS)/main/loopback
FUZZTIME  ?= 30s
TESTFLAGS ?=

.PHONY: all build deps test test-plain test-race test-privileged test-e2e test-kubelet bench-kubelet node-bins lint unit fuzz bench gobench lab lab-down clean

all: build

build:
	@mkdir -p $(BIN)/cni
	$(GO) build -o $(BIN)/ ./cmd/weftd ./cmd/weft ./cmd/weft-lab
	$(GO) build -o $(BIN)/cni/flannel ./cmd/weft-cni
	cp -f $(BIN)/cni/flannel $(BIN)/cni/weft
	$(GO) build -o $(BIN)/cni/ $(CNI_TOOLS)

# gofmt, go vet, and golangci-lint with the checks of .golangci.yml
# (errcheck, staticcheck, unused, ineffassign, forbidigo), pinned as a Go
# tool in hack/lint/go.mod (make test runs it).
lint:
	@out="$$(gofmt -l cmd internal deploy docs hack)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool -modfile=hack/lint/go.mod golangci-lint run ./...

# go vet for macOS: a reader on a laptop vets the tree too, so Linux-only
# code is in _linux.go files or behind //go:build linux. Not part of make
# test: cold, it compiles the whole dependency tree a second time (about
# 7 minutes on 2 cores) for a daemon that runs on Linux only.
.PHONY: lint-darwin
lint-darwin:
	GOOS=darwin $(GO) vet ./...

# Apt packages the tests drive (iproute2, iptables, nftables, etcd-server...),
# installed only when missing.
deps:
	@bash hack/deps.sh

# Every test: install what is missing, build, lint, then all packages against
# the binaries in ./bin and the Kubernetes binaries in KUBE_BIN_DIR.
test: deps build lint kube-bins
	WEFT_BIN_DIR=$(BIN) WEFT_KUBE_BIN_DIR=$(KUBE_BIN_DIR) $(GO) test -count=1 -timeout 40m $(TESTFLAGS) ./...

# The Kubernetes control plane the kube lease store is tested against:
# kube-apiserver, kube-controller-manager and kubectl built from hack/kube
# (k8s.io/kubernetes v1.36.3) into KUBE_BIN_DIR, once (a cold build takes
# about 16 minutes on 2 cores; docs/testing.md).
KUBE_BIN_DIR ?= $(if $(WEFT_KUBE_BIN_DIR),$(WEFT_KUBE_BIN_DIR),$(HOME)/.cache/weft/kube-v1.36.3)
.PHONY: kube-bins
kube-bins:
	@WEFT_KUBE_BIN_DIR=$(KUBE_BIN_DIR) GO=$(GO) bash hack/kube-bins.sh

# Only the tests that need neither root nor binaries.
unit:
	$(GO) test -count=1 -short ./...

# The test tiers (internal/testenv): plain (-short: no root, no process
# outside the test), privileged (root: namespaces, the kernel, netfilter,
# the container image), e2e (root: the real binaries in a lab). `make test`
# runs all three. test-privileged and test-e2e each run their tier plus
# every test that is neither: the plain tests and those that start
# processes without root (the etcd-server binary, a real kube-apiserver).
test-plain: unit

# The plain tier under the race detector. Not part of make test: cold, it
# compiles every dependency a second time, with race instrumentation
# (docs/testing.md).
test-race:
	$(GO) test -count=1 -short -race ./...

test-privileged: deps build kube-bins
	WEFT_TEST_TIERS=privileged WEFT_BIN_DIR=$(BIN) WEFT_KUBE_BIN_DIR=$(KUBE_BIN_DIR) $(GO) test -count=1 -timeout 40m $(TESTFLAGS) ./...

test-e2e: deps build kube-bins
	WEFT_TEST_TIERS=e2e WEFT_BIN_DIR=$(BIN) WEFT_KUBE_BIN_DIR=$(KUBE_BIN_DIR) $(GO) test -count=1 -timeout 40m $(TESTFLAGS) ./...

# The kernel tier (root): the end-to-end kernel cases inside User-Mode Linux
# on two 6.1 kernels, Debian's UML kernel (ipip's kernel path, vxlan,
# host-gw) and one hack/uml-kernel.sh builds once with WireGuard (cached in
# ~/.cache/weft); each beside flanneld v0.28.9 too (hack/uml/test-kernels.sh,
# hack/uml/README.md). CI runs it after `make test`.
.PHONY: test-kernels
test-kernels: deps build
	WEFT_BIN_DIR=$(BIN) GO=$(GO) bash hack/uml/test-kernels.sh

# The real-node tier (root): a lab whose nodes run containerd and kubelet
# v1.36.3, weft deployed by its manifest and image (internal/lab/kubelet).
# It builds, once each and cached in ~/.cache/weft, kubelet and
# kube-scheduler (hack/node-bins.sh), containerd (hack/containerd-bins.sh)
# the pause and busybox images (hack/node-images.sh), flannel v0.28.9's image
# and manifest for the upgrade test (hack/flannel-image.sh), and weft's image
# (make image). CI runs it after `make test`.
node-bins:
	@GO=$(GO) bash hack/node-bins.sh >/dev/null
	@GO=$(GO) bash hack/containerd-bins.sh >/dev/null
	@GO=$(GO) bash hack/node-images.sh >/dev/null
	@GO=$(GO) bash hack/flannel-image.sh >/dev/null

test-kubelet: deps build image kube-bins node-bins e2e-bins
	WEFT_TEST_TIERS=e2e WEFT_TEST_KUBELET=1 WEFT_BIN_DIR=$(BIN) WEFT_KUBE_BIN_DIR=$(KUBE_BIN_DIR) $(GO) test -count=1 -timeout 40m -v $(TESTFLAGS) ./internal/lab/kubelet/
	WEFT_TEST_TIERS=e2e WEFT_TEST_KUBELET=1 WEFT_BIN_DIR=$(BIN) WEFT_KUBE_BIN_DIR=$(KUBE_BIN_DIR) $(GO) test -count=1 -timeout 20m -v -run 'TestLabUpKubelet' $(TESTFLAGS) ./internal/lab/cli/

# Kubernetes' own NetworkPolicy end-to-end suite (root): e2e.test of
# k8s.io/kubernetes v1.36.3 focused on "[sig-network] Netpol", against a
# 2-node kubelet lab with weft deployed by deploy/kube-weft-netpol.yml and
# kube-proxy on every node (TestKubeletNetpolConformance). make test-kubelet
# runs its representative subset; this target runs the whole suite. e2e-bins
# builds, once each and cached in ~/.cache/weft, e2e.test, agnhost and
# kube-proxy (hack/e2e-bins.sh, from the module hack/e2e) and agnhost's
# image (hack/agnhost-image.sh).
.PHONY: e2e-bins test-netpol-conformance
e2e-bins:
	@GO=$(GO) bash hack/e2e-bins.sh >/dev/null
	@GO=$(GO) bash hack/agnhost-image.sh >/dev/null

test-netpol-conformance: deps build image kube-bins node-bins e2e-bins
	WEFT_TEST_TIERS=e2e WEFT_TEST_KUBELET=1 WEFT_NETPOL_CONFORMANCE=all WEFT_BIN_DIR=$(BIN) WEFT_KUBE_BIN_DIR=$(KUBE_BIN_DIR) $(GO) test -count=1 -timeout 200m -v -run TestKubeletNetpolConformance $(TESTFLAGS) ./internal/lab/kubelet/

# The real-node benchmark (root): a lab with weft and one with the bridge
# plugin alone, each timed phase by phase, then 20 pods created one at a time
# in each (create to Running p50/p95); BENCHMARKS.md has the figures.
bench-kubelet: deps build image kube-bins node-bins
	WEFT_TEST_TIERS=e2e WEFT_TEST_KUBELET=1 WEFT_BENCH_KUBELET=1 WEFT_BIN_DIR=$(BIN) WEFT_KUBE_BIN_DIR=$(KUBE_BIN_DIR) $(GO) test -count=1 -timeout 25m -v -run TestKubeletBench ./internal/lab/kubelet/

# The NetworkPolicy benchmarks (root): pod-to-pod TCP throughput and new
# connections per second with 100 policies selecting both ends against the
# same pods without weft's table and against pods no policy selects; policy
# created to rules in the kernel with 1,000 policies and 10,000 pods in the
# API, and weftd's RSS against a weftd without --network-policy
# (internal/e2e/netpol_bench_test.go, netpol_scale_test.go); then the Go
# benchmarks of compiling that cluster (internal/netpol/bench_test.go).
# BENCHMARKS.md has the figures.
.PHONY: bench-netpol
bench-netpol: deps build kube-bins
	WEFT_TEST_TIERS=e2e WEFT_BENCH_NETPOL=1 WEFT_BIN_DIR=$(BIN) WEFT_KUBE_BIN_DIR=$(KUBE_BIN_DIR) $(GO) test -count=1 -timeout 60m -v -run 'TestNetpolBench' ./internal/e2e/
	$(GO) test -run '^$$' -bench . -benchtime 5x ./internal/netpol/

# Run every fuzz target for FUZZTIME each, then keep the corpus: the inputs the
# fuzzer found interesting are copied from the build cache into the package's
# testdata/fuzz, so that `make test` replays them.
fuzz:
	@cache="$$($(GO) env GOCACHE)/fuzz"; \
	for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	    if [ -d "$$cache/$$pkg/$$f" ]; then mkdir -p "$$dir/testdata/fuzz/$$f"; cp -n "$$cache/$$pkg/$$f"/* "$$dir/testdata/fuzz/$$f/"; fi; \
	  done; \
	done

# The bench (root): data plane, control plane and CNI on a lab of its own,
# every figure next to its baseline from the same run (BENCHMARKS.md).
# BENCH_ARGS adds flags, e.g. BENCH_ARGS="--quick" or "--out bench-out".
BENCH_ARGS ?=
bench: deps build
	$(BIN)/weft lab bench $(BENCH_ARGS)

# The Go benchmarks (in-process start-up, lease to route, CNI, subnet picking).
gobench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# The local lab (root): a 3-node vxlan cluster with 2 pods per node, left
# running; LAB_ARGS adds flags (e.g. LAB_ARGS="--backend host-gw"). It first
# installs what the lab needs when missing (hack/deps.sh lab).
LAB_ARGS ?=
lab: build
	@bash hack/deps.sh lab
	$(BIN)/weft lab up $(LAB_ARGS)

lab-down:
	$(BIN)/weft lab down $(LAB_ARGS)

# The container image (root; buildah and busybox-static): static binaries and
# Debian's iptables and nftables assembled FROM scratch by buildah, written
# to bin/weft-image.oci.tar; prints the image's size (docs/install.md).
.PHONY: image
image:
	GO=$(GO) bash hack/image.sh

clean:
	rm -rf $(BIN)
