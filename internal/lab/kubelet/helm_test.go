//go:build linux

package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/kube"
	release "helm.sh/helm/v4/pkg/release/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"

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

	// The install notes' check of a node: weft status in weftd's container,
	// with no flags.
	status, err := l.kubectl(ctx, "exec", "-n", WeftNamespace, "ds/kube-flannel-ds", "-c", "kube-flannel", "--",
		"weft", "status")
	t.Logf("weft status (the notes' command):\n%s", status)
	if err != nil {
		t.Errorf("the notes' weft status: %v", err)
	}

	helmUninstall(t, ctx, l)
	l.down()
}

// helmConfig returns Helm's action configuration for the lab's API server:
// the admin's kubeconfig, dialled from inside the switch namespace that
// holds the apiserver.
func helmConfig(t *testing.T, l *Lab, namespace string) (*action.Configuration, error) {
	return helmConfigFor(t, l.cp.AdminKubeconfig(), l.cl.Lab().Topology().ServiceNS(), namespace)
}

// helmConfigFor returns Helm's action configuration for the API server of
// kubeconfig, dialled from inside network namespace netns ("": this one),
// with releases kept as Secrets in namespace (Helm's default driver).
func helmConfigFor(t *testing.T, kubeconfig, netns, namespace string) (*action.Configuration, error) {
	cacheDir := filepath.Join(t.TempDir(), "helm-kube-cache")
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig, flags.CacheDir, flags.Namespace = &kubeconfig, &cacheDir, &namespace
	if netns != "" {
		flags.WrapConfigFn = func(c *rest.Config) *rest.Config {
			c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				return lab.DialContext(ctx, netns, network, addr)
			}
			return c
		}
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
