package kube

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// apiServer is a minimal stand-in for kube-apiserver's nodes and pods
// endpoints, in JSON, to test the REST client's requests and decoding.
type apiServer struct {
	t *testing.T

	mu      sync.Mutex
	reqs    []string // method, path, query (guarded by mu)
	patches []string // guarded by mu
	watches int      // guarded by mu
}

func typed(n *corev1.Node) *corev1.Node {
	n.APIVersion, n.Kind = "v1", "Node"
	return n
}

func (a *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.reqs = append(a.reqs, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
	a.mu.Unlock()
	if !strings.Contains(r.Header.Get("Accept"), "application/vnd.kubernetes.protobuf") && r.Method == http.MethodGet {
		a.t.Errorf("%s: Accept %q does not offer protobuf", r.URL, r.Header.Get("Accept"))
	}
	w.Header().Set("Content-Type", "application/json")
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodPatch && r.URL.Path == "/api/v1/nodes/n1/status":
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.patches = append(a.patches, r.Header.Get("Content-Type")+" "+string(body))
		a.mu.Unlock()
		_ = json.NewEncoder(w).Encode(typed(kubeNode("n1", []string{"10.244.1.0/24"}, nil)))
	case r.URL.Path == "/api/v1/nodes/n1":
		_ = json.NewEncoder(w).Encode(typed(kubeNode("n1", []string{"10.244.1.0/24"}, nil)))
	case r.URL.Path == "/api/v1/namespaces/kube-flannel/pods/flannel-x":
		_ = json.NewEncoder(w).Encode(&corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: "flannel-x", Namespace: "kube-flannel"}, Spec: corev1.PodSpec{NodeName: "n1"}})
	case r.URL.Path == "/api/v1/nodes" && q.Get("watch") == "true":
		a.serveWatch(w, q.Get("resourceVersion"))
	case r.URL.Path == "/api/v1/nodes":
		list := &corev1.NodeList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "NodeList"}, ListMeta: metav1.ListMeta{ResourceVersion: "10"}}
		if q.Get("continue") == "" {
			list.Items = []corev1.Node{*kubeNode("n1", []string{"10.244.1.0/24"}, peerAnn("192.168.1.1", mac1))}
			list.Continue = "page2"
		} else {
			list.Items = []corev1.Node{*kubeNode("n2", []string{"10.244.2.0/24"}, peerAnn("192.168.1.2", mac1))}
		}
		_ = json.NewEncoder(w).Encode(list)
	default:
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(&metav1.Status{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"},
			Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound, Message: r.URL.Path + " not found"})
	}
}

// serveWatch: from 10, a bookmark at 11 and n3 added at 12, then the server
// ends the watch; from 12, n1 deleted at 13, then the history is gone.
func (a *apiServer) serveWatch(w http.ResponseWriter, rv string) {
	a.mu.Lock()
	a.watches++
	a.mu.Unlock()
	enc := json.NewEncoder(w)
	ev := func(typ string, obj any) {
		_ = enc.Encode(map[string]any{"type": typ, "object": obj}) // a client gone mid-watch is the test's business
		w.(http.Flusher).Flush()
	}
	n := func(name, cidr, rv string, ann map[string]string) *corev1.Node {
		node := typed(kubeNode(name, []string{cidr}, ann))
		node.ResourceVersion = rv
		return node
	}
	switch rv {
	case "10":
		ev("BOOKMARK", &corev1.Node{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}, ObjectMeta: metav1.ObjectMeta{ResourceVersion: "11"}})
		ev("ADDED", n("n3", "10.244.3.0/24", "12", peerAnn("192.168.1.3", mac1)))
	case "12":
		ev("DELETED", n("n1", "10.244.1.0/24", "13", peerAnn("192.168.1.1", mac1)))
	default:
		ev("ERROR", &metav1.Status{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"}, Status: metav1.StatusFailure,
			Code: http.StatusGone, Reason: metav1.StatusReasonExpired, Message: "too old resource version: " + rv})
	}
}

func TestRESTAPI(t *testing.T) {
	srv := &apiServer{t: t}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	api, err := newRESTAPI(&rest.Config{Host: ts.URL}, "weftd/test")
	if err != nil {
		t.Fatal(err)
	}
	ctx := tctx(t)
	if _, err := api.GetNode(ctx, "missing"); !apierrors.IsNotFound(err) {
		t.Errorf("get a missing node: %v", err)
	}
	s := newTestStore(t, api, mustNetConf(t, netConfV4), nil, func(o *Options) {
		o.NodeName, o.PodName, o.PodNamespace, o.PageSize = "", "flannel-x", "kube-flannel", 1
	})
	l, err := s.AcquireLease(ctx, acquireReq(mustNetConf(t, netConfV4), vxAttrs("192.168.1.1")))
	if err != nil || l.Key() != "10.244.1.0-24" {
		t.Fatalf("acquire: %s %v", l.Key(), err)
	}
	if err := s.MarkUp(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := s.ListLeases(ctx)
	if err != nil || strings.Join(keysOf(snap.Leases), " ") != "10.244.1.0-24 10.244.2.0-24" || snap.Revision != 10 {
		t.Fatalf("list: %v at %d, %v", keysOf(snap.Leases), snap.Revision, err)
	}
	w := startWatch(t, s, snap)
	w.want("added 10.244.3.0-24, removed 10.244.1.0-24") // then 410: list again, which brings n1 back and drops n3
	w.want("added 10.244.1.0-24, removed 10.244.3.0-24")

	srv.mu.Lock()
	defer srv.mu.Unlock()
	want := []string{
		"application/strategic-merge-patch+json " + `{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-data":"{\"VNI\":1,\"VtepMAC\":\"` + mac1 +
			`\"}","flannel.alpha.coreos.com/backend-type":"vxlan","flannel.alpha.coreos.com/kube-subnet-manager":"true","flannel.alpha.coreos.com/public-ip":"192.168.1.1"}}}`,
	}
	if len(srv.patches) != 2 || srv.patches[0] != want[0] || !strings.Contains(srv.patches[1], `"reason":"FlannelIsUp"`) {
		t.Errorf("patches:\n%s", strings.Join(srv.patches, "\n"))
	}
	reqs := strings.Join(srv.reqs, "\n")
	for _, r := range []string{"GET /api/v1/namespaces/kube-flannel/pods/flannel-x?", "GET /api/v1/nodes?limit=1\n",
		"GET /api/v1/nodes?continue=page2&limit=1", "allowWatchBookmarks=true&resourceVersion=10&timeout=",
		"allowWatchBookmarks=true&resourceVersion=12&timeout=", "allowWatchBookmarks=true&resourceVersion=13&timeout="} {
		if !strings.Contains(reqs+"\n", r) {
			t.Errorf("no request %q in\n%s", r, reqs)
		}
	}
}
