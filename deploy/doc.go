// Package deploy holds what runs weft on Kubernetes: kube-weft.yml, a
// one-for-one replacement of flannel's kube-flannel.yml, and Containerfile,
// the image definition hack/image.sh (`make image`) builds. Its only Go code
// is Manifest, the manifest embedded so that `weft lab up --store kube`
// applies the very RBAC objects it ships, from any directory. The tests
// check the manifest with weft's own parsers (manifest_test.go, plain) and
// build and run the image (image_test.go, root, buildah). docs/deploy.md
// describes both.
package deploy

import _ "embed"

// Manifest is the text of kube-weft.yml. It is a variable only because
// go:embed needs one; nothing writes it.
//
//go:embed kube-weft.yml
var Manifest string
