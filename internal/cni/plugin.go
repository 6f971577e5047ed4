package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/weft-net/weft/internal/cni/savedconf"
	"github.com/weft-net/weft/internal/subnetfile"
)

// Plugin implements the CNI commands. It holds no per-call state, so one
// Plugin serves any number of calls.
type Plugin struct {
	log    *slog.Logger
	runner Runner
	stdout io.Writer
}

// New returns a Plugin that runs delegates through runner, writes CNI results
// to stdout and logs to log (never to stdout).
func New(log *slog.Logger, runner Runner, stdout io.Writer) *Plugin {
	return &Plugin{log: log, runner: runner, stdout: stdout}
}

// Funcs adapts the plugin to skel.PluginMainFuncs: every error leaves as CNI
// error JSON with a code (see ToCNIError).
func (p *Plugin) Funcs() skel.CNIFuncs {
	wrap := func(cmd string, f func(context.Context, *skel.CmdArgs) error) func(*skel.CmdArgs) error {
		return func(args *skel.CmdArgs) error {
			if err := f(context.Background(), args); err != nil {
				cerr := ToCNIError(err)
				p.log.Error("command failed", "command", cmd, "container", args.ContainerID, "code", cerr.Code, "err", cerr.Msg)
				return cerr
			}
			return nil
		}
	}
	return skel.CNIFuncs{
		Add:    wrap("ADD", p.Add),
		Del:    wrap("DEL", p.Del),
		Check:  wrap("CHECK", p.Check),
		Status: wrap("STATUS", p.Status),
		GC:     wrap("GC", p.GC),
	}
}

// delegateArgs is the CNI environment a delegate gets: the caller's own.
func delegateArgs(args *skel.CmdArgs) invoke.Args {
	return invoke.Args{
		ContainerID:   args.ContainerID,
		NetNS:         args.Netns,
		PluginArgsStr: args.Args,
		IfName:        args.IfName,
		Path:          args.Path,
	}
}

// loadEnv reads subnet.env, telling a file weftd has not written yet apart
// from one that is there but unusable.
func loadEnv(path string) (subnetfile.Env, error) {
	env, err := subnetfile.Read(path)
	switch {
	case err == nil:
		return env, nil
	case errors.Is(err, fs.ErrNotExist):
		return env, withCode(types.ErrTryAgainLater, fmt.Errorf(
			"subnet file %s does not exist: weftd has not written it yet (is weftd running on this node and has it got a subnet lease?)", path))
	case errors.Is(err, fs.ErrPermission):
		return env, withCode(types.ErrIOFailure, fmt.Errorf("subnet file %s: %w", path, err))
	default:
		return env, withCode(types.ErrInvalidNetworkConfig, fmt.Errorf(
			"subnet file %s was written but is not usable (weftd writes it whole; was it edited by hand?): %w", path, err))
	}
}

// Add builds the delegate configuration, saves it and runs the delegate's
// ADD, printing the delegate's result. When the delegate fails, its DEL is
// run with the same configuration so that no veth or address is left half
// created; the saved file goes when that DEL succeeds.
func (p *Plugin) Add(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	env, err := loadEnv(conf.SubnetFile)
	if err != nil {
		return err
	}
	d := BuildDelegate(conf, env)
	raw, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode delegate configuration: %w", err)
	}
	store := savedconf.Store{Dir: conf.DataDir}
	if err := store.Save(args.ContainerID, args.IfName, raw); err != nil {
		return withCode(types.ErrIOFailure, fmt.Errorf("container %s: %w", args.ContainerID, err))
	}
	res, err := p.runner.Add(ctx, d.Type, raw, delegateArgs(args))
	if err != nil {
		p.rollback(ctx, store, d.Type, raw, args)
		return fmt.Errorf("delegate %s ADD: %w", d.Type, err)
	}
	p.log.Info("added", "container", args.ContainerID, "ifname", args.IfName, "delegate", d.Type)
	if err := res.PrintTo(p.stdout); err != nil {
		return withCode(types.ErrIOFailure, fmt.Errorf("print result: %w", err))
	}
	return nil
}

// rollback undoes a failed delegate ADD.
func (p *Plugin) rollback(ctx context.Context, store savedconf.Store, typ string, raw []byte, args *skel.CmdArgs) {
	if err := p.runner.Run(ctx, "DEL", typ, raw, delegateArgs(args)); err != nil {
		p.log.Warn("undo failed ADD: delegate DEL failed, keeping the saved configuration for the runtime's DEL",
			"container", args.ContainerID, "err", err)
		return
	}
	if err := store.Remove(args.ContainerID); err != nil {
		p.log.Warn("undo failed ADD", "container", args.ContainerID, "err", err)
	}
}

// Del runs the delegate's DEL with the configuration saved at ADD and removes
// the saved file once that succeeded. A missing file is success (the
// container was never added, or already deleted); so is a corrupt one, which
// is removed, as nothing could ever use it.
func (p *Plugin) Del(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := decodeNetConf(args.StdinData)
	if err != nil {
		return err
	}
	store := savedconf.Store{Dir: conf.DataDir}
	sv, err := store.Load(args.ContainerID)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		p.log.Info("nothing to delete: no saved delegate configuration", "container", args.ContainerID, "dataDir", conf.DataDir)
		return nil
	case errors.Is(err, savedconf.ErrCorrupt):
		p.log.Warn("removing corrupt saved delegate configuration; the delegate's DEL cannot run",
			"container", args.ContainerID, "err", err)
		return store.Remove(args.ContainerID)
	case err != nil:
		return withCode(types.ErrIOFailure, fmt.Errorf("container %s: %w", args.ContainerID, err))
	}
	if err := p.runner.Run(ctx, "DEL", sv.Header.Type, sv.Conf, delegateArgs(args)); err != nil {
		return fmt.Errorf("delegate %s DEL: %w", sv.Header.Type, err)
	}
	if err := store.Remove(args.ContainerID); err != nil {
		return withCode(types.ErrIOFailure, fmt.Errorf("container %s: %w", args.ContainerID, err))
	}
	p.log.Info("deleted", "container", args.ContainerID, "ifname", args.IfName, "delegate", sv.Header.Type)
	return nil
}

// Check runs the delegate's CHECK with the saved configuration, given the
// runtime's prevResult (and cniVersion, which prevResult is written in).
func (p *Plugin) Check(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := decodeNetConf(args.StdinData)
	if err != nil {
		return err
	}
	if len(conf.PrevResult) == 0 {
		return withCode(types.ErrInvalidNetworkConfig, errors.New("CHECK needs the runtime's prevResult, and the configuration has none"))
	}
	sv, err := savedconf.Store{Dir: conf.DataDir}.Load(args.ContainerID)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return withCode(types.ErrUnknownContainer, fmt.Errorf(
			"container %s has no saved delegate configuration in %s: it was not added by this plugin, or was deleted", args.ContainerID, conf.DataDir))
	case err != nil:
		return fmt.Errorf("container %s: %w", args.ContainerID, err)
	}
	inject := map[string]json.RawMessage{"prevResult": conf.PrevResult}
	if conf.CNIVersion != "" {
		inject["cniVersion"] = mustJSON(conf.CNIVersion)
	}
	raw, err := injectKeys(sv.Conf, inject)
	if err != nil {
		return err
	}
	if err := p.runner.Run(ctx, "CHECK", sv.Header.Type, raw, delegateArgs(args)); err != nil {
		return fmt.Errorf("delegate %s CHECK: %w", sv.Header.Type, err)
	}
	return nil
}

// injectKeys sets top-level keys of a JSON object, keeping all others.
func injectKeys(conf []byte, kv map[string]json.RawMessage) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(conf, &m); err != nil {
		return nil, fmt.Errorf("decode delegate configuration: %w", err)
	}
	for k, v := range kv {
		m[k] = v
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode delegate configuration: %w", err)
	}
	return out, nil
}

// mustJSON encodes a string, which cannot fail.
func mustJSON(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}
