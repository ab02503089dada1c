package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// deadServer is a loopback URL on which nothing listens.
func deadServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

const testDaemonSet = `apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  labels: {app: agent}
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: main
        image: registry.example/agent:IMAGE
`

func manifest(image string) string { return strings.ReplaceAll(testDaemonSet, "IMAGE", image) }

func TestApplyCreateConfigureUnchanged(t *testing.T) {
	startAPIServer(t)
	file := filepath.Join(t.TempDir(), "ds.yaml")
	write := func(image string) {
		if err := os.WriteFile(file, []byte(manifest(image)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		image, args, want string
	}{
		{"v1", "--dry-run=server", "daemonset.apps/agent created (server dry run)\n"},
		{"v1", "", "daemonset.apps/agent created\n"},
		{"v1", "", "daemonset.apps/agent unchanged\n"},
		{"v2", "--dry-run=server", "daemonset.apps/agent configured (server dry run)\n"},
		{"v2", "", "daemonset.apps/agent configured\n"},
		{"v2", "", "daemonset.apps/agent unchanged\n"},
	}
	for _, s := range steps {
		write(s.image)
		args := []string{"apply", "-f", file}
		if s.args != "" {
			args = append(args, s.args)
		}
		out, errOut, code := runCLI(t, "", args...)
		if code != 0 || out != s.want {
			t.Fatalf("apply %s %s: exit %d, out %q, err %q; want %q", s.image, s.args, code, out, errOut, s.want)
		}
	}
	out, _, code := runCLI(t, "", "get", "ds", "agent", "-o", "wide")
	if code != 0 || !strings.Contains(out, "registry.example/agent:v2") || !strings.Contains(out, "app=agent") {
		t.Errorf("get after apply: exit %d\n%s", code, out)
	}
	// From stdin, in another namespace given with -n.
	out, errOut, code := runCLI(t, manifest("v1"), "apply", "-f", "-", "-n", "kube-system")
	if code != 0 || out != "daemonset.apps/agent created\n" {
		t.Errorf("apply from stdin: exit %d, %q, %q", code, out, errOut)
	}
	out, _, _ = runCLI(t, "", "get", "ds", "-A")
	if !strings.HasPrefix(out, "NAMESPACE     NAME    DESIRED") || !strings.Contains(out, "\nkube-system   agent   ") {
		t.Errorf("get -A:\n%s", out)
	}

	_, errOut, code = runCLI(t, "", "delete", "ds", "agent", "--cascade=orphan")
	if code != 0 {
		t.Errorf("delete: exit %d %q", code, errOut)
	}
	out, errOut, code = runCLI(t, "", "delete", "ds", "agent")
	if code != 1 || errOut != "Error from server (NotFound): daemonsets.apps \"agent\" not found\n" || out != "" {
		t.Errorf("delete again: exit %d, %q, %q", code, out, errOut)
	}
	if _, _, code := runCLI(t, "", "delete", "ds", "agent", "--ignore-not-found"); code != 0 {
		t.Errorf("delete --ignore-not-found: exit %d", code)
	}
	out, _, code = runCLI(t, manifest("v1"), "delete", "-f", "-", "-n", "kube-system")
	if code != 0 || out != "daemonset.apps \"agent\" deleted\n" {
		t.Errorf("delete -f: exit %d, %q", code, out)
	}
	out, errOut, code = runCLI(t, "", "get", "ds")
	if code != 0 || out != "" || errOut != "No resources found in default namespace.\n" {
		t.Errorf("get empty: exit %d, %q, %q", code, out, errOut)
	}
}

func TestApplyDryRunClientNeedsNoServer(t *testing.T) {
	isolateConfig(t)
	dir := t.TempDir()
	for name, body := range map[string]string{"a.yaml": manifest("v1"), "b.json": `{"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"other"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}`, "notes.txt": "ignored"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code := runCLI(t, "", "apply", "-f", dir, "--dry-run=client")
	if code != 0 || out != "daemonset.apps/agent created (dry run)\ndaemonset.apps/other created (dry run)\n" {
		t.Errorf("exit %d, out %q, err %q", code, out, errOut)
	}
}

func TestApplyRejectsBadManifests(t *testing.T) {
	isolateConfig(t)
	bad := strings.Replace(manifest("v1"), "matchLabels: {app: agent}", "matchLabels: {app: other}", 1)
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: static}\nspec:\n  containers: [{name: c, image: i}]\n"
	out, errOut, code := runCLI(t, bad+"---\n"+pod+"---\n"+manifest("v1"), "apply", "-f", "-", "--dry-run=client")
	if code != 1 || out != "daemonset.apps/agent created (dry run)\n" {
		t.Errorf("exit %d, out %q", code, out)
	}
	if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "error: -: document 1: spec.template.metadata.labels") ||
		!strings.Contains(errOut, `document 2: pod "static": the server takes only apps/v1 DaemonSets`) {
		t.Errorf("stderr %q", errOut)
	}
	if _, errOut, code := runCLI(t, manifest("v1"), "apply", "-f", "-", "--dry-run=maybe"); code != 1 || !strings.Contains(errOut, "invalid dry-run value") {
		t.Errorf("bad --dry-run: exit %d %q", code, errOut)
	}
	if _, errOut, code := runCLI(t, "", "apply", "-f", filepath.Join(t.TempDir(), "none.yaml")); code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Errorf("missing file: exit %d %q", code, errOut)
	}
	if _, errOut, code := runCLI(t, strings.Replace(manifest("v1"), "name: agent", "name: agent\n  namespace: a", 1), "apply", "-f", "-", "-n", "b", "--dry-run=client"); code != 1 || !strings.Contains(errOut, `the namespace from the provided object "a" does not match the namespace "b"`) {
		t.Errorf("namespace mismatch: exit %d %q", code, errOut)
	}
}
