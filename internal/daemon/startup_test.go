//go:build linux

package daemon

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/lease"

	"github.com/weft-net/weft/internal/testenv"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// With no network configuration in etcd yet, weftd waits (retrying with
// backoff) and /readyz says 503 with the reason; /healthz is 200 all along.
// Once the config appears it comes up and /readyz turns 200.
func TestWaitsForConfigAndReadyz(t *testing.T) {
	n := newNode(t, "192.168.100.11")
	c := newCluster(t, `{"Network":"10.244.0.0/16"}`)
	c.del(t, prefix+"/config")
	port := freePort(t)
	o, st := c.daemonInputs(t, nil, "--subnet-file", tempFile(t, "s.env"), "--healthz-ip", "127.0.0.1", "--healthz-port", strconv.Itoa(port))
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan lease.Lease, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, o, Deps{Logger: slog.New(slog.DiscardHandler), Store: st, Backends: backends(), Kernel: n.nl,
			Ready: func(l lease.Lease) { ready <- l }})
	}()
	defer func() { cancel(); _ = <-done }() // the run's own error is not what this test checks
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	testenv.WaitFor(t, 5*time.Second, "/readyz 503 naming the missing config", func() bool {
		code, body := get(base + "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "no network configuration")
	})
	if code, _ := get(base + "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d while waiting", code)
	}
	c.put(t, prefix+"/config", `{"Network":"10.244.0.0/16"}`, false)
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("daemon exited: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("not ready 15 s after the config appeared")
	}
	if code, body := get(base + "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d %q once up", code, body)
	}
}

// The external interface: --iface by name or address, --iface-regex,
// --iface-can-reach, else the one holding --public-ip, else the default
// route's; --public-ip overrides the address.
func TestChooseExternal(t *testing.T) {
	n := newNode(t, "192.168.100.11")
	sh(t, "ip", "-n", n.name, "link", "add", "ens5", "type", "veth", "peer", "name", "wire1")
	sh(t, "ip", "-n", n.name, "addr", "add", "10.9.0.5/16", "dev", "ens5")
	sh(t, "ip", "-n", n.name, "link", "set", "ens5", "up")
	sh(t, "ip", "-n", n.name, "link", "set", "wire1", "up")
	nc, _, err := config.ParseNetConf([]byte(`{"Network":"10.244.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args       []string
		name, addr string
	}{
		{nil, "eth0", "192.168.100.11"},
		{[]string{"--iface", "ens5"}, "ens5", "10.9.0.5"},
		{[]string{"--iface", "10.9.0.5"}, "ens5", "10.9.0.5"},
		{[]string{"--iface", "nope0", "--iface", "eth0"}, "eth0", "192.168.100.11"},
		{[]string{"--iface-regex", "^en"}, "ens5", "10.9.0.5"},
		{[]string{"--iface-regex", `^192\.168\.`}, "eth0", "192.168.100.11"},
		{[]string{"--iface-can-reach", "10.9.77.1"}, "ens5", "10.9.0.5"},
		{[]string{"--public-ip", "203.0.113.7"}, "eth0", "203.0.113.7"}, // on no interface: the default route's
		{[]string{"--public-ip", "10.9.0.5"}, "ens5", "10.9.0.5"},       // the interface that holds it
	} {
		o, err := config.ParseOptions(tc.args, func(string) (string, bool) { return "", false }, nil)
		if err != nil {
			t.Fatal(err)
		}
		ext, _, err := chooseExternal(n.nl, &o, nc, givenAddrs{})
		if err != nil || ext.Name != tc.name || ext.PublicIP != netip.MustParseAddr(tc.addr) {
			t.Errorf("%q: got %s %s (%v), want %s %s", tc.args, ext.Name, ext.PublicIP, err, tc.name, tc.addr)
		}
	}
	o, _ := config.ParseOptions([]string{"--iface", "nope0"}, func(string) (string, bool) { return "", false }, nil)
	if _, _, err := chooseExternal(n.nl, &o, nc, givenAddrs{}); err == nil || !strings.Contains(err.Error(), `no interface matches --iface ["nope0"]`) {
		t.Errorf("unknown --iface: %v", err)
	}
}
