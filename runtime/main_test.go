package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/daemonlet/daemonlet/internal/ctdtest"
	"github.com/daemonlet/daemonlet/internal/testimage"
	corev1 "k8s.io/api/core/v1"
)

// TestMain doubles as the log driver: containerd's shim runs this test
// binary as `<binary> log-driver <file>`, exactly as it runs
// `daemonlet log-driver <file>` in production.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == logDriverArg {
		if err := RunLogDriver(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := ctdtest.Main(m)
	if imageTar != "" {
		os.RemoveAll(filepath.Dir(imageTar))
	}
	os.Exit(code)
}

// testImageRef is the project's test image, imported into every test
// namespace.
const testImageRef = "registry.daemonlet.test/testimage:v1"

var (
	imageOnce sync.Once
	imageTar  string
	imageErr  error
)

// testImage builds the test image tar once per test binary.
func testImage(t *testing.T) string {
	t.Helper()
	imageOnce.Do(func() {
		dir, err := os.MkdirTemp("", "daemonlet-testimage-")
		if err != nil {
			imageErr = err
			return
		}
		imageTar = filepath.Join(dir, "testimage.tar")
		imageErr = testimage.Build(context.Background(), imageTar, testImageRef)
	})
	if imageErr != nil {
		t.Fatalf("build test image: %v", imageErr)
	}
	return imageTar
}

// testEnv is one runtime on the private containerd, in a namespace, state
// directories and CNI network of its own.
type testEnv struct {
	rt      *Runtime
	cfg     Config
	ctd     *ctdtest.Containerd
	raw     *client.Client
	podCIDR string
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	ctd := ctdtest.Require(t)
	tar := testImage(t)
	tok := randomToken(3)
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	third := int(tok[0])%200 + 20
	cfg := Config{
		Address:         ctd.Address,
		Namespace:       "dltest-" + tok,
		RootDir:         filepath.Join(dir, "root"),
		PodLogDir:       filepath.Join(dir, "pods-log"),
		ContainerLogDir: filepath.Join(dir, "containers-log"),
		LogDriver:       self,
		HostIP:          "127.0.0.1",
		CNI: CNIConfig{
			ConfDir:    filepath.Join(dir, "cni-conf"),
			CacheDir:   filepath.Join(dir, "cni-cache"),
			PodCIDR:    fmt.Sprintf("10.233.%d.0/24", third),
			BridgeName: "dlrt" + tok,
		},
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	ctx := context.Background()
	rt, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := client.New(ctd.Address, client.WithDefaultNamespace(cfg.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{rt: rt, cfg: cfg, ctd: ctd, raw: raw, podCIDR: cfg.CNI.PodCIDR}
	t.Cleanup(func() {
		env.removeEverything(t)
		raw.Close()
		rt.Close()
		deleteLink(cfg.CNI.BridgeName)
	})
	if _, err := rt.ImportImage(ctx, tar); err != nil {
		t.Fatal(err)
	}
	return env
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// removeEverything removes what a test left in its namespace, so that a
// failing test does not leak into the next.
func (e *testEnv) removeEverything(t *testing.T) {
	ctx := context.Background()
	conts, err := e.rt.ListContainers(ctx)
	if err != nil {
		t.Errorf("cleanup: %v", err)
	}
	for _, c := range conts {
		if err := e.rt.RemoveContainer(ctx, c.ID); err != nil {
			t.Errorf("cleanup %s: %v", c.ID, err)
		}
	}
	uids, _ := e.rt.ListSandboxes(ctx)
	for _, uid := range uids {
		if err := e.rt.RemoveSandbox(ctx, uid); err != nil {
			t.Errorf("cleanup sandbox %s: %v", uid, err)
		}
	}
	nctx := namespaces.WithNamespace(ctx, e.cfg.Namespace)
	imgs, _ := e.raw.ImageService().List(nctx)
	for _, i := range imgs {
		_ = e.raw.ImageService().Delete(nctx, i.Name)
	}
	_ = e.raw.NamespaceService().Delete(nctx, e.cfg.Namespace)
}

// newPod makes a pod of one container of the test image running args.
func newPod(name string, args ...string) *Pod {
	grace := int64(30)
	return &Pod{
		UID:       "uid-" + name + "-" + randomToken(4),
		Name:      name,
		Namespace: "default",
		NodeName:  "node-1",
		Revision:  "rev1",
		Labels:    map[string]string{"app": name},
		Spec: &corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyAlways,
			DNSPolicy:                     corev1.DNSClusterFirst,
			TerminationGracePeriodSeconds: &grace,
			ServiceAccountName:            "default",
			Containers: []corev1.Container{{
				Name:            "main",
				Image:           testImageRef,
				Args:            args,
				ImagePullPolicy: corev1.PullNever,
			}},
		},
	}
}

// run creates the pod's sandbox and starts its first container.
func (e *testEnv) run(t *testing.T, pod *Pod) (*Sandbox, string) {
	t.Helper()
	ctx := context.Background()
	sb, err := e.rt.RunSandbox(ctx, pod)
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	id, err := e.rt.CreateContainer(ctx, pod, sb, &pod.Spec.Containers[0], 0, false)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := e.rt.StartContainer(ctx, id); err != nil {
		t.Fatalf("start: %v", err)
	}
	return sb, id
}

// remove stops and removes the pod's container id, then its sandbox, as
// the agent does when a pod goes.
func (e *testEnv) remove(t *testing.T, pod *Pod, id string) {
	t.Helper()
	ctx := context.Background()
	if err := e.rt.StopContainer(ctx, id, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.RemoveSandbox(ctx, pod.UID); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitExited waits for the container to exit and returns its status.
func (e *testEnv) waitExited(t *testing.T, id string, timeout time.Duration) Container {
	t.Helper()
	var st Container
	waitFor(t, timeout, "container "+id+" to exit", func() (bool, error) {
		var err error
		st, err = e.rt.ContainerStatus(context.Background(), id)
		return err == nil && st.State == StateExited, err
	})
	return st
}

// readLog waits until the container's log holds want and returns it.
func (e *testEnv) readLog(t *testing.T, pod *Pod, container string, attempt int, want string) string {
	t.Helper()
	path := filepath.Join(e.rt.PodLogDir(pod), container, fmt.Sprintf("%d.log", attempt))
	var text string
	waitFor(t, 20*time.Second, fmt.Sprintf("%q in %s", want, path), func() (bool, error) {
		b, err := os.ReadFile(path)
		text = string(b)
		return strings.Contains(text, want), err
	})
	return text
}
