// Package deploy holds what runs weft on Kubernetes: kube-weft.yml, a
// one-for-one replacement of flannel's kube-flannel.yml, and Containerfile,
// the image definition hack/image.sh (`make image`) builds. Its Go code is
// Manifest, the manifest embedded, and RBAC, its permission objects, so that
// `weft lab up --store kube`, the bench and the store's tests apply the very
// RBAC objects it ships, from any directory. The tests
// check the manifest with weft's own parsers (manifest_test.go, plain) and
// build and run the image (image_test.go, root, buildah). docs/install.md
// describes both.
package deploy

import (
	_ "embed"
	"fmt"
	"regexp"
	"strings"
)

// Manifest is the text of kube-weft.yml. It is a variable only because
// the embed directive needs one; nothing writes it.
//
//go:embed kube-weft.yml
var Manifest string

// NetpolManifest is the text of kube-weft-netpol.yml: Manifest with weftd's
// --network-policy and the read rights it needs (pods, namespaces,
// networkpolicies).
//
//go:embed kube-weft-netpol.yml
var NetpolManifest string

// RBAC returns the manifest's Namespace, ServiceAccount, ClusterRole
// and ClusterRoleBinding documents (the lab runs no DaemonSet: its weftd
// processes are started directly).
func RBAC() (string, error) { return RBACOf(Manifest) }

// RBACOf returns those documents of manifest (Manifest or NetpolManifest).
func RBACOf(manifest string) (string, error) {
	kindLine := regexp.MustCompile(`(?m)^kind:\s*(\S+)\s*$`)
	var docs, kinds []string
	for _, d := range strings.Split(manifest, "\n---\n") {
		m := kindLine.FindStringSubmatch(d)
		if m == nil {
			continue
		}
		switch m[1] {
		case "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding":
			docs = append(docs, d)
			kinds = append(kinds, m[1])
		}
	}
	if len(docs) != 4 {
		return "", fmt.Errorf("manifest: want a Namespace, ServiceAccount, ClusterRole and ClusterRoleBinding, found %v", kinds)
	}
	return strings.Join(docs, "\n---\n") + "\n", nil
}
