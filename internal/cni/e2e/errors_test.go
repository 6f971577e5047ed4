//go:build linux

package e2e

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/weft-net/weft/internal/subnetfile"
)

// wantCNIError wants err to be CNI error JSON with code and every part in
// its message.
func wantCNIError(t *testing.T, err error, code uint, parts ...string) {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("error %v is not CNI error JSON", err)
	}
	if te.Code != code {
		t.Errorf("code %d, want %d (%s)", te.Code, code, te.Msg)
	}
	for _, p := range parts {
		if !strings.Contains(te.Msg, p) {
			t.Errorf("message %q does not say %q", te.Msg, p)
		}
	}
}

// wantNothingCreated checks that a failed ADD left no saved file, no
// allocation, no veth on the node and nothing but lo in the pod.
func wantNothingCreated(t *testing.T, n *node, pod ns.NetNS) {
	t.Helper()
	if s, a, v := n.savedFiles(t), n.ipamFiles(t), vethCount(t, n.ns); len(s)+len(a)+v != 0 {
		t.Errorf("half-created: saved %v, allocations %v, %d veths on the node", s, a, v)
	}
	for name := range links(t, pod) {
		if name != "lo" {
			t.Errorf("pod has link %s", name)
		}
	}
	if a := globalAddrs(t, pod); len(a) != 0 {
		t.Errorf("pod has addresses %v", a)
	}
}

func TestErrorsLeaveNothing(t *testing.T) {
	ctx := context.Background()
	env := env4()
	cases := []struct {
		name     string
		delegate string
		subnet   string // subnet.env content; "" = the usual, "-" = none
		code     uint
		msg      []string
	}{
		{"delegate sets name", `{"name":"mine"}`, "", types.ErrInvalidNetworkConfig, []string{`"delegate" must not set "name"`}},
		{"delegate sets ipam", `{"ipam":{"type":"dhcp"}}`, "", types.ErrInvalidNetworkConfig, []string{`must not set "ipam"`, `top-level "ipam"`}},
		{"delegate type not a string", `{"type":1}`, "", types.ErrInvalidNetworkConfig, []string{`"delegate.type"`}},
		{"no subnet.env", "", "-", types.ErrTryAgainLater, []string{"does not exist", "weftd has not written it yet"}},
		{"truncated subnet.env", "", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_M", types.ErrInvalidNetworkConfig,
			[]string{"was written but is not usable", "FLANNEL_M"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e *subnetfile.Env
			if tc.subnet == "" {
				e = &env
			}
			n := newNode(t, e, tc.delegate)
			if tc.subnet != "" && tc.subnet != "-" {
				if err := os.MkdirAll(filepath.Dir(n.subnetFile), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(n.subnetFile, []byte(tc.subnet), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			pod := n.pod(t)
			_, err := n.add(ctx, "pod-err", pod)
			wantCNIError(t, err, tc.code, tc.msg...)
			if tc.subnet != "" {
				wantCNIError(t, err, tc.code, n.subnetFile)
			}
			wantNothingCreated(t, n, pod)
		})
	}
}

func TestMalformedStdin(t *testing.T) {
	env := env4()
	n := newNode(t, &env, "")
	pod := n.pod(t)
	for _, stdin := range []string{`{"cniVersion":"1.0.0","name":"cbr0","type":"flannel",`, `{"cniVersion":"1.0.0","type":"flannel"}`} {
		err := n.do(func() error {
			_, err := invoke.ExecPluginWithResult(context.Background(), filepath.Join(n.bin, "flannel"), []byte(stdin),
				&invoke.Args{Command: "ADD", ContainerID: "pod-bad", NetNS: pod.Path(), IfName: "eth0", Path: n.bin}, nil)
			return err
		})
		var te *types.Error
		if !errors.As(err, &te) || (te.Code != types.ErrDecodingFailure && te.Code != types.ErrInvalidNetworkConfig) || te.Msg == "" {
			t.Errorf("stdin %s: error %#v, want CNI decoding or config error", stdin, err)
		}
		t.Logf("stdin %s: %v", stdin, err)
	}
	wantNothingCreated(t, n, pod)
}

// TestFailedDelegateIsRolledBack fills a one-address subnet, so that the
// second pod's ADD fails inside bridge after its veth exists; the plugin must
// undo it.
func TestFailedDelegateIsRolledBack(t *testing.T) {
	env := env4()
	env.Subnet = netip.MustParsePrefix("10.244.1.1/30") // .2 is the only pod address
	n := newNode(t, &env, "")
	ctx := context.Background()
	pod1, pod2 := n.pod(t), n.pod(t)
	if _, err := n.add(ctx, "pod-1", pod1); err != nil {
		t.Fatalf("first ADD: %v", err)
	}
	_, err := n.add(ctx, "pod-2", pod2)
	if err == nil {
		t.Fatal("second ADD into a full subnet succeeded")
	}
	t.Logf("second ADD: %v", err)
	if s, a, v := n.savedFiles(t), n.ipamFiles(t), vethCount(t, n.ns); !slices.Equal(s, []string{"pod-1"}) || len(a) != 1 || v != 1 {
		t.Errorf("after the failed ADD: saved %v, allocations %v, %d veths; want pod-1's only", s, a, v)
	}
	if l := links(t, pod2); len(l) != 1 {
		t.Errorf("second pod has links %v, want only lo", l)
	}
}

func TestGCRemovesStaleAttachments(t *testing.T) {
	env := env4()
	n := newNode(t, &env, "")
	ctx := context.Background()
	keep, gone := n.pod(t), n.pod(t)
	if _, err := n.add(ctx, "pod-keep", keep); err != nil {
		t.Fatal(err)
	}
	if _, err := n.add(ctx, "pod-gone", gone); err != nil {
		t.Fatal(err)
	}
	closeNS(gone) // the container is gone, and the runtime lost its cache
	fresh := libcni.NewCNIConfigWithCacheDir([]string{n.bin}, filepath.Join(t.TempDir(), "cache"), nil)
	err := n.do(func() error {
		return fresh.GCNetworkList(ctx, n.list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "pod-keep", IfName: "eth0"}}})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if s, a := n.savedFiles(t), n.ipamFiles(t); !slices.Equal(s, []string{"pod-keep"}) || len(a) != 1 {
		t.Errorf("after GC: saved %v, allocations %v; want pod-keep's only", s, a)
	}
	if err := n.check(ctx, "pod-keep", keep); err != nil {
		t.Errorf("CHECK of the kept pod after GC: %v", err)
	}
}

func TestOlderCNIVersions(t *testing.T) {
	env := env4()
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
		t.Run(v, func(t *testing.T) {
			n := newNode(t, &env, "")
			n.list.CNIVersion = v
			pod := n.pod(t)
			ctx := context.Background()
			res, err := n.add(ctx, "pod-v", pod)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if len(res.IPs) != 1 {
				t.Errorf("result %v", res)
			}
			if v != "0.3.1" {
				if err := n.check(ctx, "pod-v", pod); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			if err := n.del(ctx, "pod-v", pod); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if a := n.ipamFiles(t); len(a) != 0 {
				t.Errorf("allocations left: %v", a)
			}
		})
	}
}
