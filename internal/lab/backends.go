//go:build linux

package lab

import (
	"maps"
	"slices"

	"github.com/weft-net/weft/internal/backend/ipip"
	"github.com/weft-net/weft/internal/backend/udp"
	"github.com/weft-net/weft/internal/backend/vxlan"
	"github.com/weft-net/weft/internal/backend/wireguard"
)

// Backend is what the lab and its bench know of a backend type beyond the
// product's registry. A type the lab does not list needs nothing of it.
type Backend struct {
	// Devices are the names of the devices the type may make in a node
	// (with the default VNI), which the bench removes between runs.
	Devices []string
	// BenchVariants are option sets `weft lab bench` measures beside the
	// defaults, each as the JSON members added to net-conf.json's Backend
	// section (`"DirectRouting":true`).
	BenchVariants []string
	// Node is what a lab node needs of the type because the lab's nodes
	// share one host's file system, where a real node would use host-wide
	// paths; nil for none.
	Node *NodeFiles
}

// NodeFiles places a backend type's files in a lab node's directory.
type NodeFiles struct {
	// Args are weftd flags for the node whose files are in nodeDir.
	Args func(nodeDir string) []string
	// Env is weftd's environment there (the flannel variables that have no
	// flag).
	Env func(nodeDir string) []string
	// Exec wraps a command run in the node (weft lab exec) so that it finds
	// the node's files where the tools look; it returns argv unchanged when
	// the node has none.
	Exec func(nodeDir string, argv []string) []string
}

// Backends lists what the lab knows of each backend type, by type name.
func Backends() map[string]Backend {
	directRouting := []string{`"DirectRouting":true`}
	return map[string]Backend{
		vxlan.Name: {Devices: []string{"flannel.1", "flannel-v6.1"}, BenchVariants: directRouting},
		ipip.Name:  {Devices: []string{ipip.DeviceName}, BenchVariants: directRouting},
		udp.Name:   {Devices: []string{udp.DeviceName}},
		wireguard.Name: {Devices: []string{wireguard.DeviceName, wireguard.DeviceNameV6},
			Node: &NodeFiles{Args: wireGuardArgs, Env: wireGuardEnv, Exec: WireGuardExec}},
	}
}

// byName is Backends in the order of their names.
func byName() []Backend {
	bs := Backends()
	out := make([]Backend, 0, len(bs))
	for _, name := range slices.Sorted(maps.Keys(bs)) {
		out = append(out, bs[name])
	}
	return out
}

// BackendDevices lists every type's devices.
func BackendDevices() []string {
	var out []string
	for _, b := range byName() {
		out = append(out, b.Devices...)
	}
	return out
}

// NodeArgs are the weftd flags every backend type needs for the lab node
// whose files are in nodeDir.
func NodeArgs(nodeDir string) []string {
	return nodeFiles(nodeDir, func(f *NodeFiles) func(string) []string { return f.Args })
}

// NodeEnv is the environment every backend type needs for weftd in the lab
// node whose files are in nodeDir.
func NodeEnv(nodeDir string) []string {
	return nodeFiles(nodeDir, func(f *NodeFiles) func(string) []string { return f.Env })
}

// nodeFiles joins what field gives of every type's NodeFiles for nodeDir.
func nodeFiles(nodeDir string, field func(*NodeFiles) func(string) []string) []string {
	var out []string
	for _, b := range byName() {
		if b.Node != nil && field(b.Node) != nil {
			out = append(out, field(b.Node)(nodeDir)...)
		}
	}
	return out
}

// NodeExec wraps argv for the lab node whose files are in nodeDir with
// every type's NodeFiles.Exec.
func NodeExec(nodeDir string, argv []string) []string {
	for _, b := range byName() {
		if b.Node != nil && b.Node.Exec != nil {
			argv = b.Node.Exec(nodeDir, argv)
		}
	}
	return argv
}
