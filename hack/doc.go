// Package hack holds the shell scripts that build and install what weft's
// tests and images need (deps.sh, image.sh, kube-bins.sh, ...); it has no Go
// code of its own, only the tests of those scripts.
package hack
