//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weft-net/weft/internal/cni"
	"github.com/weft-net/weft/internal/lab"
)

// The CNI figures: weft's plugin on n1 against bridge called directly on n2.
const (
	cniWeftNode   = 1
	cniBridgeNode = 2
	// cniFirstPod is the first pod index the CNI bench uses (the data
	// plane's pods have small ones).
	cniFirstPod = 100
)

// flannelConf is the plugin configuration a kube-flannel conflist gives the
// plugin on node (the lab's, with its files).
func (b *bench) flannelConf(node int) ([]byte, error) {
	d := b.c.NodeDir(node)
	return json.Marshal(map[string]any{
		"cniVersion": "1.1.0", "name": "cbr0", "type": "flannel",
		"subnetFile": b.c.SubnetFile(node), "dataDir": filepath.Join(d, "cni", "flannel"),
		"ipam":     map[string]any{"dataDir": filepath.Join(d, "cni", "ipam")},
		"delegate": map[string]any{"hairpinMode": true, "isDefaultGateway": true},
	})
}

// bridgeConf is the delegate configuration weft would hand bridge on node.
func (b *bench) bridgeConf(node int) ([]byte, error) {
	raw, err := b.flannelConf(node)
	if err != nil {
		return nil, err
	}
	nc, err := cni.ParseNetConf(raw)
	if err != nil {
		return nil, fmt.Errorf("parse flannel conf: %w", err)
	}
	env, err := b.c.SubnetEnv(node)
	if err != nil {
		return nil, fmt.Errorf("subnet.env of node %d: %w", node, err)
	}
	return json.Marshal(cni.BuildDelegate(nc, env))
}

// cniRunner execs plugins from BinDir/cni as libcni does, their logs going
// to a file.
type cniRunner struct {
	bin  string
	exec invoke.Exec
}

// run runs plugin's cmd for pod from node's namespace and times it.
func (r cniRunner) run(ctx context.Context, nodeNS, plugin, cmd string, pod lab.Pod, conf []byte) (time.Duration, error) {
	var d time.Duration
	err := lab.Do(nodeNS, func() error {
		args := &invoke.Args{Command: cmd, ContainerID: fmt.Sprintf("bench-%d", pod.Index), NetNS: pod.Path, IfName: "eth0", Path: r.bin}
		path := filepath.Join(r.bin, plugin)
		start := time.Now()
		var err error
		if cmd == "ADD" {
			_, err = invoke.ExecPluginWithResult(ctx, path, conf, args, r.exec)
		} else {
			err = invoke.ExecPluginWithoutResult(ctx, path, conf, args, r.exec)
		}
		d = time.Since(start)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s %s of pod %d: %w", plugin, cmd, pod.Index, err)
	}
	return d, nil
}

// cniSide is one node of the CNI figures and the plugin called there.
type cniSide struct {
	node   int
	plugin string
	conf   []byte
	pods   []lab.Pod
}

// podNamespaces creates n empty pod namespaces on node.
func (b *bench) podNamespaces(ctx context.Context, node, n int) ([]lab.Pod, error) {
	pods := make([]lab.Pod, 0, n)
	for i := range n {
		p, err := b.c.Lab().AddPodNS(ctx, node, cniFirstPod+i)
		if err != nil {
			return nil, err
		}
		pods = append(pods, p)
	}
	return pods, nil
}

// cni adds CNIPods pods on each node, then deletes them, weft and bridge
// alternating pod by pod so that both see the same machine load.
func (b *bench) cni(ctx context.Context) (CNI, error) {
	n := b.o.CNIPods
	b.prog.Step(time.Duration(n)*200*time.Millisecond, "cni: ADD and DEL of %d pods, weft's plugin on n%d and bridge directly on n%d", n, cniWeftNode, cniBridgeNode)
	logf, err := os.OpenFile(filepath.Join(b.o.Dir, "cni-bench.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return CNI{}, fmt.Errorf("open cni log: %w", err)
	}
	defer logf.Close()
	r := cniRunner{bin: filepath.Join(b.o.BinDir, "cni"),
		exec: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: logf}, PluginDecoder: version.PluginDecoder{}}}
	weftConf, err := b.flannelConf(cniWeftNode)
	if err != nil {
		return CNI{}, err
	}
	bridgeConf, err := b.bridgeConf(cniBridgeNode)
	if err != nil {
		return CNI{}, err
	}
	sides := []*cniSide{{node: cniWeftNode, plugin: "flannel", conf: weftConf}, {node: cniBridgeNode, plugin: "bridge", conf: bridgeConf}}
	for _, s := range sides {
		if s.pods, err = b.podNamespaces(ctx, s.node, n); err != nil {
			return CNI{}, err
		}
	}
	lat := map[string][]time.Duration{}
	for _, cmd := range []string{"ADD", "DEL"} {
		for i := range n {
			for _, s := range sides {
				d, err := r.run(ctx, b.c.NodeNS(s.node), s.plugin, cmd, s.pods[i], s.conf)
				if err != nil {
					return CNI{}, err
				}
				lat[s.plugin+cmd] = append(lat[s.plugin+cmd], d)
			}
		}
	}
	for _, s := range sides {
		for _, p := range s.pods {
			if err := b.c.Lab().DeletePod(s.node, p.Index); err != nil {
				return CNI{}, err
			}
		}
	}
	fig := func(name, cmd string, p int) Figure {
		return NewFigure(name, "ms", "lower", baseCNI, Percentile(ms(lat["flannel"+cmd]), p), Percentile(ms(lat["bridge"+cmd]), p))
	}
	return CNI{Pods: n, AddP50: fig("ADD p50", "ADD", 50), AddP99: fig("ADD p99", "ADD", 99),
		DelP50: fig("DEL p50", "DEL", 50), DelP99: fig("DEL p99", "DEL", 99)}, nil
}
