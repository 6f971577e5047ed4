package netpol

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// A Compiler that reuses what untouched policies compiled to gives, after
// every change, exactly what compiling afresh gives: random changes of
// pods (labels, addresses, nodes, an address two pods claim), namespaces'
// labels and policies (pod and namespace selectors, ipBlocks, egress named
// ports, which read every pod), the objects replaced as the informers
// replace them.
func TestCompilerMatchesCompile(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	c := benchCluster(benchScale{Namespaces: 6, Pods: 240, Policies: 30, Local: 3, Others: 8})
	// Egress to a named port, to app=a<j%25> of its namespace or, when
	// toAll, to every pod (that reads every pod's ports).
	addNamedEgress := func(name string, j int, toAll bool) {
		tcp := corev1.ProtocolTCP
		port := intstr.FromString("http")
		p := &Policy{Namespace: fmt.Sprintf("ns%03d", j%6), Name: name, Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", j%25)}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		}}
		if toAll {
			p.Spec.Egress[0].To = nil
		}
		c.Policies[p.Key()] = p
	}
	addNamedEgress("named", 1, false)
	addNamedEgress("named-all", 2, true)
	pick := func(m map[string]*Pod) *Pod {
		keys := sortedKeys(m)
		return m[keys[rng.IntN(len(keys))]]
	}
	changes := []func(){
		func() { // a pod's labels
			p := *pick(c.Pods)
			p.Labels = map[string]string{"app": fmt.Sprintf("a%d", rng.IntN(25))}
			if rng.IntN(2) == 0 {
				p.Labels["tier"] = "web"
			}
			c.Pods[p.Key()] = &p
		},
		func() { // a pod added, here or elsewhere
			n := rng.IntN(1 << 16)
			p := &Pod{Namespace: fmt.Sprintf("ns%03d", rng.IntN(6)), Name: fmt.Sprintf("new%05d", n), Node: "other",
				IPs: []netip.Addr{benchAddr(netip.MustParseAddr("10.200.0.0"), n)}, Labels: map[string]string{"app": fmt.Sprintf("a%d", n%25), "tier": "web"},
				Ports: []NamedPort{{"http", TCP, 8080}}}
			if rng.IntN(3) == 0 {
				p.Node = "n1"
			}
			c.Pods[p.Key()] = p
		},
		func() { delete(c.Pods, pick(c.Pods).Key()) },
		func() { // an address another pod holds
			p, q := *pick(c.Pods), pick(c.Pods)
			p.IPs = q.IPs
			c.Pods[p.Key()] = &p
		},
		func() { // a namespace's labels
			name := fmt.Sprintf("ns%03d", rng.IntN(6))
			c.Namespaces[name] = &Namespace{Name: name, Labels: map[string]string{"team": fmt.Sprintf("t%d", rng.IntN(5)),
				"kubernetes.io/metadata.name": name}}
		},
		func() {
			benchAddPolicy(c, fmt.Sprintf("ns%03d", rng.IntN(6)), fmt.Sprintf("pol%04d", rng.IntN(40)), rng.IntN(100))
		},
		func() { delete(c.Policies, sortedKeys(c.Policies)[rng.IntN(len(c.Policies))]) },
		func() { addNamedEgress(fmt.Sprintf("named%d", rng.IntN(3)), rng.IntN(25), rng.IntN(2) == 0) },
	}
	cc := NewCompiler("n1")
	reused := 0
	for step := range 400 {
		if step > 0 {
			changes[rng.IntN(len(changes))]()
		}
		got, gotErrs := cc.Compile(c)
		want, wantErrs := Compile(c, "n1")
		reused += cc.Reused
		if !reflect.DeepEqual(got, want) || fmt.Sprint(gotErrs) != fmt.Sprint(wantErrs) {
			t.Fatalf("step %d: the Compiler's Ruleset differs from Compile's (reused %d, compiled %d)", step, cc.Reused, cc.Compiled)
		}
	}
	if reused == 0 {
		t.Fatal("the Compiler never reused a policy: the test proves nothing")
	}
	t.Logf("400 changes; %d policies reused in all", reused)
}

// An update of a pod that changes nothing policy reads (a status
// condition, an annotation) keeps its Pod and wakes nothing; one that
// changes a label replaces it and wakes the controller.
func TestPodUpdateThatChangesNothing(t *testing.T) {
	inf := &informers{cluster: NewCluster()}
	api := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", Labels: map[string]string{"app": "web"}, ResourceVersion: "1"},
		Spec:   corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.244.1.2"}}}}
	obj := func(p *corev1.Pod) any {
		o, err := stripPod(p)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	if !inf.setPod(obj(api)) {
		t.Fatal("a new pod did not change the cluster")
	}
	first := inf.cluster.Pods["x/a"]
	api = api.DeepCopy()
	api.ResourceVersion, api.Annotations = "2", map[string]string{"note": "x"}
	api.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if inf.setPod(obj(api)) || inf.cluster.Pods["x/a"] != first {
		t.Error("an update changing nothing policy reads replaced the pod")
	}
	api = api.DeepCopy()
	api.Labels = map[string]string{"app": "db"}
	if !inf.setPod(obj(api)) || inf.cluster.Pods["x/a"] == first {
		t.Error("a label change did not replace the pod")
	}
}
