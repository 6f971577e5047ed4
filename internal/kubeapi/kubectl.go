//go:build linux

package kubeapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/lab"
)

// Kubectl runs kubectl with the admin kubeconfig (args may name another
// --kubeconfig: the later flag wins) and returns its standard output; the
// error carries its standard error.
func (c *ControlPlane) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.kubectl(ctx, nil, args...)
}

// Apply runs `kubectl apply -f -` as the admin with manifest (YAML or JSON,
// one or more objects) on its standard input.
func (c *ControlPlane) Apply(ctx context.Context, manifest string) error {
	_, err := c.kubectl(ctx, strings.NewReader(manifest), "apply", "-f", "-")
	return err
}

func (c *ControlPlane) kubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	argv := append([]string{"--kubeconfig=" + c.AdminKubeconfig(),
		"--cache-dir=" + filepath.Join(c.o.Dir, "kubectl-cache")}, args...)
	cmd := exec.CommandContext(ctx, c.o.Bins.Kubectl, argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	var err error
	if c.o.NetNS != "" {
		if err = lab.StartIn(c.o.NetNS, cmd); err == nil {
			err = cmd.Wait()
		}
	} else {
		err = cmd.Run()
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// ServiceAccountKubeconfig writes a kubeconfig that authenticates as service
// account namespace/name with a token from `kubectl create token` (valid for
// ttl; 0 means the apiserver's default of one hour, and the apiserver
// refuses less than 10 minutes) and returns its path in the state directory.
// The namespace and the service account must exist.
func (c *ControlPlane) ServiceAccountKubeconfig(ctx context.Context, namespace, name string, ttl time.Duration) (string, error) {
	if namespace == "" || name == "" || strings.ContainsAny(namespace+name, `/\`) {
		return "", fmt.Errorf("service account kubeconfig: invalid name %q/%q", namespace, name)
	}
	args := []string{"create", "token", name, "--namespace", namespace}
	if ttl > 0 {
		args = append(args, "--duration", ttl.String())
	}
	out, err := c.Kubectl(ctx, args...)
	if err != nil {
		return "", fmt.Errorf("token for service account %s/%s: %w", namespace, name, err)
	}
	token := strings.TrimSpace(out)
	if token == "" || strings.ContainsAny(token, " \n\t") {
		return "", fmt.Errorf("token for service account %s/%s: unexpected output %q", namespace, name, out)
	}
	path := filepath.Join(c.o.Dir, "sa-"+namespace+"-"+name+".kubeconfig")
	user := "system:serviceaccount:" + namespace + ":" + name
	if err := c.pki.tokenKubeconfig(path, c.url, user, token); err != nil {
		return "", fmt.Errorf("service account kubeconfig: %w", err)
	}
	return path, nil
}
