//go:build linux

package kubeapi

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// certValidity is how long every certificate of a control plane is valid: a
// lab may be left running for a long time, and nothing here is long-lived
// beyond its state directory.
const certValidity = 10 * 365 * 24 * time.Hour

// pki holds a control plane's CA and the files made from it. Keys are ECDSA
// P-256: quick to generate, and accepted by the apiserver for serving,
// client certificates and service-account tokens (ES256).
type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  crypto.Signer
	caPEM  []byte
}

// file names inside the pki directory.
const (
	caCertFile     = "ca.crt"
	caKeyFile      = "ca.key"
	servingCert    = "apiserver.crt"
	servingKey     = "apiserver.key"
	saKeyFile      = "sa.key"
	saPubFile      = "sa.pub"
	adminCertFile  = "admin.crt"
	adminKeyFile   = "admin.key"
	kcmCertFile    = "controller-manager.crt"
	kcmKeyFile     = "controller-manager.key"
	adminUser      = "weft-admin"
	adminGroup     = "system:masters"
	kcmUser        = "system:kube-controller-manager"
	kubeconfigMode = 0o600
)

// newPKI creates dir and writes, from a fresh CA: the CA, the apiserver's
// serving certificate for hosts, the service-account key pair, and client
// certificates for the admin (group system:masters) and the controller
// manager.
func newPKI(dir string, hosts []string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	tmpl, err := template("weft-kubeapi-ca", nil)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse ca certificate: %w", err)
	}
	p := &pki{dir: dir, caCert: caCert, caKey: key, caPEM: certPEM(der)}
	if err := p.writeKeyPair(caCertFile, caKeyFile, der, key); err != nil {
		return nil, err
	}
	if err := p.issue(servingCert, servingKey, "kube-apiserver", nil, hosts, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if err := p.issue(adminCertFile, adminKeyFile, adminUser, []string{adminGroup}, nil, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	if err := p.issue(kcmCertFile, kcmKeyFile, kcmUser, nil, nil, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	return p, p.writeServiceAccountKey()
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// issue writes a certificate signed by the CA, with SANs for hosts (IP
// addresses or DNS names).
func (p *pki) issue(certFile, keyFile, cn string, orgs, hosts []string, usage x509.ExtKeyUsage) error {
	key, err := newKey()
	if err != nil {
		return err
	}
	tmpl, err := template(cn, orgs)
	if err != nil {
		return err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
	for _, h := range hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, key.Public(), p.caKey)
	if err != nil {
		return fmt.Errorf("create certificate %s: %w", cn, err)
	}
	return p.writeKeyPair(certFile, keyFile, der, key)
}

// writeServiceAccountKey writes the key that signs service-account tokens
// and its public half, which verifies them.
func (p *pki) writeServiceAccountKey() error {
	key, err := newKey()
	if err != nil {
		return err
	}
	priv, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal service-account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("marshal service-account public key: %w", err)
	}
	if err := writeFile(p.path(saKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		return err
	}
	return writeFile(p.path(saPubFile), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

func (p *pki) writeKeyPair(certFile, keyFile string, der []byte, key crypto.Signer) error {
	priv, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key %s: %w", keyFile, err)
	}
	if err := writeFile(p.path(keyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		return err
	}
	return writeFile(p.path(certFile), certPEM(der), 0o644)
}

// clientTLS returns a TLS configuration that trusts the CA and presents the
// admin's certificate.
func (p *pki) clientTLS() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(p.path(adminCertFile), p.path(adminKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load admin certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.caCert)
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// certKubeconfig writes a kubeconfig for server that authenticates with the
// named certificate and key, all embedded, so the file stands alone.
func (p *pki) certKubeconfig(path, server, user, certFile, keyFile string) error {
	cert, err := os.ReadFile(p.path(certFile))
	if err != nil {
		return fmt.Errorf("read %s: %w", certFile, err)
	}
	key, err := os.ReadFile(p.path(keyFile))
	if err != nil {
		return fmt.Errorf("read %s: %w", keyFile, err)
	}
	auth := "    client-certificate-data: " + base64.StdEncoding.EncodeToString(cert) + "\n" +
		"    client-key-data: " + base64.StdEncoding.EncodeToString(key) + "\n"
	return writeFile(path, kubeconfig(server, user, p.caPEM, auth), kubeconfigMode)
}

// tokenKubeconfig writes a kubeconfig for server that authenticates with a
// bearer token.
func (p *pki) tokenKubeconfig(path, server, user, token string) error {
	return writeFile(path, kubeconfig(server, user, p.caPEM, "    token: "+token+"\n"), kubeconfigMode)
}

// kubeconfig renders a one-cluster, one-user kubeconfig; auth is the user's
// indented credential lines.
func kubeconfig(server, user string, caPEM []byte, auth string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Config\nclusters:\n- name: weft\n  cluster:\n    server: %s\n", yamlString(server))
	fmt.Fprintf(&b, "    certificate-authority-data: %s\n", base64.StdEncoding.EncodeToString(caPEM))
	fmt.Fprintf(&b, "users:\n- name: %s\n  user:\n%s", yamlString(user), auth)
	fmt.Fprintf(&b, "contexts:\n- name: weft\n  context:\n    cluster: weft\n    user: %s\ncurrent-context: weft\n",
		yamlString(user))
	return b.Bytes()
}

// yamlString quotes s as a YAML double-quoted scalar (a JSON string is one).
func yamlString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

func template(cn string, orgs []string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
	}, nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
