//go:build linux

// Package control is weftd's local control socket, which lets `weft status`
// judge the node by the options the running weftd has instead of asking the
// operator to repeat them.
//
// weftd listens on the abstract unix socket "@weftd" of the network
// namespace it runs in: there is one per namespace (a node of the lab, the
// host, the hostNetwork pod of the DaemonSet all have their own), it needs
// no file and disappears with the process. Each connection gets one JSON
// Info and is closed. Only a peer running as root (SO_PEERCRED uid 0) gets
// it: weftd's command line may hold the etcd password, which root could read
// from /proc anyway; others get an Info whose Error says so.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Name is the abstract socket's name (Go spells the leading NUL "@").
const Name = "@weftd"

// Info is what weftd answers.
type Info struct {
	Version string            `json:"version"`
	PID     int               `json:"pid"`
	Args    []string          `json:"args"` // weftd's command line, without the program name
	Env     map[string]string `json:"env"`  // the variables weftd read (EnvOf)
	Error   string            `json:"error,omitempty"`
}

// EnvOf returns the variables of names that lookupEnv has, set and not
// empty (weftd: config.EnvNames and the in-cluster API server's address).
func EnvOf(names []string, lookupEnv func(string) (string, bool)) map[string]string {
	env := map[string]string{}
	for _, k := range names {
		if v, ok := lookupEnv(k); ok && v != "" {
			env[k] = v
		}
	}
	return env
}

// Serve answers on the abstract socket name (weftd: Name) until ctx ends,
// and returns when every connection it accepted is closed. It fails at once
// when the socket cannot be made (another weftd in this namespace holds it).
func Serve(ctx context.Context, log *slog.Logger, name string, info Info) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", name)
	if err != nil {
		return fmt.Errorf("listen on the control socket %s: %w", name, err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept on the control socket: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			answer(conn.(*net.UnixConn), log, info)
		}()
	}
}

func answer(conn *net.UnixConn, log *slog.Logger, info Info) {
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if uid, err := peerUID(conn); err != nil || uid != 0 {
		log.Debug("control socket: refused a peer that is not root", "uid", uid, "err", err)
		info = Info{Version: info.Version, PID: info.PID, Error: "weftd answers root only"}
	}
	if err := json.NewEncoder(conn).Encode(info); err != nil {
		log.Debug("control socket: answer", "err", err)
	}
}

func peerUID(conn *net.UnixConn) (int, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return -1, fmt.Errorf("peer credentials: %w", credErr)
	}
	return int(cred.Uid), nil
}

// ErrNoDaemon means nothing listens on the socket in this network namespace.
var ErrNoDaemon = errors.New("no weftd answers on its control socket in this network namespace")

// Ask asks the weftd listening on the abstract socket name (Name) of this
// network namespace for its Info.
func Ask(ctx context.Context, name string) (Info, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", name)
	if err != nil {
		if errors.Is(err, unix.ECONNREFUSED) {
			return Info{}, fmt.Errorf("%w (%s)", ErrNoDaemon, name)
		}
		return Info{}, fmt.Errorf("dial the control socket %s: %w", name, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	var info Info
	if err := json.NewDecoder(io.LimitReader(conn, 1<<20)).Decode(&info); err != nil {
		return Info{}, fmt.Errorf("weftd on %s took the connection but did not answer (stopped or wedged?): %w", name, err)
	}
	if info.Error != "" {
		return info, fmt.Errorf("weftd (pid %d) on %s: %s", info.PID, name, info.Error)
	}
	return info, nil
}
