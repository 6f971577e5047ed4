//go:build linux

package kubelet

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/kube"
	release "helm.sh/helm/v4/pkg/release/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/weft-net/weft/deploy/chart/charttest"
	"github.com/weft-net/weft/internal/lab"
)

// helmRelease is the release the test installs, as flannel's docs name
// theirs (`helm install flannel ...`).
const helmRelease = "flannel"

// helmValues is a values file as a user of flannel's chart writes it, with
// the lab's image as flannel.image (a mirror of weft's image, to the chart)
// and, weft's one value here, imagePullPolicy Never (the image is imported
// on every node; there is no registry).
func helmValues(image string) string {
	i := strings.LastIndex(image, ":")
	return fmt.Sprintf(`podCidr: "10.244.0.0/16"
flannel:
  image:
    repository: %s
    tag: %q
  args:
  - "--ip-masq"
  - "--kube-subnet-mgr"
  backend: "vxlan"
weft:
  image:
    pullPolicy: Never
`, image[:i], image[i+1:])
}

// TestKubeletHelm: a 3-node lab where weft is installed by its Helm chart
// (deploy/chart) with Helm's install action, the Go code behind `helm
// install`, against the lab's API server, in place of kube-weft.yml: the
// release namespace made and labelled first, as flannel's docs do, then the
// chart with a flannel-style values file. The lab waits, as for the
// manifest, for weft's pod Running and Ready on every node (Ready is the
// chart's /readyz probe: subnet.env written) and every Node's
// NetworkUnavailable False; then the test pods on the three nodes ping each
// other, the release is deployed with the chart's objects, and `helm
// uninstall` removes them.
func TestKubeletHelm(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	var rel *release.Release
	l := startLabWith(t, ctx, func(o *Options) {
		o.Nodes = 3
		o.Deploy = func(ctx context.Context, l *Lab, image string) error {
			var err error
			rel, err = helmInstall(t, ctx, l, image)
			return err
		}
	})
	if rel == nil {
		t.Fatal("the lab came up without installing the chart")
	}
	t.Logf("release %s: %s, revision %d, chart %s %s", rel.Name, rel.Info.Status, rel.Version, rel.Chart.Metadata.Name,
		rel.Chart.Metadata.Version)
	if rel.Info.Status != "deployed" {
		t.Errorf("release status %s, want deployed", rel.Info.Status)
	}

	results, err := l.PingAll(ctx)
	for _, r := range results {
		status := "ok"
		if r.Err != nil {
			status = "FAIL"
		}
		t.Logf("  %s -> %s (%s): %s", r.FromNode, r.ToNode, r.Dst, status)
	}
	if err != nil {
		t.Errorf("ping: %v", err)
	}
	if len(results) != 6 {
		t.Errorf("%d pings, want 6", len(results))
	}

	// The DaemonSet is the chart's: Helm's release annotation, flannel's
	// chart's selector, the health port and probes.
	out, err := l.kubectl(ctx, "get", "daemonset", "-n", WeftNamespace, "kube-flannel-ds", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := json.Unmarshal([]byte(out), &ds); err != nil {
		t.Fatal(err)
	}
	c := ds.Spec.Template.Spec.Containers[0]
	if ds.Annotations["meta.helm.sh/release-name"] != helmRelease || len(ds.Spec.Selector.MatchLabels) != 1 ||
		c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
		ds.Status.NumberReady != 3 {
		t.Errorf("DaemonSet: annotations %v, selector %v, readiness probe %+v, %d ready; want the chart's, 3 ready",
			ds.Annotations, ds.Spec.Selector.MatchLabels, c.ReadinessProbe, ds.Status.NumberReady)
	}

	helmUninstall(t, ctx, l)
	l.down()
}

// helmConfig returns Helm's action configuration for the lab's API server:
// the admin's kubeconfig, dialled from inside the switch namespace that
// holds the apiserver.
func helmConfig(t *testing.T, l *Lab, namespace string) (*action.Configuration, error) {
	kubeconfig, cacheDir := l.cp.AdminKubeconfig(), filepath.Join(t.TempDir(), "helm-kube-cache")
	ns := l.cl.Lab().Topology().ServiceNS()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig, flags.CacheDir, flags.Namespace = &kubeconfig, &cacheDir, &namespace
	flags.WrapConfigFn = func(c *rest.Config) *rest.Config {
		c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return lab.DialContext(ctx, ns, network, addr)
		}
		return c
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(log.Handler()))
	if err := cfg.Init(flags, namespace, "secret"); err != nil {
		return nil, fmt.Errorf("helm configuration: %w", err)
	}
	return cfg, nil
}

// helmInstall makes the release namespace (labelled privileged, as
// flannel's docs do before `helm install`) and installs the chart into it.
func helmInstall(t *testing.T, ctx context.Context, l *Lab, image string) (*release.Release, error) {
	if _, err := l.kubectl(ctx, "create", "namespace", WeftNamespace); err != nil {
		return nil, err
	}
	if _, err := l.kubectl(ctx, "label", "namespace", WeftNamespace, "pod-security.kubernetes.io/enforce=privileged"); err != nil {
		return nil, err
	}
	cfg, err := helmConfig(t, l, WeftNamespace)
	if err != nil {
		return nil, err
	}
	ch, err := charttest.Load()
	if err != nil {
		return nil, err
	}
	values, err := charttest.Values(helmValues(image))
	if err != nil {
		return nil, err
	}
	inst := action.NewInstall(cfg)
	inst.ReleaseName, inst.Namespace = helmRelease, WeftNamespace
	inst.ServerSideApply = true // `helm install`'s default
	inst.WaitStrategy = kube.HookOnlyStrategy
	inst.Timeout = 2 * time.Minute
	begin := time.Now()
	r, err := inst.RunWithContext(ctx, ch, values)
	if err != nil {
		return nil, fmt.Errorf("helm install: %w", err)
	}
	rel, ok := r.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("helm install returned %T", r)
	}
	t.Logf("helm install %s (chart %s) in %v; notes:\n%s", rel.Name, rel.Chart.Metadata.Version,
		time.Since(begin).Round(time.Millisecond), rel.Info.Notes)
	return rel, nil
}

// helmUninstall uninstalls the release and checks that the chart's objects
// are gone (the namespace, which the release does not own, stays).
func helmUninstall(t *testing.T, ctx context.Context, l *testLab) {
	t.Helper()
	cfg, err := helmConfig(t, l.Lab, WeftNamespace)
	if err != nil {
		t.Fatal(err)
	}
	un := action.NewUninstall(cfg)
	un.WaitStrategy = kube.HookOnlyStrategy
	un.Timeout = time.Minute
	if _, err := un.Run(helmRelease); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	err = l.poll(ctx, "the chart's objects deleted", func() (bool, string, error) {
		out, err := l.kubectl(ctx, "get", "daemonset,configmap,serviceaccount,clusterrole,clusterrolebinding", "-A",
			"-l", "k8s-app=flannel", "-o", "name")
		if err != nil {
			return false, "", err
		}
		left := strings.Fields(out)
		return len(left) == 0, strings.Join(left, " "), nil
	})
	if err != nil {
		t.Errorf("after helm uninstall: %v", err)
	}
}

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
	if _, err := FindFlannel(t.Context(), repo); err != nil {
		t.Fatalf("flannel's module: %v", err)
	}
	compareWithFlannelChart(t)
}

// compareWithFlannelChart is TestChartMatchesFlannelChart once flannel's
// module is in Go's module cache.
func compareWithFlannelChart(t *testing.T) {
	goBin := cmp.Or(os.Getenv("GO"), "go")
	out, err := exec.CommandContext(t.Context(), goBin, "mod", "download", "-json", flannelModule).Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", flannelModule, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s: %v: %s", flannelModule, err, out)
	}
	fch, err := loader.Load(filepath.Join(mod.Dir, "chart", "kube-flannel"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flannel's chart %s %s from %s", fch.Metadata.Name, fch.Metadata.Version, mod.Dir)
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
	text, err := os.ReadFile(filepath.Join(mod.Dir, "chart", "kube-flannel", "values.yaml"))
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
