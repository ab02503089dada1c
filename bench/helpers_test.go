package bench_test

// Helpers of the node figures (pod start, agent footprint, recovery): the
// real `daemonlet agent` process on the test binary's private containerd,
// with the project's test image imported from --images-dir as an
// air-gapped node does, and containerd's own /tasks/start events as the
// clock of "the task runs".

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	ctdclient "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/typeurl/v2"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/internal/ctdtest"
	"github.com/daemonlet/daemonlet/internal/fleetsim"
	"github.com/daemonlet/daemonlet/internal/testimage"
	"github.com/daemonlet/daemonlet/runtime"
)

// TestMain stops the private containerd the node figures started (if any)
// and removes the agent binary they built.
func TestMain(m *testing.M) {
	code := ctdtest.Main(m)
	if nodeBuild.dir != "" {
		_ = os.RemoveAll(nodeBuild.dir)
	}
	os.Exit(code)
}

// nodeBuild is the daemonlet binary and the images folder of the node
// figures, made once per test binary.
var nodeBuild struct {
	once      sync.Once
	dir       string
	bin       string
	imagesDir string
	err       error
}

// nodeBinary builds daemonlet and writes the test image tar into the
// folder the agents import images from.
func nodeBinary(t testing.TB) (bin, imagesDir string) {
	t.Helper()
	nodeBuild.once.Do(func() {
		nodeBuild.dir, nodeBuild.err = os.MkdirTemp("", "daemonlet-bench-bin-")
		if nodeBuild.err != nil {
			return
		}
		nodeBuild.bin = filepath.Join(nodeBuild.dir, "daemonlet")
		nodeBuild.imagesDir = filepath.Join(nodeBuild.dir, "images")
		if out, err := exec.Command("go", "build", "-o", nodeBuild.bin, "github.com/daemonlet/daemonlet/cmd/daemonlet").CombinedOutput(); err != nil {
			nodeBuild.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		nodeBuild.err = testimage.Build(context.Background(), nodeImageTar(), testimage.Ref)
	})
	if nodeBuild.err != nil {
		t.Fatal(nodeBuild.err)
	}
	return nodeBuild.bin, nodeBuild.imagesDir
}

// nodeImageTar is the test image's tar in the images folder.
func nodeImageTar() string { return filepath.Join(nodeBuild.imagesDir, "testimage.tar") }

// nodeToken is a short random suffix for names that must not collide with
// another test's (containerd namespaces, bridges).
func nodeToken(t testing.TB) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// nodeFreeAddr is a free 127.0.0.1 port, as host:port.
func nodeFreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// nodeAgent is one `daemonlet agent` process with its own directories,
// containerd namespace and CNI bridge network.
type nodeAgent struct {
	t         testing.TB
	ctd       *ctdtest.Containerd
	bin       string
	imagesDir string
	name      string // the node name
	dir       string
	root      string
	manifests string
	namespace string
	bridge    string
	addr      string // /healthz, /pods and /sources
	extraArgs []string
	logFile   string

	cmd     *exec.Cmd
	exited  chan struct{}
	started time.Time // when the process was started
}

// newNodeAgent prepares (does not start) an agent named node on the
// shared private containerd, with extraArgs after the common flags. Its
// pods get their network from the CNI bridge plugin on a bridge and a
// range of their own, without masquerading or port mappings, so that no
// iptables rule is made. Cleanup stops it and removes all it made.
func newNodeAgent(t testing.TB, node string, extraArgs ...string) *nodeAgent {
	t.Helper()
	ctd := ctdtest.Require(t)
	bin, imagesDir := nodeBinary(t)
	tok := nodeToken(t)
	dir := t.TempDir()
	a := &nodeAgent{
		t: t, ctd: ctd, bin: bin, imagesDir: imagesDir, name: node, dir: dir,
		root:      filepath.Join(dir, "root"),
		manifests: filepath.Join(dir, "manifests"),
		namespace: "dlbench-" + tok,
		bridge:    "dlbench" + tok,
		addr:      nodeFreeAddr(t),
		extraArgs: extraArgs,
		logFile:   filepath.Join(dir, "agent.log"),
	}
	for _, d := range []string{a.manifests, filepath.Join(dir, "cni")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conflist := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench","plugins":[
 {"type":"bridge","bridge":%q,"isGateway":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.236.%d.0/24"}]],"dataDir":%q}}]}`,
		a.bridge, int(tok[0])%200+20, filepath.Join(dir, "ipam"))
	if err := os.WriteFile(filepath.Join(dir, "cni", "10-bench.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.cleanup)
	return a
}

// start runs the agent process.
func (a *nodeAgent) start() {
	a.t.Helper()
	host, port, _ := net.SplitHostPort(a.addr)
	args := append([]string{"agent",
		"--hostname-override", a.name,
		"--root-dir", a.root,
		"--container-runtime-endpoint", "unix://" + a.ctd.Address,
		"--containerd-namespace", a.namespace,
		"--pod-manifest-path", a.manifests,
		"--images-dir", a.imagesDir,
		"--pod-logs-dir", filepath.Join(a.dir, "pod-logs"),
		"--container-logs-dir", filepath.Join(a.dir, "container-logs"),
		"--cni-conf-dir", filepath.Join(a.dir, "cni"),
		"--node-ip", "127.0.0.1",
		"--healthz-bind-address", host,
		"--healthz-port", port,
		"--metrics-bind-address", nodeFreeAddr(a.t),
	}, a.extraArgs...)
	log, err := os.OpenFile(a.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		a.t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(a.bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	a.started = time.Now()
	if err := cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.cmd, a.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(a.exited)
}

// pid is the agent process's id.
func (a *nodeAgent) pid() int { return a.cmd.Process.Pid }

// kill9 kills the agent process (by its pid) with SIGKILL and waits until
// it is gone.
func (a *nodeAgent) kill9() {
	a.t.Helper()
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		a.t.Fatalf("SIGKILL: %v", err)
	}
	<-a.exited
	a.cmd = nil
}

// stop ends the agent with SIGTERM, which leaves its pods running.
func (a *nodeAgent) stop() {
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.exited
	}
	a.cmd = nil
}

// cleanup stops the agent, removes every container and sandbox it made
// through the runtime (which undoes the CNI setup), its images and
// containerd namespace, and the bridge.
func (a *nodeAgent) cleanup() {
	a.stop()
	if a.t.Failed() {
		if b, err := os.ReadFile(a.logFile); err == nil {
			a.t.Logf("agent %s log:\n%s", a.name, b)
		}
	}
	ctx := context.Background()
	rt, err := a.runtime()
	if err != nil {
		a.t.Errorf("cleanup: %v", err)
		return
	}
	conts, _ := rt.ListContainers(ctx)
	for _, c := range conts {
		if err := rt.RemoveContainer(ctx, c.ID); err != nil {
			a.t.Errorf("cleanup %s: %v", c.ID, err)
		}
	}
	uids, _ := rt.ListSandboxes(ctx)
	for _, uid := range uids {
		if err := rt.RemoveSandbox(ctx, uid); err != nil {
			a.t.Errorf("cleanup sandbox %s: %v", uid, err)
		}
	}
	rt.Close()
	if c, err := a.ctd.Client(); err == nil {
		nctx := namespaces.WithNamespace(ctx, a.namespace)
		imgs, _ := c.ImageService().List(nctx)
		for _, i := range imgs {
			_ = c.ImageService().Delete(nctx, i.Name)
		}
		_ = c.NamespaceService().Delete(nctx, a.namespace)
		c.Close()
	}
	// The bridge exists once a pod was networked.
	_ = exec.Command("ip", "link", "del", a.bridge).Run()
}

// runtime opens the agent's runtime (same containerd namespace and
// directories) from the test.
func (a *nodeAgent) runtime() (*runtime.Runtime, error) {
	return runtime.New(context.Background(), runtime.Config{
		Address: a.ctd.Address, Namespace: a.namespace, RootDir: a.root,
		PodLogDir: filepath.Join(a.dir, "pod-logs"), ContainerLogDir: filepath.Join(a.dir, "container-logs"),
		LogDriver: a.bin, HostIP: "127.0.0.1", Logger: slog.New(slog.DiscardHandler),
		CNI: runtime.CNIConfig{ConfDir: filepath.Join(a.dir, "cni"), CacheDir: filepath.Join(a.root, "cni", "cache")},
	})
}

// pods asks the agent's /pods endpoint.
func (a *nodeAgent) pods() ([]agent.PodStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return agent.FetchPods(ctx, a.addr)
}

// waitPods polls /pods every period until cond holds, and returns when
// it did; the test fails after timeout.
func (a *nodeAgent) waitPods(timeout, period time.Duration, what string, cond func([]agent.PodStatus) bool) time.Time {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	var last []agent.PodStatus
	var lastErr error
	for {
		pods, err := a.pods()
		if err == nil && cond(pods) {
			return time.Now()
		}
		if err == nil {
			last = pods
		}
		lastErr = err
		if time.Now().After(deadline) {
			a.t.Fatalf("timed out after %v waiting for %s; pods: %+v (last error %v)", timeout, what, last, lastErr)
		}
		time.Sleep(period)
	}
}

// nodePodRunning tells whether the agent reports p running with every
// container ready.
func nodePodRunning(p agent.PodStatus) bool {
	return p.Phase == "Running" && p.Total > 0 && p.Ready == p.Total
}

// nodeAllRunning is a waitPods condition: exactly n pods, all running.
func nodeAllRunning(n int) func([]agent.PodStatus) bool {
	return func(pods []agent.PodStatus) bool {
		if len(pods) != n {
			return false
		}
		for _, p := range pods {
			if !nodePodRunning(p) {
				return false
			}
		}
		return true
	}
}

// writeManifest puts content into the manifest folder under name as a
// rename of a hidden file (which the file source skips), so that the
// agent reads it whole.
func (a *nodeAgent) writeManifest(name string, content []byte) {
	a.t.Helper()
	tmp := filepath.Join(a.manifests, "."+name+".tmp")
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		a.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(a.manifests, name)); err != nil {
		a.t.Fatal(err)
	}
}

// removeManifest removes a file of the manifest folder.
func (a *nodeAgent) removeManifest(name string) {
	a.t.Helper()
	if err := os.Remove(filepath.Join(a.manifests, name)); err != nil {
		a.t.Fatal(err)
	}
}

// taskPIDs maps the agent's containers whose task runs to the task's pid.
func (a *nodeAgent) taskPIDs() map[string]uint32 {
	a.t.Helper()
	c, err := a.ctd.Client()
	if err != nil {
		a.t.Fatal(err)
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), a.namespace)
	conts, err := c.Containers(ctx)
	if err != nil {
		a.t.Fatal(err)
	}
	out := map[string]uint32{}
	for _, ct := range conts {
		task, err := ct.Task(ctx, nil)
		if err != nil {
			continue // no task: not running
		}
		st, err := task.Status(ctx)
		if err != nil || st.Status != ctdclient.Running {
			continue
		}
		out[ct.ID()] = task.Pid()
	}
	return out
}

// nodeDaemonSet is a DaemonSet of one container of the test image running
// its default command (sleep), which ends at once on SIGTERM.
func nodeDaemonSet(name string) *appsv1.DaemonSet {
	ds := fleetsim.NewDaemonSet("default", name, testimage.Ref)
	grace := int64(2)
	ds.Spec.Template.Spec.TerminationGracePeriodSeconds = &grace
	return ds
}

// nodeDaemonSetYAML is nodeDaemonSet as a manifest file.
func nodeDaemonSetYAML(t testing.TB, name string) []byte {
	t.Helper()
	b, err := yaml.Marshal(nodeDaemonSet(name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nodeTaskStart is one /tasks/start event of containerd.
type nodeTaskStart struct {
	namespace, container string
	at                   time.Time // containerd's timestamp of the event
}

// nodeTaskStarts subscribes to containerd's /tasks/start events until the
// test ends; the subscription is open when it returns.
func nodeTaskStarts(t testing.TB, ctd *ctdtest.Containerd) <-chan nodeTaskStart {
	t.Helper()
	c, err := ctd.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	envs, errs := c.EventService().Subscribe(ctx, `topic=="/tasks/start"`)
	out := make(chan nodeTaskStart, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case env := <-envs:
				ev, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					t.Errorf("decode event %s: %v", env.Topic, err)
					continue
				}
				if s, ok := ev.(*apievents.TaskStart); ok {
					select {
					case out <- nodeTaskStart{namespace: env.Namespace, container: s.ContainerID, at: env.Timestamp}:
					case <-ctx.Done():
						return
					}
				}
			case err := <-errs:
				if ctx.Err() == nil {
					t.Errorf("containerd events: %v", err)
				}
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		c.Close()
	})
	// Subscribe's stream opens asynchronously; a round trip on the same
	// connection after it makes an event lost at the very start unlikely,
	// and the first measured start is preceded by a warm-up anyway.
	if _, err := c.Version(ctx); err != nil {
		t.Fatal(err)
	}
	return out
}

// nodeWaitTaskStart returns the time of the first start event, in namespace,
// of a container that match accepts; it fails the test after timeout.
func nodeWaitTaskStart(t testing.TB, starts <-chan nodeTaskStart, namespace string, match func(id string) bool, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case s := <-starts:
			if s.namespace == namespace && match(s.container) {
				return s.at
			}
		case <-deadline:
			t.Fatalf("no task start in namespace %s within %v", namespace, timeout)
		}
	}
}

// isPodContainer is a nodeWaitTaskStart match: the agent's container of pod.
func (a *nodeAgent) isPodContainer(pod string) func(id string) bool {
	return func(id string) bool {
		c, err := a.ctd.Client()
		if err != nil {
			return false
		}
		defer c.Close()
		ctx := namespaces.WithNamespace(context.Background(), a.namespace)
		ct, err := c.LoadContainer(ctx, id)
		if err != nil {
			return false
		}
		labels, err := ct.Labels(ctx)
		return err == nil && labels[runtime.LabelPodName] == pod
	}
}
