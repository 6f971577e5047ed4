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
	"github.com/weft-net/weft/internal/daemon"
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
hold, reading the store and the kernel itself with weftd's flags and FLANNELD_*
environment (so it works while weftd is down or wedged), and adds what the
local weftd reports on its health server when it answers.

Exit status: 0 in sync, 1 not in sync (each difference is named), 2 cannot
tell (the store unreachable, no configuration).
`

// exitCode is an error that carries weft's exit status.
type exitCode struct {
	code int
	err  error
}

func (e exitCode) Error() string { return e.err.Error() }
func (e exitCode) Unwrap() error { return e.err }

func status(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout io.Writer) error {
	asJSON := slices.Contains(args, "--json")
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "--json" })
	if slices.Contains(args, "--help") || slices.Contains(args, "-h") {
		fmt.Fprint(stdout, statusUsage)
		return nil
	}
	opts, err := config.ParseOptions(args, lookupEnv)
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
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rep, err := daemon.Status(ctx, opts, daemon.StatusDeps{Store: st, Backends: backends,
		CheckRules: node.CheckRules(quiet, &opts), LookupEnv: lookupEnv})
	if err != nil {
		return exitCode{statusUnknown, err}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(stdout, rep)
	}
	if !rep.InSync {
		return exitCode{statusOutOfSync, errors.New("the kernel is not as the store says it should be")}
	}
	return nil
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
