package server

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/daemonlet/daemonlet/api"
)

var planNow = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// planDS is a defaulted DaemonSet with a RollingUpdate budget ("" leaves
// the default) or, for strategy OnDelete, none.
func planDS(strategy appsv1.DaemonSetUpdateStrategyType, maxUnavailable, maxSurge string, minReady int32) *appsv1.DaemonSet {
	ds := testDaemonSet("web")
	ds.Spec.MinReadySeconds = minReady
	ds.Spec.UpdateStrategy.Type = strategy
	if strategy == appsv1.RollingUpdateDaemonSetStrategyType {
		ru := &appsv1.RollingUpdateDaemonSet{}
		if maxUnavailable != "" {
			v := intstr.Parse(maxUnavailable)
			ru.MaxUnavailable = &v
		}
		if maxSurge != "" {
			v := intstr.Parse(maxSurge)
			ru.MaxSurge = &v
		}
		ds.Spec.UpdateStrategy.RollingUpdate = ru
	}
	api.SetDefaultsDaemonSet(ds)
	return ds
}

// up is an available pod of hash; notReady and readyFor vary it.
func up(hash string) rolloutPod { return readyFor(hash, time.Hour) }
func readyFor(hash string, d time.Duration) rolloutPod {
	return rolloutPod{hash: hash, ready: true, readySince: planNow.Add(-d)}
}
func notReady(hash string) rolloutPod { return rolloutPod{hash: hash} }

// pn is an eligible reachable node with pins and pods.
func pn(name string, pins []string, pods ...rolloutPod) rolloutNode {
	return rolloutNode{name: name, eligible: true, reachable: true, pins: pins, pods: pods}
}

func pins(h ...string) []string { return h }

func nodesOld(n int, avail bool) []rolloutNode {
	var out []rolloutNode
	for i := range n {
		p := up("old")
		if !avail {
			p = notReady("old")
		}
		out = append(out, pn(fmt.Sprintf("n%02d", i), pins("old"), p))
	}
	return out
}

func TestPlanRollout(t *testing.T) {
	rolling := appsv1.RollingUpdateDaemonSetStrategyType
	unreachable := func(n rolloutNode) rolloutNode { n.reachable = false; return n }
	ineligible := func(n rolloutNode) rolloutNode { n.eligible = false; return n }
	for _, tc := range []struct {
		name  string
		ds    *appsv1.DaemonSet
		nodes []rolloutNode
		want  map[string][]string
		check func(t *testing.T, p *rolloutPlan)
	}{
		{
			name: "unpinned nodes keep what they run, else the current revision, outside the budget",
			ds:   planDS(rolling, "1", "", 0),
			nodes: []rolloutNode{pn("a", nil, up("old")), pn("b", nil), pn("c", nil, up("cur")), pn("d", nil, up("lost")),
				pn("e", nil, notReady("old"))},
			// e's old pod is not available, so it moves at once; b, d and
			// e use up the budget, so a keeps old.
			want: map[string][]string{"a": pins("old"), "b": pins("cur"), "c": pins("cur"), "d": pins("cur"), "e": pins("cur")},
		},
		{
			name:  "unpinned available old pods are pinned to old and one moves",
			ds:    planDS(rolling, "1", "", 0),
			nodes: []rolloutNode{pn("a", nil, up("old")), pn("b", nil, up("old"))},
			want:  map[string][]string{"a": pins("cur"), "b": pins("old")},
		},
		{
			name:  "ineligible nodes lose their pin unless their pod may continue",
			ds:    planDS(rolling, "1", "", 0),
			nodes: []rolloutNode{ineligible(pn("a", pins("old"), up("old"))), func() rolloutNode { n := ineligible(pn("b", pins("old"))); n.keep = true; return n }(), ineligible(pn("c", nil))},
			want:  map[string][]string{"a": nil},
		},
		{
			name:  "maxUnavailable 2 moves the first two by name",
			ds:    planDS(rolling, "2", "", 0),
			nodes: nodesOld(5, true),
			want:  map[string][]string{"n00": pins("cur"), "n01": pins("cur")},
			check: func(t *testing.T, p *rolloutPlan) {
				if p.moved != 2 || p.pending != 3 || p.unavailable != 2 || p.updated != 0 || p.complete {
					t.Errorf("plan %v", p)
				}
			},
		},
		{
			name:  "percent rounds up: 30% of 5 is 2",
			ds:    planDS(rolling, "30%", "", 0),
			nodes: nodesOld(5, true),
			want:  map[string][]string{"n00": pins("cur"), "n01": pins("cur")},
		},
		{
			name:  "nodes already unavailable use up the budget",
			ds:    planDS(rolling, "2", "", 0),
			nodes: append(nodesOld(3, true), pn("x1", pins("cur"), notReady("cur")), pn("x2", pins("cur"))),
			want:  map[string][]string{},
		},
		{
			name:  "an unavailable old pod moves at once, outside the budget",
			ds:    planDS(rolling, "1", "", 0),
			nodes: []rolloutNode{pn("a", pins("old"), up("old")), pn("b", pins("old"), notReady("old")), pn("c", pins("old"))},
			want:  map[string][]string{"b": pins("cur"), "c": pins("cur")},
		},
		{
			name:  "an unreachable node keeps its revision and counts unavailable",
			ds:    planDS(rolling, "1", "", 0),
			nodes: []rolloutNode{unreachable(pn("a", pins("old"), notReady("old"))), pn("b", pins("old"), up("old"))},
			want:  map[string][]string{},
			check: func(t *testing.T, p *rolloutPlan) {
				if p.unavailable != 1 || p.pending != 1 || p.complete {
					t.Errorf("plan %v", p)
				}
			},
		},
		{
			name:  "a pod pinned but not yet carrying the hash is unavailable",
			ds:    planDS(rolling, "1", "", 0),
			nodes: []rolloutNode{pn("a", pins("cur"), up("old")), pn("b", pins("old"), up("old"))},
			want:  map[string][]string{},
		},
		{
			name:  "minReadySeconds: ready for 5 of 10 seconds is not available yet",
			ds:    planDS(rolling, "1", "", 10),
			nodes: []rolloutNode{pn("a", pins("cur"), readyFor("cur", 5*time.Second)), pn("b", pins("old"), up("old"))},
			want:  map[string][]string{},
			check: func(t *testing.T, p *rolloutPlan) {
				if p.requeue != 5*time.Second {
					t.Errorf("requeue %v, want 5s", p.requeue)
				}
			},
		},
		{
			name:  "minReadySeconds passed: the next node moves",
			ds:    planDS(rolling, "1", "", 10),
			nodes: []rolloutNode{pn("a", pins("cur"), readyFor("cur", 10*time.Second)), pn("b", pins("old"), up("old"))},
			want:  map[string][]string{"b": pins("cur")},
		},
		{
			name:  "done: complete, everything updated",
			ds:    planDS(rolling, "1", "", 0),
			nodes: []rolloutNode{pn("a", pins("cur"), up("cur")), pn("b", pins("cur"), up("cur"))},
			want:  map[string][]string{},
			check: func(t *testing.T, p *rolloutPlan) {
				if !p.complete || p.updated != 2 || p.availableAtCurrent != 2 {
					t.Errorf("plan %v", p)
				}
			},
		},
		{
			name:  "complete ignores unreachable nodes",
			ds:    planDS(rolling, "1", "", 0),
			nodes: []rolloutNode{pn("a", pins("cur"), up("cur")), unreachable(pn("b", pins("old"), up("old")))},
			want:  map[string][]string{},
			check: func(t *testing.T, p *rolloutPlan) {
				if !p.complete || p.unavailable != 1 {
					t.Errorf("plan %v", p)
				}
			},
		},
		{
			name: "rollback target: nodes on the failed revision move back like any old one",
			ds:   planDS(rolling, "1", "", 0),
			// cur is the rolled-back-to template; bad never became available.
			nodes: []rolloutNode{pn("a", pins("bad"), notReady("bad")), pn("b", pins("bad"), notReady("bad")), pn("c", pins("cur"), up("cur"))},
			want:  map[string][]string{"a": pins("cur"), "b": pins("cur")},
		},
		{
			name:  "surge 2: two nodes get [old, cur]",
			ds:    planDS(rolling, "0", "2", 0),
			nodes: nodesOld(4, true),
			want:  map[string][]string{"n00": pins("old", "cur"), "n01": pins("old", "cur")},
		},
		{
			name: "surge: an available new pod drops the old, and the freed slot goes to the next",
			ds:   planDS(rolling, "0", "1", 0),
			nodes: []rolloutNode{pn("a", pins("old", "cur"), up("old"), up("cur")), pn("b", pins("old"), up("old")),
				pn("c", pins("old"), up("old"))},
			want: map[string][]string{"a": pins("cur"), "b": pins("old", "cur")},
		},
		{
			name: "surge: a pending surge uses the budget; an unavailable old pod moves straight to cur",
			ds:   planDS(rolling, "0", "1", 0),
			nodes: []rolloutNode{pn("a", pins("old", "cur"), up("old"), notReady("cur")), pn("b", pins("old"), up("old")),
				pn("c", pins("old"), notReady("old"))},
			want: map[string][]string{"c": pins("cur")},
		},
		{
			name: "surge 25% of 4 is 1; unreachable nodes do not surge",
			ds:   planDS(rolling, "0", "25%", 0),
			nodes: []rolloutNode{unreachable(pn("a", pins("old"), up("old"))), pn("b", pins("old"), up("old")),
				pn("c", pins("old"), up("old")), pn("d", pins("old"), up("old"))},
			want: map[string][]string{"b": pins("old", "cur")},
		},
		{
			name: "a surge to a revision no longer current ends, keeping the available pod, and surges again",
			ds:   planDS(rolling, "0", "1", 0),
			nodes: []rolloutNode{pn("a", pins("old", "mid"), up("old"), notReady("mid")), pn("b", pins("old", "mid"), notReady("old"), notReady("mid")),
				pn("c", pins("old"), up("old"))},
			want: map[string][]string{"a": pins("old", "cur"), "b": pins("cur")},
		},
		{
			name:  "maxSurge 0 after a surge: the two-revision node keeps only the current one",
			ds:    planDS(rolling, "1", "0", 0),
			nodes: []rolloutNode{pn("a", pins("old", "cur"), up("old"), notReady("cur")), pn("b", pins("old"), up("old"))},
			want:  map[string][]string{"a": pins("cur")},
		},
		{
			name: "OnDelete never moves a pinned node with a pod; one without pod gets cur",
			ds:   planDS(appsv1.OnDeleteDaemonSetStrategyType, "", "", 0),
			nodes: []rolloutNode{pn("a", pins("old"), up("old")), pn("b", pins("old"), notReady("old")), pn("c", pins("old")),
				unreachable(pn("d", pins("old"))), pn("e", nil, up("old"))},
			want: map[string][]string{"c": pins("cur"), "e": pins("old")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := planRollout(rolloutInput{ds: tc.ds, hash: "cur", nodes: tc.nodes, now: planNow,
				recorded: map[string]bool{"cur": true, "old": true, "mid": true, "bad": true}})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.pins) != len(tc.want) {
				t.Errorf("pins %v, want %v", p.pins, tc.want)
			}
			for n, want := range tc.want {
				got, ok := p.pins[n]
				if !ok || !slices.Equal(got, want) || (want == nil) != (got == nil) {
					t.Errorf("node %s: pins %v (set %v), want %v; plan %v", n, got, ok, want, p)
				}
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
}

// TestPlanRolloutInvariants simulates rollouts step by step, with agents
// that start pins' pods which turn Ready (or never do), nodes that go
// offline and come back, and the template changing mid-way, and checks
// after every step: with maxSurge 0, the nodes the rollout made
// unavailable (moved while their old pod was available, not yet
// available at the new revision) never exceed maxUnavailable; with surge,
// at most maxSurge nodes are pinned to two revisions; and every rollout of
// healthy revisions completes.
func TestPlanRolloutInvariants(t *testing.T) {
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, 7))
		surge := seed%2 == 1
		nNodes := 3 + rng.IntN(20)
		ds := planDS(appsv1.RollingUpdateDaemonSetStrategyType, fmt.Sprint(1+rng.IntN(3)), "", int32(rng.IntN(3)))
		if surge {
			ds = planDS(appsv1.RollingUpdateDaemonSetStrategyType, "0", fmt.Sprintf("%d%%", 10+rng.IntN(40)), int32(rng.IntN(3)))
		}
		maxUnavailable, maxSurge, err := api.RollingUpdateBudget(ds, nNodes)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprintf("seed%d-surge%v", seed, surge), func(t *testing.T) {
			simulateRollout(t, rng, ds, nNodes, maxUnavailable, maxSurge, surge)
		})
	}
}

func simulateRollout(t *testing.T, rng *rand.Rand, ds *appsv1.DaemonSet, nNodes, maxUnavailable, maxSurge int, surge bool) {
	now := planNow
	nodes := make([]rolloutNode, nNodes)
	for i := range nodes {
		nodes[i] = pn(fmt.Sprintf("n%02d", i), nil, up("r0"))
		nodes[i].pods[0].readySince = now.Add(-time.Hour)
	}
	hash := "r0"
	// broken revisions' pods never turn Ready.
	broken := map[string]bool{}
	// causedByRollout: nodes moved while their old pod was available.
	causedByRollout := map[string]bool{}
	recorded := map[string]bool{"r0": true}
	minReady := time.Duration(ds.Spec.MinReadySeconds) * time.Second
	for step := range 300 {
		now = now.Add(time.Second)
		if step == 5 || step == 120 {
			hash = fmt.Sprintf("r%d", step)
			recorded[hash] = true
			broken[hash] = step == 120 && rng.IntN(2) == 0
		}
		// Agents: run the pinned revisions, drop the rest; new pods turn
		// Ready after a while unless broken; offline nodes change nothing.
		for i := range nodes {
			n := &nodes[i]
			if rng.IntN(40) == 0 {
				n.reachable = !n.reachable
			}
			if !n.reachable {
				continue
			}
			var pods []rolloutPod
			for _, h := range n.pins {
				i := slices.IndexFunc(n.pods, func(p rolloutPod) bool { return p.hash == h })
				if i < 0 {
					pods = append(pods, rolloutPod{hash: h})
					continue
				}
				p := n.pods[i]
				if !p.ready && !broken[h] && rng.IntN(3) == 0 {
					p.ready, p.readySince = true, now
				}
				pods = append(pods, p)
			}
			n.pods = pods
		}
		before := map[string]bool{}
		for _, n := range nodes {
			_, avail := nodeView{rolloutNode: &n, pins: n.pins}.availableOld(hash, minReady, now)
			before[n.name] = avail && n.reachable
		}
		plan, err := planRollout(rolloutInput{ds: ds, hash: hash, nodes: nodes, now: now, recorded: recorded})
		if err != nil {
			t.Fatal(err)
		}
		twoRevisions := 0
		for i := range nodes {
			n := &nodes[i]
			if p, ok := plan.pins[n.name]; ok {
				if !slices.Contains(n.pins, hash) && slices.Contains(p, hash) && before[n.name] && !surge {
					causedByRollout[n.name] = true
				}
				n.pins = p
			}
			if len(n.pins) == 2 {
				twoRevisions++
			}
			if (nodeView{rolloutNode: n, pins: n.pins}).available(hash, minReady, now) {
				delete(causedByRollout, n.name)
			}
		}
		unavailableReachable := 0
		for _, n := range nodes {
			if causedByRollout[n.name] && n.reachable {
				unavailableReachable++
			}
		}
		if !surge && unavailableReachable > maxUnavailable {
			t.Fatalf("step %d: %d reachable nodes made unavailable by the rollout, maxUnavailable %d; plan %v", step, unavailableReachable, maxUnavailable, plan)
		}
		if surge && twoRevisions > maxSurge {
			t.Fatalf("step %d: %d nodes on two revisions, maxSurge %d; plan %v", step, twoRevisions, maxSurge, plan)
		}
	}
	// Let the last rollout finish with every node online.
	for i := range nodes {
		nodes[i].reachable = true
	}
	if broken[hash] {
		return
	}
	for range 200 {
		now = now.Add(time.Second)
		for i := range nodes {
			n := &nodes[i]
			var pods []rolloutPod
			for _, h := range n.pins {
				i := slices.IndexFunc(n.pods, func(p rolloutPod) bool { return p.hash == h })
				p := rolloutPod{hash: h, ready: true, readySince: now}
				if i >= 0 {
					p = n.pods[i]
					if !p.ready {
						p.ready, p.readySince = true, now
					}
				}
				pods = append(pods, p)
			}
			n.pods = pods
		}
		plan, err := planRollout(rolloutInput{ds: ds, hash: hash, nodes: nodes, now: now, recorded: recorded})
		if err != nil {
			t.Fatal(err)
		}
		if plan.complete {
			return
		}
		for i := range nodes {
			if p, ok := plan.pins[nodes[i].name]; ok {
				nodes[i].pins = p
			}
		}
	}
	t.Fatalf("the rollout of %s never completed: %v", hash, nodes)
}
