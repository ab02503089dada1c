package bench_test

// Figure 7, recovery: an agent running 20 pods killed with SIGKILL and
// started again, until it reports them all running, next to the time the
// same process takes merely to answer.

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/bench"
)

// TestBenchRecovery runs one `daemonlet agent` process (file source, the
// private containerd) with 20 pods, then, each round, kills it with
// SIGKILL, starts it again and polls its /pods endpoint every 10 ms until
// it reports every pod running and ready. The clock starts as the new
// process is started (the old one is gone). The reference is how long the
// same new process takes until /pods first answers at all: the floor set
// by the process start, the store's opening and the image folder's scan,
// before any pod is known. The containers' task pids in containerd before
// and after tell how many containers the recovery restarted.
func TestBenchRecovery(t *testing.T) {
	pods := bench.Pick(20, 3)
	rounds := bench.Pick(5, 1)
	settle := bench.Pick(2*time.Second, 500*time.Millisecond)
	a := newNodeAgent(t, "bench-recovery")
	a.start()
	for i := range pods {
		name := fmt.Sprintf("recovery-%02d", i)
		a.writeManifest(name+".yaml", nodeDaemonSetYAML(t, name))
	}
	a.waitPods(2*time.Minute, 200*time.Millisecond, fmt.Sprintf("%d pods to run", pods), nodeAllRunning(pods))
	before := a.taskPIDs()
	if len(before) != pods {
		t.Fatalf("%d running tasks, want %d", len(before), pods)
	}

	var recovered, answered []time.Duration
	restarted := 0
	for range rounds {
		time.Sleep(settle)
		a.kill9()
		a.start()
		var firstAnswer time.Time
		done := a.waitPods(time.Minute, 10*time.Millisecond, "the pods to be reported running again", func(ps []agent.PodStatus) bool {
			if firstAnswer.IsZero() {
				firstAnswer = time.Now()
			}
			return nodeAllRunning(pods)(ps)
		})
		recovered = append(recovered, done.Sub(a.started))
		answered = append(answered, firstAnswer.Sub(a.started))
		after := a.taskPIDs()
		for id, pid := range after {
			if before[id] != pid {
				restarted++ // a new container, or the same one restarted
			}
		}
		if len(after) != pods {
			t.Fatalf("%d running tasks after the restart, want %d", len(after), pods)
		}
		before = after
	}
	worst, refWorst := slices.Max(recovered), slices.Max(answered)
	if worst <= 0 || refWorst <= 0 || refWorst > worst {
		t.Fatalf("implausible times: recovered %v, answered %v", recovered, answered)
	}
	cond := fmt.Sprintf("`daemonlet agent` process, file source, private containerd, CNI bridge; %d pods running; %d rounds of SIGKILL and start, %v apart; from the new process's start to /pods (polled every 10 ms) reporting all running and ready; value and reference: the worst round (all rounds: %v; first answers: %v); reference: the same new process's first answer of /pods; %d CPUs shared",
		pods, rounds, settle, roundMs(recovered), roundMs(answered), runtime.NumCPU())
	bench.Record(t, bench.Figure{
		Name: "recovery-time", Value: worst.Seconds(), Unit: "s",
		Reference: refWorst.Seconds(), ReferenceName: "process start to first /pods answer",
		Target: "< 1 s", Met: worst < time.Second, Conditions: cond,
	})
	bench.Record(t, bench.Figure{
		Name: "recovery-restarted", Value: float64(restarted), Unit: "containers",
		Target: "0", Met: restarted == 0,
		Conditions: cond + fmt.Sprintf("; value: containers whose containerd task pid changed (or that are new) over all %d restarts of the agent", rounds),
	})
}

// roundMs rounds durations to the millisecond, for conditions.
func roundMs(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
