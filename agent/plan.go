package agent

import (
	"fmt"
	"slices"
	"strings"

	"github.com/daemonlet/daemonlet/runtime"
)

// podIntent is what the desired state wants for one pod of a DaemonSet.
// The planner takes a DaemonSet's intents together, oldest revision first.
type podIntent struct {
	DaemonSet string // the DaemonSet's namespace/name
	Key       string // namespace/pod name: podName, or the name planPods chose
	UID       string
	// Decision and Why are the DaemonSet's: eligibility is decided per
	// DaemonSet, as the controller decides it per node.
	Decision decision
	Why      string // why it must stop, with decideStop
	// Kept marks the old revision of a surge: its pod keeps running, and
	// is adopted after a restart, but is never started.
	Kept bool
	// Hold marks the only intent of a held DaemonSet (DesiredPod.held):
	// its pods run on as they are and none starts. It has no pod.
	Hold    bool
	Pod     *runtime.Pod
	Desired DesiredPod
}

// podObserved is a pod the agent knows of: one with a worker, or one found
// in the runtime or the store at start that has no worker yet (an orphan).
type podObserved struct {
	DaemonSet   string // namespace/name of its DaemonSet; empty when unknown
	Key         string // namespace/pod name; empty when only a sandbox is known
	UID         string
	Worker      bool
	Terminating bool // stop under way (worker) or interrupted (record)
}

// podStop asks for one pod to be stopped.
type podStop struct {
	UID    string
	Reason string
}

// podPlan is what one sync of the agent does with its pods.
type podPlan struct {
	Start   []podIntent // new workers, including adoptions of orphans
	Update  []podIntent // workers that get the latest pod
	Stop    []podStop
	Waiting []string // keys whose new pod waits for an old one to go
}

func (p podPlan) String() string {
	var b strings.Builder
	list := func(name string, items []string) {
		if len(items) > 0 {
			fmt.Fprintf(&b, "%s=[%s] ", name, strings.Join(items, " "))
		}
	}
	var start, update, stop []string
	for _, i := range p.Start {
		start = append(start, i.Key+"@"+i.UID)
	}
	for _, i := range p.Update {
		update = append(update, i.Key)
	}
	for _, s := range p.Stop {
		stop = append(stop, s.UID+"("+s.Reason+")")
	}
	list("start", start)
	list("update", update)
	list("stop", stop)
	list("waiting", p.Waiting)
	if b.Len() == 0 {
		return "nothing to do"
	}
	return strings.TrimSpace(b.String())
}

// planPods compares the intents with the pods the agent knows and decides
// which workers to start, update and stop. It does no I/O.
//
// It works per DaemonSet: the pods of a DaemonSet are those whose
// DaemonSet, UID or (for a pod known only by its containers) name match
// its intents. Without surge a new revision replaces the old pod: the old
// pod is stopped first and the new one starts once the old one is gone.
// During a surge (two intents, the older Kept) the old pod runs on, the
// new one starts beside it under surgePodName if the old one holds
// podName, and the old one stops once the intents drop it. A pod keeps the
// name it runs under. Pods nobody wants any more are stopped only when
// deletions are allowed (every source has spoken, or the last-known state
// came from the store), except pods whose stop was already under way
// before an agent restart.
func planPods(intents []podIntent, observed []podObserved, allowDeletions bool) podPlan {
	var plan podPlan
	byUID := make(map[string]podObserved, len(observed))
	// A pod whose DaemonSet is known can belong to that DaemonSet only:
	// indexing such pods spares comparing every pod with every DaemonSet.
	owned := map[string][]int{} // indexes into observed, by DaemonSet
	var unowned []int
	for i, o := range observed {
		byUID[o.UID] = o
		if o.DaemonSet != "" {
			owned[o.DaemonSet] = append(owned[o.DaemonSet], i)
		} else {
			unowned = append(unowned, i)
		}
	}
	claimed := map[string]bool{}
	for len(intents) > 0 {
		n := 1
		for n < len(intents) && intents[n].DaemonSet == intents[0].DaemonSet {
			n++
		}
		group := intents[:n]
		intents = intents[n:]
		candidates := slices.Clip(owned[group[0].DaemonSet])
		for _, i := range unowned {
			if belongs(group, observed[i]) {
				candidates = append(candidates, i)
			}
		}
		slices.Sort(candidates) // in the order observed lists them
		var mine []podObserved
		for _, i := range candidates {
			if o := observed[i]; !claimed[o.UID] {
				claimed[o.UID] = true
				mine = append(mine, o)
			}
		}
		plan.daemonSet(group, mine, byUID)
	}
	for _, o := range observed {
		if claimed[o.UID] || (!allowDeletions && !o.Terminating) {
			continue
		}
		plan.Stop = append(plan.Stop, podStop{UID: o.UID, Reason: "no longer desired"})
	}
	return plan
}

// belongs says whether an observed pod is one of the DaemonSet's.
func belongs(group []podIntent, o podObserved) bool {
	if o.DaemonSet != "" {
		return o.DaemonSet == group[0].DaemonSet
	}
	for _, in := range group {
		if o.UID == in.UID || (o.Key != "" && o.Key == in.Key) {
			return true
		}
	}
	return false
}

// daemonSet plans one DaemonSet: its intents, oldest revision first, and
// the pods of it the agent knows.
func (p *podPlan) daemonSet(group []podIntent, mine []podObserved, byUID map[string]podObserved) {
	first, newest := group[0], group[len(group)-1]
	switch {
	case first.Decision == decideStop:
		for _, o := range mine {
			p.Stop = append(p.Stop, podStop{UID: o.UID, Reason: first.Why})
		}
		return
	case first.Hold:
		return
	}
	wanted := map[string]bool{}
	for _, in := range group {
		wanted[in.UID] = true
	}
	names := map[string]bool{}
	var replaced []podObserved
	for _, o := range mine {
		if o.Key != "" {
			names[o.Key] = true
		}
		if !wanted[o.UID] {
			replaced = append(replaced, o)
		}
	}
	if first.Decision == decideRun {
		for _, o := range replaced {
			p.Stop = append(p.Stop, podStop{UID: o.UID, Reason: "replaced by revision " + newest.Pod.Revision})
		}
	}
	for _, in := range group {
		if o, exists := byUID[in.UID]; exists {
			in = in.named(o.Key)
			switch {
			case !in.Kept:
				p.keep(in, o)
			case !o.Worker:
				p.Start = append(p.Start, in) // adopt the old pod of a surge
			}
			continue
		}
		if in.Kept || first.Decision == decideKeep {
			continue
		}
		if len(replaced) > 0 {
			p.Waiting = append(p.Waiting, in.Key)
			continue
		}
		if names[in.Key] {
			ns, name := splitKey(in.Key)
			in = in.named(ns + "/" + surgePodName(name, in.Pod.Revision))
		}
		names[in.Key] = true
		p.Start = append(p.Start, in)
	}
}

// named is the intent with its pod under another name (namespace/name);
// an empty key keeps the name.
func (in podIntent) named(key string) podIntent {
	if key == "" || key == in.Key {
		return in
	}
	pod := *in.Pod
	_, pod.Name = splitKey(key)
	in.Pod, in.Key = &pod, key
	return in
}

// keep keeps an existing pod: a worker gets the latest pod unless it is
// already stopping (then the new pod waits for it to finish), and an
// orphan is adopted by a new worker.
func (p *podPlan) keep(in podIntent, same podObserved) {
	switch {
	case !same.Worker:
		p.Start = append(p.Start, in)
	case same.Terminating:
		p.Waiting = append(p.Waiting, in.Key)
	default:
		p.Update = append(p.Update, in)
	}
}

// owner is the namespace/name of the pod's DaemonSet, empty when unknown
// (a pod known only by its containers or its sandbox).
func (id podIdentity) owner() string {
	if id.DaemonSet == "" {
		return ""
	}
	return id.Namespace + "/" + id.DaemonSet
}
