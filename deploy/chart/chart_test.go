//go:build linux

package chart_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/action"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/weft-net/weft/deploy"
	"github.com/weft-net/weft/deploy/chart"
	"github.com/weft-net/weft/deploy/chart/charttest"
	"github.com/weft-net/weft/internal/version"
)

// The release the plain tests render: flannel's namespace, as flannel's
// chart is installed (`helm install flannel --namespace kube-flannel ...`).
const (
	releaseName = "weft"
	namespace   = "kube-flannel"
)

// objects are Kubernetes objects as generic JSON, by "Kind namespace/name".
type objects map[string]map[string]any

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// parseObjects splits a multi-document YAML stream and decodes each object
// twice: strictly into its API type (an unknown or misspelt field fails the
// test: kubectl and Helm would drop it without a word) and as generic JSON,
// which the comparisons use.
func parseObjects(t *testing.T, what, text string) objects {
	t.Helper()
	out := objects{}
	for i, doc := range docSeparator.Split(text, -1) {
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("%s: document %d: %v", what, i, err)
		}
		if string(js) == "null" {
			continue
		}
		var o map[string]any
		if err := json.Unmarshal(js, &o); err != nil {
			t.Fatalf("%s: document %d: %v", what, i, err)
		}
		kind, _ := o["kind"].(string)
		meta, _ := o["metadata"].(map[string]any)
		key := fmt.Sprintf("%s %v/%v", kind, meta["namespace"], meta["name"])
		if meta["namespace"] == nil {
			key = fmt.Sprintf("%s /%v", kind, meta["name"])
		}
		var typed any
		switch kind {
		case "Namespace":
			typed = &corev1.Namespace{}
		case "ServiceAccount":
			typed = &corev1.ServiceAccount{}
		case "ConfigMap":
			typed = &corev1.ConfigMap{}
		case "ClusterRole":
			typed = &rbacv1.ClusterRole{}
		case "ClusterRoleBinding":
			typed = &rbacv1.ClusterRoleBinding{}
		case "DaemonSet":
			typed = &appsv1.DaemonSet{}
		default:
			t.Fatalf("%s: %s: a kind neither flannel's chart nor kube-weft.yml has", what, key)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), typed); err != nil {
			t.Errorf("%s: %s does not decode strictly as its API type: %v", what, key, err)
		}
		if _, dup := out[key]; dup {
			t.Fatalf("%s: %s twice", what, key)
		}
		out[key] = o
	}
	return out
}

// render renders the chart with a values file for a release in namespace.
func render(t *testing.T, values string) (objects, *charttest.Rendered) {
	t.Helper()
	r, err := renderErr(t, values)
	if err != nil {
		t.Fatal(err)
	}
	return parseObjects(t, "the chart", r.Manifest), r
}

func renderErr(t *testing.T, values string) (*charttest.Rendered, error) {
	t.Helper()
	v, err := charttest.Values(values)
	if err != nil {
		t.Fatal(err)
	}
	return charttest.Render(t.Context(), v, releaseName, namespace)
}

// manifest returns kube-weft.yml's objects.
func manifest(t *testing.T) objects { return parseObjects(t, "kube-weft.yml", deploy.Manifest) }

// Keys of the objects both have.
const (
	keyNamespace = "Namespace /kube-flannel"
	keyConfigMap = "ConfigMap kube-flannel/kube-flannel-cfg"
	keyDaemonSet = "DaemonSet kube-flannel/kube-flannel-ds"
)

// m returns o[path...] as an object, failing t when it is not one.
func m(t *testing.T, o map[string]any, path ...string) map[string]any {
	t.Helper()
	cur := o
	for i, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			t.Fatalf("%s is not an object", strings.Join(path[:i+1], "."))
		}
		cur = next
	}
	return cur
}

// podSpec returns the DaemonSet's pod spec.
func podSpec(t *testing.T, objs objects) map[string]any {
	t.Helper()
	ds, ok := objs[keyDaemonSet]
	if !ok {
		t.Fatalf("no %s", keyDaemonSet)
	}
	return m(t, ds, "spec", "template", "spec")
}

// container returns the pod's container or init container called name.
func container(t *testing.T, pod map[string]any, name string) map[string]any {
	t.Helper()
	for _, list := range []string{"initContainers", "containers"} {
		cs, _ := pod[list].([]any)
		for _, c := range cs {
			if c, ok := c.(map[string]any); ok && c["name"] == name {
				return c
			}
		}
	}
	t.Fatalf("the pod has no container %q", name)
	return nil
}

// list turns strings into the generic JSON of a YAML list.
func list(ss ...string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// yamlValue is the generic JSON of a YAML snippet (for expected values).
func yamlValue(t *testing.T, text string) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(text), &v); err != nil {
		t.Fatalf("%q: %v", text, err)
	}
	return v
}

// difference is one way the chart's defaults differ from kube-weft.yml, and
// why; apply turns kube-weft.yml's objects into the chart's.
type difference struct {
	what, why string
	apply     func(t *testing.T, objs objects)
}

// chartDefaults are every difference between the chart rendered with its
// default values and kube-weft.yml. Each follows from a difference between
// flannel's chart and flannel's release manifest, which weft's chart and
// manifest each copy: a user of either gets from weft what they had from
// flannel.
func chartDefaults() []difference {
	return []difference{
		{"no Namespace object", "the chart installs into the release's namespace, made before the install " +
			"(kubectl create namespace, or helm install --create-namespace): Helm keeps the release's record in it, so " +
			"the release cannot own it, and flannel's chart has no Namespace either",
			func(t *testing.T, objs objects) { delete(objs, keyNamespace) }},
		{"selector app: flannel alone", "flannel's chart's DaemonSet selector (the release manifest adds k8s-app); " +
			"a DaemonSet's selector cannot change, so `helm upgrade` of a release of flannel's chart needs this one",
			func(t *testing.T, objs objects) {
				m(t, objs[keyDaemonSet], "spec", "selector")["matchLabels"] = map[string]any{"app": "flannel"}
			}},
		{"tolerations NoExecute and NoSchedule", "flannel's chart's default flannel.tolerations (the manifest " +
			"tolerates NoSchedule only)",
			func(t *testing.T, objs objects) {
				podSpec(t, objs)["tolerations"] = yamlValue(t, "[{effect: NoExecute, operator: Exists}, {effect: NoSchedule, operator: Exists}]")
			}},
		{"health server on port 8081 with probes", "flannel's chart's default flannel.healthz.port 8081 (the " +
			"manifest, like kube-flannel.yml, has no probes): --healthz-port=8081, the port, /healthz liveness and " +
			"/readyz readiness",
			func(t *testing.T, objs objects) { addHealthz(t, container(t, podSpec(t, objs), "kube-flannel"), 8081) }},
		{"install-cni runs /opt/bin/install-conf", "flannel's chart copies the conflist with install-conf " +
			"(atomically, through a rename), which weft's image has too; the release manifest uses cp -f",
			func(t *testing.T, objs objects) {
				c := container(t, podSpec(t, objs), "install-cni")
				c["command"] = list("/opt/bin/install-conf")
				c["args"] = list("/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist")
			}},
	}
}

// addHealthz adds what flannel.healthz.port gives weftd's container.
func addHealthz(t *testing.T, c map[string]any, port int) {
	t.Helper()
	c["args"] = append(c["args"].([]any), fmt.Sprintf("--healthz-port=%d", port))
	c["ports"] = yamlValue(t, fmt.Sprintf("[{name: healthz, containerPort: %d, protocol: TCP}]", port))
	c["livenessProbe"] = yamlValue(t, "{httpGet: {path: /healthz, port: healthz}, initialDelaySeconds: 10, periodSeconds: 30}")
	c["readinessProbe"] = yamlValue(t, "{httpGet: {path: /readyz, port: healthz}, initialDelaySeconds: 5, periodSeconds: 10}")
}

// expectedDefaults is kube-weft.yml with chartDefaults applied.
func expectedDefaults(t *testing.T) objects {
	t.Helper()
	objs := manifest(t)
	for _, d := range chartDefaults() {
		d.apply(t, objs)
	}
	return objs
}

// compare fails t with a diff unless got and want are the same objects, field
// by field; net-conf.json is compared as JSON (its text's layout aside).
func compare(t *testing.T, got, want objects) {
	t.Helper()
	norm := func(objs objects) objects {
		out := objects{}
		for k, o := range objs {
			js, _ := json.Marshal(o)
			var c map[string]any
			_ = json.Unmarshal(js, &c) // a deep copy
			if data, ok := c["data"].(map[string]any); ok {
				if s, ok := data["net-conf.json"].(string); ok {
					var v any
					if err := json.Unmarshal([]byte(s), &v); err != nil {
						t.Errorf("%s: net-conf.json is not JSON: %v\n%s", k, err, s)
					}
					data["net-conf.json"] = v
				}
			}
			out[k] = c
		}
		return out
	}
	if d := cmp.Diff(norm(want), norm(got)); d != "" {
		t.Errorf("rendered objects differ from the expected (-want +got):\n%s", d)
	}
}

// TestDefaultsAreTheManifest: the chart with its default values renders
// kube-weft.yml's objects field by field, except the differences named in
// chartDefaults, each of which is checked to be a real difference (so that
// the list cannot hold a stale entry).
func TestDefaultsAreTheManifest(t *testing.T) {
	got, _ := render(t, "")
	compare(t, got, expectedDefaults(t))

	want := manifest(t)
	for _, d := range chartDefaults() {
		before := fmt.Sprint(want)
		d.apply(t, want)
		if fmt.Sprint(want) == before {
			t.Errorf("difference %q changes nothing in kube-weft.yml: remove it", d.what)
		}
	}
	// The ConfigMap's files are the manifest's to the byte, not only as JSON.
	gotData, wantData := m(t, got[keyConfigMap], "data"), m(t, manifest(t)[keyConfigMap], "data")
	for _, f := range []string{"cni-conf.json", "net-conf.json"} {
		if gotData[f] != wantData[f] {
			t.Errorf("%s:\n%s\nkube-weft.yml's:\n%s", f, gotData[f], wantData[f])
		}
	}
}

// TestChartIsThisRelease: the chart's version and appVersion are weft's
// release, and its default image is this release's, as kube-weft.yml's.
func TestChartIsThisRelease(t *testing.T) {
	files, err := chart.Files()
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Name       string `json:"name"`
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(files["Chart.yaml"], &meta); err != nil {
		t.Fatal(err)
	}
	if meta.APIVersion != "v2" || meta.Name != "weft" || meta.Version != version.Release || meta.AppVersion != version.Release {
		t.Errorf("Chart.yaml: %+v, want apiVersion v2, name weft, version and appVersion %s", meta, version.Release)
	}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	want := []string{"Chart.yaml", "templates/NOTES.txt", "templates/_helpers.tpl", "templates/config.yaml",
		"templates/daemonset.yaml", "templates/rbac.yaml", "templates/serviceaccount.yaml", "values.yaml"}
	if !slices.Equal(names, want) {
		t.Errorf("embedded files %q, want %q", names, want)
	}
	got, _ := render(t, "")
	pod := podSpec(t, got)
	for _, c := range []string{"install-cni-plugin", "install-cni", "kube-flannel"} {
		if img := container(t, pod, c)["image"]; img != "ghcr.io/weft-net/weft:"+version.Release {
			t.Errorf("%s: image %v, want ghcr.io/weft-net/weft:%s", c, img, version.Release)
		}
	}
	if keys := slices.Sorted(maps.Keys(got)); len(keys) != 5 {
		t.Errorf("objects %q, want 5", keys)
	}
}

// TestHelmLint: `helm lint --strict` of the chart's files (Helm's lint
// action): no warning and no error; information (such as the chart's
// missing icon) is logged.
func TestHelmLint(t *testing.T) {
	files, err := chart.Files()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), chart.Dir)
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lint := action.NewLint()
	lint.Strict, lint.Namespace = true, namespace
	res := lint.Run([]string{dir}, map[string]any{})
	for _, m := range res.Messages {
		t.Logf("helm lint: %v", m)
	}
	if res.TotalChartsLinted != 1 || len(res.Errors) > 0 || action.HasWarningsOrErrors(res) {
		t.Errorf("helm lint --strict: %d charts linted, errors %v", res.TotalChartsLinted, res.Errors)
	}
}

// TestWithoutWeftSection: values with no `weft:` section render as the
// defaults. `helm upgrade --reuse-values` of a release of flannel's chart
// renders weft's templates with flannel's chart's default values, which
// have none (internal/lab/kubelet's TestHelmUpgradeFromFlannelChart does
// that upgrade on a real API server).
func TestWithoutWeftSection(t *testing.T) {
	ch, err := charttest.Load()
	if err != nil {
		t.Fatal(err)
	}
	delete(ch.Values, "weft")
	r, err := charttest.RenderChart(t.Context(), ch, nil, releaseName, namespace)
	if err != nil {
		t.Fatal(err)
	}
	compare(t, parseObjects(t, "the chart without weft:", r.Manifest), expectedDefaults(t))
}
