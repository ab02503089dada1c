package bench_test

// Figure 2, propagation: how long a DaemonSet change takes from `apply` to
// every agent of a fleet, next to plain watchers of the same server.

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/bench"
	"github.com/daemonlet/daemonlet/internal/fleetsim"
)

// TestBenchPropagation times template changes of a DaemonSet reaching
// every agent of a fleet.
//
// Seen means: the agent's server source handed the agent's sync loop a
// desired set holding the new template revision (fleetsim's EventSeen),
// that is the change is in the agent's desired state; what the agent then
// runs, and when a rolling update lets it, is other figures' business (the
// DaemonSet runs on no node, see propagationDS). The clock starts as the
// update request is sent, so the server's write is included. The source's
// coalescing (agent.DefaultServerCoalesce, on the leading edge: a change
// after a quiet window goes out at once) is part of the agents' time.
// The reference is as many plain api/client watches of DaemonSets on the
// same server, open during the same applies.
//
// Up to 1000 nodes the fleet is fleetsim's, in process: the server on
// bbolt and N whole agents on the fake runtime, over HTTPS. 5000 whole
// agents do not fit two shared cores (about 2 MB and a share of the CPU
// each, and a start quadratic in N, see lightFleet), so the largest size
// runs the server as its own process and light agents (startLightFleet):
// the agent's own ServerSource, whose hand-over is the very point fleetsim
// records as seen.
func TestBenchPropagation(t *testing.T) {
	sizes := bench.Pick([]int{100, 1000}, []int{20})
	applies := bench.Pick(10, 3)
	for _, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			// Per agent: its HTTP/2 connection's two ends and its store;
			// per watcher client: one connection.
			requireFiles(t, 3*n+n/watchersPerClient*2+256)
			seen := newSeenLog()
			started := time.Now()
			f := fleetsim.Start(t, fleetsim.Config{Nodes: n, Dir: agentsDir(t), OnEvent: seen.observe})
			t.Logf("%d agents ready in %v", n, time.Since(started).Round(time.Millisecond))
			refs := startWatchers(t, f.URLs(), f.CAFile(), n)
			createPropagationDS(t, f.Admin(), n, seen, refs)
			run := timeApplies(t, f.Admin(), n, seen, refs, applies)
			recordPropagation(t, fmt.Sprintf("propagation-%d", n), run.agents, run.watchers, "plain watchers",
				fmt.Sprintf("%d agents (fleetsim: whole agents on the fake runtime, server on bbolt in process, HTTPS), %d applies, seen = in the agent's desired state, from the update request; source coalescing %v; reference: %d api/client DaemonSet watchers; %d CPUs shared",
					n, applies, agent.DefaultServerCoalesce, n, runtime.NumCPU()))
		})
	}
	n := bench.Pick(5000, 20)
	t.Run(fmt.Sprintf("light-%d", n), func(t *testing.T) {
		// Per light agent and per watcher client: one connection.
		requireFiles(t, n+n/watchersPerClient+256)
		srv := startServerProcess(t, t.TempDir(), n)
		admin, tlsFiles := srv.admin, srv.tls
		seen := newSeenLog()
		started := time.Now()
		startLightFleet(t, []string{srv.url}, tlsFiles.CertFile, n, lightHeartbeatPeriod, seen)
		t.Logf("%d light agents synced in %v", n, time.Since(started).Round(time.Millisecond))
		refs := startWatchers(t, []string{srv.url}, tlsFiles.CertFile, n)
		createPropagationDS(t, admin, n, seen, refs)
		run := timeApplies(t, admin, n, seen, refs, applies)
		recordPropagation(t, fmt.Sprintf("propagation-%d", n), run.agents, run.watchers, "plain watchers",
			fmt.Sprintf("%d light agents (the agent's ServerSource, registration and a heartbeat every %v; no sync loop) in the test process, `daemonlet server` process (bbolt, HTTPS), %d applies, seen = the source hands the set over, from the update request; source coalescing %v; reference: %d api/client DaemonSet watchers; %d CPUs shared",
				n, lightHeartbeatPeriod, applies, agent.DefaultServerCoalesce, n, runtime.NumCPU()))
	})
}

// recordPropagation records the p50, p99 and max of values, each against
// the same quantile of refs, with the 1 s target on each.
func recordPropagation(t testing.TB, name string, values, refs []time.Duration, refName, conditions string) {
	t.Helper()
	v50, v99, vmax := quantiles(values)
	r50, r99, rmax := quantiles(refs)
	for _, q := range []struct {
		suffix string
		v, ref float64
	}{{"p50", v50, r50}, {"p99", v99, r99}, {"max", vmax, rmax}} {
		bench.Record(t, bench.Figure{
			Name: name + "-" + q.suffix, Value: q.v, Unit: "s",
			Reference: q.ref, ReferenceName: refName + ", " + q.suffix,
			Target: "< 1 s", Met: q.v < 1, Conditions: conditions,
		})
	}
}
