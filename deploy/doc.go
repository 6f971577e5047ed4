// Package deploy holds what runs weft on Kubernetes: kube-weft.yml, a
// one-for-one replacement of flannel's kube-flannel.yml, and Containerfile,
// the image definition hack/image.sh (`make image`) builds. There is no Go
// code here: the tests check the manifest with weft's own parsers
// (manifest_test.go, plain) and build and run the image (image_test.go,
// root, buildah). docs/deploy.md describes both.
package deploy
