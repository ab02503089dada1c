// Package runtimetest provides Fake, a small stateful stand-in for the
// containerd-backed runtime, for unit tests of the agent.
//
// Fake keeps containers with their states, assigns PIDs from a counter,
// timestamps everything with an injected clock, and lets a test make a
// container exit (Exit), make pulls or creates fail (FailPull, FailCreate) or
// hang (BlockCreate), and answer commands run in a container (HandleExec). It is a state machine rather than a set of per-method
// mocks, so that the agent can call it in any order and always see a
// consistent world.
package runtimetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/daemonlet/daemonlet/runtime"
)

// Fake is an in-memory runtime. The zero value is not usable; call New.
type Fake struct {
	clock clock.PassiveClock

	mu         sync.Mutex // guards every field below
	images     map[string]bool
	pulls      map[string][]time.Time
	pullErr    map[string]error
	createErr  map[string]error
	createHold map[string]chan struct{}
	sandboxes  map[string]*runtime.Sandbox
	containers map[string]*container
	stops      map[string]Stop
	events     []string
	nextPID    uint32
	sbRoot     string
	podIP      string
	execFns    map[string]ExecFunc
	execs      map[string][]time.Time
}

type container struct {
	status runtime.Container
	spec   corev1.Container // as CreateContainer received it
	exited chan struct{}    // closed when the task exits
}

// New returns an empty fake runtime whose timestamps come from clk.
func New(clk clock.PassiveClock) *Fake {
	return &Fake{
		clock:      clk,
		images:     map[string]bool{},
		pulls:      map[string][]time.Time{},
		pullErr:    map[string]error{},
		createErr:  map[string]error{},
		createHold: map[string]chan struct{}{},
		sandboxes:  map[string]*runtime.Sandbox{},
		containers: map[string]*container{},
		stops:      map[string]Stop{},
		nextPID:    1000,
		podIP:      "10.88.0.2",
		execFns:    map[string]ExecFunc{},
		execs:      map[string][]time.Time{},
	}
}

// AddImage makes an image present, as an air-gapped import would.
func (f *Fake) AddImage(ref string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[ref] = true
}

// FailPull makes every pull of ref fail with err until called with nil.
func (f *Fake) FailPull(ref string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.pullErr, ref)
		return
	}
	f.pullErr[ref] = err
}

// FailCreate makes every create of a container with that name fail with err
// until called with nil.
func (f *Fake) FailCreate(name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.createErr, name)
		return
	}
	f.createErr[name] = err
}

// BlockCreate makes creates of a container with that name hang until the
// returned release function is called or the caller's context ends.
func (f *Fake) BlockCreate(name string) (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	f.createHold[name] = ch
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			close(ch)
			if f.createHold[name] == ch {
				delete(f.createHold, name)
			}
		})
	}
}

// Pulls returns when ref was pulled (by the injected clock), failed pulls
// included, so that tests can check back-off delays exactly.
func (f *Fake) Pulls(ref string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.pulls[ref]...)
}

// Events returns the log of container operations, such as "create app#0",
// "start app#0", "stop app#0" and "remove app#0", in call order.
func (f *Fake) Events() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.events...)
}

// Stop is one StopContainer call: when it came and the grace it gave.
type Stop struct {
	At    time.Time
	Grace time.Duration
}

// Stopped returns the last StopContainer call for id.
func (f *Fake) Stopped(id string) (Stop, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.stops[id]
	return s, ok
}

// HasSandbox reports whether the pod has a sandbox.
func (f *Fake) HasSandbox(podUID string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.sandboxes[podUID]
	return ok
}

// Exit makes a running container's task exit with the given code.
func (f *Fake) Exit(id string, code int32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if c.status.State != runtime.StateRunning {
		return fmt.Errorf("container %s is %v: %w", id, c.status.State, errdefs.ErrFailedPrecondition)
	}
	f.exitLocked(c, code)
	return nil
}

func (f *Fake) exitLocked(c *container, code int32) {
	c.status.State = runtime.StateExited
	c.status.ExitCode = code
	c.status.FinishedAt = f.clock.Now()
	c.status.Reason = "Error"
	if code == 0 {
		c.status.Reason = "Completed"
	}
	close(c.exited)
}

func (f *Fake) record(format string, args ...any) {
	f.events = append(f.events, fmt.Sprintf(format, args...))
}

// EnsureImage pulls ref unless it is present and the policy allows reuse.
func (f *Fake) EnsureImage(ctx context.Context, ref string, policy corev1.PullPolicy) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if policy != corev1.PullAlways && f.images[ref] {
		return false, nil
	}
	if policy == corev1.PullNever {
		return false, fmt.Errorf("image %s is not present and imagePullPolicy is Never: %w", ref, errdefs.ErrNotFound)
	}
	f.pulls[ref] = append(f.pulls[ref], f.clock.Now())
	if err := f.pullErr[ref]; err != nil {
		return false, fmt.Errorf("pull image %s: %w", ref, err)
	}
	f.images[ref] = true
	return true, nil
}

// RunSandbox creates the pod's sandbox or returns the existing one.
func (f *Fake) RunSandbox(ctx context.Context, pod *runtime.Pod) (*runtime.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sb, ok := f.sandboxes[pod.UID]; ok {
		return sb, nil
	}
	sb := &runtime.Sandbox{PodUID: pod.UID, Dir: "/fake/pods/" + pod.UID, IP: f.podIP, HostIP: "127.0.0.1"}
	if f.sbRoot != "" {
		sb.Dir = filepath.Join(f.sbRoot, pod.UID)
		for _, v := range pod.Spec.Volumes {
			if err := os.MkdirAll(sb.VolumePath(v.Name), 0o755); err != nil {
				return nil, err
			}
		}
	}
	f.sandboxes[pod.UID] = sb
	f.record("sandbox %s", pod.Name)
	return sb, nil
}

// SetPodIP gives the sandboxes created afterwards that IP (default
// 10.88.0.2), so that a test can point network probes at its own listeners
// on 127.0.0.1.
func (f *Fake) SetPodIP(ip string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.podIP = ip
}

// ExecFunc answers one command run in a container: its exit code, its
// output, or an error when the command could not run.
type ExecFunc func(ctx context.Context, cmd []string) (int, []byte, error)

// HandleExec makes commands run in containers of that name answer with fn,
// until called with nil; without a handler every command exits 0.
func (f *Fake) HandleExec(name string, fn ExecFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fn == nil {
		delete(f.execFns, name)
		return
	}
	f.execFns[name] = fn
}

// Execs returns when commands were run (by the injected clock) in
// containers of that name, so that tests can check probe periods exactly.
func (f *Fake) Execs(name string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.execs[name]...)
}

// Exec runs cmd in a running container through its HandleExec handler.
func (f *Fake) Exec(ctx context.Context, id string, cmd []string) (int, []byte, error) {
	f.mu.Lock()
	c, ok := f.containers[id]
	if !ok {
		f.mu.Unlock()
		return -1, nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if c.status.State != runtime.StateRunning {
		f.mu.Unlock()
		return -1, nil, fmt.Errorf("container %s is %v: %w", id, c.status.State, errdefs.ErrFailedPrecondition)
	}
	name := c.status.Name
	f.execs[name] = append(f.execs[name], f.clock.Now())
	fn := f.execFns[name]
	f.mu.Unlock()
	if fn == nil {
		return 0, nil, nil
	}
	return fn(ctx, cmd)
}

// SetSandboxRoot makes sandboxes created afterwards real directories under
// dir, each with its volumes' directories, so that a test can check the
// files an agent writes into volumes; without it a sandbox's Dir is a path
// that does not exist.
func (f *Fake) SetSandboxRoot(dir string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sbRoot = dir
}

// CreatedSpec returns the container spec that CreateContainer received for
// the container id, as the agent resolved it (env values from ConfigMaps and
// Secrets).
func (f *Fake) CreatedSpec(id string) (corev1.Container, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return corev1.Container{}, false
	}
	return *c.spec.DeepCopy(), true
}

// RemoveSandbox removes the pod's sandbox; a missing one is not an error.
func (f *Fake) RemoveSandbox(ctx context.Context, podUID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sandboxes, podUID)
	return nil
}

// ListSandboxes returns the UIDs of the pods that have a sandbox, sorted.
func (f *Fake) ListSandboxes(ctx context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.sandboxes))
	for uid := range f.sandboxes {
		out = append(out, uid)
	}
	sort.Strings(out)
	return out, nil
}

// CreateContainer creates one attempt of a container, labelled as the real
// runtime labels it. The image must be present.
func (f *Fake) CreateContainer(ctx context.Context, pod *runtime.Pod, sb *runtime.Sandbox, c *corev1.Container, attempt int, init bool) (string, error) {
	f.mu.Lock()
	hold := f.createHold[c.Name]
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return "", fmt.Errorf("container %s: create: %w", c.Name, ctx.Err())
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.createErr[c.Name]; err != nil {
		return "", fmt.Errorf("container %s: create: %w", c.Name, err)
	}
	if !f.images[c.Image] {
		return "", fmt.Errorf("container %s: image %s: %w", c.Name, c.Image, errdefs.ErrNotFound)
	}
	id := runtime.ContainerID(pod.UID, c.Name, attempt)
	if _, ok := f.containers[id]; ok {
		return id, fmt.Errorf("container %s: %w", id, errdefs.ErrAlreadyExists)
	}
	labels := map[string]string{
		runtime.LabelPodName:       pod.Name,
		runtime.LabelPodNamespace:  pod.Namespace,
		runtime.LabelPodUID:        pod.UID,
		runtime.LabelPodRevision:   pod.Revision,
		runtime.LabelContainerName: c.Name,
		runtime.LabelAttempt:       strconv.Itoa(attempt),
		runtime.LabelInit:          strconv.FormatBool(init),
		runtime.LabelSpecHash:      runtime.CreatedSpecHash(pod, c),
	}
	f.containers[id] = &container{
		status: runtime.Container{
			ID: id, PodUID: pod.UID, PodName: pod.Name, Namespace: pod.Namespace,
			Name: c.Name, Revision: pod.Revision, Attempt: attempt, Init: init,
			SpecHash: labels[runtime.LabelSpecHash], Labels: labels,
			State: runtime.StateCreated, CreatedAt: f.clock.Now(),
		},
		spec:   *c.DeepCopy(),
		exited: make(chan struct{}),
	}
	f.record("create %s#%d", c.Name, attempt)
	return id, nil
}

// StartContainer starts a created container's task with a fresh PID.
func (f *Fake) StartContainer(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	if c.status.State != runtime.StateCreated {
		return fmt.Errorf("container %s is %v: %w", id, c.status.State, errdefs.ErrFailedPrecondition)
	}
	f.nextPID++
	c.status.PID = f.nextPID
	c.status.State = runtime.StateRunning
	c.status.StartedAt = f.clock.Now()
	f.record("start %s#%d", c.status.Name, c.status.Attempt)
	return nil
}

// StopContainer makes a running container exit as if SIGTERM ended it, and
// remembers the grace period it was given. Stopping a stopped or missing
// container succeeds.
func (f *Fake) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return nil
	}
	f.stops[id] = Stop{At: f.clock.Now(), Grace: grace}
	if c.status.State == runtime.StateRunning {
		f.exitLocked(c, 143)
		f.record("stop %s#%d", c.status.Name, c.status.Attempt)
	}
	return nil
}

// RemoveContainer deletes a container, killing it if it runs. Removing a
// missing container succeeds.
func (f *Fake) RemoveContainer(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return nil
	}
	if c.status.State == runtime.StateRunning {
		f.exitLocked(c, 137)
	}
	delete(f.containers, id)
	f.record("remove %s#%d", c.status.Name, c.status.Attempt)
	return nil
}

// ContainerStatus returns a copy of one container's status.
func (f *Fake) ContainerStatus(ctx context.Context, id string) (runtime.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return runtime.Container{}, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	return c.status, nil
}

// ListContainers returns every container, sorted by ID.
func (f *Fake) ListContainers(ctx context.Context) ([]runtime.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]runtime.Container, 0, len(f.containers))
	for _, c := range f.containers {
		out = append(out, c.status)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// WaitExit returns a channel closed when the container's task exits (at
// once if it already has) or ctx ends.
func (f *Fake) WaitExit(ctx context.Context, id string) (<-chan struct{}, error) {
	f.mu.Lock()
	c, ok := f.containers[id]
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-c.exited:
		case <-ctx.Done():
		}
	}()
	return done, nil
}
