package netfilter_test

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/netfilter"
	"github.com/weft-net/weft/internal/testenv"
)

// Kernel tests: each runs in its own network namespace (netfiltertest.NewNS)
// and skips when not root. They never touch the caller's namespace.

const goldenNAT4 = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -j MASQUERADE --random-fully
COMMIT
`

const goldenFilter6 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s fd00:10:244::/56 -j ACCEPT
-A FLANNEL-FWD -d fd00:10:244::/56 -j ACCEPT
COMMIT
`

const goldenNFT6 = `table ip6 flannel-ipv6 {
	chain postrtg {
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x00004000 == 0x00004000 return
		ip6 saddr fd00:10:244:1::/64 ip6 daddr fd00:10:244::/56 return
		ip6 saddr fd00:10:244::/56 ip6 daddr fd00:10:244:1::/64 return
		ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244:1::/64 return
		ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random
		ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244::/56 masquerade fully-random
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		ip6 saddr fd00:10:244::/56 accept
		ip6 daddr fd00:10:244::/56 accept
	}
}
`

// TestGolden checks the exact text iptables-save and nft print for a
// dual-stack config: literal listings for one table of each kind, and the
// hand-written SPEC expectation for all of weft's objects.
func TestGolden(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m, time.Hour)
			e.set(t, testCfg())
			e.check(t, testCfg())
			if m.name == "nftables" {
				if got := e.sh(t, "nft", "list", "table", "ip6", "flannel-ipv6"); got != goldenNFT6 {
					t.Errorf("nft list table ip6 flannel-ipv6:\n%s\nwant:\n%s", got, goldenNFT6)
				}
				return
			}
			if got := saveTable(t, e.ns, m.name, "nat"); got != goldenNAT4 {
				t.Errorf("%s-save -t nat:\n%s\nwant:\n%s", m.name, got, goldenNAT4)
			}
			if got := saveTable(t, e.ns, ip6(m.name), "filter"); got != goldenFilter6 {
				t.Errorf("%s-save -t filter:\n%s\nwant:\n%s", ip6(m.name), got, goldenFilter6)
			}
		})
	}
}

// TestSetIdempotent: a second Set with the same config writes nothing.
func TestSetIdempotent(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m, time.Hour)
			e.set(t, testCfg())
			first := e.runner.Writes()
			if first == 0 {
				t.Fatal("first Set wrote nothing")
			}
			e.set(t, testCfg())
			e.set(t, testCfg())
			if n := e.runner.Writes() - first; n != 0 {
				t.Errorf("repeated Set wrote %d times, want 0", n)
			}
			e.check(t, testCfg())
		})
	}
}

// TestResyncRestores damages weft's rules in several ways; one resync puts
// them back and logs the repair, and the Run loop does the same on its own.
func TestResyncRestores(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m, time.Hour)
			e.set(t, testCfg())
			ctx := context.Background()
			if d, err := e.syncer.Check(ctx, testCfg()); err != nil || len(d) != 0 {
				t.Errorf("Check of rules in place = %q, %v; want nothing", d, err)
			}
			for name, cmds := range m.breaks {
				for _, c := range cmds {
					e.sh(t, c...)
				}
				if e.mode.ours(t, e.ns) == e.mode.expect(testCfg()) {
					t.Fatalf("break %q changed nothing", name)
				}
				// weft status: the damage is named, and checking writes nothing.
				writes := e.runner.Writes()
				if d, err := e.syncer.Check(ctx, testCfg()); err != nil || len(d) == 0 {
					t.Errorf("Check after break %q = %q, %v; want the damage named", name, d, err)
				} else {
					t.Logf("break %q: %q", name, d)
				}
				if e.runner.Writes() != writes {
					t.Errorf("Check after break %q wrote to the kernel", name)
				}
				if err := e.syncer.Resync(context.Background()); err != nil {
					t.Fatalf("resync after break %q: %v", name, err)
				}
				e.check(t, testCfg())
			}
			if !strings.Contains(e.logs.String(), "repaired masquerade and forward rules") {
				t.Errorf("no Info log of the repair:\n%s", e.logs.String())
			}
		})
	}
}

// TestRunLoop: the Run loop restores a removed chain or table within a few
// resync intervals and stops when its context ends.
func TestRunLoop(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			const resync = 100 * time.Millisecond
			e := newEnv(t, m, resync)
			e.set(t, testCfg())
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- e.syncer.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			}()
			for _, c := range m.breaks["chain"] {
				e.sh(t, c...)
			}
			want := e.mode.expect(testCfg())
			// A bound that holds under make test's parallel load: the resync
			// runs every 100 ms, but each nft or iptables run can wait seconds
			// for a CPU.
			wait := testenv.Scale(t, 15*time.Second)
			deadline := time.Now().Add(wait)
			for e.mode.ours(t, e.ns) != want {
				if time.Now().After(deadline) {
					t.Fatalf("not restored after %v:\n%s", wait, e.mode.ours(t, e.ns))
				}
				time.Sleep(resync / 4)
			}
		})
	}
}

// TestConfigChanges feeds a sequence of configs and compares the whole
// state after each: new subnet, fully-random off, forward rules off, IPv6
// dropped, masquerade off, and back to the start.
func TestConfigChanges(t *testing.T) {
	newP := testCfg()
	newP.Networks[0].Subnet = netip.MustParsePrefix("10.244.3.0/24")
	noRandom := testCfg()
	noRandom.FullyRandomDisable = true
	noForward := testCfg()
	noForward.Forward = false
	only4 := testCfg()
	only4.Networks = only4.Networks[:1]
	fwdOnly := testCfg()
	fwdOnly.Masquerade = false
	steps := []netfilter.Config{newP, noRandom, noForward, only4, fwdOnly, testCfg()}
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m, time.Hour)
			e.set(t, testCfg())
			for _, cfg := range steps {
				e.set(t, cfg)
				e.check(t, cfg)
			}
		})
	}
}

// TestCleanup removes weft's objects and nothing else; a second Cleanup
// and a Cleanup before any Set are harmless.
func TestCleanup(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m, time.Hour)
			if err := e.syncer.Cleanup(context.Background()); err != nil {
				t.Fatalf("Cleanup before Set: %v", err)
			}
			e.set(t, testCfg())
			for range 2 {
				if err := e.syncer.Cleanup(context.Background()); err != nil {
					t.Fatalf("Cleanup: %v", err)
				}
				e.check(t, netfilter.Config{})
			}
		})
	}
}

// TestMissingBinary: a missing binary is a clear error, found by errors.Is.
func TestMissingBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, m := range []mode{iptablesMode("iptables"), nftMode()} {
		s := netfilter.NewSyncer(m.backend(netfilter.ExecRunner{}, discard()), discard(), time.Hour)
		err := s.Set(context.Background(), testCfg())
		if err == nil || !strings.Contains(err.Error(), "not installed") || !errors.Is(err, exec.ErrNotFound) {
			t.Errorf("%s: Set without binaries = %v, want a not-installed error wrapping exec.ErrNotFound", m.name, err)
		}
	}
}

// A weftd that starts where someone emptied weft's chain (flushed it, left
// the jump) fills it again: a fresh rule manager has no record of its own
// writes, and an empty listing must not pass for one. weft status, also
// fresh, names the emptied chain.
func TestFreshStartRefillsEmptiedChain(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m, time.Hour)
			e.set(t, testCfg())
			if strings.HasPrefix(m.name, "nft") {
				e.sh(t, "nft", "flush", "chain", "ip", "flannel-ipv4", "postrtg")
			} else {
				e.sh(t, m.name, "-t", "nat", "-F", "FLANNEL-POSTRTG")
			}
			fresh := newEnvIn(t, m, time.Hour, e.ns)
			if d, err := fresh.syncer.Check(context.Background(), testCfg()); err != nil || len(d) == 0 {
				t.Errorf("a fresh Check of the emptied chain = %q, %v; want it named", d, err)
			}
			fresh.set(t, testCfg())
			fresh.check(t, testCfg())
		})
	}
}
