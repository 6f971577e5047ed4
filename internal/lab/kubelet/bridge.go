//go:build linux

package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// installBridge gives every node a conflist of the bridge plugin alone,
// host-local over the node's podCIDR (Options.BridgeOnly): what a node
// runs without weft, for the benchmark's baseline.
func (l *Lab) installBridge(ctx context.Context) error {
	infos, err := l.nodeInfos(ctx)
	if err != nil {
		return err
	}
	for _, n := range l.nodes {
		ni := infos[n.name]
		if ni == nil || len(ni.podCIDRs) == 0 {
			return fmt.Errorf("node %s has no podCIDR yet", n.name)
		}
		var ranges [][]map[string]string
		for _, c := range ni.podCIDRs {
			ranges = append(ranges, []map[string]string{{"subnet": c}})
		}
		conf := map[string]any{
			"cniVersion": "1.0.0",
			"name":       "bridge-only",
			"plugins": []any{
				map[string]any{"type": "bridge", "bridge": "cni0", "isGateway": true, "hairpinMode": true,
					"ipam": map[string]any{"type": "host-local", "ranges": ranges}},
				map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
			},
		}
		b, err := json.MarshalIndent(conf, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(n.path("cni-conf"), "10-bridge.conflist"), b, 0o644); err != nil {
			return fmt.Errorf("node %s: write the bridge conflist: %w", n.name, err)
		}
	}
	return nil
}
