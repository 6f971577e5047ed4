//go:build linux

package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/backend"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/kernel/kerneltest"
	"github.com/weft-net/weft/internal/store"
	"github.com/weft-net/weft/internal/store/kube"
	"github.com/weft-net/weft/internal/store/storetest"
	"github.com/weft-net/weft/internal/subnetfile"

	"github.com/weft-net/weft/internal/testenv"
)

// The kube store is the store that gives public addresses (node-public-ip).
var _ publicAddrSource = (*kube.Store)(nil)

// addrStore is storetest's in-memory store giving public addresses for the
// node, as the kube store gives the node-public-ip annotations; set changes
// what it answers.
type addrStore struct {
	*storetest.Fake
	mu     sync.Mutex
	v4, v6 netip.Addr
	err    error
	asked  int
}

func (s *addrStore) PublicAddrs(_ context.Context, cfg *config.NetConf) (netip.Addr, netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked++
	if cfg == nil {
		return netip.Addr{}, netip.Addr{}, errors.New("no network configuration")
	}
	return s.v4, s.v6, s.err
}

func (s *addrStore) set(v4, v6 string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.v4, s.v6, s.err = addrOrZero(v4), addrOrZero(v6), err
}

func (s *addrStore) timesAsked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked
}

func addrOrZero(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

// twoNICs is a kernel with eth0 (the default route's) and ens5, each with
// an IPv4 and a global IPv6 address.
func twoNICs() (k *kerneltest.Fake, eth0, ens5 int) {
	k = kerneltest.New()
	eth0 = k.AddExternal("eth0", 1500, true, netip.MustParsePrefix("192.168.100.11/24"), netip.MustParsePrefix("fd00:100::11/64"))
	ens5 = k.AddExternal("ens5", 9000, false, netip.MustParsePrefix("10.9.0.5/16"), netip.MustParsePrefix("fd00:9::5/64"))
	return k, eth0, ens5
}

// The precedence of chooseExternal, case by case: a given address
// (node-public-ip) stands in for --public-ip / --public-ipv6 and wins over
// them; without --iface, --iface-regex or --iface-can-reach the interface
// holding the public address asked for (IPv4's first) is taken, else the
// default route's (the address kept, notOnIface set); with one of them, that
// option picks the interface and the given address is still the public one.
// IPv4 and IPv6 addresses asked for on two interfaces are an error; a given
// address of a family the network does not enable is not used.
func TestChooseExternalPublicAddrs(t *testing.T) {
	const (
		v4only = `{"Network":"10.244.0.0/16"}`
		v6only = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`
		dual   = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`
	)
	for _, tc := range []struct {
		name         string
		netconf      string
		args         []string
		g4, g6       string // given (node-public-ip, node-public-ipv6)
		iface        string
		v4, v6       string
		how          string // contained in choice.how
		from4, from6 string
		notOnIface   string
		err          string
	}{
		{name: "nothing: default route", netconf: v4only, iface: "eth0", v4: "192.168.100.11", how: "default route",
			from4: "interface eth0"},
		{name: "flag on ens5 picks ens5", netconf: v4only, args: []string{"--public-ip", "10.9.0.5"}, iface: "ens5",
			v4: "10.9.0.5", how: "--public-ip 10.9.0.5", from4: "--public-ip"},
		{name: "flag on no interface", netconf: v4only, args: []string{"--public-ip", "203.0.113.7"}, iface: "eth0",
			v4: "203.0.113.7", how: "default route", from4: "--public-ip", notOnIface: "203.0.113.7"},
		{name: "given on ens5 picks ens5", netconf: v4only, g4: "10.9.0.5", iface: "ens5", v4: "10.9.0.5",
			how: "node-public-ip 10.9.0.5", from4: "node-public-ip"},
		{name: "given on eth0", netconf: v4only, g4: "192.168.100.11", iface: "eth0", v4: "192.168.100.11",
			how: "node-public-ip 192.168.100.11", from4: "node-public-ip"},
		{name: "given wins over the flag", netconf: v4only, args: []string{"--public-ip", "192.168.100.11"}, g4: "10.9.0.5",
			iface: "ens5", v4: "10.9.0.5", how: "node-public-ip", from4: "node-public-ip"},
		{name: "given wins over a flag on ens5", netconf: v4only, args: []string{"--public-ip", "10.9.0.5"},
			g4: "192.168.100.11", iface: "eth0", v4: "192.168.100.11", how: "node-public-ip", from4: "node-public-ip"},
		{name: "given on no interface", netconf: v4only, g4: "203.0.113.9", iface: "eth0", v4: "203.0.113.9",
			how: "default route", from4: "node-public-ip", notOnIface: "203.0.113.9"},
		{name: "--iface picks, given is the address", netconf: v4only, args: []string{"--iface", "eth0"}, g4: "10.9.0.5",
			iface: "eth0", v4: "10.9.0.5", how: "--iface eth0", from4: "node-public-ip"},
		{name: "--iface picks, given wins over flag", netconf: v4only,
			args: []string{"--iface", "ens5", "--public-ip", "10.9.0.5"}, g4: "192.168.100.11", iface: "ens5",
			v4: "192.168.100.11", how: "--iface ens5", from4: "node-public-ip"},
		{name: "--iface-regex picks", netconf: v4only, args: []string{"--iface-regex", "^ens"}, g4: "192.168.100.11",
			iface: "ens5", v4: "192.168.100.11", how: "--iface-regex ^ens", from4: "node-public-ip"},
		{name: "--iface-can-reach picks", netconf: v4only, args: []string{"--iface-can-reach", "10.9.77.1"},
			g4: "192.168.100.11", iface: "ens5", v4: "192.168.100.11", how: "--iface-can-reach", from4: "node-public-ip"},
		{name: "given IPv6 of a network without IPv6", netconf: v4only, g6: "fd00:9::5", iface: "eth0",
			v4: "192.168.100.11", how: "default route", from4: "interface eth0"},
		{name: "IPv6 only: given picks", netconf: v6only, g6: "fd00:9::5", iface: "ens5", v6: "fd00:9::5",
			how: "node-public-ipv6 fd00:9::5", from6: "node-public-ipv6"},
		{name: "IPv6 only: given wins over the flag", netconf: v6only, args: []string{"--public-ipv6", "fd00:9::5"},
			g6: "fd00:100::11", iface: "eth0", v6: "fd00:100::11", how: "node-public-ipv6", from6: "node-public-ipv6"},
		{name: "IPv6 only: flag picks", netconf: v6only, args: []string{"--public-ipv6", "fd00:9::5"}, iface: "ens5",
			v6: "fd00:9::5", how: "--public-ipv6 fd00:9::5", from6: "--public-ipv6"},
		{name: "IPv6 only: given IPv4 unused", netconf: v6only, g4: "10.9.0.5", iface: "eth0", v6: "fd00:100::11",
			how: "default route", from6: "interface eth0"},
		{name: "dual: given IPv4 picks, IPv6 the interface's", netconf: dual, g4: "10.9.0.5", iface: "ens5",
			v4: "10.9.0.5", v6: "fd00:9::5", how: "node-public-ip 10.9.0.5", from4: "node-public-ip", from6: "interface ens5"},
		{name: "dual: given IPv6 picks", netconf: dual, g6: "fd00:9::5", iface: "ens5", v4: "10.9.0.5", v6: "fd00:9::5",
			how: "node-public-ipv6 fd00:9::5", from4: "interface ens5", from6: "node-public-ipv6"},
		{name: "dual: both given on ens5", netconf: dual, g4: "10.9.0.5", g6: "fd00:9::5", iface: "ens5", v4: "10.9.0.5",
			v6: "fd00:9::5", how: "node-public-ip 10.9.0.5", from4: "node-public-ip", from6: "node-public-ipv6"},
		{name: "dual: given IPv4 and flag IPv6 on ens5", netconf: dual, args: []string{"--public-ipv6", "fd00:9::5"},
			g4: "10.9.0.5", iface: "ens5", v4: "10.9.0.5", v6: "fd00:9::5", how: "node-public-ip", from4: "node-public-ip",
			from6: "--public-ipv6"},
		{name: "dual: on two interfaces", netconf: dual, g4: "10.9.0.5", g6: "fd00:100::11",
			err: "the IPv4 public address 10.9.0.5 (node-public-ip) is on ens5 but the IPv6 one fd00:100::11 (node-public-ipv6) is on eth0"},
		{name: "dual: flag and given on two interfaces", netconf: dual, args: []string{"--public-ipv6", "fd00:100::11"},
			g4: "10.9.0.5", err: "(--public-ipv6) is on eth0: both must be on one interface; give --iface"},
		{name: "dual: on two interfaces, --iface decides", netconf: dual, args: []string{"--iface", "eth0"},
			g4: "10.9.0.5", g6: "fd00:100::11", iface: "eth0", v4: "10.9.0.5", v6: "fd00:100::11", how: "--iface eth0",
			from4: "node-public-ip", from6: "node-public-ipv6"},
		{name: "dual: IPv4 on none, IPv6 picks", netconf: dual, g4: "203.0.113.9", g6: "fd00:9::5", iface: "ens5",
			v4: "203.0.113.9", v6: "fd00:9::5", how: "node-public-ipv6 fd00:9::5", from4: "node-public-ip",
			from6: "node-public-ipv6"},
		{name: "dual: both on none", netconf: dual, g4: "203.0.113.9", g6: "2001:db8::9", iface: "eth0",
			v4: "203.0.113.9", v6: "2001:db8::9", how: "default route", from4: "node-public-ip", from6: "node-public-ipv6",
			notOnIface: "203.0.113.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, _, _ := twoNICs()
			nc, _, err := config.ParseNetConf([]byte(tc.netconf))
			if err != nil {
				t.Fatal(err)
			}
			o, err := config.ParseOptions(tc.args, func(string) (string, bool) { return "", false }, nil)
			if err != nil {
				t.Fatal(err)
			}
			given := givenAddrs{v4: addrOrZero(tc.g4), v6: addrOrZero(tc.g6), from: [2]string{"node-public-ip", "node-public-ipv6"}}
			ext, ch, err := chooseExternal(k, &o, nc, given)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("%s %v %v from %q %q not-on-iface %v", ext.Name, ext.PublicIP, ext.PublicIPv6,
				ch.from[0], ch.from[1], ch.notOnIface)
			want := fmt.Sprintf("%s %v %v from %q %q not-on-iface %v", tc.iface, addrOrZero(tc.v4), addrOrZero(tc.v6),
				tc.from4, tc.from6, addrOrZero(tc.notOnIface))
			if got != want || !strings.Contains(ch.how, tc.how) {
				t.Errorf("got  %s (%q)\nwant %s (%q)", got, ch.how, want, tc.how)
			}
		})
	}
}

// fakeAddrNode is a node on twoNICs whose store gives public addresses.
type fakeAddrNode struct {
	k          *kerneltest.Fake
	eth0, ens5 int
	base       *storetest.Fake
	st         *addrStore
	file       string
}

func newFakeAddrNode(t *testing.T, netconf string) *fakeAddrNode {
	k, eth0, ens5 := twoNICs()
	base := storetest.NewFake(nil, nil, nil)
	base.SetConfig(netconf)
	return &fakeAddrNode{k: k, eth0: eth0, ens5: ens5, base: base, st: &addrStore{Fake: base},
		file: tempFile(t, "subnet.env")}
}

// start runs the daemon on the node with backends; readyIn bounds the wait.
func (n *fakeAddrNode) start(t *testing.T, reg backend.Registry, readyIn time.Duration, args ...string) *running {
	t.Helper()
	o, err := config.ParseOptions(append([]string{"--subnet-file", n.file}, args...),
		func(string) (string, bool) { return "", false }, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n.st.Fake = n.base.Client(log)
	return launch(t, o, Deps{Logger: log, Store: n.st, Backends: reg, Kernel: n.k, ResyncEvery: time.Hour},
		logs, n.file, readyIn, nil)
}

// A malformed node-public-ip keeps the node down with /readyz 503 naming
// it (logged once, however often it is asked again); once the annotation
// is corrected the node comes up without a restart on the interface that
// holds the address, publishes it, and builds flannel.1 on it (its MTU
// from that interface).
func TestFakeGivenPublicAddr(t *testing.T) {
	n := newFakeAddrNode(t, testNetConf("vxlan"))
	bad := errors.New(`node n1: annotation flannel.alpha.coreos.com/node-public-ip "10.9.0.500" is not an IP address`)
	n.st.set("", "", bad)
	port := freePort(t)
	reason := make(chan string, 1)
	go func() { // fixes the value once /readyz names it; the test's goroutine waits in launch
		url := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if resp, err := http.Get(url); err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "10.9.0.500") {
					time.Sleep(time.Second) // a few more retries, to see they are not logged again
					n.st.set("10.9.0.5", "", nil)
					reason <- string(body)
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		reason <- ""
		n.st.set("10.9.0.5", "", nil)
	}()
	d := n.start(t, backends(), 30*time.Second, "--healthz-ip", "127.0.0.1", "--healthz-port", strconv.Itoa(port))
	if r := <-reason; !strings.Contains(r, "public address given for this node") || !strings.Contains(r, "node-public-ip") {
		t.Errorf("/readyz while the annotation was malformed: %q", r)
	}
	logs := d.log.String()
	if got := strings.Count(logs, "read the public address given for this node; retrying"); got != 1 {
		t.Errorf("the malformed value logged %d times, want once:\n%s", got, logs)
	}
	if asked := n.st.timesAsked(); asked < 3 {
		t.Errorf("the store was asked %d times, want retries", asked)
	}
	if !strings.Contains(logs, `msg="external interface" name=ens5 chosen-by="node-public-ip 10.9.0.5"`) ||
		!strings.Contains(logs, "public-ip=10.9.0.5 public-ip-from=node-public-ip") {
		t.Errorf("external interface not logged as chosen by node-public-ip:\n%s", logs)
	}
	if d.own.Attrs.PublicIP != netip.MustParseAddr("10.9.0.5") {
		t.Errorf("own lease publishes %s, want 10.9.0.5", d.own.Attrs.PublicIP)
	}
	l := n.k.MustLink(t, "flannel.1")
	if l.VXLAN == nil || l.VXLAN.Dev != n.ens5 || l.VXLAN.Local != netip.MustParseAddr("10.9.0.5") || l.MTU != 8950 {
		t.Errorf("flannel.1: MTU %d, vxlan %+v; want local 10.9.0.5 on ens5 (%d), MTU 8950", l.MTU, l.VXLAN, n.ens5)
	}
	env, err := subnetfile.Read(n.file)
	if err != nil || env.MTU != 8950 {
		t.Errorf("subnet.env MTU %d (%v), want 8950", env.MTU, err)
	}
}

// A node that is not registered yet (store.ErrNotYet) is asked again until
// it is.
func TestFakeGivenPublicAddrNotYet(t *testing.T) {
	n := newFakeAddrNode(t, testNetConf("vxlan"))
	n.st.set("", "", fmt.Errorf("node n1 is not registered yet; waiting for it: %w", store.ErrNotYet))
	time.AfterFunc(time.Second, func() { n.st.set("192.168.100.11", "", nil) })
	d := n.start(t, backends(), 20*time.Second)
	if d.own.Attrs.PublicIP != netip.MustParseAddr("192.168.100.11") {
		t.Errorf("own lease publishes %s", d.own.Attrs.PublicIP)
	}
	if logs := d.log.String(); !strings.Contains(logs, "not registered yet") {
		t.Errorf("the wait is not logged:\n%s", logs)
	}
}

// A warm start (a backend whose peers live in userspace) trusts the
// snapshot's public address before the store is asked, and keeps the
// resumed backend when the store gives the same; when the store no longer
// gives it, the resumed backend is dropped and the node comes up on the
// default route's interface and address.
func TestFakeWarmStartGivenPublicAddr(t *testing.T) {
	n := newFakeAddrNode(t, testNetConf("vxlan"))
	n.st.set("10.9.0.5", "", nil)
	d := n.start(t, warmBackends(), 10*time.Second)
	testenv.WaitFor(t, 2*time.Second, "snapshot written", func() bool {
		_, err := os.Stat(SnapshotPath(n.file))
		return err == nil
	})
	d.stop(t)

	d = n.start(t, warmBackends(), 10*time.Second)
	logs := d.log.String()
	if !strings.Contains(logs, "resumed the data path from the peer snapshot") ||
		strings.Contains(logs, "not the peer snapshot's") || d.own.Attrs.PublicIP != netip.MustParseAddr("10.9.0.5") {
		t.Errorf("same address: own %s, log\n%s", d.own.Attrs.PublicIP, logs)
	}
	d.stop(t)

	n.st.set("", "", nil)
	d = n.start(t, warmBackends(), 10*time.Second)
	logs = d.log.String()
	if !strings.Contains(logs, "the external interface or public address is not the peer snapshot's; starting the backend afresh") ||
		d.own.Attrs.PublicIP != netip.MustParseAddr("192.168.100.11") {
		t.Errorf("address gone: own %s, log\n%s", d.own.Attrs.PublicIP, logs)
	}
	if l := n.k.MustLink(t, "flannel.1"); l.VXLAN == nil || l.VXLAN.Dev != n.eth0 || l.VXLAN.Local != netip.MustParseAddr("192.168.100.11") {
		t.Errorf("flannel.1 vxlan %+v, want local 192.168.100.11 on eth0", l.VXLAN)
	}
}

// weft status asks the store for the given addresses as weftd's start does:
// a node up on node-public-ip 10.9.0.5 (ens5) is in sync, its lease found by
// that address; with a malformed value status cannot tell and says why; a
// Node not registered gives no address, as with a store that has none.
func TestFakeStatusGivenPublicAddr(t *testing.T) {
	n := newFakeAddrNode(t, testNetConf("vxlan"))
	n.st.set("10.9.0.5", "", nil)
	d := n.start(t, backends(), 10*time.Second)
	d.stop(t)
	o, err := config.ParseOptions([]string{"--subnet-file", n.file, "--healthz-port", "0"},
		func(string) (string, bool) { return "", false }, nil)
	if err != nil {
		t.Fatal(err)
	}
	status := func() (Report, error) {
		return Status(t.Context(), o, StatusDeps{Store: n.st, Backends: backends(), Kernel: n.k})
	}
	rep, err := status()
	if err != nil || !rep.InSync || rep.Node.Interface != "ens5" || rep.Node.PublicIP != "10.9.0.5" {
		t.Fatalf("status: %v, in sync %v, interface %s, public ip %s, problems %q", err, rep.InSync, rep.Node.Interface,
			rep.Node.PublicIP, rep.Problems)
	}
	n.st.set("", "", errors.New(`node n1: annotation flannel.alpha.coreos.com/node-public-ip "x" is not an IP address`))
	if _, err := status(); !errors.Is(err, ErrCannotTell) || !strings.Contains(err.Error(), `node-public-ip "x"`) {
		t.Errorf("malformed: %v", err)
	}
	n.st.set("", "", fmt.Errorf("node n1 is not registered yet; waiting for it: %w", store.ErrNotYet))
	if rep, err := status(); err != nil || rep.Node.Interface != "eth0" {
		t.Errorf("not registered: %v, interface %s", err, rep.Node.Interface)
	}
}
