package main

// deploy/bootstrap performed: the first agent runs `daemonlet server` as a
// static pod from its --pod-manifest-path, on an image holding the
// daemonlet binary imported through --images-dir; it then registers with
// that server, a second agent joins, and a DaemonSet runs on both.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/internal/ctdtest"
	"github.com/daemonlet/daemonlet/internal/testimage"
)

// bootstrapImage is the image deploy/bootstrap/daemonlet-server.yaml runs.
const bootstrapImage = "daemonlet.local/daemonlet:dev"

func TestBootstrapServerAsStaticPod(t *testing.T) {
	ctdtest.Require(t) // before the static build, which is wasted without containerd
	bin := daemonletBinary(t)
	dir := t.TempDir()

	// The image: a static daemonlet binary, next to the test image.
	images := filepath.Join(dir, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		t.Fatal(err)
	}
	static := filepath.Join(dir, "daemonlet-static")
	build := exec.Command("go", "build", "-o", static, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	program, err := os.ReadFile(static)
	if err != nil {
		t.Fatal(err)
	}
	if err := testimage.BuildProgram(filepath.Join(images, "daemonlet.tar"), bootstrapImage, program, []string{"server"}); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(buildDir, "images", "testimage.tar"), filepath.Join(images, "testimage.tar")); err != nil {
		t.Fatal(err)
	}

	// The server's files on the first node: its token file and data dir.
	tokensDir, dataDir := filepath.Join(dir, "server"), filepath.Join(dir, "data")
	if err := os.MkdirAll(tokensDir, 0o700); err != nil {
		t.Fatal(err)
	}
	csv := adminToken + ",admin,admin,\"system:masters\"\n"
	for _, n := range []string{"boot-1", "boot-2"} {
		csv += fmt.Sprintf("%s,system:node:%s,%s,\"system:nodes\"\n", nodeToken(n), n, n)
	}
	if err := os.WriteFile(filepath.Join(tokensDir, "tokens.csv"), []byte(csv), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	manifest, err := os.ReadFile("../../deploy/bootstrap/daemonlet-server.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rendered := strings.NewReplacer(
		"6443", strconv.Itoa(port),
		"path: /var/lib/daemonlet-server", "path: "+dataDir,
		"path: /etc/daemonlet/server", "path: "+tokensDir,
	).Replace(string(manifest))
	if rendered == string(manifest) {
		t.Fatal("the bootstrap manifest changed shape: nothing to adapt")
	}
	s := &serverProc{t: t, bin: bin, addr: fmt.Sprintf("127.0.0.1:%d", port)}

	join := func(name string, extra ...string) *node {
		t.Helper()
		tokenFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, []byte(nodeToken(name)), 0o600); err != nil {
			t.Fatal(err)
		}
		n := newNode(t, "", append([]string{"--server", s.url(), "--token-file", tokenFile}, extra...)...)
		n.name = name
		return n
	}
	first := join("boot-1", "--images-dir", images)
	first.manifest("daemonlet-server.yaml", rendered)
	first.start()
	waitUntil(t, 90*time.Second, "the static server pod to answer", func() error {
		_, err := s.cli("version")
		return err
	})
	join("boot-2").start()

	apply := filepath.Join(dir, "plain.yaml")
	if err := os.WriteFile(apply, []byte(plainDS), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := s.cli("apply", "-f", apply); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	s.waitDS("default", "plain", 2, 2, 2)
	// The server's own pod is reported as the first node's mirror pod.
	waitUntil(t, 30*time.Second, "the server's mirror pod", func() error {
		out, err := s.cli("get", "pods", "-n", "kube-system", "-o", "wide")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "daemonlet-server") || !strings.Contains(out, "boot-1") {
			return fmt.Errorf("no mirror pod in:\n%s", out)
		}
		return nil
	})
}
