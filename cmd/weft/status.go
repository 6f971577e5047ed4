//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weft-net/weft/internal/backend/registry"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/control"
	"github.com/weft-net/weft/internal/daemon"
	"github.com/weft-net/weft/internal/netpol"
	"github.com/weft-net/weft/internal/node"
	"github.com/weft-net/weft/internal/store"
	"github.com/weft-net/weft/internal/version"
)

// Exit codes of weft status.
const (
	statusInSync    = 0
	statusOutOfSync = 1
	statusUnknown   = 2
)

const statusUsage = `usage: weft status [--json] [weftd's flags]

Compares what the node's kernel holds with what the lease store says it should
hold, reading the store and the kernel itself (so it works while weftd is down
or wedged), and adds what the local weftd reports on its health server when it
answers.

It judges the node by the options of the weftd running in this network
namespace, which it asks on weftd's control socket (root only): weftd's command
line and FLANNELD_* environment. Flags given here win over weftd's. When no
weftd answers, it uses its own flags and environment, as weftd would.

With --network-policy it also shows NetworkPolicy: weft's nftables table
(inet weft-netpol) in this namespace and the Node's WeftNetworkPolicy
condition, which weftd sets False with the reason when it cannot enforce.

Exit status: 0 in sync, 1 not in sync (each difference is named) or
NetworkPolicy not fully enforced, 2 cannot tell (the store unreachable, no
configuration).
`

// storeTimeout bounds the whole status: an unreachable store is reported
// within it, with the endpoint tried and the flag that sets it.
const storeTimeout = 5 * time.Second

// exitCode is an error that carries weft's exit status.
type exitCode struct {
	code int
	err  error
}

func (e exitCode) Error() string { return e.err.Error() }
func (e exitCode) Unwrap() error { return e.err }

// statusReport is the report with where its options came from.
type statusReport struct {
	daemon.Report
	OptionsFrom string `json:"optionsFrom"`
	// NetworkPolicy is there with --network-policy.
	NetworkPolicy *netpol.Summary `json:"networkPolicy,omitempty"`
}

func status(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout io.Writer) error {
	asJSON := slices.Contains(args, "--json")
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "--json" })
	if slices.Contains(args, "--help") || slices.Contains(args, "-h") {
		fmt.Fprint(stdout, statusUsage)
		return nil
	}
	opts, from, err := statusOptions(ctx, args, lookupEnv)
	if err != nil {
		return exitCode{statusUnknown, err}
	}
	quiet := slog.New(slog.DiscardHandler)
	backends := registry.Default()
	st, err := node.NewStore(quiet, &opts, backends, "weft-status/"+version.String())
	if err != nil {
		return exitCode{statusUnknown, fmt.Errorf("lease store: %w", err)}
	}
	if c, ok := st.(store.Closer); ok {
		defer c.Close()
	}
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	rep, err := daemon.Status(sctx, opts, daemon.StatusDeps{Store: st, Backends: backends,
		CheckRules: node.CheckRules(quiet, &opts)})
	if err != nil {
		if sctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%s did not answer within %v (options from %s): %w", storeWhere(opts), storeTimeout, from, err)
		}
		return exitCode{statusUnknown, err}
	}
	var np *netpol.Summary
	if opts.NetworkPolicy {
		if np, err = networkPolicy(sctx, opts); err != nil {
			return exitCode{statusUnknown, err}
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(statusReport{rep, from, np}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "options  %s\n", from)
		printReport(stdout, rep)
		if np != nil {
			fmt.Fprintf(stdout, "policy   %s\n", np)
		}
	}
	if !rep.InSync {
		return exitCode{statusOutOfSync, errors.New("the kernel is not as the store says it should be")}
	}
	if np != nil && !np.Enforced() {
		return exitCode{statusOutOfSync, errors.New("NetworkPolicy is not fully enforced on this node")}
	}
	return nil
}

// statusOptions are weftd's options as the local weftd has them (its
// command line and environment, from its control socket), with args over
// them; without a weftd, args and this command's environment alone. from
// says which.
func statusOptions(ctx context.Context, args []string, lookupEnv func(string) (string, bool)) (config.Options, string, error) {
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, askErr := control.Ask(actx, control.Name)
	if askErr != nil {
		opts, err := config.ParseOptions(args, lookupEnv, registry.Default().Settings())
		from := "this command's flags and environment (" + askErr.Error() + ")"
		return opts, from, err
	}
	all, err := config.Overlay(info.Args, args, registry.Default().Settings())
	if err != nil {
		return config.Options{}, "", err
	}
	lookup := func(k string) (string, bool) {
		if v, ok := info.Env[k]; ok {
			return v, true
		}
		return lookupEnv(k)
	}
	opts, err := config.ParseOptions(all, lookup, registry.Default().Settings())
	from := fmt.Sprintf("weftd (pid %d, %s): its command line and environment", info.PID, info.Version)
	if len(args) > 0 {
		from += ", with " + strings.Join(args, " ") + " from this command line"
	}
	if err != nil {
		return opts, from, fmt.Errorf("options from %s: %w", from, err)
	}
	return opts, from, nil
}

// storeWhere names the lease store the options point at and the flag that
// sets it, for the message that says it did not answer.
func storeWhere(o config.Options) string {
	switch {
	case !o.KubeSubnetMgr:
		return fmt.Sprintf("etcd at %s (--etcd-endpoints or %s)", strings.Join(o.EtcdEndpoints, ","),
			config.EnvName("etcd-endpoints"))
	case o.KubeAPIURL != "":
		return fmt.Sprintf("the API server at %s (--kube-api-url)", o.KubeAPIURL)
	case o.KubeConfigFile != "":
		return fmt.Sprintf("the API server of %s (--kubeconfig-file)", o.KubeConfigFile)
	}
	return "the in-cluster API server (KUBERNETES_SERVICE_HOST; --kube-api-url or --kubeconfig-file name another)"
}

func printReport(w io.Writer, r daemon.Report) {
	n := r.Node
	if n.Lease != "" {
		exp := "never"
		if n.Expires != nil {
			exp = n.Expires.Format(time.RFC3339)
		}
		subnets := strings.TrimSpace(n.Subnet + " " + n.IPv6Subnet)
		renewed := ""
		if n.Renewed != nil {
			renewed = ", renewed " + n.Renewed.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "lease    %s (%s), public IP %s%s, expires %s\n", n.Lease, subnets, n.PublicIP, renewed, exp)
	} else {
		fmt.Fprintln(w, "lease    none")
	}
	fmt.Fprintf(w, "backend  %s on %s, devices %s; rules: %s\n", n.Backend, n.Interface, strings.Join(n.Devices, ", "), n.Rules)
	switch d := r.Daemon; {
	case !d.Answered:
		fmt.Fprintln(w, "weftd    not answering on its health server (or --healthz-port is off)")
	case d.Ready:
		fmt.Fprintf(w, "weftd    ready: %.0f peers programmed, %.0f repairs, %.0f write errors\n", d.Peers, d.Repairs, d.Errors)
	default:
		fmt.Fprintf(w, "weftd    %s\n", d.Reason)
	}
	fmt.Fprintf(w, "peers    %d\n", len(r.Peers))
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  LEASE\tNODE\tPUBLIC IP\tRENEWED\tEXPIRES\tIGNORED")
	for _, p := range r.Peers {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", p.Lease, dash(p.Node), p.PublicIP, when(p.Renewed), when(p.Expires), dash(p.Ignored))
	}
	_ = tw.Flush()
	if r.InSync {
		fmt.Fprintln(w, "kernel   in sync with the store")
		return
	}
	fmt.Fprintf(w, "kernel   NOT in sync: %d difference(s)\n", len(r.Problems))
	for _, p := range r.Problems {
		fmt.Fprintln(w, "  "+p)
	}
}

func when(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// lookupEnv is os.LookupEnv (weftd's FLANNELD_* variables).
func lookupEnv(k string) (string, bool) { return os.LookupEnv(k) }
