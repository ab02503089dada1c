package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
)

// fakeStatus is a StatusProvider with fixed answers.
type fakeStatus struct {
	healthy error
	pods    []PodStatus
	sources []SourceStatus
}

func (f *fakeStatus) Healthy() error          { return f.healthy }
func (f *fakeStatus) Pods() []PodStatus       { return f.pods }
func (f *fakeStatus) Sources() []SourceStatus { return f.sources }

var statusNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func statusPods() []PodStatus {
	return []PodStatus{
		{Namespace: "kube-system", Name: "fluentd-node1", UID: "u1", DaemonSet: "fluentd", Source: SourceFile, Revision: "6d4b8f9c7",
			Phase: corev1.PodRunning, State: "Running", Ready: 1, Total: 1, Restarts: 0, StartTime: statusNow.Add(-(52*time.Hour + 10*time.Minute))},
		{Namespace: "default", Name: "exporter-node1", UID: "u2", DaemonSet: "exporter", Source: SourceHTTP, Revision: "5f7",
			Phase: corev1.PodPending, State: "BackOff", Ready: 0, Total: 2, Restarts: 12, StartTime: statusNow.Add(-5 * time.Second), Reason: "CrashLoopBackOff"},
		{Namespace: "default", Name: "new-node1", DaemonSet: "new"},
	}
}

func TestStatusTable(t *testing.T) {
	var b bytes.Buffer
	if err := PrintPods(&b, statusPods(), OutputTable, statusNow); err != nil {
		t.Fatal(err)
	}
	want := `NAME             DAEMONSET   PHASE     READY   RESTARTS   AGE         REVISION    REASON
fluentd-node1    fluentd     Running   1/1     0          2d4h        6d4b8f9c7   <none>
exporter-node1   exporter    Pending   0/2     12         5s          5f7         CrashLoopBackOff
new-node1        new         <none>    0/0     0          <unknown>   <none>      <none>
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	if err := PrintPods(&b, statusPods()[:1], OutputWide, statusNow); err != nil {
		t.Fatal(err)
	}
	want = `NAMESPACE     NAME            DAEMONSET   PHASE     READY   RESTARTS   AGE    REVISION    REASON   STATE     SOURCE   UID
kube-system   fluentd-node1   fluentd     Running   1/1     0          2d4h   6d4b8f9c7   <none>   Running   file     u1
`
	if b.String() != want {
		t.Errorf("wide table:\n%s\nwant:\n%s", b.String(), want)
	}

	if err := PrintPods(&b, nil, "xml", statusNow); !errdefs.IsInvalidArgument(err) {
		t.Errorf("unknown format: err = %v", err)
	}
}

func TestStatusJSONAndYAML(t *testing.T) {
	var b bytes.Buffer
	if err := PrintPods(&b, statusPods(), OutputJSON, statusNow); err != nil {
		t.Fatal(err)
	}
	var back []PodStatus
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || len(back) != 3 || back[1].Reason != "CrashLoopBackOff" {
		t.Errorf("json round trip: %v %+v", err, back)
	}
	b.Reset()
	if err := PrintPods(&b, statusPods(), OutputYAML, statusNow); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "Name: fluentd-node1") {
		t.Errorf("yaml:\n%s", b.String())
	}
}

func TestStatusHandlerAndFetchPods(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, dir+"/bad.yaml", badDSYAML("x"))
	fileSrc := newTestFileSource(t, dir, time.Hour)
	fileSrc.scan()
	fake := &fakeStatus{
		pods: statusPods(),
		sources: []SourceStatus{
			{Name: SourceFile, Synced: true, DaemonSets: 0},
			{Name: SourceHTTP, Err: errors.New("GET http://x: 503"), Conflicts: []string{"DaemonSet default/a from source \"http\" ignored"}},
		},
	}
	srv := httptest.NewServer(NewStatusHandler(fake, []Source{fileSrc}))
	t.Cleanup(srv.Close)

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get(PathHealthz); code != 200 || body != "ok\n" {
		t.Errorf("healthy: %d %q", code, body)
	}
	fake.healthy = errors.New("agent sync loop last ran 1m0s ago")
	if code, body := get(PathHealthz); code != 500 || !strings.Contains(body, "last ran 1m0s ago") {
		t.Errorf("unhealthy: %d %q", code, body)
	}

	code, body := get(PathSources)
	var infos []SourceInfo
	if err := json.Unmarshal([]byte(body), &infos); code != 200 || err != nil || len(infos) != 2 {
		t.Fatalf("/sources: %d %v %s", code, err, body)
	}
	if f := infos[0]; f.Name != SourceFile || !f.Synced || f.Location != dir || f.LastSync.IsZero() || len(f.FileErrors) != 1 || !strings.Contains(f.FileErrors[0].Error, "containers[0].image") {
		t.Errorf("file source info = %+v", f)
	}
	if h := infos[1]; h.Name != SourceHTTP || h.AgentError == "" || len(h.Conflicts) != 1 {
		t.Errorf("http source info = %+v", h)
	}

	pods, err := FetchPods(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
	if err != nil || len(pods) != 3 || pods[0].Name != "fluentd-node1" || !pods[0].StartTime.Equal(statusPods()[0].StartTime) {
		t.Errorf("FetchPods = %+v, %v", pods, err)
	}
	if _, err := FetchPods(context.Background(), srv.URL+"/"); err != nil {
		t.Errorf("FetchPods with a URL: %v", err)
	}
}

func TestStatusFetchPodsNoAgent(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	if _, err := FetchPods(context.Background(), addr); !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "agent") {
		t.Errorf("err = %v, want unavailable naming the agent", err)
	}
}
