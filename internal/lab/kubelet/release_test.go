//go:build linux

package kubelet

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/weft-net/weft/deploy"
)

// releaseObjects are the objects of a kube-flannel.yml-shaped manifest.
type releaseObjects struct {
	ds    appsv1.DaemonSet
	cm    corev1.ConfigMap
	role  rbacv1.ClusterRole
	names []string // kind/namespace/name of every object
}

func parseRelease(t *testing.T, what, text string) releaseObjects {
	t.Helper()
	var r releaseObjects
	for _, doc := range strings.Split(text, "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if head.Kind == "" {
			continue // comments only
		}
		r.names = append(r.names, head.Kind+"/"+head.Metadata.Namespace+"/"+head.Metadata.Name)
		var into any
		switch head.Kind {
		case "DaemonSet":
			into = &r.ds
		case "ConfigMap":
			into = &r.cm
		case "ClusterRole":
			into = &r.role
		default:
			continue
		}
		if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
			t.Fatalf("%s: %s: %v", what, head.Kind, err)
		}
	}
	return r
}

// TestManifestMatchesFlannelRelease compares deploy/kube-weft.yml with the
// kube-flannel.yml of flannel v0.28.9's release (hack/flannel-image.sh makes
// it as flannel's `make release` does), the file users apply and the one an
// upgrade starts from: the same objects, RBAC rules, ConfigMap data and
// DaemonSet selector, labels, arguments, probes (none), init containers'
// commands, volumes and mounts, security context, resources, tolerations and
// affinity. What may differ is listed in kube-weft.yml's header: the images
// and imagePullPolicy, weftd's command, and NODE_NAME. (flannel's
// Documentation/kube-flannel.yml is not that file: its selector lacks
// k8s-app, and it adds health probes and install-conf.)
func TestManifestMatchesFlannelRelease(t *testing.T) {
	repo, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(EnvKubelet) != "1" {
		t.Skipf("set %s=1: it needs flannel's release manifest (hack/flannel-image.sh, root)", EnvKubelet)
	}
	dir, err := FindFlannel(t.Context(), repo)
	if err != nil {
		t.Fatalf("flannel's release manifest: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, flannelManifest))
	if err != nil {
		t.Fatal(err)
	}
	fl := parseRelease(t, "kube-flannel.yml", string(b))
	wf := parseRelease(t, "kube-weft.yml", deploy.Manifest)

	same := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			t.Errorf("%s: kube-weft.yml has\n  %s\nflannel's release has\n  %s", what, g, w)
		}
	}
	same("objects", slices.Sorted(slices.Values(wf.names)), slices.Sorted(slices.Values(fl.names)))
	same("ClusterRole rules", wf.role.Rules, fl.role.Rules)
	same("ConfigMap labels", wf.cm.Labels, fl.cm.Labels)
	for _, k := range []string{"cni-conf.json", "net-conf.json"} {
		var g, w any
		if err := json.Unmarshal([]byte(wf.cm.Data[k]), &g); err != nil {
			t.Errorf("kube-weft.yml %s: %v", k, err)
		}
		if err := json.Unmarshal([]byte(fl.cm.Data[k]), &w); err != nil {
			t.Errorf("kube-flannel.yml %s: %v", k, err)
		}
		same("ConfigMap "+k, g, w)
	}

	ds, fds := wf.ds.Spec, fl.ds.Spec
	same("DaemonSet labels", wf.ds.Labels, fl.ds.Labels)
	same("DaemonSet selector", ds.Selector, fds.Selector)
	same("pod template labels", ds.Template.Labels, fds.Template.Labels)
	p, fp := ds.Template.Spec, fds.Template.Spec
	same("hostNetwork", p.HostNetwork, fp.HostNetwork)
	same("priorityClassName", p.PriorityClassName, fp.PriorityClassName)
	same("serviceAccountName", p.ServiceAccountName, fp.ServiceAccountName)
	same("tolerations", p.Tolerations, fp.Tolerations)
	same("affinity", p.Affinity, fp.Affinity)
	same("volumes", p.Volumes, fp.Volumes)
	if len(p.InitContainers) != len(fp.InitContainers) || len(p.Containers) != 1 || len(fp.Containers) != 1 {
		t.Fatalf("kube-weft.yml has %d init containers and %d containers, flannel's release %d and %d",
			len(p.InitContainers), len(p.Containers), len(fp.InitContainers), len(fp.Containers))
	}
	for i, c := range p.InitContainers {
		f := fp.InitContainers[i]
		same("init container name", c.Name, f.Name)
		same(c.Name+" command", slices.Concat(c.Command, c.Args), slices.Concat(f.Command, f.Args))
		same(c.Name+" volumeMounts", c.VolumeMounts, f.VolumeMounts)
	}
	c, f := p.Containers[0], fp.Containers[0]
	same("container name", c.Name, f.Name)
	same("weftd's arguments", c.Args, f.Args)
	same("ports", c.Ports, f.Ports)
	same("livenessProbe", c.LivenessProbe, f.LivenessProbe)
	same("readinessProbe", c.ReadinessProbe, f.ReadinessProbe)
	same("resources", c.Resources, f.Resources)
	same("securityContext", c.SecurityContext, f.SecurityContext)
	same("volumeMounts", c.VolumeMounts, f.VolumeMounts)
	var env []corev1.EnvVar
	for _, e := range c.Env {
		if e.Name != "NODE_NAME" {
			env = append(env, e)
		}
	}
	same("env (less NODE_NAME)", env, f.Env)
	t.Logf("kube-weft.yml matches flannel v0.28.9's release manifest (%s) in %d objects", dir, len(fl.names))
}
