package bench_test

// Figure 6, rollout: how long a rolling update of a simulated fleet takes
// against the least its budget allows.

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/bench"
	"github.com/daemonlet/daemonlet/internal/fleetsim"
)

// rolloutStart is the simulated start of every pod (its one container).
const rolloutStart = 200 * time.Millisecond

// TestBenchRollout times a rolling update (maxUnavailable 10 %,
// minReadySeconds 0) of a fleet whose pods take rolloutStart to start,
// from the update request until every agent runs the new revision alone
// and ready, sampled from the agents' runtimes every 20 ms.
//
// The theoretical minimum is waves × rolloutStart: maxUnavailable 10 %
// (rounded up, as Kubernetes does) replaces at most that many nodes at a
// time, each wave waiting for its pods to start. What the rollout adds on
// top is per wave: the agents' status reports (written as a pod changes),
// the rollout controller's sync (at once after a quiet spell, then at
// most every 50 ms) and the pins' way to the agents, all on a CPU the
// whole simulated fleet shares.
func TestBenchRollout(t *testing.T) {
	n := bench.Pick(500, 20)
	requireFiles(t, 3*n+256)
	f := fleetsim.Start(t, fleetsim.Config{
		Nodes:      n,
		Dir:        agentsDir(t),
		StartDelay: func(fleetsim.Pod) time.Duration { return rolloutStart },
	})
	ctx := context.Background()
	ds := fleetsim.NewDaemonSet("default", "rollout", "bench/rollout:1")
	ds.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{
		Type:          appsv1.RollingUpdateDaemonSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromString("10%"))},
	}
	created, err := f.Admin().DaemonSets("default").Create(ctx, ds, client.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitRolledOut(t, f, api.TemplateHash(&created.Spec.Template, nil), 3*time.Minute)
	// The server must know every pod before the update: a pod it has not
	// heard of counts, for the controller, as missing, and is replaced
	// outside the budget.
	waitServerAvailable(t, f, n)

	started := time.Now()
	updated, err := f.UpdateDaemonSet(ctx, "default", "rollout", func(ds *appsv1.DaemonSet) {
		ds.Spec.Template.Spec.Containers[0].Image = "bench/rollout:2"
	})
	if err != nil {
		t.Fatal(err)
	}
	waitRolledOut(t, f, api.TemplateHash(&updated.Spec.Template, updated.Status.CollisionCount), 5*time.Minute)
	took := time.Since(started)

	perWave := int(math.Ceil(float64(n) * 0.10))
	waves := (n + perWave - 1) / perWave
	minimum := time.Duration(waves) * rolloutStart
	ratio := took.Seconds() / minimum.Seconds()
	t.Logf("%d nodes, %d waves of %d: rollout %v, minimum %v, ratio %.2f", n, waves, perWave, took.Round(time.Millisecond), minimum, ratio)
	bench.Record(t, bench.Figure{
		Name: fmt.Sprintf("rollout-%d", n), Value: took.Seconds(), Unit: "s",
		Reference: minimum.Seconds(), ReferenceName: fmt.Sprintf("theoretical minimum, %d waves × %v", waves, rolloutStart),
		Target: "ratio <= 1.5", Met: ratio <= 1.5,
		Conditions: fmt.Sprintf("%d agents (fleetsim: whole agents on the fake runtime, server on bbolt in process, HTTPS), maxUnavailable 10%%, minReadySeconds 0, pod start %v, agent defaults (pod status reported as it changes, fallback pass every %v), from the update request to every agent running only the new revision ready, sampled every 20 ms; %d CPUs shared",
			n, rolloutStart, agent.DefaultReportInterval, runtime.NumCPU()),
	})
}

// waitRolledOut waits until every agent runs one pod of the DaemonSet
// "rollout", at revision hash, running and ready.
func waitRolledOut(t *testing.T, f *fleetsim.Fleet, hash string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pending := 0
		for _, a := range f.Agents() {
			var pods []agent.PodStatus
			for _, p := range a.Pods() {
				if p.DaemonSet == "rollout" && p.State != "Terminating" {
					pods = append(pods, p)
				}
			}
			if len(pods) != 1 || pods[0].Revision != hash || pods[0].Phase != corev1.PodRunning || pods[0].Total == 0 || pods[0].Ready != pods[0].Total {
				pending++
			}
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("revision %s: %d nodes not there after %v", hash, pending, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitServerAvailable waits until the DaemonSet's status counts n
// available pods.
func waitServerAvailable(t *testing.T, f *fleetsim.Fleet, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ds, err := f.Admin().DaemonSets("default").Get(context.Background(), "rollout")
		if err != nil {
			t.Fatal(err)
		}
		if int(ds.Status.NumberAvailable) == n && int(ds.Status.UpdatedNumberScheduled) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server counts %d of %d pods available after a minute", ds.Status.NumberAvailable, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
