//go:build linux

package wireguard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/weft-net/weft/internal/backend/tunnel"
)

// DefaultSocketDir is where wg(8) looks for a userspace device's control
// socket, <dir>/<device>.sock.
const DefaultSocketDir = "/var/run/wireguard"

// userspace is the data path where the kernel has no WireGuard:
// wireguard-go in process on a persistent TUN (with the vnet header, so
// wireguard-go's TSO/GRO and UDP GSO/GRO are on), configured in process and
// served on a control socket for wg(8). The TUN, its addresses and its
// routes outlive weftd; the next weftd attaches to the same device.
type userspace struct {
	log *slog.Logger
	// sockDir is the control sockets' directory: /var/run/wireguard, or a
	// directory of this node's own where several nodes share one file
	// system (a lab), so that their flannel-wg sockets do not collide.
	sockDir string
	// changed is called after a wg command through a control socket (it
	// may have changed the peers).
	changed func()

	mu   sync.Mutex
	devs map[string]*goDevice
}

// goDevice is one running wireguard-go device.
type goDevice struct {
	dev  *device.Device
	ln   *net.UnixListener
	done sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{} // open control connections, closed by close
}

// track records an open control connection; it reports false, closing c,
// once the device is closing.
func (g *goDevice) track(c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conns == nil {
		_ = c.Close()
		return false
	}
	g.conns[c] = struct{}{}
	return true
}

func (g *goDevice) untrack(c net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.conns, c)
}

func newUserspace(log *slog.Logger, sockDir string) *userspace {
	return &userspace{log: log, sockDir: sockDir, devs: map[string]*goDevice{}}
}

func (u *userspace) String() string { return "userspace" }

// ensure runs wireguard-go on the TUN name, starting it again when the
// device was deleted (wireguard-go closes itself when its TUN goes).
func (u *userspace) ensure(name string, mtu int) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if g, ok := u.devs[name]; ok {
		select {
		case <-g.dev.Wait():
			u.log.Info("wireguard-go device closed (its TUN was deleted); starting it again", "device", name)
			g.close()
			delete(u.devs, name)
		default:
			if _, err := net.InterfaceByName(name); err == nil {
				return nil
			}
			g.close()
			delete(u.devs, name)
		}
	}
	g, err := u.start(name, mtu)
	if err != nil {
		return err
	}
	u.devs[name] = g
	return nil
}

func (u *userspace) start(name string, mtu int) (_ *goDevice, retErr error) {
	f, err := tunnel.OpenPersistentTUN(name)
	if err != nil {
		return nil, fmt.Errorf("open TUN %s: %w", name, err)
	}
	td, err := tun.CreateTUNFromFile(f, mtu)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start wireguard-go on %s: %w", name, err)
	}
	log := u.log.With("device", name)
	dev := device.NewDevice(td, conn.NewStdNetBind(), &device.Logger{
		Verbosef: func(format string, args ...any) {
			if log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug("wireguard-go: " + fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) { log.Info("wireguard-go: " + fmt.Sprintf(format, args...)) },
	})
	g := &goDevice{dev: dev, conns: map[net.Conn]struct{}{}}
	defer func() {
		if retErr != nil {
			g.close()
		}
	}()
	if err := dev.Up(); err != nil {
		return nil, fmt.Errorf("bring wireguard-go up on %s: %w", name, err)
	}
	if g.ln, err = u.listen(name); err != nil {
		return nil, err
	}
	g.done.Add(1)
	go func() {
		defer g.done.Done()
		u.serve(g)
	}()
	log.Info("wireguard-go running", "socket", u.socketPath(name), "batch", dev.BatchSize())
	return g, nil
}

func (u *userspace) socketPath(name string) string { return filepath.Join(u.sockDir, name+".sock") }

// listen opens the control socket. A socket another process still answers
// on is an error, not taken over: on one host, several network namespaces
// with a device of the same name share the socket directory.
func (u *userspace) listen(name string) (*net.UnixListener, error) {
	if err := os.MkdirAll(u.sockDir, 0o755); err != nil {
		return nil, fmt.Errorf("create wireguard socket directory: %w", err)
	}
	path := u.socketPath(name)
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.Dial("unix", path); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("wireguard control socket %s is in use by another process (another node on this host, as in a lab?); set --wireguard-socket-dir to a directory of this node's own", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale wireguard control socket: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("wireguard control socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on wireguard control socket: %w", err)
	}
	// Connecting needs write permission; the socket is root's alone, as
	// wireguard-go makes it.
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("chmod wireguard control socket: %w", err)
	}
	return ln, nil
}

// serve answers wg(8) on the control socket until it is closed.
func (u *userspace) serve(g *goDevice) {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		if !g.track(c) {
			return
		}
		g.done.Add(1)
		go func() {
			defer g.done.Done()
			defer g.untrack(c)
			g.dev.IpcHandle(c)
			if u.changed != nil {
				u.changed()
			}
		}()
	}
}

// close stops wireguard-go on the device. A wg(8) still connected to the
// control socket (or one that connected and never wrote) is cut off rather
// than waited for.
func (g *goDevice) close() {
	if g.ln != nil {
		_ = g.ln.Close() // unlinks the socket
	}
	g.mu.Lock()
	for c := range g.conns {
		_ = c.Close()
	}
	g.conns = nil
	g.mu.Unlock()
	g.dev.Close() // closes the TUN queue; the persistent device stays
	g.done.Wait()
}

func (u *userspace) device(name string) (*goDevice, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	g, ok := u.devs[name]
	if !ok {
		return nil, fmt.Errorf("wireguard-go is not running on %s", name)
	}
	return g, nil
}

// Device implements control. A device this process does not run (weft
// status) is read through its control socket.
func (u *userspace) Device(name string) (*wgtypes.Device, error) {
	g, err := u.device(name)
	if err != nil {
		return u.socketDevice(name)
	}
	text, err := g.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return parseDevice(name, text)
}

// socketTimeout bounds a read through the control socket (a stopped weftd
// accepts the connection and never answers).
const socketTimeout = 2 * time.Second

// socketDevice reads the device name through its control socket, as wg
// show does.
func (u *userspace) socketDevice(name string) (*wgtypes.Device, error) {
	path := u.socketPath(name)
	c, err := net.DialTimeout("unix", path, socketTimeout)
	if err != nil {
		return nil, fmt.Errorf("read %s through %s: %w", name, path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(socketTimeout))
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		return nil, fmt.Errorf("read %s through %s: %w", name, path, err)
	}
	var text strings.Builder
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		if sc.Text() == "" {
			return parseDevice(name, text.String())
		}
		text.WriteString(sc.Text() + "\n")
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s through %s: %w", name, path, err)
	}
	return nil, fmt.Errorf("read %s through %s: the reply ended early", name, path)
}

// ConfigureDevice implements control.
func (u *userspace) ConfigureDevice(name string, cfg wgtypes.Config) error {
	g, err := u.device(name)
	if err != nil {
		return err
	}
	if err := g.dev.IpcSet(formatConfig(cfg)); err != nil {
		return fmt.Errorf("configure %s: %w", name, err)
	}
	return nil
}

// The buffers wireguard-go takes from its pools are 64 KiB each, one per
// packet in flight, and the pools are unbounded: a few seconds of load
// leave 150-250 MiB in them. An idle weftd runs a GC only every two minutes,
// so the pools (emptied by the second GC after their last use) held that
// memory for minutes, and Go's background scavenger was not seen to return
// the freed heap (weftd's RSS stayed at 200-250 MiB after 4.5 minutes
// idle). trimMemory checks the heap every trimEvery and, above trimAbove
// (pool contents count as objects), collects and returns what is free to
// the OS: after a burst, RSS is back within two checks of the traffic
// stopping. Under sustained traffic it costs a GC of mostly pointer-free
// buffers every trimEvery.
const (
	trimEvery = 10 * time.Second
	trimAbove = 64 << 20
)

// trimMemory runs until ctx ends.
func trimMemory(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/free:bytes"}}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(sample)
		if heap := sample[0].Value.Uint64() + sample[1].Value.Uint64(); heap > trimAbove {
			debug.FreeOSMemory()
			log.Debug("returned free heap to the OS", "heap-MiB", heap>>20)
		}
	}
}

// Close stops every wireguard-go device; the TUNs stay.
func (u *userspace) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	for name, g := range u.devs {
		g.close()
		delete(u.devs, name)
	}
	return nil
}
