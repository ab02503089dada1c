package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/daemonlet/daemonlet/runtime"
	"github.com/daemonlet/daemonlet/runtime/runtimetest"
)

// execProbeSpec is a probe that runs cmd in the container.
func execProbeSpec(cmd string, period, failure, success int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{cmd}}},
		PeriodSeconds:    period,
		TimeoutSeconds:   1,
		FailureThreshold: failure,
		SuccessThreshold: success,
	}
}

// exitCodes answers each command with the code it is currently told to,
// and counts the commands it ran.
type exitCodes struct {
	mu    sync.Mutex
	codes map[string]int
	runs  map[string]int
}

func newExitCodes() *exitCodes {
	return &exitCodes{codes: map[string]int{}, runs: map[string]int{}}
}

func (e *exitCodes) set(cmd string, code int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.codes[cmd] = code
}

func (e *exitCodes) count(cmd string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runs[cmd]
}

func (e *exitCodes) exec(ctx context.Context, cmd []string) (int, []byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.runs[cmd[0]]++
	return e.codes[cmd[0]], nil, nil
}

// proberRig is a podProber on the fake runtime and a fake clock, whose
// workers the test drives by calling once, without goroutines.
type proberRig struct {
	t     *testing.T
	clock *testingclock.FakeClock
	rt    *runtimetest.Fake
	p     *podProber
	rings atomic.Int32
	pod   *runtime.Pod
}

func newProberRig(t *testing.T, c corev1.Container) *proberRig {
	clk := testingclock.NewFakeClock(time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC))
	r := &proberRig{t: t, clock: clk, rt: runtimetest.New(clk)}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r.p = newPodProber(r.rt, clk, log, func() { r.rings.Add(1) })
	r.pod = &runtime.Pod{UID: "uid1", Name: "p", Namespace: "default", Spec: &corev1.PodSpec{Containers: []corev1.Container{c}}}
	r.rt.AddImage(c.Image)
	return r
}

// startInstance starts a new attempt of the container and makes it the
// prober's target.
func (r *proberRig) startInstance(attempt int) string {
	r.t.Helper()
	ctx := context.Background()
	sb, err := r.rt.RunSandbox(ctx, r.pod)
	if err != nil {
		r.t.Fatal(err)
	}
	id, err := r.rt.CreateContainer(ctx, r.pod, sb, &r.pod.Spec.Containers[0], attempt, false)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.rt.StartContainer(ctx, id); err != nil {
		r.t.Fatal(err)
	}
	st, err := r.rt.ContainerStatus(ctx, id)
	if err != nil {
		r.t.Fatal(err)
	}
	r.p.mu.Lock()
	r.p.containers = map[string]probeTarget{st.Name: {id: id, running: true, startedAt: st.StartedAt}}
	r.p.mu.Unlock()
	return id
}

func (r *proberRig) worker(k probeKind) *probeWorker {
	return &probeWorker{p: r.p, kind: k, c: &r.pod.Spec.Containers[0]}
}

func TestProbeThresholdsDecideResults(t *testing.T) {
	c := ctr("app", "img")
	c.ReadinessProbe = execProbeSpec("ready", 10, 3, 2)
	r := newProberRig(t, c)
	codes := newExitCodes()
	r.rt.HandleExec("app", codes.exec)
	id := r.startInstance(0)
	w := r.worker(probeReadiness)
	if got := r.p.result(id, probeReadiness); got != probeFailure {
		t.Fatalf("initial readiness %v, want Failure", got)
	}
	// Two successes in a row make it ready, three failures in a row
	// unready; a run broken by the other outcome starts over.
	steps := []struct {
		code int
		want probeResult
	}{
		{0, probeFailure}, {0, probeSuccess}, {1, probeSuccess}, {1, probeSuccess},
		{0, probeSuccess}, {1, probeSuccess}, {1, probeSuccess}, {1, probeFailure},
		{0, probeFailure}, {1, probeFailure}, {0, probeFailure}, {0, probeSuccess},
	}
	for i, s := range steps {
		codes.set("ready", s.code)
		w.once(context.Background())
		if got := r.p.result(id, probeReadiness); got != s.want {
			t.Fatalf("step %d (exit %d): readiness %v, want %v", i, s.code, got, s.want)
		}
	}
	// Rings only on the three changes.
	if n := r.rings.Load(); n != 3 {
		t.Fatalf("%d rings, want 3", n)
	}
	if !r.p.ready(&r.pod.Spec.Containers[0], id) {
		t.Fatal("a container whose readiness probe succeeded is not ready")
	}
}

func TestProbeInitialDelayAndUnknownOutcomes(t *testing.T) {
	c := ctr("app", "img")
	c.LivenessProbe = execProbeSpec("alive", 10, 1, 1)
	c.LivenessProbe.InitialDelaySeconds = 15
	r := newProberRig(t, c)
	codes := newExitCodes()
	codes.set("alive", 1)
	r.rt.HandleExec("app", codes.exec)
	id := r.startInstance(0)
	w := r.worker(probeLiveness)
	for _, step := range []time.Duration{0, 10 * time.Second, 4999 * time.Millisecond} {
		r.clock.Step(step)
		w.once(context.Background())
		if n := codes.count("alive"); n != 0 {
			t.Fatalf("probed %d times within the initial delay (at %v)", n, r.clock.Now())
		}
	}
	if got := r.p.result(id, probeLiveness); got != probeSuccess {
		t.Fatalf("initial liveness %v, want Success", got)
	}
	r.clock.Step(time.Millisecond)
	w.once(context.Background())
	if codes.count("alive") != 1 || r.p.result(id, probeLiveness) != probeFailure {
		t.Fatalf("after the delay: %d probes, liveness %v", codes.count("alive"), r.p.result(id, probeLiveness))
	}

	// A command that cannot run decides nothing: its outcome is thrown
	// away, as kubelet throws away a prober error.
	c2 := ctr("app", "img")
	c2.ReadinessProbe = execProbeSpec("ready", 10, 1, 1)
	r2 := newProberRig(t, c2)
	r2.rt.HandleExec("app", func(ctx context.Context, cmd []string) (int, []byte, error) {
		return -1, nil, fmt.Errorf("exec: %w", net.ErrClosed)
	})
	id2 := r2.startInstance(0)
	w2 := r2.worker(probeReadiness)
	w2.once(context.Background())
	if got := r2.p.result(id2, probeReadiness); got != probeFailure || w2.run != 0 {
		t.Fatalf("after an exec error: readiness %v, run %d", got, w2.run)
	}
	r2.rt.HandleExec("app", nil)
	w2.once(context.Background())
	if got := r2.p.result(id2, probeReadiness); got != probeSuccess {
		t.Fatalf("readiness %v after a success", got)
	}
}

func TestProbeExecTimeoutIsAFailure(t *testing.T) {
	c := ctr("app", "img")
	c.ReadinessProbe = execProbeSpec("hang", 10, 1, 1)
	r := newProberRig(t, c)
	r.rt.HandleExec("app", func(ctx context.Context, cmd []string) (int, []byte, error) {
		<-ctx.Done()
		return -1, nil, fmt.Errorf("exec: %w", ctx.Err())
	})
	id := r.startInstance(0)
	w := r.worker(probeReadiness)
	// Make it ready first, so that the timeout has something to flip.
	r.p.set("app", id, probeReadiness, probeSuccess)
	start := time.Now()
	w.once(context.Background())
	if took := time.Since(start); took < time.Second || took > 5*time.Second {
		t.Fatalf("the probe took %v, want its 1s timeout", took)
	}
	if got := r.p.result(id, probeReadiness); got != probeFailure {
		t.Fatalf("readiness %v after a timeout, want Failure", got)
	}
}

func TestStartupProbeHoldsTheOthersBack(t *testing.T) {
	c := ctr("app", "img")
	c.StartupProbe = execProbeSpec("started", 10, 2, 1)
	c.ReadinessProbe = execProbeSpec("ready", 10, 1, 1)
	c.LivenessProbe = execProbeSpec("alive", 10, 1, 1)
	r := newProberRig(t, c)
	codes := newExitCodes()
	codes.set("started", 1)
	r.rt.HandleExec("app", codes.exec)
	id := r.startInstance(0)
	startup, ready, live := r.worker(probeStartup), r.worker(probeReadiness), r.worker(probeLiveness)
	spec := &r.pod.Spec.Containers[0]

	ready.once(context.Background())
	live.once(context.Background())
	startup.once(context.Background())
	if codes.count("ready")+codes.count("alive") != 0 || codes.count("started") != 1 {
		t.Fatalf("before the start: %v", codes.runs)
	}
	if r.p.started(spec, id) || r.p.ready(spec, id) {
		t.Fatal("started or ready before the startup probe succeeded")
	}
	codes.set("started", 0)
	startup.once(context.Background())
	if !r.p.started(spec, id) {
		t.Fatal("not started after the startup probe succeeded")
	}
	if r.p.ready(spec, id) {
		t.Fatal("ready before the readiness probe ran")
	}
	ready.once(context.Background())
	live.once(context.Background())
	startup.once(context.Background())
	if codes.count("ready") != 1 || codes.count("alive") != 1 || codes.count("started") != 2 {
		t.Fatalf("after the start: %v (the startup probe must stop)", codes.runs)
	}
	if !r.p.ready(spec, id) {
		t.Fatal("not ready after the readiness probe succeeded")
	}
	if _, failed := r.p.failed(spec, id); failed {
		t.Fatal("a healthy container counts as failed")
	}
}

func TestFailedLivenessHoldsUntilANewContainer(t *testing.T) {
	c := ctr("app", "img")
	c.StartupProbe = execProbeSpec("started", 10, 2, 1)
	r := newProberRig(t, c)
	codes := newExitCodes()
	codes.set("started", 1)
	r.rt.HandleExec("app", codes.exec)
	id := r.startInstance(0)
	w := r.worker(probeStartup)
	w.once(context.Background())
	w.once(context.Background())
	if k, failed := r.p.failed(&r.pod.Spec.Containers[0], id); !failed || k != probeStartup {
		t.Fatalf("after two startup failures: failed=%v kind=%v", failed, k)
	}
	w.once(context.Background())
	if n := codes.count("started"); n != 2 {
		t.Fatalf("%d probes: the worker must hold after a failure", n)
	}
	if err := r.rt.StopContainer(context.Background(), id, time.Second); err != nil {
		t.Fatal(err)
	}
	id1 := r.startInstance(1)
	codes.set("started", 0)
	w.once(context.Background())
	if n := codes.count("started"); n != 3 || r.p.result(id1, probeStartup) != probeSuccess {
		t.Fatalf("new instance: %d probes, startup %v", n, r.p.result(id1, probeStartup))
	}
	// The old instance's result is not the new one's, and a result for
	// an instance that is no longer the newest is dropped.
	r.p.set("app", id, probeStartup, probeSuccess)
	if got := r.p.result(id, probeStartup); got != probeFailure {
		t.Fatalf("stale result was recorded: %v", got)
	}
}

func TestHTTPProbe(t *testing.T) {
	var mu sync.Mutex
	var seen http.Header
	var seenHost string
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen, seenHost = r.Header.Clone(), r.Host
		mu.Unlock()
	})
	mux.HandleFunc("/bad", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusFound) })
	mux.HandleFunc("/to-bad", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/bad", http.StatusFound) })
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		// Another host: the redirect is not followed, and counts as a
		// success however that host would answer.
		http.Redirect(w, r, "http://192.0.2.1:1/bad", http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(mux)
	defer tlsSrv.Close()
	port := func(s *httptest.Server) int { return s.Listener.Addr().(*net.TCPAddr).Port }

	c := &corev1.Container{Name: "app", Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: int32(port(srv))}}}
	tests := []struct {
		name   string
		action corev1.HTTPGetAction
		want   probeResult
	}{
		{"ok", corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt(port(srv))}, probeSuccess},
		{"named port", corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("web")}, probeSuccess},
		{"500", corev1.HTTPGetAction{Path: "/bad", Port: intstr.FromInt(port(srv))}, probeFailure},
		{"302 without location", corev1.HTTPGetAction{Path: "/moved", Port: intstr.FromInt(port(srv))}, probeSuccess},
		{"same-host redirect followed", corev1.HTTPGetAction{Path: "/to-bad", Port: intstr.FromInt(port(srv))}, probeFailure},
		{"other-host redirect", corev1.HTTPGetAction{Path: "/elsewhere", Port: intstr.FromInt(port(srv))}, probeSuccess},
		{"https without verification", corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt(port(tlsSrv)), Scheme: corev1.URISchemeHTTPS}, probeSuccess},
		{"https 500", corev1.HTTPGetAction{Path: "/bad", Port: intstr.FromInt(port(tlsSrv)), Scheme: corev1.URISchemeHTTPS}, probeFailure},
		{"nothing listens", corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt(closedPort(t))}, probeFailure},
		{"unknown port name", corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("nope")}, probeUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, detail, err := httpProbe(ctx, "127.0.0.1", c, &tt.action)
			if got != tt.want || (err != nil) != (tt.want == probeUnknown) {
				t.Fatalf("got %v (%q, %v), want %v", got, detail, err, tt.want)
			}
		})
	}

	// Headers: the defaults, the probe's own, and Host.
	action := &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt(port(srv)), Host: "127.0.0.1", HTTPHeaders: []corev1.HTTPHeader{
		{Name: "X-Custom", Value: "a"}, {Name: "Host", Value: "example.test"}, {Name: "Accept", Value: "text/plain"},
	}}
	if got, detail, err := httpProbe(context.Background(), "192.0.2.1", c, action); got != probeSuccess {
		t.Fatalf("httpGet.host must replace the pod IP: %v %q %v", got, detail, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if seenHost != "example.test" || seen.Get("X-Custom") != "a" || seen.Get("Accept") != "text/plain" || !strings.HasPrefix(seen.Get("User-Agent"), "kube-probe/") {
		t.Fatalf("host %q, headers %v", seenHost, seen)
	}
}

// closedPort returns a port on 127.0.0.1 where nothing listens.
func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return p
}

func TestTCPProbe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := &corev1.Container{Name: "app", Ports: []corev1.ContainerPort{{Name: "svc", ContainerPort: int32(l.Addr().(*net.TCPAddr).Port)}}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, detail, err := tcpProbe(ctx, "127.0.0.1", c, &corev1.TCPSocketAction{Port: intstr.FromString("svc")}); got != probeSuccess {
		t.Fatalf("listening port: %v %q %v", got, detail, err)
	}
	if got, _, err := tcpProbe(ctx, "127.0.0.1", c, &corev1.TCPSocketAction{Port: intstr.FromInt(closedPort(t))}); got != probeFailure || err != nil {
		t.Fatalf("closed port: %v %v", got, err)
	}
}

func TestGRPCProbe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()
	hs.SetServingStatus("db", healthpb.HealthCheckResponse_NOT_SERVING)
	port := int32(l.Addr().(*net.TCPAddr).Port)

	probe := func(service *string) probeResult {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, _ := grpcProbe(ctx, "127.0.0.1", &corev1.GRPCAction{Port: port, Service: service}, 5*time.Second)
		return got
	}
	if got := probe(nil); got != probeSuccess {
		t.Fatalf("serving server: %v", got)
	}
	if got := probe(ptr.To("db")); got != probeFailure {
		t.Fatalf("NOT_SERVING service: %v", got)
	}
	if got := probe(ptr.To("unknown")); got != probeFailure {
		t.Fatalf("unknown service: %v", got)
	}
}

// TestReadinessFlipsReadyThroughTheAgent runs an httpGet readiness probe
// on a named port of the pod (whose IP the fake makes 127.0.0.1) through
// the whole agent, on the fake clock.
func TestReadinessFlipsReadyThroughTheAgent(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	h := newHarness(t, nil)
	h.rt.SetPodIP("127.0.0.1")
	h.start("file")
	c := ctr("web", "img")
	c.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: int32(srv.Listener.Addr().(*net.TCPAddr).Port)}}
	c.ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
		PeriodSeconds: 10, TimeoutSeconds: 1, FailureThreshold: 1, SuccessThreshold: 1,
	}
	h.send("file", daemonSet("web", c, ctr("plain", "img")))
	p := h.pod("web-node1", "running", isRunning)
	if p.Ready != 1 || p.Total != 2 {
		t.Fatalf("with a failing readiness probe: %d/%d ready, want 1/2", p.Ready, p.Total)
	}
	status.Store(http.StatusOK)
	// The probe runs every 10s of the fake clock; step until it has.
	stepUntil(t, h, 10*time.Second, func() bool {
		return readyOf(h, "web-node1") == 2
	})
	status.Store(http.StatusInternalServerError)
	stepUntil(t, h, 10*time.Second, func() bool {
		return readyOf(h, "web-node1") == 1
	})
	if n := len(h.containers("web-node1")); n != 2 {
		t.Fatalf("readiness failures must not restart anything: %d containers", n)
	}
}

func readyOf(h *harness, name string) int {
	for _, p := range h.a.Pods() {
		if p.Name == name {
			return p.Ready
		}
	}
	return -1
}

// stepUntil steps the fake clock by d until cond holds, leaving the
// probe workers (real goroutines) time to act between steps.
func stepUntil(t *testing.T, h *harness, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached at %v", h.clock.Now())
		}
		h.clock.Step(d)
		for i := 0; i < 500 && !cond(); i++ {
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// TestLivenessFailureRestartsUnderBackOff: a failed liveness probe stops
// the container with the probe's grace period; the restart is immediate
// the first time, then waits out the crash back-off, and each one counts.
func TestLivenessFailureRestartsUnderBackOff(t *testing.T) {
	h := newHarness(t, nil)
	codes := newExitCodes()
	codes.set("alive", 1)
	h.rt.HandleExec("app", codes.exec)
	h.start("file")
	c := ctr("app", "img")
	c.LivenessProbe = execProbeSpec("alive", 10, 1, 1)
	c.LivenessProbe.TerminationGracePeriodSeconds = ptr.To[int64](7)
	ds := daemonSet("live", c)
	ds.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](30)
	h.send("file", ds)
	start := h.clock.Now()

	// The first probe fails at once: stopped with 7s, restarted at once.
	first := h.running("live-node1", "app", 1)
	// Attempt 0 is gone (superseded), but the fake remembers its stop.
	stop0, ok := h.rt.Stopped(runtime.ContainerID(first.PodUID, "app", 0))
	if !ok {
		t.Fatal("attempt 0 was not stopped")
	}
	if stop0.Grace != 7*time.Second || !first.StartedAt.Equal(start) {
		t.Fatalf("stop %+v, restart at %v (start %v)", stop0, first.StartedAt, start)
	}
	// The next failure, one period on, meets the 10s back-off.
	stepUntil(t, h, 10*time.Second, func() bool {
		_, ok := h.rt.Stopped(first.ID)
		return ok
	})
	stopped := h.clock.Now()
	p := h.pod("live-node1", "in CrashLoopBackOff", func(p PodStatus) bool { return p.Reason == reasonCrashLoopBackOff })
	if p.Restarts != 1 || !strings.HasPrefix(p.Message, "back-off 10s ") {
		t.Fatalf("status %+v", p)
	}
	// A healthy container now: it restarts when the back-off ends, and
	// stays.
	codes.set("alive", 0)
	h.clock.Step(10 * time.Second)
	second := h.running("live-node1", "app", 2)
	if got := second.StartedAt.Sub(stopped); got != 10*time.Second {
		t.Fatalf("second restart %v after the stop, want 10s", got)
	}
	// The worker sees the new container once the pod worker's pass
	// after the start has told it; step until it has probed it.
	stepUntil(t, h, 10*time.Second, func() bool { return codes.count("alive") >= 3 })
	p = h.pod("live-node1", "running", isRunning)
	if p.Restarts != 2 || p.Ready != 1 {
		t.Fatalf("status %+v", p)
	}
}

// TestSlowProbeDoesNotDelayAnotherPod: one pod's probe hangs; another
// pod's probes and worker go on.
func TestSlowProbeDoesNotDelayAnotherPod(t *testing.T) {
	h := newHarness(t, nil)
	release := make(chan struct{})
	var hung atomic.Int32
	h.rt.HandleExec("slow", func(ctx context.Context, cmd []string) (int, []byte, error) {
		hung.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return 0, nil, nil
	})
	defer close(release)
	h.start("file")
	slow := ctr("slow", "img")
	slow.ReadinessProbe = execProbeSpec("check", 10, 1, 1)
	slow.ReadinessProbe.TimeoutSeconds = 60
	slow.LivenessProbe = execProbeSpec("check", 10, 1, 1)
	slow.LivenessProbe.TimeoutSeconds = 60
	fast := ctr("fast", "img")
	fast.ReadinessProbe = execProbeSpec("check", 10, 1, 1)
	h.send("file", daemonSet("a", slow), daemonSet("b", fast))
	waitFor(t, "both probes of the slow pod to hang", func() bool { return hung.Load() == 2 })
	h.pod("b-node1", "ready", func(p PodStatus) bool { return p.Ready == 1 })
	// The fast pod keeps being probed every period while the slow one
	// hangs, and its worker keeps working: a crash is restarted.
	before := len(h.rt.Execs("fast"))
	stepUntil(t, h, 10*time.Second, func() bool { return len(h.rt.Execs("fast")) > before })
	b := h.running("b-node1", "fast", 0)
	if err := h.rt.Exit(b.ID, 1); err != nil {
		t.Fatal(err)
	}
	h.running("b-node1", "fast", 1)
	if a := h.pod("a-node1", "not ready", func(p PodStatus) bool { return true }); a.Ready != 0 || len(h.rt.Execs("slow")) != 2 {
		t.Fatalf("slow pod %+v, %d execs", a, len(h.rt.Execs("slow")))
	}
}
