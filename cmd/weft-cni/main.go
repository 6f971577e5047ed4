// Command weft-cni is weft's CNI plugin, installed as bin/cni/flannel (so that
// a flannel conflist's "type": "flannel" finds it) and bin/cni/weft. The logic
// lives in internal/cni; this only wires it to the CNI skeleton. Logs go to
// stderr: stdout carries the CNI result.
package main

import (
	"log/slog"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"github.com/weft-net/weft/internal/cni"
	"github.com/weft-net/weft/internal/version"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "weft-cni")
	p := cni.New(log, cni.NewExecRunner(), os.Stdout)
	skel.PluginMainFuncs(p.Funcs(), cniversion.All, "weft CNI plugin (flannel-compatible) "+version.String())
}
