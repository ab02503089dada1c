package server

import (
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/daemonlet/daemonlet/api"
)

// rolloutPod is what the planner needs of one reported daemon pod.
type rolloutPod struct {
	hash        string
	ready       bool
	readySince  time.Time // Ready's lastTransitionTime
	terminating bool
}

// rolloutNode is one node as the planner sees it for one DaemonSet.
type rolloutNode struct {
	name     string
	eligible bool // api.NodeShouldRunDaemonPod's shouldRun
	// keep: not eligible, but the pod may continue running there
	// (shouldContinueRunning: a NoSchedule taint came after it), so its
	// pins stay as they are.
	keep      bool
	reachable bool // Ready is not Unknown: the agent still reports
	pins      []string
	pods      []rolloutPod
	// podDeleted: a user deleted the node's pod of this DaemonSet at a
	// revision that is not the current one (what OnDelete waits for).
	podDeleted bool
}

// rolloutInput is everything one planning step of one DaemonSet reads.
type rolloutInput struct {
	ds   *appsv1.DaemonSet // defaulted
	hash string            // the current template's hash
	// recorded holds the hashes that have a ControllerRevision: only
	// those can be pinned, as an agent needs the template.
	recorded map[string]bool
	nodes    []rolloutNode
	now      time.Time
}

// rolloutPlan is the outcome of one step: the pin lists to write and the
// counts the controller reports.
type rolloutPlan struct {
	// pins holds the nodes whose pin list changes; a nil list removes
	// the DaemonSet from the node's annotation.
	pins map[string][]string
	// Per eligible node exactly one of: updated (pinned to the current
	// revision alone, its pod available), unavailable (unreachable, or no
	// available pod at a pinned revision) or pending (the rest).
	updated, pending, unavailable int
	// moved counts the nodes this step moved onto the current revision;
	// availableAtCurrent the eligible nodes whose current pod is available.
	moved, availableAtCurrent int
	// complete: every eligible reachable node is updated.
	complete bool
	// requeue is when a Ready pod turns available (0: no such pod).
	requeue time.Duration
}

func (p *rolloutPlan) String() string {
	names := make([]string, 0, len(p.pins))
	for n := range p.pins {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	fmt.Fprintf(&b, "updated=%d pending=%d unavailable=%d moved=%d complete=%v", p.updated, p.pending, p.unavailable, p.moved, p.complete)
	for _, n := range names {
		fmt.Fprintf(&b, " %s=%v", n, p.pins[n])
	}
	return b.String()
}

// nodeView is a node during planning: its pin list as planned so far and
// what its pods offer.
type nodeView struct {
	*rolloutNode
	pins []string
}

// available tells whether the node runs a non-terminating pod of hash
// that has been Ready for minReadySeconds (K8S-SEMANTICS.md §4.3).
func (v nodeView) available(hash string, minReady time.Duration, now time.Time) bool {
	for _, p := range v.pods {
		if p.hash == hash && !p.terminating && p.ready && !p.readySince.Add(minReady).After(now) {
			return true
		}
	}
	return false
}

// availableOld returns a pinned non-current revision whose pod is
// available, the last one pinned first.
func (v nodeView) availableOld(current string, minReady time.Duration, now time.Time) (string, bool) {
	for _, h := range slices.Backward(v.pins) {
		if h != current && v.available(h, minReady, now) {
			return h, true
		}
	}
	return "", false
}

// firstPodHash is the revision of the node's oldest reported pod that is
// not terminating ("" for none), what an unpinned node keeps.
func (v nodeView) firstPodHash() string {
	for _, p := range v.pods {
		if !p.terminating {
			return p.hash
		}
	}
	return ""
}

func (v nodeView) onlyCurrent(hash string) bool { return len(v.pins) == 1 && v.pins[0] == hash }

// planRollout is one step of the DaemonSet rollout (K8S-SEMANTICS.md §4.4
// to §4.6, on pin lists instead of pod deletions): it pins unpinned
// eligible nodes to what they run, unpins ineligible ones, and moves nodes
// onto the current revision within the update strategy's budget. It does
// no I/O; nodes are taken in name order so that equal inputs give equal
// plans.
func planRollout(in rolloutInput) (*rolloutPlan, error) {
	ds := in.ds
	minReady := time.Duration(ds.Spec.MinReadySeconds) * time.Second
	nodes := slices.Clone(in.nodes)
	slices.SortFunc(nodes, func(a, b rolloutNode) int { return strings.Compare(a.name, b.name) })

	plan := &rolloutPlan{pins: map[string][]string{}}
	var views []nodeView
	for i := range nodes {
		n := &nodes[i]
		if !n.eligible {
			if n.pins != nil && !n.keep {
				plan.pins[n.name] = nil // the agent stops the pod by eligibility anyway
			}
			continue
		}
		v := nodeView{rolloutNode: n, pins: n.pins}
		if len(v.pins) == 0 {
			// Keep what runs: an upgrade from unpinned agents restarts
			// nothing, outside the budget.
			h := v.firstPodHash()
			if !in.recorded[h] {
				h = in.hash // no pod, or one whose template is lost: replaced
			}
			v.pins = []string{h}
		}
		views = append(views, v)
	}
	maxUnavailable, maxSurge, err := rolloutBudget(ds, len(views))
	if err != nil {
		return nil, err
	}
	avail := func(v nodeView, h string) bool { return v.available(h, minReady, in.now) }
	moveToCurrent := func(v *nodeView) {
		if !slices.Contains(v.pins, in.hash) {
			plan.moved++
		}
		v.pins = []string{in.hash}
	}

	switch {
	case ds.Spec.UpdateStrategy.Type == appsv1.OnDeleteDaemonSetStrategyType:
		for i := range views {
			v := &views[i]
			switch {
			case v.onlyCurrent(in.hash):
			case v.podDeleted || (v.reachable && v.firstPodHash() == ""):
				moveToCurrent(v)
			case v.pins[len(v.pins)-1] == in.hash && avail(*v, in.hash):
				v.pins = []string{in.hash} // a surge left over from RollingUpdate
			}
		}
	case maxSurge == 0:
		// §4.4: count what is unavailable already, move unavailable old
		// nodes at once, then spend what is left of the budget.
		numUnavailable := 0
		var candidates []*nodeView
		for i := range views {
			v := &views[i]
			if v.pins[len(v.pins)-1] == in.hash {
				if len(v.pins) > 1 {
					v.pins = []string{in.hash} // no surge any more
				}
				if !v.reachable || !avail(*v, in.hash) {
					numUnavailable++
				}
				continue
			}
			old, oldAvailable := v.availableOld(in.hash, minReady, in.now)
			switch {
			case !v.reachable:
				numUnavailable++ // an offline node keeps its revision
			case !oldAvailable:
				moveToCurrent(v)
				numUnavailable++
			default:
				v.pins = []string{old} // ends a surge to a revision no longer current
				candidates = append(candidates, v)
			}
		}
		for _, v := range candidates[:min(len(candidates), max(0, maxUnavailable-numUnavailable))] {
			moveToCurrent(v)
		}
	default:
		// §4.5: a surge pod starts next to an available old one; the old
		// one goes when the new one is available.
		numSurge := 0
		type candidate struct {
			v   *nodeView
			old string
		}
		var candidates []candidate
		for i := range views {
			v := &views[i]
			if v.pins[len(v.pins)-1] == in.hash {
				if len(v.pins) > 1 {
					if avail(*v, in.hash) {
						v.pins = []string{in.hash}
					} else {
						numSurge++
					}
				}
				continue
			}
			old, oldAvailable := v.availableOld(in.hash, minReady, in.now)
			switch {
			case !v.reachable:
				if len(v.pins) > 1 {
					numSurge++ // it still runs two revisions
				}
			case !oldAvailable:
				moveToCurrent(v)
			default:
				v.pins = []string{old} // ends a surge to a revision no longer current
				candidates = append(candidates, candidate{v, old})
			}
		}
		for _, c := range candidates[:min(len(candidates), max(0, maxSurge-numSurge))] {
			plan.moved++
			c.v.pins = []string{c.old, in.hash}
		}
	}

	plan.complete = true
	for _, v := range views {
		switch {
		case v.onlyCurrent(in.hash) && v.reachable && avail(v, in.hash):
			plan.updated++
		case !v.reachable || !slices.ContainsFunc(v.pins, func(h string) bool { return avail(v, h) }):
			plan.unavailable++
		default:
			plan.pending++
		}
		if avail(v, in.hash) {
			plan.availableAtCurrent++
		}
		if v.reachable && !(v.onlyCurrent(in.hash) && avail(v, in.hash)) {
			plan.complete = false
		}
		if !slices.Equal(v.pins, v.rolloutNode.pins) {
			plan.pins[v.name] = v.pins
		}
		for _, p := range v.pods {
			if wait := p.readySince.Add(minReady).Sub(in.now); p.ready && !p.terminating && wait > 0 &&
				slices.Contains(v.pins, p.hash) && (plan.requeue == 0 || wait < plan.requeue) {
				plan.requeue = wait
			}
		}
	}
	return plan, nil
}

// rolloutBudget is api.RollingUpdateBudget for the RollingUpdate strategy;
// OnDelete has no budget.
func rolloutBudget(ds *appsv1.DaemonSet, desired int) (maxUnavailable, maxSurge int, err error) {
	if ds.Spec.UpdateStrategy.Type == appsv1.OnDeleteDaemonSetStrategyType {
		return 0, 0, nil
	}
	return api.RollingUpdateBudget(ds, desired)
}
