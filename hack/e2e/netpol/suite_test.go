package netpol

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/component-base/version"
	"k8s.io/kubernetes/test/e2e/framework"
	e2edebug "k8s.io/kubernetes/test/e2e/framework/debug"
	e2ekubectl "k8s.io/kubernetes/test/e2e/framework/kubectl"
	e2enode "k8s.io/kubernetes/test/e2e/framework/node"
	e2epod "k8s.io/kubernetes/test/e2e/framework/pod"
	utilnet "k8s.io/utils/net"
)

// namespaceCleanupTimeout bounds --clean-start's wait for old namespaces to
// go, as test/e2e's.
const namespaceCleanupTimeout = 15 * time.Minute

// setupSuite is test/e2e's set-up on the first ginkgo process, less its
// GCE image log and --prepull-images (whose image list lives in
// test/e2e/common, not linked): the optional --clean-start, then waits for
// schedulable nodes, the node count, ready kube-system pods and daemon
// sets, and logs both versions.
func setupSuite(ctx context.Context) {
	c, err := framework.LoadClientset()
	framework.ExpectNoError(err, "Error loading client")

	if framework.TestContext.CleanStart {
		cleanStart(ctx, c)
	}
	timeouts := framework.NewTimeoutContext()
	framework.ExpectNoError(e2enode.WaitForAllNodesSchedulable(ctx, c, timeouts.NodeSchedulable))
	if framework.TestContext.CloudConfig.NumNodes == framework.DefaultNumNodes {
		nodes, err := e2enode.GetReadySchedulableNodes(ctx, c)
		framework.ExpectNoError(err)
		framework.TestContext.CloudConfig.NumNodes = len(nodes.Items)
	}
	if err := e2epod.WaitForAlmostAllPodsReady(ctx, c, metav1.NamespaceSystem, framework.TestContext.MinStartupPods, framework.TestContext.AllowedNotReadyNodes, timeouts.SystemPodsStartup); err != nil {
		e2edebug.DumpAllNamespaceInfo(ctx, c, metav1.NamespaceSystem)
		e2ekubectl.LogFailedContainers(ctx, c, metav1.NamespaceSystem, framework.Logf)
		framework.Failf("Error waiting for all pods to be running and ready: %v", err)
	}
	if err := waitForDaemonSets(ctx, c, metav1.NamespaceSystem, int32(framework.TestContext.AllowedNotReadyNodes), timeouts.SystemDaemonsetStartup); err != nil {
		framework.Logf("WARNING: Waiting for all daemonsets to be ready failed: %v", err)
	}
	if framework.TestContext.PrepullImages {
		framework.Logf("--prepull-images is not supported by this binary (only the netpol specs are linked); not pre-pulling")
	}

	framework.Logf("e2e test version: %s", version.Get().GitVersion)
	serverVersion, serverErr := c.DiscoveryClient.ServerVersion()
	if serverErr != nil {
		framework.Logf("Unexpected server error retrieving version: %v", serverErr)
	}
	if serverVersion != nil {
		framework.Logf("kube-apiserver version: %s", serverVersion.GitVersion)
	}
}

// cleanStart deletes every namespace but the system's and waits for them to
// go (--clean-start).
func cleanStart(ctx context.Context, c clientset.Interface) {
	deleted, err := framework.DeleteNamespaces(ctx, c, nil,
		[]string{metav1.NamespaceSystem, metav1.NamespaceDefault, metav1.NamespacePublic, v1.NamespaceNodeLease})
	if err != nil {
		framework.Failf("Error deleting orphaned namespaces: %v", err)
	}
	if err := framework.WaitForNamespacesDeleted(ctx, c, deleted, namespaceCleanupTimeout); err != nil {
		framework.Failf("Failed to delete orphaned namespaces %v: %v", deleted, err)
	}
}

// clusterIPFamily returns "ipv6" when the default namespace's kubernetes
// Service has an IPv6 ClusterIP and "ipv4" otherwise, as test/e2e's
// getDefaultClusterIPFamily.
func clusterIPFamily(ctx context.Context, c clientset.Interface) string {
	svc, err := c.CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		framework.Failf("Failed to get kubernetes service ClusterIP: %v", err)
	}
	if utilnet.IsIPv6String(svc.Spec.ClusterIP) {
		return "ipv6"
	}
	return "ipv4"
}

// waitForDaemonSets waits until every daemon set in ns has at most
// allowedNotReady pods not ready; -1 does not wait.
func waitForDaemonSets(ctx context.Context, c clientset.Interface, ns string, allowedNotReady int32, timeout time.Duration) error {
	if allowedNotReady == -1 {
		return nil
	}
	start := time.Now()
	framework.Logf("Waiting up to %v for all daemonsets in namespace '%s' to start", timeout, ns)
	return wait.PollUntilContextTimeout(ctx, framework.Poll, timeout, true, func(ctx context.Context) (bool, error) {
		dsList, err := c.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			framework.Logf("Error getting daemonsets in namespace: '%s': %v", ns, err)
			return false, fmt.Errorf("list daemon sets in %s: %w", ns, err)
		}
		var notReady []string
		for _, ds := range dsList.Items {
			framework.Logf("%d / %d pods ready in namespace '%s' in daemonset '%s' (%d seconds elapsed)", ds.Status.NumberReady, ds.Status.DesiredNumberScheduled, ns, ds.Name, int(time.Since(start).Seconds()))
			if ds.Status.DesiredNumberScheduled-ds.Status.NumberReady > allowedNotReady {
				notReady = append(notReady, ds.Name)
			}
		}
		if len(notReady) > 0 {
			framework.Logf("there are not ready daemonsets: %v", notReady)
			return false, nil
		}
		return true, nil
	})
}

// e2eAfterSuite is test/e2e's AfterSuiteActions, less
// --gather-suite-metrics-at-teardown (the metrics grabber is not linked):
// the framework's core dump into --report-dir.
func e2eAfterSuite(_ context.Context) {
	framework.Logf("Running AfterSuite actions on node 1")
	if framework.TestContext.ReportDir != "" {
		framework.CoreDump(framework.TestContext.ReportDir)
	}
	if framework.TestContext.GatherSuiteMetricsAfterTest {
		framework.Logf("--gather-suite-metrics-at-teardown is not supported by this binary; no suite metrics")
	}
}
