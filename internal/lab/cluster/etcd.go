//go:build linux

package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/weft-net/weft/internal/lab"
)

// errNotManaged is returned by the etcd fault methods of a cluster whose
// etcd it neither embeds nor runs as member processes (Options.EtcdCommand,
// or a cluster it attached to).
var errNotManaged = errors.New("the lab's etcd is not run by this process")

// etcdMember is one etcd-server process of Options.EtcdBinary, in the switch
// namespace.
type etcdMember struct {
	name, dir    string
	client, peer string // URLs
	cmd          *exec.Cmd
	done         chan struct{} // closed when cmd exited
}

// startEtcdMembers runs Options.EtcdMembers processes of Options.EtcdBinary
// on the switch's address (member i: client port 2379+20i, peer port
// 2380+20i), each with its data directory under dir.
func (c *Cluster) startEtcdMembers(ctx context.Context, dir string, addr netip.Addr) error {
	n := max(c.o.EtcdMembers, 1)
	var initial []string
	for i := range n {
		url := func(port int) string { return "http://" + net.JoinHostPort(addr.String(), strconv.Itoa(port)) }
		m := &etcdMember{name: fmt.Sprintf("m%d", i), dir: filepath.Join(dir, fmt.Sprintf("m%d", i)),
			client: url(EtcdPort + 20*i), peer: url(EtcdPort + 1 + 20*i)}
		c.etcdProcs = append(c.etcdProcs, m)
		c.members = append(c.members, m.client)
		initial = append(initial, m.name+"="+m.peer)
	}
	c.endpoint = c.members[0]
	for i := range c.etcdProcs {
		if err := c.runEtcdMember(i, strings.Join(initial, ",")); err != nil {
			return err
		}
	}
	for i := range c.etcdProcs {
		if err := c.waitEtcdMember(ctx, i); err != nil {
			return err
		}
	}
	return c.Put(ctx, Prefix+"/config", c.o.NetConfJSON())
}

// runEtcdMember starts member i's process, its output appended to
// etcd-m<i>.log in the cluster's directory.
func (c *Cluster) runEtcdMember(i int, initial string) error {
	m := c.etcdProcs[i]
	logf, err := os.OpenFile(filepath.Join(c.o.Dir, "etcd-"+m.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open etcd log: %w", err)
	}
	cmd := exec.Command(c.o.EtcdBinary, "--name="+m.name, "--data-dir="+m.dir,
		"--listen-client-urls="+m.client, "--advertise-client-urls="+m.client,
		"--listen-peer-urls="+m.peer, "--initial-advertise-peer-urls="+m.peer,
		"--initial-cluster="+initial, "--initial-cluster-token=weft-lab", "--log-level=error", "--logger=zap")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := lab.StartIn(c.swNS, cmd); err != nil {
		logf.Close()
		return fmt.Errorf("start etcd member %s: %w", m.name, err)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(m.done)
	}()
	return nil
}

// waitEtcdMember waits until member i accepts connections.
func (c *Cluster) waitEtcdMember(ctx context.Context, i int) error {
	m := c.etcdProcs[i]
	return c.waitListening(ctx, strings.TrimPrefix(m.client, "http://"), m.done, filepath.Join(c.o.Dir, "etcd-"+m.name+".log"))
}

// stopEtcdMembers kills every member process still running.
func (c *Cluster) stopEtcdMembers() {
	for _, m := range c.etcdProcs {
		if m.cmd != nil {
			_ = m.cmd.Process.Kill()
			<-m.done
			m.cmd = nil
		}
	}
}

// StopEtcd stops etcd member (0-based; 0 for a single member), as a crash
// would (an etcd-server member is killed with SIGKILL); with wipe its data
// directory is deleted too (a lost disk), so StartEtcd brings a single
// member up empty: revisions start again from 1 and it holds no network
// configuration until someone writes it.
func (c *Cluster) StopEtcd(member int, wipe bool) error {
	switch {
	case c.etcd != nil:
		if err := c.etcd.Stop(member); err != nil {
			return fmt.Errorf("stop etcd: %w", err)
		}
		if wipe {
			if err := c.etcd.Wipe(member); err != nil {
				return fmt.Errorf("stop etcd: %w", err)
			}
		}
		return nil
	case member < len(c.etcdProcs) && c.etcdProcs[member].cmd != nil:
		m := c.etcdProcs[member]
		_ = m.cmd.Process.Kill()
		<-m.done
		m.cmd = nil
		if wipe {
			if err := os.RemoveAll(m.dir); err != nil {
				return fmt.Errorf("stop etcd: %w", err)
			}
		}
		return nil
	}
	return fmt.Errorf("stop etcd member %d: %w", member, errNotManaged)
}

// StartEtcd starts the member StopEtcd stopped, on the same address, and
// waits until it serves (an embedded member) or listens (a process).
func (c *Cluster) StartEtcd(member int) error {
	switch {
	case c.etcd != nil:
		if err := c.etcd.Restart(member); err != nil {
			return fmt.Errorf("start etcd: %w", err)
		}
		return nil
	case member < len(c.etcdProcs) && c.etcdProcs[member].cmd == nil:
		var initial []string
		for _, m := range c.etcdProcs {
			initial = append(initial, m.name+"="+m.peer)
		}
		if err := c.runEtcdMember(member, strings.Join(initial, ",")); err != nil {
			return err
		}
		return c.waitEtcdMember(context.Background(), member)
	}
	return fmt.Errorf("start etcd member %d: %w", member, errNotManaged)
}
