package agent

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/daemonlet/daemonlet/runtime"
	"github.com/daemonlet/daemonlet/store"
)

// Runtime is what the agent needs from the pod runtime: images, sandboxes
// and containers. *runtime.Runtime implements it, and so does
// runtimetest.Fake. Errors are classified with containerd's errdefs.
type Runtime interface {
	// EnsureImage makes the image present under the pull policy and
	// reports whether it pulled.
	EnsureImage(ctx context.Context, ref string, policy corev1.PullPolicy) (bool, error)
	// RunSandbox creates the pod's sandbox or returns the existing one.
	RunSandbox(ctx context.Context, pod *runtime.Pod) (*runtime.Sandbox, error)
	// RemoveSandbox tears the pod's sandbox down; a missing one succeeds.
	RemoveSandbox(ctx context.Context, podUID string) error
	// ListSandboxes returns the UIDs of the pods that have a sandbox.
	ListSandboxes(ctx context.Context) ([]string, error)
	// CreateContainer creates, without starting, one attempt of a container.
	CreateContainer(ctx context.Context, pod *runtime.Pod, sb *runtime.Sandbox, c *corev1.Container, attempt int, init bool) (string, error)
	// StartContainer starts a created container.
	StartContainer(ctx context.Context, id string) error
	// StopContainer runs the preStop hook, then signals, then kills once
	// the grace period is over; a stopped or missing container succeeds.
	StopContainer(ctx context.Context, id string, grace time.Duration) error
	// RemoveContainer deletes a container; a missing one succeeds.
	RemoveContainer(ctx context.Context, id string) error
	// ListContainers returns every daemonlet container with its state.
	ListContainers(ctx context.Context) ([]runtime.Container, error)
	// WaitExit returns a channel closed when the container's task exits.
	WaitExit(ctx context.Context, id string) (<-chan struct{}, error)
	// Exec runs cmd in a running container until it exits or ctx ends
	// and returns its exit code and output; exec probes use it.
	Exec(ctx context.Context, id string, cmd []string) (int, []byte, error)
}

// Store is what the agent needs from its node-local persistence: the
// last-known desired state per source and one record per pod.
type Store interface {
	// ReplaceDesired replaces the whole desired set of one source.
	ReplaceDesired(source string, recs []store.DesiredRecord) error
	// ListDesired returns every desired record, plus per-key decode errors.
	ListDesired() ([]store.DesiredRecord, map[string]error, error)
	// PutPod writes a pod record.
	PutPod(rec store.PodRecord) error
	// DeletePod removes a pod record; removing a missing one succeeds.
	DeletePod(uid string) error
	// ListPods returns every pod record, plus per-key decode errors.
	ListPods() ([]store.PodRecord, map[string]error, error)
	// ReplaceObjects replaces the whole ConfigMap and Secret set of one
	// source; Secrets are encrypted at rest.
	ReplaceObjects(source string, recs []store.ObjectRecord) error
	// ListObjects returns every stored object, plus per-key errors.
	ListObjects() ([]store.ObjectRecord, map[string]error, error)
}
