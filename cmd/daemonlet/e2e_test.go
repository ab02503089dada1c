package main

// End-to-end tests of `daemonlet agent`: the real binary, as a process, on
// the private containerd, with the project's test image imported through
// --images-dir as an air-gapped node would.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/internal/ctdtest"
	"github.com/daemonlet/daemonlet/internal/testimage"
	"github.com/daemonlet/daemonlet/runtime"
)

func TestMain(m *testing.M) {
	code := ctdtest.Main(m)
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildDir  string
	binary    string
	buildErr  error
)

// daemonletBinary builds the daemonlet binary once per test run.
func daemonletBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "daemonlet-e2e-")
		if buildErr != nil {
			return
		}
		binary = filepath.Join(buildDir, "daemonlet")
		out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
		if buildErr == nil {
			// Both images the tests run, as tars an operator would drop
			// into --images-dir: the test image under its own name and
			// under the seed example's name.
			for ref, file := range map[string]string{testimage.Ref: "testimage.tar", seedImage: "fluentd.tar"} {
				if buildErr = testimage.Build(context.Background(), filepath.Join(buildDir, "images", file), ref); buildErr != nil {
					return
				}
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// seedImage is the image of deploy/examples/fluentd-elasticsearch.yaml.
const seedImage = "quay.io/fluentd_elasticsearch/fluentd:v2.5.2"

// node is one agent under test with its own directories, containerd
// namespace and CNI network.
type node struct {
	t         *testing.T
	ctd       *ctdtest.Containerd
	bin       string
	dir       string
	root      string
	manifests string
	config    string
	namespace string
	bridge    string
	addr      string
	// metricsAddr is the agent's --metrics-bind-address, a free port of its
	// own so that several agents never share kubelet-like fixed ports.
	metricsAddr string
	extraArgs   []string
	// name is the node name (--hostname-override); newNode sets
	// "e2e-node", fleet tests give each agent its own.
	name    string
	cmd     *exec.Cmd
	exited  chan struct{}
	logFile string
}

func token() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newNode(t *testing.T, config string, extraArgs ...string) *node {
	t.Helper()
	ctd := ctdtest.Require(t)
	bin := daemonletBinary(t)
	tok := token()
	dir := t.TempDir()
	n := &node{
		t: t, ctd: ctd, bin: bin, dir: dir,
		root:        filepath.Join(dir, "root"),
		manifests:   filepath.Join(dir, "manifests"),
		config:      filepath.Join(dir, "config.yaml"),
		namespace:   "dle2e-" + tok,
		bridge:      "dle2e" + tok,
		addr:        fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		metricsAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		extraArgs:   extraArgs,
		name:        "e2e-node",
		logFile:     filepath.Join(dir, "agent.log"),
	}
	for _, d := range []string{n.manifests, filepath.Join(dir, "cni")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The test's own network: a unique bridge and range, so that nothing
	// on the machine is touched.
	conflist := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"e2e","plugins":[
 {"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":true,"hairpinMode":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.234.%d.0/24"}]],"dataDir":%q}},
 {"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}`,
		n.bridge, int(tok[0])%200+20, filepath.Join(dir, "ipam"))
	if err := os.WriteFile(filepath.Join(dir, "cni", "10-e2e.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	n.writeConfig(config)
	t.Cleanup(n.cleanup)
	return n
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// writeConfig writes the agent's --config file (node labels and taints).
func (n *node) writeConfig(yaml string) {
	n.t.Helper()
	if err := os.WriteFile(n.config, []byte(yaml), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// manifest writes a manifest file into --pod-manifest-path.
func (n *node) manifest(name, yaml string) {
	n.t.Helper()
	if err := os.WriteFile(filepath.Join(n.manifests, name), []byte(yaml), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// start runs the agent process.
func (n *node) start() {
	n.t.Helper()
	host, port, _ := strings.Cut(n.addr, ":")
	args := append([]string{"agent",
		"--config", n.config,
		"--hostname-override", n.name,
		"--root-dir", n.root,
		"--container-runtime-endpoint", "unix://" + n.ctd.Address,
		"--containerd-namespace", n.namespace,
		"--pod-manifest-path", n.manifests,
		"--images-dir", filepath.Join(buildDir, "images"),
		"--pod-logs-dir", filepath.Join(n.dir, "pod-logs"),
		"--container-logs-dir", filepath.Join(n.dir, "container-logs"),
		"--cni-conf-dir", filepath.Join(n.dir, "cni"),
		"--node-ip", "127.0.0.1",
		"--healthz-bind-address", host,
		"--healthz-port", port,
		"--metrics-bind-address", n.metricsAddr,
		"--file-check-frequency", "1s",
	}, n.extraArgs...)
	log, err := os.OpenFile(n.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	cmd := exec.Command(n.bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	log.Close()
	n.cmd, n.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(n.exited)
}

// signal sends sig to the agent process by its pid.
func (n *node) signal(sig syscall.Signal) {
	n.t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.t.Fatalf("signal %v: %v", sig, err)
	}
}

// kill9 kills the agent with SIGKILL and waits until it is gone.
func (n *node) kill9() {
	n.t.Helper()
	n.signal(syscall.SIGKILL)
	<-n.exited
	n.cmd = nil
}

// stop ends the agent with SIGTERM, which leaves the pods running.
func (n *node) stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
	n.cmd = nil
}

// cleanup stops the agent and removes every container and sandbox it
// made, through the runtime, then the test's bridge.
func (n *node) cleanup() {
	n.stop()
	if n.t.Failed() {
		if b, err := os.ReadFile(n.logFile); err == nil {
			n.t.Logf("agent log:\n%s", b)
		}
	}
	ctx := context.Background()
	rt, err := n.runtime()
	if err != nil {
		n.t.Errorf("cleanup: %v", err)
		return
	}
	defer rt.Close()
	conts, _ := rt.ListContainers(ctx)
	for _, c := range conts {
		if err := rt.RemoveContainer(ctx, c.ID); err != nil {
			n.t.Errorf("cleanup %s: %v", c.ID, err)
		}
	}
	uids, _ := rt.ListSandboxes(ctx)
	for _, uid := range uids {
		if err := rt.RemoveSandbox(ctx, uid); err != nil {
			n.t.Errorf("cleanup sandbox %s: %v", uid, err)
		}
	}
	if c, err := client.New(n.ctd.Address); err == nil {
		nctx := namespaces.WithNamespace(ctx, n.namespace)
		imgs, _ := c.ImageService().List(nctx)
		for _, i := range imgs {
			_ = c.ImageService().Delete(nctx, i.Name)
		}
		_ = c.NamespaceService().Delete(nctx, n.namespace)
		c.Close()
	}
	_ = exec.Command("ip", "link", "del", n.bridge).Run()
}

// runtime opens the agent's runtime (same containerd namespace and
// directories) from the test, to inspect or clean up what the agent made.
func (n *node) runtime() (*runtime.Runtime, error) {
	return runtime.New(context.Background(), runtime.Config{
		Address: n.ctd.Address, Namespace: n.namespace, RootDir: n.root,
		PodLogDir: filepath.Join(n.dir, "pod-logs"), ContainerLogDir: filepath.Join(n.dir, "container-logs"),
		LogDriver: n.bin, HostIP: "127.0.0.1",
		CNI: runtime.CNIConfig{ConfDir: filepath.Join(n.dir, "cni"), CacheDir: filepath.Join(n.root, "cni", "cache")},
	})
}

// pods asks the running agent for its pods.
func (n *node) pods() ([]agent.PodStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return agent.FetchPods(ctx, n.addr)
}

// waitPods polls the agent until cond holds for its pods.
func (n *node) waitPods(timeout time.Duration, what string, cond func(map[string]agent.PodStatus) bool) map[string]agent.PodStatus {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]agent.PodStatus
	var lastErr error
	for time.Now().Before(deadline) {
		pods, err := n.pods()
		if err == nil {
			last = map[string]agent.PodStatus{}
			for _, p := range pods {
				last[p.DaemonSet] = p
			}
			if cond(last) {
				return last
			}
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	n.t.Fatalf("timed out after %v waiting for %s; pods: %+v (last error %v)", timeout, what, last, lastErr)
	return nil
}

func running(p agent.PodStatus, ok bool) bool {
	return ok && p.Phase == "Running" && p.Total > 0 && p.Ready == p.Total
}

// bothRunning holds when the pods of selectedDS and plainDS both run.
func bothRunning(p map[string]agent.PodStatus) bool {
	s, ok1 := p["selected"]
	q, ok2 := p["plain"]
	return running(s, ok1) && running(q, ok2)
}

// containers lists the containerd containers of the agent's namespace.
func (n *node) containers() []runtime.Container {
	n.t.Helper()
	rt, err := n.runtime()
	if err != nil {
		n.t.Fatal(err)
	}
	defer rt.Close()
	conts, err := rt.ListContainers(context.Background())
	if err != nil {
		n.t.Fatal(err)
	}
	return conts
}

// runningByPod returns the running containers keyed by pod name.
func (n *node) runningByPod() map[string]runtime.Container {
	out := map[string]runtime.Container{}
	for _, c := range n.containers() {
		if c.State == runtime.StateRunning {
			if prev, dup := out[c.PodName]; dup {
				n.t.Fatalf("pod %s runs twice: %s and %s", c.PodName, prev.ID, c.ID)
			}
			out[c.PodName] = c
		}
	}
	return out
}

const controlPlaneConfig = `registerWithTaints:
- key: node-role.kubernetes.io/control-plane
  effect: NoSchedule
`

// TestSeedExampleOnControlPlane runs the README's seed example, the
// fluentd-elasticsearch DaemonSet with its control-plane tolerations, from
// --pod-manifest-path on a node tainted as a control plane.
func TestSeedExampleOnControlPlane(t *testing.T) {
	n := newNode(t, controlPlaneConfig)
	seed, err := os.ReadFile("../../deploy/examples/fluentd-elasticsearch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n.manifest("fluentd.yaml", string(seed))
	n.start()
	pods := n.waitPods(90*time.Second, "fluentd-elasticsearch to run", func(p map[string]agent.PodStatus) bool {
		return running(p["fluentd-elasticsearch"], true)
	})
	p := pods["fluentd-elasticsearch"]
	if p.Namespace != "kube-system" || p.Name != "fluentd-elasticsearch-e2e-node" {
		t.Errorf("pod %s/%s", p.Namespace, p.Name)
	}
	if got := n.runningByPod(); got["fluentd-elasticsearch-e2e-node"].PID == 0 {
		t.Errorf("no running container for the pod in containerd: %+v", got)
	}
	// `daemonlet agent status` shows it.
	out, err := exec.Command(n.bin, "agent", "status", "--address", n.addr).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "fluentd-elasticsearch") || !strings.Contains(string(out), "Running") {
		t.Errorf("agent status: %v\n%s", err, out)
	}
}

const selectedDS = `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: selected, namespace: default}
spec:
  selector: {matchLabels: {app: selected}}
  template:
    metadata: {labels: {app: selected}}
    spec:
      nodeSelector: {disk: ssd}
      terminationGracePeriodSeconds: 5
      containers:
      - {name: main, image: registry.daemonlet.test/testimage:v1, args: [sleep]}
`

const plainDS = `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: plain, namespace: default}
spec:
  selector: {matchLabels: {app: plain}}
  template:
    metadata: {labels: {app: plain}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - {name: main, image: registry.daemonlet.test/testimage:v1, args: [sleep]}
`

// TestNodeLabelsAndTaintsAtRunTime changes the node through the config
// file and SIGHUP, as an operator would, and checks each DaemonSet
// controller outcome: a label removed stops a pod, a NoSchedule taint
// keeps a running pod, a NoExecute taint evicts it, and restoring the node
// starts both again.
func TestNodeLabelsAndTaintsAtRunTime(t *testing.T) {
	n := newNode(t, "nodeLabels: {disk: ssd}\n")
	n.manifest("selected.yaml", selectedDS)
	n.manifest("plain.yaml", plainDS)
	n.start()
	n.waitPods(90*time.Second, "both pods to run", bothRunning)
	before := n.runningByPod()

	n.writeConfig("nodeLabels: {disk: hdd}\n")
	n.signal(syscall.SIGHUP)
	n.waitPods(30*time.Second, "selected to stop", func(p map[string]agent.PodStatus) bool {
		_, ok := p["selected"]
		return !ok
	})

	n.writeConfig("nodeLabels: {disk: hdd}\nregisterWithTaints:\n- {key: dedicated, value: x, effect: NoSchedule}\n")
	n.signal(syscall.SIGHUP)
	// Give the agent a resync to act wrongly, then check that it did not.
	time.Sleep(2 * time.Second)
	after := n.runningByPod()
	if after["plain-e2e-node"].ID != before["plain-e2e-node"].ID || after["plain-e2e-node"].PID != before["plain-e2e-node"].PID {
		t.Errorf("a NoSchedule taint disturbed the running pod: before %+v after %+v", before["plain-e2e-node"], after["plain-e2e-node"])
	}
	if _, ok := after["selected-e2e-node"]; ok {
		t.Errorf("selected still runs on a node without its label")
	}

	n.writeConfig("nodeLabels: {disk: hdd}\nregisterWithTaints:\n- {key: evict, value: now, effect: NoExecute}\n")
	n.signal(syscall.SIGHUP)
	n.waitPods(30*time.Second, "plain to be evicted", func(p map[string]agent.PodStatus) bool {
		_, ok := p["plain"]
		return !ok
	})

	n.writeConfig("nodeLabels: {disk: ssd}\n")
	n.signal(syscall.SIGHUP)
	n.waitPods(60*time.Second, "both pods to run again", bothRunning)
}

// TestCrashLoopBackOff checks kubelet's restart back-off on a container
// that exits at once: the first restart is immediate, the next waits 10s.
func TestCrashLoopBackOff(t *testing.T) {
	n := newNode(t, "")
	n.manifest("crash.yaml", strings.ReplaceAll(strings.ReplaceAll(plainDS, "plain", "crash"), "args: [sleep]", "args: [exit, \"1\"]"))
	n.start()
	seen := map[int]time.Time{}
	var last agent.PodStatus
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) && len(seen) < 3 {
		pods, err := n.pods()
		if err == nil {
			for _, p := range pods {
				if p.DaemonSet == "crash" {
					last = p
					if _, ok := seen[p.Restarts]; !ok {
						seen[p.Restarts] = time.Now()
					}
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t1, ok1 := seen[1]
	t2, ok2 := seen[2]
	if !ok1 || !ok2 {
		t.Fatalf("restarts seen %v; last status %+v", seen, last)
	}
	// The second restart waits out the 10s back-off that the first exit
	// started; 0.5s allows for the polling interval and the exit itself.
	if gap := t2.Sub(t1); gap < 9500*time.Millisecond {
		t.Errorf("second restart %v after the first, want at least 10s of back-off", gap)
	}
	pods := n.waitPods(30*time.Second, "CrashLoopBackOff", func(p map[string]agent.PodStatus) bool {
		return p["crash"].Reason == "CrashLoopBackOff"
	})
	if msg := pods["crash"].Message; !strings.Contains(msg, "back-off") {
		t.Errorf("message %q, want kubelet's back-off message", msg)
	}
}

// TestKill9AdoptsRunningContainers kills the agent with SIGKILL and starts
// it again: the same containers keep running with the same PIDs, none is
// started twice and nothing new is left behind.
func TestKill9AdoptsRunningContainers(t *testing.T) {
	n := newNode(t, "nodeLabels: {disk: ssd}\n")
	n.manifest("selected.yaml", selectedDS)
	n.manifest("plain.yaml", plainDS)
	n.start()
	n.waitPods(90*time.Second, "both pods to run", bothRunning)
	before := n.runningByPod()
	sandboxesBefore := listDir(t, filepath.Join(n.root, "pods"))
	for round := 0; round < 3; round++ {
		n.kill9()
		n.start()
		n.waitPods(60*time.Second, "both pods after restart", bothRunning)
		// A resync period for any wrong restart to show.
		time.Sleep(2 * time.Second)
		after := n.runningByPod()
		for pod, c := range before {
			if after[pod].ID != c.ID || after[pod].PID != c.PID {
				t.Errorf("round %d: pod %s was %s pid %d, now %s pid %d", round, pod, c.ID, c.PID, after[pod].ID, after[pod].PID)
			}
		}
		if len(after) != len(before) {
			t.Errorf("round %d: %d running containers, want %d", round, len(after), len(before))
		}
		if all := n.containers(); len(all) != len(before) {
			t.Errorf("round %d: %d containers in containerd, want %d", round, len(all), len(before))
		}
		if got := listDir(t, filepath.Join(n.root, "pods")); strings.Join(got, ",") != strings.Join(sandboxesBefore, ",") {
			t.Errorf("round %d: sandboxes %v, want %v", round, got, sandboxesBefore)
		}
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestRebootWithoutSource simulates a reboot with the manifest server gone:
// containerd loses its state and its containers, the pod namespaces are
// unmounted, and the agent, started with no reachable source, brings the
// pods back from its bbolt state.
// reboot simulates a reboot of the node under a stopped agent: containerd's
// state is wiped, the agent's mounts are gone, and so are the NAT rules of
// the pod podUID; nothing may run afterwards.
func (n *node) reboot(podUID string) {
	n.t.Helper()
	if err := n.ctd.Reboot(); err != nil {
		n.t.Fatal(err)
	}
	if err := ctdtest.UnmountUnder(n.root); err != nil {
		n.t.Fatal(err)
	}
	forgetNAT(n.t, podUID)
	if got := n.runningByPod(); len(got) != 0 {
		n.t.Fatalf("containers still run after the reboot: %+v", got)
	}
}

func TestRebootWithoutSource(t *testing.T) {
	srv := newManifestServer(t, plainDS)
	n := newNode(t, "", "--manifest-url", srv.URL(), "--http-check-frequency", "1s")
	n.start()
	n.waitPods(90*time.Second, "the pod from the URL to run", func(p map[string]agent.PodStatus) bool {
		return running(p["plain"], true)
	})
	before := n.runningByPod()["plain-e2e-node"]

	n.kill9()
	srv.Close()
	n.reboot(before.PodUID)

	n.start()
	n.waitPods(90*time.Second, "the pod to come back from bbolt", func(p map[string]agent.PodStatus) bool {
		return running(p["plain"], true)
	})
	after := n.runningByPod()["plain-e2e-node"]
	if after.PID == 0 || after.PID == before.PID {
		t.Errorf("pod after reboot: %+v (before %+v)", after, before)
	}
}

// manifestServer serves one manifest over HTTP on 127.0.0.1, as
// --manifest-url reads it.
type manifestServer struct {
	srv *httptest.Server
}

func newManifestServer(t *testing.T, body string) *manifestServer {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return &manifestServer{srv: s}
}

func (m *manifestServer) URL() string { return m.srv.URL + "/manifests.yaml" }

// Close stops the server: the source becomes unreachable.
func (m *manifestServer) Close() { m.srv.Close() }

// forgetNAT drops the NAT rules and chains the CNI plugins made for a pod,
// as a reboot empties the kernel's tables; without it the simulated
// reboot would leave rules that no real reboot leaves. `iptables -S`
// prints rules shell-quoted, so bash re-reads them as arguments.
func forgetNAT(t *testing.T, podUID string) {
	t.Helper()
	out, err := exec.Command("iptables", "-w", "-t", "nat", "-S").Output()
	if err != nil {
		t.Fatalf("iptables -S: %v", err)
	}
	chains := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, podUID) {
			continue
		}
		f := strings.Fields(line)
		if len(f) > 1 && f[0] == "-A" && strings.HasPrefix(f[1], "CNI-") {
			chains[f[1]] = true
			continue
		}
		if strings.HasPrefix(line, "-A POSTROUTING ") {
			if out, err := exec.Command("bash", "-c", "iptables -w -t nat -D "+line[len("-A "):]).CombinedOutput(); err != nil {
				t.Fatalf("delete %q: %v %s", line, err, out)
			}
		}
	}
	for c := range chains {
		for _, op := range []string{"-F", "-X"} {
			if out, err := exec.Command("iptables", "-w", "-t", "nat", op, c).CombinedOutput(); err != nil {
				t.Fatalf("iptables %s %s: %v %s", op, c, err, out)
			}
		}
	}
}
