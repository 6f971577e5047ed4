package deploy

import (
	"strings"
	"testing"
)

// TestNetpolManifestIsManifestPlusPolicy: kube-weft-netpol.yml is
// kube-weft.yml (its objects, to the byte) with exactly weftd's
// --network-policy and the read rights that needs added, as its header
// says; so a change to kube-weft.yml that is not made to it fails here.
func TestNetpolManifestIsManifestPlusPolicy(t *testing.T) {
	body := func(text string) string {
		_, b, ok := strings.Cut(text, "\n---\n")
		if !ok {
			t.Fatal("no document separator")
		}
		return b
	}
	want := body(Manifest)
	for _, edit := range []struct{ old, new string }{
		{"  resources:\n  - pods\n  verbs:\n  - get\n",
			"  resources:\n  - pods\n  - namespaces\n  verbs:\n  - get\n  - list\n  - watch\n" +
				"- apiGroups:\n  - networking.k8s.io\n  resources:\n  - networkpolicies\n  verbs:\n  - get\n  - list\n  - watch\n"},
		{"        - --kube-subnet-mgr\n", "        - --kube-subnet-mgr\n        - --network-policy\n"},
	} {
		if strings.Count(want, edit.old) != 1 {
			t.Fatalf("kube-weft.yml does not hold %q once", edit.old)
		}
		want = strings.Replace(want, edit.old, edit.new, 1)
	}
	if got := body(NetpolManifest); got != want {
		t.Errorf("kube-weft-netpol.yml is not kube-weft.yml with the two policy additions; regenerate it:\n%s", got)
	}
	rbac, err := RBACOf(NetpolManifest)
	if err != nil || !strings.Contains(rbac, "networkpolicies") {
		t.Errorf("RBACOf(NetpolManifest): %v\n%s", err, rbac)
	}
}
