package agent

import (
	"fmt"
	"net/http"
	goruntime "runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/utils/clock"
)

// Paths served on the metrics address.
const (
	PathMetrics = "/metrics"
	PathReadyz  = "/readyz"
)

// metricsNamespace prefixes every metric of the agent.
const metricsNamespace = "daemonlet"

// Steps of a sync that can fail, the values of daemonlet_sync_errors_total's
// "step" label. A fixed set keeps the label's cardinality bounded.
const (
	stepListContainers  = "list_containers"
	stepRemoveContainer = "remove_container"
	stepRunSandbox      = "run_sandbox"
	stepPullImage       = "pull_image"
	stepCreateContainer = "create_container"
	stepStartContainer  = "start_container"
	stepStopPod         = "stop_pod"
	stepWriteRecord     = "write_record"
)

// podStartBuckets are kubelet_pod_start_sli_duration_seconds' buckets, so
// that dashboards and SLO rules written for the kubelet read ours the same.
var podStartBuckets = []float64{0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600}

// Metrics holds the agent's event-driven metrics: counters and histograms
// that the sync loop and the pod workers update as things happen. Per-pod
// and per-source state is not here: NewStateCollector reads it at scrape
// time. A nil *Metrics records nothing, so tests need not build one.
type Metrics struct {
	syncDuration      prometheus.Histogram
	podSyncDuration   prometheus.Histogram
	syncErrors        *prometheus.CounterVec
	desiredPods       prometheus.Gauge
	containerRestarts prometheus.Counter
	podStartSLI       prometheus.Histogram
	podStartTotal     prometheus.Histogram
	imagePull         prometheus.Histogram
	sourceErrors      *prometheus.CounterVec
}

// NewMetrics registers the agent's metrics on reg, together with
// daemonlet_build_info (version is the binary's version) and the Go and
// process collectors, and returns their handles for Config.Metrics.
func NewMetrics(reg prometheus.Registerer, version string) (*Metrics, error) {
	m := &Metrics{
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "sync_duration_seconds",
			Help:    "Duration of the agent's sync passes: merging the sources, deciding each DaemonSet and driving the pod workers.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}),
		podSyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "pod_sync_duration_seconds",
			Help:    "Duration of the pod workers' sync passes, image pulls and container starts included.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		syncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "sync_errors_total",
			Help: "Failed steps of pod syncs, by step (list_containers, run_sandbox, pull_image, create_container, start_container, remove_container, stop_pod, write_record).",
		}, []string{"step"}),
		desiredPods: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "desired_pods",
			Help: "Daemon pods that should run on this node, as the DaemonSet controller's desiredNumberScheduled counts them.",
		}),
		containerRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "container_restarts_total",
			Help: "Containers the agent started again after an earlier attempt of the same container exited.",
		}),
		podStartSLI: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "pod_start_sli_duration_seconds",
			Help:    "Time from the agent first seeing a new desired pod to all its containers running, image pulls excluded (as kubelet_pod_start_sli_duration_seconds).",
			Buckets: podStartBuckets,
		}),
		podStartTotal: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "pod_start_total_duration_seconds",
			Help:    "Time from the agent first seeing a new desired pod to all its containers running, image pulls included.",
			Buckets: podStartBuckets,
		}),
		imagePull: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "image_pull_duration_seconds",
			Help:    "Duration of successful image pulls.",
			Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600},
		}),
		sourceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "source_errors_total",
			Help: "Source updates that failed: unreadable source, invalid DaemonSets, or a set the store refused.",
		}, []string{"source"}),
	}
	revision := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Name: "build_info",
		Help:        "Always 1; its labels say which daemonlet build runs.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goruntime.Version()},
	})
	buildInfo.Set(1)
	for _, c := range []prometheus.Collector{
		m.syncDuration, m.podSyncDuration, m.syncErrors, m.desiredPods, m.containerRestarts,
		m.podStartSLI, m.podStartTotal, m.imagePull, m.sourceErrors, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register agent metrics: %w", err)
		}
	}
	// Every step starts at zero, so that rate() sees the first error.
	for _, step := range []string{stepListContainers, stepRemoveContainer, stepRunSandbox, stepPullImage, stepCreateContainer, stepStartContainer, stepStopPod, stepWriteRecord} {
		m.syncErrors.WithLabelValues(step)
	}
	return m, nil
}

// initSource makes a configured source's error counter start at zero.
func (m *Metrics) initSource(name string) {
	if m != nil {
		m.sourceErrors.WithLabelValues(name)
	}
}

// observeSyncSince records a sync pass that began at start.
func (m *Metrics) observeSyncSince(clk clock.PassiveClock, start time.Time) {
	if m != nil {
		m.syncDuration.Observe(clk.Since(start).Seconds())
	}
}

// observePodSync records one pod worker pass.
func (m *Metrics) observePodSync(d time.Duration) {
	if m != nil {
		m.podSyncDuration.Observe(d.Seconds())
	}
}

// syncError counts one failed step.
func (m *Metrics) syncError(step string) {
	if m != nil {
		m.syncErrors.WithLabelValues(step).Inc()
	}
}

// setDesiredPods records how many pods the last sync wants on this node:
// those the eligibility predicate says should run.
func (m *Metrics) setDesiredPods(intents []podIntent) {
	if m == nil {
		return
	}
	n := 0
	for _, in := range intents {
		if in.Decision == decideRun {
			n++
		}
	}
	m.desiredPods.Set(float64(n))
}

// containerRestarted counts a container started again.
func (m *Metrics) containerRestarted() {
	if m != nil {
		m.containerRestarts.Inc()
	}
}

// observeImagePull records a pull that succeeded.
func (m *Metrics) observeImagePull(d time.Duration) {
	if m != nil {
		m.imagePull.Observe(d.Seconds())
	}
}

// sourceError counts a failed source update.
func (m *Metrics) sourceError(source string) {
	if m != nil {
		m.sourceErrors.WithLabelValues(source).Inc()
	}
}

// podStartTracker times one new pod's start for the start SLI. Like
// kubelet's pod startup latency tracker it follows only pods the agent sees
// for the first time (no pod record yet), not pods adopted after a restart.
// The pull time excluded is the window from the first pull's start to the
// last pull's end, as kubelet measured it before it merged pull sessions;
// back-offs between failed pulls fall inside the window and are excluded
// too. Unlike the SLO's definition, pods with hostPath volumes are counted:
// most DaemonSets have one, and would otherwise never be measured. Only the
// pod worker's goroutine uses a tracker.
type podStartTracker struct {
	seen      time.Time
	firstPull time.Time
	lastPull  time.Time
}

// pulled adds a pull attempt, good or failed, from start to end.
func (t *podStartTracker) pulled(start, end time.Time) {
	if t == nil {
		return
	}
	if t.firstPull.IsZero() {
		t.firstPull = start
	}
	t.lastPull = end
}

// running records that every container runs at now.
func (t *podStartTracker) running(m *Metrics, now time.Time) {
	if t == nil || m == nil {
		return
	}
	total := now.Sub(t.seen)
	m.podStartTotal.Observe(total.Seconds())
	m.podStartSLI.Observe(max(total-t.lastPull.Sub(t.firstPull), 0).Seconds())
}

// HealthChecker is what the metrics address's probes read from the agent;
// *Agent implements it.
type HealthChecker interface {
	// Healthy returns nil while the sync loop runs.
	Healthy() error
	// Ready returns nil once the first sync over every source is done.
	Ready() error
}

var _ HealthChecker = (*Agent)(nil)

// NewMetricsHandler serves /metrics from g, and the probes /healthz (200
// while the agent is healthy) and /readyz (200 once it is ready), each
// answering 500 with the reason otherwise.
func NewMetricsHandler(g prometheus.Gatherer, a HealthChecker) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	probe := func(check func() error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if err := check(); err != nil {
				w.WriteHeader(http.StatusInternalServerError)
				fmt.Fprintln(w, err)
				return
			}
			fmt.Fprintln(w, "ok")
		}
	}
	mux.Handle("GET "+PathHealthz, probe(a.Healthy))
	mux.Handle("GET "+PathReadyz, probe(a.Ready))
	return mux
}
