package kube

import (
	"context"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// API is the part of the Kubernetes API the store uses; RBAC as in
// kube-flannel.yml: nodes get, list, watch; nodes/status patch; pods get.
// Connect returns the real one; tests adapt client-go's fake clientset.
type API interface {
	GetNode(ctx context.Context, name string) (*corev1.Node, error)
	// ListNodes lists one page of Nodes, calling each with every Node as it
	// is read, and returns the page's metadata. The Nodes may hold only
	// metadata.name, resourceVersion and annotations, and spec.podCIDR(s);
	// each may keep their fields but not the Node itself.
	ListNodes(ctx context.Context, opts metav1.ListOptions, each func(*corev1.Node)) (metav1.ListMeta, error)
	WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	// PatchNodeStatus sends a strategic merge patch to nodes/<name>/status.
	PatchNodeStatus(ctx context.Context, name string, patch []byte) error
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

// Connect builds the API client as flanneld does: from the kubeconfig file
// and/or the API server URL when either is given (the URL overrides the
// file's server), else from the pod's service account (in-cluster config:
// KUBERNETES_SERVICE_HOST/PORT, the CA and the token, which client-go
// re-reads as it rotates). It does no network I/O.
//
// The client is a REST client over a scheme of core/v1 alone, speaking
// protobuf: client-go's typed clients register every API group and carry
// apply configurations and OpenAPI models, which would more than double
// weftd's binary for five requests.
func Connect(apiURL, kubeconfig, userAgent string) (API, error) {
	cfg, err := RESTConfig(apiURL, kubeconfig)
	if err != nil {
		return nil, err
	}
	return newRESTAPI(cfg, userAgent)
}

// RESTConfig returns the client configuration Connect uses: from the
// kubeconfig file and/or the API server URL when either is given, else
// in-cluster.
func RESTConfig(apiURL, kubeconfig string) (*rest.Config, error) {
	if apiURL == "" && kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes client: no --kubeconfig-file or --kube-api-url, and in-cluster config: %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags(apiURL, kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cfg, nil
}

// restAPI is API over client-go's REST client.
type restAPI struct {
	c  *rest.RESTClient
	pc runtime.ParameterCodec
}

func newRESTAPI(cfg *rest.Config, userAgent string) (*restAPI, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = userAgent
	// A start-up list is paged: let its pages through client-side
	// throttling at once (API Priority and Fairness protects the server).
	cfg.QPS, cfg.Burst = 20, 100
	c, pc, err := NewRESTClient(cfg, nil)
	if err != nil {
		return nil, err
	}
	return &restAPI{c: c, pc: pc}, nil
}

// NewRESTClient returns a REST client of cfg's API server over a scheme of
// core/v1 alone (the client the store uses; protobuf where a request asks
// for it) and the parameter codec for its list and watch options. hc, when
// set, is the HTTP client to send through; otherwise one is made from cfg.
func NewRESTClient(cfg *rest.Config, hc *http.Client) (*rest.RESTClient, runtime.ParameterCodec, error) {
	sch := runtime.NewScheme()
	if err := corev1.AddToScheme(sch); err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	metav1.AddToGroupVersion(sch, schema.GroupVersion{Version: "v1"})
	cfg = rest.CopyConfig(cfg)
	gv := corev1.SchemeGroupVersion
	cfg.GroupVersion, cfg.APIPath = &gv, "/api"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(sch).WithoutConversion()
	var c *rest.RESTClient
	var err error
	if hc != nil {
		c, err = rest.RESTClientForConfigAndClient(cfg, hc)
	} else {
		c, err = rest.RESTClientFor(cfg)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, runtime.NewParameterCodec(sch), nil
}

func (a *restAPI) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	n := &corev1.Node{}
	err := a.c.Get().UseProtobufAsDefault().Resource("nodes").Name(name).Do(ctx).Into(n)
	return n, err
}

// ListNodes decodes the page as it arrives, into Nodes that hold only what
// the store reads (nodelist.go).
func (a *restAPI) ListNodes(ctx context.Context, opts metav1.ListOptions, each func(*corev1.Node)) (metav1.ListMeta, error) {
	body, err := a.c.Get().UseProtobufAsDefault().Resource("nodes").VersionedParams(&opts, a.pc).Stream(ctx)
	if err != nil {
		return metav1.ListMeta{}, err
	}
	defer body.Close()
	return decodeNodeList(body, each)
}

func (a *restAPI) WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	var timeout time.Duration
	if opts.TimeoutSeconds != nil {
		timeout = time.Duration(*opts.TimeoutSeconds) * time.Second
	}
	opts.Watch = true
	return a.c.Get().UseProtobufAsDefault().Resource("nodes").VersionedParams(&opts, a.pc).Timeout(timeout).Watch(ctx)
}

func (a *restAPI) PatchNodeStatus(ctx context.Context, name string, patch []byte) error {
	return a.c.Patch(types.StrategicMergePatchType).Resource("nodes").Name(name).SubResource("status").
		Body(patch).Do(ctx).Error()
}

func (a *restAPI) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	p := &corev1.Pod{}
	err := a.c.Get().UseProtobufAsDefault().Namespace(namespace).Resource("pods").Name(name).Do(ctx).Into(p)
	return p, err
}
