package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/weft-net/weft/internal/cni/savedconf"
)

// defaultGCIfName is the interface name GC gives the delegate's DEL for a
// saved file without an interface-name record (written by flannel's plugin,
// which does not record it): the name every Kubernetes runtime uses.
const defaultGCIfName = "eth0"

// Status reports whether the plugin can serve ADD: it fails with
// ErrPluginNotAvailable (50) while subnet.env is missing or unusable, naming
// the file and saying which, and otherwise asks the delegate.
func (p *Plugin) Status(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return err
	}
	env, err := loadEnv(conf.SubnetFile)
	if err != nil {
		return withCode(types.ErrPluginNotAvailable, err)
	}
	d := BuildDelegate(conf, env)
	raw, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode delegate configuration: %w", err)
	}
	if err := p.runner.Run(ctx, "STATUS", d.Type, raw, invoke.Args{Path: args.Path, PluginArgsStr: args.Args}); err != nil {
		return fmt.Errorf("delegate %s STATUS: %w", d.Type, err)
	}
	return nil
}

// GC removes the saved configurations of attachments that are not in the
// runtime's cni.dev/valid-attachments, running the delegate's DEL for each
// first (so host-local releases the address) and keeping the file when that
// fails. A file with a recorded interface name is stale unless that exact
// (container, ifname) pair is valid; one without (written by flannel) is
// stale unless its container has some valid attachment. Then GC is passed to
// the delegate, with the same valid attachments, when subnet.env is there to
// build its configuration from.
func (p *Plugin) GC(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := decodeNetConf(args.StdinData)
	if err != nil {
		return err
	}
	store := savedconf.Store{Dir: conf.DataDir}
	ids, orphans, err := store.List()
	if err != nil {
		return withCode(types.ErrIOFailure, err)
	}
	var errs []error
	for _, id := range ids {
		if err := p.gcOne(ctx, store, id, conf.ValidAttachments, args); err != nil {
			errs = append(errs, err)
		}
	}
	for _, id := range orphans {
		if !slices.ContainsFunc(conf.ValidAttachments, func(a types.GCAttachment) bool { return a.ContainerID == id }) {
			errs = append(errs, store.Remove(id))
		}
	}
	errs = append(errs, p.gcDelegate(ctx, conf, args))
	return errors.Join(errs...)
}

// gcOne deletes one saved attachment if it is stale.
func (p *Plugin) gcOne(ctx context.Context, store savedconf.Store, id string, valid []types.GCAttachment, args *skel.CmdArgs) error {
	sv, err := store.Load(id)
	if errors.Is(err, savedconf.ErrCorrupt) {
		sv.Header = savedconf.Header{} // still decide on staleness below
	} else if err != nil {
		return fmt.Errorf("gc container %s: %w", id, err)
	}
	if slices.ContainsFunc(valid, func(a types.GCAttachment) bool {
		return a.ContainerID == id && (sv.IfName == "" || a.IfName == sv.IfName)
	}) {
		return nil
	}
	if sv.Header.Type == "" {
		p.log.Warn("gc: removing corrupt saved delegate configuration", "container", id, "err", err)
		return store.Remove(id)
	}
	ifName := sv.IfName
	if ifName == "" {
		ifName = defaultGCIfName
	}
	dargs := invoke.Args{ContainerID: id, IfName: ifName, Path: args.Path}
	if err := p.runner.Run(ctx, "DEL", sv.Header.Type, sv.Conf, dargs); err != nil {
		return fmt.Errorf("gc container %s: delegate %s DEL: %w", id, sv.Header.Type, err)
	}
	p.log.Info("gc: deleted stale attachment", "container", id, "ifname", ifName, "delegate", sv.Header.Type)
	return store.Remove(id)
}

// gcDelegate passes GC on to the delegate, built as for ADD from subnet.env.
func (p *Plugin) gcDelegate(ctx context.Context, conf *NetConf, args *skel.CmdArgs) error {
	env, err := loadEnv(conf.SubnetFile)
	if err != nil {
		p.log.Info("gc: not passing GC to the delegate", "err", err)
		return nil
	}
	d := BuildDelegate(conf, env)
	raw, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode delegate configuration: %w", err)
	}
	valid, err := json.Marshal(conf.ValidAttachments)
	if err != nil {
		return fmt.Errorf("encode valid attachments: %w", err)
	}
	if raw, err = injectKeys(raw, map[string]json.RawMessage{"cni.dev/valid-attachments": valid}); err != nil {
		return err
	}
	err = p.runner.Run(ctx, "GC", d.Type, raw, invoke.Args{Path: args.Path, PluginArgsStr: args.Args})
	if te, ok := errors.AsType[*types.Error](err); ok &&
		(te.Code == types.ErrIncompatibleCNIVersion || te.Code == types.ErrInvalidEnvironmentVariables) {
		p.log.Info("gc: the delegate does not support GC", "delegate", d.Type, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("delegate %s GC: %w", d.Type, err)
	}
	return nil
}
