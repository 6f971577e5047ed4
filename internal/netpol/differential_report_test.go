package netpol

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Reports of the differential test and FuzzCompile: a failing world is cut
// down (minimize) and printed (describe).

// describe renders a world for a report: namespaces and pods a line each,
// policies as YAML.
func describe(w *world) string {
	var b strings.Builder
	if len(w.Namespaces)+len(w.Pods)+len(w.Policies) == 0 {
		return "(no namespace, pod or policy needed)\n"
	}
	for _, ns := range w.Namespaces {
		fmt.Fprintf(&b, "namespace %s labels %v\n", ns.Name, ns.Labels)
	}
	for _, p := range w.Pods {
		var ips, ports []string
		for _, ip := range p.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				proto := cmp.Or(cp.Protocol, corev1.ProtocolTCP) // the API's default
				ports = append(ports, fmt.Sprintf("%s:%s/%s/%d", c.Name, cp.Name, proto, cp.ContainerPort))
			}
		}
		fmt.Fprintf(&b, "pod %s/%s on %s %s hostNetwork=%v ips %v labels %v ports %v\n",
			p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase, p.Spec.HostNetwork, ips, p.Labels, ports)
	}
	for _, np := range w.Policies {
		y, err := yaml.Marshal(np.Spec)
		if err != nil {
			y = []byte(err.Error())
		}
		fmt.Fprintf(&b, "policy %s/%s:\n  %s\n", np.Namespace, np.Name, strings.ReplaceAll(strings.TrimSpace(string(y)), "\n", "\n  "))
	}
	return b.String()
}

// consistent reports whether w is a cluster the API could hold: every pod
// and policy in a namespace it has, every pod on one of its nodes.
func consistent(w *world) bool {
	ns := map[string]bool{}
	for _, n := range w.Namespaces {
		ns[n.Name] = n.Labels["kubernetes.io/metadata.name"] == n.Name
	}
	for _, p := range w.Pods {
		if !ns[p.Namespace] || !slices.Contains(w.Nodes, p.Spec.NodeName) {
			return false
		}
	}
	for _, p := range w.Policies {
		if !ns[p.Namespace] {
			return false
		}
	}
	return true
}

// minimize cuts w down while fails holds: one list element, label or
// optional field at a time, until no cut keeps it failing.
func minimize(w *world, fails func(*world) bool) *world {
	tree, err := toTree(w)
	if err != nil {
		return w
	}
	for progress := true; progress; {
		progress = false
		for i := 0; i < len(cutPaths(tree)); i++ {
			cand, err := toTree(tree)
			if err != nil {
				return w
			}
			cand = removeAt(cand, cutPaths(tree)[i])
			if cw, err := fromTree(cand); err == nil && fails(cw) {
				tree, progress = cand, true
				i--
			}
		}
	}
	if out, err := fromTree(tree); err == nil {
		return out
	}
	return w
}

// optionalFields are the fields a cut may drop.
func optionalField(k string) bool {
	switch k {
	case "podSelector", "namespaceSelector", "ipBlock", "except", "ports", "from", "to", "ingress", "egress",
		"policyTypes", "protocol", "port", "endPort", "matchLabels", "matchExpressions", "values", "containers",
		"hostNetwork":
		return true
	}
	return false
}

func toTree(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	return out, json.Unmarshal(b, &out)
}

func fromTree(tree any) (*world, error) {
	b, err := json.Marshal(tree)
	if err != nil {
		return nil, err
	}
	w := &world{}
	return w, json.Unmarshal(b, w)
}

// cutPaths lists, in document order, the paths (keys and indexes) of what
// a cut may drop.
func cutPaths(tree any) [][]any {
	var out [][]any
	var walk func(v any, path []any, key string)
	walk = func(v any, path []any, key string) {
		switch x := v.(type) {
		case map[string]any:
			for _, k := range sortedKeys(x) {
				p := append(slices.Clone(path), k)
				labels := key == "labels" || key == "matchLabels"
				if optionalField(k) || labels && k != "kubernetes.io/metadata.name" {
					out = append(out, p)
				}
				walk(x[k], p, k)
			}
		case []any:
			for i, e := range x {
				p := append(slices.Clone(path), i)
				if key != "nodes" {
					out = append(out, p)
				}
				walk(e, p, key)
			}
		}
	}
	walk(tree, nil, "")
	return out
}

// removeAt drops what path names from tree.
func removeAt(tree any, path []any) any {
	switch x := tree.(type) {
	case map[string]any:
		k := path[0].(string)
		if len(path) == 1 {
			delete(x, k)
		} else {
			x[k] = removeAt(x[k], path[1:])
		}
		return x
	case []any:
		i := path[0].(int)
		if len(path) == 1 {
			return append(x[:i:i], x[i+1:]...)
		}
		x[i] = removeAt(x[i], path[1:])
		return x
	}
	return tree
}
