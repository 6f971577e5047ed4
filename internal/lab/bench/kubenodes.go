//go:build linux

package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weft-net/weft/internal/lab"
	"github.com/weft-net/weft/internal/store/kube"
)

// flannelPrefix is flannel's annotation prefix.
const flannelPrefix = "flannel.alpha.coreos.com/"

// kubeNodeName names the Node of a simulated peer after its address, as
// cloud providers name nodes.
func kubeNodeName(p peer) string {
	return "ip-" + strings.ReplaceAll(p.publicIP.String(), ".", "-") + ".bench.internal"
}

// flannelAnnotations are what a flannel (or weft) vxlan node writes.
func flannelAnnotations(p peer) map[string]string {
	return map[string]string{
		flannelPrefix + "kube-subnet-manager": "true",
		flannelPrefix + "backend-type":        "vxlan",
		flannelPrefix + "backend-data":        `{"VNI":1,"VtepMAC":"` + p.mac.String() + `"}`,
		flannelPrefix + "public-ip":           p.publicIP.String(),
	}
}

// kubeNode returns the JSON of a Node as a kubelet registers it and its
// controllers and flannel complete it: podCIDR, labels, annotations (ann on
// top of the kubelet's and the controller manager's), a full status and
// managedFields. About 7 KB, like a real node's.
func kubeNode(name, podCIDR, internalIP string, seed int, ann map[string]string) []byte {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	annotations := map[string]string{
		"kubeadm.alpha.kubernetes.io/cri-socket":                 "unix:///run/containerd/containerd.sock",
		"node.alpha.kubernetes.io/ttl":                           "0",
		"volumes.kubernetes.io/controller-managed-attach-detach": "true",
	}
	for k, v := range ann {
		annotations[k] = v
	}
	qty := func(s string) resource.Quantity { return resource.MustParse(s) }
	capacity := corev1.ResourceList{"cpu": qty("4"), "ephemeral-storage": qty("101430960Ki"), "hugepages-1Gi": qty("0"),
		"hugepages-2Mi": qty("0"), "memory": qty("16365512Ki"), "pods": qty("110")}
	allocatable := corev1.ResourceList{"cpu": qty("4"), "ephemeral-storage": qty("93478772582"), "hugepages-1Gi": qty("0"),
		"hugepages-2Mi": qty("0"), "memory": qty("16263112Ki"), "pods": qty("110")}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, LastHeartbeatTime: now, LastTransitionTime: now, Reason: reason, Message: msg}
	}
	id := hexID(name, 16)
	n := corev1.Node{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations, ManagedFields: kubeManagedFields(now),
			Labels: map[string]string{
				"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": "m6i.xlarge",
				"topology.kubernetes.io/region": "eu-west-1", "topology.kubernetes.io/zone": fmt.Sprintf("eu-west-1%c", 'a'+seed%3),
			}},
		Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}, ProviderID: "aws:///eu-west-1a/i-" + id[:17]},
		Status: corev1.NodeStatus{
			Capacity: capacity, Allocatable: allocatable,
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "FlannelIsUp", "Flannel is running on this node"),
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
			},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internalIP}, {Type: corev1.NodeHostName, Address: name},
				{Type: corev1.NodeInternalDNS, Address: name}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
			NodeInfo: corev1.NodeSystemInfo{MachineID: id, SystemUUID: hexID(name+"uuid", 16), BootID: hexID(name+"boot", 16),
				KernelVersion: "6.8.0-1021-aws", OSImage: "Ubuntu 24.04.1 LTS", ContainerRuntimeVersion: "containerd://2.0.5",
				KubeletVersion: "v1.36.3", OperatingSystem: "linux", Architecture: "amd64"},
			Images:          kubeImages(),
			RuntimeHandlers: []corev1.NodeRuntimeHandler{{Name: "runc", Features: &corev1.NodeRuntimeHandlerFeatures{}}, {Name: ""}},
		},
	}
	data, err := json.Marshal(n)
	if err != nil {
		panic(fmt.Sprintf("encode node %s: %v", name, err)) // the types are fixed: cannot fail
	}
	return data
}

// kubeImages are the images of a typical node: the system daemons' and a
// few workloads', by digest and by tag.
func kubeImages() []corev1.ContainerImage {
	images := []struct {
		repo, tag string
		size      int64
	}{
		{"ghcr.io/weft-net/weft", "v0.3.0", 41873229}, {"registry.k8s.io/kube-proxy", "v1.36.3", 30893481},
		{"registry.k8s.io/pause", "3.10", 320368}, {"registry.k8s.io/coredns/coredns", "v1.12.1", 20939036},
		{"docker.io/library/nginx", "1.27.4", 72195292}, {"quay.io/prometheus/node-exporter", "v1.9.1", 12873012},
		{"docker.io/grafana/promtail", "3.4.2", 89263310}, {"registry.k8s.io/ingress-nginx/controller", "v1.12.1", 105384711},
		{"docker.io/bitnami/redis", "7.4.2", 104981530}, {"quay.io/jetstack/cert-manager-controller", "v1.17.1", 18473619},
	}
	out := make([]corev1.ContainerImage, len(images))
	for i, im := range images {
		out[i] = corev1.ContainerImage{Names: []string{im.repo + "@sha256:" + hexID(im.repo, 32), im.repo + ":" + im.tag}, SizeBytes: im.size}
	}
	return out
}

// kubeManagedFields are the managedFields of a kubelet-registered Node that
// the controller manager gave a podCIDR and flanneld annotated.
func kubeManagedFields(now metav1.Time) []metav1.ManagedFieldsEntry {
	entry := func(manager, sub, fields string) metav1.ManagedFieldsEntry {
		return metav1.ManagedFieldsEntry{Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1",
			Time: &now, FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(fields), Subresource: sub}
	}
	cond := func(types ...string) string {
		var b strings.Builder
		for i, t := range types {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"k:{\"type\":\"%s\"}":{".":{},"f:lastHeartbeatTime":{},"f:lastTransitionTime":{},"f:message":{},"f:reason":{},"f:status":{},"f:type":{}}`, t)
		}
		return b.String()
	}
	res := `"f:cpu":{},"f:ephemeral-storage":{},"f:hugepages-1Gi":{},"f:hugepages-2Mi":{},"f:memory":{},"f:pods":{}`
	return []metav1.ManagedFieldsEntry{
		entry("kubeadm", "", `{"f:metadata":{"f:annotations":{"f:kubeadm.alpha.kubernetes.io/cri-socket":{}}}}`),
		entry("kubelet", "", `{"f:metadata":{"f:annotations":{".":{},"f:volumes.kubernetes.io/controller-managed-attach-detach":{}},`+
			`"f:labels":{".":{},"f:beta.kubernetes.io/arch":{},"f:beta.kubernetes.io/os":{},"f:kubernetes.io/arch":{},`+
			`"f:kubernetes.io/hostname":{},"f:kubernetes.io/os":{},"f:node.kubernetes.io/instance-type":{},`+
			`"f:topology.kubernetes.io/region":{},"f:topology.kubernetes.io/zone":{}}},"f:spec":{"f:providerID":{}}}`),
		entry("kube-controller-manager", "", `{"f:metadata":{"f:annotations":{"f:node.alpha.kubernetes.io/ttl":{}}},`+
			`"f:spec":{"f:podCIDR":{},"f:podCIDRs":{".":{},"v:\"10.0.0.0/24\"":{}}}}`),
		entry("flanneld", "status", `{"f:metadata":{"f:annotations":{"f:flannel.alpha.coreos.com/backend-data":{},`+
			`"f:flannel.alpha.coreos.com/backend-type":{},"f:flannel.alpha.coreos.com/kube-subnet-manager":{},`+
			`"f:flannel.alpha.coreos.com/public-ip":{}}},"f:status":{"f:conditions":{`+cond("NetworkUnavailable")+`}}}`),
		entry("kubelet", "status", `{"f:status":{"f:addresses":{".":{},"k:{\"type\":\"Hostname\"}":{".":{},"f:address":{},"f:type":{}},`+
			`"k:{\"type\":\"InternalDNS\"}":{".":{},"f:address":{},"f:type":{}},"k:{\"type\":\"InternalIP\"}":{".":{},"f:address":{},"f:type":{}}},`+
			`"f:allocatable":{`+res+`},"f:capacity":{`+res+`},"f:conditions":{".":{},`+cond("DiskPressure", "MemoryPressure", "PIDPressure", "Ready")+`},`+
			`"f:daemonEndpoints":{"f:kubeletEndpoint":{"f:Port":{}}},"f:images":{},"f:nodeInfo":{"f:architecture":{},"f:bootID":{},`+
			`"f:containerRuntimeVersion":{},"f:kernelVersion":{},"f:kubeProxyVersion":{},"f:kubeletVersion":{},"f:machineID":{},`+
			`"f:operatingSystem":{},"f:osImage":{},"f:systemUUID":{}},"f:runtimeHandlers":{}}}`),
	}
}

// hexID is a stable hex string of n bytes derived from s.
func hexID(s string, n int) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:n])
}

// kubeClient talks to the bench's apiserver from inside the switch
// namespace (ns; "": this process's) as system:masters: raw JSON creates, and a REST client over
// core/v1 speaking protobuf (the one weftd's store uses) for lists.
type kubeClient struct {
	hc  *http.Client
	rc  *rest.RESTClient
	pc  runtime.ParameterCodec
	url string
}

func newKubeClient(kubeconfig, ns string) (*kubeClient, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", kubeconfig, err)
	}
	if ns != "" {
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return lab.DialContext(ctx, ns, network, addr)
		}
	}
	cfg.QPS, cfg.UserAgent = -1, "weft-lab-bench" // no client-side throttling
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	rc, pc, err := kube.NewRESTClient(cfg, hc)
	if err != nil {
		return nil, err
	}
	return &kubeClient{hc: hc, rc: rc, pc: pc, url: strings.TrimRight(cfg.Host, "/")}, nil
}

func (c *kubeClient) close() { c.hc.CloseIdleConnections() }

// do sends a request and fails on any status but want.
func (c *kubeClient) do(ctx context.Context, method, path string, body []byte, want int) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s: status %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(out[:min(len(out), 500)]))
	}
	return out, nil
}

// create creates a Node from its JSON.
func (c *kubeClient) create(ctx context.Context, node []byte) error {
	_, err := c.do(ctx, http.MethodPost, "/api/v1/nodes?fieldManager=kubelet", node, http.StatusCreated)
	return err
}

// createAll creates the Nodes of peers with workers requests in flight.
func (c *kubeClient) createAll(ctx context.Context, peers []peer, workers int) error {
	return parallel(ctx, peers, workers, func(ctx context.Context, p peer) error { return c.create(ctx, simNode(p)) })
}

// deleteAll deletes the Nodes of peers.
func (c *kubeClient) deleteAll(ctx context.Context, peers []peer) error {
	return parallel(ctx, peers, 8, func(ctx context.Context, p peer) error {
		_, err := c.do(ctx, http.MethodDelete, "/api/v1/nodes/"+kubeNodeName(p), nil, http.StatusOK)
		return err
	})
}

// parallel runs fn for every peer, workers at a time, and returns the first
// error (which stops the rest).
func parallel(ctx context.Context, peers []peer, workers int, fn func(context.Context, peer) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan peer)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for p := range next {
				if err := fn(ctx, p); err != nil {
					cancel(err)
				}
			}
		})
	}
	for _, p := range peers {
		if ctx.Err() != nil {
			break
		}
		next <- p
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// simNode is the Node of a simulated peer.
func simNode(p peer) []byte {
	return kubeNode(kubeNodeName(p), p.subnet.String(), p.publicIP.String(), int(p.mac[5]), flannelAnnotations(p))
}

// size returns the size of Node name as the apiserver returns it, in JSON
// and in protobuf.
func (c *kubeClient) size(ctx context.Context, name string) (jsonBytes, protoBytes int, _ error) {
	js, err := c.do(ctx, http.MethodGet, "/api/v1/nodes/"+name, nil, http.StatusOK)
	if err != nil {
		return 0, 0, err
	}
	pb, err := c.rc.Get().UseProtobufAsDefault().Resource("nodes").Name(name).DoRaw(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("get node %s (protobuf): %w", name, err)
	}
	return len(js), len(pb), nil
}

// list lists every Node as weftd's store does (protobuf, pages of 100,
// decoded into corev1.NodeList) and returns how many there are.
func (c *kubeClient) list(ctx context.Context) (int, error) {
	n := 0
	opts := metav1.ListOptions{Limit: 100}
	for {
		l := &corev1.NodeList{}
		if err := c.rc.Get().UseProtobufAsDefault().Resource("nodes").VersionedParams(&opts, c.pc).Do(ctx).Into(l); err != nil {
			return n, fmt.Errorf("list nodes: %w", err)
		}
		n += len(l.Items)
		if l.Continue == "" {
			return n, nil
		}
		opts.Continue = l.Continue
	}
}
