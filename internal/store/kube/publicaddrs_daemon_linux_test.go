package kube

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/testenv"
)

// weftd's Run on the kube store (the fake API) in a namespace with two
// interfaces, eth0 (the default route's) and ens5 at 10.9.0.5/16, for a
// Node whose node-public-ip is malformed and which carries an operator's
// public-ip-overwrite: the node stays down with /readyz 503 naming the
// annotation and its value; once the annotation says 10.9.0.5 it comes up
// without a restart on ens5 (the interface holding it), routes the host-gw
// peer over ens5, and publishes the overwrite as public-ip (the overwrite
// wins for what is published, node-public-ip for what the node uses).
// Needs root (a network namespace).
func TestDaemonNodePublicIP(t *testing.T) {
	testenv.Privileged(t, "creates a network namespace")
	nsName, nl := testNamespace(t)
	for _, args := range [][]string{
		{"link", "add", "ens5", "type", "veth", "peer", "name", "wire1"},
		{"addr", "add", "10.9.0.5/16", "dev", "ens5"},
		{"link", "set", "ens5", "up"},
		{"link", "set", "wire1", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", nsName}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	api := newFake(
		kubeNode("n1", []string{"10.244.1.0/24"}, map[string]string{"node-public-ip": "10.9.0.500",
			"public-ip-overwrite": "203.0.113.9"}),
		kubeNode("n2", []string{"10.244.2.0/24"}, map[string]string{
			"kube-subnet-manager": "true", "backend-type": "host-gw", "backend-data": "null", "public-ip": "10.9.0.7"}))
	var logs testenv.LogBuffer
	nc := mustNetConf(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`)
	s := newTestStore(t, api, nc, logs.Logger())
	port := freePort(t)
	o := kubeOptions(t)
	o.HealthzIP, o.HealthzPort = mustAddr("127.0.0.1"), port
	runDaemon(t, s, nl, o, &logs, func(context.Context) {})
	readyz := func() (int, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var reason string
	testenv.WaitFor(t, 20*time.Second, "readyz naming the malformed annotation", func() bool {
		code, body := readyz()
		reason = body
		return code == http.StatusServiceUnavailable &&
			strings.Contains(body, `annotation flannel.alpha.coreos.com/node-public-ip "10.9.0.500" is not an IP address`)
	})
	t.Logf("/readyz while malformed: %s", strings.TrimSpace(reason))
	n := api.node(t, "n1")
	n.Annotations[DefaultPrefix+"/node-public-ip"] = "10.9.0.5"
	api.put(t, n)
	testenv.WaitFor(t, 20*time.Second, "readyz 200", func() bool { code, _ := readyz(); return code == http.StatusOK })
	if got := api.node(t, "n1").Annotations[DefaultPrefix+"/public-ip"]; got != "203.0.113.9" {
		t.Errorf("public-ip %q, want the overwrite 203.0.113.9", got)
	}
	testenv.WaitFor(t, 20*time.Second, "the peer's route over ens5", func() bool {
		out, _ := exec.Command("ip", "-n", nsName, "route", "show", "10.244.2.0/24").CombinedOutput()
		return strings.Contains(string(out), "via 10.9.0.7 dev ens5")
	})
	for _, want := range []string{`msg="external interface" name=ens5 chosen-by="node-public-ip 10.9.0.5"`,
		"public-ip=10.9.0.5 public-ip-from=node-public-ip", `msg="publishing the operator's overwrite address"`} {
		if logs.Count(want) != 1 {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	if got := logs.Count("read the public address given for this node; retrying", "10.9.0.500"); got != 1 {
		t.Errorf("the malformed value logged %d times, want once", got)
	}
}
