package kube

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	goruntime "runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
)

// fullNode is a Node as a kubelet and flannel leave it: status, images,
// managedFields and annotations the store does not read.
func fullNode(i int) corev1.Node {
	now := metav1.NewTime(time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC))
	n := corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("node-%04d", i), UID: "5e0c2a4e-0000-4000-8000-000000000001", ResourceVersion: fmt.Sprint(1000 + i),
			CreationTimestamp: now,
			Labels:            map[string]string{"kubernetes.io/hostname": fmt.Sprintf("node-%04d", i), "kubernetes.io/os": "linux"},
			Annotations: map[string]string{
				"node.alpha.kubernetes.io/ttl":                           "0",
				"volumes.kubernetes.io/controller-managed-attach-detach": "true",
				DefaultPrefix + "/kube-subnet-manager":                   "true",
				DefaultPrefix + "/backend-type":                          "vxlan",
				DefaultPrefix + "/backend-data":                          fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:00:%02x:%02x"}`, i>>8&0xff, i&0xff),
				DefaultPrefix + "/public-ip":                             fmt.Sprintf("192.168.%d.%d", i>>8&0xff, i&0xff),
			},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate,
				APIVersion: "v1", Time: &now, FieldsType: "FieldsV1",
				FieldsV1: metav1.NewFieldsV1(`{"f:status":{"f:conditions":{},"f:images":{}}}`)}},
		},
		Spec: corev1.NodeSpec{PodCIDR: fmt.Sprintf("10.244.%d.0/24", i%256), PodCIDRs: []string{fmt.Sprintf("10.244.%d.0/24", i%256)},
			ProviderID: "kind://docker/kind/node", Taints: []corev1.Taint{{Key: "k", Value: "v", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{
			Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi")},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now}},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.0.1"}},
			NodeInfo:  corev1.NodeSystemInfo{KernelVersion: "6.18.44", OSImage: "Debian GNU/Linux 13", KubeletVersion: "v1.36.3"},
		},
	}
	for j := range 20 {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{
			Names:     []string{fmt.Sprintf("registry.k8s.io/image-%d@sha256:%064x", j, j), fmt.Sprintf("registry.k8s.io/image-%d:v1.%d", j, j)},
			SizeBytes: int64(1e6 * j)})
	}
	return n
}

// encodeList encodes Nodes as the API server sends a list in protobuf.
func encodeList(t testing.TB, meta metav1.ListMeta, nodes ...corev1.Node) []byte {
	t.Helper()
	sch := runtime.NewScheme()
	if err := corev1.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	list := &corev1.NodeList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "NodeList"}, ListMeta: meta, Items: nodes}
	var buf bytes.Buffer
	if err := protobuf.NewSerializer(sch, sch).Encode(list, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// slim is what decodeNodeList keeps of n.
func slim(n corev1.Node) corev1.Node {
	var out corev1.Node
	out.Name, out.ResourceVersion, out.Annotations = n.Name, n.ResourceVersion, n.Annotations
	out.Spec.PodCIDR, out.Spec.PodCIDRs = n.Spec.PodCIDR, n.Spec.PodCIDRs
	return out
}

func collect(t *testing.T, body []byte) ([]corev1.Node, metav1.ListMeta, error) {
	t.Helper()
	var got []corev1.Node
	meta, err := decodeNodeList(bytes.NewReader(body), func(n *corev1.Node) { got = append(got, *n) })
	return got, meta, err
}

func TestDecodeNodeList(t *testing.T) {
	bare := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bare"}} // no annotations, no podCIDR (flannel panics on it)
	dual := fullNode(7)
	dual.Spec.PodCIDRs = append(dual.Spec.PodCIDRs, "fd00:10:244:7::/64")
	nodes := []corev1.Node{fullNode(1), bare, dual, fullNode(300)}
	meta := metav1.ListMeta{ResourceVersion: "4711", Continue: "eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ"}
	var want []corev1.Node
	for _, n := range nodes {
		want = append(want, slim(n))
	}
	js, err := json.Marshal(&corev1.NodeList{ListMeta: meta, Items: nodes})
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{"protobuf": encodeList(t, meta, nodes...), "json": js} {
		got, gotMeta, err := collect(t, body)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if gotMeta.ResourceVersion != meta.ResourceVersion || gotMeta.Continue != meta.Continue {
			t.Errorf("%s: list metadata %+v, want %+v", name, gotMeta, meta)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d nodes, want %d", name, len(got), len(want))
		}
		for i := range want {
			if !reflect.DeepEqual(slim(got[i]), want[i]) {
				t.Errorf("%s: node %d =\n%+v\nwant\n%+v", name, i, slim(got[i]), want[i])
			}
		}
		if name == "protobuf" && got[0].Status.NodeInfo.KubeletVersion != "" {
			t.Errorf("protobuf: the status was decoded")
		}
	}
	got, _, err := collect(t, encodeList(t, meta))
	if err != nil || len(got) != 0 {
		t.Errorf("an empty list: %d nodes, %v", len(got), err)
	}
}

// A body cut anywhere, or one that is not a list, is an error, never a
// panic or a short list taken for a whole one.
func TestDecodeNodeListBad(t *testing.T) {
	body := encodeList(t, metav1.ListMeta{ResourceVersion: "9"}, fullNode(1), fullNode(2))
	// After the list come the envelope's empty contentEncoding and
	// contentType (fields 3 and 4): a body cut among those is whole.
	trailer := []byte{0x1a, 0x00, 0x22, 0x00}
	if !bytes.HasSuffix(body, trailer) {
		t.Fatalf("the envelope ends in %x, want %x", body[len(body)-4:], trailer)
	}
	for cut := 0; cut < len(body)-len(trailer); cut++ {
		if _, _, err := collect(t, body[:cut]); err == nil {
			t.Fatalf("a body cut at byte %d of %d decoded without error", cut, len(body))
		}
	}
	for name, b := range map[string][]byte{
		"empty":             nil,
		"html":              []byte("<html>502 Bad Gateway</html>"),
		"magic alone":       pbMagic[:],
		"bad varint":        append(pbMagic[:], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"huge node":         append(pbMagic[:], 0x12, 0x06, 0x12, 0x84, 0x80, 0x80, 0x80, 0x01),
		"field past list":   append(pbMagic[:], 0x12, 0x02, 0x0a, 0x05, 'a', 'b', 'c', 'd', 'e'),
		"field number zero": append(pbMagic[:], 0x02),
	} {
		if _, _, err := collect(t, b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// FuzzDecodeNodeList feeds the list decoder arbitrary bodies: it must never
// panic, and what it accepts must decode the same after a protobuf round
// trip of the Nodes it returned. The seed corpus is in
// testdata/fuzz/FuzzDecodeNodeList:
//
//	go test ./internal/store/kube/ -run '^$' -fuzz FuzzDecodeNodeList -fuzztime 30s
func FuzzDecodeNodeList(f *testing.F) {
	f.Add(encodeList(f, metav1.ListMeta{ResourceVersion: "1"}, fullNode(1)))
	f.Add(encodeList(f, metav1.ListMeta{Continue: "x"}, corev1.Node{}, fullNode(2)))
	f.Add([]byte(`{"metadata":{"resourceVersion":"3"},"items":[{"metadata":{"name":"a"},"spec":{"podCIDR":"10.0.0.0/24"}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var got []corev1.Node
		meta, err := decodeNodeList(bytes.NewReader(body), func(n *corev1.Node) { got = append(got, slim(*n)) })
		if err != nil {
			return
		}
		var again []corev1.Node
		meta2, err := decodeNodeList(bytes.NewReader(encodeList(t, meta, got...)), func(n *corev1.Node) { again = append(again, slim(*n)) })
		if err != nil {
			t.Fatalf("re-encoded list: %v", err)
		}
		if meta2.ResourceVersion != meta.ResourceVersion || meta2.Continue != meta.Continue || len(again) != len(got) {
			t.Fatalf("round trip: %+v %d nodes, want %+v %d", meta2, len(again), meta, len(got))
		}
		for i := range got {
			if got[i].Name != again[i].Name || got[i].Spec.PodCIDR != again[i].Spec.PodCIDR ||
				len(got[i].Annotations) != len(again[i].Annotations) || len(got[i].Spec.PodCIDRs) != len(again[i].Spec.PodCIDRs) {
				t.Fatalf("round trip of node %d: %+v, want %+v", i, again[i], got[i])
			}
		}
	})
}

// The list decoder against client-go's decoding of the same body into full
// Nodes (the baseline, in the same run), for a page of 500 kubelet Nodes.
func BenchmarkDecodeNodeList(b *testing.B) {
	nodes := make([]corev1.Node, 500)
	for i := range nodes {
		nodes[i] = fullNode(i)
	}
	body := encodeList(b, metav1.ListMeta{ResourceVersion: "1"}, nodes...)
	k := newKeys(DefaultPrefix)
	b.Run("weft", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var kept []node
			if _, err := decodeNodeList(bytes.NewReader(body), func(n *corev1.Node) { kept = append(kept, k.strip(n)) }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("client-go", func(b *testing.B) {
		sch := runtime.NewScheme()
		if err := corev1.AddToScheme(sch); err != nil {
			b.Fatal(err)
		}
		s := protobuf.NewSerializer(sch, sch)
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			raw, err := io.ReadAll(bytes.NewReader(body)) // as rest.Result does
			if err != nil {
				b.Fatal(err)
			}
			var list corev1.NodeList
			if _, _, err := s.Decode(raw, nil, &list); err != nil {
				b.Fatal(err)
			}
			var kept []node
			for i := range list.Items {
				kept = append(kept, k.strip(&list.Items[i]))
			}
			goruntime.KeepAlive(kept)
		}
	})
}
