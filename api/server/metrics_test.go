package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"

	"github.com/daemonlet/daemonlet/api"
)

func TestMetricsAuthorization(t *testing.T) {
	tokens, err := ParseTokenFile(strings.NewReader(testTokenFile + "prom-token,prometheus,4,system:monitoring\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := serveHarness(t, Config{Store: openStore(t, 0), Tokens: tokens})
	for _, tc := range []struct {
		token string
		code  int
	}{
		{"", http.StatusUnauthorized},
		{"wrong", http.StatusUnauthorized},
		{otherToken, http.StatusForbidden},
		{node1Token, http.StatusForbidden},
		{adminToken, http.StatusOK},
		{"prom-token", http.StatusOK},
	} {
		resp, body := h.do("GET", PathMetrics, tc.token, nil)
		if resp.StatusCode != tc.code {
			t.Errorf("token %q: code %d, want %d: %s", tc.token, resp.StatusCode, tc.code, body)
		}
		if tc.code == http.StatusOK && !strings.Contains(string(body), "daemonlet_server_nodes{") {
			t.Errorf("token %q: no state metrics in\n%s", tc.token, body)
		}
	}
}

func TestRequestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := serveHarness(t, Config{Store: openStore(t, 0), Metrics: reg})
	h.must("GET", dsPath, "", nil, http.StatusOK, nil)
	h.must("GET", dsPath+"/absent", "", nil, http.StatusNotFound, nil)
	h.must("POST", dsPath, "", testDaemonSet("web"), http.StatusCreated, nil)
	h.must("GET", "/api/v1/nodes/absent/status", "", nil, http.StatusNotFound, nil)
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"LIST", "daemonsets", "", "200"}, 1},
		{[]string{"GET", "daemonsets", "", "404"}, 1},
		{[]string{"POST", "daemonsets", "", "201"}, 1},
		{[]string{"GET", "nodes", "status", "404"}, 1},
		{[]string{"GET", "daemonsets", "", "200"}, 0},
	} {
		key := fmt.Sprintf("daemonlet_server_requests_total{code=%q,resource=%q,subresource=%q,verb=%q}", c.labels[3], c.labels[1], c.labels[2], c.labels[0])
		if got := gather(t, reg)[key]; got != c.want {
			t.Errorf("requests_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if n := count(t, reg, "daemonlet_server_request_duration_seconds"); n != 4 {
		t.Errorf("%d duration series, want 4 (one per verb, resource and subresource)", n)
	}

	// An open watch is counted while it streams, and as a request once it
	// ends.
	const watches = `daemonlet_server_watches{resource="pods"}`
	ctx, cancel := context.WithCancel(context.Background())
	ch, _ := h.watch(ctx, "/api/v1/pods?watch=true", "")
	eventually(t, "one open pod watch", func() bool { return gather(t, reg)[watches] == 1 })
	cancel()
	for range ch {
	}
	eventually(t, "no open pod watch", func() bool { return gather(t, reg)[watches] == 0 })
	eventually(t, "the watch counted", func() bool {
		return gather(t, reg)[`daemonlet_server_requests_total{code="200",resource="pods",subresource="",verb="WATCH"}`] == 1
	})
	if n := count(t, reg, "daemonlet_server_request_duration_seconds"); n != 4 {
		t.Errorf("%d duration series after a watch, want still 4: watches are not timed", n)
	}
}

func TestStateMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := serveHarness(t, Config{Store: openStore(t, 0), Metrics: reg})
	ds := testDaemonSet("web")
	h.must("POST", dsPath, "", ds, http.StatusCreated, ds)
	h.must("POST", "/api/v1/nodes", "", testNode("a"), http.StatusCreated, nil)
	notReady := testNode("b")
	notReady.Status.Conditions[0].Status = corev1.ConditionFalse
	h.must("POST", "/api/v1/nodes", "", notReady, http.StatusCreated, nil)
	hash := api.TemplateHash(&ds.Spec.Template, nil)
	h.must("POST", "/api/v1/namespaces/default/pods", "", testPod(ds, "a", hash, true, time.Now().Add(-time.Hour)), http.StatusCreated, nil)
	eventually(t, "status computed", func() bool {
		return gather(t, reg)[`daemonlet_daemonset_status_number_ready{daemonset="web",namespace="default"}`] == 1
	})

	ds1 := func(name string) string { return name + `{daemonset="web",namespace="default"}` }
	cond := func(node, status string) string {
		return fmt.Sprintf("daemonlet_node_status_condition{condition=\"Ready\",node=%q,status=%q}", node, status)
	}
	want := map[string]float64{
		ds1("daemonlet_daemonset_status_desired_number_scheduled"): 2,
		ds1("daemonlet_daemonset_status_current_number_scheduled"): 1,
		ds1("daemonlet_daemonset_status_number_ready"):             1,
		ds1("daemonlet_daemonset_status_number_available"):         1,
		ds1("daemonlet_daemonset_status_number_unavailable"):       1,
		ds1("daemonlet_daemonset_status_number_misscheduled"):      0,
		ds1("daemonlet_daemonset_status_updated_number_scheduled"): 1,
		ds1("daemonlet_daemonset_status_observed_generation"):      1,
		ds1("daemonlet_daemonset_metadata_generation"):             1,
		cond("a", "true"): 1, cond("a", "false"): 0, cond("a", "unknown"): 0,
		cond("b", "true"): 0, cond("b", "false"): 1, cond("b", "unknown"): 0,
		`daemonlet_server_nodes{ready="true"}`:    1,
		`daemonlet_server_nodes{ready="false"}`:   1,
		`daemonlet_server_nodes{ready="unknown"}`: 0,
	}
	got := gather(t, reg)
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}

	// Deleted objects leave no stale series behind.
	h.must("DELETE", dsPath+"/web", "", nil, http.StatusOK, nil)
	h.must("DELETE", "/api/v1/nodes/b", "", nil, http.StatusOK, nil)
	if n := count(t, reg, "daemonlet_daemonset_status_desired_number_scheduled"); n != 0 {
		t.Errorf("%d series of a deleted DaemonSet", n)
	}
	if n := count(t, reg, "daemonlet_node_status_condition"); n != 3 {
		t.Errorf("%d node condition series for one node, want 3", n)
	}
}

// gather returns every gauge and counter series of reg as
// name{label="value",...} (labels sorted, as Gather sorts them) → value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch mf.GetType() {
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// count returns how many series the metric family name has in reg.
func count(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}
