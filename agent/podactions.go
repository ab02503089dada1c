package agent

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/daemonlet/daemonlet/runtime"
	"github.com/daemonlet/daemonlet/store"
)

// Kubelet's container restart back-off (CrashLoopBackOff): the first
// restart is immediate, then 10s doubling up to 300s; a container that ran
// for more than 10 minutes starts the sequence over.
const (
	crashBackOffInitial = 10 * time.Second
	crashBackOffMax     = 300 * time.Second
	crashBackOffReset   = 10 * time.Minute
)

// Kubelet's image pull back-off: 10s doubling up to 300s.
const (
	pullBackOffInitial = 10 * time.Second
	pullBackOffMax     = 300 * time.Second
)

// syncErrorRetry is kubelet's pod sync error back-off (backOffPeriod),
// used after a failed create, start or sandbox setup.
const syncErrorRetry = 10 * time.Second

// Waiting reasons, as kubelet reports them.
const (
	reasonCrashLoopBackOff  = "CrashLoopBackOff"
	reasonErrImagePull      = "ErrImagePull"
	reasonImagePullBackOff  = "ImagePullBackOff"
	reasonErrImageNeverPull = "ErrImageNeverPull"
	reasonInvalidImageName  = "InvalidImageName"
	reasonCreateError       = "CreateContainerError"
	// reasonCreateConfigError: a ConfigMap or Secret (or one of its keys)
	// that the container needs is missing and not optional.
	reasonCreateConfigError = "CreateContainerConfigError"
	reasonRunError          = "RunContainerError"
	reasonSandboxError      = "CreatePodSandboxError"
	reasonCreating          = "ContainerCreating"
	reasonPodInitializing   = "PodInitializing"
	reasonUnsupported       = "UnsupportedPodSpec"
)

// crashBackOff decides when an exited container may run again, as kubelet's
// per-container back-off does. prev is the delay recorded at the previous
// restart (zero before the first). It returns the instant of the restart
// and the delay to record when that restart happens.
func crashBackOff(prev time.Duration, startedAt, finishedAt time.Time) (restartAt time.Time, next time.Duration) {
	ranLong := !startedAt.IsZero() && finishedAt.Sub(startedAt) > crashBackOffReset
	if prev == 0 || ranLong {
		return finishedAt, crashBackOffInitial
	}
	return finishedAt.Add(prev), min(2*prev, crashBackOffMax)
}

// nextPullBackOff is the delay after one more failed pull.
func nextPullBackOff(prev time.Duration) time.Duration {
	if prev == 0 {
		return pullBackOffInitial
	}
	return min(2*prev, pullBackOffMax)
}

// containerStart is one container to start.
type containerStart struct {
	Name    string
	Init    bool
	Index   int // in Spec.InitContainers or Spec.Containers
	Attempt int
	// ExistingID is a container created but never started (an agent that
	// stopped half-way); it is started rather than created again.
	ExistingID string
	// Record is the container's record once this attempt is made.
	Record store.ContainerRecord
}

// containerWait is a container held back by its restart back-off.
type containerWait struct {
	Name    string
	Until   time.Time
	Message string
}

// podActions is what one pass of a pod worker must do.
type podActions struct {
	// Kill lists containers to stop and remove: names the spec no longer
	// has, spec hashes that changed, superseded attempts still running.
	Kill []string
	// Remove lists exited containers superseded by a newer attempt.
	Remove []string
	// InitDone says every init container has succeeded (or an app
	// container already exists, which proves it).
	InitDone bool
	// Start lists, in order, at most one init container or else the app
	// containers to start.
	Start []containerStart
	// Wait lists containers in crash back-off.
	Wait []containerWait
	// Latest is the newest attempt of each container of the spec.
	Latest map[string]runtime.Container
}

// WakeAt is when the earliest back-off ends (zero if none).
func (a podActions) WakeAt() time.Time {
	var t time.Time
	for _, w := range a.Wait {
		if t.IsZero() || w.Until.Before(t) {
			t = w.Until
		}
	}
	return t
}

func (a podActions) String() string {
	var parts []string
	if len(a.Kill) > 0 {
		parts = append(parts, "kill="+strings.Join(a.Kill, ","))
	}
	if len(a.Remove) > 0 {
		parts = append(parts, "remove="+strings.Join(a.Remove, ","))
	}
	var starts []string
	for _, s := range a.Start {
		n := fmt.Sprintf("%s#%d", s.Name, s.Attempt)
		if s.Init {
			n = "init:" + n
		}
		if s.ExistingID != "" {
			n += "(created)"
		}
		starts = append(starts, n)
	}
	if len(starts) > 0 {
		parts = append(parts, "start="+strings.Join(starts, ","))
	}
	for _, w := range a.Wait {
		parts = append(parts, fmt.Sprintf("wait=%s@%s", w.Name, w.Until.UTC().Format(time.RFC3339)))
	}
	if len(parts) == 0 {
		return "in sync"
	}
	return strings.Join(parts, " ")
}

// computePodActions compares a pod's spec with its observed containers
// and the containers' records, at time now, and says what to do. It does
// no I/O. podName (namespace/name) appears in back-off messages.
//
// Init containers run one at a time in spec order, each to a zero exit,
// before the app containers, which start in spec order. With restartPolicy
// Always (the only one a DaemonSet allows) every exit is restarted under
// crashBackOff.
func computePodActions(podName string, spec *corev1.PodSpec, observed []runtime.Container, recs map[string]store.ContainerRecord, now time.Time) podActions {
	acts := podActions{Latest: map[string]runtime.Container{}}
	wantHash := map[string]string{}
	isInit := map[string]bool{}
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		wantHash[c.Name], isInit[c.Name] = runtime.ContainerSpecHash(c), true
	}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		wantHash[c.Name] = runtime.ContainerSpecHash(c)
	}

	// Step 1: sort the observed containers into keep, kill and remove.
	var valid []runtime.Container
	for _, c := range observed {
		h, known := wantHash[c.Name]
		if !known || h != c.SpecHash || isInit[c.Name] != c.Init {
			acts.Kill = append(acts.Kill, c.ID)
			continue
		}
		valid = append(valid, c)
		if l, ok := acts.Latest[c.Name]; !ok || c.Attempt > l.Attempt {
			acts.Latest[c.Name] = c
		}
	}
	for _, c := range valid {
		if c.ID == acts.Latest[c.Name].ID {
			continue
		}
		if c.State == runtime.StateExited {
			acts.Remove = append(acts.Remove, c.ID)
		} else {
			acts.Kill = append(acts.Kill, c.ID)
		}
	}

	// Step 2: init containers, one at a time. An app container that
	// exists proves the init phase finished, even if the init containers
	// were removed since.
	acts.InitDone = true
	if !anyStarted(spec.Containers, acts.Latest) {
		for i := range spec.InitContainers {
			c := &spec.InitContainers[i]
			l, ok := acts.Latest[c.Name]
			if ok && l.State == runtime.StateExited && l.ExitCode == 0 {
				continue
			}
			acts.InitDone = false
			if !ok || l.State == runtime.StateCreated || l.State == runtime.StateExited {
				acts.planStart(podName, c.Name, true, i, l, ok, recs[c.Name], now)
			}
			return acts
		}
	}

	// Step 3: app containers, in spec order.
	for i := range spec.Containers {
		c := &spec.Containers[i]
		l, ok := acts.Latest[c.Name]
		if ok && (l.State == runtime.StateRunning || l.State == runtime.StateUnknown) {
			continue
		}
		acts.planStart(podName, c.Name, false, i, l, ok, recs[c.Name], now)
	}
	return acts
}

// planStart plans the next attempt of one container whose latest instance
// (if any) is created or exited.
func (a *podActions) planStart(podName, name string, init bool, index int, latest runtime.Container, exists bool, rec store.ContainerRecord, now time.Time) {
	s := containerStart{Name: name, Init: init, Index: index, Record: rec}
	switch {
	case exists && latest.State == runtime.StateCreated:
		s.ExistingID, s.Attempt = latest.ID, latest.Attempt
		s.Record.RestartCount = latest.Attempt
	case exists && latest.State == runtime.StateExited:
		restartAt, next := crashBackOff(rec.BackOff, latest.StartedAt, latest.FinishedAt)
		if now.Before(restartAt) {
			a.Wait = append(a.Wait, containerWait{
				Name:    name,
				Until:   restartAt,
				Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", rec.BackOff, name, podName),
			})
			return
		}
		s.Attempt = latest.Attempt + 1
		s.Record = store.ContainerRecord{
			RestartCount:   s.Attempt,
			LastExitCode:   latest.ExitCode,
			LastFinishedAt: latest.FinishedAt,
			BackOff:        next,
			BackOffUntil:   restartAt,
		}
	case rec.RestartCount > 0 || !rec.LastFinishedAt.IsZero():
		// The record knows earlier attempts whose containers are gone.
		s.Attempt = rec.RestartCount + 1
		s.Record.RestartCount = s.Attempt
	}
	a.Start = append(a.Start, s)
}

// anyStarted reports whether any of the containers has an instance.
func anyStarted(cs []corev1.Container, latest map[string]runtime.Container) bool {
	for i := range cs {
		if _, ok := latest[cs[i].Name]; ok {
			return true
		}
	}
	return false
}
