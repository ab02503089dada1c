package bench_test

// Issue 8's figure: propagation through three server replicas sharing a
// three-member etcd, next to one server on bbolt.

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/bench"
	"github.com/daemonlet/daemonlet/internal/etcdtest"
	"github.com/daemonlet/daemonlet/internal/fleetsim"
)

// TestBenchHAPropagation times template changes reaching every agent, as
// TestBenchPropagation does (seen = in the agent's desired state, from the
// update request), with three in-process server replicas on a
// three-member etcd (etcdtest) and the agents spread over the replicas
// (agent i talks to replica i mod 3 first), the applies going to one of
// them. The reference is the same fleet size on one server on bbolt,
// measured in the same run just before.
func TestBenchHAPropagation(t *testing.T) {
	n := bench.Pick(100, 9)
	applies := bench.Pick(10, 3)
	requireFiles(t, 3*n+256)

	var single, ha []time.Duration
	t.Run("bolt", func(t *testing.T) {
		seen := newSeenLog()
		f := fleetsim.Start(t, fleetsim.Config{Nodes: n, Dir: agentsDir(t), OnEvent: seen.observe})
		createPropagationDS(t, f.Admin(), n, seen, nil)
		single = timeApplies(t, f.Admin(), n, seen, nil, applies).agents
	})
	t.Run("etcd", func(t *testing.T) {
		etcd := etcdtest.StartCluster(t, 3)
		seen := newSeenLog()
		f := fleetsim.Start(t, fleetsim.Config{Nodes: n, Dir: agentsDir(t), OnEvent: seen.observe, Etcd: etcd.Endpoints(), Replicas: 3})
		createPropagationDS(t, f.Admin(), n, seen, nil)
		ha = timeApplies(t, f.Admin(), n, seen, nil, applies).agents
	})
	if t.Failed() {
		return
	}
	recordPropagation(t, "ha-propagation", ha, single, "one server on bbolt",
		fmt.Sprintf("%d agents (fleetsim, fake runtime, HTTPS) spread over 3 in-process servers on a 3-member etcd (127.0.0.1), %d applies, seen = in the agent's desired state, from the update request; source coalescing %v; reference: the same on one server on bbolt; %d CPUs shared",
			n, applies, agent.DefaultServerCoalesce, runtime.NumCPU()))
}
