// Package charttest loads weft's chart (the files package chart embeds) into
// Helm's chart type and renders it as `helm template` does. Only tests import
// it: it links Helm's Go module, which no product binary may.
package charttest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"

	"github.com/weft-net/weft/deploy/chart"
)

// Load returns the embedded chart as Helm loads a chart directory.
func Load() (*chartv2.Chart, error) {
	files, err := chart.Files()
	if err != nil {
		return nil, err
	}
	var bufs []*archive.BufferedFile
	for _, name := range slices.Sorted(maps.Keys(files)) {
		bufs = append(bufs, &archive.BufferedFile{Name: name, ModTime: time.Unix(0, 0), Data: files[name]})
	}
	ch, err := loader.LoadFiles(bufs)
	if err != nil {
		return nil, fmt.Errorf("load the chart: %w", err)
	}
	return ch, nil
}

// Values parses a values file (what `helm install -f FILE` reads).
func Values(text string) (map[string]any, error) {
	v, err := common.ReadValues([]byte(text))
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	return v, nil
}

// Rendered is what `helm template` prints: the objects, and the notes
// `helm install` shows.
type Rendered struct {
	Manifest string
	Notes    string
}

// Render renders the chart with values (nil: the chart's defaults) for a
// release named release in namespace, without a cluster: Helm's install
// action with a client-side dry run, as `helm template` runs it.
func Render(ctx context.Context, values map[string]any, releaseName, namespace string) (*Rendered, error) {
	ch, err := Load()
	if err != nil {
		return nil, err
	}
	return RenderChart(ctx, ch, values, releaseName, namespace)
}

// RenderChart is Render of another chart (flannel's, to compare).
func RenderChart(ctx context.Context, ch *chartv2.Chart, values map[string]any, releaseName, namespace string) (*Rendered, error) {
	inst := action.NewInstall(action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler)))
	inst.DryRunStrategy = action.DryRunClient
	inst.Replace = true // no release store to check the name against
	inst.ReleaseName = releaseName
	inst.Namespace = namespace
	if values == nil {
		values = map[string]any{}
	}
	r, err := inst.RunWithContext(ctx, ch, values)
	if err != nil {
		return nil, fmt.Errorf("render the chart: %w", err)
	}
	rel, ok := r.(*release.Release)
	if !ok {
		return nil, errors.New("render the chart: Helm returned no v1 release")
	}
	return &Rendered{Manifest: rel.Manifest, Notes: rel.Info.Notes}, nil
}
