package bench_test

// Figure 3, agent footprint: the RSS and CPU of an idle `daemonlet agent`
// process running 20 pods, next to the same agent with none.

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/bench"
)

// TestBenchFootprint runs one `daemonlet agent` process (file source, the
// private containerd, CNI bridge networking) and samples its VmRSS every
// second and its CPU time at both ends of a window: first with no pods
// (the reference), then, after 20 DaemonSets were written into its
// manifest folder and their pods run, with 20. The pods' own processes,
// their shims and the log driver processes are not the agent's and are
// not counted.
func TestBenchFootprint(t *testing.T) {
	pods := bench.Pick(20, 3)
	window := bench.Pick(60*time.Second, 2*time.Second)
	settle := bench.Pick(10*time.Second, time.Second)
	a := newNodeAgent(t, "bench-footprint")
	a.start()
	a.waitPods(60*time.Second, 100*time.Millisecond, "the agent to answer", nodeAllRunning(0))
	time.Sleep(settle)
	idle := a.sample(t, window)

	for i := range pods {
		name := fmt.Sprintf("footprint-%02d", i)
		a.writeManifest(name+".yaml", nodeDaemonSetYAML(t, name))
	}
	a.waitPods(2*time.Minute, 200*time.Millisecond, fmt.Sprintf("%d pods to run", pods), nodeAllRunning(pods))
	// The starts' aftermath (garbage, first probes of the workers) settles.
	time.Sleep(settle)
	loaded := a.sample(t, window)
	if got := len(a.taskPIDs()); got != pods {
		t.Fatalf("%d running tasks after the window, want %d", got, pods)
	}
	if idle.rssMiB <= 0 || loaded.rssMiB <= 0 || idle.cores < 0 || loaded.cores < 0 {
		t.Fatalf("implausible samples: idle %+v, with pods %+v", idle, loaded)
	}
	// The reference is printed too: a zero (an idle agent may use no
	// CPU tick in a window) reads as "no reference" in the table.
	cond := fmt.Sprintf("`daemonlet agent` process, file source (default check frequency), private containerd, CNI bridge; %d pods of the test image (sleep) started %v before a %v window, VmRSS sampled every second; reference: the same agent with 0 pods over %v before they were added (%.1f MiB, %.3f %% of a core); %d CPUs shared",
		pods, settle, window, window, idle.rssMiB, 100*idle.cores, runtime.NumCPU())
	bench.Record(t, bench.Figure{
		Name: "agent-footprint-rss", Value: loaded.rssMiB, Unit: "MiB",
		Reference: idle.rssMiB, ReferenceName: "same agent, 0 pods",
		Target: "<= 30 MiB", Met: loaded.rssMiB <= 30, Conditions: cond + "; value: the largest VmRSS sampled",
	})
	percent := 100 * loaded.cores
	bench.Record(t, bench.Figure{
		Name: "agent-footprint-cpu", Value: percent, Unit: "% of a core",
		Reference: 100 * idle.cores, ReferenceName: "same agent, 0 pods",
		Target: "<= 0.5 %", Met: percent <= 0.5, Conditions: cond + "; value: utime+stime over wall time of the window",
	})
}

// sample is the footprint of the agent over window, sampled as the
// server footprint's (serverProcess.sample reads the process's pid only).
func (a *nodeAgent) sample(t testing.TB, window time.Duration) footprint {
	t.Helper()
	return (&serverProcess{cmd: a.cmd}).sample(t, window)
}
