package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/store/cluster"
)

const (
	adminToken = "admin-token"
	node1Token = "node1-token"
	otherToken = "other-token"
)

const testTokenFile = `admin-token,alice,1,"system:masters"
node1-token,system:node:n1,2,system:nodes
other-token,bob,3
`

// harness is a server over real TCP on 127.0.0.1 with its controllers
// running.
type harness struct {
	t     *testing.T
	srv   *Server
	store cluster.Store
	http  *httptest.Server
}

// openStore opens a bbolt store in a temporary directory.
func openStore(t *testing.T, historyLimit int) *cluster.Bolt {
	t.Helper()
	st, err := cluster.OpenBolt(t.TempDir()+"/cluster.db", cluster.BoltOptions{HistoryLimit: historyLimit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// newHarness serves st (nil: a fresh store) over real TCP on 127.0.0.1.
func newHarness(t *testing.T, st cluster.Store, clk clock.Clock, auth bool) *harness {
	t.Helper()
	if st == nil {
		st = openStore(t, 0)
	}
	cfg := Config{Store: st, Clock: clk}
	if auth {
		a, err := ParseTokenFile(strings.NewReader(testTokenFile))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Tokens = a
	}
	return serveHarness(t, cfg)
}

// serveHarness runs a server with cfg (its Store set) over real TCP on
// 127.0.0.1 until the test ends.
func serveHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	st := cfg.Store
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, store: st, http: httptest.NewServer(srv.Handler())}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		h.http.Close()
	})
	return h
}

// do sends a request with an optional JSON body (a []byte is sent as is)
// and returns the response with its body read.
func (h *harness) do(method, path, token string, body any) (*http.Response, []byte) {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, h.http.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := h.http.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp, data
}

// must sends a request, checks the status code and decodes the answer.
func (h *harness) must(method, path, token string, body any, code int, out any) *http.Response {
	h.t.Helper()
	resp, data := h.do(method, path, token, body)
	if resp.StatusCode != code {
		h.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, code, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			h.t.Fatalf("%s %s: decoding %s: %v", method, path, data, err)
		}
	}
	return resp
}

// status decodes a metav1.Status answer.
func statusOf(t *testing.T, data []byte) *metav1.Status {
	t.Helper()
	var st metav1.Status
	if err := json.Unmarshal(data, &st); err != nil || st.Kind != "Status" {
		t.Fatalf("not a Status: %s (%v)", data, err)
	}
	return &st
}

func testDaemonSet(name string) *appsv1.DaemonSet {
	labels := map[string]string{"app": name}
	return &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1"}}},
			},
		},
	}
}

func testNode(name string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
		}}},
	}
}

// testPod is a daemon pod of ds on node, Ready or not.
func testPod(ds *appsv1.DaemonSet, node, hash string, ready bool, readySince time.Time) *corev1.Pod {
	labels := map[string]string{"controller-revision-hash": hash}
	for k, v := range ds.Spec.Template.Labels {
		labels[k] = v
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: ds.Name + "-" + node, Namespace: "default", Labels: labels},
		Spec:       *ds.Spec.Template.Spec.DeepCopy(),
	}
	p.Spec.NodeName = node
	if ds.UID != "" {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID, Controller: ptrTo(true)}}
	}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: metav1.NewTime(readySince)}}
	return p
}

func ptrTo[T any](v T) *T { return &v }

const dsPath = "/apis/apps/v1/namespaces/default/daemonsets"

func TestDaemonSetCRUD(t *testing.T) {
	h := newHarness(t, nil, nil, false)
	var created appsv1.DaemonSet
	h.must("POST", dsPath, "", testDaemonSet("web"), http.StatusCreated, &created)
	if created.UID == "" || created.Generation != 1 || created.CreationTimestamp.IsZero() || created.ResourceVersion == "" || created.Namespace != "default" {
		t.Fatalf("created: uid %q generation %d created %v rv %q ns %q", created.UID, created.Generation, created.CreationTimestamp, created.ResourceVersion, created.Namespace)
	}
	if created.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		t.Errorf("not defaulted: %+v", created.Spec.UpdateStrategy)
	}
	resp, data := h.do("POST", dsPath, "", testDaemonSet("web"))
	if resp.StatusCode != http.StatusConflict || statusOf(t, data).Reason != metav1.StatusReasonAlreadyExists {
		t.Errorf("duplicate create: %d %s", resp.StatusCode, data)
	}

	// The controllers write the status of the new DaemonSet; then a GET
	// returns what the last write stored.
	settled := settledDaemonSet(h, "web")
	var got appsv1.DaemonSet
	h.must("GET", dsPath+"/web", "", nil, http.StatusOK, &got)
	if got.UID != created.UID || got.ResourceVersion != settled.ResourceVersion {
		t.Errorf("get: uid %q rv %q, want %q %q", got.UID, got.ResourceVersion, created.UID, settled.ResourceVersion)
	}

	// A spec change bumps generation; status in a main PUT is ignored.
	upd := got.DeepCopy()
	upd.Spec.Template.Spec.Containers[0].Image = "busybox:2"
	upd.Status.NumberReady = 7
	var updated appsv1.DaemonSet
	h.must("PUT", dsPath+"/web", "", upd, http.StatusOK, &updated)
	if updated.Generation != 2 || updated.Status.NumberReady == 7 || updated.UID != created.UID {
		t.Errorf("update: generation %d numberReady %d uid %q", updated.Generation, updated.Status.NumberReady, updated.UID)
	}
	// The old resourceVersion is stale now.
	resp, data = h.do("PUT", dsPath+"/web", "", upd)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(statusOf(t, data).Message, "the object has been modified") {
		t.Errorf("stale update: %d %s", resp.StatusCode, data)
	}
	// An empty resourceVersion is unconditional; a label-only change keeps
	// the generation.
	upd = updated.DeepCopy()
	upd.ResourceVersion = ""
	upd.Labels = map[string]string{"tier": "x"}
	h.must("PUT", dsPath+"/web", "", upd, http.StatusOK, &updated)
	if updated.Generation != 2 || updated.Labels["tier"] != "x" {
		t.Errorf("label update: generation %d labels %v", updated.Generation, updated.Labels)
	}
	updated = settledDaemonSet(h, "web") // the status of generation 2

	// The selector is immutable.
	upd = updated.DeepCopy()
	upd.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}}
	upd.Spec.Template.Labels = map[string]string{"app": "other"}
	resp, data = h.do("PUT", dsPath+"/web", "", upd)
	if st := statusOf(t, data); resp.StatusCode != http.StatusUnprocessableEntity || !hasCause(st, "spec.selector") {
		t.Errorf("selector change: %d %s", resp.StatusCode, data)
	}

	// Status updates go through /status only and leave the spec alone.
	upd = updated.DeepCopy()
	upd.Status.NumberReady = 3
	upd.Spec.MinReadySeconds = 99
	var afterStatus appsv1.DaemonSet
	h.must("PUT", dsPath+"/web/status", "", upd, http.StatusOK, &afterStatus)
	if afterStatus.Status.NumberReady != 3 || afterStatus.Spec.MinReadySeconds != 0 || afterStatus.Generation != 2 {
		t.Errorf("status update: %+v minReady %d generation %d", afterStatus.Status, afterStatus.Spec.MinReadySeconds, afterStatus.Generation)
	}

	// Delete, then it is gone.
	h.must("DELETE", dsPath+"/web", "", nil, http.StatusOK, nil)
	resp, data = h.do("GET", dsPath+"/web", "", nil)
	if resp.StatusCode != http.StatusNotFound || !apierrors.IsNotFound(&apierrors.StatusError{ErrStatus: *statusOf(t, data)}) {
		t.Errorf("get after delete: %d %s", resp.StatusCode, data)
	}
}

func hasCause(st *metav1.Status, field string) bool {
	if st.Details == nil {
		return false
	}
	for _, c := range st.Details.Causes {
		if c.Field == field {
			return true
		}
	}
	return false
}

func TestCreateErrors(t *testing.T) {
	h := newHarness(t, nil, nil, false)
	bad := testDaemonSet("bad")
	bad.Spec.Template.Spec.Containers[0].Image = ""
	resp, data := h.do("POST", dsPath, "", bad)
	if st := statusOf(t, data); resp.StatusCode != http.StatusUnprocessableEntity || st.Reason != metav1.StatusReasonInvalid ||
		!hasCause(st, "spec.template.spec.containers[0].image") {
		t.Errorf("invalid: %d %s", resp.StatusCode, data)
	}
	noName := testDaemonSet("")
	resp, data = h.do("POST", dsPath, "", noName)
	if st := statusOf(t, data); resp.StatusCode != http.StatusUnprocessableEntity || !hasCause(st, "metadata.name") {
		t.Errorf("no name: %d %s", resp.StatusCode, data)
	}
	resp, data = h.do("POST", dsPath, "", []byte(`{"metadata": {`))
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed JSON: %d %s", resp.StatusCode, data)
	}
	otherNS := testDaemonSet("x")
	otherNS.Namespace = "kube-system"
	if resp, data = h.do("POST", dsPath, "", otherNS); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("namespace mismatch: %d %s", resp.StatusCode, data)
	}
	big := testDaemonSet("big")
	big.Annotations = map[string]string{"x": strings.Repeat("a", 4<<20)}
	resp, data = h.do("POST", dsPath, "", big)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("4 MiB body: %d %.200s", resp.StatusCode, data)
	}
}

func TestWarningsAndDryRun(t *testing.T) {
	h := newHarness(t, nil, nil, false)
	ds := testDaemonSet("warn")
	ds.Spec.Template.Spec.ShareProcessNamespace = ptrTo(true)
	var out appsv1.DaemonSet
	resp := h.must("POST", dsPath+"?dryRun=All", "", ds, http.StatusCreated, &out)
	w := resp.Header.Values("Warning")
	if len(w) != 1 || !strings.HasPrefix(w[0], `299 - "spec.template.spec.shareProcessNamespace: `) {
		t.Errorf("Warning headers: %q", w)
	}
	if out.UID == "" || out.Generation != 1 {
		t.Errorf("dry run answer: uid %q generation %d", out.UID, out.Generation)
	}
	if st := h.store.Revision(); st != 0 {
		t.Errorf("dry run wrote to the store: revision %d", st)
	}
	h.must("GET", dsPath+"/warn", "", nil, http.StatusNotFound, nil)
}

// watchFrames opens a watch and returns a channel of its decoded frames.
func (h *harness) watch(ctx context.Context, path, token string) (<-chan metav1.WatchEvent, *http.Response) {
	h.t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", h.http.URL+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := h.http.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	ch := make(chan metav1.WatchEvent, 100)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 8<<20)
		for sc.Scan() {
			var ev metav1.WatchEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				ch <- ev
			}
		}
	}()
	return ch, resp
}

func next(t *testing.T, ch <-chan metav1.WatchEvent) (string, metav1.PartialObjectMetadata) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch ended")
		}
		var meta metav1.PartialObjectMetadata
		if err := json.Unmarshal(ev.Object.Raw, &meta); err != nil {
			t.Fatal(err)
		}
		return ev.Type, meta
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event within 5s")
	}
	panic("unreachable")
}

// settledDaemonSet waits until the controllers have written the status of
// the DaemonSet's current generation, on a fleet where its rollout has
// nothing to wait for, and returns it. The rollout controller (its
// revision, then the Progressing condition) and the status controller
// (observedGeneration) write a DaemonSet on their own, as
// kube-controller-manager does; once both have, it stays as it is until
// the test changes it.
func settledDaemonSet(h *harness, name string) appsv1.DaemonSet {
	h.t.Helper()
	var ds appsv1.DaemonSet
	eventually(h.t, "the controllers' status of "+name, func() bool {
		ds = appsv1.DaemonSet{}
		h.must("GET", dsPath+"/"+name, "", nil, http.StatusOK, &ds)
		c := daemonSetCondition(&ds, api.DaemonSetProgressing)
		return ds.Status.ObservedGeneration == ds.Generation && c != nil && c.Reason == api.ReasonNewRevisionAvailable
	})
	return ds
}

func TestListAndWatch(t *testing.T) {
	h := newHarness(t, nil, nil, false)
	// Once settled, a's write is the store's last.
	h.must("POST", dsPath, "", testDaemonSet("a"), http.StatusCreated, nil)
	a := settledDaemonSet(h, "a")
	var list appsv1.DaemonSetList
	h.must("GET", "/apis/apps/v1/daemonsets", "", nil, http.StatusOK, &list)
	if len(list.Items) != 1 || list.ResourceVersion != a.ResourceVersion || list.Kind != "DaemonSetList" {
		t.Fatalf("list: %d items rv %q kind %q", len(list.Items), list.ResourceVersion, list.Kind)
	}
	// Changes made before the watch starts are replayed from its version.
	h.must("POST", dsPath, "", testDaemonSet("b"), http.StatusCreated, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, _ := h.watch(ctx, "/apis/apps/v1/daemonsets?watch=1&resourceVersion="+list.ResourceVersion, "")
	upd := a.DeepCopy()
	upd.Labels = map[string]string{"x": "y"}
	h.must("PUT", dsPath+"/a", "", upd, http.StatusOK, nil)
	h.must("DELETE", dsPath+"/b", "", nil, http.StatusOK, nil)
	// The controllers may write b's status before it is deleted: such a
	// MODIFIED b keeps b's first generation, and is theirs, not the test's.
	var got []string
	for len(got) < 3 {
		typ, meta := next(t, ch)
		if typ == "MODIFIED" && meta.Name == "b" && meta.Generation == 1 {
			continue
		}
		got = append(got, typ+" "+meta.Name)
	}
	if want := []string{"ADDED b", "MODIFIED a", "DELETED b"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events %v, want %v", got, want)
	}
	// resourceVersion 0: ADDED for what exists, then changes; the label
	// selector filters.
	ch0, _ := h.watch(ctx, dsPath+"?watch=true&labelSelector=x%3Dy", "")
	if typ, meta := next(t, ch0); typ != "ADDED" || meta.Name != "a" {
		t.Errorf("initial event %s %s", typ, meta.Name)
	}
	h.must("POST", dsPath, "", testDaemonSet("c"), http.StatusCreated, nil) // filtered out
	h.must("DELETE", dsPath+"/a", "", nil, http.StatusOK, nil)
	if typ, meta := next(t, ch0); typ != "DELETED" || meta.Name != "a" {
		t.Errorf("filtered event %s %s", typ, meta.Name)
	}
}

func TestWatchExpired(t *testing.T) {
	// The history is compacted before the server starts, so neither its
	// ring nor the store can replay from revision 1.
	st := openStore(t, 3)
	for i := range 6 {
		if _, err := st.Create(context.Background(), fmt.Sprintf("/daemonsets/default/d%d", i), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	h := newHarness(t, st, nil, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, resp := h.watch(ctx, dsPath+"?watch=1&resourceVersion=1", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	select {
	case ev := <-ch:
		st := statusOf(t, ev.Object.Raw)
		if ev.Type != "ERROR" || st.Code != http.StatusGone || st.Reason != metav1.StatusReasonExpired {
			t.Errorf("event %s %+v", ev.Type, st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no ERROR event")
	}
	if _, open := <-ch; open {
		t.Error("the stream did not end after the ERROR event")
	}
}

// A list by an exact metadata.name reads only the keys under the name's
// own key; the match must still be exact, so n1 does not bring n10.
func TestListByExactName(t *testing.T) {
	h := newHarness(t, nil, nil, false)
	for _, name := range []string{"n1", "n10", "n2"} {
		h.must("POST", "/api/v1/nodes", "", &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, http.StatusCreated, nil)
	}
	for sel, want := range map[string][]string{
		"metadata.name=n1":  {"n1"},
		"metadata.name=n10": {"n10"},
		"metadata.name=n3":  nil,
		"metadata.name!=n1": {"n10", "n2"},
	} {
		var l corev1.NodeList
		h.must("GET", "/api/v1/nodes?fieldSelector="+url.QueryEscape(sel), "", nil, http.StatusOK, &l)
		var got []string
		for _, n := range l.Items {
			got = append(got, n.Name)
		}
		if !slices.Equal(got, want) || l.ResourceVersion == "" {
			t.Errorf("%s: %v (resourceVersion %q), want %v", sel, got, l.ResourceVersion, want)
		}
	}
}
