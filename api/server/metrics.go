package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// PathMetrics is where the server serves its Prometheus metrics.
const PathMetrics = "/metrics"

// GroupMonitoring is the group whose members may read /metrics without
// being admins (a Prometheus' token), as kube-apiserver's
// system:monitoring.
const GroupMonitoring = "system:monitoring"

// requestDurationBuckets span a cached read (milliseconds) to a slow store
// write (seconds), a subset of apiserver_request_duration_seconds' buckets.
var requestDurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 5, 10, 30, 60}

// scrapeTimeout bounds the store reads of one scrape, so that a stuck
// store makes scrapes fail rather than pile up.
const scrapeTimeout = 10 * time.Second

// requestMetrics are the event-driven metrics of the REST API, named after
// kube-apiserver's apiserver_request_total, apiserver_request_duration_seconds
// and apiserver_longrunning_requests.
type requestMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	watches  *prometheus.GaugeVec
}

// registerMetrics registers the request metrics and the state collector on
// reg; it runs in New, before routes wraps the handlers with instrument.
func (s *Server) registerMetrics(reg *prometheus.Registry) error {
	m := &requestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "daemonlet_server_requests_total",
			Help: "API requests answered, by verb (GET, LIST, WATCH, POST, PUT, DELETE), resource, subresource and HTTP code; a watch counts when its stream ends.",
		}, []string{"verb", "resource", "subresource", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "daemonlet_server_request_duration_seconds",
			Help:    "Duration of API requests other than watches, by verb, resource and subresource.",
			Buckets: requestDurationBuckets,
		}, []string{"verb", "resource", "subresource"}),
		watches: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "daemonlet_server_watches",
			Help: "Watch streams open now, by resource.",
		}, []string{"resource"}),
	}
	s.rolloutMetrics = newRolloutMetrics()
	for _, c := range append([]prometheus.Collector{m.requests, m.duration, m.watches, &stateCollector{s: s}}, s.rolloutMetrics.collectors()...) {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	// Every resource's watch gauge starts at zero so that it is present
	// before the first agent connects.
	for _, res := range s.resources() {
		m.watches.WithLabelValues(res.name)
	}
	s.metrics = m
	return nil
}

// metricsHandler serves reg to admins and to the system:monitoring group;
// with authentication off it is open like the rest of the API.
func (s *Server) metricsHandler(reg *prometheus.Registry) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: promLogger{s}})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := userFrom(r.Context())
		switch {
		case u.Name == "":
			writeError(w, apierrors.NewUnauthorized("Unauthorized"))
		case !slices.Contains(u.Groups, GroupMasters) && !slices.Contains(u.Groups, GroupMonitoring):
			// kube-apiserver's message for a non-resource URL.
			writeError(w, apierrors.NewForbidden(schema.GroupResource{}, "",
				fmt.Errorf("User %q cannot get path %q", u.Name, PathMetrics)))
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// promLogger sends promhttp's errors (a collector that failed) to the
// server's log.
type promLogger struct{ s *Server }

func (l promLogger) Println(v ...any) {
	l.s.log.Warn("serving metrics", "error", strings.TrimSpace(fmt.Sprintln(v...)))
}

// instrument counts and times the requests h answers for res; the verb is
// kube-apiserver's: a GET on a collection is LIST, or WATCH with watch=true.
func (s *Server) instrument(res *resource, method, subresource string, collection bool, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		verb := method
		if collection && method == http.MethodGet {
			verb = "LIST"
			if watch, err := parseBool(r.URL.Query().Get("watch")); err == nil && watch {
				verb = "WATCH"
			}
		}
		if verb == "WATCH" {
			g := s.metrics.watches.WithLabelValues(res.name)
			g.Inc()
			defer g.Dec()
		}
		rw := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		start := time.Now()
		h.ServeHTTP(rw, r)
		if verb != "WATCH" {
			s.metrics.duration.WithLabelValues(verb, res.name, subresource).Observe(time.Since(start).Seconds())
		}
		s.metrics.requests.WithLabelValues(verb, res.name, subresource, strconv.Itoa(rw.code)).Inc()
	})
}

// statusRecorder remembers the response code; Unwrap lets
// http.ResponseController reach the real writer's Flush for watches.
type statusRecorder struct {
	http.ResponseWriter
	code    int
	written bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.written {
		r.code, r.written = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.written = true
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Descriptions of the per-object gauges, named as kube-state-metrics names
// them with kube_ replaced by daemonlet_, so that the kubernetes-mixin's
// rules read the same.
var (
	dsLabels         = []string{"namespace", "daemonset"}
	dsDesired        = prometheus.NewDesc("daemonlet_daemonset_status_desired_number_scheduled", "Nodes that should run the DaemonSet's pod.", dsLabels, nil)
	dsCurrent        = prometheus.NewDesc("daemonlet_daemonset_status_current_number_scheduled", "Nodes that should run the DaemonSet's pod and run one.", dsLabels, nil)
	dsReady          = prometheus.NewDesc("daemonlet_daemonset_status_number_ready", "Nodes whose DaemonSet pod is Ready.", dsLabels, nil)
	dsAvailable      = prometheus.NewDesc("daemonlet_daemonset_status_number_available", "Nodes whose DaemonSet pod has been Ready for minReadySeconds.", dsLabels, nil)
	dsUnavailable    = prometheus.NewDesc("daemonlet_daemonset_status_number_unavailable", "Nodes that should run the DaemonSet's pod and have none available.", dsLabels, nil)
	dsMisscheduled   = prometheus.NewDesc("daemonlet_daemonset_status_number_misscheduled", "Nodes that run the DaemonSet's pod but should not.", dsLabels, nil)
	dsUpdated        = prometheus.NewDesc("daemonlet_daemonset_status_updated_number_scheduled", "Nodes whose DaemonSet pod runs the current template.", dsLabels, nil)
	dsObservedGen    = prometheus.NewDesc("daemonlet_daemonset_status_observed_generation", "The generation the status was computed for.", dsLabels, nil)
	dsGeneration     = prometheus.NewDesc("daemonlet_daemonset_metadata_generation", "The DaemonSet's generation: its spec's version.", dsLabels, nil)
	nodeCondition    = prometheus.NewDesc("daemonlet_node_status_condition", "1 for the status a node condition has, 0 for the two others.", []string{"node", "condition", "status"}, nil)
	nodesByReadiness = prometheus.NewDesc("daemonlet_server_nodes", "Registered nodes by the status of their Ready condition (true, false, unknown).", []string{"ready"}, nil)
)

// conditionStatuses are the label values of a condition's status, in
// kube-state-metrics' lower case.
var conditionStatuses = []corev1.ConditionStatus{corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown}

// stateCollector reads DaemonSets and Nodes from the store at every
// scrape, so that a deleted object's series vanish with it.
type stateCollector struct{ s *Server }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dsDesired, dsCurrent, dsReady, dsAvailable, dsUnavailable, dsMisscheduled, dsUpdated, dsObservedGen, dsGeneration, nodeCondition, nodesByReadiness} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	dss, _, err := c.s.list(ctx, c.s.daemonSets, "", nil)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(dsDesired, err)
	}
	for _, o := range dss {
		ds := o.(*appsv1.DaemonSet)
		st := ds.Status
		for d, v := range map[*prometheus.Desc]int64{
			dsDesired: int64(st.DesiredNumberScheduled), dsCurrent: int64(st.CurrentNumberScheduled),
			dsReady: int64(st.NumberReady), dsAvailable: int64(st.NumberAvailable),
			dsUnavailable: int64(st.NumberUnavailable), dsMisscheduled: int64(st.NumberMisscheduled),
			dsUpdated: int64(st.UpdatedNumberScheduled), dsObservedGen: st.ObservedGeneration,
			dsGeneration: ds.Generation,
		} {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), ds.Namespace, ds.Name)
		}
	}
	nodes, _, err := c.s.list(ctx, c.s.nodes, "", nil)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(nodeCondition, err)
		return
	}
	counts := map[corev1.ConditionStatus]int{}
	for _, o := range nodes {
		n := o.(*corev1.Node)
		ready := corev1.ConditionUnknown // no Ready condition yet
		for _, cond := range n.Status.Conditions {
			for _, st := range conditionStatuses {
				ch <- prometheus.MustNewConstMetric(nodeCondition, prometheus.GaugeValue, boolValue(cond.Status == st),
					n.Name, string(cond.Type), strings.ToLower(string(st)))
			}
			if cond.Type == corev1.NodeReady {
				ready = cond.Status
			}
		}
		counts[ready]++
	}
	for _, st := range conditionStatuses {
		ch <- prometheus.MustNewConstMetric(nodesByReadiness, prometheus.GaugeValue, float64(counts[st]), strings.ToLower(string(st)))
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
