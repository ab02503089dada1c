package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/runtime"
	"github.com/daemonlet/daemonlet/store"
)

// DefaultSyncPeriod is how often the agent re-evaluates every pod even
// when nothing told it to.
const DefaultSyncPeriod = 10 * time.Second

// Config holds the agent's collaborators and settings.
type Config struct {
	// NodeName is this node's name (--hostname-override).
	NodeName string
	// Node is the node's initial description (labels, taints); nil means
	// a node with that name and no labels or taints.
	Node *corev1.Node
	// Runtime runs the pods.
	Runtime Runtime
	// Store persists the desired state and the pod records.
	Store Store
	// Clock is injected for tests; nil means the real clock.
	Clock clock.WithTicker
	// Logger receives operational logs; nil means slog.Default().
	Logger *slog.Logger
	// SyncPeriod is the periodic resync; zero means DefaultSyncPeriod.
	SyncPeriod time.Duration
	// Metrics receives the agent's events (NewMetrics); nil records none.
	Metrics *Metrics
}

// sourceState is what the agent knows of one configured source.
type sourceState struct {
	set         []DesiredPod
	objects     sourceObjects
	delivered   bool // a good update arrived (or was loaded) since start
	err         error
	conflicts   []string
	unpersisted *SourceUpdate // a good update the store refused; retried
}

// SourceStatus reports one configured source.
type SourceStatus struct {
	Name string
	// Synced says the source delivered a full set since the agent started.
	Synced     bool
	DaemonSets int
	// Err is the last read or persistence error; nil after a good update.
	Err error
	// Conflicts lists the DaemonSets of this source that another source,
	// registered earlier, already defines.
	Conflicts []string
}

// Agent runs the daemon pods of one node.
type Agent struct {
	node       string
	rt         Runtime
	st         Store
	clock      clock.WithTicker
	log        *slog.Logger
	syncPeriod time.Duration
	metrics    *Metrics
	bell       chan struct{} // sync doorbell, capacity 1
	// podsBell rings when a pod's reported state may have changed
	// (podChanged); the pod reporter waits on it. Capacity 1.
	podsBell chan struct{}

	mu             sync.Mutex // guards the fields below
	nodeObj        *corev1.Node
	nodeGen        uint64    // counts nodeObj replacements; see derivedIntents
	noExecute      string    // canonical NoExecute taints, see noExecuteTaints
	noExecuteSince time.Time // when noExecute last changed
	order          []string
	sources        map[string]*sourceState
	loadedFromDB   bool
	workers        map[string]*podWorker // by pod UID
	objects        *objectSet            // merged ConfigMaps and Secrets; replaced whole, never mutated
	orphans        map[string]orphan     // by pod UID
	lastPlan       string
	lastConflicts  string
	lastTick       time.Time
	synced         bool // a sync ran after every source reported; see Ready
	running        bool
	wg             sync.WaitGroup // the workers' goroutines

	// merged is mergeSources of the sources' sets, valid while mergedOK;
	// whatever replaces a set clears mergedOK.
	merged   []DesiredPod
	mergedOK bool
	// derived is what sync derives from each merged DesiredPod, by its
	// DaemonSet; see derivedIntents.
	derived map[*appsv1.DaemonSet]*derivedIntents
}

// orphan is a pod found in the runtime or the store at start that has no
// worker yet.
type orphan struct {
	id     podIdentity
	record store.PodRecord
}

// New checks the configuration and returns an agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.NodeName == "" {
		return nil, fmt.Errorf("agent: node name is required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Runtime == nil || cfg.Store == nil {
		return nil, fmt.Errorf("agent: a runtime and a store are required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Node != nil && cfg.Node.Name != cfg.NodeName {
		return nil, fmt.Errorf("agent: node object %q does not match node name %q: %w", cfg.Node.Name, cfg.NodeName, errdefs.ErrInvalidArgument)
	}
	a := &Agent{
		node:       cfg.NodeName,
		rt:         cfg.Runtime,
		st:         cfg.Store,
		clock:      cfg.Clock,
		log:        cfg.Logger,
		syncPeriod: cfg.SyncPeriod,
		metrics:    cfg.Metrics,
		bell:       make(chan struct{}, 1),
		podsBell:   make(chan struct{}, 1),
		sources:    map[string]*sourceState{},
		workers:    map[string]*podWorker{},
		orphans:    map[string]orphan{},
		derived:    map[*appsv1.DaemonSet]*derivedIntents{},
	}
	if a.clock == nil {
		a.clock = clock.RealClock{}
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.syncPeriod <= 0 {
		a.syncPeriod = DefaultSyncPeriod
	}
	node := cfg.Node
	if node == nil {
		node = api.NewNode(cfg.NodeName, nil, nil)
	}
	a.setNodeLocked(node)
	return a, nil
}

// SetNode replaces the node's description (labels and taints may change at
// run time) and re-evaluates every DaemonSet at once.
func (a *Agent) SetNode(node *corev1.Node) {
	a.mu.Lock()
	a.setNodeLocked(node.DeepCopy())
	a.mu.Unlock()
	a.ring()
}

// RestartPod stops the pod with that UID, as when its Pod object was
// deleted on the server: the sync loop starts a fresh one afterwards if a
// DaemonSet still wants it, as the DaemonSet controller recreates a deleted
// pod. It reports whether the agent had such a pod.
func (a *Agent) RestartPod(uid, reason string) bool {
	a.mu.Lock()
	w, ok := a.workers[uid]
	a.mu.Unlock()
	if ok {
		w.stop(reason)
	}
	return ok
}

func (a *Agent) setNodeLocked(node *corev1.Node) {
	a.nodeObj = node
	a.nodeGen++
	if ne := noExecuteTaints(node); ne != a.noExecute {
		a.noExecute, a.noExecuteSince = ne, a.clock.Now()
	}
}

func (a *Agent) ring() {
	select {
	case a.bell <- struct{}{}:
	default:
	}
}

// Healthy returns nil while the sync loop is alive: it must have ticked
// within three sync periods.
func (a *Agent) Healthy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.running {
		return fmt.Errorf("agent sync loop is not running: %w", errdefs.ErrUnavailable)
	}
	if since := a.clock.Since(a.lastTick); since > 3*a.syncPeriod {
		return fmt.Errorf("agent sync loop last ran %v ago: %w", since.Round(time.Second), errdefs.ErrUnavailable)
	}
	return nil
}

// Sources reports the configured sources, in registration order.
func (a *Agent) Sources() []SourceStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]SourceStatus, 0, len(a.order))
	for _, name := range a.order {
		s := a.sources[name]
		out = append(out, SourceStatus{Name: name, Synced: s.delivered, DaemonSets: len(s.set), Err: s.err, Conflicts: slices.Clone(s.conflicts)})
	}
	return out
}

// Run restores the state, then applies the updates of the sources (given
// in registration order, which settles name conflicts) until ctx ends. On
// return the workers have stopped and the containers still run. A closed
// updates channel leaves the agent running on the last-known state.
func (a *Agent) Run(ctx context.Context, updates <-chan SourceUpdate, sources []string) error {
	a.mu.Lock()
	if a.running {
		a.mu.Unlock()
		return fmt.Errorf("agent is already running: %w", errdefs.ErrFailedPrecondition)
	}
	for _, s := range sources {
		if _, dup := a.sources[s]; dup {
			a.mu.Unlock()
			return fmt.Errorf("source %q configured twice: %w", s, errdefs.ErrInvalidArgument)
		}
		a.sources[s] = &sourceState{}
		a.order = append(a.order, s)
		a.metrics.initSource(s)
	}
	a.running, a.lastTick = true, a.clock.Now()
	a.mu.Unlock()
	defer func() {
		a.wg.Wait()
		a.mu.Lock()
		a.running = false
		a.mu.Unlock()
	}()

	if err := a.restore(ctx); err != nil {
		return err
	}
	ticker := a.clock.NewTicker(a.syncPeriod)
	defer ticker.Stop()
	var timer clock.Timer
	for {
		wakeAt := a.sync(ctx)
		var timerC <-chan time.Time
		if !wakeAt.IsZero() {
			timer = a.clock.NewTimer(max(wakeAt.Sub(a.clock.Now()), 0))
			timerC = timer.C()
		}
		select {
		case <-ctx.Done():
		case u, ok := <-updates:
			if !ok {
				a.log.Warn("source updates closed; running on the last-known state")
				updates = nil
			} else {
				a.apply(u)
			}
		case <-a.bell:
		case <-ticker.C():
			a.resync()
		case <-timerC:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			a.log.Info("agent stopping; containers keep running")
			return nil
		}
	}
}

// resync is the periodic pass: retry persisting refused updates and wake
// every worker so that it checks its containers.
func (a *Agent) resync() {
	a.mu.Lock()
	var retry []SourceUpdate
	for _, name := range a.order {
		if u := a.sources[name].unpersisted; u != nil {
			retry = append(retry, *u)
		}
	}
	workers := slices.Collect(maps.Values(a.workers))
	a.mu.Unlock()
	for _, u := range retry {
		a.apply(u)
	}
	for _, w := range workers {
		w.ring()
	}
}

// restore loads the last-known desired state and the pod records, and
// lists the runtime, so that running pods are adopted, not restarted.
func (a *Agent) restore(ctx context.Context) error {
	recs, bad, err := a.st.ListDesired()
	if err != nil {
		return fmt.Errorf("load desired state: %w", err)
	}
	for key, err := range bad {
		a.log.Error("ignoring unreadable desired record", "key", key, "err", err)
	}
	loaded := map[string][]DesiredPod{}
	for _, rec := range recs {
		d, err := desiredFromRecord(rec)
		if err != nil {
			a.log.Error("ignoring unreadable desired record", "key", rec.Key, "err", err)
			continue
		}
		loaded[rec.Source] = append(loaded[rec.Source], d)
	}

	objRecs, badObjs, err := a.st.ListObjects()
	if err != nil {
		return fmt.Errorf("load ConfigMaps and Secrets: %w", err)
	}
	for key, err := range badObjs {
		a.log.Error("ignoring unreadable ConfigMap or Secret record", "key", key, "err", err)
	}
	loadedObjs, objErrs := objectsFromRecords(objRecs)
	for _, err := range objErrs {
		a.log.Error("ignoring unreadable ConfigMap or Secret record", "err", err)
	}

	podRecs, badPods, err := a.st.ListPods()
	if err != nil {
		return fmt.Errorf("load pod records: %w", err)
	}
	for uid, err := range badPods {
		a.log.Error("ignoring unreadable pod record", "uid", uid, "err", err)
	}
	containers, err := a.rt.ListContainers(ctx)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	sandboxes, err := a.rt.ListSandboxes(ctx)
	if err != nil {
		return fmt.Errorf("list sandboxes: %w", err)
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	for src, set := range loaded {
		s, ok := a.sources[src]
		if !ok {
			a.log.Warn("ignoring the stored state of a source that is no longer configured", "source", src)
			continue
		}
		s.set = set
		a.loadedFromDB = true
	}
	a.mergedOK = false
	for src, objs := range loadedObjs {
		if s, ok := a.sources[src]; ok {
			s.objects = objs
		}
	}
	a.rebuildObjectsLocked()
	for _, rec := range podRecs {
		_, ds, _ := strings.Cut(rec.Owner, "/")
		a.orphans[rec.UID] = orphan{
			id:     podIdentity{Namespace: rec.Namespace, Name: rec.Name, DaemonSet: ds, Source: rec.Source, Revision: rec.Revision},
			record: rec,
		}
	}
	for _, c := range containers {
		if _, ok := a.orphans[c.PodUID]; !ok {
			a.orphans[c.PodUID] = orphan{id: podIdentity{Namespace: c.Namespace, Name: c.PodName, Revision: c.Revision}}
		}
	}
	for _, uid := range sandboxes {
		if _, ok := a.orphans[uid]; !ok {
			a.orphans[uid] = orphan{}
		}
	}
	a.log.Info("restored state", "storedSources", len(loaded), "pods", len(a.orphans), "containers", len(containers))
	return nil
}

// apply takes one source update. The set is persisted before it is acted
// on; a set the store refuses is kept aside and retried, and the previous
// set stays in force meanwhile.
func (a *Agent) apply(u SourceUpdate) {
	a.mu.Lock()
	s, ok := a.sources[u.Source]
	a.mu.Unlock()
	if !ok {
		a.log.Error("update from an unknown source ignored", "source", u.Source)
		return
	}
	if u.Err != nil {
		a.metrics.sourceError(u.Source)
		a.mu.Lock()
		changed := s.err == nil || s.err.Error() != u.Err.Error()
		s.err = u.Err
		a.mu.Unlock()
		if changed {
			a.log.Warn("source read failed; keeping its previous set", "source", u.Source, "err", u.Err)
		}
		return
	}
	var set []DesiredPod
	var errs []error
	seen := map[string]bool{}
	for _, ds := range u.DaemonSets {
		d, err := newDesiredPod(u.Source, ds)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[d.Key()] {
			errs = append(errs, fmt.Errorf("source %s: DaemonSet %s defined twice; the first is used: %w", u.Source, d.Key(), errdefs.ErrAlreadyExists))
			continue
		}
		seen[d.Key()] = true
		set = append(set, d)
	}
	now := a.clock.Now()
	objs, objErrs := checkObjects(u.Source, sourceObjects{configMaps: u.ConfigMaps, secrets: u.Secrets})
	errs = append(errs, objErrs...)
	// Objects are persisted before the DaemonSets that use them, so a
	// stored pod never lacks the configuration it was delivered with.
	objRecs, err := objectRecords(u.Source, objs, now)
	if err == nil {
		err = a.st.ReplaceObjects(u.Source, objRecs)
	}
	if err == nil {
		var recs []store.DesiredRecord
		if recs, err = desiredRecords(set, now); err == nil {
			err = a.st.ReplaceDesired(u.Source, recs)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.metrics.sourceError(u.Source)
		s.err = fmt.Errorf("persist desired state of source %s: %w", u.Source, err)
		s.unpersisted = &u
		a.log.Error("cannot persist desired state; keeping the previous set", "source", u.Source, "err", err)
		return
	}
	s.set, s.delivered, s.unpersisted = set, true, nil
	a.mergedOK = false
	s.objects = objs
	a.rebuildObjectsLocked()
	s.err = errors.Join(errs...)
	if s.err != nil {
		a.metrics.sourceError(u.Source)
		a.log.Warn("source delivered invalid objects", "source", u.Source, "err", s.err)
	}
}

// deletionsAllowedLocked says whether pods nobody wants may be removed:
// every source has delivered a set, or the last-known state was loaded.
func (a *Agent) deletionsAllowedLocked() bool {
	if a.loadedFromDB {
		return true
	}
	for _, s := range a.sources {
		if !s.delivered {
			return false
		}
	}
	return true
}

// sync merges the sources, decides each DaemonSet's fate on this node and
// starts, updates or stops workers. It never waits on a worker. It returns
// when it must run again by itself (a NoExecute eviction deadline).
func (a *Agent) sync(ctx context.Context) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clock.Now()
	a.lastTick = now
	defer a.metrics.observeSyncSince(a.clock, now)
	// This pass acts on every source's report, so it is the first sync
	// Ready waits for.
	a.synced = a.synced || a.sourcesReportedLocked()

	if !a.mergedOK {
		a.mergeLocked()
	}

	var wakeAt time.Time
	intents := make([]podIntent, 0, len(a.merged))
	for _, d := range a.merged {
		var wake time.Time
		intents, wake = a.appendIntents(intents, d, now)
		wakeAt = earliest(wakeAt, wake)
	}
	observed := make([]podObserved, 0, len(a.workers)+len(a.orphans))
	for uid, w := range a.workers {
		observed = append(observed, podObserved{DaemonSet: w.id.owner(), Key: w.id.Namespace + "/" + w.id.Name, UID: uid, Worker: true, Terminating: w.stopping()})
	}
	for uid, o := range a.orphans {
		key := ""
		if o.id.Name != "" {
			key = o.id.Namespace + "/" + o.id.Name
		}
		observed = append(observed, podObserved{DaemonSet: o.id.owner(), Key: key, UID: uid, Terminating: o.record.Terminating})
	}
	a.metrics.setDesiredPods(intents)
	plan := planPods(intents, observed, a.deletionsAllowedLocked())
	if s := plan.String(); s != a.lastPlan {
		a.log.Info("sync", "plan", s)
		a.lastPlan = s
	}

	for _, in := range plan.Start {
		o := a.orphans[in.UID]
		delete(a.orphans, in.UID)
		id := podIdentity{Namespace: in.Pod.Namespace, Name: in.Pod.Name, DaemonSet: in.Desired.Name, Source: in.Desired.Source, Revision: in.Pod.Revision}
		a.startWorkerLocked(ctx, newPodWorker(a, in.UID, in.Pod, id, o.record))
	}
	for _, in := range plan.Update {
		w := a.workers[in.UID]
		// A pass that changes nothing hands each worker the pod it has
		// (derivedIntents keeps it): waking every worker for that would
		// make every pass a pass of every pod. The periodic resync wakes
		// them to look at their containers.
		w.mu.Lock()
		same := w.pod == in.Pod
		w.mu.Unlock()
		if !same {
			w.update(in.Pod)
		}
	}
	for _, st := range plan.Stop {
		if w, ok := a.workers[st.UID]; ok {
			w.stop(st.Reason)
			continue
		}
		o := a.orphans[st.UID]
		delete(a.orphans, st.UID)
		w := newPodWorker(a, st.UID, nil, o.id, o.record)
		w.stop(st.Reason)
		a.startWorkerLocked(ctx, w)
	}
	return wakeAt
}

// mergeLocked merges the sources' sets into merged, records each source's
// conflicts, logs them when they changed, and forgets what was derived from
// DaemonSets no longer merged.
func (a *Agent) mergeLocked() {
	sets := make(map[string][]DesiredPod, len(a.sources))
	for name, s := range a.sources {
		sets[name] = s.set
		s.conflicts = nil
	}
	merged, conflicts := mergeSources(a.order, sets)
	a.merged, a.mergedOK = merged, true
	for _, c := range conflicts {
		a.sources[c.Loser].conflicts = append(a.sources[c.Loser].conflicts, c.String())
	}
	if joined := fmt.Sprint(conflicts); joined != a.lastConflicts {
		for _, c := range conflicts {
			a.log.Error("DaemonSet defined by two sources; the first registered wins",
				"daemonset", c.Key, "used", c.Winner, "ignored", c.Loser)
		}
		a.lastConflicts = joined
	}
	live := make(map[*appsv1.DaemonSet]bool, len(a.merged))
	for _, d := range a.merged {
		live[d.DaemonSet] = true
	}
	maps.DeleteFunc(a.derived, func(ds *appsv1.DaemonSet, _ *derivedIntents) bool { return !live[ds] })
}

// derivedIntents is what a sync pass derives from one DesiredPod without
// looking at the time: its pods and the daemon tolerations, which depend
// on the DesiredPod alone, and its eligibility, which depends on the node
// too. A DesiredPod is built once per source update and never changed, so
// a pass that changes nothing reuses all of it instead of deep-copying and
// re-evaluating 100 templates.
type derivedIntents struct {
	revisions []podRevision // the DesiredPod's, whose identity it checks
	key       string        // the DaemonSet's namespace/name
	// pods are buildPod of each revision, nil when the DaemonSet is held.
	// They are handed to workers as they are and must not be mutated.
	pods        []*runtime.Pod
	podKeys     []string // each pod's namespace/name
	tolerations []corev1.Toleration
	nodeGen     uint64 // the Agent.nodeGen elig was evaluated at
	elig        eligibility
}

// derivedLocked returns what is derived from d, computing what is missing
// or stale.
func (a *Agent) derivedLocked(d DesiredPod) *derivedIntents {
	c := a.derived[d.DaemonSet]
	if c == nil || !sameRevisions(c.revisions, d.Revisions) {
		c = &derivedIntents{revisions: d.Revisions, key: d.Key()}
		if !d.held() {
			for _, r := range d.Revisions {
				pod := buildPod(d, r, a.node)
				c.pods = append(c.pods, pod)
				c.podKeys = append(c.podKeys, pod.Namespace+"/"+pod.Name)
			}
			// The NoExecute tolerations are those of the newest pod.
			c.tolerations = c.pods[len(c.pods)-1].Spec.Tolerations
		} else {
			newest := d.Revisions[len(d.Revisions)-1].Template
			if newest == nil {
				newest = &d.DaemonSet.Spec.Template
			}
			spec := corev1.PodSpec{Tolerations: slices.Clone(newest.Spec.Tolerations)}
			api.AddDaemonPodTolerations(&spec)
			c.tolerations = spec.Tolerations
		}
		a.derived[d.DaemonSet] = c
	}
	if c.nodeGen != a.nodeGen {
		c.elig, c.nodeGen = nodeEligibility(a.nodeObj, d.DaemonSet, c.tolerations), a.nodeGen
	}
	return c
}

// sameRevisions says whether a and b are the same slice, that is belong
// to the same DesiredPod.
func sameRevisions(a, b []podRevision) bool {
	return len(a) == len(b) && len(a) > 0 && &a[0] == &b[0]
}

// appendIntents appends the intents of one DaemonSet, oldest revision
// first, and returns when its decision changes by itself. Eligibility is
// the DaemonSet's; the NoExecute tolerations are those of the newest pod
// (of the current template while the DaemonSet is held).
func (a *Agent) appendIntents(intents []podIntent, d DesiredPod, now time.Time) ([]podIntent, time.Time) {
	c := a.derivedLocked(d)
	dec, wake, why := c.elig.decide(a.noExecuteSince, now)
	if c.pods == nil {
		return append(intents, podIntent{DaemonSet: c.key, Decision: dec, Why: why, Hold: true, Desired: d}), wake
	}
	for i, pod := range c.pods {
		intents = append(intents, podIntent{
			DaemonSet: c.key, Key: c.podKeys[i], UID: pod.UID,
			Decision: dec, Why: why, Kept: i < len(c.pods)-1, Pod: pod, Desired: d,
		})
	}
	return intents, wake
}

// rebuildObjectsLocked merges the sources' ConfigMaps and Secrets and, when
// the result differs, publishes it and wakes every worker so that volume
// files are rewritten and pods waiting for an object start.
func (a *Agent) rebuildObjectsLocked() {
	merged := mergeObjects(a.order, a.sourceObjectsLocked())
	if a.objects != nil && reflect.DeepEqual(merged, a.objects) {
		return
	}
	a.objects = merged
	for _, w := range a.workers {
		w.ring()
	}
}

// sourceObjectsLocked returns each source's objects.
func (a *Agent) sourceObjectsLocked() map[string]sourceObjects {
	out := make(map[string]sourceObjects, len(a.sources))
	for name, s := range a.sources {
		out[name] = s.objects
	}
	return out
}

// currentObjects returns the merged ConfigMaps and Secrets snapshot.
func (a *Agent) currentObjects() *objectSet {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.objects
}

func (a *Agent) startWorkerLocked(ctx context.Context, w *podWorker) {
	a.workers[w.uid] = w
	a.wg.Go(func() { w.run(ctx) })
}

// workerDone forgets a worker whose pod is gone and lets the sync loop
// start what waited for it (a new revision).
func (a *Agent) workerDone(w *podWorker) {
	a.mu.Lock()
	if a.workers[w.uid] == w {
		delete(a.workers, w.uid)
	}
	a.mu.Unlock()
	a.ring()
}
