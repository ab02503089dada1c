package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
)

// SourceServer is the name of the central server's source.
const SourceServer = "server"

// AnnotationDaemonSet, on a Pod object the agent reports, names the
// DaemonSet the pod was made for. It outlives the ownerReference that an
// orphaning delete removes, so that the agent can keep the orphan running.
const AnnotationDaemonSet = "daemonlet.io/daemonset"

// Annotations kubelet puts on the mirror pods of static pods.
const (
	annotationConfigSource = "kubernetes.io/config.source"
	annotationConfigMirror = "kubernetes.io/config.mirror"
)

// Server source timings.
const (
	// DefaultServerCoalesce is the server source's window: a change after
	// a quiet window is sent at once, and the changes that arrive within
	// the window after a set are gathered into the next one, so that a
	// burst of events costs at most two updates.
	DefaultServerCoalesce = 100 * time.Millisecond
	// serverDeleteGrace is how long a set holding a DaemonSet deletion
	// waits. An orphaning delete first strips the pods' ownerReferences,
	// then deletes the DaemonSet, and the two arrive on different watches:
	// sending the deletion before the pods' change would stop a pod that
	// is about to become an orphan the agent keeps. Likewise an adoption
	// first gives the orphan pod its new owner, which takes the orphan's
	// DaemonSet out of the set before the new DaemonSet arrives.
	serverDeleteGrace = time.Second
	// Reconnect back-off bounds, doubled per failure, with jitter.
	reconnectInitial = 200 * time.Millisecond
	reconnectMax     = 30 * time.Second
	// watchTimeout is the base of each watch request's timeoutSeconds
	// (jittered up to twice that), so that watches are renewed now and then
	// as client-go's reflector does.
	watchTimeout = 5 * time.Minute
	// shortWatch is the life under which a watch that ended cleanly counts
	// as a failure, so that a server closing every watch at once is not
	// hammered.
	shortWatch = time.Second
)

// ServerSourceConfig configures a ServerSource.
type ServerSourceConfig struct {
	// Client talks to the server.
	Client *client.Client
	// NodeName is this node; its pods are watched for orphans.
	NodeName string
	// Location names the server for Report (its URLs).
	Location string
	// NodeSynced, when set, is closed once the server's labels and taints
	// of this node are in force in the agent, and its revision pins are
	// in this source (NodeSync.Synced). The first set waits for it, so
	// that the agent never starts a pod by the settings' labels that the
	// server's labels would stop at once, nor a revision the node is not
	// pinned to.
	NodeSynced <-chan struct{}
	// PodDeleted, when set, is called for every Pod object of this node
	// that the server deletes (PodReporter.PodDeleted).
	PodDeleted func(*corev1.Pod)
	// Coalesce is the least time between two sets: changes within it of
	// the last set are gathered into the next; zero means
	// DefaultServerCoalesce.
	Coalesce time.Duration
	// Logger receives operational logs; nil means slog.Default().
	Logger *slog.Logger
}

// ServerSource delivers the server's DaemonSets, and the orphan pods of
// this node as DaemonSets (see orphanDaemonSet), with the ConfigMaps and
// Secrets they use, each watched by name. It lists and watches both, and
// the ControllerRevisions, which hold the templates of the revisions the
// rollout controller pins on this node (SetNodeRevisions, pinRevisions).
// It resumes a broken watch from the last resourceVersion with back-off,
// and lists anew when the server answers 410 Gone. While the server is
// away it sends an update with Err, so that the agent keeps the last set.
type ServerSource struct {
	cfg ServerSourceConfig
	log *slog.Logger
	// bell wakes the sender; capacity 1.
	bell chan struct{}

	mu         sync.Mutex                            // guards the fields below
	dss        map[string]*appsv1.DaemonSet          // by namespace/name
	pods       map[string]*corev1.Pod                // by namespace/name
	crs        map[string]*appsv1.ControllerRevision // by namespace/name
	nodeRevs   api.NodeRevisions                     // the node's pins, by DaemonSet namespace/name
	dsListed   bool
	podsListed bool
	crsListed  bool
	dirty      bool             // a change not yet sent
	dsDeleted  bool             // the pending change deletes a DaemonSet, or an orphan's
	errs       map[string]error // by watched resource; nil once it works
	errSent    string           // the error text last sent, to send it once
	report     SourceReport
	// unknown holds the pinned revisions last found unresolvable, so
	// that each is logged once.
	unknown map[string]bool
	// objs are the watches of the ConfigMaps and Secrets the set uses;
	// runCtx and wg, set by Run, are where their goroutines run.
	objs   map[objectRef]*objectWatch
	runCtx context.Context
	wg     *sync.WaitGroup
}

var _ Source = (*ServerSource)(nil)

// NewServerSource returns the server source; Run starts it.
func NewServerSource(cfg ServerSourceConfig) *ServerSource {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Coalesce <= 0 {
		cfg.Coalesce = DefaultServerCoalesce
	}
	return &ServerSource{
		cfg:    cfg,
		log:    cfg.Logger.With("source", SourceServer),
		bell:   make(chan struct{}, 1),
		dss:    map[string]*appsv1.DaemonSet{},
		pods:   map[string]*corev1.Pod{},
		crs:    map[string]*appsv1.ControllerRevision{},
		errs:   map[string]error{},
		objs:   map[objectRef]*objectWatch{},
		report: SourceReport{Name: SourceServer, Location: cfg.Location},
	}
}

// Name is SourceServer.
func (s *ServerSource) Name() string { return SourceServer }

// Report describes the source's connection and last set.
func (s *ServerSource) Report() SourceReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.report
}

// Run watches the server until ctx ends.
func (s *ServerSource) Run(ctx context.Context, updates chan<- SourceUpdate) {
	var wg sync.WaitGroup
	s.mu.Lock()
	s.runCtx, s.wg = ctx, &wg
	s.mu.Unlock()
	dsClient := s.cfg.Client.DaemonSets(metav1.NamespaceAll)
	wg.Go(func() {
		runListWatch(ctx, s.log, listWatch[appsv1.DaemonSet]{
			resource: "daemonsets",
			list: func(ctx context.Context) ([]appsv1.DaemonSet, string, error) {
				l, err := dsClient.List(ctx, client.ListOptions{})
				if err != nil {
					return nil, "", err
				}
				return l.Items, l.ResourceVersion, nil
			},
			watch: func(ctx context.Context, opts client.ListOptions) (*client.Watcher[appsv1.DaemonSet], error) {
				return dsClient.Watch(ctx, opts)
			},
			replace: s.replaceDaemonSets,
			event:   s.daemonSetEvent,
			failed:  s.failed,
			working: s.working,
		})
	})
	podClient := s.cfg.Client.Pods(metav1.NamespaceAll)
	sel := "spec.nodeName=" + s.cfg.NodeName
	wg.Go(func() {
		runListWatch(ctx, s.log, listWatch[corev1.Pod]{
			resource: "pods",
			list: func(ctx context.Context) ([]corev1.Pod, string, error) {
				l, err := podClient.List(ctx, client.ListOptions{FieldSelector: sel})
				if err != nil {
					return nil, "", err
				}
				return l.Items, l.ResourceVersion, nil
			},
			watch: func(ctx context.Context, opts client.ListOptions) (*client.Watcher[corev1.Pod], error) {
				opts.FieldSelector = sel
				return podClient.Watch(ctx, opts)
			},
			replace: s.replacePods,
			event:   s.podEvent,
			failed:  s.failed,
			working: s.working,
		})
	})
	crClient := s.cfg.Client.ControllerRevisions(metav1.NamespaceAll)
	wg.Go(func() {
		runListWatch(ctx, s.log, listWatch[appsv1.ControllerRevision]{
			resource: "controllerrevisions",
			list: func(ctx context.Context) ([]appsv1.ControllerRevision, string, error) {
				l, err := crClient.List(ctx, client.ListOptions{})
				if err != nil {
					return nil, "", err
				}
				return l.Items, l.ResourceVersion, nil
			},
			watch: func(ctx context.Context, opts client.ListOptions) (*client.Watcher[appsv1.ControllerRevision], error) {
				return crClient.Watch(ctx, opts)
			},
			replace: s.replaceRevisions,
			event:   s.revisionEvent,
			failed:  s.revisionsFailed,
			working: s.working,
		})
	})
	s.send(ctx, updates)
	wg.Wait()
}

// SetNodeRevisions takes the revisions the server's rollout controller
// pins on this node (api.ParseNodeRevisions of the Node object); NodeSync
// hands them over before it closes NodeSynced.
func (s *ServerSource) SetNodeRevisions(revs api.NodeRevisions) {
	s.mu.Lock()
	s.nodeRevs, s.dirty = revs, true
	s.mu.Unlock()
	s.ring()
}

func (s *ServerSource) replaceRevisions(items []appsv1.ControllerRevision) {
	s.mu.Lock()
	s.crs = make(map[string]*appsv1.ControllerRevision, len(items))
	for i := range items {
		s.crs[items[i].Namespace+"/"+items[i].Name] = &items[i]
	}
	s.crsListed, s.dirty = true, true
	s.mu.Unlock()
	s.ring()
}

func (s *ServerSource) revisionEvent(t watch.EventType, cr *appsv1.ControllerRevision) {
	s.mu.Lock()
	if t == watch.Deleted {
		delete(s.crs, cr.Namespace+"/"+cr.Name)
	} else {
		s.crs[cr.Namespace+"/"+cr.Name] = cr
	}
	s.dirty = true
	s.mu.Unlock()
	s.ring()
}

// revisionsFailed is failed for the ControllerRevisions, except that a
// server that does not serve them (404, a server older than rollouts) pins
// nothing that needs one: the source goes on without them, and the watch
// keeps retrying in case the server is upgraded.
func (s *ServerSource) revisionsFailed(resource string, err error) {
	if !apierrors.IsNotFound(err) {
		s.failed(resource, err)
		return
	}
	s.mu.Lock()
	if !s.crsListed || s.errs[resource] != nil {
		delete(s.errs, resource)
		s.crsListed, s.dirty = true, true
	}
	s.mu.Unlock()
	s.ring()
}

func (s *ServerSource) ring() {
	select {
	case s.bell <- struct{}{}:
	default:
	}
}

func (s *ServerSource) replaceDaemonSets(items []appsv1.DaemonSet) {
	s.mu.Lock()
	old := s.dss
	s.dss = make(map[string]*appsv1.DaemonSet, len(items))
	for i := range items {
		s.dss[objectKey(&items[i])] = &items[i]
	}
	for k := range old {
		if _, ok := s.dss[k]; !ok {
			s.dsDeleted = true
		}
	}
	s.dsListed, s.dirty = true, true
	s.mu.Unlock()
	s.ring()
}

func (s *ServerSource) daemonSetEvent(t watch.EventType, ds *appsv1.DaemonSet) {
	s.mu.Lock()
	if t == watch.Deleted {
		delete(s.dss, objectKey(ds))
		s.dsDeleted = true
	} else {
		s.dss[objectKey(ds)] = ds
	}
	s.dirty = true
	s.mu.Unlock()
	s.ring()
}

func (s *ServerSource) replacePods(items []corev1.Pod) {
	s.mu.Lock()
	old := s.pods
	s.pods = make(map[string]*corev1.Pod, len(items))
	for i := range items {
		s.pods[podKey(&items[i])] = &items[i]
	}
	for k, p := range old {
		if isOrphan(p) && (s.pods[k] == nil || !isOrphan(s.pods[k])) {
			s.dsDeleted = true
		}
	}
	s.podsListed, s.dirty = true, true
	s.mu.Unlock()
	s.ring()
}

func (s *ServerSource) podEvent(t watch.EventType, pod *corev1.Pod) {
	s.mu.Lock()
	old := s.pods[podKey(pod)]
	if t == watch.Deleted {
		delete(s.pods, podKey(pod))
	} else {
		s.pods[podKey(pod)] = pod
	}
	// Only orphans are in the set: the many writes of the other pods'
	// status change nothing, and sending them would hold the next real
	// change back by the window.
	wasOrphan := old != nil && isOrphan(old)
	changes := wasOrphan || isOrphan(pod)
	if changes {
		s.dirty = true
	}
	if wasOrphan && (t == watch.Deleted || !isOrphan(pod)) {
		s.dsDeleted = true
	}
	s.mu.Unlock()
	if changes {
		s.ring()
	}
	if t == watch.Deleted && s.cfg.PodDeleted != nil {
		s.cfg.PodDeleted(pod)
	}
}

// failed records a broken list or watch of one resource.
func (s *ServerSource) failed(resource string, err error) {
	s.mu.Lock()
	s.errs[resource] = fmt.Errorf("server %s: %w", resource, err)
	s.mu.Unlock()
	s.ring()
}

// working records that a resource's watch is established again; the next
// set is sent even if nothing changed, so that the agent forgets the error.
func (s *ServerSource) working(resource string) {
	s.mu.Lock()
	if s.errs[resource] != nil {
		delete(s.errs, resource)
		s.dirty = true
	}
	s.mu.Unlock()
	s.ring()
}

// send is the sender loop: it sends full sets, or the connection error
// once. It acts on the leading edge, as kubelet's config sources pass a
// change on at once: a change after a quiet Coalesce is sent without
// waiting, and changes arriving while a set is handed over or within
// Coalesce after it are gathered into the next set. A deletion waits
// serverDeleteGrace whatever came before.
func (s *ServerSource) send(ctx context.Context, updates chan<- SourceUpdate) {
	if s.cfg.NodeSynced != nil {
		select {
		case <-s.cfg.NodeSynced:
		case <-ctx.Done():
			return
		}
	}
	var lastSent time.Time
	for {
		select {
		case <-s.bell:
		case <-ctx.Done():
			return
		}
		s.mu.Lock()
		wait := s.cfg.Coalesce - time.Since(lastSent)
		if s.dsDeleted {
			wait = serverDeleteGrace
		}
		s.mu.Unlock()
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		u, ok := s.next()
		if !ok {
			continue
		}
		if !sendUpdate(ctx, updates, u) {
			return
		}
		lastSent = time.Now()
	}
}

// next builds the update to send, if any.
func (s *ServerSource) next() (SourceUpdate, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if len(s.errs) > 0 {
		var errs []error
		for _, k := range slices.Sorted(maps.Keys(s.errs)) {
			errs = append(errs, s.errs[k])
		}
		err := errors.Join(errs...)
		s.report.LastAttempt, s.report.Error = now, err.Error()
		if err.Error() == s.errSent {
			return SourceUpdate{}, false
		}
		s.errSent = err.Error()
		return SourceUpdate{Source: SourceServer, Err: err}, true
	}
	if !s.dirty || !s.dsListed || !s.podsListed || !s.crsListed {
		return SourceUpdate{}, false
	}
	set := s.setLocked()
	s.watchObjectsLocked(referencedObjects(set))
	if !s.objectsTriedLocked() {
		// Sent once every object was fetched (or failed), so that no pod
		// starts without an object that is merely on its way.
		return SourceUpdate{}, false
	}
	cms, secrets := s.objectsLocked()
	s.dirty, s.dsDeleted, s.errSent = false, false, ""
	s.report.LastAttempt, s.report.LastSync, s.report.Error = now, now, ""
	return SourceUpdate{Source: SourceServer, DaemonSets: set, ConfigMaps: cms, Secrets: secrets}, true
}

// setLocked is the full set: the server's DaemonSets, with the revisions
// the node's pins ask for, then one DaemonSet per orphan pod whose
// DaemonSet name the server does not define. A pinned revision it cannot
// resolve is logged once per time it goes missing.
func (s *ServerSource) setLocked() []*appsv1.DaemonSet {
	set := make([]*appsv1.DaemonSet, 0, len(s.dss))
	unknown := map[string]bool{}
	for _, k := range slices.Sorted(maps.Keys(s.dss)) {
		ds := s.dss[k].DeepCopy()
		// Only the DaemonSets built here may pin a revision.
		delete(ds.Annotations, AnnotationRevision)
		delete(ds.Annotations, AnnotationRunRevisions)
		for _, err := range pinRevisions(ds, s.nodeRevs[k], s.crs) {
			unknown[err.Error()] = true
			if !s.unknown[err.Error()] {
				s.log.Error("pinned revision unknown; the DaemonSet's pods run on as they are until it is known", "daemonset", k, "err", err)
			}
		}
		set = append(set, ds)
	}
	s.unknown = unknown
	seen := map[string]bool{}
	for _, k := range slices.Sorted(maps.Keys(s.pods)) {
		ds := orphanDaemonSet(s.pods[k])
		if ds == nil {
			continue
		}
		key := objectKey(ds)
		if _, ok := s.dss[key]; ok || seen[key] {
			continue
		}
		seen[key] = true
		set = append(set, ds)
	}
	return set
}

// orphanDaemonSet builds, from a Pod object the agent reported for a server
// DaemonSet that has since lost its controller (an orphaning delete), a
// DaemonSet that keeps the pod running untouched: the pod's template, and
// its revision pinned by AnnotationRevision, so that the pod's UID (a hash
// of the DaemonSet's name and the revision) stays the same. Other pods
// (controlled ones, mirror pods, pods not made by an agent) give nil.
func orphanDaemonSet(pod *corev1.Pod) *appsv1.DaemonSet {
	if !isOrphan(pod) {
		return nil
	}
	name, rev := pod.Annotations[AnnotationDaemonSet], pod.Labels[api.LabelControllerRevisionHash]
	labels := maps.Clone(pod.Labels)
	delete(labels, api.LabelControllerRevisionHash)
	annotations := maps.Clone(pod.Annotations)
	delete(annotations, AnnotationDaemonSet)
	delete(annotations, annotationConfigSource)
	if len(annotations) == 0 {
		annotations = nil
	}
	spec := pod.Spec.DeepCopy()
	spec.NodeName = ""
	return &appsv1.DaemonSet{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   pod.Namespace,
			Name:        name,
			Annotations: map[string]string{AnnotationRevision: rev},
		},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec:       *spec,
			},
		},
	}
}

// isOrphan says whether orphanDaemonSet makes a DaemonSet of the pod.
func isOrphan(pod *corev1.Pod) bool {
	return metav1.GetControllerOf(pod) == nil && pod.Annotations[annotationConfigMirror] == "" &&
		pod.Annotations[AnnotationDaemonSet] != "" && pod.Labels[api.LabelControllerRevisionHash] != ""
}

// podKey is a Pod object's namespace/name.
func podKey(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

// listWatch is what runListWatch needs of one resource.
type listWatch[T any] struct {
	resource string
	list     func(ctx context.Context) ([]T, string, error)
	watch    func(ctx context.Context, opts client.ListOptions) (*client.Watcher[T], error)
	replace  func(items []T)
	event    func(t watch.EventType, obj *T)
	failed   func(resource string, err error)
	working  func(resource string)
}

// runListWatch lists, then watches from the list's resourceVersion until
// ctx ends. A broken watch resumes from the last resourceVersion seen
// (events and bookmarks) after a jittered exponential back-off; a 410 Gone
// answer lists again.
func runListWatch[T any](ctx context.Context, log *slog.Logger, lw listWatch[T]) {
	log = log.With("resource", lw.resource)
	bo := newBackoff(reconnectInitial, reconnectMax)
	rv := ""
	fail := func(err error) bool {
		if ctx.Err() != nil {
			return false
		}
		log.Warn("server watch failed; retrying", "err", err, "retryIn", bo.peek())
		lw.failed(lw.resource, err)
		return bo.wait(ctx)
	}
	for ctx.Err() == nil {
		if rv == "" {
			items, listRV, err := lw.list(ctx)
			if err != nil {
				if !fail(err) {
					return
				}
				continue
			}
			lw.replace(items)
			rv = listRV
		}
		timeout := watchTimeout + rand.N(watchTimeout)
		w, err := lw.watch(ctx, client.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true, TimeoutSeconds: int64(timeout / time.Second)})
		if err != nil {
			if expired(err) {
				rv = ""
				continue
			}
			if !fail(err) {
				return
			}
			continue
		}
		lw.working(lw.resource)
		started := time.Now()
		for ev := range w.Events() {
			if ev.Object == nil {
				continue
			}
			if m, ok := any(ev.Object).(metav1.Object); ok && m.GetResourceVersion() != "" {
				rv = m.GetResourceVersion()
			}
			if ev.Type == watch.Added || ev.Type == watch.Modified || ev.Type == watch.Deleted {
				lw.event(ev.Type, ev.Object)
			}
		}
		err = w.Err()
		w.Stop()
		if time.Since(started) >= shortWatch {
			bo.reset()
		}
		switch {
		case ctx.Err() != nil:
			return
		case expired(err):
			log.Info("server watch expired; listing again")
			rv = ""
		case err != nil:
			if !fail(err) {
				return
			}
		case time.Since(started) < shortWatch:
			if !bo.wait(ctx) {
				return
			}
		}
	}
}

// expired says the server no longer has the changes after the requested
// resourceVersion (410).
func expired(err error) bool {
	return apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
}

// backoff is an exponential back-off with full jitter on its upper half.
type backoff struct {
	initial, max, cur time.Duration
}

func newBackoff(initial, max time.Duration) *backoff {
	return &backoff{initial: initial, max: max, cur: initial}
}

func (b *backoff) peek() time.Duration { return b.cur }

func (b *backoff) reset() { b.cur = b.initial }

// wait sleeps the current delay (between half and all of it), doubles it,
// and reports false if ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.cur/2 + rand.N(b.cur/2+1)
	b.cur = min(b.cur*2, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
