//go:build linux

package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weft-net/weft/internal/lab"
	sup "github.com/weft-net/weft/internal/proc"
)

// proc is a running weftd.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it exited
	err  error
}

// WeftdArgs returns the command line of node's weftd.
func (c *Cluster) WeftdArgs(node int) []string {
	args := []string{filepath.Join(c.o.BinDir, "weftd")}
	if c.kube != nil {
		args = append(args, "--kube-subnet-mgr", "--kubeconfig-file", c.weftdKubeconfig(node),
			"--net-config-path", c.kube.st.NetConfPath)
	} else {
		args = append(args, "--etcd-endpoints", strings.Join(c.Endpoints(), ","))
	}
	args = append(args, "--iface", lab.NodeIface,
		"--subnet-file", c.SubnetFile(node), "--healthz-port", strconv.Itoa(HealthPort), "--healthz-ip", "0.0.0.0")
	// What the backend types need of a node whose files share the host's
	// file system (lab.Backends: wireguard's control sockets).
	args = append(args, lab.NodeArgs(c.NodeDir(node))...)
	return append(args, c.o.WeftdArgs...)
}

// WeftdEnv returns the environment of node's weftd: this process's, the
// backend types' for a lab node, Options.WeftdEnv, and NODE_NAME in kube
// mode.
func (c *Cluster) WeftdEnv(node int) []string {
	// wireguard's key file (lab.Backends).
	env := append(os.Environ(), lab.NodeEnv(c.NodeDir(node))...)
	env = append(env, c.o.WeftdEnv...)
	if c.kube != nil {
		env = append(env, "NODE_NAME="+NodeName(node))
	}
	return env
}

// SetKubeconfig makes node's weftd, from its next start, authenticate with
// the kubeconfig at path instead of the manifest's ServiceAccount ("" goes
// back to it).
func (c *Cluster) SetKubeconfig(node int, path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kubeconfigs == nil {
		c.kubeconfigs = map[int]string{}
	}
	c.kubeconfigs[node] = path
}

func (c *Cluster) weftdKubeconfig(node int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.kubeconfigs[node]; p != "" {
		return p
	}
	return c.kube.st.WeftdKubeconfig
}

// StartWeftd starts node's weftd in its namespace, appending to its log.
func (c *Cluster) StartWeftd(node int) error {
	args, env := c.WeftdArgs(node), c.WeftdEnv(node) // before mu: WeftdArgs takes it
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.procs[node]; ok && !exited(p) {
		return fmt.Errorf("weftd on node %d is already running", node)
	}
	if err := os.MkdirAll(c.NodeDir(node), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", c.NodeDir(node), err)
	}
	logf, err := os.OpenFile(c.LogFile(node), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open weftd log: %w", err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: !c.o.Detach, Setsid: c.o.Detach}
	if err := lab.StartIn(c.NodeNS(node), cmd); err != nil {
		logf.Close()
		return fmt.Errorf("start weftd on node %d: %w", node, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	c.procs[node] = p
	c.log.Info("started weftd", "node", node, "pid", cmd.Process.Pid, "log", c.LogFile(node))
	return nil
}

func exited(p *proc) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// KillWeftd stops node's weftd: SIGKILL when hard, else SIGTERM; it waits
// until the process is gone.
func (c *Cluster) KillWeftd(node int, hard bool) error {
	c.mu.Lock()
	p, ok := c.procs[node]
	c.mu.Unlock()
	if !ok || exited(p) {
		return fmt.Errorf("node %d: %w", node, ErrNotRunning)
	}
	sig := syscall.SIGTERM
	if hard {
		sig = syscall.SIGKILL
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal weftd on node %d: %w", node, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		return fmt.Errorf("weftd on node %d did not stop after %v", node, sig)
	}
}

// Pid returns node's weftd process id, 0 when it is not running.
func (c *Cluster) Pid(node int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.procs[node]; ok && !exited(p) {
		return p.cmd.Process.Pid
	}
	return 0
}

// Ready asks node's /readyz.
func (c *Cluster) Ready(ctx context.Context, node int) (bool, error) {
	ready, _, err := c.Readyz(ctx, node)
	return ready, err
}

// Readyz asks node's /readyz and returns whether it answered 200 and the
// body (the reason when not ready).
func (c *Cluster) Readyz(ctx context.Context, node int) (bool, string, error) {
	status, body, err := c.Get(ctx, node, "/readyz")
	return status == http.StatusOK, string(body), err
}

// Get asks node's health server (/readyz, /metrics) for path and returns the
// status and up to 4 MiB of the body.
func (c *Cluster) Get(ctx context.Context, node int, path string) (int, []byte, error) {
	h, err := c.lab.Node(node)
	if err != nil {
		return 0, nil, err
	}
	url := "http://" + net.JoinHostPort(h.Addrs()[0].String(), strconv.Itoa(HealthPort)) + path
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return lab.DialContext(ctx, h.NS, network, addr)
	}}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, body, err
}

// WaitReady waits until node's weftd answers /readyz with 200, failing early
// (with the log's path) when the process exits.
func (c *Cluster) WaitReady(ctx context.Context, node int) error {
	limit := c.o.ReadyTimeout
	if limit <= 0 {
		limit = 30 * time.Second
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		p := c.procs[node]
		c.mu.Unlock()
		if p != nil && exited(p) {
			return fmt.Errorf("weftd on node %d exited (%v)\n%s", node, p.err, sup.ErrorTail(c.LogFile(node), 8))
		}
		if ok, _ := c.Ready(ctx, node); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("weftd on node %d not ready after %v; see %s", node, limit, c.LogFile(node))
}

// Status runs `weft status` (the binary weft) in node's namespace with its
// weftd's flags and environment (extra goes first, e.g. "--json"), and
// returns its exit code (0 in sync, 1 not, 2 cannot tell) and its output.
func (c *Cluster) Status(ctx context.Context, node int, weft string, extra ...string) (int, string, error) {
	flags, env := c.WeftdArgs(node)[1:], c.WeftdEnv(node)
	if pid := c.weftdPid(node); pid > 0 { // the running weftd's own flags and environment
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			if argv := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00"); len(argv) > 0 {
				flags = argv[1:]
			}
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err == nil {
			env = strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		}
	}
	cmd := lab.Command(ctx, c.NodeNS(node), append(append([]string{weft, "status"}, extra...), flags...)...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() == 2 { // cannot tell: the reason is on stderr
			out = append(out, stderr.String()...)
		}
		return ee.ExitCode(), string(out), nil
	}
	if err != nil {
		return -1, string(out), fmt.Errorf("run weft status on node %d: %w", node, err)
	}
	return 0, string(out), nil
}

// weftdPid is node's weftd: the one this process started, or the weftd
// process in the node's namespace (a lab another process brought up).
func (c *Cluster) weftdPid(node int) int {
	if pid := c.Pid(node); pid > 0 {
		return pid
	}
	pids, _ := lab.Processes(c.NodeNS(node))
	for _, pid := range pids {
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "weftd" {
			return pid
		}
	}
	return 0
}
