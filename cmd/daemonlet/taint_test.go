package main

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestTaintNode(t *testing.T) {
	startAPIServer(t)
	c := registerNode(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	steps := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"dedicated=infra:NoSchedule", "maint:NoExecute"}, 0, "node/n1 tainted\n"},
		{[]string{"dedicated=other:NoSchedule"}, 1, ""},
		{[]string{"dedicated=other:NoSchedule", "--overwrite"}, 0, "node/n1 tainted\n"},
		{[]string{"dedicated:PreferNoSchedule"}, 0, "node/n1 tainted\n"},
		{[]string{"maint:NoExecute-"}, 0, "node/n1 untainted\n"},
		{[]string{"maint-"}, 1, ""},
		{[]string{"x=y:Sometimes"}, 1, ""},
		{[]string{"x=y"}, 1, ""},
	}
	for _, s := range steps {
		out, errOut, code := runCLI(t, "", append([]string{"taint", "node", "n1"}, s.args...)...)
		if code != s.code || out != s.out {
			t.Errorf("taint %v: exit %d, out %q, err %q", s.args, code, out, errOut)
		}
	}
	node, err := c.Nodes().Get(context.Background(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	want := []corev1.Taint{{Key: "dedicated", Value: "other", Effect: corev1.TaintEffectNoSchedule}, {Key: "dedicated", Effect: corev1.TaintEffectPreferNoSchedule}}
	if len(node.Spec.Taints) != len(want) || node.Spec.Taints[0].ToString() != want[0].ToString() || node.Spec.Taints[1].ToString() != want[1].ToString() {
		t.Errorf("taints = %v", node.Spec.Taints)
	}
	out, _, code := runCLI(t, "", "taint", "node", "n1", "dedicated-")
	if code != 0 || out != "node/n1 untainted\n" {
		t.Errorf("remove all effects: exit %d %q", code, out)
	}
	out, errOut, code := runCLI(t, "", "get", "nodes")
	if code != 0 || out == "" {
		t.Errorf("get nodes: exit %d %q %q", code, out, errOut)
	}
	if out, errOut, code := runCLI(t, "", "describe", "node", "n1"); code != 0 || out == "" {
		t.Errorf("describe node: exit %d %q", code, errOut)
	}
}
