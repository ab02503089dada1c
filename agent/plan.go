package agent

import (
	"fmt"
	"strings"

	"github.com/daemonlet/daemonlet/runtime"
)

// podIntent is what the desired state wants for one daemon pod.
type podIntent struct {
	Key      string // namespace/pod name
	UID      string
	Decision decision
	Why      string // why it must stop, with decideStop
	Pod      *runtime.Pod
	Desired  DesiredPod
}

// podObserved is a pod the agent knows of: one with a worker, or one found
// in the runtime or the store at start that has no worker yet (an orphan).
type podObserved struct {
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
// A new revision replaces the old pod without surge: the old pod is
// stopped first and the new one starts once the old one is gone. Pods
// nobody wants any more are stopped only when deletions are allowed (every
// source has spoken, or the last-known state came from the store), except
// pods whose stop was already under way before an agent restart.
func planPods(intents []podIntent, observed []podObserved, allowDeletions bool) podPlan {
	var plan podPlan
	byUID := map[string]podObserved{}
	byKey := map[string][]podObserved{}
	for _, o := range observed {
		byUID[o.UID] = o
		byKey[o.Key] = append(byKey[o.Key], o)
	}
	wanted := map[string]bool{}
	for _, in := range intents {
		wanted[in.Key] = true
		same, exists := byUID[in.UID]
		switch in.Decision {
		case decideStop:
			for _, o := range byKey[in.Key] {
				plan.Stop = append(plan.Stop, podStop{UID: o.UID, Reason: in.Why})
			}
		case decideKeep:
			if exists {
				plan.keep(in, same)
			}
		case decideRun:
			older := false
			for _, o := range byKey[in.Key] {
				if o.UID == in.UID {
					continue
				}
				older = true
				plan.Stop = append(plan.Stop, podStop{UID: o.UID, Reason: "replaced by revision " + in.Desired.Revision})
			}
			switch {
			case exists:
				plan.keep(in, same)
			case older:
				plan.Waiting = append(plan.Waiting, in.Key)
			default:
				plan.Start = append(plan.Start, in)
			}
		}
	}
	for _, o := range observed {
		if wanted[o.Key] || (!allowDeletions && !o.Terminating) {
			continue
		}
		plan.Stop = append(plan.Stop, podStop{UID: o.UID, Reason: "no longer desired"})
	}
	return plan
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
