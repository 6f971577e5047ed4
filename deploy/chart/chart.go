// Package chart holds weft's Helm chart (weft/: Chart.yaml, values.yaml,
// templates/), which takes the values of flannel's chart (flannel/flannel
// v0.28.9) and renders flannel's objects running weftd. Its Go code is Files,
// the chart's files embedded, so that tests render and install the very
// files the repository ships, from any directory.
//
// The package imports no Helm code, and no product binary imports it:
// Helm is a test dependency (charttest loads these files into Helm's chart
// type). The tests: chart_test.go renders the chart with Helm's Go module
// for flannel's documented values sets and compares the objects with
// deploy/kube-weft.yml (plain); kubeapi_test.go applies them with a
// server-side dry run to a real kube-apiserver; internal/lab/kubelet's
// helm_test.go installs the chart with Helm's install action on the
// real-node lab, where pods on different nodes ping each other.
package chart

import (
	"embed"
	"fmt"
	"io/fs"
)

// Dir is the chart's directory, beside this file, and its name.
const Dir = "weft"

// files are the chart's files; all: keeps any file whose name starts with
// "_" or "." (templates/_helpers.tpl).
//
//go:embed all:weft
var files embed.FS

// Files returns the chart's files by their path inside the chart's
// directory (Chart.yaml, values.yaml, templates/daemonset.yaml, ...).
func Files() (map[string][]byte, error) {
	root, err := fs.Sub(files, Dir)
	if err != nil {
		return nil, fmt.Errorf("chart files: %w", err)
	}
	out := map[string][]byte{}
	err = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		out[p] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("chart files: %w", err)
	}
	return out, nil
}
