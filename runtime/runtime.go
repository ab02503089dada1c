package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/moby/sys/signal"
	corev1 "k8s.io/api/core/v1"
)

// runcRuntime is the containerd shim every daemonlet container runs under.
const runcRuntime = "io.containerd.runc.v2"

// Labels that carry what Stop needs after an agent restart, when the pod
// spec is no longer at hand.
const (
	labelPreStop    = "io.daemonlet.container.prestop"
	labelStopSignal = "io.daemonlet.container.stop-signal"
	labelLogPath    = "io.daemonlet.container.log-path"
	labelStartedAt  = "io.daemonlet.container.started-at"
	labelCgroupPath = "io.daemonlet.container.cgroup"
)

// minimumGracePeriod is kubelet's floor for the time a container gets after
// its preStop hook (minimumGracePeriodInSeconds).
const minimumGracePeriod = 2 * time.Second

// Runtime runs pods on one containerd, in one namespace.
type Runtime struct {
	cfg       Config
	client    *client.Client
	sandboxes *sandboxes
	log       *slog.Logger
	lists     listCalls[Container] // ListContainers' shared calls
	// imageLeaseOwner labels the leases of this Runtime's pulls and
	// imports (ReleaseStaleImageLeases).
	imageLeaseOwner string
}

// New connects to containerd and prepares the pod state directories.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = "daemonlet"
	}
	if cfg.RootDir == "" || cfg.PodLogDir == "" || cfg.ContainerLogDir == "" {
		return nil, fmt.Errorf("runtime: RootDir, PodLogDir and ContainerLogDir are required: %w", errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(cfg.LogDriver) {
		return nil, fmt.Errorf("runtime: log driver %q must be an absolute path: %w", cfg.LogDriver, errdefs.ErrInvalidArgument)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	addr := strings.TrimPrefix(cfg.Address, "unix://")
	c, err := client.New(addr, client.WithDefaultNamespace(cfg.Namespace), client.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w: %w", addr, errdefs.ErrUnavailable, err)
	}
	for _, d := range []string{cfg.RootDir, cfg.PodLogDir, cfg.ContainerLogDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			c.Close()
			return nil, err
		}
	}
	sb, err := newSandboxes(filepath.Join(cfg.RootDir, "pods"), cfg.HostIP, cfg.CNI, cfg.Logger)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Runtime{cfg: cfg, client: c, sandboxes: sb, log: cfg.Logger,
		imageLeaseOwner: fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())}, nil
}

// Close releases the connection to containerd; containers keep running.
func (r *Runtime) Close() error { return r.client.Close() }

func (r *Runtime) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.cfg.Namespace)
}

// RunSandbox creates the pod's sandbox, or returns the one it already has.
func (r *Runtime) RunSandbox(ctx context.Context, pod *Pod) (*Sandbox, error) {
	return r.sandboxes.ensure(ctx, pod)
}

// RemoveSandbox tears down the pod's sandbox and its log directory.
// Removing a sandbox that does not exist succeeds.
func (r *Runtime) RemoveSandbox(ctx context.Context, podUID string) error {
	if err := r.removeOrphanSnapshots(ctx, podUID); err != nil {
		return err
	}
	if err := r.sandboxes.remove(ctx, podUID); err != nil {
		return err
	}
	dirs, err := filepath.Glob(filepath.Join(r.cfg.PodLogDir, "*_"+podUID))
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	return nil
}

// ListSandboxes returns the UIDs of the pods that have a sandbox.
func (r *Runtime) ListSandboxes(ctx context.Context) ([]string, error) {
	return r.sandboxes.list()
}

// ContainerID is the deterministic containerd ID of one attempt of one
// container, so that a create retried after a crash finds what it made.
func ContainerID(podUID, container string, attempt int) string {
	sum := sha256.Sum256([]byte(podUID + "/" + container))
	id := fmt.Sprintf("%s-%s-%d", hex.EncodeToString(sum[:6]), container, attempt)
	// containerd IDs are at most 76 characters; names are DNS labels (63).
	if len(id) > 76 {
		id = fmt.Sprintf("%s-%d", hex.EncodeToString(sum[:16]), attempt)
	}
	return id
}

// PodLogDir is the pod's log directory, as kubelet names it.
func (r *Runtime) PodLogDir(pod *Pod) string {
	return filepath.Join(r.cfg.PodLogDir, pod.Namespace+"_"+pod.Name+"_"+pod.UID)
}

// CreateContainer creates (without starting) one attempt of a container of
// the pod. The image must be present (see EnsureImage).
func (r *Runtime) CreateContainer(ctx context.Context, pod *Pod, sb *Sandbox, c *corev1.Container, attempt int, init bool) (string, error) {
	ctx = r.ctx(ctx)
	id := ContainerID(pod.UID, c.Name, attempt)
	img, err := r.client.GetImage(ctx, normalizeRef(c.Image))
	if err != nil {
		return "", fmt.Errorf("container %s: image %s: %w", c.Name, c.Image, err)
	}
	imgSpec, err := img.Spec(ctx)
	if err != nil {
		return "", fmt.Errorf("container %s: image %s config: %w", c.Name, c.Image, err)
	}
	opts, err := SpecOpts(SpecInput{
		Pod: pod, Sandbox: sb, Container: c, Init: init, Image: imgSpec.Config, ID: id,
		SeccompDir: filepath.Join(r.cfg.RootDir, "seccomp"),
	})
	if err != nil {
		return "", fmt.Errorf("container %s: %w", c.Name, err)
	}

	logPath := filepath.Join(r.PodLogDir(pod), c.Name, strconv.Itoa(attempt)+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return "", err
	}
	labels := map[string]string{
		LabelPodName:       pod.Name,
		LabelPodNamespace:  pod.Namespace,
		LabelPodUID:        pod.UID,
		LabelPodRevision:   pod.Revision,
		LabelContainerName: c.Name,
		LabelAttempt:       strconv.Itoa(attempt),
		LabelInit:          strconv.FormatBool(init),
		LabelSpecHash:      CreatedSpecHash(pod, c),
		labelLogPath:       logPath,
		labelStopSignal:    imgSpec.Config.StopSignal,
	}
	if h := c.Lifecycle; h != nil && h.PreStop != nil {
		b, err := json.Marshal(h.PreStop)
		if err != nil {
			return "", err
		}
		labels[labelPreStop] = string(b)
	}
	newOpts := []client.NewContainerOpts{
		client.WithImage(img),
		client.WithNewSnapshot(id, img, snapshots.WithLabels(map[string]string{LabelPodUID: pod.UID})),
		client.WithNewSpec(opts...),
		client.WithRuntime(runcRuntime, nil),
		client.WithContainerLabels(labels),
	}
	cont, err := r.newContainer(ctx, id, newOpts)
	if errdefs.IsAlreadyExists(err) {
		// The snapshot is made before the container, so AlreadyExists
		// alone does not say which of the two an earlier agent left.
		if _, lerr := r.client.LoadContainer(ctx, id); lerr == nil {
			return id, fmt.Errorf("container %s: %w", id, err)
		} else if !errdefs.IsNotFound(lerr) {
			return "", fmt.Errorf("container %s: %w", id, lerr)
		}
		r.log.Info("removing the snapshot of an interrupted create", "container", id)
		if rerr := r.removeOrphan(ctx, id); rerr != nil {
			return "", fmt.Errorf("container %s: %w", c.Name, rerr)
		}
		cont, err = r.newContainer(ctx, id, newOpts)
	}
	if err != nil {
		// A failed create may have left the snapshot behind; after
		// AlreadyExists the snapshot may be someone else's.
		if !errdefs.IsAlreadyExists(err) {
			_ = r.removeOrphan(ctx, id)
		}
		return "", fmt.Errorf("container %s: create: %w", c.Name, err)
	}
	spec, err := cont.Spec(ctx)
	if err == nil && spec.Linux != nil {
		_, _ = cont.SetLabels(ctx, map[string]string{labelCgroupPath: spec.Linux.CgroupsPath})
	}
	return id, nil
}

// createLeaseExpiry bounds how long the snapshot of a create that its
// agent did not live to finish is kept from containerd's garbage collector:
// a create takes well under a second, and containerd's own default (24h)
// would keep an orphan for a day.
const createLeaseExpiry = 10 * time.Minute

// labelCreateLease marks the lease of one container create with the
// container's ID, so that a retry or a removal can find and drop the lease
// of an agent that died in the middle.
const labelCreateLease = "io.daemonlet.create-lease"

// newContainer creates the container under a lease of its own: the lease
// protects the new snapshot until the container refers to it, and it is
// labelled so that removeOrphan can drop it after a crash.
func (r *Runtime) newContainer(ctx context.Context, id string, opts []client.NewContainerOpts) (client.Container, error) {
	ctx, done, err := r.client.WithLease(ctx,
		leases.WithRandomID(),
		leases.WithExpiration(createLeaseExpiry),
		leases.WithLabels(map[string]string{labelCreateLease: id}),
	)
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	defer func() {
		// Deleting the lease is only tidiness: it expires on its own.
		if derr := done(context.WithoutCancel(ctx)); derr != nil {
			r.log.Debug("cannot delete the create lease", "container", id, "err", derr)
		}
	}()
	return r.client.NewContainer(ctx, id, opts...)
}

// removeOrphan removes the snapshot keyed by a container ID that has no
// container, and the create leases left for that ID. Call it only when no
// container exists: the snapshot would be in use otherwise.
func (r *Runtime) removeOrphan(ctx context.Context, id string) error {
	if err := r.removeSnapshot(ctx, id); err != nil {
		return err
	}
	lm := r.client.LeasesService()
	ls, err := lm.List(ctx, fmt.Sprintf("labels.%q==%q", labelCreateLease, id))
	if err != nil {
		return fmt.Errorf("leases of %s: %w", id, err)
	}
	for _, l := range ls {
		if err := lm.Delete(ctx, l); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("lease %s: %w", l.ID, err)
		}
	}
	return nil
}

// removeOrphanSnapshots removes the snapshots of the pod's containers that
// have no container: an agent that died inside CreateContainer leaves one,
// and a pod that is no longer wanted never retries the create that would
// remove it.
func (r *Runtime) removeOrphanSnapshots(ctx context.Context, podUID string) error {
	ctx = r.ctx(ctx)
	var keys []string
	err := r.client.SnapshotService("").Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		keys = append(keys, info.Name)
		return nil
	}, fmt.Sprintf("labels.%q==%q", LabelPodUID, podUID))
	if err != nil {
		return fmt.Errorf("snapshots of pod %s: %w", podUID, err)
	}
	for _, key := range keys {
		_, err := r.client.LoadContainer(ctx, key)
		if err == nil {
			continue
		}
		if !errdefs.IsNotFound(err) {
			return fmt.Errorf("container %s: %w", key, err)
		}
		r.log.Info("removing the snapshot of an interrupted create", "pod", podUID, "container", key)
		if err := r.removeOrphan(ctx, key); err != nil {
			return err
		}
	}
	return nil
}

// StartContainer starts a created container; its output goes to its log
// file through the log driver, which the shim runs, so logging outlives the
// agent.
func (r *Runtime) StartContainer(ctx context.Context, id string) error {
	ctx = r.ctx(ctx)
	cont, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	labels, err := cont.Labels(ctx)
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	logPath := labels[labelLogPath]
	ioCreator := cio.BinaryIO(r.cfg.LogDriver, map[string]string{logDriverArg: logPath})
	task, err := cont.NewTask(ctx, ioCreator)
	if errdefs.IsAlreadyExists(err) {
		if err := r.removeUnstartedTask(ctx, cont); err != nil {
			return err
		}
		task, err = cont.NewTask(ctx, ioCreator)
	}
	if err != nil {
		return fmt.Errorf("container %s: create task: %w", id, err)
	}
	if err := task.Start(ctx); err != nil {
		_, _ = task.Delete(ctx, client.WithProcessKill)
		return fmt.Errorf("container %s: start: %w", id, err)
	}
	if _, err := cont.SetLabels(ctx, map[string]string{labelStartedAt: time.Now().UTC().Format(time.RFC3339Nano)}); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	r.linkLog(labels, id, logPath)
	return nil
}

// removeUnstartedTask deletes the task an agent killed inside
// StartContainer created but did not start, so that the start is done
// afresh: the dead agent's create may have been cut short, and a task that
// never ran has nothing to keep. A task that did start is left alone.
func (r *Runtime) removeUnstartedTask(ctx context.Context, cont client.Container) error {
	task, err := cont.Task(ctx, nil)
	if err != nil {
		return fmt.Errorf("container %s: task: %w", cont.ID(), err)
	}
	st, err := task.Status(ctx)
	if err != nil {
		return fmt.Errorf("container %s: task status: %w", cont.ID(), err)
	}
	if st.Status != client.Created {
		return fmt.Errorf("container %s: task is %s: %w", cont.ID(), st.Status, errdefs.ErrAlreadyExists)
	}
	r.log.Info("removing the task of an interrupted start", "container", cont.ID())
	if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("container %s: delete task: %w", cont.ID(), err)
	}
	return nil
}

// linkLog makes the /var/log/containers symlink log shippers look for.
func (r *Runtime) linkLog(labels map[string]string, id, logPath string) {
	link := r.containerLogLink(labels, id)
	_ = os.Remove(link)
	if err := os.Symlink(logPath, link); err != nil {
		r.log.Warn("cannot link container log", "link", link, "err", err)
	}
}

func (r *Runtime) containerLogLink(labels map[string]string, id string) string {
	return filepath.Join(r.cfg.ContainerLogDir, fmt.Sprintf("%s_%s_%s-%s.log",
		labels[LabelPodName], labels[LabelPodNamespace], labels[LabelContainerName], id))
}

// WaitExit returns a channel closed when the container's task exits.
func (r *Runtime) WaitExit(ctx context.Context, id string) (<-chan struct{}, error) {
	ctx = r.ctx(ctx)
	cont, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	task, err := cont.Task(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	st, err := task.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("container %s: wait: %w", id, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-st:
		case <-ctx.Done():
		}
	}()
	return done, nil
}

// StopContainer stops a container as kubelet does: the preStop exec hook
// within the grace period, then the image's stop signal (SIGTERM by
// default), then SIGKILL once the rest of the grace period, at least 2s,
// has passed. Stopping a stopped or missing container succeeds.
func (r *Runtime) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	ctx = r.ctx(ctx)
	cont, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	task, err := cont.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	st, err := task.Status(ctx)
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if st.Status == client.Stopped {
		return nil
	}
	labels, err := cont.Labels(ctx)
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		return fmt.Errorf("container %s: wait: %w", id, err)
	}
	start := time.Now()
	if hook := labels[labelPreStop]; hook != "" && grace > 0 {
		r.runPreStop(ctx, id, hook, exited, grace)
	}
	remaining := grace - time.Since(start)
	if remaining < minimumGracePeriod {
		remaining = minimumGracePeriod
	}
	sig := syscall.SIGTERM
	if s := labels[labelStopSignal]; s != "" {
		if parsed, err := signal.ParseSignal(s); err == nil {
			sig = parsed
		}
	}
	if err := task.Kill(ctx, sig); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("container %s: signal %v: %w", id, sig, err)
	}
	timer := time.NewTimer(remaining)
	defer timer.Stop()
	select {
	case <-exited:
		return nil
	case <-timer.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := task.Kill(ctx, syscall.SIGKILL, client.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("container %s: SIGKILL: %w", id, err)
	}
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runPreStop runs the preStop hook, abandoning it when the grace period
// ends or the container exits first.
func (r *Runtime) runPreStop(ctx context.Context, id, hook string, exited <-chan client.ExitStatus, grace time.Duration) {
	var h corev1.LifecycleHandler
	if err := json.Unmarshal([]byte(hook), &h); err != nil {
		r.log.Warn("bad preStop hook label", "container", id, "err", err)
		return
	}
	hctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	switch {
	case h.Exec != nil:
		code, out, err := r.Exec(hctx, id, h.Exec.Command)
		if err != nil || code != 0 {
			r.log.Warn("preStop hook failed", "container", id, "exitCode", code, "output", string(out), "err", err)
		}
	case h.Sleep != nil:
		select {
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		case <-exited:
		case <-hctx.Done():
		}
	}
}

// RemoveContainer deletes a container, its task (killed if running), its
// snapshot and its log link. Removing a missing container succeeds.
func (r *Runtime) RemoveContainer(ctx context.Context, id string) error {
	ctx = r.ctx(ctx)
	cont, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return r.removeOrphan(ctx, id)
	} else if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	labels, err := cont.Labels(ctx)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if task, err := cont.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("container %s: delete task: %w", id, err)
		}
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if err := cont.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("container %s: delete: %w", id, err)
	}
	if labels != nil {
		if err := os.Remove(r.containerLogLink(labels, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (r *Runtime) removeSnapshot(ctx context.Context, id string) error {
	err := r.client.SnapshotService("").Remove(ctx, id)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("snapshot %s: %w", id, err)
	}
	return nil
}

// ContainerStatus returns one container with its current state.
func (r *Runtime) ContainerStatus(ctx context.Context, id string) (Container, error) {
	ctx = r.ctx(ctx)
	cont, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return Container{}, fmt.Errorf("container %s: %w", id, err)
	}
	return r.status(ctx, cont)
}

// ListContainers returns every container daemonlet made in its namespace,
// with its state. Concurrent callers share one list (listCalls) that
// started after each of them called; the containers' Labels maps are
// shared and must not be mutated.
func (r *Runtime) ListContainers(ctx context.Context) ([]Container, error) {
	return r.lists.do(r.ctx(ctx), r.listContainers)
}

// listContainers is ListContainers' one list; ctx has the namespace.
func (r *Runtime) listContainers(ctx context.Context) ([]Container, error) {
	conts, err := r.client.Containers(ctx, fmt.Sprintf("labels.%q", LabelPodUID))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	// One list of the namespace's tasks answers for every container:
	// asking each container's task (Task, then Status) cost two round
	// trips per container, and every pod worker lists on each pass.
	resp, err := r.client.TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", errgrpc.ToNative(err))
	}
	procs := make(map[string]*tasktypes.Process, len(resp.Tasks))
	for _, p := range resp.Tasks {
		procs[p.ID] = p
	}
	out := make([]Container, 0, len(conts))
	for _, c := range conts {
		var st Container
		if p, ok := procs[c.ID()]; ok {
			st, err = r.containerInfo(ctx, c)
			if err == nil {
				st = r.withTask(ctx, c, st, p.Pid, p.Status, p.ExitStatus, protobuf.FromTimestamp(p.ExitedAt))
			}
		} else {
			// No task, or one whose state containerd could not read
			// for the list: ask for it alone, which tells them apart.
			st, err = r.status(ctx, c)
		}
		if errdefs.IsNotFound(err) {
			continue // removed while listing
		} else if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// status is one container with the state of its task.
func (r *Runtime) status(ctx context.Context, cont client.Container) (Container, error) {
	c, err := r.containerInfo(ctx, cont)
	if err != nil {
		return Container{}, err
	}
	resp, err := r.client.TaskService().Get(ctx, &tasks.GetRequest{ContainerID: cont.ID()})
	if err = errgrpc.ToNative(err); errdefs.IsNotFound(err) {
		if !c.StartedAt.IsZero() {
			// Started once, but its task is gone: containerd lost it
			// (a reboot). Kubelet reports such a container this way.
			c.State, c.ExitCode, c.Reason = StateExited, 137, "ContainerStatusUnknown"
		}
		return c, nil
	} else if err != nil {
		return Container{}, fmt.Errorf("container %s: task: %w", cont.ID(), err)
	}
	p := resp.Process
	return r.withTask(ctx, cont, c, p.Pid, p.Status, p.ExitStatus, protobuf.FromTimestamp(p.ExitedAt)), nil
}

// containerInfo is one container as its labels describe it, in state
// Created until withTask says otherwise.
func (r *Runtime) containerInfo(ctx context.Context, cont client.Container) (Container, error) {
	info, err := cont.Info(ctx, client.WithoutRefreshedMetadata)
	if err != nil {
		return Container{}, fmt.Errorf("container %s: %w", cont.ID(), err)
	}
	l := info.Labels
	attempt, _ := strconv.Atoi(l[LabelAttempt])
	c := Container{
		ID: cont.ID(), PodUID: l[LabelPodUID], PodName: l[LabelPodName], Namespace: l[LabelPodNamespace],
		Name: l[LabelContainerName], Revision: l[LabelPodRevision], Attempt: attempt,
		Init: l[LabelInit] == "true", SpecHash: l[LabelSpecHash], Labels: l,
		CreatedAt: info.CreatedAt, State: StateCreated,
	}
	c.StartedAt, _ = time.Parse(time.RFC3339Nano, l[labelStartedAt])
	return c, nil
}

// withTask is c with the state of its task, as containerd reports it.
func (r *Runtime) withTask(ctx context.Context, cont client.Container, c Container, pid uint32, status tasktypes.Status, exitStatus uint32, exitTime time.Time) Container {
	c.PID = pid
	switch status {
	case tasktypes.Status_RUNNING, tasktypes.Status_PAUSED, tasktypes.Status_PAUSING:
		c.State = StateRunning
	case tasktypes.Status_CREATED:
		c.State = StateCreated
	case tasktypes.Status_STOPPED:
		c.State, c.ExitCode, c.FinishedAt = StateExited, int32(exitStatus), exitTime
		c.Reason = r.exitReason(ctx, cont, c.Labels, c.ExitCode)
	default:
		c.State = StateUnknown
	}
	return c
}

// exitReason gives kubelet's reason for an exited container. An OOM kill
// is read from the container's cgroup while its task still holds it, and
// recorded in a label so that it survives the task.
func (r *Runtime) exitReason(ctx context.Context, cont client.Container, l map[string]string, code int32) string {
	if l[LabelOOMKilled] == "true" {
		return "OOMKilled"
	}
	if code != 0 && oomKilled(l[labelCgroupPath]) {
		_, _ = cont.SetLabels(ctx, map[string]string{LabelOOMKilled: "true"})
		return "OOMKilled"
	}
	if code == 0 {
		return "Completed"
	}
	return "Error"
}

// oomKilled reports whether the kernel's OOM killer acted in the cgroup, on
// cgroup v2 (memory.events) or v1 (memory.oom_control).
func oomKilled(cgroupPath string) bool {
	if cgroupPath == "" {
		return false
	}
	candidates := []struct{ file, key string }{
		{filepath.Join("/sys/fs/cgroup", cgroupPath, "memory.events"), "oom_kill"},
		{filepath.Join("/sys/fs/cgroup/memory", cgroupPath, "memory.oom_control"), "oom_kill"},
	}
	for _, c := range candidates {
		b, err := os.ReadFile(c.file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && f[0] == c.key {
				n, _ := strconv.Atoi(f[1])
				return n > 0
			}
		}
	}
	return false
}
