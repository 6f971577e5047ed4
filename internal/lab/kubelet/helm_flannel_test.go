//go:build linux

package kubelet

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/action"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/kube"
	release "helm.sh/helm/v4/pkg/release/v1"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/weft-net/weft/deploy/chart/charttest"
	"github.com/weft-net/weft/internal/kubeapi"
	"github.com/weft-net/weft/internal/kubeapi/kubeapitest"
	"github.com/weft-net/weft/internal/version"
)

// flannelModule is the module hack/flannel-image.sh builds flanneld from;
// its chart/kube-flannel is flannel's Helm chart of the same release.
const flannelModule = "github.com/flannel-io/flannel@v0.28.9"

// chartObjects are a rendered chart's objects as generic JSON, by "Kind
// namespace/name".
type chartObjects map[string]map[string]any

func parseChartObjects(t *testing.T, what, text string) chartObjects {
	t.Helper()
	out := chartObjects{}
	for _, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(text, -1) {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if o == nil {
			continue
		}
		meta, _ := o["metadata"].(map[string]any)
		out[fmt.Sprintf("%v %v/%v", o["kind"], meta["namespace"], meta["name"])] = o
	}
	return out
}

// flannelChartDifference is one way weft's chart's objects differ from
// flannel's chart's for the same values, and why; apply turns flannel's
// objects into weft's (given weft's, for the image references only).
type flannelChartDifference struct {
	what, why string
	apply     func(t *testing.T, fl, weft chartObjects)
}

// flannelChartDifferences are every difference between the two charts'
// objects rendered with the same values of flannel's chart.
func flannelChartDifferences() []flannelChartDifference {
	pod := func(t *testing.T, o chartObjects) map[string]any {
		t.Helper()
		ds := o["DaemonSet "+WeftNamespace+"/kube-flannel-ds"]
		if ds == nil {
			t.Fatal("no DaemonSet kube-flannel-ds")
		}
		return ds["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	}
	containers := func(p map[string]any) []map[string]any {
		var out []map[string]any
		for _, list := range []string{"initContainers", "containers"} {
			cs, _ := p[list].([]any)
			for _, c := range cs {
				out = append(out, c.(map[string]any))
			}
		}
		return out
	}
	return []flannelChartDifference{
		{"the images", "weft's image in every container, from flannel.image and the CNI plugin's image values when " +
			"they name a mirror, else weft.image (deploy/chart's tests check which)",
			func(t *testing.T, fl, weft chartObjects) {
				w := containers(pod(t, weft))
				for i, c := range containers(pod(t, fl)) {
					if i < len(w) {
						c["image"] = w[i]["image"]
					}
				}
			}},
		{"weftd's command", "/usr/local/bin/weftd with flannel.args as args, where flannel's chart runs " +
			"/opt/bin/flanneld with them in its command",
			func(t *testing.T, fl, _ chartObjects) {
				for _, c := range containers(pod(t, fl)) {
					if c["name"] == "kube-flannel" {
						cmd := c["command"].([]any)
						c["command"], c["args"] = []any{"/usr/local/bin/weftd"}, cmd[1:]
					}
				}
			}},
		{"NODE_NAME", "weftd's node from the downward API, as in kube-weft.yml (flannel reads it too): no pod lookup",
			func(t *testing.T, fl, _ chartObjects) {
				for _, c := range containers(pod(t, fl)) {
					if c["name"] == "kube-flannel" {
						nodeName := map[string]any{"name": "NODE_NAME", "valueFrom": map[string]any{
							"fieldRef": map[string]any{"fieldPath": "spec.nodeName"}}}
						c["env"] = append([]any{nodeName}, c["env"].([]any)...)
					}
				}
			}},
		{"the label k8s-app: flannel", "on every object, as in flannel's release manifest and kube-weft.yml (not in " +
			"the DaemonSet's selector, which stays flannel's chart's)",
			func(t *testing.T, fl, _ chartObjects) {
				for _, o := range fl {
					meta := o["metadata"].(map[string]any)
					labels, _ := meta["labels"].(map[string]any)
					if labels == nil {
						labels = map[string]any{}
						meta["labels"] = labels
					}
					labels["k8s-app"] = "flannel"
				}
				tmpl := fl["DaemonSet "+WeftNamespace+"/kube-flannel-ds"]["spec"].(map[string]any)["template"].(map[string]any)
				tmpl["metadata"].(map[string]any)["labels"].(map[string]any)["k8s-app"] = "flannel"
			}},
		{"the ClusterRole's rules", "the release manifest's, what weftd uses (pods get; nodes get, list, watch; " +
			"nodes/status patch); flannel's chart also grants list and watch on pods and get, list, watch on namespaces",
			func(t *testing.T, fl, weft chartObjects) {
				fl["ClusterRole <nil>/flannel"]["rules"] = weft["ClusterRole <nil>/flannel"]["rules"]
			}},
		{"net-conf.json", "compared as JSON: weft writes EnableNFTables when false too, and quotes tunnelMode " +
			"(flannel's chart writes \"Mode\": separate, which is not JSON and which flanneld cannot read)",
			func(t *testing.T, fl, _ chartObjects) {
				for _, o := range []chartObjects{fl} {
					data := o["ConfigMap "+WeftNamespace+"/kube-flannel-cfg"]["data"].(map[string]any)
					text := regexp.MustCompile(`("Mode": )([A-Za-z0-9]+)`).ReplaceAllString(data["net-conf.json"].(string), `$1"$2"`)
					var nc map[string]any
					if err := json.Unmarshal([]byte(text), &nc); err != nil {
						t.Fatalf("flannel's net-conf.json: %v\n%s", err, text)
					}
					if _, ok := nc["EnableNFTables"]; !ok {
						nc["EnableNFTables"] = false
					}
					data["net-conf.json"] = nc
				}
			}},
	}
}

// TestChartMatchesFlannelChart renders weft's chart and flannel v0.28.9's own
// (chart/kube-flannel of the module hack/flannel-image.sh builds flanneld
// from) with the defaults and each of charttest.FlannelValues, and compares
// every object of the two field by field: the same objects, names, labels,
// selector, ConfigMap files, volumes, probes, resources, tolerations; only
// the differences of flannelChartDifferences, each of which is checked to
// change something.
func TestChartMatchesFlannelChart(t *testing.T) {
	if os.Getenv(EnvKubelet) != "1" {
		t.Skipf("set %s=1: it needs flannel's module (hack/flannel-image.sh, root)", EnvKubelet)
	}
	repo, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	compareWithFlannelChart(t, flannelChart(t, repo))
}

// flannelChartDir is flannel's chart in its module, and the chart loaded.
type flannelChartDir struct {
	dir   string
	chart *chartv2.Chart
}

// flannelChart returns flannel v0.28.9's chart: chart/kube-flannel of the
// module hack/flannel-image.sh (FindFlannel) downloads and builds from.
func flannelChart(t *testing.T, repo string) flannelChartDir {
	t.Helper()
	if _, err := FindFlannel(t.Context(), repo); err != nil {
		t.Fatalf("flannel's module: %v", err)
	}
	goBin := cmp.Or(os.Getenv("GO"), "go")
	out, err := exec.CommandContext(t.Context(), goBin, "mod", "download", "-json", flannelModule).Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", flannelModule, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s: %v: %s", flannelModule, err, out)
	}
	dir := filepath.Join(mod.Dir, "chart", "kube-flannel")
	ch, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flannel's chart %s %s from %s", ch.Metadata.Name, ch.Metadata.Version, dir)
	return flannelChartDir{dir, ch}
}

// compareWithFlannelChart is TestChartMatchesFlannelChart's comparison.
func compareWithFlannelChart(t *testing.T, fc flannelChartDir) {
	fch := fc.chart
	sets := append([]charttest.ValuesSet{{Name: "defaults"}}, charttest.FlannelValues()...)
	for i, s := range sets {
		t.Run(s.Name, func(t *testing.T) {
			values, err := charttest.Values(s.Values)
			if err != nil {
				t.Fatal(err)
			}
			w, err := charttest.Render(t.Context(), values, helmRelease, WeftNamespace)
			if err != nil {
				t.Fatalf("weft's chart: %v", err)
			}
			values, _ = charttest.Values(s.Values) // Helm may change the map it is given
			f, err := charttest.RenderChart(t.Context(), fch, values, helmRelease, WeftNamespace)
			if err != nil {
				t.Fatalf("flannel's chart: %v", err)
			}
			weft := parseChartObjects(t, "weft's chart", w.Manifest)
			fl := parseChartObjects(t, "flannel's chart", f.Manifest)
			for _, d := range flannelChartDifferences() {
				before := fmt.Sprint(fl)
				d.apply(t, fl, weft)
				if i == 0 && fmt.Sprint(fl) == before {
					t.Errorf("difference %q changes nothing: remove it", d.what)
				}
			}
			data := weft["ConfigMap "+WeftNamespace+"/kube-flannel-cfg"]["data"].(map[string]any)
			if err := json.Unmarshal([]byte(data["net-conf.json"].(string)), new(any)); err == nil {
				var nc any
				_ = json.Unmarshal([]byte(data["net-conf.json"].(string)), &nc)
				data["net-conf.json"] = nc
			} else {
				t.Errorf("weft's net-conf.json: %v", err)
			}
			if d := gocmp.Diff(fl, weft); d != "" {
				t.Errorf("weft's chart differs from flannel's beyond the named differences (-flannel +weft):\n%s", d)
			}
		})
	}

	// flannel's values.yaml itself as the values file (`helm show values
	// flannel/flannel > values.yaml`, the usual start of a values file):
	// weft's defaults, flannel's images named in the notes.
	text, err := os.ReadFile(filepath.Join(fc.dir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	values, err := charttest.Values(string(text))
	if err != nil {
		t.Fatal(err)
	}
	got, err := charttest.Render(t.Context(), values, helmRelease, WeftNamespace)
	if err != nil {
		t.Fatalf("weft's chart with flannel's values.yaml: %v", err)
	}
	def, err := charttest.Render(t.Context(), nil, helmRelease, WeftNamespace)
	if err != nil {
		t.Fatal(err)
	}
	if d := gocmp.Diff(parseChartObjects(t, "defaults", def.Manifest), parseChartObjects(t, "flannel's values", got.Manifest)); d != "" {
		t.Errorf("weft's chart with flannel's values.yaml differs from its defaults (-defaults +flannel's values):\n%s", d)
	}
	for _, want := range []string{"flannel.image names flannel's image (ghcr.io/flannel-io/flannel)",
		"The CNI plugin image names flannel's (ghcr.io/flannel-io/flannel-cni-plugin)"} {
		if !strings.Contains(got.Notes, want) {
			t.Errorf("notes lack %q:\n%s", want, got.Notes)
		}
	}
}

// TestHelmUpgradeFromFlannelChart: a release of flannel v0.28.9's own chart,
// installed with Helm's install action on a real kube-apiserver (the
// objects only: no nodes, so no pods), then upgraded to weft's chart, as an
// operator moves a flannel installed with Helm to weft: `helm upgrade
// --reuse-values` (which renders with flannel's chart's default values),
// `helm rollback` to flannel's revision, then `helm upgrade
// --reset-then-reuse-values` (weft's defaults under the user's values).
// Each upgrade keeps the values given to flannel's chart and updates the
// DaemonSet in place (the same object: its selector is flannel's chart's)
// to run weftd from weft's image; the rollback gives flannel's back.
func TestHelmUpgradeFromFlannelChart(t *testing.T) {
	if os.Getenv(EnvKubelet) != "1" {
		t.Skipf("set %s=1: it needs flannel's module (hack/flannel-image.sh, root)", EnvKubelet)
	}
	repo, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	upgradeFromFlannelChart(t, flannelChart(t, repo))
}

// upgradeFromFlannelChart is TestHelmUpgradeFromFlannelChart once flannel's
// chart is found.
func upgradeFromFlannelChart(t *testing.T, fc flannelChartDir) {
	cp := kubeapitest.Start(t, kubeapi.Options{})
	for _, args := range [][]string{{"create", "namespace", WeftNamespace},
		{"label", "namespace", WeftNamespace, "pod-security.kubernetes.io/enforce=privileged"}} {
		if _, err := cp.Kubectl(t.Context(), args...); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := helmConfigFor(t, cp.AdminKubeconfig(), "", WeftNamespace)
	if err != nil {
		t.Fatal(err)
	}
	values, err := charttest.Values("podCidr: 10.42.0.0/16\nflannel:\n  backend: host-gw\n")
	if err != nil {
		t.Fatal(err)
	}
	inst := action.NewInstall(cfg)
	inst.ReleaseName, inst.Namespace, inst.ServerSideApply = helmRelease, WeftNamespace, true
	inst.WaitStrategy = kube.HookOnlyStrategy
	if _, err := inst.RunWithContext(t.Context(), fc.chart, values); err != nil {
		t.Fatalf("helm install of flannel's chart: %v", err)
	}
	flannelDS := daemonSet(t, cp)
	if c := flannelDS.Spec.Template.Spec.Containers[0]; c.Command[0] != "/opt/bin/flanneld" {
		t.Fatalf("flannel's chart's DaemonSet runs %q", c.Command)
	}

	upgrade := func(how string, reuse, resetThenReuse bool, revision int) {
		t.Helper()
		ch, err := charttest.Load()
		if err != nil {
			t.Fatal(err)
		}
		up := action.NewUpgrade(cfg)
		up.Namespace, up.WaitStrategy = WeftNamespace, kube.HookOnlyStrategy
		up.ReuseValues, up.ResetThenReuseValues = reuse, resetThenReuse
		r, err := up.RunWithContext(t.Context(), helmRelease, ch, nil)
		if err != nil {
			t.Fatalf("helm upgrade %s to weft's chart: %v", how, err)
		}
		rel, ok := r.(*release.Release)
		if !ok {
			t.Fatalf("helm upgrade returned %T", r)
		}
		ds := daemonSet(t, cp)
		c := ds.Spec.Template.Spec.Containers[0]
		t.Logf("helm upgrade %s: revision %d %s, chart %s; DaemonSet %s runs %q from %s", how, rel.Version,
			rel.Info.Status, rel.Chart.Metadata.Name, ds.UID, c.Command, c.Image)
		if rel.Version != revision || rel.Info.Status != "deployed" || rel.Chart.Metadata.Name != "weft" {
			t.Errorf("%s: release revision %d %s chart %s, want %d deployed weft", how, rel.Version, rel.Info.Status,
				rel.Chart.Metadata.Name, revision)
		}
		if ds.UID != flannelDS.UID || c.Command[0] != "/usr/local/bin/weftd" || c.Image != "ghcr.io/weft-net/weft:"+version.Release {
			t.Errorf("%s: DaemonSet %s (was %s) runs %q from %s: want the same object running weftd from weft's image",
				how, ds.UID, flannelDS.UID, c.Command, c.Image)
		}
		out, err := cp.Kubectl(t.Context(), "get", "configmap", "-n", WeftNamespace, "kube-flannel-cfg",
			"-o", "jsonpath={.data.net-conf\\.json}")
		if err != nil {
			t.Fatal(err)
		}
		var nc struct {
			Network string
			Backend struct{ Type string }
		}
		if err := json.Unmarshal([]byte(out), &nc); err != nil || nc.Network != "10.42.0.0/16" || nc.Backend.Type != "host-gw" {
			t.Errorf("%s: net-conf.json (%v):\n%s\nwant flannel's release's values: 10.42.0.0/16, host-gw", how, err, out)
		}
	}
	upgrade("--reuse-values", true, false, 2)

	rb := action.NewRollback(cfg)
	rb.Version, rb.WaitStrategy = 1, kube.HookOnlyStrategy
	if err := rb.Run(helmRelease); err != nil {
		t.Fatalf("helm rollback to flannel's chart: %v", err)
	}
	back := daemonSet(t, cp)
	if c := back.Spec.Template.Spec.Containers[0]; back.UID != flannelDS.UID || c.Command[0] != "/opt/bin/flanneld" {
		t.Errorf("after the rollback: DaemonSet %s runs %q, want %s running flanneld", back.UID, c.Command, flannelDS.UID)
	}

	upgrade("--reset-then-reuse-values", false, true, 4)
}

// daemonSet returns kube-flannel-ds.
func daemonSet(t *testing.T, cp *kubeapi.ControlPlane) appsv1.DaemonSet {
	t.Helper()
	out, err := cp.Kubectl(t.Context(), "get", "daemonset", "-n", WeftNamespace, "kube-flannel-ds", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := json.Unmarshal([]byte(out), &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.Spec.Template.Spec.Containers) == 0 || len(ds.Spec.Template.Spec.Containers[0].Command) == 0 {
		t.Fatalf("DaemonSet without a command: %s", out)
	}
	return ds
}
