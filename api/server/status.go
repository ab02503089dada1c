package server

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/api"
)

// Status controller timing.
const (
	// statusDebounce gathers a burst of changes into one sync.
	statusDebounce = 200 * time.Millisecond
	// statusRetry is the delay before a failed sync is retried.
	statusRetry = time.Second
)

// runStatusController recomputes every DaemonSet's status when
// DaemonSets, Nodes or Pods change (debounced), and again when a pod is
// due to become available after minReadySeconds.
func (s *Server) runStatusController(ctx context.Context) {
	var due <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.statusKick:
		case <-due:
		}
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(statusDebounce):
		}
		select { // changes so far are covered by this sync
		case <-s.statusKick:
		default:
		}
		next, err := s.syncStatus(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Error("syncing DaemonSet status", "error", err)
			next = statusRetry
		}
		due = nil
		if next > 0 {
			due = s.clock.After(next)
		}
	}
}

// syncStatus writes every DaemonSet whose computed status differs from the
// stored one, and returns when the next pod becomes available (0: never).
func (s *Server) syncStatus(ctx context.Context) (time.Duration, error) {
	dss, _, err := s.list(ctx, s.daemonSets, "", nil)
	if err != nil {
		return 0, err
	}
	// Nodes and pods are only read here: the caches' shared objects.
	nodeObjs, _, err := s.nodeCache.list(ctx, s.store)
	if err != nil {
		return 0, err
	}
	podObjs, _, err := s.podCache.list(ctx, s.store)
	if err != nil {
		return 0, err
	}
	nodes := make([]*corev1.Node, len(nodeObjs))
	for i, o := range nodeObjs {
		nodes[i] = o.(*corev1.Node)
	}
	owned := map[string][]*corev1.Pod{} // DaemonSet UID → its pods
	for _, o := range podObjs {
		p := o.(*corev1.Pod)
		if ref := metav1.GetControllerOf(p); ref != nil && ref.Kind == "DaemonSet" {
			owned[string(ref.UID)] = append(owned[string(ref.UID)], p)
		}
	}
	now := s.clock.Now()
	var next time.Duration
	var firstErr error
	for _, o := range dss {
		ds := o.(*appsv1.DaemonSet)
		st, due := computeDaemonSetStatus(ds, nodes, owned[string(ds.UID)], now)
		if due > 0 && (next == 0 || due < next) {
			next = due
		}
		if equality.Semantic.DeepEqual(st, ds.Status) {
			continue
		}
		ds.Status = st
		if err := s.writeStatus(ctx, ds); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return next, firstErr
}

func (s *Server) writeStatus(ctx context.Context, ds *appsv1.DaemonSet) error {
	rv, err := parseRevision(ds.ResourceVersion)
	if err != nil {
		return err
	}
	data, err := s.daemonSets.encode(ds)
	if err != nil {
		return err
	}
	_, err = s.store.Update(ctx, s.daemonSets.key(ds.Namespace, ds.Name), data, rv)
	if errdefs.IsConflict(err) || errdefs.IsNotFound(err) {
		return nil // the change that raced us triggers another sync
	}
	return err
}

// computeDaemonSetStatus is the DaemonSet controller's status over the
// registered nodes and the pods the DaemonSet controls
// (K8S-SEMANTICS.md §5): per node only the oldest pod counts. It also
// returns how long until a Ready pod becomes available (0: none pending).
func computeDaemonSetStatus(ds *appsv1.DaemonSet, nodes []*corev1.Node, pods []*corev1.Pod, now time.Time) (appsv1.DaemonSetStatus, time.Duration) {
	oldest := map[string]*corev1.Pod{}
	for _, p := range pods {
		if p.Spec.NodeName == "" {
			continue
		}
		if cur, ok := oldest[p.Spec.NodeName]; !ok || olderPod(p, cur) {
			oldest[p.Spec.NodeName] = p
		}
	}
	hash := api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
	minReady := time.Duration(ds.Spec.MinReadySeconds) * time.Second
	st := appsv1.DaemonSetStatus{
		ObservedGeneration: ds.Generation,
		CollisionCount:     ds.Status.CollisionCount,
		Conditions:         ds.Status.Conditions,
	}
	var next time.Duration
	for _, n := range nodes {
		shouldRun, _ := api.NodeShouldRunDaemonPod(n, ds)
		pod := oldest[n.Name]
		if !shouldRun {
			if pod != nil {
				st.NumberMisscheduled++
			}
			continue
		}
		st.DesiredNumberScheduled++
		if pod == nil {
			continue
		}
		st.CurrentNumberScheduled++
		if pod.Labels[api.LabelControllerRevisionHash] == hash {
			st.UpdatedNumberScheduled++
		}
		ready := readyCondition(pod)
		if ready == nil || ready.Status != corev1.ConditionTrue {
			continue
		}
		st.NumberReady++
		availableAt := ready.LastTransitionTime.Add(minReady)
		if minReady == 0 || !availableAt.After(now) {
			st.NumberAvailable++
		} else if wait := availableAt.Sub(now); next == 0 || wait < next {
			next = wait
		}
	}
	st.NumberUnavailable = st.DesiredNumberScheduled - st.NumberAvailable
	return st, next
}

// olderPod orders pods as the controller picks the one that counts:
// earlier creation first, then name.
func olderPod(a, b *corev1.Pod) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return cmp.Less(a.Name, b.Name)
}

func readyCondition(p *corev1.Pod) *corev1.PodCondition {
	i := slices.IndexFunc(p.Status.Conditions, func(c corev1.PodCondition) bool { return c.Type == corev1.PodReady })
	if i < 0 {
		return nil
	}
	return &p.Status.Conditions[i]
}
