package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/weft-net/weft/internal/subnetfile"
)

// fakeRunner records delegate calls and fails the commands in fail.
type fakeRunner struct {
	mu    sync.Mutex
	calls []fakeCall
	fail  map[string]error
	// onAdd runs during ADD, e.g. to look at the saved file.
	onAdd func()
}

type fakeCall struct {
	Command, Type string
	Conf          string
	Args          invoke.Args
}

var _ Runner = (*fakeRunner)(nil)

func (f *fakeRunner) record(cmd, typ string, conf []byte, args invoke.Args) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeCall{cmd, typ, string(conf), args})
	return f.fail[cmd]
}

func (f *fakeRunner) Add(_ context.Context, typ string, conf []byte, args invoke.Args) (types.Result, error) {
	if f.onAdd != nil {
		f.onAdd()
	}
	if err := f.record("ADD", typ, conf, args); err != nil {
		return nil, err
	}
	return &types100.Result{CNIVersion: "1.0.0", IPs: []*types100.IPConfig{}}, nil
}

func (f *fakeRunner) Run(_ context.Context, cmd, typ string, conf []byte, args invoke.Args) error {
	return f.record(cmd, typ, conf, args)
}

func (f *fakeRunner) commands() string {
	var s []string
	for _, c := range f.calls {
		s = append(s, c.Command+":"+c.Args.ContainerID+":"+c.Args.IfName)
	}
	return strings.Join(s, " ")
}

type fixture struct {
	plugin  *Plugin
	runner  *fakeRunner
	stdout  *bytes.Buffer
	dataDir string
	subnet  string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{runner: &fakeRunner{fail: map[string]error{}}, stdout: &bytes.Buffer{},
		dataDir: filepath.Join(dir, "data"), subnet: filepath.Join(dir, "subnet.env")}
	f.plugin = New(slog.New(slog.NewTextHandler(io.Discard, nil)), f.runner, f.stdout)
	return f
}

func (f *fixture) writeEnv(t *testing.T) {
	t.Helper()
	if err := subnetfile.Write(f.subnet, env4()); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) args(id string, extra string) *skel.CmdArgs {
	conf := `{"cniVersion":"1.1.0","name":"cbr0","type":"flannel","subnetFile":"` + f.subnet +
		`","dataDir":"` + f.dataDir + `","delegate":{"hairpinMode":true}` + extra + `}`
	return &skel.CmdArgs{ContainerID: id, Netns: "/var/run/netns/" + id, IfName: "eth0", Path: "/opt/cni/bin", StdinData: []byte(conf)}
}

func TestAddSavesBeforeDelegateAndPrintsResult(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t)
	saved := filepath.Join(f.dataDir, "c1")
	f.runner.onAdd = func() {
		st, err := os.Stat(saved)
		if err != nil {
			t.Errorf("saved file missing when the delegate runs: %v", err)
		} else if st.Mode().Perm() != 0o600 {
			t.Errorf("saved file mode %v, want 0600", st.Mode().Perm())
		}
	}
	if err := f.plugin.Add(context.Background(), f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	if c := f.runner.calls[0]; c.Type != "bridge" || c.Conf != string(got) || c.Args.NetNS != "/var/run/netns/c1" {
		t.Errorf("delegate call %+v, saved %s", c, got)
	}
	if !strings.Contains(f.stdout.String(), `"cniVersion": "1.0.0"`) {
		t.Errorf("result not printed: %q", f.stdout.String())
	}
}

func TestAddRollsBackFailedDelegate(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t)
	f.runner.fail["ADD"] = &types.Error{Code: 11, Msg: "no luck"}
	err := f.plugin.Add(context.Background(), f.args("c1", ""))
	if ce := ToCNIError(err); ce.Code != 11 || !strings.Contains(ce.Msg, "delegate bridge ADD: no luck") {
		t.Errorf("error %+v", ce)
	}
	if got := f.runner.commands(); got != "ADD:c1:eth0 DEL:c1:eth0" {
		t.Errorf("calls %q", got)
	}
	if _, err := os.Stat(filepath.Join(f.dataDir, "c1")); !os.IsNotExist(err) {
		t.Errorf("saved file left after rollback: %v", err)
	}
}

func TestAddWithoutUsableSubnetFile(t *testing.T) {
	f := newFixture(t)
	err := ToCNIError(f.plugin.Add(context.Background(), f.args("c1", "")))
	if err.Code != types.ErrTryAgainLater || !strings.Contains(err.Msg, f.subnet) || !strings.Contains(err.Msg, "not written it yet") {
		t.Errorf("missing file: %+v", err)
	}
	if err := os.WriteFile(f.subnet, []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = ToCNIError(f.plugin.Add(context.Background(), f.args("c1", "")))
	if err.Code != types.ErrInvalidNetworkConfig || !strings.Contains(err.Msg, "FLANNEL_MTU") || !strings.Contains(err.Msg, "not usable") {
		t.Errorf("partial file: %+v", err)
	}
	if len(f.runner.calls) != 0 {
		t.Errorf("delegate called: %s", f.runner.commands())
	}
	if _, err := os.Stat(f.dataDir); !os.IsNotExist(err) {
		t.Errorf("data dir created: %v", err)
	}
}

func TestDel(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t)
	ctx := context.Background()
	if err := f.plugin.Del(ctx, f.args("c1", "")); err != nil {
		t.Fatalf("DEL without saved file: %v", err)
	}
	if err := f.plugin.Add(ctx, f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	f.runner.fail["DEL"] = &types.Error{Code: 999, Msg: "stuck"}
	if err := f.plugin.Del(ctx, f.args("c1", "")); err == nil {
		t.Fatal("DEL succeeded while the delegate failed")
	}
	if _, err := os.Stat(filepath.Join(f.dataDir, "c1")); err != nil {
		t.Fatalf("saved file removed although the delegate failed: %v", err)
	}
	delete(f.runner.fail, "DEL")
	if err := f.plugin.Del(ctx, f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.dataDir, "c1")); !os.IsNotExist(err) {
		t.Fatalf("saved file kept: %v", err)
	}
	// a corrupt file is success and goes away, without a delegate call
	if err := os.WriteFile(filepath.Join(f.dataDir, "c2"), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := len(f.runner.calls)
	if err := f.plugin.Del(ctx, f.args("c2", "")); err != nil {
		t.Fatal(err)
	}
	if len(f.runner.calls) != n {
		t.Errorf("delegate called for a corrupt file")
	}
}

func TestDelFlannelSavedFile(t *testing.T) {
	f := newFixture(t)
	// what flannel's plugin saved (json.Marshal of its map: sorted keys)
	flannel := `{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]],` +
		`"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dataDir, "c9"), []byte(flannel), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.plugin.Del(context.Background(), f.args("c9", "")); err != nil {
		t.Fatal(err)
	}
	if c := f.runner.calls[0]; c.Command != "DEL" || c.Type != "bridge" || c.Conf != flannel {
		t.Errorf("delegate call %+v", c)
	}
}

func TestCheckPassesPrevResult(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t)
	ctx := context.Background()
	prev := `,"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.244.1.2/24"}]}`
	if err := ToCNIError(f.plugin.Check(ctx, f.args("c1", prev))); err.Code != types.ErrUnknownContainer {
		t.Errorf("CHECK before ADD: %+v", err)
	}
	if err := ToCNIError(f.plugin.Check(ctx, f.args("c1", ""))); err.Code != types.ErrInvalidNetworkConfig {
		t.Errorf("CHECK without prevResult: %+v", err)
	}
	if err := f.plugin.Add(ctx, f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	if err := f.plugin.Check(ctx, f.args("c1", prev)); err != nil {
		t.Fatal(err)
	}
	c := f.runner.calls[len(f.runner.calls)-1]
	var conf struct {
		Type       string          `json:"type"`
		PrevResult json.RawMessage `json:"prevResult"`
	}
	if err := json.Unmarshal([]byte(c.Conf), &conf); err != nil {
		t.Fatal(err)
	}
	if c.Command != "CHECK" || conf.Type != "bridge" || !strings.Contains(string(conf.PrevResult), "10.244.1.2/24") {
		t.Errorf("CHECK call %+v", c)
	}
}

func TestStatus(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	err := ToCNIError(f.plugin.Status(ctx, f.args("", "")))
	if err.Code != types.ErrPluginNotAvailable || !strings.Contains(err.Msg, f.subnet+" does not exist") {
		t.Errorf("STATUS without subnet file: %+v", err)
	}
	if err := os.WriteFile(f.subnet, []byte("FLANNEL_MTU=1450\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = ToCNIError(f.plugin.Status(ctx, f.args("", "")))
	if err.Code != types.ErrPluginNotAvailable || !strings.Contains(err.Msg, "was written but is not usable") {
		t.Errorf("STATUS with partial subnet file: %+v", err)
	}
	f.writeEnv(t)
	if err := f.plugin.Status(ctx, f.args("", "")); err != nil {
		t.Fatal(err)
	}
	if got := f.runner.commands(); got != "STATUS::" {
		t.Errorf("calls %q", got)
	}
}

func TestGC(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t)
	ctx := context.Background()
	for _, id := range []string{"keep", "stale", "stale2"} {
		a := f.args(id, "")
		a.IfName = "net1"
		if err := f.plugin.Add(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	// a file flannel saved (no interface name recorded), for a live container
	if err := os.WriteFile(filepath.Join(f.dataDir, "flannelpod"), []byte(`{"type":"bridge","name":"cbr0"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	f.runner.calls = nil
	f.runner.fail["DEL"] = nil
	valid := `,"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"net1"},{"containerID":"stale2","ifname":"eth0"},{"containerID":"flannelpod","ifname":"eth0"}]`
	if err := f.plugin.GC(ctx, f.args("", valid)); err != nil {
		t.Fatal(err)
	}
	if got := f.runner.commands(); got != "DEL:stale:net1 DEL:stale2:net1 GC::" {
		t.Errorf("calls %q", got)
	}
	if gc := f.runner.calls[2].Conf; !strings.Contains(gc, `"cni.dev/valid-attachments":[{"containerID":"keep"`) {
		t.Errorf("delegate GC config %s", gc)
	}
	left, _ := filepath.Glob(filepath.Join(f.dataDir, "[^.]*"))
	if len(left) != 2 || filepath.Base(left[0]) != "flannelpod" || filepath.Base(left[1]) != "keep" {
		t.Errorf("left %v", left)
	}
	// a delegate that does not know GC is not an error
	f.runner.fail["GC"] = &types.Error{Code: types.ErrInvalidEnvironmentVariables, Msg: "unknown CNI_COMMAND: GC"}
	if err := f.plugin.GC(ctx, f.args("", valid)); err != nil {
		t.Fatal(err)
	}
}

func TestFuncsMapErrors(t *testing.T) {
	f := newFixture(t)
	err := f.plugin.Funcs().Add(&skel.CmdArgs{ContainerID: "c", IfName: "eth0", StdinData: []byte(`{"name":`)})
	te, ok := err.(*types.Error)
	if !ok || te.Code != types.ErrDecodingFailure {
		t.Errorf("Funcs().Add error %#v", err)
	}
	if f.stdout.Len() != 0 {
		t.Errorf("stdout written on error: %q", f.stdout.String())
	}
}

func TestDelAndGCSurviveAnEditedConflist(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t)
	ctx := context.Background()
	if err := f.plugin.Add(ctx, f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	edited := `,"delegate":{"name":"now-forbidden"}`
	if err := f.plugin.Add(ctx, f.args("c2", edited)); err == nil {
		t.Fatal("ADD accepted a delegate with a name")
	}
	if err := f.plugin.Del(ctx, f.args("c1", edited)); err != nil {
		t.Fatalf("DEL with the edited conflist: %v", err)
	}
	if err := f.plugin.GC(ctx, f.args("", edited)); err != nil {
		t.Fatalf("GC with the edited conflist: %v", err)
	}
	if got := f.runner.commands(); got != "ADD:c1:eth0 DEL:c1:eth0 GC::" {
		t.Errorf("calls %q", got)
	}
}
