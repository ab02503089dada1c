package agent

import (
	"context"
	"maps"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/store"
)

// objectRef names one ConfigMap or Secret a DaemonSet of the set uses.
type objectRef struct {
	kind      string // store.KindConfigMap or store.KindSecret
	namespace string
	name      string
}

func (r objectRef) String() string { return r.kind + " " + r.namespace + "/" + r.name }

// objectWatch is the watch of one referenced object, as kubelet's
// watch-based secret and configmap managers keep one per object: the
// server lets a node read only the objects its pods use, so the agent
// cannot watch the whole collection.
type objectWatch struct {
	cancel context.CancelFunc
	// tried says the first list answered (or failed); until every watch
	// has tried, the set is held back so that pods do not start without
	// objects that merely have not arrived yet.
	tried bool
	cm    *corev1.ConfigMap // the last known value, nil if absent
	sec   *corev1.Secret
}

// referencedObjects lists the objects the DaemonSets of set use.
func referencedObjects(set []*appsv1.DaemonSet) map[objectRef]bool {
	refs := map[objectRef]bool{}
	for _, ds := range set {
		ns := ds.Namespace
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		cms, secrets := api.ReferencedObjects(&ds.Spec.Template.Spec)
		for _, n := range cms {
			refs[objectRef{kind: store.KindConfigMap, namespace: ns, name: n}] = true
		}
		for _, n := range secrets {
			refs[objectRef{kind: store.KindSecret, namespace: ns, name: n}] = true
		}
	}
	return refs
}

// watchObjectsLocked starts a watch for every newly referenced object and
// stops those of objects no DaemonSet uses any more.
func (s *ServerSource) watchObjectsLocked(refs map[objectRef]bool) {
	for ref, w := range s.objs {
		if !refs[ref] {
			w.cancel()
			delete(s.objs, ref)
		}
	}
	for ref := range refs {
		if _, ok := s.objs[ref]; ok || s.runCtx == nil {
			continue
		}
		ctx, cancel := context.WithCancel(s.runCtx)
		s.objs[ref] = &objectWatch{cancel: cancel}
		s.wg.Go(func() { s.runObjectWatch(ctx, ref) })
	}
}

// objectsTriedLocked says every object watch has listed once.
func (s *ServerSource) objectsTriedLocked() bool {
	for _, w := range s.objs {
		if !w.tried {
			return false
		}
	}
	return true
}

// objectsLocked returns the known objects, sorted by reference.
func (s *ServerSource) objectsLocked() ([]*corev1.ConfigMap, []*corev1.Secret) {
	var cms []*corev1.ConfigMap
	var secrets []*corev1.Secret
	for _, ref := range slices.SortedFunc(maps.Keys(s.objs), func(a, b objectRef) int {
		return strings.Compare(a.String(), b.String())
	}) {
		w := s.objs[ref]
		if w.cm != nil {
			cms = append(cms, w.cm)
		}
		if w.sec != nil {
			secrets = append(secrets, w.sec)
		}
	}
	return cms, secrets
}

// runObjectWatch lists and watches one object by name until ctx ends.
func (s *ServerSource) runObjectWatch(ctx context.Context, ref objectRef) {
	sel := "metadata.name=" + ref.name
	resource := ref.String()
	if ref.kind == store.KindConfigMap {
		c := s.cfg.Client.ConfigMaps(ref.namespace)
		runListWatch(ctx, s.log, listWatch[corev1.ConfigMap]{
			resource: resource,
			list: func(ctx context.Context) ([]corev1.ConfigMap, string, error) {
				l, err := c.List(ctx, client.ListOptions{FieldSelector: sel})
				if err != nil {
					return nil, "", err
				}
				return l.Items, l.ResourceVersion, nil
			},
			watch: func(ctx context.Context, opts client.ListOptions) (*client.Watcher[corev1.ConfigMap], error) {
				opts.FieldSelector = sel
				return c.Watch(ctx, opts)
			},
			replace: func(items []corev1.ConfigMap) {
				var cm *corev1.ConfigMap
				if len(items) > 0 {
					cm = &items[0]
				}
				s.setObject(ctx, ref, cm, nil)
			},
			event: func(t watch.EventType, cm *corev1.ConfigMap) {
				if t == watch.Deleted {
					cm = nil
				}
				s.setObject(ctx, ref, cm, nil)
			},
			failed:  func(_ string, err error) { s.objectFailed(ctx, ref, err) },
			working: func(string) {},
		})
		return
	}
	c := s.cfg.Client.Secrets(ref.namespace)
	runListWatch(ctx, s.log, listWatch[corev1.Secret]{
		resource: resource,
		list: func(ctx context.Context) ([]corev1.Secret, string, error) {
			l, err := c.List(ctx, client.ListOptions{FieldSelector: sel})
			if err != nil {
				return nil, "", err
			}
			return l.Items, l.ResourceVersion, nil
		},
		watch: func(ctx context.Context, opts client.ListOptions) (*client.Watcher[corev1.Secret], error) {
			opts.FieldSelector = sel
			return c.Watch(ctx, opts)
		},
		replace: func(items []corev1.Secret) {
			var sec *corev1.Secret
			if len(items) > 0 {
				sec = &items[0]
			}
			s.setObject(ctx, ref, nil, sec)
		},
		event: func(t watch.EventType, sec *corev1.Secret) {
			if t == watch.Deleted {
				sec = nil
			}
			s.setObject(ctx, ref, nil, sec)
		},
		failed:  func(_ string, err error) { s.objectFailed(ctx, ref, err) },
		working: func(string) {},
	})
}

// setObject records an object's new value (nil: absent).
func (s *ServerSource) setObject(ctx context.Context, ref objectRef, cm *corev1.ConfigMap, sec *corev1.Secret) {
	s.mu.Lock()
	w, ok := s.objs[ref]
	if !ok || ctx.Err() != nil {
		s.mu.Unlock()
		return // no longer referenced
	}
	w.tried, w.cm, w.sec, s.dirty = true, cm, sec, true
	s.mu.Unlock()
	s.ring()
}

// objectFailed marks an object's watch as tried (runListWatch logs the
// error and retries with back-off): the last known value, if any, stays in
// the set. A broken object watch is not a source error, which would freeze
// the whole set; a 403 (the server sees no DaemonSet of this node using the
// object, e.g. before it learns of a label change) leaves it absent until
// a retry succeeds.
func (s *ServerSource) objectFailed(ctx context.Context, ref objectRef, _ error) {
	s.mu.Lock()
	w, ok := s.objs[ref]
	if !ok || ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	if !w.tried {
		w.tried, s.dirty = true, true
	}
	s.mu.Unlock()
	s.ring()
}
