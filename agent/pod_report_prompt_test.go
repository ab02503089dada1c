package agent

import (
	"context"
	"log/slog"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/runtime"
)

// TestPodReporterWritesOnWorkerChanges: with an hour-long fallback period,
// only the workers' change signals can bring the Pod object to the server
// in time: its creation and readiness, its container's exit, and its
// deletion once the pod is gone.
func TestPodReporterWritesOnWorkerChanges(t *testing.T) {
	rig := newServerRig(t)
	a, send := rig.runReported(time.Hour)

	ds := rig.createDS(daemonSet("web", ctr("app", "img")))
	send(ds)
	rig.serverPod("web-"+testNode, "ready", podReady)

	var id string
	for _, p := range a.Pods() {
		if p.DaemonSet == "web" && len(p.Containers) == 1 {
			id = p.Containers[0].ID
		}
	}
	if id == "" {
		t.Fatalf("no container of web in %+v", a.Pods())
	}
	if err := rig.rt.Exit(id, 1); err != nil {
		t.Fatal(err)
	}
	rig.serverPod("web-"+testNode, "with its container's exit", func(p *corev1.Pod) bool {
		if len(p.Status.ContainerStatuses) != 1 {
			return false
		}
		// Exited, waiting to restart, or restarted already.
		cs := p.Status.ContainerStatuses[0]
		return cs.State.Terminated != nil || cs.State.Waiting != nil || cs.RestartCount > 0
	})

	send()
	waitFor(t, "the Pod object deleted", func() bool {
		_, err := rig.c.Pods("default").Get(context.Background(), "web-"+testNode)
		return apierrors.IsNotFound(err)
	})
}

// TestStoppingPodKeepsItsOwner: a pod whose DaemonSet left the set is
// being stopped; its Pod object keeps its controller while its status is
// written, so that the server source never takes it for an orphan to run
// again.
func TestStoppingPodKeepsItsOwner(t *testing.T) {
	rig := newServerRig(t)
	ds := rig.createDS(daemonSet("web", ctr("app", "img")))
	a, err := New(Config{NodeName: testNode, Runtime: rig.rt, Store: rig.db})
	if err != nil {
		t.Fatal(err)
	}
	rep := NewPodReporter(PodReporterConfig{Client: rig.c, Agent: a, HostIP: "127.0.0.1", Interval: time.Hour})
	ctx := context.Background()
	name := "web-" + testNode
	rp := reportedPod{
		status: PodStatus{Namespace: "default", Name: name, UID: "uid-1", DaemonSet: "web", Source: SourceServer, Phase: corev1.PodRunning},
		pod:    &runtime.Pod{UID: "uid-1", Name: name, Namespace: "default", NodeName: testNode, Spec: ds.Spec.Template.Spec.DeepCopy()},
		dsUID:  ds.UID,
	}
	if !rep.write(ctx, "default/"+name, rp) {
		t.Fatal("create failed")
	}
	rp.dsUID, rp.stopping, rp.status.Phase = "", true, corev1.PodSucceeded
	if !rep.write(ctx, "default/"+name, rp) {
		t.Fatal("status write failed")
	}
	p, err := rig.c.Pods("default").Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if ref := metav1.GetControllerOf(p); ref == nil || ref.UID != ds.UID {
		t.Errorf("controller of the stopping pod's object = %+v, want DaemonSet %s", ref, ds.UID)
	}
	if p.Status.Phase != corev1.PodSucceeded {
		t.Errorf("phase = %s, want the stopping pod's status written", p.Status.Phase)
	}
}

// runReported starts an agent on the rig's runtime and store with a pod
// reporter writing to the rig's server every interval (and on each
// change); the test plays the agent's server source: send hands it a set.
func (r *serverRig) runReported(interval time.Duration) (a *Agent, send func(dss ...*appsv1.DaemonSet)) {
	t := r.t
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(Config{NodeName: testNode, Runtime: r.rt, Store: r.db, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	rep := NewPodReporter(PodReporterConfig{Client: r.c, Agent: a, HostIP: "127.0.0.1", Interval: interval, Logger: logger})
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan SourceUpdate)
	done := make(chan struct{}, 2)
	go func() { _ = a.Run(ctx, updates, []string{SourceServer}); done <- struct{}{} }()
	go func() { rep.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return a, func(dss ...*appsv1.DaemonSet) {
		t.Helper()
		select {
		case updates <- SourceUpdate{Source: SourceServer, DaemonSets: dss}:
		case <-time.After(10 * time.Second):
			t.Fatal("agent does not take updates")
		}
	}
}
