package iptables

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/netfilter"
)

func cfg4() netfilter.FamilyRules {
	return netfilter.Desired(netfilter.Config{Masquerade: true, Forward: true, Networks: []netfilter.Network{{
		Cluster: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24")}}})[0]
}

func TestRender(t *testing.T) {
	got := strings.Join(Render(MasqChain, cfg4().Masq), "\n")
	want := `-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -j MASQUERADE --random-fully`
	if got != want {
		t.Errorf("Render:\n%s\nwant:\n%s", got, want)
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{"iptables v1.8.9 (nf_tables)", true},
		{"iptables v1.6.2", true},
		{"iptables v1.6.1", false},
		{"iptables v1.4.21", false},
		{"6.1.0-18-amd64", true},
		{"3.10.0-1160.el7.x86_64", false},
		{"garbage", false},
	} {
		major, minor, patch := 1, 6, 2
		if !strings.HasPrefix(tc.s, "iptables") && tc.s != "garbage" {
			major, minor, patch = 3, 13, 0
		}
		if got := versionAtLeast(tc.s, major, minor, patch); got != tc.want {
			t.Errorf("versionAtLeast(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}

// scriptRunner answers like an iptables without weft's chains and records
// the iptables-restore input.
type scriptRunner struct {
	version string
	script  string
}

func (r *scriptRunner) Run(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	switch {
	case strings.HasSuffix(name, "-restore"):
		r.script = string(stdin)
		return nil, nil
	case len(args) == 1 && args[0] == "--version":
		return []byte(r.version), nil
	case strings.HasPrefix(args[len(args)-1], "FLANNEL-"):
		return nil, &netfilter.CommandError{Args: args, ExitCode: 1, Stderr: "No chain/target/match by that name."}
	}
	return []byte("-P " + args[len(args)-1] + " ACCEPT\n-A " + args[len(args)-1] + " -j FOREIGN\n"), nil
}

// TestApplyScript checks the restore script on a fresh node, and that an
// old iptables gets no --random-fully.
func TestApplyScript(t *testing.T) {
	r := &scriptRunner{version: "iptables v1.6.1"}
	b := New(r, slog.New(slog.DiscardHandler), Options{})
	if changed, err := b.Apply(context.Background(), cfg4()); err != nil || !changed {
		t.Fatalf("Apply = %v, %v", changed, err)
	}
	want := `*nat
:FLANNEL-POSTRTG - [0:0]
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -j MASQUERADE
-I POSTROUTING 1 -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
COMMIT
*filter
:FLANNEL-FWD - [0:0]
-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -j ACCEPT
-I FORWARD 1 -m comment --comment "flanneld forward" -j FLANNEL-FWD
COMMIT
`
	if r.script != want {
		t.Errorf("restore script:\n%s\nwant:\n%s", r.script, want)
	}
}
