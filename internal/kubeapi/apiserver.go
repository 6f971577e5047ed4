//go:build linux

package kubeapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/proc"
)

const apiserverName = "kube-apiserver"

// portAttempts is how often Start picks another free port when the
// apiserver finds the one it was given taken (another process bound it
// between the check and the apiserver's bind).
const portAttempts = 3

// errPortInUse marks an apiserver that exited because its port was taken.
var errPortInUse = errors.New("apiserver port in use")

// startAPIServerFirst picks the port (a free one unless Options.Port is
// set), writes the kubeconfigs for it and starts the apiserver, trying
// another free port when the chosen one was taken meanwhile.
func (c *ControlPlane) startAPIServerFirst(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		port := c.o.Port
		if port == 0 {
			var err error
			if port, err = freePort(c.o.BindAddress.String(), c.o.NetNS); err != nil {
				return err
			}
		}
		c.url = c.o.apiserverURL(port)
		c.o.Port = port
		if err := c.writeKubeconfigs(); err != nil {
			return err
		}
		err := c.StartAPIServer(ctx)
		if err == nil || !errors.Is(err, errPortInUse) || attempt == portAttempts {
			return err
		}
		c.log.Info("kube-apiserver port was taken, trying another", "port", port)
		c.o.Port = 0
	}
}

func (c *ControlPlane) writeKubeconfigs() error {
	if err := c.pki.certKubeconfig(c.AdminKubeconfig(), c.url, adminUser, adminCertFile, adminKeyFile); err != nil {
		return fmt.Errorf("admin kubeconfig: %w", err)
	}
	if err := c.pki.certKubeconfig(c.kcmKubeconfig(), c.url, kcmUser, kcmCertFile, kcmKeyFile); err != nil {
		return fmt.Errorf("controller-manager kubeconfig: %w", err)
	}
	return nil
}

// StartAPIServer starts the apiserver again after StopAPIServer, on the same
// address, port, certificates, etcd and prefix, and waits until it answers
// /readyz. It returns ErrRunning while the apiserver runs.
func (c *ControlPlane) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	if c.apiserver != nil && !c.apiserver.Exited() {
		c.mu.Unlock()
		return ErrRunning
	}
	begin := time.Now()
	p, err := startProc(apiserverName, c.logPath(apiserverName), c.o.NetNS, c.o.Detach, c.apiserverArgs())
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.apiserver = p
	c.mu.Unlock()
	c.log.Info("started kube-apiserver", "pid", p.Pid(), "url", c.url, "log", p.Log())
	if err := c.waitReady(ctx, p); err != nil {
		return err
	}
	c.log.Info("kube-apiserver ready", "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// StopAPIServer stops the apiserver (SIGTERM, then SIGKILL) and waits until
// it has exited; the controller manager keeps running and retries. Stopping
// a stopped apiserver is success.
func (c *ControlPlane) StopAPIServer() error {
	c.mu.Lock()
	p := c.apiserver
	c.apiserver = nil
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := p.Stop(stopGrace); err != nil {
		return err
	}
	c.log.Info("stopped kube-apiserver")
	return nil
}

func (c *ControlPlane) apiserverArgs() []string {
	o, pki := c.o, c.pki
	return []string{
		o.Bins.APIServer,
		"--bind-address=" + o.BindAddress.String(),
		"--advertise-address=" + o.BindAddress.String(),
		"--secure-port=" + strconv.Itoa(o.Port),
		"--cert-dir=" + pki.dir,
		"--tls-cert-file=" + pki.path(servingCert),
		"--tls-private-key-file=" + pki.path(servingKey),
		"--client-ca-file=" + pki.path(caCertFile),
		"--authorization-mode=Node,RBAC",
		"--etcd-servers=" + o.EtcdURL,
		"--etcd-prefix=" + o.EtcdPrefix,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.path(saPubFile),
		"--service-account-signing-key-file=" + pki.path(saKeyFile),
		"--service-cluster-ip-range=" + joinPrefixes(o.ServiceCIDRs),
		// No kubelet or kube-proxy runs here: nothing would route to the
		// kubernetes service, and a loopback endpoint fails validation.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
	}
}

// waitReady polls /readyz until it answers 200, failing early with the log's
// tail when the process exits.
func (c *ControlPlane) waitReady(ctx context.Context, p *proc.Proc) error {
	ctx, cancel := context.WithTimeout(ctx, c.o.StartTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := "no answer yet"
	for {
		status, body, err := c.rawGet(ctx, "/readyz")
		switch {
		case err == nil && status == http.StatusOK:
			return nil
		case err == nil:
			last = fmt.Sprintf("status %d: %s", status, strings.TrimSpace(body))
		case ctx.Err() == nil: // keep the last answer, not the deadline
			last = err.Error()
		}
		select {
		case <-p.Done():
			err := p.ExitError()
			if logHas(p.Log(), "address already in use") {
				err = fmt.Errorf("%w: %w", errPortInUse, err)
			}
			return err
		case <-ctx.Done():
			return p.Failure(fmt.Errorf("wait for kube-apiserver /readyz at %s (last: %s): %w", c.url, last, ctx.Err()))
		case <-tick.C:
		}
	}
}

// logHas reports whether the last part of a log contains s.
func logHas(path, s string) bool {
	return strings.Contains(logTail(path), s)
}

// freePort returns a TCP port that was free on host a moment ago, inside the
// network namespace netns when it is set.
func freePort(host, netns string) (int, error) {
	var port int
	listen := func() error {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return err
		}
		port = l.Addr().(*net.TCPAddr).Port
		return l.Close()
	}
	var err error
	if netns != "" {
		err = lab.Do(netns, listen)
	} else {
		err = listen()
	}
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	return port, nil
}
