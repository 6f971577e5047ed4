package netpol

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The control plane's cost at scale, without a kernel: what compiling the
// whole cluster for a node costs (BenchmarkCompile: a start, or a change
// touching every policy), and what one policy change costs the controller
// before nft runs (BenchmarkPolicyChange: its Compiler compiles the changed
// policy, reuses what the others compiled to, and the Syncer writes only
// the differences). The cluster
// is the one of the e2e benchmark BenchmarkNetpolEnforce: 10,000 pods and
// 1,000 policies, the pods spread over namespaces and 100 other nodes but a
// few on this node ("n1"), every policy selecting pods of this node.
// Layouts differ only in how many namespaces share the pods and policies:
// a policy's selectors are matched against the pods of its namespace (or
// of every namespace its namespaceSelector picks), so fewer, larger
// namespaces cost more.
//
//	go test -run '^$' -bench . -benchtime 5x ./internal/netpol/

// benchScale is a generated cluster's shape.
type benchScale struct {
	Namespaces, Pods, Policies int
	// Local pods per namespace are on node n1 (the node compiled for); the
	// rest are spread over Others nodes.
	Local, Others int
}

func (s benchScale) String() string {
	return fmt.Sprintf("ns=%d/pods=%d/policies=%d", s.Namespaces, s.Pods, s.Policies)
}

// benchLayouts are the layouts measured.
var benchLayouts = []benchScale{
	{Namespaces: 200, Pods: 10000, Policies: 1000, Local: 1, Others: 100},
	{Namespaces: 20, Pods: 10000, Policies: 1000, Local: 2, Others: 100},
	{Namespaces: 1, Pods: 10000, Policies: 1000, Local: 40, Others: 100},
}

// benchAddr returns the i-th address counted from base.
func benchAddr(base netip.Addr, i int) netip.Addr {
	b := base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// benchCluster generates s: pod i of namespace n is labelled app=a<i%25>,
// tier=web on this node's pods and every tenth other one; namespaces are
// labelled team=t<n%5>. Policy j in namespace j%Namespaces selects
// tier=web and allows TCP 8000+j%100 from app=a<j%25>; every tenth also
// allows from app=a0 in the namespaces of team t<j%5>, and every fourth
// restricts egress to an ipBlock with an except.
func benchCluster(s benchScale) *Cluster {
	c := NewCluster()
	for n := range s.Namespaces {
		name := fmt.Sprintf("ns%03d", n)
		c.Namespaces[name] = &Namespace{Name: name, Labels: map[string]string{"team": fmt.Sprintf("t%d", n%5),
			"kubernetes.io/metadata.name": name}}
	}
	perNS := s.Pods / s.Namespaces
	local, other := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.128.0.1")
	nLocal := 0
	for i := range s.Pods {
		n, k := i%s.Namespaces, i/s.Namespaces
		p := &Pod{Namespace: fmt.Sprintf("ns%03d", n), Name: fmt.Sprintf("p%05d", i),
			Labels: map[string]string{"app": fmt.Sprintf("a%d", k%25)},
			Ports:  []NamedPort{{"http", TCP, 8080}}}
		if k < s.Local && k < perNS {
			p.Node, p.IPs = "n1", []netip.Addr{benchAddr(local, nLocal)}
			p.Labels["tier"] = "web"
			nLocal++
		} else {
			p.Node, p.IPs = fmt.Sprintf("other%03d", i%s.Others), []netip.Addr{benchAddr(other, i)}
			if k%10 == 0 {
				p.Labels["tier"] = "web"
			}
		}
		c.Pods[p.Key()] = p
	}
	for j := range s.Policies {
		benchAddPolicy(c, fmt.Sprintf("ns%03d", j%s.Namespaces), fmt.Sprintf("pol%04d", j), j)
	}
	return c
}

// benchAddPolicy adds policy j of benchCluster.
func benchAddPolicy(c *Cluster, ns, name string, j int) {
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(int32(8000 + j%100))
	from := []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{
		MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", j%25)}}}}
	if j%10 == 0 {
		from = append(from, networkingv1.NetworkPolicyPeer{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", j%5)}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a0"}}})
	}
	spec := networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: from,
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}},
	}
	if j%4 == 0 {
		spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{
			IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{fmt.Sprintf("10.%d.0.0/16", j%200)}}}}}}
	}
	p := &Policy{Namespace: ns, Name: name, Spec: spec}
	c.Policies[p.Key()] = p
}

// BenchmarkCompile compiles the whole cluster for node n1, as the
// controller does on every change.
func BenchmarkCompile(b *testing.B) {
	for _, s := range benchLayouts {
		b.Run(s.String(), func(b *testing.B) {
			c := benchCluster(s)
			var rs *Ruleset
			defer benchCPU(b)()
			for b.Loop() {
				var errs []error
				if rs, errs = Compile(c, "n1"); len(errs) > 0 {
					b.Fatal(errs[0])
				}
			}
			rules, elems := rs.Size()
			if len(rs.Policies) != s.Policies {
				b.Fatalf("%d policies select pods of n1, want %d", len(rs.Policies), s.Policies)
			}
			b.ReportMetric(float64(rules), "rules")
			b.ReportMetric(float64(elems), "elements")
		})
	}
}

// BenchmarkPolicyChange is one change as the controller handles it: a
// policy selecting a pod of n1 is added (or, every other op, deleted
// again), the cluster compiled by the controller's Compiler, and the
// differences written by the Syncer to an in-memory kernel holding the
// rest.
func BenchmarkPolicyChange(b *testing.B) {
	for _, s := range benchLayouts {
		b.Run(s.String(), func(b *testing.B) {
			c := benchCluster(s)
			k := NewFakeKernel()
			sy := NewSyncer(k, nil, slog.New(slog.DiscardHandler))
			ctx := context.Background()
			cc := NewCompiler("n1")
			apply := func() {
				rs, errs := cc.Compile(c)
				if len(errs) > 0 {
					b.Fatal(errs[0])
				}
				if err := sy.Apply(ctx, rs); err != nil {
					b.Fatal(err)
				}
			}
			apply()
			key := "ns000/bench-new"
			i := 0
			defer benchCPU(b)()
			for b.Loop() {
				if i%2 == 0 {
					benchAddPolicy(c, "ns000", "bench-new", 7)
				} else {
					delete(c.Policies, key)
				}
				i++
				apply()
			}
			if st := sy.Stats(); st.FullWrites != 1 || st.Writes != uint64(i+1) {
				b.Fatalf("syncer stats %+v after %d changes: want 1 full write and one write per change", st, i)
			}
		})
	}
}

// benchCPU reports, when the returned function runs, the process's CPU time
// (user and system, every thread: GC included) per op: on a shared machine
// the wall time per op says more about the other load than about the code.
func benchCPU(b *testing.B) func() {
	before := benchRusage(b)
	b.ResetTimer()
	return func() {
		b.StopTimer()
		b.ReportMetric(float64((benchRusage(b)-before).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	}
}

func benchRusage(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
