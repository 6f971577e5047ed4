package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"sigs.k8s.io/yaml"

	"github.com/weft-net/weft/internal/cni"
	"github.com/weft-net/weft/internal/config"
	"github.com/weft-net/weft/internal/subnetfile"
	"github.com/weft-net/weft/internal/version"
)

// manifestFile is the manifest under test, beside this file.
const manifestFile = "kube-weft.yml"

// The parts of the Kubernetes objects kube-weft.yml uses, decoded strictly
// (an unknown field is an error), so a misspelt key cannot hide: kubectl
// would drop it without a word.
type object struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   objectMeta        `json:"metadata"`
	Rules      []policyRule      `json:"rules,omitempty"`    // ClusterRole
	RoleRef    *roleRef          `json:"roleRef,omitempty"`  // ClusterRoleBinding
	Subjects   []subject         `json:"subjects,omitempty"` // ClusterRoleBinding
	Data       map[string]string `json:"data,omitempty"`     // ConfigMap
	Spec       *daemonSetSpec    `json:"spec,omitempty"`     // DaemonSet
}

type objectMeta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

type policyRule struct {
	APIGroups       []string `json:"apiGroups"`
	Resources       []string `json:"resources"`
	Verbs           []string `json:"verbs"`
	ResourceNames   []string `json:"resourceNames,omitempty"`
	NonResourceURLs []string `json:"nonResourceURLs,omitempty"`
}

type roleRef struct {
	APIGroup string `json:"apiGroup"`
	Kind     string `json:"kind"`
	Name     string `json:"name"`
}

type subject struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

type daemonSetSpec struct {
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	Template struct {
		Metadata objectMeta `json:"metadata"`
		Spec     podSpec    `json:"spec"`
	} `json:"template"`
}

type podSpec struct {
	Affinity           *affinity    `json:"affinity,omitempty"`
	HostNetwork        bool         `json:"hostNetwork"`
	PriorityClassName  string       `json:"priorityClassName"`
	Tolerations        []toleration `json:"tolerations"`
	ServiceAccountName string       `json:"serviceAccountName"`
	InitContainers     []container  `json:"initContainers"`
	Containers         []container  `json:"containers"`
	Volumes            []volume     `json:"volumes"`
}

type affinity struct {
	NodeAffinity struct {
		Required struct {
			NodeSelectorTerms []struct {
				MatchExpressions []struct {
					Key      string   `json:"key"`
					Operator string   `json:"operator"`
					Values   []string `json:"values"`
				} `json:"matchExpressions"`
			} `json:"nodeSelectorTerms"`
		} `json:"requiredDuringSchedulingIgnoredDuringExecution"`
	} `json:"nodeAffinity"`
}

type toleration struct {
	Key      string `json:"key,omitempty"`
	Operator string `json:"operator,omitempty"`
	Value    string `json:"value,omitempty"`
	Effect   string `json:"effect,omitempty"`
}

type container struct {
	Name            string           `json:"name"`
	Image           string           `json:"image"`
	Command         []string         `json:"command"`
	Args            []string         `json:"args"`
	Env             []envVar         `json:"env,omitempty"`
	Resources       *resources       `json:"resources,omitempty"`
	SecurityContext *securityContext `json:"securityContext,omitempty"`
	VolumeMounts    []volumeMount    `json:"volumeMounts"`
}

// argv is the container's command line.
func (c container) argv() []string { return append(slices.Clone(c.Command), c.Args...) }

type envVar struct {
	Name      string `json:"name"`
	Value     string `json:"value,omitempty"`
	ValueFrom *struct {
		FieldRef struct {
			FieldPath string `json:"fieldPath"`
		} `json:"fieldRef"`
	} `json:"valueFrom,omitempty"`
}

type resources struct {
	Requests map[string]string `json:"requests,omitempty"`
	Limits   map[string]string `json:"limits,omitempty"`
}

type securityContext struct {
	Privileged   *bool `json:"privileged,omitempty"`
	Capabilities *struct {
		Add  []string `json:"add,omitempty"`
		Drop []string `json:"drop,omitempty"`
	} `json:"capabilities,omitempty"`
}

type volumeMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
	ReadOnly  bool   `json:"readOnly,omitempty"`
}

type volume struct {
	Name     string `json:"name"`
	HostPath *struct {
		Path string `json:"path"`
		Type string `json:"type,omitempty"`
	} `json:"hostPath,omitempty"`
	ConfigMap *struct {
		Name string `json:"name"`
	} `json:"configMap,omitempty"`
}

// manifest is kube-weft.yml, decoded.
type manifest struct {
	objects []object
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// parseManifest splits a multi-document YAML file and decodes each document
// strictly; documents holding only comments are skipped.
func parseManifest(data []byte) (*manifest, error) {
	m := &manifest{}
	for i, doc := range docSeparator.Split(string(data), -1) {
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if string(js) == "null" {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		var o object
		if err := dec.Decode(&o); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		m.objects = append(m.objects, o)
	}
	return m, nil
}

func loadManifest(t testing.TB) *manifest {
	t.Helper()
	data, err := os.ReadFile(manifestFile)
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseManifest(data)
	if err != nil {
		t.Fatalf("parse %s: %v", manifestFile, err)
	}
	return m
}

// get returns the object of that kind and name, failing the test without it.
func (m *manifest) get(t testing.TB, kind, name string) *object {
	t.Helper()
	for i := range m.objects {
		if o := &m.objects[i]; o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	t.Fatalf("%s has no %s %q", manifestFile, kind, name)
	return nil
}

func (m *manifest) daemonSet(t testing.TB) *podSpec {
	t.Helper()
	ds := m.get(t, "DaemonSet", "kube-flannel-ds")
	if ds.Spec == nil {
		t.Fatal("DaemonSet kube-flannel-ds has no spec")
	}
	return &ds.Spec.Template.Spec
}

func (p *podSpec) container(t testing.TB, name string) container {
	t.Helper()
	for _, c := range slices.Concat(p.InitContainers, p.Containers) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("the DaemonSet has no container %q", name)
	return container{}
}

// hostPathOf returns the host path or ConfigMap ("configMap:<name>") a
// container sees at dir, or "" when no mount holds dir.
func (p *podSpec) hostPathOf(c container, dir string) string {
	for _, vm := range c.VolumeMounts {
		mp := path.Clean(vm.MountPath)
		if dir != mp && !strings.HasPrefix(dir, mp+"/") {
			continue
		}
		for _, v := range p.Volumes {
			switch {
			case v.Name != vm.Name:
			case v.HostPath != nil:
				return path.Join(v.HostPath.Path, strings.TrimPrefix(dir, mp))
			case v.ConfigMap != nil:
				return "configMap:" + v.ConfigMap.Name + strings.TrimPrefix(dir, mp)
			}
		}
	}
	return ""
}

// flannelSelector is kube-flannel.yml's DaemonSet selector: its app label
// and the k8s-app label its kustomization adds to every object.
var flannelSelector = map[string]string{"app": "flannel", "k8s-app": "flannel"}

func TestManifestHasFlannelsObjects(t *testing.T) {
	m := loadManifest(t)
	var got []string
	for _, o := range m.objects {
		got = append(got, fmt.Sprintf("%s %s %s/%s", o.APIVersion, o.Kind, o.Metadata.Namespace, o.Metadata.Name))
		if o.Metadata.Labels["k8s-app"] != "flannel" {
			t.Errorf("%s %s: labels %v lack k8s-app: flannel (kube-flannel.yml's common label)", o.Kind, o.Metadata.Name, o.Metadata.Labels)
		}
	}
	want := []string{
		"v1 Namespace /kube-flannel",
		"rbac.authorization.k8s.io/v1 ClusterRole /flannel",
		"rbac.authorization.k8s.io/v1 ClusterRoleBinding /flannel",
		"v1 ServiceAccount kube-flannel/flannel",
		"v1 ConfigMap kube-flannel/kube-flannel-cfg",
		"apps/v1 DaemonSet kube-flannel/kube-flannel-ds",
	}
	if !slices.Equal(got, want) {
		t.Errorf("objects:\n got %q\nwant %q", got, want)
	}
	ns := m.get(t, "Namespace", "kube-flannel")
	if v := ns.Metadata.Labels["pod-security.kubernetes.io/enforce"]; v != "privileged" {
		t.Errorf("namespace pod-security enforce = %q, want privileged", v)
	}
}

func TestClusterRoleIsExactlyFlannels(t *testing.T) {
	m := loadManifest(t)
	var got []string
	for _, r := range m.get(t, "ClusterRole", "flannel").Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %+v: resourceNames/nonResourceURLs are not flannel's", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					got = append(got, fmt.Sprintf("%q %s %s", g, res, v))
				}
			}
		}
	}
	slices.Sort(got)
	want := []string{`"" nodes get`, `"" nodes list`, `"" nodes watch`, `"" nodes/status patch`, `"" pods get`}
	if !slices.Equal(got, want) {
		t.Errorf("ClusterRole flannel grants\n %q\nwant exactly\n %q", got, want)
	}

	b := m.get(t, "ClusterRoleBinding", "flannel")
	if b.RoleRef == nil || *b.RoleRef != (roleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "flannel"}) {
		t.Errorf("ClusterRoleBinding roleRef = %+v, want ClusterRole flannel", b.RoleRef)
	}
	if want := []subject{{Kind: "ServiceAccount", Name: "flannel", Namespace: "kube-flannel"}}; !slices.Equal(b.Subjects, want) {
		t.Errorf("ClusterRoleBinding subjects = %+v, want %+v", b.Subjects, want)
	}
	m.get(t, "ServiceAccount", "flannel")
}

func TestDaemonSetReplacesFlannelsInPlace(t *testing.T) {
	m := loadManifest(t)
	ds := m.get(t, "DaemonSet", "kube-flannel-ds")
	if !maps.Equal(ds.Spec.Selector.MatchLabels, flannelSelector) {
		t.Errorf("selector = %v, want flannel's %v (a DaemonSet's selector is immutable)", ds.Spec.Selector.MatchLabels, flannelSelector)
	}
	for k, v := range flannelSelector {
		if ds.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("template labels %v do not match the selector's %s=%s", ds.Spec.Template.Metadata.Labels, k, v)
		}
	}
	p := &ds.Spec.Template.Spec
	if !p.HostNetwork || p.PriorityClassName != "system-node-critical" || p.ServiceAccountName != "flannel" {
		t.Errorf("hostNetwork %v, priorityClassName %q, serviceAccountName %q; want true, system-node-critical, flannel",
			p.HostNetwork, p.PriorityClassName, p.ServiceAccountName)
	}
	if want := []toleration{{Operator: "Exists", Effect: "NoSchedule"}}; !slices.Equal(p.Tolerations, want) {
		t.Errorf("tolerations = %+v, want flannel's %+v", p.Tolerations, want)
	}
	if p.Affinity == nil || len(p.Affinity.NodeAffinity.Required.NodeSelectorTerms) != 1 {
		t.Fatalf("affinity = %+v, want flannel's kubernetes.io/os In [linux]", p.Affinity)
	}
	exprs := p.Affinity.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions
	if len(exprs) != 1 || exprs[0].Key != "kubernetes.io/os" || exprs[0].Operator != "In" || !slices.Equal(exprs[0].Values, []string{"linux"}) {
		t.Errorf("node affinity = %+v, want kubernetes.io/os In [linux]", exprs)
	}
	for _, c := range slices.Concat(p.InitContainers, p.Containers) {
		if want := "ghcr.io/weft-net/weft:" + version.Release; c.Image != want {
			t.Errorf("container %s: image %q, want %q (this release)", c.Name, c.Image, want)
		}
	}
}

func TestDaemonSetRunsWeftd(t *testing.T) {
	m := loadManifest(t)
	p := m.daemonSet(t)
	if len(p.Containers) != 1 {
		t.Fatalf("%d containers, want 1 (kube-flannel)", len(p.Containers))
	}
	c := p.container(t, "kube-flannel")
	if want := []string{"/usr/local/bin/weftd", "--ip-masq", "--kube-subnet-mgr"}; !slices.Equal(c.argv(), want) {
		t.Errorf("command line %q, want %q", c.argv(), want)
	}

	env := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			v = "fieldRef:" + e.ValueFrom.FieldRef.FieldPath
		}
		env[e.Name] = v
	}
	wantEnv := map[string]string{
		"NODE_NAME": "fieldRef:spec.nodeName", "POD_NAME": "fieldRef:metadata.name",
		"POD_NAMESPACE": "fieldRef:metadata.namespace", "EVENT_QUEUE_DEPTH": "5000", "CONT_WHEN_CACHE_NOT_READY": "false",
	}
	if !maps.Equal(env, wantEnv) {
		t.Errorf("env = %v, want %v", env, wantEnv)
	}

	// weftd's own parser reads the command line and environment as the pod
	// would give them.
	opts, err := config.ParseOptions(c.argv()[1:], func(k string) (string, bool) {
		v, ok := env[k]
		if strings.HasPrefix(v, "fieldRef:") {
			v = "from-" + strings.TrimPrefix(v, "fieldRef:")
		}
		return v, ok
	}, nil)
	if err != nil {
		t.Fatalf("weftd rejects the manifest's command line: %v", err)
	}
	if !opts.IPMasq || !opts.KubeSubnetMgr || opts.NodeName != "from-spec.nodeName" {
		t.Errorf("parsed ip-masq %v, kube-subnet-mgr %v, node %q; want true, true, the downward API's", opts.IPMasq,
			opts.KubeSubnetMgr, opts.NodeName)
	}
	if opts.HealthzPort != 0 {
		t.Errorf("healthz port %d: the header says healthz is off unless --healthz-port is given", opts.HealthzPort)
	}
	// The files weftd reads and writes by default are on the manifest's volumes.
	if got := p.hostPathOf(c, opts.NetConfigPath); got != "configMap:kube-flannel-cfg/net-conf.json" {
		t.Errorf("--net-config-path %s is %q in the pod, want the ConfigMap's net-conf.json", opts.NetConfigPath, got)
	}
	if got := p.hostPathOf(c, opts.SubnetFile); got != "/run/flannel/subnet.env" {
		t.Errorf("--subnet-file %s is %q on the host, want /run/flannel/subnet.env (the CNI plugin reads it)", opts.SubnetFile, got)
	}
	if got := p.hostPathOf(c, "/run/xtables.lock"); got != "/run/xtables.lock" {
		t.Errorf("/run/xtables.lock is %q on the host, want the host's lock", got)
	}

	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Add, []string{"NET_ADMIN", "NET_RAW"}) || len(sc.Capabilities.Drop) != 0 {
		js, _ := json.Marshal(sc)
		t.Errorf("securityContext = %s, want privileged false, capabilities add [NET_ADMIN NET_RAW]", js)
	}
	if c.Resources == nil || !maps.Equal(c.Resources.Requests, map[string]string{"cpu": "100m", "memory": "50Mi"}) ||
		len(c.Resources.Limits) != 0 {
		t.Errorf("resources = %+v, want flannel's requests cpu 100m, memory 50Mi and no limits", c.Resources)
	}
}

func TestInitContainersInstallPluginAndConflist(t *testing.T) {
	m := loadManifest(t)
	p := m.daemonSet(t)
	var names []string
	for _, c := range p.InitContainers {
		names = append(names, c.Name)
	}
	if want := []string{"install-cni-plugin", "install-cni"}; !slices.Equal(names, want) {
		t.Fatalf("init containers %q, want %q", names, want)
	}
	for _, tc := range []struct {
		name     string
		argv     []string
		src, dst string // where the copy reads and writes, outside the pod
	}{
		{"install-cni-plugin", []string{"cp", "-f", "/flannel", "/opt/cni/bin/flannel"},
			"", "/opt/cni/bin/flannel"},
		{"install-cni", []string{"cp", "-f", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"},
			"configMap:kube-flannel-cfg/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"},
	} {
		c := p.container(t, tc.name)
		argv := c.argv()
		if !slices.Equal(argv, tc.argv) {
			t.Errorf("%s: command line %q, want %q", tc.name, argv, tc.argv)
			continue
		}
		if got := p.hostPathOf(c, argv[2]); got != tc.src {
			t.Errorf("%s: source %s is %q outside the image, want %q", tc.name, argv[2], got, tc.src)
		}
		if got := p.hostPathOf(c, argv[3]); got != tc.dst {
			t.Errorf("%s: destination %s is %q on the host, want %q", tc.name, argv[3], got, tc.dst)
		}
	}
}

func TestVolumesAreFlannelsHostPaths(t *testing.T) {
	p := loadManifest(t).daemonSet(t)
	got := map[string]string{}
	for _, v := range p.Volumes {
		switch {
		case v.HostPath != nil:
			got[v.Name] = "hostPath " + v.HostPath.Path + " " + v.HostPath.Type
		case v.ConfigMap != nil:
			got[v.Name] = "configMap " + v.ConfigMap.Name
		default:
			got[v.Name] = "?"
		}
	}
	want := map[string]string{
		"run":          "hostPath /run/flannel ",
		"cni-plugin":   "hostPath /opt/cni/bin ",
		"cni":          "hostPath /etc/cni/net.d ",
		"flannel-cfg":  "configMap kube-flannel-cfg",
		"xtables-lock": "hostPath /run/xtables.lock FileOrCreate",
	}
	if !maps.Equal(got, want) {
		t.Errorf("volumes:\n got %v\nwant %v", got, want)
	}
	used := map[string]bool{}
	for _, c := range slices.Concat(p.InitContainers, p.Containers) {
		for _, vm := range c.VolumeMounts {
			if _, ok := got[vm.Name]; !ok {
				t.Errorf("container %s mounts %q, which is not a volume", c.Name, vm.Name)
			}
			used[vm.Name] = true
		}
	}
	for name := range got {
		if !used[name] {
			t.Errorf("volume %q is mounted by no container", name)
		}
	}
	main := p.container(t, "kube-flannel")
	var mounts []string
	for _, vm := range main.VolumeMounts {
		mounts = append(mounts, vm.MountPath)
	}
	if want := []string{"/run/flannel", "/etc/kube-flannel/", "/run/xtables.lock"}; !slices.Equal(mounts, want) {
		t.Errorf("weftd's mounts %q, want flannel's %q", mounts, want)
	}
}

func TestConfigMapNetConfParses(t *testing.T) {
	cm := loadManifest(t).get(t, "ConfigMap", "kube-flannel-cfg")
	nc, warnings, err := config.ParseNetConf([]byte(cm.Data["net-conf.json"]))
	if err != nil {
		t.Fatalf("net-conf.json: %v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("net-conf.json warnings: %q", warnings)
	}
	if nc.IPv4.Network != netip.MustParsePrefix("10.244.0.0/16") || nc.IPv4.SubnetLen != 24 || nc.IPv6.Enabled ||
		nc.EnableNFTables || nc.Backend.Type != "vxlan" {
		t.Errorf("net-conf.json = %+v, want 10.244.0.0/16 (/24 subnets), IPv4 only, iptables, vxlan", nc)
	}
}

func TestConfigMapConflistParses(t *testing.T) {
	cm := loadManifest(t).get(t, "ConfigMap", "kube-flannel-cfg")
	list, err := libcni.ConfListFromBytes([]byte(cm.Data["cni-conf.json"]))
	if err != nil {
		t.Fatalf("cni-conf.json is not a conflist libcni accepts: %v", err)
	}
	if list.Name != "cbr0" || !slices.Contains(cniversion.All.SupportedVersions(), list.CNIVersion) {
		t.Errorf("conflist name %q, cniVersion %q: want cbr0 and a version weft's plugin supports", list.Name, list.CNIVersion)
	}
	if len(list.Plugins) != 2 || list.Plugins[0].Network.Type != "flannel" || list.Plugins[1].Network.Type != "portmap" {
		t.Fatalf("conflist plugins %s, want flannel then portmap", list.Bytes)
	}
	if !list.Plugins[1].Network.Capabilities["portMappings"] {
		t.Errorf("portmap lacks capabilities.portMappings: %s", list.Plugins[1].Bytes)
	}

	// What the runtime gives weft's plugin: its entry with the list's name and
	// version, parsed by the plugin's own parser, and the delegate it builds
	// from the subnet.env weftd writes for this net-conf.json with --ip-masq.
	entry, err := libcni.InjectConf(list.Plugins[0], map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	conf, err := cni.ParseNetConf(entry.Bytes)
	if err != nil {
		t.Fatalf("weft's CNI plugin rejects its conflist entry %s: %v", entry.Bytes, err)
	}
	env := subnetfile.Env{Networks: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		Subnet: netip.MustParsePrefix("10.244.1.1/24"), MTU: 1450, IPMasq: true}
	js, err := json.Marshal(cni.BuildDelegate(conf, env))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"type": "bridge", "name": "cbr0", "hairpinMode": true, "isDefaultGateway": true,
		"isGateway": true, "ipMasq": false, "mtu": 1450.0} {
		if got[k] != want {
			t.Errorf("delegate %s = %v, want %v (delegate %s)", k, got[k], want, js)
		}
	}
}
