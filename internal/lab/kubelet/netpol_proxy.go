//go:build linux

package kubelet

// kube-proxy on the lab's nodes (Options.KubeProxy). Kubernetes'
// NetworkPolicy suite probes each server pod through its Service's ClusterIP
// (test/e2e/network/netpol/probe.go: "we stopped [probing DNS names] because
// we wanted to support netpol testing in non dns enabled clusters"), so a lab
// that runs it needs Services to work: kube-proxy v1.36.3 per node, in
// iptables mode, in the node's network and mount namespaces like kubelet,
// and the controller manager's EndpointSlice controller.
//
//   - iptables mode, not nftables: the lab's apiserver has no endpoints for
//     the kubernetes Service (kubeapi runs it with
//     --endpoint-reconciler-type=none), and weftd reaches it through the
//     node's own DNAT of 10.96.0.1:443 in nat OUTPUT (prepareNetwork).
//     kube-proxy's iptables mode leaves a Service without endpoints out of
//     nat and rejects it in filter OUTPUT, after that DNAT; its nftables mode
//     rejects it at priority -110, before any DNAT.
//   - detectLocalMode NodeCIDR: traffic from the node's own podCIDR is the
//     pods'; kube-proxy masquerades only what comes from elsewhere, and a
//     pod that reaches itself through its Service (hairpin). A pod's probe of
//     another pod's Service keeps the pod's address, so a NetworkPolicy sees
//     the real client.
//   - Every conntrack setting is 0 (left as it is): kube-proxy would
//     otherwise raise nf_conntrack_max and the hash size, which are the
//     host's, not the node namespace's. localhostNodePorts is off, so it
//     sets no route_localnet either. The sysctls it reads or sets otherwise
//     are the node namespace's own.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/weft-net/weft/internal/lab"
)

// proxyControllers are the controllers Services need besides controllers():
// kube-proxy reads EndpointSlices.
func proxyControllers() []string { return []string{"endpointslice-controller"} }

// proxyHealthzPort is kube-proxy's health port (its default), on the node's
// address.
const proxyHealthzPort = 10256

// kubeProxyConfig returns the node's KubeProxyConfiguration.
func (n *node) kubeProxyConfig(kubeconfig string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %[1]s
hostnameOverride: %[2]s
bindAddress: %[3]s
healthzBindAddress: %[3]s:%[4]d
metricsBindAddress: 127.0.0.1:10249
mode: iptables
detectLocalMode: NodeCIDR
iptables:
  localhostNodePorts: false
  minSyncPeriod: 0s
  syncPeriod: 30s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
oomScoreAdj: 0
`, kubeconfig, n.name, n.ip, proxyHealthzPort)
}

// startKubeProxies starts kube-proxy on every node and waits until each
// answers /healthz with 200: it has the Node and has written its rules.
func (l *Lab) startKubeProxies(ctx context.Context) error {
	var errs []error
	for _, n := range l.nodes {
		kc := n.path("kube-proxy.kubeconfig")
		// system:kube-proxy is bound to the ClusterRole system:node-proxier
		// by the apiserver's bootstrap policy.
		if err := l.cp.ClientKubeconfig(kc, "system:kube-proxy", nil); err != nil {
			return err
		}
		if err := n.startKubeProxy(l.o.Bins, kc); err != nil {
			errs = append(errs, fmt.Errorf("node %d (%s): %w", n.i, n.name, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("kube-proxy: %w", errs[0])
	}
	return l.poll(ctx, "kube-proxy /healthz on every node", func() (bool, string, error) {
		var wg sync.WaitGroup
		states := make([]string, len(l.nodes))
		for i, n := range l.nodes {
			wg.Go(func() {
				if n.proxy.Exited() {
					states[i] = fmt.Sprintf("%s: exited (%v)\n%s", n.name, n.proxy.ExitError(), logTail(n.proxy.Log(), 10))
					return
				}
				if err := n.proxyHealthy(ctx); err != nil {
					states[i] = fmt.Sprintf("%s: %v", n.name, err)
				}
			})
		}
		wg.Wait()
		var bad []string
		for _, s := range states {
			if s != "" {
				bad = append(bad, s)
			}
		}
		return len(bad) == 0, strings.Join(bad, "; "), nil
	})
}

// startKubeProxy writes the node's kube-proxy configuration and starts it in
// the node's namespaces.
func (n *node) startKubeProxy(b Bins, kubeconfig string) error {
	cfgPath := n.path("kube-proxy-config.yaml")
	if err := os.WriteFile(cfgPath, []byte(n.kubeProxyConfig(kubeconfig)), 0o644); err != nil {
		return err
	}
	argv := append(n.nsenter(), b.KubeProxy, "--config="+cfgPath, "--v=1")
	p, err := startProc("kube-proxy", n.path("logs/kube-proxy.log"), n.detach, nil, argv)
	if err != nil {
		return err
	}
	n.proxy = p
	return nil
}

// proxyHealthy asks the node's kube-proxy for /healthz, from the node's
// network namespace (the socket is made there; the rest of the request runs
// anywhere).
func (n *node) proxyHealthy(ctx context.Context) error {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := lab.Do(n.ns, func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s/healthz", net.JoinHostPort(n.ip.String(), fmt.Sprint(proxyHealthzPort)))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}
