package main

import (
	"context"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/api/client"
)

// registerNode creates a Node on the test server and returns a client.
func registerNode(t *testing.T, node *corev1.Node) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Servers: []string{os.Getenv(envServer)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Nodes().Create(context.Background(), node, client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLabelNode(t *testing.T) {
	startAPIServer(t)
	c := registerNode(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"zone": "a", "old": "x"}}})
	steps := []struct {
		args    []string
		code    int
		out     string
		errText string
	}{
		{[]string{"gpu=true"}, 0, "node/n1 labeled\n", ""},
		{[]string{"zone=b"}, 1, "", "error: 'zone' already has a value (a), and --overwrite is false: failed precondition\n"},
		{[]string{"zone=b", "--overwrite"}, 0, "node/n1 labeled\n", ""},
		{[]string{"old-"}, 0, "node/n1 unlabeled\n", ""},
		{[]string{"gpu=true"}, 0, "node/n1 not labeled\n", ""},
		{[]string{"bad key=x"}, 1, "", ""},
	}
	for _, s := range steps {
		out, errOut, code := runCLI(t, "", append([]string{"label", "node", "n1"}, s.args...)...)
		if code != s.code || out != s.out || (s.errText != "" && errOut != s.errText) {
			t.Errorf("label %v: exit %d, out %q, err %q", s.args, code, out, errOut)
		}
	}
	node, err := c.Nodes().Get(context.Background(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(node.Labels) != 2 || node.Labels["zone"] != "b" || node.Labels["gpu"] != "true" {
		t.Errorf("labels = %v", node.Labels)
	}
	if _, errOut, code := runCLI(t, "", "label", "node", "nope", "a=b"); code != 1 || errOut != "Error from server (NotFound): nodes \"nope\" not found\n" {
		t.Errorf("missing node: exit %d, %q", code, errOut)
	}
}
