package agent

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
)

// StateProvider is what the state collector reads at scrape time; *Agent
// implements it.
type StateProvider interface {
	// Pods returns the status of every pod.
	Pods() []PodStatus
	// Sources returns the agent's view of every configured source.
	Sources() []SourceStatus
}

var _ StateProvider = (*Agent)(nil)

// podPhases are the phases daemonlet_pods always reports, zero or not, so
// that a query for a phase never comes back empty.
var podPhases = []corev1.PodPhase{corev1.PodPending, corev1.PodRunning, corev1.PodSucceeded, corev1.PodFailed, corev1.PodUnknown}

// backOffReasons are the reasons daemonlet_pods_back_off always reports.
var backOffReasons = []string{reasonCrashLoopBackOff, reasonImagePullBackOff, reasonErrImagePull, reasonCreateError, reasonRunError, reasonSandboxError}

// stateCollector exports the pods' and sources' current state. It reads
// the agent at every scrape instead of keeping gauges, so a pod that is
// gone leaves no stale series behind.
type stateCollector struct {
	a       StateProvider
	sources []Source

	pods           *prometheus.Desc
	backOff        *prometheus.Desc
	podPhase       *prometheus.Desc
	podReady       *prometheus.Desc
	restarts       *prometheus.Desc
	waitingReason  *prometheus.Desc
	sourceSynced   *prometheus.Desc
	sourceDSs      *prometheus.Desc
	sourceLastSync *prometheus.Desc
	sourceRejected *prometheus.Desc
}

// NewStateCollector returns a collector of the pods' phase, readiness,
// restarts and waiting reasons and of the sources' state, read from a and
// from sources (each source's own report) at scrape time.
func NewStateCollector(a StateProvider, sources []Source) prometheus.Collector {
	podLabels := []string{"namespace", "pod", "uid", "daemonset"}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, "", name), help, labels, nil)
	}
	return &stateCollector{
		a:       a,
		sources: sources,
		pods: desc("pods", "Daemon pods on this node by phase and readiness (every app container ready).",
			"phase", "ready"),
		backOff: desc("pods_back_off", "Daemon pods waiting in a back-off, by the reason of their first waiting container.",
			"reason"),
		podPhase: desc("pod_status_phase", "The pod's phase: 1 for the current one, 0 for the others.",
			append(podLabels, "phase")...),
		podReady: desc("pod_status_ready", "1 when every app container of the pod is ready, else 0.",
			podLabels...),
		restarts: desc("pod_container_status_restarts_total", "Restarts of the container in this pod.",
			append(podLabels, "container")...),
		waitingReason: desc("pod_container_status_waiting_reason", "1 for a waiting container, with the reason it waits.",
			append(podLabels, "container", "reason")...),
		sourceSynced: desc("source_synced", "1 once the source delivered a full set since the agent started, else 0.",
			"source"),
		sourceDSs: desc("source_daemonsets", "DaemonSets the agent holds from the source.",
			"source"),
		sourceLastSync: desc("source_last_sync_timestamp_seconds", "Unix time of the source's last read that produced a set.",
			"source"),
		sourceRejected: desc("source_rejected_manifests", "Manifests of the source rejected by its last read.",
			"source"),
	}
}

// Describe sends the descriptors of every metric the collector exports.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pods, c.backOff, c.podPhase, c.podReady, c.restarts, c.waitingReason, c.sourceSynced, c.sourceDSs, c.sourceLastSync, c.sourceRejected} {
		ch <- d
	}
}

// Collect reads the agent and the sources and sends their current state.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	type phaseReady struct {
		phase corev1.PodPhase
		ready bool
	}
	counts := map[phaseReady]int{}
	backOff := map[string]int{}
	for _, r := range backOffReasons {
		backOff[r] = 0
	}
	for _, p := range c.a.Pods() {
		ready := p.Phase == corev1.PodRunning && p.Total > 0 && p.Ready == p.Total
		counts[phaseReady{p.Phase, ready}]++
		if p.State == stateBackOff.String() && p.Reason != "" {
			backOff[p.Reason]++
		}
		labels := []string{p.Namespace, p.Name, p.UID, p.DaemonSet}
		for _, ph := range podPhases {
			ch <- prometheus.MustNewConstMetric(c.podPhase, prometheus.GaugeValue, boolValue(p.Phase == ph), append(labels, string(ph))...)
		}
		ch <- prometheus.MustNewConstMetric(c.podReady, prometheus.GaugeValue, boolValue(ready), labels...)
		for _, cs := range p.Containers {
			if cs.Init {
				continue
			}
			ch <- prometheus.MustNewConstMetric(c.restarts, prometheus.CounterValue, float64(cs.RestartCount), append(labels, cs.Name)...)
			if cs.State == "Waiting" && cs.Reason != "" {
				ch <- prometheus.MustNewConstMetric(c.waitingReason, prometheus.GaugeValue, 1, append(labels, cs.Name, cs.Reason)...)
			}
		}
	}
	for _, ph := range podPhases {
		for _, ready := range []bool{false, true} {
			ch <- prometheus.MustNewConstMetric(c.pods, prometheus.GaugeValue, float64(counts[phaseReady{ph, ready}]), string(ph), strconv.FormatBool(ready))
		}
	}
	for reason, n := range backOff {
		ch <- prometheus.MustNewConstMetric(c.backOff, prometheus.GaugeValue, float64(n), reason)
	}

	for _, s := range c.a.Sources() {
		ch <- prometheus.MustNewConstMetric(c.sourceSynced, prometheus.GaugeValue, boolValue(s.Synced), s.Name)
		ch <- prometheus.MustNewConstMetric(c.sourceDSs, prometheus.GaugeValue, float64(s.DaemonSets), s.Name)
	}
	for _, s := range c.sources {
		r := s.Report()
		ch <- prometheus.MustNewConstMetric(c.sourceRejected, prometheus.GaugeValue, float64(len(r.FileErrors)), s.Name())
		// A source that never read successfully has no timestamp: a
		// zero would read as "last synced in 1970".
		if !r.LastSync.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.sourceLastSync, prometheus.GaugeValue, float64(r.LastSync.UnixNano())/1e9, s.Name())
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
