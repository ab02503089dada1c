package client

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
)

func writeJSON(t *testing.T, w http.ResponseWriter, code int, v any) {
	t.Helper()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		t.Errorf("encoding response: %v", err)
	}
}

func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// deadAddress returns a loopback URL on which nothing listens.
func deadAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestClientPathsTokenAndBodies(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.RequestURI())
		if auth := r.Header.Get("Authorization"); auth != "Bearer s3cret" {
			t.Errorf("Authorization = %q", auth)
		}
		switch r.Method {
		case http.MethodPost, http.MethodPut:
			var ds appsv1.DaemonSet
			if err := json.NewDecoder(r.Body).Decode(&ds); err != nil {
				t.Errorf("decoding body: %v", err)
			}
			if ds.Kind != "DaemonSet" || ds.APIVersion != "apps/v1" {
				t.Errorf("body type meta = %q %q", ds.APIVersion, ds.Kind)
			}
			ds.ResourceVersion = "7"
			writeJSON(t, w, http.StatusOK, &ds)
		case http.MethodDelete:
			var opts metav1.DeleteOptions
			if err := json.NewDecoder(r.Body).Decode(&opts); err != nil {
				t.Errorf("decoding body: %v", err)
			}
			if opts.PropagationPolicy == nil || *opts.PropagationPolicy != metav1.DeletePropagationOrphan {
				t.Errorf("propagationPolicy = %v", opts.PropagationPolicy)
			}
			writeJSON(t, w, http.StatusOK, &metav1.Status{Status: metav1.StatusSuccess})
		default:
			if strings.HasSuffix(r.URL.Path, "/nodes") {
				writeJSON(t, w, http.StatusOK, &corev1.NodeList{Items: []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}}})
				return
			}
			writeJSON(t, w, http.StatusOK, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "kube-system"}})
		}
	}))
	defer srv.Close()
	c := newTestClient(t, Config{Servers: []string{srv.URL + "/"}, Token: "s3cret"})
	ctx := context.Background()

	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent"}}
	created, err := c.DaemonSets("ns1").Create(ctx, ds, WriteOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if created.ResourceVersion != "7" || ds.Kind != "" {
		t.Errorf("created rv %q; caller's kind changed to %q", created.ResourceVersion, ds.Kind)
	}
	if _, err := c.DaemonSets("ns1").Update(ctx, created, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DaemonSets("ns1").UpdateStatus(ctx, created); err != nil {
		t.Fatal(err)
	}
	orphan := metav1.DeletePropagationOrphan
	if err := c.DaemonSets("ns1").Delete(ctx, "agent", metav1.DeleteOptions{PropagationPolicy: &orphan}); err != nil {
		t.Fatal(err)
	}
	nodes, err := c.Nodes().List(ctx, ListOptions{LabelSelector: "a=b", FieldSelector: "metadata.name=n1"})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes = %v, %v", nodes, err)
	}
	if _, err := c.Pods("kube-system").Get(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"POST /apis/apps/v1/namespaces/ns1/daemonsets?dryRun=All",
		"PUT /apis/apps/v1/namespaces/ns1/daemonsets/agent",
		"PUT /apis/apps/v1/namespaces/ns1/daemonsets/agent/status",
		"DELETE /apis/apps/v1/namespaces/ns1/daemonsets/agent",
		"GET /api/v1/nodes?fieldSelector=metadata.name%3Dn1&labelSelector=a%3Db",
		"GET /api/v1/namespaces/kube-system/pods/p",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	if _, err := c.DaemonSets("").Get(ctx, "agent"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Get without namespace: %v, want invalid argument", err)
	}
	if _, err := c.DaemonSets("").Create(ctx, ds, WriteOptions{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Create without namespace: %v, want invalid argument", err)
	}
}

func TestClientStatusErrors(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "daemonsets"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/apis/apps/v1/namespaces/default/daemonsets/missing":
			st := apierrors.NewNotFound(gr, "missing").Status()
			writeJSON(t, w, http.StatusNotFound, &st)
		case "/apis/apps/v1/namespaces/default/daemonsets/stale":
			st := apierrors.NewConflict(gr, "stale", errors.New("the object has been modified")).Status()
			writeJSON(t, w, http.StatusConflict, &st)
		default:
			// A proxy's plain-text answer, not a Status.
			http.Error(w, "upstream broke", http.StatusBadGateway)
		}
	}))
	defer srv.Close()
	c := newTestClient(t, Config{Servers: []string{srv.URL}})
	ctx := context.Background()
	ds := c.DaemonSets("default")

	_, err := ds.Get(ctx, "missing")
	var se *apierrors.StatusError
	if !errors.As(err, &se) || !apierrors.IsNotFound(err) || err.Error() != `daemonsets.apps "missing" not found` {
		t.Errorf("Get missing: %T %v", err, err)
	}
	_, err = ds.Update(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "stale", ResourceVersion: "1"}}, WriteOptions{})
	if !apierrors.IsConflict(err) {
		t.Errorf("Update stale: %v, want Conflict", err)
	}
	_, err = ds.Get(ctx, "other")
	if !errors.As(err, &se) || se.ErrStatus.Code != http.StatusBadGateway || !strings.Contains(err.Error(), "upstream broke") {
		t.Errorf("Get other: %T %v, want a 502 StatusError", err, err)
	}
}

func TestClientWarnings(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Warning", `299 - "spec.template.spec.containers[0].livenessProbe.grpc: not supported"`)
		w.Header().Add("Warning", `299 - "first, with a comma", 299 - "second \"quoted\""`)
		w.Header().Add("Warning", `not a warning`)
		writeJSON(t, w, http.StatusOK, &appsv1.DaemonSetList{})
	}))
	defer srv.Close()
	var warnings []string
	c := newTestClient(t, Config{Servers: []string{srv.URL}, WarningHandler: func(s string) { warnings = append(warnings, s) }})
	if _, err := c.DaemonSets("").List(context.Background(), ListOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []string{"spec.template.spec.containers[0].livenessProbe.grpc: not supported", "first, with a comma", `second "quoted"`}
	if strings.Join(warnings, "|") != strings.Join(want, "|") {
		t.Errorf("warnings = %q, want %q", warnings, want)
	}
}

func TestClientFailover(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		writeJSON(t, w, http.StatusCreated, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	}))
	defer srv.Close()
	dead := deadAddress(t)
	c := newTestClient(t, Config{Servers: []string{dead, srv.URL}})
	ctx := context.Background()
	// A write whose connection was refused is safe to send elsewhere.
	if _, err := c.Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The client sticks to the server that answered: no more back-off.
	start := time.Now()
	if _, err := c.Nodes().Get(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= failoverBackoff {
		t.Errorf("second request took %v; the client went back to the dead server", d)
	}
	if hits.Load() != 2 {
		t.Errorf("live server hits = %d, want 2", hits.Load())
	}

	all := newTestClient(t, Config{Servers: []string{dead, deadAddress(t)}})
	_, err := all.Nodes().Get(ctx, "n1")
	if !errdefs.IsUnavailable(err) || strings.Contains(err.Error(), "\n") {
		t.Errorf("all servers down: %q, want one line classed unavailable", err)
	}
}

func TestClientTLSWithCertificateAuthority(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(t, w, http.StatusOK, map[string]string{"gitVersion": "v0.1.0"})
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, Config{Servers: []string{srv.URL}, CAFile: ca})
	info, err := c.ServerVersion(context.Background())
	if err != nil || info.GitVersion != "v0.1.0" {
		t.Fatalf("ServerVersion = %v, %v", info, err)
	}
	untrusting := newTestClient(t, Config{Servers: []string{srv.URL}})
	if _, err := untrusting.ServerVersion(context.Background()); err == nil {
		t.Error("a client without the CA trusted the test certificate")
	}
	if _, err := New(Config{Servers: []string{srv.URL}, CAFile: filepath.Join(t.TempDir(), "none")}); err == nil {
		t.Error("New accepted a missing CA file")
	}
}

func TestClientNewRejectsBadServers(t *testing.T) {
	for _, servers := range [][]string{nil, {"127.0.0.1:6443"}, {"ftp://x"}, {"https://"}} {
		if _, err := New(Config{Servers: servers}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("New(%q) = %v, want invalid argument", servers, err)
		}
	}
}

const (
	addedA    = `{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","resourceVersion":"5"}}}`
	modifiedA = `{"type":"MODIFIED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","resourceVersion":"6"}}}`
	bookmark  = `{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"9"}}}`
	deletedA  = `{"type":"DELETED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","resourceVersion":"10"}}}`
	expired   = `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 1 (5)","reason":"Expired","code":410}}`
)

func decodeAllEvents(r io.Reader) ([]string, error) {
	var got []string
	err := DecodeWatch(r, func(ev Event[corev1.Pod]) bool {
		got = append(got, string(ev.Type)+":"+ev.Object.Name+"@"+ev.Object.ResourceVersion)
		return true
	})
	return got, err
}

func TestClientDecodeWatch(t *testing.T) {
	tests := []struct {
		name    string
		stream  string
		want    string
		wantErr func(error) bool
	}{
		{name: "newline delimited", stream: addedA + "\n" + modifiedA + "\n" + bookmark + "\n" + deletedA + "\n",
			want: "ADDED:a@5 MODIFIED:a@6 BOOKMARK:@9 DELETED:a@10"},
		{name: "concatenated", stream: addedA + modifiedA, want: "ADDED:a@5 MODIFIED:a@6"},
		{name: "empty", stream: "", want: ""},
		{name: "expired", stream: addedA + "\n" + expired + "\n" + modifiedA, want: "ADDED:a@5",
			wantErr: func(err error) bool { return apierrors.IsResourceExpired(err) }},
		{name: "cut inside an event", stream: addedA + "\n" + modifiedA[:40], want: "ADDED:a@5", wantErr: errdefs.IsUnavailable},
		{name: "garbage", stream: addedA + "\nnot json", want: "ADDED:a@5", wantErr: errdefs.IsInvalidArgument},
		{name: "unknown type", stream: `{"type":"RENAMED","object":{}}`, wantErr: errdefs.IsInvalidArgument},
		{name: "no object", stream: `{"type":"ADDED"}`, wantErr: errdefs.IsInvalidArgument},
		{name: "error without status", stream: `{"type":"ERROR","object":{"kind":"Pod"}}`, wantErr: errdefs.IsInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One byte per read: events split across reads must still decode.
			got, err := decodeAllEvents(iotest.OneByteReader(strings.NewReader(tt.stream)))
			if strings.Join(got, " ") != tt.want {
				t.Errorf("events = %q, want %q", strings.Join(got, " "), tt.want)
			}
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !tt.wantErr(err) {
				t.Errorf("err = %v", err)
			}
		})
	}
	t.Run("emit stops", func(t *testing.T) {
		n := 0
		err := DecodeWatch(strings.NewReader(addedA+modifiedA), func(Event[corev1.Pod]) bool { n++; return false })
		if err != nil || n != 1 {
			t.Errorf("n = %d, err = %v", n, err)
		}
	})
}

func TestClientWatcher(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("watch") != "true" || q.Get("allowWatchBookmarks") != "true" || q.Get("fieldSelector") != "spec.nodeName=n1" {
			t.Errorf("query = %s", r.URL.RawQuery)
		}
		w.Header().Set("Content-Type", "application/json")
		switch q.Get("resourceVersion") {
		case "1":
			io.WriteString(w, expired+"\n")
		case "5":
			io.WriteString(w, modifiedA+"\n")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		default:
			io.WriteString(w, addedA+"\n"+bookmark+"\n")
		}
	}))
	defer srv.Close()
	defer close(release)
	c := newTestClient(t, Config{Servers: []string{srv.URL}, Timeout: time.Second})
	ctx := context.Background()
	opts := ListOptions{FieldSelector: "spec.nodeName=n1", AllowWatchBookmarks: true}

	w, err := c.Pods("").Watch(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for ev := range w.Events() {
		got = append(got, string(ev.Type))
	}
	if strings.Join(got, " ") != "ADDED BOOKMARK" || w.Err() != nil {
		t.Errorf("events %q, err %v", got, w.Err())
	}

	opts.ResourceVersion = "1"
	w, err = c.Pods("").Watch(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for range w.Events() {
		t.Error("event before the ERROR")
	}
	var se *apierrors.StatusError
	if !errors.As(w.Err(), &se) || se.ErrStatus.Code != http.StatusGone {
		t.Errorf("Err = %v, want a 410 StatusError", w.Err())
	}

	// A watch outlives Config.Timeout and ends cleanly on Stop.
	opts.ResourceVersion = "5"
	w, err = c.Pods("").Watch(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	ev := <-w.Events()
	if ev.Type != watch.Modified || ev.Object.Name != "a" {
		t.Errorf("event = %v", ev)
	}
	w.Stop()
	w.Stop()
	if _, open := <-w.Events(); open || w.Err() != nil {
		t.Errorf("after Stop: open %v, err %v", open, w.Err())
	}
}
