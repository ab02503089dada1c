package fleetsim_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/internal/fleetsim"
)

// simNodes is the simulated fleet's size (issue 5: a hundred nodes).
const simNodes = 100

// jitter is a stable pseudo-random number in [0, n) for a pod: the fleet's
// start delays and failures differ per pod but the same every run.
func jitter(p fleetsim.Pod, salt string, n uint32) uint32 {
	h := fnv.New32a()
	h.Write([]byte(p.UID + p.Node + salt))
	return h.Sum32() % n
}

// errFlaky is the injected start failure of the simulation.
var errFlaky = fmt.Errorf("simulated start failure: %w", errdefs.ErrUnavailable)

// startSimFleet starts the hundred agents, with start times of 0–300 ms and
// one create in 25 failing (the agent retries it with its back-off).
func startSimFleet(t *testing.T) *fleetsim.Fleet {
	var failedOnce sync.Map // pod UID → true once its first create failed
	return fleetsim.Start(t, fleetsim.Config{
		Nodes:      simNodes,
		StartDelay: func(p fleetsim.Pod) time.Duration { return time.Duration(jitter(p, "delay", 300)) * time.Millisecond },
		Fail: func(p fleetsim.Pod, _ string) error {
			if jitter(p, "fail", 25) != 0 {
				return nil
			}
			if _, again := failedOnce.LoadOrStore(p.UID, true); !again {
				return errFlaky
			}
			return nil
		},
		ReportInterval: 50 * time.Millisecond,
	})
}

// nodeState is what one agent runs of a DaemonSet at a sampled moment.
type nodeState struct {
	pods      int  // pods of the DaemonSet on the node, but those stopping
	available bool // one of them runs with every container ready
	updated   bool // every pod on the node is at the new revision and available
}

func sample(f *fleetsim.Fleet, ds, rev string) map[string]nodeState {
	out := make(map[string]nodeState, simNodes)
	for _, a := range f.Agents() {
		var st nodeState
		st.updated = true
		for _, p := range a.Pods() {
			if p.DaemonSet != ds {
				continue
			}
			// A pod being stopped is no longer counted, as the
			// DaemonSet controller ignores pods with a deletionTimestamp.
			if p.State != "Terminating" {
				st.pods++
			}
			ready := p.Phase == corev1.PodRunning && p.Total > 0 && p.Ready == p.Total
			st.available = st.available || ready
			st.updated = st.updated && ready && p.Revision == rev
		}
		st.updated = st.updated && st.pods == 1
		out[a.Name()] = st
	}
	return out
}

// rollOut applies mutate to the DaemonSet and samples every agent until
// every node runs only the new revision, calling check on each sample.
func rollOut(t *testing.T, f *fleetsim.Fleet, name string, mutate func(*appsv1.DaemonSet), check func(map[string]nodeState)) {
	t.Helper()
	ctx := context.Background()
	ds, err := f.UpdateDaemonSet(ctx, "default", name, mutate)
	if err != nil {
		t.Fatal(err)
	}
	rev := api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		s := sample(f, name, rev)
		check(s)
		done := 0
		for _, st := range s {
			if st.updated {
				done++
			}
		}
		if done == simNodes {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout of %s to %s: %d of %d nodes updated after 3 minutes", name, rev, done, simNodes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// surging counts the nodes the server pins to two revisions of ds.
func surging(t *testing.T, f *fleetsim.Fleet, ds string) int {
	t.Helper()
	nodes, err := f.Admin().Nodes().List(context.Background(), client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := range nodes.Items {
		revs, err := api.ParseNodeRevisions(&nodes.Items[i])
		if err != nil {
			t.Fatal(err)
		}
		if len(revs[ds]) > 1 {
			n++
		}
	}
	return n
}

// createAndWait creates the DaemonSet and waits until every node runs it
// and the server has heard so.
func createAndWait(t *testing.T, f *fleetsim.Fleet, ds *appsv1.DaemonSet) {
	t.Helper()
	created, err := f.Admin().DaemonSets("default").Create(context.Background(), ds, client.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rev := api.TemplateHash(&created.Spec.Template, nil)
	eventually(t, ds.Name+" on every node", func() bool {
		for _, st := range sample(f, ds.Name, rev) {
			if !st.updated {
				return false
			}
		}
		return true
	})
	// And until the server knows it: a pod not reported yet is, for the
	// rollout controller, a missing one, replaced outside the budget.
	eventually(t, ds.Name+" available in the server's status", func() bool {
		got, err := f.Admin().DaemonSets("default").Get(context.Background(), ds.Name)
		return err == nil && got.Status.NumberAvailable == simNodes && got.Status.UpdatedNumberScheduled == simNodes
	})
}

// TestRolloutSimulation checks the rolling-update invariants over a
// hundred agents (the agent's real sync, watch and report code on the fake
// runtime) with random pod start times and start failures, by sampling
// what the agents' runtimes run, not what the server believes:
//   - maxUnavailable 10%: at no sampled moment are more than 10 nodes
//     without an available pod (a failed start is one of them: the
//     controller counts it against the budget);
//   - maxSurge 10% with maxUnavailable 0: every node always has an
//     available pod, and at most 10 nodes are pinned to two revisions at
//     once.
func TestRolloutSimulation(t *testing.T) {
	f := startSimFleet(t)

	ds := fleetsim.NewDaemonSet("default", "web", "sim/web:v1")
	ds.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{
		Type:          appsv1.RollingUpdateDaemonSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromString("10%"))},
	}
	createAndWait(t, f, ds)
	worst := 0
	rollOut(t, f, "web", func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Containers[0].Image = "sim/web:v2" },
		func(s map[string]nodeState) {
			down := 0
			for _, st := range s {
				if !st.available {
					down++
				}
			}
			worst = max(worst, down)
			if down > simNodes/10 {
				t.Errorf("maxUnavailable 10%%: %d of %d nodes without an available pod at once", down, simNodes)
			}
		})
	t.Logf("maxUnavailable 10%%: at most %d nodes were unavailable at once", worst)
	if worst == 0 {
		t.Error("no node was ever seen unavailable: the sampler saw nothing of the rollout")
	}

	surge := fleetsim.NewDaemonSet("default", "agent", "sim/agent:v1")
	surge.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{
		Type: appsv1.RollingUpdateDaemonSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDaemonSet{
			MaxUnavailable: ptr.To(intstr.FromInt32(0)),
			MaxSurge:       ptr.To(intstr.FromString("10%")),
		},
	}
	createAndWait(t, f, surge)
	maxDouble := 0
	rollOut(t, f, "agent", func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Containers[0].Image = "sim/agent:v2" },
		func(s map[string]nodeState) {
			for node, st := range s {
				if !st.available {
					t.Errorf("maxSurge: node %s has no available pod of the DaemonSet", node)
				}
			}
			// Two pods on a node are the controller's to allow: an old pod
			// whose pin was dropped is as good as deleted (in Kubernetes
			// it carries a deletionTimestamp) even if its agent has not
			// stopped it yet, so the surge is counted on the pins.
			double := surging(t, f, "default/agent")
			maxDouble = max(maxDouble, double)
			if double > simNodes/10 {
				t.Errorf("maxSurge 10%%: %d nodes pinned to two revisions at once", double)
			}
		})
	t.Logf("maxSurge 10%%: at most %d nodes ran two revisions at once", maxDouble)
	if maxDouble == 0 {
		t.Error("no node was ever seen surging: the surge was not observed")
	}
	if t.Failed() {
		return
	}
	// The failures were injected: some creates failed and were retried.
	failed := 0
	for _, a := range f.Agents() {
		for _, e := range a.Events() {
			if e.Kind == fleetsim.EventCreateFailed && errors.Is(e.Err, errFlaky) {
				failed++
			}
		}
	}
	if failed == 0 {
		t.Error("no start failure was injected; the simulation did not test failures")
	}
	t.Logf("%d starts failed and were retried", failed)
}
