//go:build linux

package kubeapi

import (
	"crypto/x509"
	"fmt"
	"strings"
	"unicode"
)

// ClientKubeconfig issues a client certificate for user (its common name)
// in groups (its organizations), signed by the control plane's CA, and
// writes a kubeconfig for the apiserver's URL with the certificate, its key
// and the CA embedded at path. The certificate and key are also kept in the
// pki directory as client-<user>.crt and .key (user with every character
// outside [A-Za-z0-9.-] replaced by '_'). Components that are not part of
// the control plane itself use it: a kubelet is "system:node:<node name>"
// in "system:nodes", kube-scheduler is "system:kube-scheduler".
func (c *ControlPlane) ClientKubeconfig(path, user string, groups []string) error {
	if user == "" {
		return fmt.Errorf("client kubeconfig: empty user")
	}
	base := "client-" + strings.Map(func(r rune) rune {
		if r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' || r == '-') {
			return r
		}
		return '_'
	}, user)
	certFile, keyFile := base+".crt", base+".key"
	if err := c.pki.issue(certFile, keyFile, user, groups, nil, x509.ExtKeyUsageClientAuth); err != nil {
		return fmt.Errorf("client certificate for %s: %w", user, err)
	}
	if err := c.pki.certKubeconfig(path, c.url, user, certFile, keyFile); err != nil {
		return fmt.Errorf("kubeconfig for %s: %w", user, err)
	}
	return nil
}
