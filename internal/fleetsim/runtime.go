package fleetsim

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/runtime"
	"github.com/daemonlet/daemonlet/runtime/runtimetest"
)

// Pod identifies one daemon pod on one simulated node.
type Pod struct {
	Node      string
	Namespace string
	Name      string
	UID       string
	// Revision is the pod's controller-revision-hash.
	Revision string
}

// EventKind says what an Event records.
type EventKind string

// The events a simulated agent records.
const (
	// EventSeen: the agent's server source handed the agent's sync loop a
	// desired set holding a DaemonSet revision this agent had not been
	// given before (Pod.Name is the DaemonSet's name, Pod.UID is empty).
	// It is the moment the change enters the agent's desired state.
	EventSeen EventKind = "Seen"
	// EventCreate: the agent asked the runtime to create a container.
	EventCreate EventKind = "Create"
	// EventCreateFailed: Config.Fail made that create fail.
	EventCreateFailed EventKind = "CreateFailed"
	// EventStart: a container runs (after Config.StartDelay).
	EventStart EventKind = "Start"
	// EventStop: the agent stopped a container.
	EventStop EventKind = "Stop"
)

// Event is one observation of a simulated agent, timestamped when it
// happened.
type Event struct {
	Time      time.Time
	Kind      EventKind
	Pod       Pod
	Container string
	// Generation is the DaemonSet's metadata.generation (EventSeen only).
	Generation int64
	// Err is the injected failure (EventCreateFailed only).
	Err error
}

// simRuntime is the fake runtime of one simulated node with the fleet's
// start delay and failure injection, recording what the agent asks of it.
type simRuntime struct {
	*runtimetest.Fake
	a *Agent
}

var _ agent.Runtime = (*simRuntime)(nil)

func (r *simRuntime) podOf(p *runtime.Pod) Pod {
	return Pod{Node: r.a.name, Namespace: p.Namespace, Name: p.Name, UID: p.UID, Revision: p.Revision}
}

// CreateContainer records the request, fails it when Config.Fail says so,
// and otherwise creates the container in the fake.
func (r *simRuntime) CreateContainer(ctx context.Context, pod *runtime.Pod, sb *runtime.Sandbox, c *corev1.Container, attempt int, init bool) (string, error) {
	p := r.podOf(pod)
	r.a.record(Event{Kind: EventCreate, Pod: p, Container: c.Name})
	if fail := r.a.fleet.cfg.Fail; fail != nil {
		if err := fail(p, c.Name); err != nil {
			r.a.record(Event{Kind: EventCreateFailed, Pod: p, Container: c.Name, Err: err})
			return "", fmt.Errorf("container %s of pod %s on %s: create: %w", c.Name, p.Name, p.Node, err)
		}
	}
	return r.Fake.CreateContainer(ctx, pod, sb, c, attempt, init)
}

// StartContainer waits Config.StartDelay (or until ctx ends), then starts
// the container in the fake.
func (r *simRuntime) StartContainer(ctx context.Context, id string) error {
	st, err := r.ContainerStatus(ctx, id)
	if err != nil {
		return err
	}
	p := Pod{Node: r.a.name, Namespace: st.Namespace, Name: st.PodName, UID: st.PodUID, Revision: st.Revision}
	if delay := r.a.fleet.cfg.StartDelay; delay != nil {
		if d := delay(p); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("container %s: start: %w", id, ctx.Err())
			}
		}
	}
	if err := r.Fake.StartContainer(ctx, id); err != nil {
		return err
	}
	r.a.record(Event{Kind: EventStart, Pod: p, Container: st.Name})
	return nil
}

// StopContainer stops the container in the fake and records it when it
// was running.
func (r *simRuntime) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	st, statusErr := r.ContainerStatus(ctx, id)
	if err := r.Fake.StopContainer(ctx, id, grace); err != nil {
		return err
	}
	if statusErr == nil && st.State == runtime.StateRunning {
		r.a.record(Event{Kind: EventStop, Pod: Pod{Node: r.a.name, Namespace: st.Namespace, Name: st.PodName, UID: st.PodUID, Revision: st.Revision}, Container: st.Name})
	}
	return nil
}
