package netpol

import (
	"context"
	"hash/fnv"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

// FuzzCompile compiles clusters made from the fuzzer's bytes by the
// differential test's generator, with what the API server refuses mixed in:
// bad selector operators, keys and values, bad CIDRs and excepts, ports out
// of range, endPort below port or with a named port, unknown protocols,
// empty peers, unknown policyTypes, pods in namespaces that do not exist
// and running pods sharing an address. For every node:
//
//   - Compile, Evaluate and writing the Ruleset to (knftables' fake)
//     nftables never panic, and the fake takes the transaction;
//   - every error names one of the cluster's policies;
//   - Compile returns the same Ruleset twice;
//   - when no node's Compile returned an error, weft never allows a packet
//     that kube-network-policies' evaluator denies (the cases
//     TestDifferential excludes are excluded here too).
//
// Seeds are in testdata/fuzz/FuzzCompile; run it with
// go test -run x -fuzz FuzzCompile -fuzztime 3m ./internal/netpol/
func FuzzCompile(f *testing.F) {
	ref := newReference(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		w := generateWorld(&byteChooser{b: data}, true)
		c := toCluster(w)
		failed := false
		for _, n := range w.Nodes {
			rs, errs := Compile(c, n)
			failed = failed || len(errs) > 0
			checkErrorsNamePolicies(t, w, errs)
			if again, _ := Compile(c, n); !reflect.DeepEqual(rs, again) {
				t.Errorf("node %s: two Compiles of one cluster differ\n%s", n, describe(w))
			}
			checkRenders(t, rs, w)
		}
		if failed {
			return
		}
		j, err := newJudge(w, ref)
		if err != nil {
			t.Fatal(err)
		}
		h := fnv.New64a()
		h.Write(data)
		for _, p := range packets(w, randChooser{rand.New(rand.NewPCG(h.Sum64(), 1))}, 64) {
			v, skip := j.decide(p)
			if skip == "" && (v.weft && !v.ref || v.stray != "") {
				t.Fatal(diffFailure{"fuzz input", w, p, v}.explain(ref))
			}
		}
	})
}

// checkErrorsNamePolicies fails t for an error that does not start with
// "policy <namespace>/<name>:" of one of w's policies.
func checkErrorsNamePolicies(t *testing.T, w *world, errs []error) {
	t.Helper()
	for _, err := range errs {
		named := false
		for _, np := range w.Policies {
			named = named || strings.HasPrefix(err.Error(), "policy "+np.Namespace+"/"+np.Name+": ")
		}
		if !named {
			t.Errorf("error names no policy of the cluster: %v", err)
		}
	}
}

// checkRenders writes rs as a whole table to knftables' fake, which
// checks that every element's set and every rule's chain exists.
func checkRenders(t *testing.T, rs *Ruleset, w *world) {
	t.Helper()
	nft := knftables.NewFake(knftables.InetFamily, TableName)
	tx := nft.NewTransaction()
	writeAll(tx, rs, nil)
	if err := nft.Run(context.Background(), tx); err != nil {
		t.Errorf("nftables (fake) refuses the table: %v\n%s", err, describe(w))
	}
}
