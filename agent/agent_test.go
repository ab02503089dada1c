package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/runtime"
	"github.com/daemonlet/daemonlet/runtime/runtimetest"
	"github.com/daemonlet/daemonlet/store"
)

var _ Runtime = (*runtimetest.Fake)(nil)

var _ Store = (*store.DB)(nil)

const testNode = "node1"

// harness runs an agent on a fake runtime, a real bbolt store in a temp
// dir and a fake clock.
type harness struct {
	t       *testing.T
	clock   *testingclock.FakeClock
	rt      *runtimetest.Fake
	db      *store.DB
	dbPath  string
	node    *corev1.Node
	a       *Agent
	updates chan SourceUpdate
	cancel  context.CancelFunc
	done    chan error
}

func newHarness(t *testing.T, node *corev1.Node) *harness {
	t.Helper()
	clk := testingclock.NewFakeClock(time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, clock: clk, rt: runtimetest.New(clk), db: db, dbPath: path, node: node}
	t.Cleanup(func() { h.db.Close() })
	if node == nil {
		h.node = api.NewNode(testNode, nil, nil)
	}
	return h
}

// reopenStore closes the store and opens it again, as an agent restart
// does; the agent must be stopped.
func (h *harness) reopenStore() {
	h.t.Helper()
	if err := h.db.Close(); err != nil {
		h.t.Fatal(err)
	}
	db, err := store.Open(h.dbPath, store.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	h.db = db
}

// start runs a fresh agent on the harness's runtime and store.
func (h *harness) start(sources ...string) {
	h.t.Helper()
	a, err := New(Config{
		NodeName: testNode, Node: h.node, Runtime: h.rt, Store: h.db, Clock: h.clock,
		Logger:     slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		SyncPeriod: time.Hour, // tests drive resyncs themselves
	})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.a, h.cancel, h.done, h.updates = a, cancel, make(chan error, 1), make(chan SourceUpdate)
	go func() { h.done <- a.Run(ctx, h.updates, sources) }()
	h.t.Cleanup(h.stop)
}

// stop shuts the agent down, as a systemd restart would.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("agent did not stop")
	}
}

func (h *harness) send(source string, sets ...*appsv1.DaemonSet) {
	h.t.Helper()
	select {
	case h.updates <- SourceUpdate{Source: source, DaemonSets: sets}:
	case <-time.After(10 * time.Second):
		h.t.Fatal("agent does not take updates")
	}
}

func (h *harness) sendErr(source string, err error) {
	h.t.Helper()
	select {
	case h.updates <- SourceUpdate{Source: source, Err: err}:
	case <-time.After(10 * time.Second):
		h.t.Fatal("agent does not take updates")
	}
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// pod waits until the named pod satisfies cond and returns its status.
func (h *harness) pod(name, what string, cond func(PodStatus) bool) PodStatus {
	h.t.Helper()
	var found PodStatus
	waitFor(h.t, name+" "+what, func() bool {
		for _, p := range h.a.Pods() {
			if p.Name == name && cond(p) {
				found = p
				return true
			}
		}
		return false
	})
	return found
}

func (h *harness) noPod(name string) {
	h.t.Helper()
	waitFor(h.t, name+" gone", func() bool {
		for _, p := range h.a.Pods() {
			if p.Name == name {
				return false
			}
		}
		return true
	})
}

// containers returns the runtime's containers of a pod name.
func (h *harness) containers(podName string) []runtime.Container {
	all, _ := h.rt.ListContainers(context.Background())
	var out []runtime.Container
	for _, c := range all {
		if c.PodName == podName {
			out = append(out, c)
		}
	}
	return out
}

// running waits for the given attempt of a container to run.
func (h *harness) running(podName, container string, attempt int) runtime.Container {
	h.t.Helper()
	var found runtime.Container
	waitFor(h.t, fmt.Sprintf("%s/%s#%d running", podName, container, attempt), func() bool {
		for _, c := range h.containers(podName) {
			if c.Name == container && c.Attempt == attempt && c.State == runtime.StateRunning {
				found = c
				return true
			}
		}
		return false
	})
	return found
}

func isRunning(p PodStatus) bool { return p.State == "Running" && p.Phase == corev1.PodRunning }

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func daemonSet(name string, containers ...corev1.Container) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{RestartPolicy: corev1.RestartPolicyAlways, Containers: containers},
			},
		},
	}
}

func ctr(name, image string) corev1.Container {
	return corev1.Container{Name: name, Image: image, ImagePullPolicy: corev1.PullIfNotPresent}
}

func TestPodRunsWithIdentityAndLabels(t *testing.T) {
	h := newHarness(t, nil)
	h.start("file")
	h.send("file", daemonSet("agent", ctr("app", "img")))
	p := h.pod("agent-node1", "running", isRunning)
	if p.Ready != 1 || p.Total != 1 || p.DaemonSet != "agent" || p.Source != "file" || p.Revision == "" {
		t.Fatalf("status %+v", p)
	}
	c := h.running("agent-node1", "app", 0)
	if c.PodUID != podUID("default", "agent", testNode, p.Revision) || c.Revision != p.Revision {
		t.Fatalf("container %+v of pod %+v", c, p)
	}
	rec, err := h.db.GetPod(c.PodUID)
	if err != nil || rec.Owner != "default/agent" || rec.Revision != p.Revision || rec.CreatedAt.IsZero() {
		t.Fatalf("pod record %+v, %v", rec, err)
	}
	stored, _, err := h.db.ListDesired()
	if err != nil || len(stored) != 1 || stored[0].Key != "default/agent" || stored[0].Revision != p.Revision {
		t.Fatalf("desired state in the store: %+v, %v", stored, err)
	}
	if err := h.a.Healthy(); err != nil {
		t.Fatalf("Healthy: %v", err)
	}
}

func TestCrashLoopBackOffOnTheClock(t *testing.T) {
	h := newHarness(t, nil)
	h.start("file")
	h.send("file", daemonSet("crash", ctr("app", "img")))
	prev := h.running("crash-node1", "app", 0)
	s := time.Second
	delays := []time.Duration{0, 10 * s, 20 * s, 40 * s, 80 * s, 160 * s, 300 * s, 300 * s}
	for i, d := range delays {
		h.clock.Step(s) // the container runs for a second
		if err := h.rt.Exit(prev.ID, 1); err != nil {
			t.Fatal(err)
		}
		finished := h.clock.Now()
		if d > 0 {
			p := h.pod("crash-node1", "in CrashLoopBackOff", func(p PodStatus) bool {
				return p.Reason == "CrashLoopBackOff" && p.Restarts == i
			})
			want := fmt.Sprintf("back-off %s restarting failed container=app pod=default/crash-node1", d)
			if p.Message != want || p.State != "BackOff" || p.Phase != corev1.PodRunning {
				t.Fatalf("restart %d: status %+v, want message %q", i+1, p, want)
			}
			h.clock.Step(d)
		}
		next := h.running("crash-node1", "app", i+1)
		if got := next.StartedAt.Sub(finished); got != d {
			t.Fatalf("restart %d came %v after the exit, want %v", i+1, got, d)
		}
		prev = next
	}
	rec, err := h.db.GetPod(prev.PodUID)
	if err != nil || rec.Containers["app"].RestartCount != len(delays) || rec.Containers["app"].BackOff != 300*s {
		t.Fatalf("record %+v, %v", rec, err)
	}

	// Ten minutes of running resets the back-off: immediate restart, then 10s.
	h.clock.Step(11 * time.Minute)
	if err := h.rt.Exit(prev.ID, 1); err != nil {
		t.Fatal(err)
	}
	finished := h.clock.Now()
	next := h.running("crash-node1", "app", len(delays)+1)
	if !next.StartedAt.Equal(finished) {
		t.Fatalf("after a long run the restart waited %v", next.StartedAt.Sub(finished))
	}
	h.clock.Step(s)
	if err := h.rt.Exit(next.ID, 1); err != nil {
		t.Fatal(err)
	}
	p := h.pod("crash-node1", "back in CrashLoopBackOff", func(p PodStatus) bool { return p.Reason == "CrashLoopBackOff" })
	if !strings.HasPrefix(p.Message, "back-off 10s ") {
		t.Fatalf("after the reset: %q", p.Message)
	}
	// Only the newest exited attempt is kept.
	if n := len(h.containers("crash-node1")); n > 2 {
		t.Fatalf("%d containers kept", n)
	}
}

func TestImagePullBackOff(t *testing.T) {
	h := newHarness(t, nil)
	h.rt.FailPull("bad", errdefs.ErrUnavailable)
	h.start("file")
	h.send("file", daemonSet("pull", ctr("app", "bad")))
	t0 := h.clock.Now()
	p := h.pod("pull-node1", "ErrImagePull", func(p PodStatus) bool { return p.Reason == "ErrImagePull" })
	if p.State != "BackOff" || p.Phase != corev1.PodPending {
		t.Fatalf("status %+v", p)
	}
	h.a.resync()
	h.pod("pull-node1", "ImagePullBackOff", func(p PodStatus) bool {
		return p.Reason == "ImagePullBackOff" && p.Message == `Back-off pulling image "bad"`
	})
	s := time.Second
	for i, at := range []time.Duration{10 * s, 30 * s, 70 * s} {
		h.clock.SetTime(t0.Add(at - s))
		h.clock.SetTime(t0.Add(at))
		waitFor(t, fmt.Sprintf("pull %d", i+2), func() bool { return len(h.rt.Pulls("bad")) == i+2 })
		h.pod("pull-node1", "ErrImagePull again", func(p PodStatus) bool { return p.Reason == "ErrImagePull" })
	}
	var got []time.Duration
	for _, pt := range h.rt.Pulls("bad") {
		got = append(got, pt.Sub(t0))
	}
	if want := []time.Duration{0, 10 * s, 30 * s, 70 * s}; !slices.Equal(got, want) {
		t.Fatalf("pulls at %v, want %v", got, want)
	}
	h.rt.FailPull("bad", nil)
	h.clock.Step(80 * s)
	h.pod("pull-node1", "running once the registry works", isRunning)
}

func TestInitContainersRunInOrderBeforeApps(t *testing.T) {
	h := newHarness(t, nil)
	h.start("file")
	ds := daemonSet("init", ctr("app", "img"))
	ds.Spec.Template.Spec.InitContainers = []corev1.Container{ctr("first", "img"), ctr("second", "img")}
	h.send("file", ds)
	first := h.running("init-node1", "first", 0)
	p := h.pod("init-node1", "initialising", func(p PodStatus) bool { return p.State == "Starting" })
	if p.Phase != corev1.PodPending {
		t.Fatalf("phase %s while initialising", p.Phase)
	}
	if err := h.rt.Exit(first.ID, 0); err != nil {
		t.Fatal(err)
	}
	second := h.running("init-node1", "second", 0)
	if err := h.rt.Exit(second.ID, 1); err != nil {
		t.Fatal(err)
	}
	second = h.running("init-node1", "second", 1) // first restart is immediate
	if err := h.rt.Exit(second.ID, 0); err != nil {
		t.Fatal(err)
	}
	h.pod("init-node1", "running", isRunning)
	var got []string
	for _, e := range h.rt.Events() {
		if strings.HasPrefix(e, "create") || strings.HasPrefix(e, "start") {
			got = append(got, e)
		}
	}
	want := []string{"create first#0", "start first#0", "create second#0", "start second#0",
		"create second#1", "start second#1", "create app#0", "start app#0"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

func TestRevisionChangeReplacesThePod(t *testing.T) {
	h := newHarness(t, nil)
	h.start("file")
	h.send("file", daemonSet("rev", ctr("app", "v1")))
	old := h.pod("rev-node1", "running v1", isRunning)
	oldC := h.running("rev-node1", "app", 0)
	grace := int64(1)
	ds := daemonSet("rev", ctr("app", "v2"))
	ds.Spec.Template.Spec.TerminationGracePeriodSeconds = &grace
	h.send("file", ds)
	p := h.pod("rev-node1", "running v2", func(p PodStatus) bool { return isRunning(p) && p.Revision != old.Revision })
	if p.UID == old.UID || p.Restarts != 0 {
		t.Fatalf("new pod %+v, old %+v", p, old)
	}
	if pods := h.a.Pods(); len(pods) != 1 {
		t.Fatalf("pods %+v", pods)
	}
	if st, ok := h.rt.Stopped(oldC.ID); !ok || st.Grace != 30*time.Second {
		t.Fatalf("old container stop %+v %v, want the old pod's 30s grace", st, ok)
	}
	if _, err := h.db.GetPod(old.UID); !errdefs.IsNotFound(err) {
		t.Fatalf("old pod record: %v", err)
	}
	if h.rt.HasSandbox(old.UID) {
		t.Fatal("old sandbox left behind")
	}
	var got []string
	for _, e := range h.rt.Events() {
		if !strings.HasPrefix(e, "sandbox") {
			got = append(got, e)
		}
	}
	want := []string{"create app#0", "start app#0", "stop app#0", "remove app#0", "create app#0", "start app#0"}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want the old pod gone before the new one starts: %v", got, want)
	}
}

func TestNodeLabelsStopAndStartPods(t *testing.T) {
	h := newHarness(t, api.NewNode(testNode, map[string]string{"role": "edge"}, nil))
	h.start("file")
	ds := daemonSet("sel", ctr("app", "img"))
	ds.Spec.Template.Spec.NodeSelector = map[string]string{"role": "edge"}
	grace := int64(0)
	ds.Spec.Template.Spec.TerminationGracePeriodSeconds = &grace
	h.send("file", ds)
	h.pod("sel-node1", "running", isRunning)
	c := h.running("sel-node1", "app", 0)

	h.a.SetNode(api.NewNode(testNode, map[string]string{"role": "core"}, nil))
	h.noPod("sel-node1")
	if st, ok := h.rt.Stopped(c.ID); !ok || st.Grace != 2*time.Second {
		t.Fatalf("stop %+v %v, want kubelet's 2s minimum grace", st, ok)
	}
	if len(h.containers("sel-node1")) != 0 {
		t.Fatal("containers left behind")
	}

	h.a.SetNode(api.NewNode(testNode, map[string]string{"role": "edge"}, nil))
	h.pod("sel-node1", "running again", isRunning)
}

func TestTaints(t *testing.T) {
	h := newHarness(t, nil)
	h.start("file")
	tol := int64(30)
	tolerant := daemonSet("tolerant", ctr("app", "img"))
	tolerant.Spec.Template.Spec.Tolerations = []corev1.Toleration{{
		Key: "maintenance", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &tol,
	}}
	plain := daemonSet("plain", ctr("app", "img"))
	h.send("file", tolerant, plain)
	h.pod("tolerant-node1", "running", isRunning)
	h.pod("plain-node1", "running", isRunning)
	plainC := h.running("plain-node1", "app", 0)
	tolerantC := h.running("tolerant-node1", "app", 0)

	// A NoSchedule taint keeps running pods but starts no new one.
	noSchedule := corev1.Taint{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule}
	h.a.SetNode(api.NewNode(testNode, nil, []corev1.Taint{noSchedule}))
	late := daemonSet("late", ctr("app", "img"))
	// The sentinel tolerates the taint: once it runs, the taint was seen.
	sentinel := daemonSet("sentinel", ctr("app", "img"))
	sentinel.Spec.Template.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}}
	h.send("file", tolerant, plain, late, sentinel)
	h.pod("sentinel-node1", "running", isRunning)
	if c := h.running("plain-node1", "app", 0); c.ID != plainC.ID || c.PID != plainC.PID {
		t.Fatal("NoSchedule taint restarted the pod")
	}
	for _, p := range h.a.Pods() {
		if p.Name == "late-node1" {
			t.Fatalf("a pod started on a NoSchedule-tainted node: %+v", p)
		}
	}

	// A NoExecute taint evicts the intolerant pod at once and the tolerant
	// one after its tolerationSeconds.
	h.send("file", tolerant, plain)
	tainted := h.clock.Now()
	h.a.SetNode(api.NewNode(testNode, nil, []corev1.Taint{{Key: "maintenance", Effect: corev1.TaintEffectNoExecute}}))
	h.noPod("plain-node1")
	if st, _ := h.rt.Stopped(plainC.ID); !st.At.Equal(tainted) {
		t.Fatalf("intolerant pod stopped at %v, want at once", st.At.Sub(tainted))
	}
	h.clock.Step(29 * time.Second)
	h.clock.Step(time.Second)
	h.noPod("tolerant-node1")
	if st, _ := h.rt.Stopped(tolerantC.ID); !st.At.Equal(tainted.Add(30 * time.Second)) {
		t.Fatalf("tolerant pod stopped %v after the taint, want 30s", st.At.Sub(tainted))
	}

	// Without the taint both come back.
	h.a.SetNode(api.NewNode(testNode, nil, nil))
	h.pod("plain-node1", "back", isRunning)
	h.pod("tolerant-node1", "back", isRunning)
}

func TestAdoptionAfterRestartKeepsContainers(t *testing.T) {
	h := newHarness(t, nil)
	h.start("file")
	ds := daemonSet("adopt", ctr("app", "img"), ctr("side", "img"))
	h.send("file", ds)
	h.pod("adopt-node1", "running", isRunning)
	app := h.running("adopt-node1", "app", 0)
	side := h.running("adopt-node1", "side", 0)
	// One restart, so that the restart count must survive too.
	if err := h.rt.Exit(side.ID, 1); err != nil {
		t.Fatal(err)
	}
	side = h.running("adopt-node1", "side", 1)
	before := len(h.rt.Events())

	h.stop()
	if c := h.running("adopt-node1", "app", 0); c.ID != app.ID {
		t.Fatal("agent shutdown stopped a container")
	}
	// The agent comes back with no reachable source: the stored state is used.
	h.start("file")
	p := h.pod("adopt-node1", "adopted", func(p PodStatus) bool { return isRunning(p) && p.Restarts == 1 })
	if c := h.running("adopt-node1", "app", 0); c.ID != app.ID || c.PID != app.PID {
		t.Fatalf("container replaced: %+v, was %+v", c, app)
	}
	if c := h.running("adopt-node1", "side", 1); c.PID != side.PID {
		t.Fatal("restarted container replaced")
	}
	// Cleaning up the superseded exited attempt is all it may do.
	for _, e := range h.rt.Events()[before:] {
		if e != "remove side#0" {
			t.Fatalf("adoption acted on the runtime: %v", h.rt.Events()[before:])
		}
	}
	if p.StartTime.IsZero() {
		t.Fatal("age lost")
	}
}

func TestHalfDoneWorkIsFinished(t *testing.T) {
	h := newHarness(t, nil)
	ds := daemonSet("half", ctr("app", "img"))
	d, err := newDesiredPod("file", ds)
	if err != nil {
		t.Fatal(err)
	}
	// A previous agent created the container and died before starting it.
	pod := buildPod(d, d.Revisions[0], testNode)
	h.rt.AddImage("img")
	sb, _ := h.rt.RunSandbox(context.Background(), pod)
	id, err := h.rt.CreateContainer(context.Background(), pod, sb, &pod.Spec.Containers[0], 0, false)
	if err != nil {
		t.Fatal(err)
	}
	h.start("file")
	h.send("file", ds)
	h.pod("half-node1", "running", isRunning)
	if c := h.running("half-node1", "app", 0); c.ID != id {
		t.Fatalf("container %s, want the half-made %s started", c.ID, id)
	}
	creates := 0
	for _, e := range h.rt.Events() {
		if e == "create app#0" {
			creates++
		}
	}
	if creates != 1 {
		t.Fatalf("created %d times: %v", creates, h.rt.Events())
	}
}

func TestDeletionsWaitForEverySource(t *testing.T) {
	h := newHarness(t, nil)
	// A pod of a previous life that no stored state mentions.
	strayDS := mustDesired(t, "file", daemonSet("stray", ctr("app", "img")))
	stray := buildPod(strayDS, strayDS.Revisions[0], testNode)
	h.rt.AddImage("img")
	sb, _ := h.rt.RunSandbox(context.Background(), stray)
	id, err := h.rt.CreateContainer(context.Background(), stray, sb, &stray.Spec.Containers[0], 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.rt.StartContainer(context.Background(), id); err != nil {
		t.Fatal(err)
	}

	h.start("server", "file")
	h.send("file", daemonSet("kept", ctr("app", "img")))
	h.pod("kept-node1", "running", isRunning)
	if c := h.running("stray-node1", "app", 0); c.ID != id {
		t.Fatal("stray pod touched before every source spoke")
	}
	h.sendErr("server", errors.New("connection refused"))
	h.send("file", daemonSet("kept", ctr("app", "img")), daemonSet("kept2", ctr("app", "img")))
	h.pod("kept2-node1", "running", isRunning)
	if c := h.running("stray-node1", "app", 0); c.ID != id {
		t.Fatal("stray pod removed after a failed read of a source")
	}
	h.send("server")
	waitFor(t, "stray pod removed", func() bool {
		return len(h.containers("stray-node1")) == 0 && !h.rt.HasSandbox(stray.UID)
	})
}

func mustDesired(t *testing.T, source string, ds *appsv1.DaemonSet) DesiredPod {
	t.Helper()
	d, err := newDesiredPod(source, ds)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDuplicateNameAcrossSourcesFirstWins(t *testing.T) {
	h := newHarness(t, nil)
	h.start("server", "file")
	// The later-registered source speaks first; the registration order
	// still decides.
	h.send("file", daemonSet("dup", ctr("app", "from-file")))
	h.send("server", daemonSet("dup", ctr("app", "from-server")))
	p := h.pod("dup-node1", "running the server's", func(p PodStatus) bool {
		return isRunning(p) && p.Source == "server"
	})
	if p.Containers[0].Image != "from-server" {
		t.Fatalf("pod %+v", p)
	}
	src := h.a.Sources()
	if len(src) != 2 || len(src[0].Conflicts) != 0 || len(src[1].Conflicts) != 1 ||
		!strings.Contains(src[1].Conflicts[0], "default/dup") {
		t.Fatalf("sources %+v", src)
	}
	for _, c := range h.containers("dup-node1") {
		if c.Revision != p.Revision {
			t.Fatalf("a container of the losing source's revision is left: %+v", c)
		}
	}
}

func TestBadSourceUpdateKeepsPods(t *testing.T) {
	h := newHarness(t, nil)
	h.start("file", "other")
	h.send("other")
	h.send("file", daemonSet("keep", ctr("app", "img")))
	h.pod("keep-node1", "running", isRunning)
	c := h.running("keep-node1", "app", 0)
	h.sendErr("file", errors.New("manifest unreadable"))
	h.send("other", daemonSet("sentinel", ctr("app", "img")))
	h.pod("sentinel-node1", "running", isRunning)
	if got := h.running("keep-node1", "app", 0); got.ID != c.ID {
		t.Fatal("pod replaced after a bad read")
	}
	if src := h.a.Sources(); src[0].Err == nil || !src[0].Synced || src[0].DaemonSets != 1 {
		t.Fatalf("source status %+v", src[0])
	}
}

func TestHungCreateDoesNotBlockOtherPods(t *testing.T) {
	h := newHarness(t, nil)
	release := h.rt.BlockCreate("stuck")
	t.Cleanup(release)
	h.start("file")
	h.send("file", daemonSet("slow", ctr("stuck", "img")), daemonSet("fast", ctr("app", "img")))
	h.pod("fast-node1", "running", isRunning)
	h.pod("slow-node1", "starting", func(p PodStatus) bool { return p.State == "Starting" })
	// Removing the wedged pod pre-empts its create.
	h.send("file", daemonSet("fast", ctr("app", "img")))
	h.noPod("slow-node1")
}

func TestHealthyNeedsTicks(t *testing.T) {
	h := newHarness(t, nil)
	a, err := New(Config{NodeName: testNode, Runtime: h.rt, Store: h.db, Clock: h.clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Healthy(); !errdefs.IsUnavailable(err) {
		t.Fatalf("Healthy before Run: %v", err)
	}
	// A loop that stopped ticking for three sync periods is unhealthy.
	a.mu.Lock()
	a.running, a.lastTick = true, h.clock.Now()
	a.mu.Unlock()
	h.clock.Step(3 * DefaultSyncPeriod)
	if err := a.Healthy(); err != nil {
		t.Fatalf("Healthy after 3 periods: %v", err)
	}
	h.clock.Step(time.Second)
	if err := a.Healthy(); !errdefs.IsUnavailable(err) {
		t.Fatalf("Healthy with a stale tick: %v", err)
	}

	h.start("file")
	waitFor(t, "healthy", func() bool { return h.a.Healthy() == nil })
	h.stop()
	if err := h.a.Healthy(); !errdefs.IsUnavailable(err) {
		t.Fatalf("Healthy after Run returned: %v", err)
	}
}

func TestUnsupportedSpecFailsThePod(t *testing.T) {
	h := newHarness(t, nil)
	h.start("file")
	ds := daemonSet("odd", ctr("app", "img"))
	ds.Spec.Template.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: "img"}}}
	h.send("file", ds)
	p := h.pod("odd-node1", "refused", func(p PodStatus) bool { return p.Phase == corev1.PodFailed })
	if p.Reason != "UnsupportedPodSpec" || !strings.Contains(p.Message, "spec.ephemeralContainers") || p.State != "Failed" {
		t.Fatalf("status %+v", p)
	}
	if n := len(h.rt.Events()); n != 0 {
		t.Fatalf("runtime used for a refused pod: %v", h.rt.Events())
	}
}
