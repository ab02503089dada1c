package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestCreateConfigMapAndSecret(t *testing.T) {
	startAPIServer(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "app.conf")
	if err := os.WriteFile(conf, []byte("[SERVICE]\n    Flush 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "blob"), []byte{0xff, 0xfe, 0}, 0o600); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := runCLI(t, "", "create", "configmap", "cfg", "--from-literal=level=debug", "--from-file="+conf, "--from-file=renamed="+conf)
	if code != 0 || out != "configmap/cfg created\n" {
		t.Fatalf("create configmap: exit %d, %q, %q", code, out, errOut)
	}
	out, _, code = runCLI(t, "", "get", "cm", "cfg", "-o", "yaml")
	for _, want := range []string{"kind: ConfigMap", "level: debug", "app.conf: |", "renamed: |", "    Flush 1"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("get cm -o yaml lacks %q:\n%s", want, out)
		}
	}
	// A directory gives one key per file; non-UTF-8 content is binaryData.
	out, errOut, code = runCLI(t, "", "create", "cm", "dir", "--from-file="+dir, "-n", "kube-system")
	if code != 0 || out != "configmap/dir created\n" {
		t.Fatalf("create configmap from a directory: exit %d, %q, %q", code, out, errOut)
	}
	out, _, _ = runCLI(t, "", "get", "configmap", "dir", "-n", "kube-system", "-o", "json")
	if !strings.Contains(out, `"binaryData": {`) || !strings.Contains(out, `"blob": "//4A"`) || !strings.Contains(out, `"app.conf": "[SERVICE]`) {
		t.Errorf("configmap from a directory:\n%s", out)
	}
	for _, args := range [][]string{
		{"create", "cm", "dup", "--from-literal=a=1", "--from-literal=a=2"},
		{"create", "cm", "badkey", "--from-literal=a/b=1"},
		{"create", "cm", "noeq", "--from-literal=novalue"},
		{"create", "cm", "cfg", "--from-literal=a=1"}, // exists
	} {
		if _, errOut, code := runCLI(t, "", args...); code == 0 {
			t.Errorf("%v succeeded; stderr %q", args, errOut)
		}
	}
	out, _, code = runCLI(t, "", "get", "cm")
	if code != 0 || !regexp.MustCompile(`^NAME\s+DATA\s+AGE\ncfg\s+3\s+\S+\n$`).MatchString(out) {
		t.Errorf("get cm table:\n%s", out)
	}

	const value = "hunter2-very-secret"
	out, errOut, code = runCLI(t, "", "create", "secret", "generic", "creds", "--from-literal=password="+value, "--from-literal=user=admin")
	if code != 0 || out != "secret/creds created\n" {
		t.Fatalf("create secret generic: exit %d, %q, %q", code, out, errOut)
	}
	b64 := base64.StdEncoding.EncodeToString([]byte(value))
	out, _, code = runCLI(t, "", "get", "secrets")
	if code != 0 || !regexp.MustCompile(`^NAME\s+TYPE\s+DATA\s+AGE\ncreds\s+Opaque\s+2\s+\S+\n$`).MatchString(out) {
		t.Errorf("get secrets table:\n%s", out)
	}
	out, _, _ = runCLI(t, "", "describe", "secret", "creds")
	if strings.Contains(out, value) || strings.Contains(out, b64) || !strings.Contains(out, "password:  19 bytes") || !strings.Contains(out, "\nType:  Opaque\n") {
		t.Errorf("describe secret:\n%s", out)
	}
	for _, args := range [][]string{{"get", "secrets"}, {"get", "secret", "creds"}, {"get", "secrets", "-o", "wide"}} {
		if out, _, _ := runCLI(t, "", args...); strings.Contains(out, value) || strings.Contains(out, b64) {
			t.Errorf("%v printed the value:\n%s", args, out)
		}
	}
	out, _, _ = runCLI(t, "", "get", "secret", "creds", "-o", "yaml")
	if !strings.Contains(out, "password: "+b64) || !strings.Contains(out, "type: Opaque") {
		t.Errorf("get secret -o yaml lacks the data:\n%s", out)
	}
	// --dry-run=client -o yaml prints the object and stores nothing.
	out, _, code = runCLI(t, "", "create", "secret", "generic", "draft", "--from-literal=k=v", "--dry-run=client", "-o", "yaml")
	if code != 0 || !strings.Contains(out, "name: draft") || !strings.Contains(out, "k: dg==") {
		t.Errorf("dry run: exit %d\n%s", code, out)
	}
	if _, _, code := runCLI(t, "", "get", "secret", "draft"); code == 0 {
		t.Error("a client dry run stored the secret")
	}

	out, errOut, code = runCLI(t, "", "delete", "secret", "creds")
	if code != 0 || out != "secret \"creds\" deleted\n" {
		t.Errorf("delete secret: exit %d, %q, %q", code, out, errOut)
	}
	out, errOut, code = runCLI(t, "", "delete", "cm", "cfg")
	if code != 0 || out != "configmap \"cfg\" deleted\n" {
		t.Errorf("delete configmap: exit %d, %q, %q", code, out, errOut)
	}
	if _, errOut, _ := runCLI(t, "", "get", "secrets"); errOut != "No resources found in default namespace.\n" {
		t.Errorf("get secrets after delete: %q", errOut)
	}
}

const configManifest = `apiVersion: v1
kind: ConfigMap
metadata: {name: app}
data: {level: LEVEL}
---
apiVersion: v1
kind: Secret
metadata: {name: app-creds}
stringData: {token: abc}
---
` + testDaemonSet

func TestApplyConfigMapAndSecret(t *testing.T) {
	startAPIServer(t)
	apply := func(level string) string {
		t.Helper()
		out, errOut, code := runCLI(t, strings.ReplaceAll(strings.ReplaceAll(configManifest, "LEVEL", level), "IMAGE", "v1"), "apply", "-f", "-")
		if code != 0 {
			t.Fatalf("apply: exit %d, %q", code, errOut)
		}
		return out
	}
	want := "configmap/app created\nsecret/app-creds created\ndaemonset.apps/agent created\n"
	if out := apply("info"); out != want {
		t.Errorf("first apply:\n%s\nwant\n%s", out, want)
	}
	want = "configmap/app configured\nsecret/app-creds unchanged\ndaemonset.apps/agent unchanged\n"
	if out := apply("debug"); out != want {
		t.Errorf("second apply:\n%s\nwant\n%s", out, want)
	}
	// Without a namespace in the manifest, -n places the objects.
	out, errOut, code := runCLI(t, strings.ReplaceAll(configManifest, "IMAGE", "v1"), "apply", "-f", "-", "-n", "kube-system")
	want = "configmap/app created\nsecret/app-creds created\ndaemonset.apps/agent created\n"
	if code != 0 || out != want {
		t.Errorf("apply -n kube-system: exit %d, %q, %q", code, out, errOut)
	}
	if _, _, code := runCLI(t, "", "get", "secret", "app-creds", "-n", "kube-system"); code != 0 {
		t.Error("the secret is not in kube-system")
	}
	out, _, _ = runCLI(t, "", "describe", "cm", "app")
	if !strings.Contains(out, "level:\n----\ndebug\n") {
		t.Errorf("describe cm:\n%s", out)
	}
	out, errOut, code = runCLI(t, strings.ReplaceAll(strings.ReplaceAll(configManifest, "LEVEL", "x"), "IMAGE", "v1"), "delete", "-f", "-")
	want = "configmap \"app\" deleted\nsecret \"app-creds\" deleted\ndaemonset.apps \"agent\" deleted\n"
	if code != 0 || out != want {
		t.Errorf("delete -f: exit %d, %q, %q", code, out, errOut)
	}
}
