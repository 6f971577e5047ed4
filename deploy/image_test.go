package deploy

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weft-net/weft/internal/testenv"

	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/weft-net/weft/internal/version"
)

// imageTools returns the OCI runtime `buildah run` should use, skipping the
// test when something hack/image.sh or the test needs is missing.
func imageTools(t *testing.T) string {
	t.Helper()
	testenv.Privileged(t, "builds and runs the container image with buildah")
	if _, err := exec.LookPath("buildah"); err != nil {
		t.Skip("skipping: buildah is not installed (apt-get install -y --no-install-recommends buildah runc busybox-static)")
	}
	if bb, err := exec.LookPath("busybox"); err != nil || !isStatic(bb) {
		t.Skip("skipping: the image needs busybox-static (apt-get install -y busybox-static)")
	}
	// runc first: crun refuses hosts with cgroup v1 and v2 mounted together.
	for _, r := range []string{"runc", "crun"} {
		if p, err := exec.LookPath(r); err == nil {
			return p
		}
	}
	t.Skip("skipping: no OCI runtime for `buildah run` (apt-get install -y runc)")
	return ""
}

// isStatic reports whether the ELF file at p has no program interpreter.
func isStatic(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// image is a container of the built image in a buildah storage of the test's own.
type image struct {
	t       *testing.T
	buildah []string // buildah and its storage flags
	runtime string
	ctr     string
}

// buildImage runs hack/image.sh (writing the archive into a temporary
// directory, so bin/ is not touched) and makes a working container of it.
func buildImage(t *testing.T, runtime string) *image {
	t.Helper()
	tmp := t.TempDir()
	archive := filepath.Join(tmp, "weft-image.oci.tar")
	cmd := exec.CommandContext(t.Context(), "bash", "hack/image.sh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "WEFT_IMAGE_OUT="+archive)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hack/image.sh: %v\n%s", err, out)
	}
	t.Logf("hack/image.sh:\n%s", out)

	im := &image{t: t, runtime: runtime, buildah: []string{"buildah", "--root", filepath.Join(tmp, "storage"),
		"--runroot", filepath.Join(tmp, "runroot"), "--storage-driver", "vfs"}}
	// Registered before `buildah from`, and run after t.Context() is done.
	t.Cleanup(func() {
		ctx := context.WithoutCancel(t.Context())
		if im.ctr != "" {
			if out, err := im.commandContext(ctx, "rm", im.ctr).CombinedOutput(); err != nil {
				t.Errorf("buildah rm %s: %v\n%s", im.ctr, err, out)
			}
		}
		if out, err := im.commandContext(ctx, "rmi", "--all", "--force").CombinedOutput(); err != nil {
			t.Errorf("buildah rmi: %v\n%s", err, out)
		}
	})
	ctr, err := im.command("from", "--quiet", "oci-archive:"+archive).Output()
	if err != nil {
		t.Fatalf("buildah from %s: %v", archive, stderrOf(err))
	}
	im.ctr = strings.TrimSpace(string(ctr))
	return im
}

func (im *image) command(args ...string) *exec.Cmd {
	return im.commandContext(im.t.Context(), args...)
}

func (im *image) commandContext(ctx context.Context, args ...string) *exec.Cmd {
	argv := slices.Concat(im.buildah, args)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// run runs argv in a new container of the image, as kube-weft.yml runs weftd:
// capabilities NET_ADMIN and NET_RAW, not privileged, but in a network
// namespace of its own with only lo (--network none), so nothing it does
// reaches the host's rules. mounts are host:container bind mounts.
func (im *image) run(mounts []string, argv ...string) (string, error) {
	args := []string{"run", "--isolation", "oci", "--runtime", im.runtime, "--network", "none",
		"--cap-add", "CAP_NET_ADMIN", "--cap-add", "CAP_NET_RAW"}
	for _, m := range mounts {
		args = append(args, "--volume", m)
	}
	args = append(args, im.ctr, "--")
	out, err := im.command(append(args, argv...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("buildah run %q: %w\n%s", argv, err, out)
	}
	return string(out), nil
}

func stderrOf(err error) string {
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return fmt.Sprintf("%v: %s", err, ee.Stderr)
	}
	return err.Error()
}

// TestImage builds the image and runs, inside it, what a cluster runs:
// weftd, iptables in both backends and nft writing weft's rules, and the
// manifest's init containers.
func TestImage(t *testing.T) {
	im := buildImage(t, imageTools(t))

	// Every later step writes rules: make sure they land in a namespace of
	// the container's own before anything else runs.
	out, err := im.run(nil, "cat", "/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	var ifaces []string
	for _, line := range strings.Split(out, "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok && !strings.Contains(name, "|") {
			ifaces = append(ifaces, strings.TrimSpace(name))
		}
	}
	if !slices.Equal(ifaces, []string{"lo"}) {
		t.Fatalf("the container sees interfaces %q, want only lo (its own network namespace)", ifaces)
	}

	t.Run("versions", func(t *testing.T) { testVersions(t, im) })
	t.Run("rules", func(t *testing.T) { testRules(t, im) })
	t.Run("init-containers", func(t *testing.T) { testInitContainers(t, im) })
}

func testVersions(t *testing.T, im *image) {
	weftd := loadManifest(t).daemonSet(t).container(t, "kube-flannel").argv()
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{append(weftd, "--version"), "weftd " + version.Release + " "}, // the manifest's own command line
		{[]string{"/opt/bin/flanneld", "--version"}, "weftd " + version.Release + " "},
		{[]string{"weft", "version"}, "weft " + version.Release + " "}, // the operator's CLI: kubectl exec ds/... -- weft status
		{[]string{"iptables", "--version"}, "(nf_tables)"},
		{[]string{"ip6tables", "--version"}, "(nf_tables)"},
		{[]string{"iptables-legacy", "-V"}, "(legacy)"},
		{[]string{"ip6tables-legacy", "-V"}, "(legacy)"},
		{[]string{"nft", "--version"}, "nftables v"},
	} {
		out, err := im.run(nil, tc.argv...)
		if err != nil {
			t.Error(err)
			continue
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("%q printed %q, want it to contain %q", tc.argv, out, tc.want)
		}
	}
}

// testRules writes weft's masquerade and forward rules (docs/rules.md,
// "Masquerade and forward rules") with each backend the image has, as weftd writes them
// (iptables-restore --noflush, nft -f -), then lists them.
func testRules(t *testing.T, im *image) {
	families := []struct{ bin, c, p, mcast string }{
		{"iptables", "10.244.0.0/16", "10.244.1.0/24", "224.0.0.0/4"},
		{"ip6tables", "fd00:10:244::/56", "fd00:10:244:1::/64", "ff00::/8"},
	}
	for _, mode := range []string{"nft", "legacy"} {
		for _, f := range families {
			bin := f.bin + "-" + mode
			masq := fmt.Sprintf("-A FLANNEL-POSTRTG -s %s ! -d %s -j MASQUERADE --random-fully", f.c, f.mcast)
			script := fmt.Sprintf(`set -e
%[1]s-restore -w 5 --noflush <<'EOF'
*nat
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN
-A FLANNEL-POSTRTG -s %[3]s -d %[2]s -j RETURN
-A FLANNEL-POSTRTG ! -s %[2]s -d %[3]s -j RETURN
%[4]s
COMMIT
*filter
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s %[2]s -j ACCEPT
COMMIT
EOF
%[1]s-save
`, bin, f.c, f.p, masq)
			out, err := im.run(nil, "sh", "-c", script)
			if err != nil {
				t.Errorf("%s: %v", bin, err)
				continue
			}
			for _, want := range []string{masq, `-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
				"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN", "-A FLANNEL-FWD -s " + f.c + " -j ACCEPT"} {
				if !strings.Contains(out, want+"\n") {
					t.Errorf("%s-save lacks %q:\n%s", bin, want, out)
				}
			}
		}
	}

	script := `set -e
nft -f - <<'EOF'
table ip flannel-ipv4 {
	chain postrtg {
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x00004000 == 0x00004000 return
		ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr 10.244.0.0/16 accept
	}
}
EOF
nft list table ip flannel-ipv4
`
	out, err := im.run(nil, "sh", "-c", script)
	if err != nil {
		t.Fatalf("nft: %v", err)
	}
	for _, want := range []string{"ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
		"ip saddr 10.244.0.0/16 accept"} {
		if !strings.Contains(out, want) {
			t.Errorf("nft list table lacks %q:\n%s", want, out)
		}
	}
}

// testInitContainers runs the manifest's init containers in the image, their
// volumes being directories of the test (the ConfigMap's keys as files), and
// checks what they installed: a CNI plugin that runs on the host and the
// conflist. flannel's newer install-conf command gets the same check.
func testInitContainers(t *testing.T, im *image) {
	m := loadManifest(t)
	p := m.daemonSet(t)
	cm := m.get(t, "ConfigMap", "kube-flannel-cfg")
	volumes := map[string]string{} // volume name -> host directory
	for _, v := range p.Volumes {
		dir := t.TempDir()
		if v.ConfigMap != nil {
			for k, data := range m.get(t, "ConfigMap", v.ConfigMap.Name).Data {
				if err := os.WriteFile(filepath.Join(dir, k), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		volumes[v.Name] = dir
	}
	mountsOf := func(c container) []string {
		var ms []string
		for _, vm := range c.VolumeMounts {
			ms = append(ms, volumes[vm.Name]+":"+path.Clean(vm.MountPath))
		}
		return ms
	}

	for _, c := range p.InitContainers {
		if _, err := im.run(mountsOf(c), c.argv()...); err != nil {
			t.Fatalf("init container %s: %v", c.Name, err)
		}
	}
	plugin := filepath.Join(volumes["cni-plugin"], "flannel")
	cmd := exec.CommandContext(t.Context(), plugin)
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the installed plugin %s does not run on the host: %v", plugin, stderrOf(err))
	}
	var info struct {
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out, &info); err != nil || !slices.Equal(info.SupportedVersions, cniversion.All.SupportedVersions()) {
		t.Errorf("the installed plugin's VERSION answer %s (%v), want supportedVersions %q", out, err,
			cniversion.All.SupportedVersions())
	}
	conflist := filepath.Join(volumes["cni"], "10-flannel.conflist")
	if got, err := os.ReadFile(conflist); err != nil || !bytes.Equal(got, []byte(cm.Data["cni-conf.json"])) {
		t.Errorf("installed conflist %s = %q (%v), want the ConfigMap's cni-conf.json", conflist, got, err)
	}

	// flannel's newer manifests call /opt/bin/install-conf SRC DST instead of cp.
	c := p.container(t, "install-cni")
	if err := os.Remove(conflist); err != nil {
		t.Fatal(err)
	}
	if _, err := im.run(mountsOf(c), "/opt/bin/install-conf", "/etc/kube-flannel/cni-conf.json",
		"/etc/cni/net.d/10-flannel.conflist"); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(volumes["cni"])
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(conflist); err != nil || !bytes.Equal(got, []byte(cm.Data["cni-conf.json"])) || len(entries) != 1 {
		t.Errorf("install-conf left %d files and conflist %q (%v), want only the ConfigMap's cni-conf.json", len(entries), got, err)
	}
}
