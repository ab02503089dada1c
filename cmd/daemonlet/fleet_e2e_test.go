package main

// The fleet end to end: `daemonlet server`, two agents (two node names,
// two containerd namespaces on the one private containerd) and the CLI,
// all as the real binary.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/runtime"
)

// serverProc is one `daemonlet server` process.
type serverProc struct {
	t       *testing.T
	bin     string
	dataDir string
	tokens  string
	addr    string
	cmd     *exec.Cmd
	exited  chan struct{}
	logFile string
	// extraArgs are added to the server's command line (the etcd flags).
	extraArgs []string
	// urls are the servers the CLI and agents are given, s.url() when
	// empty (several replicas of one API).
	urls []string
}

const adminToken = "admin-token-e2e"

func nodeToken(name string) string { return "node-token-" + name }

func newServer(t *testing.T, nodes ...string) *serverProc {
	t.Helper()
	dir := t.TempDir()
	s := &serverProc{
		t: t, bin: daemonletBinary(t),
		dataDir: filepath.Join(dir, "data"),
		tokens:  filepath.Join(dir, "tokens.csv"),
		addr:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		logFile: filepath.Join(dir, "server.log"),
	}
	csv := adminToken + ",admin,uid-admin,\"system:masters\"\n"
	for _, n := range nodes {
		csv += fmt.Sprintf("%s,system:node:%s,uid-%s,\"system:nodes\"\n", nodeToken(n), n, n)
	}
	if err := os.WriteFile(s.tokens, []byte(csv), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop(syscall.SIGTERM)
		if t.Failed() {
			if b, err := os.ReadFile(s.logFile); err == nil {
				t.Logf("server log:\n%s", b)
			}
		}
	})
	return s
}

func (s *serverProc) url() string { return "http://" + s.addr }

// serverList is the --server value of the CLI and agents.
func (s *serverProc) serverList() string {
	if len(s.urls) == 0 {
		return s.url()
	}
	return strings.Join(s.urls, ",")
}

func (s *serverProc) start() {
	s.t.Helper()
	host, port, _ := strings.Cut(s.addr, ":")
	log, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(s.bin, "server", "--bind-address", host, "--secure-port", port,
		"--data-dir", s.dataDir, "--token-auth-file", s.tokens)
	cmd.Args = append(cmd.Args, s.extraArgs...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(s.exited)
	waitUntil(s.t, 30*time.Second, "the server to answer", func() error {
		_, err := s.cli("version")
		return err
	})
}

func (s *serverProc) stop(sig syscall.Signal) {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// cli runs the daemonlet CLI against the server as the admin.
func (s *serverProc) cli(args ...string) (string, error) {
	full := append([]string{"--server", s.serverList(), "--token", adminToken}, args...)
	cmd := exec.Command(s.bin, full...)
	cmd.Env = append(os.Environ(), "DAEMONLET_CONFIG="+filepath.Join(s.t.TempDir(), "none"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("daemonlet %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func waitUntil(t *testing.T, timeout time.Duration, what string, try func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = try(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
}

// dsRow returns the `get ds` row of one DaemonSet as its columns.
func (s *serverProc) dsRow(ns, name string) ([]string, error) {
	out, err := s.cli("get", "ds", "-n", ns)
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == name {
			return f, nil
		}
	}
	return nil, fmt.Errorf("no row for %s in:\n%s", name, out)
}

// waitDS waits until `get ds` shows DESIRED, CURRENT, READY as given.
func (s *serverProc) waitDS(ns, name string, desired, current, ready int) {
	s.t.Helper()
	want := []string{fmt.Sprint(desired), fmt.Sprint(current), fmt.Sprint(ready)}
	waitUntil(s.t, 90*time.Second, fmt.Sprintf("%s to show %v", name, want), func() error {
		row, err := s.dsRow(ns, name)
		if err != nil {
			return err
		}
		if len(row) < 4 || strings.Join(row[1:4], " ") != strings.Join(want, " ") {
			return fmt.Errorf("row %v", row)
		}
		return nil
	})
}

// fleetNode starts an agent that joins the server with its node token.
func fleetNode(t *testing.T, s *serverProc, name string) *node {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(nodeToken(name)), 0o600); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, "nodeLabels: {logging: \"true\"}\n", "--server", s.serverList(), "--token-file", tokenFile)
	n.name = name
	n.start()
	return n
}

// seedWithSelector is the seed example restricted to nodes labelled
// logging=true, so that a label change takes a node out.
func seedWithSelector(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/examples/fluentd-elasticsearch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Replace(string(b), "    spec:\n      tolerations:", "    spec:\n      nodeSelector:\n        logging: \"true\"\n      tolerations:", 1)
	if out == string(b) {
		t.Fatal("seed example changed shape: cannot add the nodeSelector")
	}
	p := filepath.Join(t.TempDir(), "fluentd.yaml")
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFleet(t *testing.T) {
	s := newServer(t, "node-a", "node-b")
	s.start()
	a := fleetNode(t, s, "node-a")
	b := fleetNode(t, s, "node-b")
	manifest := seedWithSelector(t)
	const ns, ds = "kube-system", "fluentd-elasticsearch"

	out, err := s.cli("apply", "-f", manifest)
	if err != nil || !strings.Contains(out, "daemonset.apps/fluentd-elasticsearch created") {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	s.waitDS(ns, ds, 2, 2, 2)
	out, err = s.cli("get", "pods", "-n", ns, "-o", "wide")
	if err != nil || !strings.Contains(out, "node-a") || !strings.Contains(out, "node-b") {
		t.Fatalf("get pods: %v\n%s", err, out)
	}

	// A label that takes node-b out of the selector.
	if out, err := s.cli("label", "node", "node-b", "logging-"); err != nil {
		t.Fatalf("label: %v\n%s", err, out)
	}
	s.waitDS(ns, ds, 1, 1, 1)
	waitUntil(t, 30*time.Second, "node-b's pod to go", func() error {
		if got := b.runningByPod(); len(got) != 0 {
			return fmt.Errorf("node-b still runs %v", got)
		}
		return nil
	})
	podA := a.runningByPod()[ds+"-node-a"]
	if podA.PID == 0 {
		t.Fatalf("node-a runs no pod: %+v", a.runningByPod())
	}

	// Orphaning delete: the containers keep running.
	if out, err := s.cli("delete", "ds", ds, "-n", ns, "--cascade=orphan"); err != nil {
		t.Fatalf("delete --cascade=orphan: %v\n%s", err, out)
	}
	time.Sleep(3 * time.Second) // room for a wrong stop to happen
	assertSame(t, "after an orphaning delete", podA, a.runningByPod()[ds+"-node-a"])

	// Re-created with the same template, the DaemonSet adopts the pod.
	if out, err := s.cli("apply", "-f", manifest); err != nil {
		t.Fatalf("re-apply: %v\n%s", err, out)
	}
	s.waitDS(ns, ds, 1, 1, 1)
	assertSame(t, "after adoption", podA, a.runningByPod()[ds+"-node-a"])

	// The server goes away: pods keep running, nothing restarts.
	s.stop(syscall.SIGKILL)
	time.Sleep(3 * time.Second)
	assertSame(t, "with the server down", podA, a.runningByPod()[ds+"-node-a"])

	// The server comes back: statuses resync.
	s.start()
	s.waitDS(ns, ds, 1, 1, 1)
	assertSame(t, "after the server returned", podA, a.runningByPod()[ds+"-node-a"])
	out, err = s.cli("get", "nodes")
	if err != nil || strings.Count(out, "Ready") < 2 {
		t.Errorf("get nodes: %v\n%s", err, out)
	}
}

func assertSame(t *testing.T, when string, want, got runtime.Container) {
	t.Helper()
	if got.ID != want.ID || got.PID != want.PID {
		t.Errorf("%s: container %s pid %d, want %s pid %d (restarted)", when, got.ID, got.PID, want.ID, want.PID)
	}
}
