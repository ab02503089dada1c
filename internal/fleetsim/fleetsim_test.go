package fleetsim_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/internal/etcdtest"
	"github.com/daemonlet/daemonlet/internal/fleetsim"
)

// eventually polls cond until it holds or the (generous) timeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// running says whether the agent runs a pod of revision rev whose
// containers are all ready.
func running(a *fleetsim.Agent, rev string) bool {
	for _, p := range a.Pods() {
		if p.Revision == rev && p.Phase == corev1.PodRunning && p.Total > 0 && p.Ready == p.Total {
			return true
		}
	}
	return false
}

// TestFleet runs three agents against one server: a DaemonSet reaches
// every node, the start delay and the injected failure hit only the nodes
// they name, a new template is seen by every agent with the new revision,
// the servers see the nodes and pods, and Close ends every goroutine.
func TestFleet(t *testing.T) {
	// Registered first, so that it runs after the fleet's own cleanup.
	opts := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opts) })
	const delay = 300 * time.Millisecond
	var mu sync.Mutex
	var live []fleetsim.Event
	injected := fmt.Errorf("simulated broken image: %w", errdefs.ErrNotFound)
	f := fleetsim.Start(t, fleetsim.Config{
		Nodes:  3,
		Labels: func(node string) map[string]string { return map[string]string{"sim": node} },
		StartDelay: func(p fleetsim.Pod) time.Duration {
			if p.Node == fleetsim.NodeName(1) {
				return delay
			}
			return 0
		},
		Fail: func(p fleetsim.Pod, container string) error {
			if p.Node == fleetsim.NodeName(2) && container == "app" {
				return injected
			}
			return nil
		},
		OnEvent: func(e fleetsim.Event) {
			mu.Lock()
			live = append(live, e)
			mu.Unlock()
		},
		HeartbeatPeriod: time.Second,
	})
	ctx := context.Background()
	admin := f.Admin()
	nodes, err := admin.Nodes().List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 3 {
		t.Fatalf("server has %d nodes, want 3", len(nodes.Items))
	}
	if got := nodes.Items[0].Labels["sim"]; got != nodes.Items[0].Name {
		t.Errorf("node %s has label sim=%q, want its name", nodes.Items[0].Name, got)
	}

	ds, err := admin.DaemonSets("default").Create(ctx, fleetsim.NewDaemonSet("default", "sim", "example.com/app:1"), client.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rev1 := api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
	a0, a1, a2 := f.Agent(fleetsim.NodeName(0)), f.Agent(fleetsim.NodeName(1)), f.Agent(fleetsim.NodeName(2))
	eventually(t, "nodes 0 and 1 run revision 1", func() bool { return running(a0, rev1) && running(a1, rev1) })
	eventually(t, "node 2's create fails", func() bool { return has(a2.Events(), fleetsim.EventCreateFailed, rev1) })
	if running(a2, rev1) {
		t.Error("node 2 runs the pod whose create fails")
	}
	for _, e := range a2.Events() {
		if e.Kind == fleetsim.EventCreateFailed && !errors.Is(e.Err, injected) {
			t.Errorf("node 2's failure is %v, want the injected one", e.Err)
		}
	}
	// The delay shows between create and start on node 1 only.
	if d := gap(a1.Events(), rev1); d < delay {
		t.Errorf("node 1 started %v after the create, want at least %v", d, delay)
	}
	if d := gap(a0.Events(), rev1); d >= delay {
		t.Errorf("node 0 started %v after the create, want no delay", d)
	}
	// The pod reporter writes the pods to the server.
	eventually(t, "the server holds the running pods", func() bool {
		pods, err := admin.Pods("default").List(ctx, client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				n++
			}
		}
		return n == 2
	})

	// A new template: every agent, node 2 included, is handed revision 2.
	ds, err = f.UpdateDaemonSet(ctx, "default", "sim", func(ds *appsv1.DaemonSet) {
		ds.Spec.Template.Spec.Containers[0].Image = "example.com/app:2"
	})
	if err != nil {
		t.Fatal(err)
	}
	rev2 := api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
	if rev2 == rev1 {
		t.Fatal("the template change kept the revision")
	}
	for _, a := range f.Agents() {
		eventually(t, a.Name()+" sees revision 2", func() bool { return has(a.Events(), fleetsim.EventSeen, rev2) })
	}
	for _, e := range a0.Events() {
		if e.Kind == fleetsim.EventSeen && e.Pod.Revision == rev2 && e.Generation != ds.Generation {
			t.Errorf("seen generation %d, want %d", e.Generation, ds.Generation)
		}
	}
	mu.Lock()
	n := len(live)
	mu.Unlock()
	total := 0
	for _, a := range f.Agents() {
		total += len(a.Events())
	}
	if n != total {
		t.Errorf("OnEvent got %d events, the agents recorded %d", n, total)
	}

	if err := admin.DaemonSets("default").Delete(ctx, "sim", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node 0 stops its pod", func() bool { return len(a0.Pods()) == 0 })
}

// has says whether events hold one of kind for revision rev.
func has(events []fleetsim.Event, kind fleetsim.EventKind, rev string) bool {
	for _, e := range events {
		if e.Kind == kind && e.Pod.Revision == rev {
			return true
		}
	}
	return false
}

// gap is the time from the first create to the first start of revision
// rev's app container.
func gap(events []fleetsim.Event, rev string) time.Duration {
	var created time.Time
	for _, e := range events {
		if e.Pod.Revision != rev || e.Container != "app" {
			continue
		}
		switch {
		case e.Kind == fleetsim.EventCreate && created.IsZero():
			created = e.Time
		case e.Kind == fleetsim.EventStart && !created.IsZero():
			return e.Time.Sub(created)
		}
	}
	return -1
}

// TestEmptyFleet: Start with no nodes still serves the API.
func TestEmptyFleet(t *testing.T) {
	f := fleetsim.Start(t, fleetsim.Config{})
	if _, err := f.Admin().ServerVersion(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f.Agents()) != 0 || len(f.URLs()) != 1 {
		t.Errorf("empty fleet: %d agents, %d servers", len(f.Agents()), len(f.URLs()))
	}
}

// TestReplicasOnEtcd runs two servers on one etcd member: the agents,
// spread over both, see a DaemonSet written through either.
func TestReplicasOnEtcd(t *testing.T) {
	etcd := etcdtest.StartCluster(t, 1)
	f := fleetsim.Start(t, fleetsim.Config{Nodes: 2, Etcd: etcd.Endpoints(), Replicas: 2})
	if len(f.URLs()) != 2 {
		t.Fatalf("%d servers, want 2", len(f.URLs()))
	}
	ds, err := f.Admin().DaemonSets("default").Create(context.Background(), fleetsim.NewDaemonSet("default", "ha", "example.com/app:1"), client.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rev := api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
	for _, a := range f.Agents() {
		eventually(t, a.Name()+" runs the pod", func() bool { return running(a, rev) })
	}
}
