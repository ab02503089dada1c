package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/daemonlet/daemonlet/runtime"
	"github.com/daemonlet/daemonlet/store"
)

// podState is where a pod worker is in the pod's life. It is the single
// source of truth; see the state machine in the package documentation.
type podState int

const (
	statePending podState = iota
	statePulling
	stateStarting
	stateRunning
	stateBackOff
	stateTerminating
	stateTerminated
	// stateFailed: the pod was refused (its spec uses fields the runtime
	// does not implement); nothing runs until a new revision replaces it.
	stateFailed
)

func (s podState) String() string {
	return [...]string{"Pending", "Pulling", "Starting", "Running", "BackOff", "Terminating", "Terminated", "Failed"}[s]
}

// Termination retry bounds, for a stop that fails (a runtime error).
const (
	stopRetryInitial = time.Second
	stopRetryMax     = 30 * time.Second
)

// minimumGracePeriod is kubelet's floor for a pod's grace period
// (minimumGracePeriodInSeconds).
const minimumGracePeriod = 2 * time.Second

// podIdentity names a pod for status and logs, also when its spec is
// unknown (a pod found at start that nobody wants any more).
type podIdentity struct {
	Namespace string
	Name      string
	DaemonSet string
	Source    string
	Revision  string
}

// waiting is why a container has not started, and until when it waits.
type waiting struct {
	Reason  string
	Message string
	Until   time.Time
}

// pullBackOff is kubelet's per-(pod, image) pull back-off entry.
type pullBackOff struct {
	delay      time.Duration
	lastUpdate time.Time
	until      time.Time
}

// podWorker owns the lifecycle of one pod in its own goroutine (run). The
// agent talks to it only through update, stop and the doorbell, so a
// wedged pod never blocks the agent or another pod.
type podWorker struct {
	uid    string
	rt     Runtime
	st     Store
	clock  clock.WithTicker
	log    *slog.Logger
	m      *Metrics
	onDone func(*podWorker) // called once the pod is gone
	// changed tells the pod reporter that what it reports of the pod
	// (state, container states, readiness, restarts, IP, presence) may
	// have changed; it never blocks.
	changed func()
	// objects returns the agent's current ConfigMaps and Secrets.
	objects func() *objectSet
	bell    chan struct{} // coalescing doorbell, capacity 1
	exited  chan struct{} // closed when run returns
	probes  *podProber    // the containers' probes; rings bell on a change

	mu         sync.Mutex // guards the fields down to the blank line
	pod        *runtime.Pod
	id         podIdentity
	stopReason string // set once, never cleared: a stop wins over updates
	cancelWork context.CancelFunc
	state      podState
	record     store.PodRecord
	view       podView
	watching   map[string]bool
	podIP      string // the sandbox's IP, known once this agent ran its sandbox

	// Only the worker goroutine touches the fields below.
	waits       map[string]waiting
	pulls       map[string]*pullBackOff
	lastActs    string
	stopBackOff time.Duration
	startTrack  *podStartTracker // nil once observed, or for adopted pods
	lastObjs    *objectSet       // the objects snapshot of the current pass
	written     *objectSet       // the snapshot the volume files were last written from
	volumeErr   string           // the last refresh error logged, to log each once
}

// podView is the last status the worker computed, for Pods().
type podView struct {
	containers []ContainerStatus
	initDone   bool
	appStarted bool
	failure    string // why the pod was refused, with stateFailed
}

func newPodWorker(a *Agent, uid string, pod *runtime.Pod, id podIdentity, rec store.PodRecord) *podWorker {
	w := &podWorker{
		uid:      uid,
		rt:       a.rt,
		st:       a.st,
		clock:    a.clock,
		log:      a.log.With("pod", id.Namespace+"/"+id.Name, "uid", uid),
		m:        a.metrics,
		onDone:   a.workerDone,
		changed:  a.podChanged,
		objects:  a.currentObjects,
		bell:     make(chan struct{}, 1),
		exited:   make(chan struct{}),
		pod:      pod,
		id:       id,
		record:   rec,
		watching: map[string]bool{},
		waits:    map[string]waiting{},
		pulls:    map[string]*pullBackOff{},
	}
	w.probes = newPodProber(a.rt, a.clock, w.log, w.ring)
	// A pod without a record is new to this node (kubelet's tracker
	// likewise skips pods that already have a start time).
	if pod != nil && rec.UID == "" {
		w.startTrack = &podStartTracker{seen: a.clock.Now()}
	}
	return w
}

// ring wakes the worker without ever blocking; rings coalesce.
func (w *podWorker) ring() {
	select {
	case w.bell <- struct{}{}:
	default:
	}
}

// update hands the worker the latest pod; a stopping worker ignores it.
func (w *podWorker) update(pod *runtime.Pod) {
	w.mu.Lock()
	if w.stopReason == "" {
		w.pod = pod
	}
	w.mu.Unlock()
	w.ring()
}

// stop asks the worker to terminate the pod. It pre-empts a sync in
// progress by cancelling its context.
func (w *podWorker) stop(reason string) {
	w.mu.Lock()
	if w.stopReason == "" {
		w.stopReason = reason
	}
	if w.cancelWork != nil {
		w.cancelWork()
	}
	w.mu.Unlock()
	w.ring()
}

// stopping reports whether a stop was requested.
func (w *podWorker) stopping() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopReason != ""
}

func (w *podWorker) setState(s podState) {
	w.mu.Lock()
	from := w.state
	w.state = s
	w.mu.Unlock()
	if from != s {
		w.log.Info("pod state changed", "from", from, "to", s)
		w.changed()
	}
}

// setView publishes the pod's computed status, telling the reporter when
// it differs from the last one.
func (w *podWorker) setView(v podView) {
	w.mu.Lock()
	same := v.initDone == w.view.initDone && v.appStarted == w.view.appStarted &&
		v.failure == w.view.failure && slices.Equal(v.containers, w.view.containers)
	w.view = v
	w.mu.Unlock()
	if !same {
		w.changed()
	}
}

// begin starts one pass: it returns the stop reason if a stop was asked
// for, else the pod and a context that stop cancels.
func (w *podWorker) begin(ctx context.Context) (workCtx context.Context, done func(), pod *runtime.Pod, stop string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopReason != "" {
		return nil, nil, w.pod, w.stopReason
	}
	workCtx, cancel := context.WithCancel(ctx)
	w.cancelWork = cancel
	return workCtx, func() {
		w.mu.Lock()
		w.cancelWork = nil
		w.mu.Unlock()
		cancel()
	}, w.pod, ""
}

// run is the worker's goroutine. It returns when the pod is gone or the
// agent shuts down (ctx); shutdown leaves the containers running.
func (w *podWorker) run(ctx context.Context) {
	defer close(w.exited)
	watchCtx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	defer w.probes.stopAll()
	for {
		var wakeAt time.Time
		workCtx, done, pod, stop := w.begin(ctx)
		if stop != "" {
			cancelWatch()
			if w.terminate(ctx, pod, stop) {
				w.setState(stateTerminated)
				w.onDone(w)
				// Gone from the agent's pods: its Pod object goes too.
				w.changed()
				return
			}
			if ctx.Err() != nil {
				return
			}
			w.stopBackOff = min(max(2*w.stopBackOff, stopRetryInitial), stopRetryMax)
			wakeAt = w.clock.Now().Add(w.stopBackOff)
		} else {
			start := w.clock.Now()
			wakeAt = w.sync(workCtx, watchCtx, pod)
			done()
			w.m.observePodSync(w.clock.Since(start))
		}
		// Deadlines are absolute, so a clock that moved on while the
		// pass ran fires at once instead of waiting a full delay.
		var timer clock.Timer
		var timerC <-chan time.Time
		if !wakeAt.IsZero() {
			d := wakeAt.Sub(w.clock.Now())
			if d <= 0 {
				continue
			}
			timer = w.clock.NewTimer(d)
			timerC = timer.C()
		}
		select {
		case <-ctx.Done():
		case <-w.bell:
		case <-timerC:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// observe lists the pod's containers.
func (w *podWorker) observe(ctx context.Context) ([]runtime.Container, error) {
	all, err := w.rt.ListContainers(ctx)
	if err != nil {
		return nil, err
	}
	var mine []runtime.Container
	for _, c := range all {
		if c.PodUID == w.uid {
			mine = append(mine, c)
		}
	}
	return mine, nil
}

// sync runs one pass of the pod towards its spec and returns when the
// worker must look again by itself (zero: only when woken).
func (w *podWorker) sync(ctx, watchCtx context.Context, pod *runtime.Pod) time.Time {
	now := w.clock.Now()
	// Step 0: refuse what the runtime cannot run, as kubelet's admission
	// refuses a pod, instead of running it half-right.
	if errs := runtime.CheckPodSpec(pod.Spec); len(errs) > 0 {
		w.setView(podView{failure: errs.ToAggregate().Error()})
		w.setState(stateFailed)
		return time.Time{}
	}
	// Step 1: observe the pod's containers.
	observed, err := w.observe(ctx)
	if err != nil {
		w.m.syncError(stepListContainers)
		w.log.Warn("cannot list containers", "err", err)
		return now.Add(syncErrorRetry)
	}
	// Step 2: make sure the pod record exists, so that a restarted agent
	// knows the pod and its age.
	w.ensureRecord(pod, now)

	// Step 2b: new ConfigMaps or Secrets lift the config errors at once
	// and rewrite the volume files of a pod that runs, without a restart.
	if objs := w.objects(); objs != w.lastObjs {
		w.lastObjs = objs
		for name, wt := range w.waits {
			if wt.Reason == reasonCreateConfigError {
				delete(w.waits, name)
			}
		}
	}
	if w.written != w.lastObjs && len(observed) > 0 && projectsVolumes(pod.Spec) {
		w.refreshVolumes(ctx, pod, now)
	}

	// Step 3: stop the containers whose liveness or startup probe failed,
	// then plan: the plan restarts them under the crash back-off.
	if w.stopUnhealthy(ctx, pod, observed) {
		if observed, err = w.observe(ctx); err != nil {
			w.m.syncError(stepListContainers)
			w.log.Warn("cannot list containers", "err", err)
			return now.Add(syncErrorRetry)
		}
	}
	name := pod.Namespace + "/" + pod.Name
	acts := computePodActions(name, pod.Spec, observed, w.containerRecords(), now)
	if s := acts.String(); s != w.lastActs {
		w.log.Info("syncing pod", "actions", s)
		w.lastActs = s
	}

	// Step 4: kill containers that must go, then drop superseded ones.
	grace := terminationGrace(pod)
	for _, id := range acts.Kill {
		if err := w.removeContainer(ctx, id, grace); err != nil {
			w.m.syncError(stepRemoveContainer)
			w.log.Warn("cannot remove container", "container", id, "err", err)
		}
	}
	for _, id := range acts.Remove {
		if err := w.rt.RemoveContainer(ctx, id); err != nil {
			w.m.syncError(stepRemoveContainer)
			w.log.Warn("cannot remove container", "container", id, "err", err)
		}
	}

	// Step 5: start what the plan says, image and sandbox first.
	if len(acts.Start) > 0 {
		w.start(ctx, pod, acts.Start, now)
	}
	if ctx.Err() != nil {
		return time.Time{} // stopped or shutting down: the loop decides
	}

	// Step 6: look again, watch the running containers and publish the
	// status and the state.
	if len(acts.Kill)+len(acts.Remove)+len(acts.Start) > 0 {
		if observed, err = w.observe(ctx); err != nil {
			w.m.syncError(stepListContainers)
			w.log.Warn("cannot list containers", "err", err)
			return now.Add(syncErrorRetry)
		}
		acts = computePodActions(name, pod.Spec, observed, w.containerRecords(), now)
	}
	running := false
	for _, c := range acts.Latest {
		if c.State == runtime.StateRunning {
			w.watch(watchCtx, c.ID)
			running = true
		}
	}
	w.probes.update(watchCtx, pod.Spec, acts.Latest, w.probeHost(ctx, pod, running))
	return w.publish(pod, acts, now)
}

// publish stores the pod's status and state after a pass and returns the
// next instant the worker must act by itself.
func (w *podWorker) publish(pod *runtime.Pod, acts podActions, now time.Time) time.Time {
	wakeAt := acts.WakeAt()
	crash := map[string]containerWait{}
	for _, cw := range acts.Wait {
		crash[cw.Name] = cw
	}
	blocked := len(acts.Wait) > 0
	for _, s := range acts.Start {
		wt, ok := w.waits[s.Name]
		if ok && now.Before(wt.Until) {
			blocked = true
			wakeAt = earliest(wakeAt, wt.Until)
			continue
		}
		// A start the pass could not try (it was planned after the
		// observation) is due now.
		wakeAt = earliest(wakeAt, now)
	}

	view := podView{initDone: acts.InitDone}
	add := func(c *corev1.Container, init bool) {
		cs := ContainerStatus{Name: c.Name, Init: init, Image: c.Image}
		l, ok := acts.Latest[c.Name]
		if ok {
			cs.ID, cs.Attempt, cs.StartedAt, cs.ExitCode = l.ID, l.Attempt, l.StartedAt, l.ExitCode
			if !init {
				view.appStarted = true
			}
		}
		cs.RestartCount = w.restartCount(c.Name, l, ok)
		switch cw, inCrash := crash[c.Name]; {
		case inCrash:
			cs.State, cs.Reason, cs.Message = "Waiting", reasonCrashLoopBackOff, cw.Message
		case ok && l.State == runtime.StateRunning:
			cs.State = "Running"
			cs.Ready = !init && w.probes.ready(c, l.ID)
		case ok && l.State == runtime.StateExited:
			cs.State, cs.Reason = "Terminated", l.Reason
		default:
			cs.State, cs.Reason = "Waiting", reasonCreating
			if !init && !acts.InitDone {
				cs.Reason = reasonPodInitializing
			}
			if wt, ok := w.waits[c.Name]; ok {
				cs.Reason, cs.Message = wt.Reason, wt.Message
			}
		}
		view.containers = append(view.containers, cs)
	}
	for i := range pod.Spec.InitContainers {
		add(&pod.Spec.InitContainers[i], true)
	}
	running := 0
	for i := range pod.Spec.Containers {
		add(&pod.Spec.Containers[i], false)
		if view.containers[len(view.containers)-1].State == "Running" {
			running++
		}
	}

	state := stateStarting
	switch {
	case blocked:
		state = stateBackOff
	case acts.InitDone && running == len(pod.Spec.Containers):
		state = stateRunning
	}
	w.setView(view)
	w.setState(state)
	if state == stateRunning {
		w.startTrack.running(w.m, w.clock.Now())
		w.startTrack = nil
	}
	return wakeAt
}

// restartCount is the container's restart count: its newest attempt, or
// what the record remembers once the containers are gone.
func (w *podWorker) restartCount(name string, latest runtime.Container, ok bool) int {
	if ok {
		return latest.Attempt
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.record.Containers[name].RestartCount
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// start pulls, creates and starts the planned containers in order. A
// container that cannot start gets a waiting reason and a retry time; the
// others still start, as kubelet does.
func (w *podWorker) start(ctx context.Context, pod *runtime.Pod, starts []containerStart, now time.Time) {
	// The sandbox comes first, as kubelet's SyncPod creates it before any
	// container; a failure holds every container back.
	sb, err := w.rt.RunSandbox(ctx, pod)
	if err != nil {
		if ctx.Err() == nil {
			w.m.syncError(stepRunSandbox)
			w.log.Warn("cannot create the pod sandbox", "err", err)
			for _, s := range starts {
				w.waits[s.Name] = waiting{Reason: reasonSandboxError, Message: err.Error(), Until: now.Add(syncErrorRetry)}
			}
		}
		return
	}
	w.mu.Lock()
	newIP := w.podIP != sb.IP
	w.podIP = sb.IP
	w.mu.Unlock()
	if newIP {
		w.changed()
	}
	// Volume files come before any container, as kubelet mounts volumes
	// before it starts the pod; a missing object holds every container.
	if err := projectVolumes(pod, sb, w.lastObjs, now); err != nil {
		w.log.Warn("cannot fill the pod's ConfigMap and Secret volumes", "err", err)
		for _, s := range starts {
			w.waits[s.Name] = waiting{Reason: reasonCreateConfigError, Message: err.Error(), Until: now.Add(syncErrorRetry)}
		}
		return
	}
	w.written = w.lastObjs
	for _, s := range starts {
		var c *corev1.Container
		if s.Init {
			c = &pod.Spec.InitContainers[s.Index]
		} else {
			c = &pod.Spec.Containers[s.Index]
		}
		if wt, ok := w.waits[c.Name]; ok && now.Before(wt.Until) {
			if wt.Reason == reasonErrImagePull {
				// Kubelet reports the back-off from the pass after
				// the failed pull on.
				w.waits[c.Name] = waiting{Reason: reasonImagePullBackOff, Message: fmt.Sprintf("Back-off pulling image %q", c.Image), Until: wt.Until}
			}
			continue
		}
		if !w.pullImage(ctx, c, now) {
			continue
		}
		w.setState(stateStarting)
		id := s.ExistingID
		if id == "" {
			resolved, skipped, err := resolveEnv(c, pod.Namespace, w.lastObjs)
			if err != nil {
				w.log.Warn("cannot resolve the container's environment", "container", c.Name, "err", err)
				w.waits[c.Name] = waiting{Reason: reasonCreateConfigError, Message: err.Error(), Until: now.Add(syncErrorRetry)}
				continue
			}
			if len(skipped) > 0 {
				w.log.Warn("envFrom keys skipped: not valid environment variable names", "container", c.Name, "keys", skipped)
			}
			id, err = w.rt.CreateContainer(ctx, pod, sb, resolved, s.Attempt, s.Init)
			// A create that an earlier agent made before it died is
			// finished by starting it.
			if err != nil && !(errdefs.IsAlreadyExists(err) && id != "") {
				if ctx.Err() == nil {
					w.m.syncError(stepCreateContainer)
					w.log.Warn("cannot create container", "container", c.Name, "err", err)
					w.waits[c.Name] = waiting{Reason: reasonCreateError, Message: err.Error(), Until: now.Add(syncErrorRetry)}
				}
				continue
			}
		}
		w.putContainerRecord(c.Name, s.Record)
		if err := w.rt.StartContainer(ctx, id); err != nil {
			if ctx.Err() == nil {
				w.m.syncError(stepStartContainer)
				w.log.Warn("cannot start container", "container", c.Name, "err", err)
				w.waits[c.Name] = waiting{Reason: reasonRunError, Message: err.Error(), Until: now.Add(syncErrorRetry)}
			}
			continue
		}
		delete(w.waits, c.Name)
		if s.Attempt > 0 {
			w.m.containerRestarted()
		}
		w.log.Info("container started", "container", c.Name, "attempt", s.Attempt)
	}
}

// refreshVolumes rewrites the ConfigMap and Secret volume files of a pod
// whose sandbox exists; a failure is retried at the next pass.
func (w *podWorker) refreshVolumes(ctx context.Context, pod *runtime.Pod, now time.Time) {
	sb, err := w.rt.RunSandbox(ctx, pod)
	if err == nil {
		err = projectVolumes(pod, sb, w.lastObjs, now)
	}
	if err != nil {
		// Retried every pass, logged once per distinct error.
		if err.Error() != w.volumeErr {
			w.log.Warn("cannot refresh the pod's ConfigMap and Secret volumes; the files keep their last content", "err", err)
			w.volumeErr = err.Error()
		}
		return
	}
	w.written, w.volumeErr = w.lastObjs, ""
}

// pullImage makes the container's image present, under kubelet's pull
// back-off. It reports whether the container can go on.
func (w *podWorker) pullImage(ctx context.Context, c *corev1.Container, now time.Time) bool {
	w.setState(statePulling)
	start := w.clock.Now()
	pulled, err := w.rt.EnsureImage(ctx, c.Image, c.ImagePullPolicy)
	end := w.clock.Now()
	if pulled || err != nil {
		w.startTrack.pulled(start, end)
	}
	if err == nil {
		if pulled {
			w.m.observeImagePull(end.Sub(start))
		}
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	w.m.syncError(stepPullImage)
	b := w.pulls[c.Image]
	if b == nil || now.Sub(b.lastUpdate) > 2*pullBackOffMax {
		b = &pullBackOff{}
		w.pulls[c.Image] = b
	}
	b.delay = nextPullBackOff(b.delay)
	b.lastUpdate, b.until = now, now.Add(b.delay)
	reason := reasonErrImagePull
	switch {
	case errdefs.IsNotFound(err) && c.ImagePullPolicy == corev1.PullNever:
		reason = reasonErrImageNeverPull
	case errdefs.IsInvalidArgument(err):
		reason = reasonInvalidImageName
	}
	w.log.Warn("cannot pull image", "image", c.Image, "reason", reason, "retryIn", b.delay, "err", err)
	w.waits[c.Name] = waiting{Reason: reason, Message: err.Error(), Until: b.until}
	return false
}

// watch rings the doorbell when the container exits. One watch per
// container at a time.
func (w *podWorker) watch(ctx context.Context, id string) {
	w.mu.Lock()
	if w.watching[id] {
		w.mu.Unlock()
		return
	}
	w.watching[id] = true
	w.mu.Unlock()
	go func() {
		defer func() {
			w.mu.Lock()
			delete(w.watching, id)
			w.mu.Unlock()
		}()
		exited, err := w.rt.WaitExit(ctx, id)
		if err != nil {
			// The periodic resync notices the exit instead.
			return
		}
		select {
		case <-exited:
			w.ring()
		case <-ctx.Done():
		}
	}()
}

// removeContainer stops a container with the grace period and deletes it.
func (w *podWorker) removeContainer(ctx context.Context, id string, grace time.Duration) error {
	if err := w.rt.StopContainer(ctx, id, grace); err != nil {
		return err
	}
	return w.rt.RemoveContainer(ctx, id)
}

// terminationGrace is the pod's grace period: terminationGracePeriodSeconds
// (default 30s), never below kubelet's 2s minimum.
func terminationGrace(pod *runtime.Pod) time.Duration {
	secs := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if pod != nil && pod.Spec.TerminationGracePeriodSeconds != nil {
		secs = *pod.Spec.TerminationGracePeriodSeconds
	}
	return max(time.Duration(secs)*time.Second, minimumGracePeriod)
}

// terminate stops every container of the pod in parallel with the grace
// period, removes them, the sandbox and the record. It reports success;
// on failure the worker retries.
func (w *podWorker) terminate(ctx context.Context, pod *runtime.Pod, reason string) bool {
	w.mu.Lock()
	first := w.state != stateTerminating
	w.mu.Unlock()
	w.setState(stateTerminating)
	if first {
		w.log.Info("stopping pod", "reason", reason)
		w.markTerminating()
	}
	observed, err := w.observe(ctx)
	if err != nil {
		w.m.syncError(stepStopPod)
		w.log.Warn("cannot list containers to stop", "err", err)
		return false
	}
	grace := terminationGrace(pod)
	errs := make([]error, len(observed))
	var wg sync.WaitGroup
	for i, c := range observed {
		wg.Go(func() { errs[i] = w.removeContainer(ctx, c.ID, grace) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		w.m.syncError(stepStopPod)
		w.log.Warn("cannot stop containers", "err", err)
		return false
	}
	if err := w.rt.RemoveSandbox(ctx, w.uid); err != nil {
		w.m.syncError(stepStopPod)
		w.log.Warn("cannot remove sandbox", "err", err)
		return false
	}
	if err := w.st.DeletePod(w.uid); err != nil && !errdefs.IsNotFound(err) {
		w.m.syncError(stepWriteRecord)
		w.log.Warn("cannot delete pod record", "err", err)
		return false
	}
	w.log.Info("pod stopped", "reason", reason)
	return true
}

// ensureRecord writes the pod record when the pod is new, was adopted
// without one, or was adopted in the middle of a stop that is now off.
func (w *podWorker) ensureRecord(pod *runtime.Pod, now time.Time) {
	w.mu.Lock()
	rec := w.record
	if rec.UID != "" && !rec.Terminating && rec.Revision == pod.Revision {
		w.mu.Unlock()
		return
	}
	if rec.UID == "" {
		rec = store.PodRecord{UID: w.uid, CreatedAt: now}
	}
	rec.Namespace, rec.Name = pod.Namespace, pod.Name
	rec.Owner, rec.Source, rec.Revision = w.id.Namespace+"/"+w.id.DaemonSet, w.id.Source, pod.Revision
	rec.Terminating = false
	if rec.Containers == nil {
		rec.Containers = map[string]store.ContainerRecord{}
	}
	w.record = rec
	w.mu.Unlock()
	w.persist(rec)
}

func (w *podWorker) markTerminating() {
	w.mu.Lock()
	if w.record.UID == "" {
		w.mu.Unlock()
		return
	}
	w.record.Terminating = true
	rec := w.record
	w.mu.Unlock()
	w.persist(rec)
}

// putContainerRecord records a new attempt of a container (restart count
// and back-off), so that both survive an agent restart.
func (w *podWorker) putContainerRecord(name string, cr store.ContainerRecord) {
	w.mu.Lock()
	w.record.Containers = maps.Clone(w.record.Containers)
	if w.record.Containers == nil {
		w.record.Containers = map[string]store.ContainerRecord{}
	}
	w.record.Containers[name] = cr
	rec := w.record
	w.mu.Unlock()
	w.persist(rec)
}

func (w *podWorker) persist(rec store.PodRecord) {
	if err := w.st.PutPod(rec); err != nil {
		w.m.syncError(stepWriteRecord)
		w.log.Warn("cannot write pod record", "err", err)
	}
}

// containerRecords returns a copy of the containers' records.
func (w *podWorker) containerRecords() map[string]store.ContainerRecord {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.record.Containers)
}
