package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/runtime"
)

// Pod reporter timings.
const (
	// DefaultReportInterval is the pod reporter's fallback period: it
	// writes as soon as the pod workers signal a change, and looks for
	// changes every interval besides, for what no worker signals (a
	// DaemonSet's UID learned later, the node's UID) and to retry when
	// the server was away.
	DefaultReportInterval = time.Second
	// reportBurst is how long the reporter gathers the changes of a
	// burst (a pod's state and its containers' in one worker pass)
	// before a pass.
	reportBurst = 5 * time.Millisecond
	// reportMinGap is the least time from one pass to the next that a
	// change starts, so that a busy node is written at most 50 times a
	// second; changes meanwhile are gathered into the next pass.
	reportMinGap = 20 * time.Millisecond
	// reportResyncPeriod is how often the reporter compares its pods with
	// the server's list even without a reconnect, to heal lost writes.
	reportResyncPeriod = 5 * time.Minute
)

// PodReporterConfig configures a PodReporter.
type PodReporterConfig struct {
	// Client talks to the server.
	Client *client.Client
	// Agent is whose pods are reported.
	Agent *Agent
	// HostIP is status.hostIP.
	HostIP string
	// NodeUID is the Node object's UID (NodeSync.UID), the owner of the
	// mirror pods of file and HTTP pods; nil, or an empty UID, leaves them
	// without an owner until it is known.
	NodeUID func() types.UID
	// Interval is the fallback period of passes without a change signal;
	// zero means DefaultReportInterval.
	Interval time.Duration
	// Logger receives operational logs; nil means slog.Default().
	Logger *slog.Logger
}

// PodReporter keeps one Pod object on the server per pod of the agent:
// created when the pod appears, its status written as soon as it changes,
// as kubelet's status manager does, deleted when the pod is gone. The pod
// workers signal changes (Agent.podChanged); a burst of them is one pass,
// and passes are at least reportMinGap apart. A pass every Interval is
// the fallback. After a failed
// write (the server away) and every reportResyncPeriod it lists the node's
// Pod objects and reconciles them whole: missing ones are created, stale
// ones updated, and ones the agent does not run deleted.
//
// A Pod object of a DaemonSet pod deleted on the server by someone else
// (PodDeleted) makes the agent restart that pod fresh, as the DaemonSet
// controller recreates a deleted pod; a deleted mirror pod is only written
// again, as kubelet recreates mirror pods.
type PodReporter struct {
	cfg PodReporterConfig
	log *slog.Logger

	mu       sync.Mutex           // guards deleting, gone and dropped
	deleting map[types.UID]bool   // Pod objects this reporter is deleting
	gone     map[string]types.UID // Pod objects deleted on the server, by namespace/name
	// dropped are orphan pods whose Pod object someone deleted: the agent
	// is about to stop them, and writing them back would bring them back
	// as orphans to keep.
	dropped map[types.UID]bool

	// Only the Run goroutine touches the fields below.
	written    map[string]*writtenPod // by namespace/name
	strays     map[string]types.UID   // server Pods the agent did not run at the last resync
	needResync bool
	lastResync time.Time
}

// writtenPod is what the server holds of one pod, as far as the reporter
// knows.
type writtenPod struct {
	uid      types.UID
	onServer bool
	meta     string // canonical labels, annotations, owners and spec
	status   string // canonical status without condition times
	conds    []corev1.PodCondition
	lastErr  string
}

// NewPodReporter returns a pod reporter; Run starts it.
func NewPodReporter(cfg PodReporterConfig) *PodReporter {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultReportInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &PodReporter{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "pod-reporter"),
		deleting:   map[types.UID]bool{},
		gone:       map[string]types.UID{},
		dropped:    map[types.UID]bool{},
		written:    map[string]*writtenPod{},
		strays:     map[string]types.UID{},
		needResync: true,
	}
}

// Run reports until ctx ends: a pass at once, then one per change signal
// and one every Interval. While the server is away only the Interval
// passes retry, so that pods changing meanwhile do not hammer it.
func (r *PodReporter) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		r.pass(ctx)
		last := time.Now()
		changes := r.cfg.Agent.podsBell
		if r.needResync {
			changes = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changes:
			wait := time.NewTimer(max(reportBurst, reportMinGap-time.Since(last)))
			select {
			case <-ctx.Done():
				wait.Stop()
				return
			case <-wait.C:
			}
		}
	}
}

// PodDeleted takes a Pod object of this node that the server deleted (the
// server source's watch). Unless the reporter deleted it itself, the
// object is written again, and a pod controlled by a DaemonSet is
// restarted fresh.
func (r *PodReporter) PodDeleted(pod *corev1.Pod) {
	r.mu.Lock()
	if r.deleting[pod.UID] {
		delete(r.deleting, pod.UID)
		r.mu.Unlock()
		return
	}
	r.gone[podKey(pod)] = pod.UID
	ref := metav1.GetControllerOf(pod)
	if ref == nil && pod.Annotations[AnnotationDaemonSet] != "" {
		r.dropped[pod.UID] = true
	}
	r.mu.Unlock()
	if ref != nil && ref.Kind == "DaemonSet" {
		if r.cfg.Agent.RestartPod(string(pod.UID), "Pod object deleted on the server") {
			r.log.Info("pod object deleted on the server; restarting the pod", "pod", podKey(pod), "uid", pod.UID)
		}
	}
}

// pass is one round of writes. A write the server cannot take because it
// is away ends the pass and asks for a resync.
func (r *PodReporter) pass(ctx context.Context) {
	if r.needResync || time.Since(r.lastResync) > reportResyncPeriod {
		if !r.resync(ctx) {
			return
		}
	}
	r.mu.Lock()
	for key, uid := range r.gone {
		if wp := r.written[key]; wp != nil && wp.uid == uid {
			wp.onServer = false
		}
	}
	clear(r.gone)
	r.mu.Unlock()

	pods := r.cfg.Agent.reportedPods()
	current := make(map[string]reportedPod, len(pods))
	for _, rp := range pods {
		current[rp.status.Namespace+"/"+rp.status.Name] = rp
	}
	for _, key := range slices.Sorted(maps.Keys(r.written)) {
		wp := r.written[key]
		if cur, ok := current[key]; ok && types.UID(cur.status.UID) == wp.uid {
			continue
		}
		if wp.onServer && !r.delete(ctx, key, wp.uid) {
			return
		}
		delete(r.written, key)
	}
	for _, key := range slices.Sorted(maps.Keys(r.strays)) {
		uid := r.strays[key]
		delete(r.strays, key)
		if cur, ok := current[key]; ok && types.UID(cur.status.UID) == uid {
			continue // the agent runs it now (an orphan it kept)
		}
		if _, ok := r.written[key]; ok {
			continue // a pod of the same name replaces it below
		}
		if !r.delete(ctx, key, uid) {
			return
		}
	}
	r.mu.Lock()
	dropped := maps.Clone(r.dropped)
	for uid := range r.dropped {
		if !slices.ContainsFunc(pods, func(rp reportedPod) bool { return types.UID(rp.status.UID) == uid }) {
			delete(r.dropped, uid) // stopped: forget it
		}
	}
	r.mu.Unlock()
	for _, key := range slices.Sorted(maps.Keys(current)) {
		if dropped[types.UID(current[key].status.UID)] {
			continue
		}
		if !r.write(ctx, key, current[key]) {
			return
		}
	}
}

// resync lists the node's Pod objects and takes them as what the server
// holds. It reports false when the server is away.
func (r *PodReporter) resync(ctx context.Context) bool {
	node := r.cfg.Agent.node
	l, err := r.cfg.Client.Pods(metav1.NamespaceAll).List(ctx, client.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		r.needResync = true
		if ctx.Err() == nil {
			r.log.Warn("cannot list the node's pods on the server; retrying", "err", err)
		}
		return false
	}
	agentPods := map[string]types.UID{}
	for _, rp := range r.cfg.Agent.reportedPods() {
		agentPods[rp.status.Namespace+"/"+rp.status.Name] = types.UID(rp.status.UID)
	}
	// Only an agent that heard from every source knows which pods it will
	// run; before that a Pod object it does not run yet may be an orphan
	// it is about to keep.
	srcs := r.cfg.Agent.Sources()
	settled := len(srcs) > 0
	for _, s := range srcs {
		settled = settled && s.Synced
	}
	r.written = map[string]*writtenPod{}
	clear(r.strays)
	for i := range l.Items {
		p := &l.Items[i]
		key := podKey(p)
		if uid, ok := agentPods[key]; ok && uid == p.UID {
			r.written[key] = &writtenPod{uid: p.UID, onServer: true, meta: canonicalMeta(p), status: canonicalStatus(&p.Status), conds: p.Status.Conditions}
			continue
		}
		if settled {
			r.strays[key] = p.UID
		}
	}
	r.mu.Lock()
	clear(r.deleting)
	clear(r.gone)
	r.mu.Unlock()
	r.needResync, r.lastResync = false, time.Now()
	return true
}

// delete removes a Pod object, only if it is still the given pod. It
// reports false when the server is away.
func (r *PodReporter) delete(ctx context.Context, key string, uid types.UID) bool {
	ns, name := splitKey(key)
	r.mu.Lock()
	r.deleting[uid] = true
	r.mu.Unlock()
	err := r.cfg.Client.Pods(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err == nil {
		return true
	}
	r.mu.Lock()
	delete(r.deleting, uid)
	r.mu.Unlock()
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return true // gone already, or another pod by now
	}
	return r.failed(ctx, "delete", key, nil, err)
}

// write creates or updates the Pod object of one pod when it changed. It
// reports false when the server is away.
func (r *PodReporter) write(ctx context.Context, key string, rp reportedPod) bool {
	uid := types.UID(rp.status.UID)
	wp := r.written[key]
	if wp == nil || wp.uid != uid {
		wp = &writtenPod{uid: uid}
		r.written[key] = wp
	}
	obj := r.podObject(rp, wp.conds)
	meta, status := canonicalMeta(obj), canonicalStatus(&obj.Status)
	pods := r.cfg.Client.Pods(obj.Namespace)
	if !wp.onServer {
		if rp.stopping {
			return true // going away; not worth an object
		}
		_, err := pods.Create(ctx, obj, client.WriteOptions{})
		if apierrors.IsAlreadyExists(err) {
			var existing *corev1.Pod
			existing, err = pods.Get(ctx, obj.Name)
			switch {
			case err != nil:
			case existing.UID != uid:
				// An older pod of the same name (another revision).
				if !r.delete(ctx, key, existing.UID) {
					return false
				}
				_, err = pods.Create(ctx, obj, client.WriteOptions{})
			default:
				_, err = pods.Update(ctx, obj, client.WriteOptions{})
			}
		}
		if err == nil {
			// The status is written apart: create and update may
			// ignore it.
			_, err = pods.UpdateStatus(ctx, obj)
		}
		if err != nil {
			return r.failed(ctx, "create", key, wp, err)
		}
		wp.onServer, wp.meta, wp.status, wp.conds, wp.lastErr = true, meta, status, obj.Status.Conditions, ""
		return true
	}
	// A pod being stopped keeps the metadata it has on the server, as
	// kubelet never rewrites a terminating pod's: its DaemonSet is gone
	// from the set, and the object written without its owner would be an
	// orphan that the server source brings back to run.
	if meta != wp.meta && !rp.stopping {
		if _, err := pods.Update(ctx, obj, client.WriteOptions{}); err != nil {
			return r.failed(ctx, "update", key, wp, err)
		}
		wp.meta = meta
	}
	if status != wp.status {
		if _, err := pods.UpdateStatus(ctx, obj); err != nil {
			return r.failed(ctx, "update status", key, wp, err)
		}
		wp.status, wp.conds = status, obj.Status.Conditions
	}
	wp.lastErr = ""
	return true
}

// failed handles a write error: the server away asks for a resync and
// ends the pass (false); a missing object is created on the next pass;
// another error is logged once and the pass goes on.
func (r *PodReporter) failed(ctx context.Context, op, key string, wp *writtenPod, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errdefs.IsUnavailable(err) {
		if !r.needResync {
			r.log.Warn("server unavailable; pods are reported again once it answers", "err", err)
		}
		r.needResync = true
		return false
	}
	if wp != nil && apierrors.IsNotFound(err) {
		wp.onServer = false
		return true
	}
	if wp == nil || wp.lastErr != err.Error() {
		r.log.Error("cannot write the pod object", "op", op, "pod", key, "err", err)
	}
	if wp != nil {
		wp.lastErr = err.Error()
	}
	return true
}

// podObject is the Pod object of one pod, as the contract describes it.
// Condition transition times carry over from prev while the condition's
// status is unchanged.
func (r *PodReporter) podObject(rp reportedPod, prev []corev1.PodCondition) *corev1.Pod {
	st := rp.status
	annotations := maps.Clone(rp.pod.Annotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[AnnotationDaemonSet] = st.DaemonSet
	var owners []metav1.OwnerReference
	switch st.Source {
	case SourceFile, SourceHTTP:
		annotations[annotationConfigSource] = st.Source
		annotations[annotationConfigMirror] = st.UID
		if r.cfg.NodeUID != nil {
			if uid := r.cfg.NodeUID(); uid != "" {
				owners = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: rp.pod.NodeName, UID: uid, Controller: ptr.To(true)}}
			}
		}
	default:
		if rp.dsUID != "" {
			owners = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: st.DaemonSet, UID: rp.dsUID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}
		}
	}
	pod := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace:       st.Namespace,
			Name:            st.Name,
			UID:             types.UID(st.UID),
			Labels:          maps.Clone(rp.pod.Labels),
			Annotations:     annotations,
			OwnerReferences: owners,
		},
		Spec:   *rp.pod.Spec.DeepCopy(),
		Status: r.podStatus(rp),
	}
	now := metav1.Now()
	for i := range pod.Status.Conditions {
		c := &pod.Status.Conditions[i]
		c.LastTransitionTime = now
		for _, p := range prev {
			if p.Type == c.Type && p.Status == c.Status {
				c.LastTransitionTime = p.LastTransitionTime
			}
		}
	}
	return pod
}

// podStatus is the Pod status of one pod, without condition times.
func (r *PodReporter) podStatus(rp reportedPod) corev1.PodStatus {
	st := rp.status
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse}
		if ok {
			c.Status = corev1.ConditionTrue
		}
		return c
	}
	ready := st.Phase == corev1.PodRunning && st.Total > 0 && st.Ready == st.Total
	out := corev1.PodStatus{
		Phase:   st.Phase,
		Reason:  st.Reason,
		Message: st.Message,
		Conditions: []corev1.PodCondition{
			cond(corev1.PodScheduled, true),
			cond(corev1.PodInitialized, rp.initDone),
			cond(corev1.ContainersReady, ready),
			cond(corev1.PodReady, ready),
		},
		HostIP: r.cfg.HostIP,
	}
	if r.cfg.HostIP != "" {
		out.HostIPs = []corev1.HostIP{{IP: r.cfg.HostIP}}
	}
	podIP := rp.podIP
	if podIP == "" && rp.pod.Spec.HostNetwork {
		podIP = r.cfg.HostIP
	}
	if podIP != "" {
		out.PodIP, out.PodIPs = podIP, []corev1.PodIP{{IP: podIP}}
	}
	if !st.StartTime.IsZero() {
		out.StartTime = ptr.To(metav1.NewTime(st.StartTime))
	}
	for _, c := range st.Containers {
		cs := corev1.ContainerStatus{
			Name:         c.Name,
			Image:        c.Image,
			Ready:        c.Ready,
			RestartCount: int32(c.RestartCount),
		}
		if c.ID != "" {
			cs.ContainerID = "containerd://" + c.ID
		}
		switch c.State {
		case "Running":
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.StartedAt)}
			cs.Started = ptr.To(true)
		case "Terminated":
			cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: c.ExitCode, Reason: c.Reason, Message: c.Message, StartedAt: metav1.NewTime(c.StartedAt)}
			cs.Started = ptr.To(false)
		default:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.Reason, Message: c.Message}
			cs.Started = ptr.To(false)
		}
		if c.Init {
			out.InitContainerStatuses = append(out.InitContainerStatuses, cs)
		} else {
			out.ContainerStatuses = append(out.ContainerStatuses, cs)
		}
	}
	return out
}

// canonicalMeta is what a PUT of the main resource writes, for change
// detection.
func canonicalMeta(p *corev1.Pod) string {
	b, _ := json.Marshal([]any{p.Labels, p.Annotations, p.OwnerReferences, p.Spec})
	return string(b)
}

// canonicalStatus is the status without the condition times, which change
// without the status changing.
func canonicalStatus(s *corev1.PodStatus) string {
	c := s.DeepCopy()
	for i := range c.Conditions {
		c.Conditions[i].LastTransitionTime, c.Conditions[i].LastProbeTime = metav1.Time{}, metav1.Time{}
	}
	b, _ := json.Marshal(c)
	return string(b)
}

// splitKey splits namespace/name.
func splitKey(key string) (ns, name string) {
	ns, name, _ = strings.Cut(key, "/")
	return ns, name
}

// podChanged tells the pod reporter that a pod's reported state may have
// changed, without blocking; signals coalesce until the reporter's pass.
func (a *Agent) podChanged() { ringBell(a.podsBell) }

// reportedPod is what the reporter needs of one pod of the agent.
type reportedPod struct {
	status   PodStatus
	pod      *runtime.Pod
	podIP    string
	initDone bool
	stopping bool
	dsUID    types.UID // the owning DaemonSet's UID, empty for orphans
}

// reportedPods snapshots the agent's pods that have a spec (a pod found at
// start that nobody wants has none: it is only being removed).
func (a *Agent) reportedPods() []reportedPod {
	a.mu.Lock()
	workers := slices.Collect(maps.Values(a.workers))
	dsUIDs := map[string]types.UID{} // of every DaemonSet in a set
	for name, s := range a.sources {
		for _, d := range s.set {
			dsUIDs[name+"\x00"+d.Key()] = d.DaemonSet.UID
		}
	}
	a.mu.Unlock()
	out := make([]reportedPod, 0, len(workers))
	for _, w := range workers {
		st := w.status()
		w.mu.Lock()
		rp := reportedPod{status: st, pod: w.pod, podIP: w.podIP, initDone: w.view.initDone, stopping: w.stopReason != ""}
		w.mu.Unlock()
		if rp.pod == nil || rp.pod.Spec == nil {
			continue
		}
		uid, inSet := dsUIDs[st.Source+"\x00"+st.Namespace+"/"+st.DaemonSet]
		// A pod whose DaemonSet left its source's set is stopped by the
		// next sync; until then it counts as stopping already.
		rp.dsUID, rp.stopping = uid, rp.stopping || !inSet
		out = append(out, rp)
	}
	return out
}
