package netpol

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"

	"k8s.io/component-base/logs"
	"k8s.io/component-base/version"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"
	"k8s.io/kubernetes/test/e2e/framework/testfiles"
	e2ereporters "k8s.io/kubernetes/test/e2e/reporters"

	// Auth plugins for kubeconfigs, klog's flags on the command line.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	_ "k8s.io/component-base/logs/testinit"

	// Feature and label constants, frozen as test/e2e freezes them.
	_ "k8s.io/kubernetes/test/e2e/feature"

	// The framework's own extensions, as test/e2e links them: dumps of
	// cluster state on failure, metrics gathering, node checks.
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/metrics/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
	_ "k8s.io/kubernetes/test/utils/format"

	// The only specs: "[sig-network] Netpol".
	_ "k8s.io/kubernetes/test/e2e/network/netpol"
)

// TestMain parses the flags test/e2e's TestMain parses (less its
// --list-conformance-tests and the log-check invariant's flags, whose
// packages are not linked) and sets up framework.TestContext from them.
func TestMain(m *testing.M) {
	versionFlag := flag.CommandLine.Bool("version", false, "Displays version information.")
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()

	if *versionFlag {
		fmt.Printf("%s\n", version.Get())
		os.Exit(0)
	}
	if flag.CommandLine.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unknown additional command line arguments: %s", flag.CommandLine.Args())
		os.Exit(1)
	}

	framework.AfterReadingAllFlags(&framework.TestContext)
	if framework.TestContext.RepoRoot != "" {
		testfiles.AddFileSource(testfiles.RootFileSource{Root: framework.TestContext.RepoRoot})
	}
	os.Exit(m.Run())
}

// TestE2E runs the specs through ginkgo as test/e2e's RunE2ETests does:
// contextual logging on, framework.Fail as gomega's fail handler, the
// framework's ginkgo configuration (which the --ginkgo.* flags set) and the
// suite's set-up and reporters declared before RunSpecs.
func TestE2E(t *testing.T) {
	logs.InitLogs()
	defer logs.FlushLogs()
	klog.EnableContextualLogging(true)

	progress := e2ereporters.NewProgressReporter(framework.TestContext.ProgressReportURL)
	declareSuite(progress)
	gomega.RegisterFailHandler(framework.Fail)

	suiteConfig, reporterConfig := framework.CreateGinkgoConfig()
	klog.Infof("Starting e2e run %q on Ginkgo node %d", framework.RunID, suiteConfig.ParallelProcess)
	ginkgo.RunSpecs(t, "Kubernetes e2e suite", suiteConfig, reporterConfig)
}

// declareSuite declares test/e2e's suite-level nodes: the set-up on the
// first ginkgo process (setupSuite) and on every process (the cluster's IP
// family, which the netpol specs read), the framework's after-suite actions,
// and the progress reporter's hooks.
func declareSuite(progress *e2ereporters.ProgressReporter) {
	ginkgo.SynchronizedBeforeSuite(func(ctx context.Context) []byte {
		progress.SetStartMsg()
		setupSuite(ctx)
		return nil
	}, func(ctx context.Context, _ []byte) {
		c, err := framework.LoadClientset()
		framework.ExpectNoError(err, "Error loading client")
		framework.TestContext.IPFamily = clusterIPFamily(ctx, c)
		framework.Logf("Cluster IP family: %s", framework.TestContext.IPFamily)
	})
	ginkgo.SynchronizedAfterSuite(func() {
		progress.SetEndMsg()
	}, func(ctx context.Context) {
		e2eAfterSuite(ctx)
	})
	ginkgo.ReportAfterEach(func(report ginkgo.SpecReport) {
		progress.ProcessSpecReport(report)
	})
	ginkgo.ReportBeforeSuite(func(report ginkgo.Report) {
		progress.SetTestsTotal(report.PreRunStats.SpecsThatWillRun)
	})
}
