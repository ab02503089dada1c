package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/daemonlet/daemonlet/internal/ctdtest"
)

// startWithMetrics runs the harness's agent, as harness.start does, with
// metrics on a fresh private registry, and returns the registry.
func (h *harness) startWithMetrics(sources ...string) *prometheus.Registry {
	h.t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, "v0.0.0-test")
	if err != nil {
		h.t.Fatal(err)
	}
	a, err := New(Config{
		NodeName: testNode, Node: h.node, Runtime: h.rt, Store: h.db, Clock: h.clock,
		Logger:     slog.New(slog.NewTextHandler(testWriter{h.t}, nil)),
		SyncPeriod: time.Hour,
		Metrics:    m,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := reg.Register(NewStateCollector(a, nil)); err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.a, h.cancel, h.done, h.updates = a, cancel, make(chan error, 1), make(chan SourceUpdate)
	go func() { h.done <- a.Run(ctx, h.updates, sources) }()
	h.t.Cleanup(h.stop)
	return reg
}

// families gathers reg by metric name.
func families(t *testing.T, reg prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// sample returns the value of the series of name whose labels include
// want, and whether there is one.
func sample(t *testing.T, reg prometheus.Gatherer, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mf := families(t, reg)[name]
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && have[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// waitSample waits until the series has the value.
func waitSample(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string, want float64) {
	t.Helper()
	var got float64
	var ok bool
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if got, ok = sample(t, reg, name, labels); ok && got == want {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s%v = %v (present %v), want %v", name, labels, got, ok, want)
}

// TestMetricNames is the golden list of the agent's own metric names: a
// rename breaks users' dashboards and alert rules, so it must be deliberate.
// The scrape also passes promtool's lint when promtool is installed.
func TestMetricNames(t *testing.T) {
	h := newHarness(t, nil)
	reg := h.startWithMetrics("file")
	h.send("file", daemonSet("crash", ctr("app", "img")))
	c := h.running("crash-node1", "app", 0)
	if err := h.rt.Exit(c.ID, 1); err != nil {
		t.Fatal(err)
	}
	h.running("crash-node1", "app", 1)

	var got []string
	for name := range families(t, reg) {
		if strings.HasPrefix(name, "daemonlet_") {
			got = append(got, name)
		}
	}
	slices.Sort(got)
	want := []string{
		"daemonlet_build_info",
		"daemonlet_container_restarts_total",
		"daemonlet_desired_pods",
		"daemonlet_image_pull_duration_seconds",
		"daemonlet_pod_container_status_restarts_total",
		"daemonlet_pod_start_sli_duration_seconds",
		"daemonlet_pod_start_total_duration_seconds",
		"daemonlet_pod_status_phase",
		"daemonlet_pod_status_ready",
		"daemonlet_pod_sync_duration_seconds",
		"daemonlet_pods",
		"daemonlet_pods_back_off",
		"daemonlet_source_daemonsets",
		"daemonlet_source_errors_total",
		"daemonlet_source_synced",
		"daemonlet_sync_duration_seconds",
		"daemonlet_sync_errors_total",
	}
	if !slices.Equal(got, want) {
		t.Errorf("metric names:\n got %q\nwant %q", got, want)
	}
	all := families(t, reg)
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if all[name] == nil {
			t.Errorf("no %s: the Go and process collectors are missing", name)
		}
	}

	srv := httptest.NewServer(NewMetricsHandler(reg, h.a))
	defer srv.Close()
	resp, err := http.Get(srv.URL + PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v %v", resp.Status, err)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		ctdtest.Unavailable(t, "promtool (Debian package prometheus, or make deps): %v", err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestMetricsFollowPodState checks the state collector: phase, readiness,
// back-off reasons and restarts follow the pods, and a removed pod leaves
// no series behind.
func TestMetricsFollowPodState(t *testing.T) {
	h := newHarness(t, nil)
	reg := h.startWithMetrics("file")
	h.send("file", daemonSet("crash", ctr("app", "img")))
	p := h.pod("crash-node1", "running", isRunning)
	pod := map[string]string{"namespace": "default", "pod": "crash-node1", "uid": p.UID, "daemonset": "crash"}
	waitSample(t, reg, "daemonlet_desired_pods", nil, 1)
	waitSample(t, reg, "daemonlet_pods", map[string]string{"phase": "Running", "ready": "true"}, 1)
	waitSample(t, reg, "daemonlet_pod_status_ready", pod, 1)
	waitSample(t, reg, "daemonlet_pod_status_phase", map[string]string{"uid": p.UID, "phase": "Running"}, 1)
	waitSample(t, reg, "daemonlet_pod_status_phase", map[string]string{"uid": p.UID, "phase": "Pending"}, 0)
	waitSample(t, reg, "daemonlet_pods_back_off", map[string]string{"reason": "CrashLoopBackOff"}, 0)

	// First exit: restarted at once. Second: CrashLoopBackOff.
	c := h.running("crash-node1", "app", 0)
	if err := h.rt.Exit(c.ID, 1); err != nil {
		t.Fatal(err)
	}
	c = h.running("crash-node1", "app", 1)
	if err := h.rt.Exit(c.ID, 1); err != nil {
		t.Fatal(err)
	}
	h.pod("crash-node1", "in back-off", func(p PodStatus) bool { return p.Reason == reasonCrashLoopBackOff })
	waitSample(t, reg, "daemonlet_pods_back_off", map[string]string{"reason": "CrashLoopBackOff"}, 1)
	waitSample(t, reg, "daemonlet_pod_container_status_waiting_reason", map[string]string{"uid": p.UID, "container": "app", "reason": "CrashLoopBackOff"}, 1)
	waitSample(t, reg, "daemonlet_pods", map[string]string{"phase": "Running", "ready": "false"}, 1)
	waitSample(t, reg, "daemonlet_pod_status_ready", pod, 0)
	waitSample(t, reg, "daemonlet_pod_container_status_restarts_total", map[string]string{"uid": p.UID, "container": "app"}, 1)
	waitSample(t, reg, "daemonlet_container_restarts_total", nil, 1)

	h.clock.Step(10 * time.Second)
	h.running("crash-node1", "app", 2)
	waitSample(t, reg, "daemonlet_container_restarts_total", nil, 2)
	waitSample(t, reg, "daemonlet_pod_container_status_restarts_total", map[string]string{"uid": p.UID, "container": "app"}, 2)

	// The DaemonSet goes: so do the pod's series, and desired drops to 0.
	h.send("file")
	h.noPod("crash-node1")
	waitSample(t, reg, "daemonlet_desired_pods", nil, 0)
	for name, mf := range families(t, reg) {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "uid" && l.GetValue() == p.UID {
					t.Errorf("stale series of the removed pod: %s%v", name, m.GetLabel())
				}
			}
		}
	}
	waitSample(t, reg, "daemonlet_pods", map[string]string{"phase": "Running", "ready": "false"}, 0)
}

// TestMetricsPodStartExcludesPulls checks the start SLI on the fake clock:
// a failed pull, a 10s back-off and a good pull are left out; the 3s the
// container create takes afterwards count.
func TestMetricsPodStartExcludesPulls(t *testing.T) {
	h := newHarness(t, nil)
	h.rt.FailPull("slow", errdefs.ErrUnavailable)
	release := h.rt.BlockCreate("app")
	defer release()
	reg := h.startWithMetrics("file")
	h.send("file", daemonSet("start", ctr("app", "slow")))
	h.pod("start-node1", "ErrImagePull", func(p PodStatus) bool { return p.Reason == reasonErrImagePull })
	waitSample(t, reg, "daemonlet_sync_errors_total", map[string]string{"step": stepPullImage}, 1)

	h.rt.FailPull("slow", nil)
	h.clock.Step(10 * time.Second)
	waitFor(t, "the second pull", func() bool { return len(h.rt.Pulls("slow")) == 2 })
	h.pod("start-node1", "creating", func(p PodStatus) bool { return p.State == stateStarting.String() })
	h.clock.Step(3 * time.Second)
	release()
	h.pod("start-node1", "running", isRunning)
	waitSample(t, reg, "daemonlet_pod_start_sli_duration_seconds", nil, 1)

	mfs := families(t, reg)
	hist := func(name string) *dto.Histogram {
		return mfs[name].GetMetric()[0].GetHistogram()
	}
	if sli := hist("daemonlet_pod_start_sli_duration_seconds"); sli.GetSampleSum() != 3 {
		t.Errorf("start SLI %vs, want 3s", sli.GetSampleSum())
	}
	if total := hist("daemonlet_pod_start_total_duration_seconds"); total.GetSampleSum() != 13 || total.GetSampleCount() != 1 {
		t.Errorf("start total %vs over %d pods, want 13s over 1", total.GetSampleSum(), total.GetSampleCount())
	}
	if pulls := hist("daemonlet_image_pull_duration_seconds"); pulls.GetSampleCount() != 1 {
		t.Errorf("%d successful pulls recorded, want 1", pulls.GetSampleCount())
	}
	var bounds []float64
	for _, b := range hist("daemonlet_pod_start_sli_duration_seconds").GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	if !slices.Equal(bounds, podStartBuckets) || len(bounds) != 25 || bounds[5] != 5 {
		t.Errorf("buckets %v, want kubelet's", bounds)
	}

	// An agent restart adopts the pod: no second observation.
	h.stop()
	reg = h.startWithMetrics("file")
	h.send("file", daemonSet("start", ctr("app", "slow")))
	h.pod("start-node1", "adopted", isRunning)
	if n, _ := sample(t, reg, "daemonlet_pod_start_total_duration_seconds", nil); n != 0 {
		t.Errorf("an adopted pod was timed as a new start")
	}
}

// TestMetricsSourceErrorsAndProbes checks the source metrics and the
// probes of the metrics address: /readyz turns 200 only after a sync over
// every source's report.
func TestMetricsSourceErrorsAndProbes(t *testing.T) {
	h := newHarness(t, nil)
	reg := h.startWithMetrics("file", "http")
	srv := httptest.NewServer(NewMetricsHandler(reg, h.a))
	defer srv.Close()
	get := func(path string) int {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, "healthy", func() bool { return get(PathHealthz) == http.StatusOK })
	if code := get(PathReadyz); code != http.StatusInternalServerError {
		t.Fatalf("/readyz before any source reported: %d", code)
	}
	waitSample(t, reg, "daemonlet_source_errors_total", map[string]string{"source": "http"}, 0)
	h.send("file", daemonSet("one", ctr("app", "img")))
	if code := get(PathReadyz); code != http.StatusInternalServerError {
		t.Fatalf("/readyz with the http source silent: %d", code)
	}
	h.sendErr("http", errdefs.ErrUnavailable)
	waitFor(t, "ready", func() bool { return get(PathReadyz) == http.StatusOK })
	waitSample(t, reg, "daemonlet_source_errors_total", map[string]string{"source": "http"}, 1)
	waitSample(t, reg, "daemonlet_source_synced", map[string]string{"source": "file"}, 1)
	waitSample(t, reg, "daemonlet_source_synced", map[string]string{"source": "http"}, 0)
	waitSample(t, reg, "daemonlet_source_daemonsets", map[string]string{"source": "file"}, 1)
	h.stop()
	if code := get(PathHealthz); code != http.StatusInternalServerError {
		t.Fatalf("/healthz after the agent stopped: %d", code)
	}
}
