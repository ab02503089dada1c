package main

// A real Prometheus (Debian's prometheus package) scrapes a real agent,
// and PromQL over its HTTP API sees what the agent runs.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/internal/ctdtest"
)

// startPrometheus runs Prometheus scraping the agent at target every
// second, with its storage in a temp dir, and returns its 127.0.0.1
// address. It is killed by pid when the test ends.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	return startPrometheusJobs(t, fmt.Sprintf(`  - job_name: daemonlet-agent
    static_configs: [{targets: [%q]}]
`, target))
}

// startPrometheusJobs runs Prometheus with jobs (YAML list items of
// scrape_configs) scraped every second.
func startPrometheusJobs(t *testing.T, jobs string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		ctdtest.Unavailable(t, "prometheus (Debian package prometheus, or make deps): %v", err)
	}
	dir := t.TempDir()
	cfg := "global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n" + jobs
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var logs bytes.Buffer
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
	)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	return addr
}

// promQuery evaluates expr on Prometheus at addr and returns the values of
// the resulting vector.
func promQuery(addr, expr string) ([]float64, error) {
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" || r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: %s %s (%s)", expr, r.Status, r.Error, r.Data.ResultType)
	}
	var vals []float64
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", expr, s.Value, err)
		}
		vals = append(vals, v)
	}
	return vals, nil
}

// waitQuery polls expr until it returns exactly one sample that ok accepts.
func waitQuery(t *testing.T, addr, expr string, ok func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var vals []float64
	var err error
	for time.Now().Before(deadline) {
		vals, err = promQuery(addr, expr)
		if err == nil && len(vals) == 1 && ok(vals[0]) {
			return vals[0]
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("PromQL %s: %v (error %v)", expr, vals, err)
	return 0
}

func equals(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

// TestPrometheusScrapesAgent runs a pod on a real agent, has Prometheus
// scrape the agent's --metrics-bind-address, and checks with PromQL the
// build info, the pod's phase and readiness, the desired count, the start
// SLI, the file source's last sync time and the probes; the raw scrape
// passes promtool check metrics.
func TestPrometheusScrapesAgent(t *testing.T) {
	n := newNode(t, "")
	metricsAddr := n.metricsAddr
	prom := startPrometheus(t, metricsAddr)
	started := time.Now()
	n.manifest("plain.yaml", plainDS)
	n.start()
	n.waitPods(90*time.Second, "plain to run", func(p map[string]agent.PodStatus) bool {
		q, ok := p["plain"]
		return running(q, ok)
	})

	resp, err := http.Get("http://" + metricsAddr + agent.PathReadyz)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz with the pod running: %s", resp.Status)
	}

	waitQuery(t, prom, `up{job="daemonlet-agent"}`, equals(1))
	waitQuery(t, prom, `daemonlet_build_info{version!=""}`, equals(1))
	waitQuery(t, prom, `daemonlet_desired_pods`, equals(1))
	waitQuery(t, prom, `daemonlet_pods{phase="Running",ready="true"}`, equals(1))
	waitQuery(t, prom, `sum(daemonlet_pods)`, equals(1))
	waitQuery(t, prom, `daemonlet_pod_status_ready{namespace="default",daemonset="plain"}`, equals(1))
	waitQuery(t, prom, `daemonlet_pod_container_status_restarts_total{daemonset="plain",container="main"}`, equals(0))
	waitQuery(t, prom, `sum(daemonlet_pods_back_off)`, equals(0))
	waitQuery(t, prom, `daemonlet_pod_start_sli_duration_seconds_count`, equals(1))
	// The pod started on this machine within the test's own time.
	waitQuery(t, prom, `daemonlet_pod_start_total_duration_seconds_sum`, func(v float64) bool {
		return v > 0 && v < time.Since(started).Seconds()
	})
	waitQuery(t, prom, `daemonlet_source_synced{source="file"}`, equals(1))
	waitQuery(t, prom, `time() - daemonlet_source_last_sync_timestamp_seconds{source="file"}`, func(v float64) bool { return v >= 0 && v < 60 })
	waitQuery(t, prom, `daemonlet_source_errors_total{source="file"}`, equals(0))
	waitQuery(t, prom, `sum(daemonlet_sync_duration_seconds_count) > 0`, func(v float64) bool { return v > 0 })
	waitQuery(t, prom, `process_resident_memory_bytes{job="daemonlet-agent"} > 0`, func(v float64) bool { return v > 0 })
	waitQuery(t, prom, `go_goroutines{job="daemonlet-agent"} > 0`, func(v float64) bool { return v > 0 })

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		ctdtest.Unavailable(t, "promtool (Debian package prometheus, or make deps): %v", err)
	}
	resp, err = http.Get("http://" + metricsAddr + agent.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = bytes.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestPrometheusScrapesServer has Prometheus scrape a real `daemonlet
// server` with a bearer token file, as deploy/prometheus/prometheus.yml
// does, and checks with PromQL the DaemonSet and node gauges once a
// DaemonSet runs on one agent, and the request metrics.
func TestPrometheusScrapesServer(t *testing.T) {
	s := newServer(t, "prom-node")
	s.start()
	tokenFile := filepath.Join(t.TempDir(), "prometheus-token")
	if err := os.WriteFile(tokenFile, []byte(adminToken), 0o600); err != nil {
		t.Fatal(err)
	}
	prom := startPrometheusJobs(t, fmt.Sprintf(`  - job_name: daemonlet-server
    authorization: {credentials_file: %q}
    static_configs: [{targets: [%q]}]
`, tokenFile, s.addr))
	fleetNode(t, s, "prom-node")
	manifest := filepath.Join(t.TempDir(), "plain.yaml")
	if err := os.WriteFile(manifest, []byte(plainDS), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := s.cli("apply", "-f", manifest); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	s.waitDS("default", "plain", 1, 1, 1)

	waitQuery(t, prom, `up{job="daemonlet-server"}`, equals(1))
	ds := `{job="daemonlet-server",namespace="default",daemonset="plain"}`
	for _, name := range []string{"desired_number_scheduled", "current_number_scheduled", "number_ready", "number_available", "updated_number_scheduled"} {
		waitQuery(t, prom, "daemonlet_daemonset_status_"+name+ds, equals(1))
	}
	waitQuery(t, prom, "daemonlet_daemonset_status_number_misscheduled"+ds, equals(0))
	waitQuery(t, prom, `daemonlet_node_status_condition{node="prom-node",condition="Ready",status="true"}`, equals(1))
	waitQuery(t, prom, `daemonlet_server_nodes{ready="true"}`, equals(1))
	// The agent's watches of DaemonSets, its Node and its pods.
	waitQuery(t, prom, `sum(daemonlet_server_watches)`, func(v float64) bool { return v >= 2 })
	waitQuery(t, prom, `sum(daemonlet_server_requests_total{verb="POST",resource="daemonsets",code="201"})`, equals(1))
	waitQuery(t, prom, `sum(daemonlet_server_request_duration_seconds_count{verb="PUT",resource="nodes",subresource="status"}) > 0`, func(v float64) bool { return v > 0 })
	// The alert rules' expressions see a healthy DaemonSet.
	if vals, err := promQuery(prom, `daemonlet_daemonset_status_updated_number_scheduled != daemonlet_daemonset_status_desired_number_scheduled`); err != nil || len(vals) != 0 {
		t.Errorf("rollout-stuck expression: %v (error %v)", vals, err)
	}
}
