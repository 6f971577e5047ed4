package netpol

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// The API side: three informers (pods, namespaces, networkpolicies) over
// REST clients of just the two API groups, each object stripped by a
// transform to what Cluster keeps before the informer stores it (a pod
// becomes the Pod Cluster holds, stored once). Their handlers update
// Cluster under mu and wake the controller.

// restClient returns a REST client for one API group version, protobuf
// where the server speaks it.
func restClient(cfg *rest.Config, gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
	sch := runtime.NewScheme()
	if err := corev1.AddToScheme(sch); err != nil {
		return nil, err
	}
	if err := networkingv1.AddToScheme(sch); err != nil {
		return nil, err
	}
	metav1.AddToGroupVersion(sch, schema.GroupVersion{Version: "v1"})
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion, cfg.APIPath = &gv, apiPath
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(sch).WithoutConversion()
	c, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", gv, err)
	}
	return c, nil
}

// informers keeps a Cluster from the API.
type informers struct {
	mu       sync.Mutex
	cluster  *Cluster
	compiler *Compiler
	wake     func()
	run      []cache.Controller
	// resources are the informers' resources and clients, for probe.
	resources []resource
}

type resource struct {
	c    *rest.RESTClient
	name string
}

func newInformers(cfg *rest.Config, wake func()) (*informers, error) {
	core, err := restClient(cfg, corev1.SchemeGroupVersion, "/api")
	if err != nil {
		return nil, err
	}
	netv1, err := restClient(cfg, networkingv1.SchemeGroupVersion, "/apis")
	if err != nil {
		return nil, err
	}
	inf := &informers{cluster: NewCluster(), wake: wake}
	add := func(c *rest.RESTClient, name string, obj runtime.Object, transform cache.TransformFunc, set func(any) bool, del func(any) bool) {
		inf.resources = append(inf.resources, resource{c, name})
		lw := cache.NewListWatchFromClient(c, name, metav1.NamespaceAll, fields.Everything())
		_, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{
			ListerWatcher: lw,
			ObjectType:    obj,
			Transform:     transform,
			Handler: cache.ResourceEventHandlerFuncs{
				AddFunc:    func(o any) { inf.update(func() bool { return set(o) }) },
				UpdateFunc: func(_, o any) { inf.update(func() bool { return set(o) }) },
				DeleteFunc: func(o any) {
					if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
						o = t.Obj
					}
					inf.update(func() bool { return del(o) })
				},
			},
		})
		inf.run = append(inf.run, ctrl)
	}
	add(core, "pods", &corev1.Pod{}, stripPod, inf.setPod, inf.deletePod)
	add(core, "namespaces", &corev1.Namespace{}, stripMeta, inf.setNamespace, inf.deleteNamespace)
	add(netv1, "networkpolicies", &networkingv1.NetworkPolicy{}, stripMeta, inf.setPolicy, inf.deletePolicy)
	return inf, nil
}

// probe lists one object of each resource, for the API server's error
// when the informers cannot list (RBAC, most often).
func (inf *informers) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, r := range inf.resources {
		if err := r.c.Get().Resource(r.name).Param("limit", "1").Do(ctx).Error(); err != nil {
			return fmt.Errorf("list %s: %w", r.name, err)
		}
	}
	return nil
}

// start runs the informers until ctx ends; wg waits for them.
func (inf *informers) start(ctx context.Context, wg *sync.WaitGroup) {
	for _, c := range inf.run {
		wg.Go(func() { c.RunWithContext(ctx) })
	}
}

// synced reports whether every informer has listed once.
func (inf *informers) synced() bool {
	for _, c := range inf.run {
		if !c.HasSynced() {
			return false
		}
	}
	return true
}

// update applies a change to the cluster, and wakes the controller when
// it changed what policy reads.
func (inf *informers) update(f func() bool) {
	inf.mu.Lock()
	changed := f()
	inf.mu.Unlock()
	if changed {
		inf.wake()
	}
}

// stripMeta drops managed fields and annotations, which policy never reads.
func stripMeta(o any) (any, error) {
	if m, ok := o.(metav1.Object); ok {
		m.SetManagedFields(nil)
		m.SetAnnotations(nil)
	}
	return o, nil
}

// podObject is what the pod informer stores: the fields of its key and
// resource version, and the Pod that Cluster holds too (the same one: a pod
// is kept once).
type podObject struct {
	metav1.ObjectMeta
	pod *Pod
}

// stripPod turns an API pod into a podObject, keeping only what Pod holds.
// Anything else (an object already turned) is returned as it is.
func stripPod(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	return &podObject{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace,
		ResourceVersion: p.ResourceVersion}, pod: podOf(p)}, nil
}

// podOf converts an API pod, keeping of its container ports the named ones.
func podOf(p *corev1.Pod) *Pod {
	out := &Pod{Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName, Labels: p.Labels,
		HostNetwork: p.Spec.HostNetwork,
		Finished:    p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed,
		Terminating: p.DeletionTimestamp != nil, Created: p.CreationTimestamp.Time}
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out.IPs = append(out.IPs, a.Unmap())
		}
	}
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			proto := Protocol(port.Protocol)
			if proto == "" {
				proto = TCP
			}
			if port.Name != "" && port.ContainerPort > 0 && port.ContainerPort < 65536 {
				out.Ports = append(out.Ports, NamedPort{port.Name, proto, uint16(port.ContainerPort)})
			}
		}
	}
	return out
}

// setPod stores a pod. A pod whose update changed nothing policy reads
// (most updates: status conditions, annotations, resource versions) keeps
// its Pod, so that the Compiler need not compile again the policies that
// read its namespace, and does not wake the controller.
func (inf *informers) setPod(o any) bool {
	p, ok := o.(*podObject)
	if !ok {
		return false
	}
	key := p.pod.Key()
	if old := inf.cluster.Pods[key]; old != nil && reflect.DeepEqual(old, p.pod) {
		p.pod = old
		return false
	}
	inf.cluster.Pods[key] = p.pod
	return true
}

func (inf *informers) deletePod(o any) bool {
	m, ok := o.(metav1.Object)
	if !ok {
		return false
	}
	delete(inf.cluster.Pods, m.GetNamespace()+"/"+m.GetName())
	return true
}

func (inf *informers) setNamespace(o any) bool {
	n, ok := o.(*corev1.Namespace)
	if !ok {
		return false
	}
	if old := inf.cluster.Namespaces[n.Name]; old != nil && maps.Equal(old.Labels, n.Labels) {
		return false
	}
	inf.cluster.Namespaces[n.Name] = &Namespace{Name: n.Name, Labels: n.Labels}
	return true
}

func (inf *informers) deleteNamespace(o any) bool {
	m, ok := o.(metav1.Object)
	if !ok {
		return false
	}
	delete(inf.cluster.Namespaces, m.GetName())
	return true
}

func (inf *informers) setPolicy(o any) bool {
	p, ok := o.(*networkingv1.NetworkPolicy)
	if !ok {
		return false
	}
	pol := &Policy{Namespace: p.Namespace, Name: p.Name, Spec: p.Spec}
	inf.cluster.Policies[pol.Key()] = pol
	return true
}

func (inf *informers) deletePolicy(o any) bool {
	m, ok := o.(metav1.Object)
	if !ok {
		return false
	}
	delete(inf.cluster.Policies, m.GetNamespace()+"/"+m.GetName())
	return true
}

// compile compiles the cluster as it is now for node, reusing what the
// policies untouched since the last call compiled to (the handlers replace
// objects, never change them in place, as Compiler needs).
func (inf *informers) compile(node string) (*Ruleset, []error) {
	inf.mu.Lock()
	defer inf.mu.Unlock()
	if inf.compiler == nil || inf.compiler.node != node {
		inf.compiler = NewCompiler(node)
	}
	return inf.compiler.Compile(inf.cluster)
}
