package server

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/store/cluster"
)

// fleetNodes are the fake agents' nodes; each has a token "tok-<node>".
var fleetNodes = []string{"a", "b", "c", "d", "e"}

// fleetHarness serves a store with tokens for the admin and every fleet
// node, and a private metrics registry.
func fleetHarness(t *testing.T, st cluster.Store, elector cluster.Elector) (*harness, *prometheus.Registry) {
	t.Helper()
	lines := adminToken + `,alice,1,"system:masters"` + "\n"
	for _, n := range fleetNodes {
		lines += fmt.Sprintf("tok-%s,system:node:%s,n-%s,system:nodes\n", n, n, n)
	}
	tokens, err := ParseTokenFile(strings.NewReader(lines))
	if err != nil {
		t.Fatal(err)
	}
	if st == nil {
		st = openStore(t, 0)
	}
	reg := prometheus.NewRegistry()
	return serveHarness(t, Config{Store: st, Tokens: tokens, Elector: elector, Metrics: reg}), reg
}

// fakeFleet plays the agents of fleetNodes for the test's DaemonSets: it
// runs what the pins say (the current template when unpinned), a new pod
// turning Ready one step after it started unless its revision is broken,
// and deletes the pods of revisions no longer pinned. It writes as the
// nodes, so its deletions are agents' deletions.
type fakeFleet struct {
	h      *harness
	nodes  []string
	broken map[string]bool
}

func newFakeFleet(h *harness, nodes []string) *fakeFleet {
	for _, n := range nodes {
		h.must("POST", "/api/v1/nodes", "tok-"+n, testNode(n), http.StatusCreated, nil)
	}
	return &fakeFleet{h: h, nodes: nodes, broken: map[string]bool{}}
}

func (f *fakeFleet) pins(node, ds string) []string {
	var n corev1.Node
	f.h.must("GET", "/api/v1/nodes/"+node, "tok-"+node, nil, http.StatusOK, &n)
	revs, err := api.ParseNodeRevisions(&n)
	if err != nil {
		f.h.t.Fatal(err)
	}
	return revs["default/"+ds]
}

func (f *fakeFleet) daemonSet(name string) *appsv1.DaemonSet {
	var ds appsv1.DaemonSet
	f.h.must("GET", dsPath+"/"+name, adminToken, nil, http.StatusOK, &ds)
	return &ds
}

// podsOn lists the node's pods of the DaemonSet.
func (f *fakeFleet) podsOn(node string, ds *appsv1.DaemonSet) []corev1.Pod {
	var l corev1.PodList
	f.h.must("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3D"+node, "tok-"+node, nil, http.StatusOK, &l)
	var out []corev1.Pod
	for _, p := range l.Items {
		if ref := metav1.GetControllerOf(&p); ref != nil && ref.UID == ds.UID {
			out = append(out, p)
		}
	}
	return out
}

// step is one pass of every agent over the named DaemonSets.
func (f *fakeFleet) step(names ...string) {
	for _, name := range names {
		ds := f.daemonSet(name)
		for _, node := range f.nodes {
			tok := "tok-" + node
			want := f.pins(node, name)
			if len(want) == 0 {
				want = []string{api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)}
			}
			pods := f.podsOn(node, ds)
			for _, h := range want {
				i := slices.IndexFunc(pods, func(p corev1.Pod) bool { return p.Labels[api.LabelControllerRevisionHash] == h })
				switch {
				case i < 0:
					p := testPod(ds, node, h, false, time.Now())
					p.Name = name + "-" + node + "-" + h
					f.h.must("POST", "/api/v1/namespaces/default/pods", tok, p, http.StatusCreated, nil)
				case !f.broken[h] && readyCondition(&pods[i]).Status != corev1.ConditionTrue:
					p := pods[i]
					p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
					f.h.must("PUT", "/api/v1/namespaces/default/pods/"+p.Name+"/status", tok, &p, http.StatusOK, nil)
				}
			}
			for _, p := range pods {
				if !slices.Contains(want, p.Labels[api.LabelControllerRevisionHash]) {
					f.h.must("DELETE", "/api/v1/namespaces/default/pods/"+p.Name, tok, nil, http.StatusOK, nil)
				}
			}
		}
	}
}

// unavailable counts the nodes without a Ready pod of the DaemonSet and
// those with two pins.
func (f *fakeFleet) unavailable(name string) (unavailable, surging int) {
	ds := f.daemonSet(name)
	for _, node := range f.nodes {
		if !slices.ContainsFunc(f.podsOn(node, ds), func(p corev1.Pod) bool {
			return readyCondition(&p).Status == corev1.ConditionTrue
		}) {
			unavailable++
		}
		if len(f.pins(node, name)) > 1 {
			surging++
		}
	}
	return unavailable, surging
}

// settled tells whether every node is pinned to the DaemonSet's current
// revision alone and runs one Ready pod of it.
func (f *fakeFleet) settled(name string) bool {
	ds := f.daemonSet(name)
	hash := api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
	for _, node := range f.nodes {
		pods := f.podsOn(node, ds)
		if !slices.Equal(f.pins(node, name), []string{hash}) || len(pods) != 1 ||
			pods[0].Labels[api.LabelControllerRevisionHash] != hash || readyCondition(&pods[0]).Status != corev1.ConditionTrue {
			return false
		}
	}
	return true
}

// run steps the fleet until done holds, calling each after every step;
// it fails after 30 s.
func (f *fakeFleet) run(t *testing.T, what string, done func() bool, each func(), names ...string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		f.step(names...)
		time.Sleep(4 * rolloutMinInterval)
		if each != nil {
			each()
		}
		if done() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func rollingDS(name, maxUnavailable, maxSurge string) *appsv1.DaemonSet {
	ds := testDaemonSet(name)
	mu, ms := intstr.Parse(maxUnavailable), intstr.Parse(maxSurge)
	ds.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &mu, MaxSurge: &ms}}
	return ds
}

// setImage changes the DaemonSet's template as kubectl set image does. The
// status and rollout controllers write the DaemonSet's status at any
// time, so a read-modify-write can lose the race with a 409, as it can
// against a real API server: like client-go's RetryOnConflict, it then
// re-reads and tries again.
func setImage(h *harness, name, image string) string {
	ds := updateDaemonSet(h, name, func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Containers[0].Image = image })
	return api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
}

// updateDaemonSet applies mutate to a fresh read of the DaemonSet and
// writes it, again on a conflict (the controllers write its status), as
// client-go's RetryOnConflict does; it returns the written DaemonSet.
func updateDaemonSet(h *harness, name string, mutate func(*appsv1.DaemonSet)) appsv1.DaemonSet {
	h.t.Helper()
	var ds appsv1.DaemonSet
	eventually(h.t, "an update of "+name+" without a conflict", func() bool {
		ds = appsv1.DaemonSet{}
		h.must("GET", dsPath+"/"+name, adminToken, nil, http.StatusOK, &ds)
		mutate(&ds)
		resp, data := h.do("PUT", dsPath+"/"+name, adminToken, &ds)
		switch resp.StatusCode {
		case http.StatusConflict:
			return false
		case http.StatusOK:
		default:
			h.t.Fatalf("PUT %s: status %d: %s", name, resp.StatusCode, data)
		}
		ds = appsv1.DaemonSet{}
		if err := json.Unmarshal(data, &ds); err != nil {
			h.t.Fatal(err)
		}
		return true
	})
	return ds
}

func revisions(h *harness) map[string]*appsv1.ControllerRevision {
	var l appsv1.ControllerRevisionList
	h.must("GET", "/apis/apps/v1/namespaces/default/controllerrevisions", adminToken, nil, http.StatusOK, &l)
	out := map[string]*appsv1.ControllerRevision{}
	for i := range l.Items {
		out[revisionHash(&l.Items[i])] = &l.Items[i]
	}
	return out
}

func TestRolloutMaxUnavailable(t *testing.T) {
	t.Parallel() // they mostly wait for the controller
	h, _ := fleetHarness(t, nil, nil)
	f := newFakeFleet(h, fleetNodes)
	h.must("POST", dsPath, adminToken, rollingDS("web", "2", "0"), http.StatusCreated, nil)
	f.run(t, "the first revision everywhere", func() bool { return f.settled("web") }, nil, "web")
	h1 := api.TemplateHash(&f.daemonSet("web").Spec.Template, nil)

	h2 := setImage(h, "web", "busybox:2")
	worst := 0
	f.run(t, "the rollout of busybox:2", func() bool { return f.settled("web") }, func() {
		u, s := f.unavailable("web")
		worst = max(worst, u)
		if s > 0 {
			t.Errorf("%d nodes surging with maxSurge 0", s)
		}
	}, "web")
	if worst > 2 {
		t.Errorf("%d nodes unavailable at once, maxUnavailable 2", worst)
	}
	if worst == 0 {
		t.Error("no node was ever unavailable: the rollout did not happen")
	}
	crs := revisions(h)
	if len(crs) != 2 || crs[h1].Revision != 1 || crs[h2].Revision != 2 {
		t.Fatalf("history %v", crs)
	}
	eventually(t, "Progressing NewRevisionAvailable and the revision marked fully available", func() bool {
		c := daemonSetCondition(f.daemonSet("web"), api.DaemonSetProgressing)
		return c != nil && c.Status == corev1.ConditionTrue && c.Reason == api.ReasonNewRevisionAvailable &&
			revisions(h)[h2].Annotations[AnnotationFullyAvailable] == "true"
	})
	eventually(t, "status: all 5 updated", func() bool {
		st := f.daemonSet("web").Status
		return st.UpdatedNumberScheduled == 5 && st.NumberAvailable == 5
	})
}

func TestRolloutSurge(t *testing.T) {
	t.Parallel() // they mostly wait for the controller
	h, reg := fleetHarness(t, nil, nil)
	f := newFakeFleet(h, fleetNodes)
	h.must("POST", dsPath, adminToken, rollingDS("web", "0", "1"), http.StatusCreated, nil)
	f.run(t, "the first revision everywhere", func() bool { return f.settled("web") }, nil, "web")

	// Every state the Nodes pass through, as a watch sees them in order,
	// not just those between steps: a new surge written before the end of
	// the one it replaces would overshoot maxSurge for a moment.
	ctx, cancel := context.WithCancel(context.Background())
	events, _ := h.watch(ctx, "/api/v1/nodes?watch=1", adminToken)
	maxSurging := make(chan int)
	go func() {
		surging, most := map[string]bool{}, 0
		for ev := range events {
			var n corev1.Node
			if err := json.Unmarshal(ev.Object.Raw, &n); err != nil {
				continue
			}
			revs, _ := api.ParseNodeRevisions(&n)
			surging[n.Name] = len(revs["default/web"]) > 1
			most = max(most, len(slices.DeleteFunc(slices.Collect(maps.Values(surging)), func(b bool) bool { return !b })))
		}
		maxSurging <- most
	}()

	setImage(h, "web", "busybox:2")
	sawSurge := false
	f.run(t, "the surge rollout", func() bool { return f.settled("web") }, func() {
		u, s := f.unavailable("web")
		if u > 0 {
			t.Errorf("%d nodes unavailable during a surge rollout", u)
		}
		if s > 1 {
			t.Errorf("%d nodes surging, maxSurge 1", s)
		}
		sawSurge = sawSurge || s == 1
	}, "web")
	if !sawSurge {
		t.Error("no node ever surged")
	}
	cancel()
	if most := <-maxSurging; most != 1 {
		t.Errorf("the Nodes' watch saw %d nodes surging at once, maxSurge 1", most)
	}
	eventually(t, "rollout gauges: 5 updated", func() bool {
		m := gather(t, reg)
		return m[`daemonlet_server_rollout_nodes{daemonset="web",namespace="default",state="updated"}`] == 5 &&
			m[`daemonlet_server_rollout_nodes{daemonset="web",namespace="default",state="pending"}`] == 0
	})
	if got := gather(t, reg)[`daemonlet_server_rollout_node_moves_total{daemonset="web",namespace="default"}`]; got != 5 {
		t.Errorf("node moves %v, want 5", got)
	}
	// Deleting the DaemonSet deletes its series and its history.
	h.must("DELETE", dsPath+"/web", adminToken, nil, http.StatusOK, nil)
	eventually(t, "series and history gone", func() bool {
		return count(t, reg, "daemonlet_server_rollout_nodes") == 0 && count(t, reg, "daemonlet_server_rollout_node_moves_total") == 0 &&
			len(revisions(h)) == 0
	})
}

func TestSurgeCountsUpdatedOnlyOnceTheOldPodIsGone(t *testing.T) {
	ds := testDaemonSet("web")
	ds.UID = "uid"
	long := time.Now().Add(-time.Hour)
	old, cur := testPod(ds, "a", "old", true, long), testPod(ds, "a", "cur", true, long)
	old.CreationTimestamp = metav1.NewTime(long)
	cur.Name, cur.CreationTimestamp = "web-a-cur", metav1.NewTime(long.Add(time.Minute))
	hash := api.TemplateHash(&ds.Spec.Template, nil)
	cur.Labels[api.LabelControllerRevisionHash] = hash
	nodes := []*corev1.Node{testNode("a")}
	if st, _ := computeDaemonSetStatus(ds, nodes, []*corev1.Pod{cur, old}, time.Now()); st.UpdatedNumberScheduled != 0 {
		t.Errorf("surging node counted updated: %+v", st)
	}
	if st, _ := computeDaemonSetStatus(ds, nodes, []*corev1.Pod{cur}, time.Now()); st.UpdatedNumberScheduled != 1 {
		t.Errorf("node with only the new pod not counted updated: %+v", st)
	}
}

func TestRolloutOnDelete(t *testing.T) {
	t.Parallel() // they mostly wait for the controller
	h, _ := fleetHarness(t, nil, nil)
	f := newFakeFleet(h, fleetNodes[:2])
	ds := testDaemonSet("web")
	ds.Spec.UpdateStrategy.Type = appsv1.OnDeleteDaemonSetStrategyType
	h.must("POST", dsPath, adminToken, ds, http.StatusCreated, nil)
	f.run(t, "the first revision everywhere", func() bool { return f.settled("web") }, nil, "web")
	h1 := f.pins("a", "web")[0]

	h2 := setImage(h, "web", "busybox:2")
	for range 3 {
		f.step("web")
		time.Sleep(4 * rolloutMinInterval)
	}
	for _, n := range f.nodes {
		if got := f.pins(n, "web"); !slices.Equal(got, []string{h1}) {
			t.Fatalf("OnDelete moved node %s to %v", n, got)
		}
	}
	// A user deletes a's pod: a moves at once, b stays.
	h.must("DELETE", "/api/v1/namespaces/default/pods/web-a-"+h1, adminToken, nil, http.StatusOK, nil)
	if got := f.pins("a", "web"); !slices.Equal(got, []string{h2}) {
		t.Fatalf("after the pod's deletion a is pinned to %v, want [%s]", got, h2)
	}
	for range 3 {
		f.step("web")
		time.Sleep(4 * rolloutMinInterval)
	}
	if got := f.pins("b", "web"); !slices.Equal(got, []string{h1}) {
		t.Fatalf("b moved to %v without its pod deleted", got)
	}
}

func TestRolloutDeadlineAndAutoRollback(t *testing.T) {
	t.Parallel() // they mostly wait for the controller
	h, reg := fleetHarness(t, nil, nil)
	f := newFakeFleet(h, fleetNodes[:3])
	for _, name := range []string{"stuck", "undo"} {
		ds := rollingDS(name, "1", "0")
		ds.Annotations = map[string]string{api.AnnotationProgressDeadline: "2", "kubernetes.io/change-cause": name + " v1"}
		if name == "undo" {
			ds.Annotations[api.AnnotationAutoRollback] = "true"
		}
		h.must("POST", dsPath, adminToken, ds, http.StatusCreated, nil)
	}
	f.run(t, "the first revisions everywhere", func() bool {
		return f.settled("stuck") && f.settled("undo") &&
			len(revisions(h)) == 2 && revisions(h)[f.pins("a", "undo")[0]].Annotations[AnnotationFullyAvailable] == "true"
	}, nil, "stuck", "undo")
	undo1 := f.pins("a", "undo")[0]

	stuck2, undo2 := setImage(h, "stuck", "busybox:broken"), setImage(h, "undo", "busybox:bad")
	f.broken[stuck2], f.broken[undo2] = true, true
	f.run(t, "the deadline, the rollback and the rollout back to v1", func() bool {
		return f.settled("undo") && f.pins("a", "undo")[0] == undo1
	}, nil, "stuck", "undo")

	c := daemonSetCondition(f.daemonSet("stuck"), api.DaemonSetProgressing)
	if c == nil || c.Status != corev1.ConditionFalse || c.Reason != api.ReasonProgressDeadlineExceeded {
		t.Errorf("stuck's Progressing condition %+v", c)
	}
	if u, _ := f.unavailable("stuck"); u != 1 {
		t.Errorf("stuck rollout: %d nodes unavailable, want the one moved", u)
	}
	if got := api.TemplateHash(&f.daemonSet("stuck").Spec.Template, nil); got != stuck2 {
		t.Errorf("stuck was rolled back without auto-rollback")
	}
	var evs corev1.EventList
	h.must("GET", "/api/v1/namespaces/default/events", adminToken, nil, http.StatusOK, &evs)
	reasons := map[string][]string{}
	for _, e := range evs.Items {
		reasons[e.InvolvedObject.Name] = append(reasons[e.InvolvedObject.Name], e.Type+"/"+e.Reason)
	}
	if want := []string{"Warning/" + api.ReasonProgressDeadlineExceeded}; !slices.Equal(reasons["stuck"], want) {
		t.Errorf("stuck's events %v, want %v", reasons["stuck"], want)
	}
	if want := []string{"Warning/" + api.ReasonProgressDeadlineExceeded, "Normal/" + api.ReasonRolledBack}; !slices.Equal(reasons["undo"], want) {
		t.Errorf("undo's events %v, want %v", reasons["undo"], want)
	}
	m := gather(t, reg)
	for name, want := range map[string][2]float64{"stuck": {1, 0}, "undo": {1, 1}} {
		labels := fmt.Sprintf(`{daemonset=%q,namespace="default"}`, name)
		failures, rollbacks := m["daemonlet_server_rollout_failures_total"+labels], m["daemonlet_server_rollbacks_total"+labels]
		if failures != want[0] || rollbacks != want[1] {
			t.Errorf("%s: failures %v rollbacks %v, want %v", name, failures, rollbacks, want)
		}
	}
	// History: rolling back 2→1 made revision 1 revision 3; the bad one is
	// marked failed.
	crs := revisions(h)
	byName := map[string]*appsv1.ControllerRevision{}
	for _, cr := range crs {
		byName[cr.Name] = cr
	}
	if cr := byName[api.RevisionName("undo", undo1)]; cr == nil || cr.Revision != 3 || cr.Annotations["kubernetes.io/change-cause"] != "undo v1" {
		t.Errorf("undo's first revision after the rollback: %+v", cr)
	}
	if cr := byName[api.RevisionName("undo", undo2)]; cr == nil || cr.Annotations[AnnotationRolloutFailed] != "true" {
		t.Errorf("undo's bad revision: %+v", cr)
	}
}

func TestRevisionHistoryLimitKeepsPinnedRevisions(t *testing.T) {
	t.Parallel() // they mostly wait for the controller
	h, _ := fleetHarness(t, nil, nil)
	f := newFakeFleet(h, fleetNodes[:2])
	ds := testDaemonSet("web")
	ds.Spec.UpdateStrategy.Type = appsv1.OnDeleteDaemonSetStrategyType
	ds.Spec.RevisionHistoryLimit = ptrTo(int32(1))
	h.must("POST", dsPath, adminToken, ds, http.StatusCreated, nil)
	f.run(t, "the first revision everywhere", func() bool { return f.settled("web") }, nil, "web")
	h1 := f.pins("a", "web")[0]
	// Under OnDelete every node stays on h1: h2 and h3 come and go, but
	// h1 must stay, pinned, beyond the limit of one old revision.
	h2 := setImage(h, "web", "busybox:2")
	eventually(t, "revision 2", func() bool { return revisions(h)[h2] != nil })
	h3 := setImage(h, "web", "busybox:3")
	eventually(t, "revision 3 and the unpinned revision 2 deleted", func() bool {
		crs := revisions(h)
		return crs[h3] != nil && crs[h2] == nil && crs[h1] != nil
	})
}

func TestNodeRevisionsRestriction(t *testing.T) {
	t.Parallel() // they mostly wait for the controller
	h, _ := fleetHarness(t, nil, nil)
	f := newFakeFleet(h, fleetNodes[:2])
	h.must("POST", dsPath, adminToken, rollingDS("web", "1", "0"), http.StatusCreated, nil)
	f.run(t, "pins", func() bool { return len(f.pins("a", "web")) == 1 }, nil, "web")

	var n corev1.Node
	h.must("GET", "/api/v1/nodes/a", "tok-a", nil, http.StatusOK, &n)
	stored := n.Annotations[api.AnnotationNodeRevisions]

	changed := n.DeepCopy()
	changed.Annotations[api.AnnotationNodeRevisions] = `{"default/web":["mine"]}`
	resp, data := h.do("PUT", "/api/v1/nodes/a", "tok-a", changed)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(statusOf(t, data).Message, api.AnnotationNodeRevisions) {
		t.Errorf("node changing its pins: %d %s", resp.StatusCode, data)
	}
	// A whole-object PUT without the annotation, or a status write, keeps it.
	wiped := n.DeepCopy()
	delete(wiped.Annotations, api.AnnotationNodeRevisions)
	wiped.ResourceVersion = ""
	wiped.Labels["extra"] = "x"
	h.must("PUT", "/api/v1/nodes/a", "tok-a", wiped, http.StatusOK, nil)
	status := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Status: n.Status}
	h.must("PUT", "/api/v1/nodes/a/status", "tok-a", status, http.StatusOK, nil)
	h.must("GET", "/api/v1/nodes/a", "tok-a", nil, http.StatusOK, &n)
	if n.Annotations[api.AnnotationNodeRevisions] != stored || n.Labels["extra"] != "x" {
		t.Errorf("after node writes: annotations %v labels %v, want pins %s kept", n.Annotations, n.Labels, stored)
	}
	// A node may not register with pins; an admin may set them.
	withPins := testNode("c")
	withPins.Annotations = map[string]string{api.AnnotationNodeRevisions: `{}`}
	h.must("POST", "/api/v1/nodes", "tok-c", withPins, http.StatusForbidden, nil)

	// Revisions: nodes read, only admins write.
	h.must("GET", "/apis/apps/v1/controllerrevisions", "tok-a", nil, http.StatusOK, nil)
	h.must("GET", "/apis/apps/v1/namespaces/default/controllerrevisions?watch=1&timeoutSeconds=1", "tok-a", nil, http.StatusOK, nil)
	cr, err := api.NewControllerRevision(f.daemonSet("web"), "x", 9)
	if err != nil {
		t.Fatal(err)
	}
	h.must("POST", "/apis/apps/v1/namespaces/default/controllerrevisions", "tok-a", cr, http.StatusForbidden, nil)
	// Events: a node reports about its own Node only, and reads none.
	ev := func(kind, name string) *corev1.Event {
		return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e-" + name, Namespace: "default"}, Reason: "Test",
			InvolvedObject: corev1.ObjectReference{Kind: kind, Name: name}}
	}
	h.must("POST", "/api/v1/namespaces/default/events", "tok-a", ev("Node", "a"), http.StatusCreated, nil)
	h.must("POST", "/api/v1/namespaces/default/events", "tok-a", ev("Node", "b"), http.StatusForbidden, nil)
	h.must("POST", "/api/v1/namespaces/default/events", "tok-a", ev("Pod", "web-b"), http.StatusForbidden, nil)
	h.must("GET", "/api/v1/namespaces/default/events", "tok-a", nil, http.StatusForbidden, nil)
	var evs corev1.EventList
	h.must("GET", "/api/v1/events?fieldSelector=involvedObject.name%3Da,type%3DNormal", adminToken, nil, http.StatusOK, &evs)
	if len(evs.Items) != 1 || evs.Items[0].InvolvedObject.Kind != "Node" {
		t.Errorf("events about a: %+v", evs.Items)
	}
}

func TestControllerRevisionValidation(t *testing.T) {
	h := newHarness(t, nil, nil, false)
	ds := testDaemonSet("web")
	h.must("POST", dsPath, "", ds, http.StatusCreated, ds)
	cr, err := api.NewControllerRevision(ds, "x", 1)
	if err != nil {
		t.Fatal(err)
	}
	crPath := "/apis/apps/v1/namespaces/default/controllerrevisions"
	empty := cr.DeepCopy()
	empty.Name, empty.Data.Raw = "empty", nil
	resp, data := h.do("POST", crPath, "", empty)
	if resp.StatusCode != http.StatusUnprocessableEntity || !hasCause(statusOf(t, data), "data") {
		t.Errorf("a revision without data: %d %s", resp.StatusCode, data)
	}
	cr.OwnerReferences = nil // an admin's own, which the controller leaves alone
	h.must("POST", crPath, "", cr, http.StatusCreated, cr)
	changed := cr.DeepCopy()
	changed.Data.Raw = []byte(`{"spec":{"template":{}}}`)
	resp, data = h.do("PUT", crPath+"/"+cr.Name, "", changed)
	if resp.StatusCode != http.StatusUnprocessableEntity || !hasCause(statusOf(t, data), "data") {
		t.Errorf("changing a revision's data: %d %s", resp.StatusCode, data)
	}
	changed = cr.DeepCopy()
	changed.Revision = 7
	h.must("PUT", crPath+"/"+cr.Name, "", changed, http.StatusOK, nil)
}

// TestRolloutLeaderFailover hands the leadership from a to b in the middle
// of a rollout: b resumes it from the pins, revisions and pods in the
// store.
func TestRolloutLeaderFailover(t *testing.T) {
	t.Parallel() // they mostly wait for the controller
	st := openStore(t, 0)
	ea, eb := newGrantedElector(), newGrantedElector()
	ea.grant()
	a, _ := fleetHarness(t, st, ea)
	b, _ := fleetHarness(t, st, eb)
	f := newFakeFleet(a, fleetNodes)
	a.must("POST", dsPath, adminToken, rollingDS("web", "1", "0"), http.StatusCreated, nil)
	f.run(t, "the first revision everywhere", func() bool { return f.settled("web") }, nil, "web")

	h2 := setImage(a, "web", "busybox:2")
	moved := func() int {
		n := 0
		for _, node := range f.nodes {
			if slices.Equal(f.pins(node, "web"), []string{h2}) {
				n++
			}
		}
		return n
	}
	f.run(t, "a moves the first nodes", func() bool { return moved() >= 2 }, nil, "web")
	ea.revoke()
	eb.grant()
	f.h = b
	f.run(t, "b finishes the rollout", func() bool { return f.settled("web") }, nil, "web")
	if got := revisions(b); len(got) != 2 || got[h2].Revision != 2 {
		t.Errorf("history after the failover: %v", got)
	}
}

// TestRolloutPinsManyNodes measures how long the pins of a DaemonSet new
// to many nodes take to be written (maxPinWritesPerSync per sync,
// pinWriters at once), and that each sync stays bounded.
func TestRolloutPinsManyNodes(t *testing.T) {
	nodes := 1500
	if testing.Short() {
		nodes = 300
	}
	h := newHarness(t, nil, nil, false)
	ctx := t.Context()
	for i := range nodes {
		if err := h.srv.createObject(ctx, h.srv.nodes, testNode(fmt.Sprintf("n%05d", i))); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	h.must("POST", dsPath, "", testDaemonSet("web"), http.StatusCreated, nil)
	var first time.Duration
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		pinned := 0
		ns, _, err := h.srv.list(ctx, h.srv.nodes, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range ns {
			if _, ok := o.(*corev1.Node).Annotations[api.AnnotationNodeRevisions]; ok {
				pinned++
			}
		}
		if pinned > 0 && first == 0 {
			first = time.Since(start)
		}
		if pinned == nodes {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d nodes pinned after 60s", pinned, nodes)
		}
	}
	t.Logf("%d nodes: first pin after %v, all pinned after %v", nodes, first, time.Since(start))
}

func TestCollectEvents(t *testing.T) {
	h := newHarness(t, nil, nil, false)
	ds := testDaemonSet("web")
	h.must("POST", dsPath, "", ds, http.StatusCreated, ds)
	h.srv.recordEvent(t.Context(), ds, "DaemonSet", corev1.EventTypeNormal, "Fresh", "kept")
	old := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "old", Namespace: "default"}, Type: corev1.EventTypeNormal,
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "n"}, LastTimestamp: metav1.NewTime(time.Now().Add(-eventTTL - time.Minute))}
	h.must("POST", "/api/v1/namespaces/default/events", "", old, http.StatusCreated, nil)
	if err := h.srv.collectEvents(t.Context()); err != nil {
		t.Fatal(err)
	}
	var evs corev1.EventList
	h.must("GET", "/api/v1/events", "", nil, http.StatusOK, &evs)
	if len(evs.Items) != 1 || evs.Items[0].Reason != "Fresh" || evs.Items[0].InvolvedObject.UID != ds.UID {
		t.Errorf("events after collection: %+v", evs.Items)
	}
}
