package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// ErrFlag is wrapped by every error ParseOptions returns.
var ErrFlag = errors.New("invalid option")

// FlagError names the flag (and, for an environment value, the variable) whose
// value is bad.
type FlagError struct {
	Flag   string // without dashes
	EnvVar string // set when the value came from the environment
	Err    error
}

func (e *FlagError) Error() string {
	if e.EnvVar != "" {
		return fmt.Sprintf("%s (--%s): %v", e.EnvVar, e.Flag, e.Err)
	}
	return fmt.Sprintf("--%s: %v", e.Flag, e.Err)
}

func (e *FlagError) Unwrap() []error { return []error{ErrFlag, e.Err} }

// EnvName is the environment variable that sets a flag: FLANNELD_ and the
// name in upper case with '-' and '.' turned into '_'.
func EnvName(flagName string) string {
	return "FLANNELD_" + strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(flagName))
}

// EnvNames lists every environment variable ParseOptions reads with the
// backend types' settings: a FLANNELD_ variable per flag, NODE_NAME,
// POD_NAME, POD_NAMESPACE and WIREGUARD_KEY_FILE.
func EnvNames(backends map[string]FlagAdder) []string {
	o := Defaults()
	o.Backends = backends
	fs := flag.NewFlagSet("weftd", flag.ContinueOnError)
	o.AddFlags(fs)
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "h" && f.Name != "help" {
			names = append(names, EnvName(f.Name))
		}
	})
	return append(names, "NODE_NAME", "POD_NAME", "POD_NAMESPACE", "WIREGUARD_KEY_FILE")
}

// ParseOptions parses weftd's command line (without the program name) and
// environment. Flags take one or two leading dashes, "--name=value" or
// "--name value"; booleans take "--name" or "--name=false". For each flag
// not on the command line, FLANNELD_<NAME> is used when set and non-empty.
// The result is validated (see Options.Validate). backends are the
// backend types' node settings at their defaults (backend.Registry's
// Settings), parsed in place and kept in Options.Backends; nil parses
// without them.
func ParseOptions(args []string, lookupEnv func(string) (string, bool), backends map[string]FlagAdder) (Options, error) {
	o := Defaults()
	o.Backends = backends
	fs := flag.NewFlagSet("weftd", flag.ContinueOnError)
	o.AddFlags(fs)
	if err := parseArgs(fs, args); err != nil {
		return Options{}, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || envErr != nil || f.Name == "h" || f.Name == "help" {
			return
		}
		name := EnvName(f.Name)
		if v, ok := lookupEnv(name); ok && v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = &FlagError{Flag: f.Name, EnvVar: name, Err: err}
			}
		}
	})
	if envErr != nil {
		return Options{}, envErr
	}
	for dst, name := range map[*string]string{&o.NodeName: "NODE_NAME", &o.PodName: "POD_NAME",
		&o.PodNamespace: "POD_NAMESPACE", &o.WireGuardKeyFile: "WIREGUARD_KEY_FILE"} {
		if v, ok := lookupEnv(name); ok && v != "" {
			*dst = v
		}
	}
	if o.Help || o.Version {
		return o, nil
	}
	return o, o.Validate()
}

// parseArgs walks args and sets flags with fs.Set, so that value errors come
// back unwrapped and can be reported as "--name: reason".
func parseArgs(fs *flag.FlagSet, args []string) error {
	flags, err := splitArgs(fs, args)
	if err != nil {
		return err
	}
	for _, f := range flags {
		if err := fs.Set(f.name, f.value); err != nil {
			return &FlagError{Flag: f.name, Err: err}
		}
	}
	return nil
}

// flagArg is one flag of a command line: its name, value and the words it
// took ("--iface eth0" is two, "--iface=eth0" one).
type flagArg struct {
	name, value string
	words       []string
}

// splitArgs cuts a command line into its flags, checking that each names a
// flag of fs and has its value.
func splitArgs(fs *flag.FlagSet, args []string) ([]flagArg, error) {
	var out []flagArg
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			if i+1 < len(args) {
				return nil, fmt.Errorf("%w: unexpected argument %q (weftd takes only flags)", ErrFlag, clip(args[i+1]))
			}
			return out, nil
		}
		if len(arg) < 2 || arg[0] != '-' {
			return nil, fmt.Errorf("%w: unexpected argument %q (weftd takes only flags)", ErrFlag, clip(arg))
		}
		name := strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
		name, value, hasValue := strings.Cut(name, "=")
		f := fs.Lookup(name)
		if f == nil || name == "" {
			return nil, &FlagError{Flag: clip(name), Err: errors.New("unknown flag (see weftd --help)")}
		}
		words := []string{arg}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			if !hasValue {
				value = "true"
			}
		} else if !hasValue {
			if i+1 >= len(args) {
				return nil, &FlagError{Flag: name, Err: errors.New("needs a value")}
			}
			i++
			value = args[i]
			words = append(words, value)
		}
		out = append(out, flagArg{name: name, value: value, words: words})
	}
	return out, nil
}

// Overlay returns the command line base with the flags that over sets
// taken out, followed by over: over's flags win, also the repeatable ones
// (--iface in over replaces every --iface of base). weft status uses it to
// judge the node by the local weftd's command line, its own flags first.
// backends are the backend types' settings, whose flags the lines may hold.
func Overlay(base, over []string, backends map[string]FlagAdder) ([]string, error) {
	o := Defaults()
	o.Backends = backends
	fs := flag.NewFlagSet("weftd", flag.ContinueOnError)
	o.AddFlags(fs)
	b, err := splitArgs(fs, base)
	if err != nil {
		return nil, fmt.Errorf("weftd's command line: %w", err)
	}
	ov, err := splitArgs(fs, over)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, f := range ov {
		set[f.name] = true
	}
	var out []string
	for _, f := range b {
		if !set[f.name] {
			out = append(out, f.words...)
		}
	}
	for _, f := range ov {
		out = append(out, f.words...)
	}
	return out, nil
}

// Validate checks the options that relate to each other or need more than
// their own syntax. Errors name the flag.
func (o *Options) Validate() error {
	fail := func(flagName, format string, a ...any) error {
		return &FlagError{Flag: flagName, Err: fmt.Errorf(format, a...)}
	}
	if !o.KubeSubnetMgr {
		if len(o.EtcdEndpoints) == 0 {
			return fail("etcd-endpoints", "must list at least one endpoint")
		}
		for _, e := range o.EtcdEndpoints {
			u, err := url.Parse(e)
			if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix" && u.Scheme != "unixs") {
				return fail("etcd-endpoints", "%q is not an endpoint URL such as http://127.0.0.1:2379", clip(e))
			}
		}
		if !strings.HasPrefix(o.EtcdPrefix, "/") {
			return fail("etcd-prefix", "%q must start with /", clip(o.EtcdPrefix))
		}
		if (o.EtcdKeyfile == "") != (o.EtcdCertfile == "") {
			return fail("etcd-keyfile", "--etcd-keyfile and --etcd-certfile must be given together")
		}
		if o.EtcdPassword != "" && o.EtcdUsername == "" {
			return fail("etcd-password", "is set but --etcd-username is empty")
		}
	}
	if o.KubeSubnetMgr {
		if o.KubeAPIURL != "" {
			if u, err := url.Parse(o.KubeAPIURL); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				return fail("kube-api-url", "%q is not a URL such as https://10.0.0.1:6443", clip(o.KubeAPIURL))
			}
		}
		if o.NetConfigPath == "" {
			return fail("net-config-path", "must not be empty with --kube-subnet-mgr")
		}
		if o.NodeName == "" && (o.PodName == "" || o.PodNamespace == "") {
			return fmt.Errorf("%w: --kube-subnet-mgr needs NODE_NAME, or POD_NAME and POD_NAMESPACE, in the environment", ErrFlag)
		}
	}
	if o.NetworkPolicy && !o.KubeSubnetMgr {
		return fail("network-policy", "needs --kube-subnet-mgr: policies, pods and namespaces come from the Kubernetes API")
	}
	if o.NetworkPolicy && o.NodeName == "" {
		return fail("network-policy", "needs NODE_NAME in the environment (the downward API's spec.nodeName, as kube-weft.yml sets it)")
	}
	if !validAnnotationPrefix(o.KubeAnnotationPrefix) {
		return fail("kube-annotation-prefix", "%q is not a DNS subdomain such as flannel.alpha.coreos.com", clip(o.KubeAnnotationPrefix))
	}
	for _, re := range o.IfaceRegex {
		if _, err := regexp.Compile(re); err != nil {
			return fail("iface-regex", "%q is not a regular expression: %w", clip(re), err)
		}
	}
	if o.SubnetFile == "" {
		return fail("subnet-file", "must not be empty")
	}
	if !o.HealthzIP.IsValid() {
		return fail("healthz-ip", "must not be empty")
	}
	return nil
}

func validAnnotationPrefix(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return false
			}
		}
	}
	return true
}

// Usage writes weftd's help: every flag (the backend types' too) with its
// default and environment variable, sorted by name.
func Usage(w io.Writer, backends map[string]FlagAdder) {
	o := Defaults()
	o.Backends = backends
	fs := flag.NewFlagSet("weftd", flag.ContinueOnError)
	o.AddFlags(fs)
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	fmt.Fprint(w, "usage: weftd [flags]\n\nweft's node daemon, a drop-in replacement for flanneld. Every flag also reads\nFLANNELD_<NAME> from the environment; the command line wins.\n\nflags:\n")
	for _, f := range flags {
		if f.Name == "h" {
			continue
		}
		def := f.DefValue
		if secretFlags()[f.Name] {
			def = ""
		}
		if def != "" && def != "false" && def != "0" {
			def = " (default " + def + ")"
		} else {
			def = ""
		}
		fmt.Fprintf(w, "  --%s\n        %s%s [%s]\n", f.Name, f.Usage, def, EnvName(f.Name))
	}
	fmt.Fprint(w, "\nenvironment: NODE_NAME (or POD_NAME and POD_NAMESPACE) names the node in kube mode;\nWIREGUARD_KEY_FILE is the wireguard private key (default /run/flannel/wgkey).\n")
}
