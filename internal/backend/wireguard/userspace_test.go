//go:build linux

package wireguard

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// Stopping wireguard-go does not wait for a wg(8) that connected to the
// control socket and never wrote (or hangs): its connection is cut.
func TestCloseCutsControlConnections(t *testing.T) {
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	u := newUserspace(slog.New(slog.DiscardHandler), t.TempDir())
	g := &goDevice{dev: dev, conns: map[net.Conn]struct{}{}}
	ln, err := u.listen(DeviceName)
	if err != nil {
		t.Fatal(err)
	}
	g.ln = ln
	g.done.Add(1)
	go func() {
		defer g.done.Done()
		u.serve(g)
	}()
	c, err := net.Dial("unix", u.socketPath(DeviceName))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Wait until the server has taken the connection.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		g.mu.Lock()
		n := len(g.conns)
		g.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the control connection was never accepted")
		}
	}
	closed := make(chan struct{})
	go func() { g.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("close waited for an idle control connection")
	}
	if _, err := net.Dial("unix", u.socketPath(DeviceName)); err == nil {
		t.Error("the control socket still answers after close")
	}
}
