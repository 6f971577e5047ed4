//go:build linux

package e2e

import (
	"context"
	"testing"

	"github.com/weft-net/weft/internal/lab/cluster"
	"github.com/weft-net/weft/internal/metrics"
)

// scrapeNode reads node's /metrics and parses it as Prometheus does.
func scrapeNode(t *testing.T, c *cluster.Cluster, node int) metrics.Families {
	t.Helper()
	status, body, err := c.Get(context.Background(), node, "/metrics")
	if err != nil || status != 200 {
		t.Fatalf("GET /metrics on node %d: %d %v", node, status, err)
	}
	fams, err := metrics.ParseText(body)
	if err != nil {
		t.Fatalf("node %d: %v", node, err)
	}
	return fams
}
