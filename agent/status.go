package agent

import (
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// PodStatus is one daemon pod as `daemonlet get pods` shows it.
type PodStatus struct {
	Namespace string
	Name      string
	UID       string
	// DaemonSet is the owning DaemonSet's name (same namespace).
	DaemonSet string
	Source    string
	Revision  string
	Phase     corev1.PodPhase
	// State is the pod worker's state (Pending, Pulling, Starting,
	// Running, BackOff, Terminating).
	State string
	// Ready and Total give kubectl's READY column (Ready/Total) over the
	// app containers; a running container is ready once its startup
	// probe (if any) and its readiness probe (if any) succeeded.
	Ready    int
	Total    int
	Restarts int
	// StartTime is when the agent first created the pod (its age).
	StartTime time.Time
	// Reason and Message explain a pod that is not running as it should
	// (CrashLoopBackOff, ImagePullBackOff, ErrImagePull, ...).
	Reason     string
	Message    string
	Containers []ContainerStatus
}

// ContainerStatus is one container of a PodStatus.
type ContainerStatus struct {
	Name  string
	Init  bool
	Image string
	ID    string
	// State is Waiting, Running or Terminated, as in the Kubernetes API.
	State        string
	Ready        bool
	Attempt      int
	RestartCount int
	Reason       string
	Message      string
	StartedAt    time.Time
	ExitCode     int32
}

// status is the worker's pod as Pods() reports it.
func (w *podWorker) status() PodStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	ps := PodStatus{
		Namespace: w.id.Namespace,
		Name:      w.id.Name,
		UID:       w.uid,
		DaemonSet: w.id.DaemonSet,
		Source:    w.id.Source,
		Revision:  w.id.Revision,
		State:     w.state.String(),
		StartTime: w.record.CreatedAt,
		Phase:     corev1.PodPending,
	}
	ps.Containers = append([]ContainerStatus(nil), w.view.containers...)
	if w.view.initDone && w.view.appStarted {
		// With restartPolicy Always a started pod stays Running, even
		// while its containers restart (kubelet's getPhase).
		ps.Phase = corev1.PodRunning
	}
	for _, c := range ps.Containers {
		if !c.Init {
			ps.Total++
			if c.Ready {
				ps.Ready++
			}
			ps.Restarts += c.RestartCount
		}
		if ps.Reason == "" && c.State == "Waiting" && c.Reason != reasonCreating && c.Reason != reasonPodInitializing {
			ps.Reason, ps.Message = c.Reason, c.Message
		}
	}
	if w.state == stateFailed {
		ps.Phase, ps.Reason, ps.Message = corev1.PodFailed, reasonUnsupported, w.view.failure
	}
	if w.stopReason != "" {
		ps.Reason, ps.Message = "Terminating", w.stopReason
	}
	return ps
}

// Pods returns the status of every pod the agent manages, sorted by
// namespace and name.
func (a *Agent) Pods() []PodStatus {
	a.mu.Lock()
	workers := make([]*podWorker, 0, len(a.workers))
	for _, w := range a.workers {
		workers = append(workers, w)
	}
	a.mu.Unlock()
	out := make([]PodStatus, 0, len(workers))
	for _, w := range workers {
		out = append(out, w.status())
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].UID < out[j].UID
	})
	return out
}
