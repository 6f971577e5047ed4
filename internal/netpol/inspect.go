package netpol

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Summary is what `weft status` shows of NetworkPolicy on a node, read from
// the kernel's table and the Node's condition, so that it is right while
// weftd is down or wedged.
type Summary struct {
	// Table says whether the kernel holds weft's table.
	Table bool `json:"table"`
	// Policies counts the policies with rules here (their chains, by
	// direction); Addresses the pod addresses in the verdict maps.
	IngressPolicies int    `json:"ingress_policies"`
	EgressPolicies  int    `json:"egress_policies"`
	Addresses       int    `json:"addresses"`
	Rules           int    `json:"rules"`
	Elements        int    `json:"elements"`
	Dropped         uint64 `json:"dropped_packets"`
	// Condition is the Node's WeftNetworkPolicy condition as weftd last
	// set it: "True", "False" or "" when absent.
	Condition string `json:"condition"`
	Reason    string `json:"reason,omitempty"`
	Message   string `json:"message,omitempty"`
}

// Enforced reports whether the node polices as the policies say: the
// table is there and weftd's condition says so.
func (s Summary) Enforced() bool { return s.Table && s.Condition == string(corev1.ConditionTrue) }

// String is the summary on one line.
func (s Summary) String() string {
	if !s.Table {
		return "NOT enforced: the kernel has no table inet " + TableName + condText(s)
	}
	state := "enforcing"
	if !s.Enforced() {
		state = "NOT fully enforced"
	}
	return fmt.Sprintf("%s: %d ingress and %d egress policies for %d pod addresses; table inet %s: %d rules, %d elements, %d packets dropped%s",
		state, s.IngressPolicies, s.EgressPolicies, s.Addresses, TableName, s.Rules, s.Elements, s.Dropped, condText(s))
}

func condText(s Summary) string {
	if s.Condition == "" {
		return "; the Node has no " + ConditionType + " condition"
	}
	return fmt.Sprintf("; condition %s %s: %s", s.Condition, s.Reason, s.Message)
}

// Inspect reads the kernel's table and node's condition.
func Inspect(ctx context.Context, k Kernel, node *corev1.Node) (Summary, error) {
	var s Summary
	if node != nil {
		for _, c := range node.Status.Conditions {
			if c.Type == ConditionType {
				s.Condition, s.Reason, s.Message = string(c.Status), c.Reason, c.Message
			}
		}
	}
	c, err := k.Census(ctx)
	if err != nil {
		return s, err
	}
	s.Table = c.Table
	for name, n := range c.Rules {
		s.Rules += n
		switch {
		case strings.HasPrefix(name, Ingress.short()+"-"):
			s.IngressPolicies++
		case strings.HasPrefix(name, Egress.short()+"-"):
			s.EgressPolicies++
		}
	}
	s.Elements, s.Addresses = c.Inline, c.Addresses
	for _, n := range c.Elements {
		s.Elements += n
	}
	for _, n := range c.Counters {
		s.Dropped += n
	}
	return s, nil
}
