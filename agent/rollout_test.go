package agent

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/runtime"
)

// rollout is a DaemonSet in two versions, v1 and v2, with their hashes and
// the ControllerRevision of v1, as the server would hold them.
type rollout struct {
	v1, v2         *appsv1.DaemonSet
	h1, h2         string
	crs            map[string]*appsv1.ControllerRevision // by namespace/name
	cr1            *appsv1.ControllerRevision
	name, podName1 string
}

func newRollout(t *testing.T, name string) *rollout {
	t.Helper()
	r := &rollout{v1: daemonSet(name, ctr("app", "v1")), v2: daemonSet(name, ctr("app", "v2")), name: name, podName1: podName(name, testNode)}
	r.h1 = api.TemplateHash(&r.v1.Spec.Template, nil)
	r.h2 = api.TemplateHash(&r.v2.Spec.Template, nil)
	cr, err := api.NewControllerRevision(r.v1, r.h1, 1)
	if err != nil {
		t.Fatal(err)
	}
	r.cr1 = cr
	r.crs = map[string]*appsv1.ControllerRevision{cr.Namespace + "/" + cr.Name: cr}
	return r
}

// pinned is v2 as the server source delivers it when the node's pins are
// hashes.
func (r *rollout) pinned(t *testing.T, hashes ...string) *appsv1.DaemonSet {
	t.Helper()
	ds := r.v2.DeepCopy()
	if unknown := pinRevisions(ds, hashes, r.crs); len(unknown) > 0 {
		t.Fatalf("pins %v unresolved: %v", hashes, unknown)
	}
	return ds
}

// runningV1 starts an agent whose server source is the test, hands it
// the rollout's v1 and waits until its pod runs; it returns that pod and
// its container.
func runningV1(t *testing.T, name string) (*harness, *rollout, PodStatus, runtime.Container) {
	t.Helper()
	h := newHarness(t, nil)
	h.rt.AddImage("v1")
	h.rt.AddImage("v2")
	r := newRollout(t, name)
	h.start(SourceServer)
	h.send(SourceServer, r.v1)
	return h, r, h.pod(r.podName1, "running v1", isRunning), h.running(r.podName1, "app", 0)
}

// TestRolloutPinsMoveANode: a node pinned to the old revision keeps its
// pod when the template changes; moved to the new revision, the old pod
// stops first and the new one starts under the same name.
func TestRolloutPinsMoveANode(t *testing.T) {
	h, r, old, oldC := runningV1(t, "roll")
	if old.Revision != r.h1 {
		t.Fatalf("revision %s, want %s", old.Revision, r.h1)
	}

	// The template changes, but the node is pinned to v1.
	h.send(SourceServer, r.pinned(t, r.h1))
	h.send(SourceServer, r.pinned(t, r.h1)) // a second set: the first one was acted on
	if plan := h.lastPlan(); plan != "update=[default/roll-node1]" {
		t.Fatalf("plan %q, want the v1 pod updated", plan)
	}
	if c := h.running(r.podName1, "app", 0); c.ID != oldC.ID || c.Revision != r.h1 {
		t.Fatalf("pinned pod's container %+v, want the running v1 %s", c, oldC.ID)
	}
	if p := h.pod(r.podName1, "still v1", isRunning); p.UID != old.UID || len(h.a.Pods()) != 1 {
		t.Fatalf("pods %+v, want only the v1 pod", h.a.Pods())
	}

	// Unpinned: the current template, v2, replaces it.
	before := len(h.rt.Events())
	h.send(SourceServer, r.v2)
	p := h.pod(r.podName1, "running v2", func(p PodStatus) bool { return isRunning(p) && p.Revision == r.h2 })
	if p.UID == old.UID {
		t.Fatal("v2 pod has the v1 UID")
	}
	events := h.rt.Events()[before:]
	stop, create := slices.Index(events, "stop app#0"), slices.Index(events, "create app#0")
	if stop < 0 || create < stop {
		t.Fatalf("events %v: want the old container stopped before the new one is created", events)
	}
	h.noPod(r.podName1 + "-" + r.h2)
	if _, err := h.db.GetPod(old.UID); !errdefs.IsNotFound(err) {
		t.Fatalf("old pod record: %v", err)
	}
}

// TestRolloutSurge: pins [old, new] run both pods under distinct names;
// back to [new], the old pod stops and the new one runs on untouched;
// an agent restart in the middle of the surge adopts both pods.
func TestRolloutSurge(t *testing.T) {
	h, r, old, oldC := runningV1(t, "surge")

	h.send(SourceServer, r.pinned(t, r.h1, r.h2))
	surgeName := r.podName1 + "-" + r.h2
	p2 := h.pod(surgeName, "running v2", func(p PodStatus) bool { return isRunning(p) && p.Revision == r.h2 })
	newC := h.running(surgeName, "app", 0)
	if c := h.running(r.podName1, "app", 0); c.ID != oldC.ID || c.Revision != r.h1 {
		t.Fatalf("old pod's container %+v, want the untouched %s", c, oldC.ID)
	}
	if newC.Revision != r.h2 || p2.UID != podUID("default", r.name, testNode, r.h2) {
		t.Fatalf("surge pod %+v with container %+v", p2, newC)
	}

	// The agent restarts mid-surge, with no source reachable: the stored
	// set rebuilds both revisions and both pods are adopted as they run.
	h.stop()
	h.reopenStore()
	before := len(h.rt.Events())
	h.start(SourceServer)
	if p := h.pod(r.podName1, "adopted", isRunning); p.UID != old.UID {
		t.Fatalf("old pod after restart %+v", p)
	}
	if p := h.pod(surgeName, "adopted", isRunning); p.UID != p2.UID {
		t.Fatalf("surge pod after restart %+v", p)
	}
	if c := h.running(r.podName1, "app", 0); c.ID != oldC.ID || c.PID != oldC.PID {
		t.Fatalf("old container replaced: %+v", c)
	}
	if c := h.running(surgeName, "app", 0); c.ID != newC.ID || c.PID != newC.PID {
		t.Fatalf("surge container replaced: %+v", c)
	}
	if events := h.rt.Events()[before:]; len(events) != 0 {
		t.Fatalf("adoption acted on the runtime: %v", events)
	}

	// The surge ends: the old pod stops, with its grace period; the new
	// one keeps its name and its container.
	h.send(SourceServer, r.v2)
	h.noPod(r.podName1)
	if st, ok := h.rt.Stopped(oldC.ID); !ok || st.Grace != 30*time.Second {
		t.Fatalf("old container stop %+v %v, want the 30s grace", st, ok)
	}
	if c := h.running(surgeName, "app", 0); c.ID != newC.ID || c.PID != newC.PID {
		t.Fatalf("surge container replaced after the surge: %+v", c)
	}
	if p := h.pod(surgeName, "running", isRunning); p.UID != p2.UID || len(h.a.Pods()) != 1 {
		t.Fatalf("pods %+v", h.a.Pods())
	}
}

// TestRolloutUnknownRevisionKeepsWhatRuns: a pinned revision whose
// ControllerRevision the source does not know holds the DaemonSet: the
// running pod stays although the template changed and nothing was pinned
// that it runs, and nothing starts.
func TestRolloutUnknownRevisionKeepsWhatRuns(t *testing.T) {
	h, r, old, oldC := runningV1(t, "held")

	ds := r.v2.DeepCopy()
	unknown := pinRevisions(ds, []string{"gone", r.h2}, r.crs)
	if len(unknown) != 1 || !errdefs.IsNotFound(unknown[0]) {
		t.Fatalf("unknown = %v, want the missing revision", unknown)
	}
	h.send(SourceServer, ds)
	h.send(SourceServer, ds) // the first set was acted on
	if plan := h.lastPlan(); plan != "nothing to do" {
		t.Fatalf("plan %q for a held DaemonSet, want nothing", plan)
	}
	if p := h.pod(r.podName1, "kept", isRunning); p.UID != old.UID || len(h.a.Pods()) != 1 {
		t.Fatalf("pods %+v", h.a.Pods())
	}

	// Once the revision is known, the rollout goes on.
	h.send(SourceServer, r.pinned(t, r.h2))
	h.pod(r.podName1, "running v2", func(p PodStatus) bool { return isRunning(p) && p.Revision == r.h2 })
	if _, ok := h.rt.Stopped(oldC.ID); !ok {
		t.Fatal("old container not stopped")
	}
}

// TestRolloutAnnotationsAreTheServerSourcesOnly: a manifest of another
// source cannot pin revisions; a stored record round-trips every revision.
func TestRolloutAnnotationsAreTheServerSourcesOnly(t *testing.T) {
	r := newRollout(t, "web")
	ds := r.pinned(t, r.h1, r.h2)
	file, err := newDesiredPod(SourceFile, ds)
	if err != nil || len(file.Revisions) != 1 || file.Revision != r.h2 {
		t.Fatalf("file source: %+v, %v; want the template's revision alone", file, err)
	}
	server, err := newDesiredPod(SourceServer, ds)
	if err != nil || len(server.Revisions) != 2 || server.Revisions[0].Hash != r.h1 || server.Revision != r.h2 || server.held() {
		t.Fatalf("server source: %+v, %v", server, err)
	}
	if img := server.Revisions[0].Template.Spec.Containers[0].Image; img != "v1" {
		t.Fatalf("old revision's image %q", img)
	}
	recs, err := desiredRecords([]DesiredPod{server}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	back, err := desiredFromRecord(recs[0])
	if err != nil || len(back.Revisions) != 2 || back.Revisions[0].Template.Spec.Containers[0].Image != "v1" {
		t.Fatalf("from the record: %+v, %v", back, err)
	}
	// Pins of the current template alone change nothing.
	if ds := r.pinned(t, r.h2); ds.Annotations[AnnotationRunRevisions] != "" {
		t.Fatalf("pin of the current revision annotated %v", ds.Annotations)
	}
	ds.Annotations[AnnotationRunRevisions] = "[]"
	if _, err := newDesiredPod(SourceServer, ds); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("empty revisions: %v", err)
	}
}

// TestServerSourcePinsRevisions: the server source resolves the node's
// pins through the ControllerRevisions, holds a DaemonSet whose revision
// it does not know, and resolves it once the revision appears.
func TestServerSourcePinsRevisions(t *testing.T) {
	srv, c := newObjectsServer(t)
	r := newRollout(t, "web")
	ds := r.v2.DeepCopy()
	ds.ResourceVersion = "2"
	srv.lists["/apis/apps/v1/daemonsets"] = &appsv1.DaemonSetList{ListMeta: metav1.ListMeta{ResourceVersion: "3"}, Items: []appsv1.DaemonSet{*ds}}
	srv.lists["/api/v1/pods"] = &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "3"}}
	srv.lists["/apis/apps/v1/controllerrevisions"] = &appsv1.ControllerRevisionList{ListMeta: metav1.ListMeta{ResourceVersion: "3"}}

	src := NewServerSource(ServerSourceConfig{Client: c, NodeName: testNode, Coalesce: 10 * time.Millisecond})
	src.SetNodeRevisions(api.NodeRevisions{"default/web": {r.h1, r.h2}, "default/other": {"x"}})
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan SourceUpdate)
	done := make(chan struct{})
	go func() { src.Run(ctx, updates); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	next := func() DesiredPod {
		t.Helper()
		select {
		case u := <-updates:
			if u.Err != nil || len(u.DaemonSets) != 1 {
				t.Fatalf("update %+v", u)
			}
			d, err := newDesiredPod(SourceServer, u.DaemonSets[0])
			if err != nil {
				t.Fatal(err)
			}
			return d
		case <-time.After(10 * time.Second):
			t.Fatal("no update from the server source")
			return DesiredPod{}
		}
	}

	// v1's ControllerRevision is not listed: the DaemonSet is held.
	if d := next(); !d.held() || len(d.Revisions) != 2 || d.Revisions[1].Template == nil {
		t.Fatalf("without the revision: %+v, want held with v2 known", d.Revisions)
	}
	cr := r.cr1.DeepCopy()
	cr.ResourceVersion = "4"
	srv.send("/apis/apps/v1/controllerrevisions", "ADDED", cr)
	d := next()
	if d.held() || len(d.Revisions) != 2 || d.Revisions[0].Hash != r.h1 || d.Revisions[0].Template.Spec.Containers[0].Image != "v1" ||
		d.Revisions[1].Template.Spec.Containers[0].Image != "v2" {
		t.Fatalf("with the revision: %+v", d.Revisions)
	}

	// Pins back to the current template: the DaemonSet as the server has it.
	src.SetNodeRevisions(api.NodeRevisions{"default/web": {r.h2}})
	if d := next(); len(d.Revisions) != 1 || d.Revision != r.h2 || d.DaemonSet.Annotations[AnnotationRunRevisions] != "" {
		t.Fatalf("unpinned: %+v", d)
	}
}

// TestNodeSyncHandsOverRevisions: the node's pins reach SetRevisions when
// they change, and an unreadable annotation keeps the last ones.
func TestNodeSyncHandsOverRevisions(t *testing.T) {
	c, err := client.New(client.Config{Servers: []string{"http://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []api.NodeRevisions
	n, err := NewNodeSync(NodeSyncConfig{
		Client: c, Node: api.NewNode(testNode, nil, nil),
		SetNode: func(*corev1.Node) {}, SetRevisions: func(r api.NodeRevisions) { got = append(got, r) },
	})
	if err != nil {
		t.Fatal(err)
	}
	node := api.NewNode(testNode, nil, nil)
	n.apply(node)
	select {
	case <-n.Synced():
	default:
		t.Fatal("not synced after the first apply")
	}
	api.SetNodeRevisions(node, api.NodeRevisions{"ns/a": {"h1", "h2"}})
	n.apply(node)
	n.apply(node)
	node.Annotations[api.AnnotationNodeRevisions] = "{not json"
	n.apply(node)
	api.SetNodeRevisions(node, api.NodeRevisions{"ns/a": {"h2"}})
	n.apply(node)
	want := []api.NodeRevisions{{}, {"ns/a": {"h1", "h2"}}, {"ns/a": {"h2"}}}
	if len(got) != len(want) {
		t.Fatalf("SetRevisions calls %v, want %v", got, want)
	}
	for i := range want {
		if len(got[i]) != len(want[i]) || !slices.Equal(got[i]["ns/a"], want[i]["ns/a"]) {
			t.Fatalf("SetRevisions calls %v, want %v", got, want)
		}
	}
}

// TestRolloutReportsBothPods: during a surge both pods have Pod objects
// under their names, with their revisions and the DaemonSet as controller;
// once the old pod stops, its Pod object is deleted and the new one's
// stays.
func TestRolloutReportsBothPods(t *testing.T) {
	rig := newServerRig(t)
	rig.rt.AddImage("v1")
	rig.rt.AddImage("v2")
	r := newRollout(t, "web")
	created := rig.createDS(r.v1)
	r.v1.UID, r.v2.UID = created.UID, created.UID

	// The agent's server source is the test, so that the pins need no
	// rollout controller; the reporter writes to the real server.
	_, send := rig.runReported(20 * time.Millisecond)
	ctx := context.Background()
	controlled := func(p *corev1.Pod, hash string) bool {
		ref := metav1.GetControllerOf(p)
		return ref != nil && ref.UID == created.UID && p.Labels[api.LabelControllerRevisionHash] == hash && p.Spec.NodeName == testNode
	}

	send(r.v1)
	oldObj := rig.serverPod(r.podName1, "reported", func(p *corev1.Pod) bool { return controlled(p, r.h1) })
	send(r.pinned(t, r.h1, r.h2))
	surgeName := r.podName1 + "-" + r.h2
	newObj := rig.serverPod(surgeName, "reported", func(p *corev1.Pod) bool { return controlled(p, r.h2) })
	if p, err := rig.c.Pods("default").Get(ctx, r.podName1); err != nil || p.UID != oldObj.UID || !controlled(p, r.h1) {
		t.Fatalf("old Pod object during the surge: %+v, %v", p, err)
	}
	if newObj.Spec.Containers[0].Image != "v2" || newObj.UID == oldObj.UID {
		t.Fatalf("surge Pod object %+v", newObj)
	}

	send(r.v2)
	waitFor(t, "the old Pod object deleted", func() bool {
		_, err := rig.c.Pods("default").Get(ctx, r.podName1)
		return apierrors.IsNotFound(err)
	})
	if p, err := rig.c.Pods("default").Get(ctx, surgeName); err != nil || p.UID != newObj.UID {
		t.Fatalf("surge Pod object after the surge: %+v, %v", p, err)
	}
}

// lastPlan is the plan of the agent's last sync.
func (h *harness) lastPlan() string {
	h.a.mu.Lock()
	defer h.a.mu.Unlock()
	return h.a.lastPlan
}
