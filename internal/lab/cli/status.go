//go:build linux

package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/lab/kubelet"
	"github.com/weft-net/weft/internal/lab/labetcd"
)

func status(ctx context.Context, args []string, env Env) error {
	var c common
	fs := newFlags("status", env)
	c.add(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if kubelet.IsLab(c.name, c.dir()) {
		return statusKubelet(ctx, env, c)
	}
	l, err := lab.Load(env.Logger, c.dir(), c.name)
	if err != nil {
		return fmt.Errorf("lab %s: %w (is it up?)", c.name, err)
	}
	cl := cluster.Attach(l, cluster.Options{Dir: c.dir(), Logger: env.Logger})
	if err := printNodes(ctx, env, cl); err != nil {
		return err
	}
	w := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nNODE\tWEFTD /readyz\tKERNEL (weft status)\tLOG")
	var details []string
	for i := range l.Nodes() {
		ready, err := cl.Ready(ctx, i+1)
		state := "200 ready"
		switch {
		case err != nil:
			state = "unreachable: " + err.Error()
		case !ready:
			state = "503 not ready"
		}
		kernel, detail := kernelState(ctx, cl, i+1, filepath.Join(env.BinDir, "weft"))
		if detail != "" {
			details = append(details, fmt.Sprintf("n%d: %s", i+1, detail))
		}
		fmt.Fprintf(w, "n%d\t%s\t%s\t%s\n", i+1, state, kernel, cl.LogFile(i+1))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, d := range details {
		fmt.Fprintln(env.Stdout, d)
	}
	return nil
}

// kernelState runs weft status on node: a word for the table, and the
// differences (or why it cannot tell) for below it.
func kernelState(ctx context.Context, cl *cluster.Cluster, node int, weft string) (string, string) {
	code, out, err := cl.Status(ctx, node, weft)
	switch {
	case err != nil:
		return "?", err.Error()
	case code == 0:
		return "in sync", ""
	case code == 1:
		_, diff, _ := strings.Cut(out, "NOT in sync: ")
		return "NOT in sync", strings.TrimSpace(diff)
	}
	return "cannot tell", strings.TrimSpace(out)
}

// printNodes prints the node table: public IP, subnet, backend, VTEP MAC,
// pods and their addresses.
func printNodes(ctx context.Context, env Env, c *cluster.Cluster) error {
	w := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	subnetCol := "SUBNET"
	if c.IsKube() {
		subnetCol = "PODCIDR"
	}
	fmt.Fprintln(w, "\nNODE\tPUBLIC IP\t"+subnetCol+"\tBACKEND\tVTEP MAC\tPODS")
	topo := c.Lab().Topology()
	for i, n := range c.Lab().Nodes() {
		node := i + 1
		subnet, mtu := "-", ""
		if e, err := c.SubnetEnv(node); err == nil {
			subnet, mtu = e.Subnet.Masked().String(), fmt.Sprintf(" (mtu %d)", e.MTU)
			if e.IPv6Subnet.IsValid() {
				subnet += "," + e.IPv6Subnet.Masked().String()
			}
		}
		if c.IsKube() {
			subnet = podCIDRs(ctx, c, node, subnet)
		}
		var pods []string
		for _, p := range topo.Pods {
			if p.Node == node {
				pods = append(pods, fmt.Sprintf("%s=%s", strings.TrimPrefix(p.NS, topo.Name+"-"), podAddrs(ctx, p.NS)))
			}
		}
		fmt.Fprintf(w, "n%d\t%s\t%s%s\t%s\t%s\t%s\n", node, n.Addrs()[0], subnet, mtu, backendOf(ctx, c, node), vtepMAC(ctx, n.NS),
			strings.Join(pods, " "))
	}
	return w.Flush()
}

// podCIDRs is the subnet column of a kube-mode node: its Node's podCIDRs,
// which weftd's subnet.env (have) must match; a mismatch shows both.
func podCIDRs(ctx context.Context, c *cluster.Cluster, node int, have string) string {
	cidrs, err := c.PodCIDRs(ctx, node)
	if err != nil || len(cidrs) == 0 {
		return "no podCIDR"
	}
	s := make([]string, len(cidrs))
	for i, p := range cidrs {
		s[i] = p.String()
	}
	if got := strings.Join(s, ","); got != have && have != "-" {
		return got + " (subnet.env: " + have + ")"
	}
	return strings.Join(s, ",")
}

func podAddrs(ctx context.Context, ns string) string {
	out, err := lab.Exec(ctx, ns, "ip", "-br", "addr", "show", "dev", "eth0")
	f := strings.Fields(out)
	if err != nil || len(f) < 3 {
		return "-"
	}
	var addrs []string
	for _, a := range f[2:] {
		if p, err := netip.ParsePrefix(a); err == nil && !p.Addr().IsLinkLocalUnicast() {
			addrs = append(addrs, p.Addr().String())
		}
	}
	return strings.Join(addrs, ",")
}

func vtepMAC(ctx context.Context, ns string) string {
	out, err := lab.Exec(ctx, ns, "ip", "-br", "link", "show", "flannel.1")
	if f := strings.Fields(out); err == nil && len(f) >= 3 {
		return f[2]
	}
	return "-"
}

// backendOf is the BackendType the node's weftd published in its lease
// ("vxlan+direct" when a vxlan node routes some peers without
// encapsulation), or "-" when the lease cannot be read.
func backendOf(ctx context.Context, c *cluster.Cluster, node int) string {
	l, err := c.Lease(ctx, node)
	if err != nil || l.Attrs.BackendType == "" {
		return "-"
	}
	if l.Attrs.BackendType == "vxlan" {
		out, _ := lab.Exec(ctx, c.NodeNS(node), "ip", "route", "show", "proto", "87")
		if strings.Contains(out, "dev eth0") {
			return "vxlan+direct"
		}
	}
	return l.Attrs.BackendType
}

// printPings prints the pod-to-pod ping matrix and fails if any pod cannot
// reach another.
func printPings(ctx context.Context, env Env, c *cluster.Cluster) error {
	pings := c.PingMatrix(ctx)
	pods := c.Pods()
	name := func(p cluster.Pod) string { return fmt.Sprintf("n%d-p%d", p.Node, p.Index) }
	w := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(w, "\nping (ms)\t")
	for _, p := range pods {
		fmt.Fprintf(w, "%s\t", name(p))
	}
	fmt.Fprintln(w)
	failed := 0
	for _, from := range pods {
		fmt.Fprintf(w, "%s\t", name(from))
		for _, to := range pods {
			fmt.Fprintf(w, "%s\t", cell(pings, from, to, &failed))
		}
		fmt.Fprintln(w)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d pod-to-pod pings failed", failed, len(pings))
	}
	fmt.Fprintf(env.Stdout, "\nall %d pod-to-pod pings answered\n", len(pings))
	return nil
}

func cell(pings []cluster.Ping, from, to cluster.Pod, failed *int) string {
	if from.NS == to.NS {
		return "-"
	}
	for _, p := range pings {
		if p.From.NS == from.NS && p.To.NS == to.NS {
			if p.Err != nil {
				*failed++
				return "FAIL"
			}
			return fmt.Sprintf("%.3f", float64(p.RTT.Microseconds())/1000)
		}
	}
	return "?"
}

func execIn(ctx context.Context, args []string, env Env) error {
	var c common
	fs := newFlags("exec", env)
	c.add(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) < 3 || rest[1] != "--" {
		return fmt.Errorf("usage: weft lab exec [--name N] <n1|n1-p1|sw|rt|out> -- <command>")
	}
	if kubelet.IsLab(c.name, c.dir()) {
		if ok, err := execKubelet(ctx, env, c, rest[0], rest[2:]); ok {
			return err
		}
	}
	ns := lab.NSName(c.name, rest[0])
	if _, err := os.Stat(lab.NSPath(ns)); err != nil {
		return fmt.Errorf("no namespace %s in lab %s", ns, c.name)
	}
	// In a node, the backends' tools find that node's files (wg(8) its
	// userspace WireGuard devices).
	argv := lab.NodeExec(filepath.Join(c.dir(), rest[0]), rest[2:])
	cmd := lab.Command(ctx, ns, argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, env.Stdout, env.Stderr
	// weft, weftd and the CNI plugins of this lab come first in PATH:
	// `weft lab exec n1 -- weft status` asks the node's own weftd.
	cmd.Env = withPath(os.Environ(), env.BinDir)
	return exitOf(rest[2], cmd.Run())
}

// withPath returns environ with dir put first in its PATH.
func withPath(environ []string, dir string) []string {
	out := slices.DeleteFunc(slices.Clone(environ), func(kv string) bool { return strings.HasPrefix(kv, "PATH=") })
	path := dir
	if old := os.Getenv("PATH"); old != "" {
		path += string(os.PathListSeparator) + old
	}
	return append(out, "PATH="+path)
}

func list(ctx context.Context, args []string, env Env) error {
	labs, err := lab.List()
	if err != nil {
		return err
	}
	printLabs(env.Stdout, labs)
	return nil
}

// printLabs prints one lab a line, or says that there is none.
func printLabs(w io.Writer, labs []string) {
	if len(labs) == 0 {
		fmt.Fprintln(w, "no lab exists (weft lab up makes one)")
		return
	}
	for _, l := range labs {
		fmt.Fprintln(w, l)
	}
}

// serveEtcd is `weft lab etcd --dir D --host H`, run by `up` inside the
// switch namespace: embedded etcd until SIGTERM or SIGKILL (lab down).
func serveEtcd(ctx context.Context, args []string, env Env) error {
	fs := newFlags("etcd", env)
	dir := fs.String("dir", "", "data directory")
	host := fs.String("host", "", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	e, err := labetcd.Start(labetcd.Options{Dir: *dir, Host: *host, Logger: env.Logger, ReadyTimeout: time.Minute})
	if err != nil {
		return err
	}
	defer e.Close()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	return nil
}
