package server

import (
	"context"
	"fmt"
	"strconv"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
)

// AnnotationDaemonSet records on an orphaned pod the name of the DaemonSet
// it was orphaned from, so that its agent can keep running it unmanaged.
const AnnotationDaemonSet = "daemonlet.io/daemonset"

// maxPodRetries bounds the retries of one pod's read-modify-write when an
// agent writes the same pod at the same time.
const maxPodRetries = 5

func parseRevision(rv string) (int64, error) {
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("resourceVersion %q: %w", rv, errdefs.ErrInvalidArgument)
	}
	return n, nil
}

// modifyPods applies change to every pod of namespace ("" = all) for which
// it returns true, retrying a pod whose write conflicts.
func (s *Server) modifyPods(ctx context.Context, namespace string, change func(*corev1.Pod) bool) error {
	pods, _, err := s.list(ctx, s.pods, namespace, nil)
	if err != nil {
		return err
	}
	for _, o := range pods {
		pod := o.(*corev1.Pod)
		for attempt := 0; ; attempt++ {
			if !change(pod) {
				break
			}
			rv, err := parseRevision(pod.ResourceVersion)
			if err != nil {
				return err
			}
			data, err := s.pods.encode(pod)
			if err != nil {
				return err
			}
			_, err = s.store.Update(ctx, s.pods.key(pod.Namespace, pod.Name), data, rv)
			if err == nil || errdefs.IsNotFound(err) {
				break
			}
			if !errdefs.IsConflict(err) || attempt == maxPodRetries {
				return fmt.Errorf("updating pod %s/%s: %w", pod.Namespace, pod.Name, err)
			}
			_, fresh, err := s.read(ctx, request{res: s.pods, namespace: pod.Namespace, name: pod.Name})
			if apierrors.IsNotFound(err) {
				break
			}
			if err != nil {
				return err
			}
			pod = fresh.(*corev1.Pod)
		}
	}
	return nil
}

// adoptPods makes a created or updated DaemonSet the controller of the
// orphan pods of its namespace that its selector matches (ClaimPods'
// adoption; releasing pods is left out, as daemonlet pods are never
// relabelled).
func (s *Server) adoptPods(ctx context.Context, obj object) {
	ds := obj.(*appsv1.DaemonSet)
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || sel.Empty() {
		return // validation refuses such selectors; nothing to adopt
	}
	ref := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID,
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}
	err = s.modifyPods(ctx, ds.Namespace, func(p *corev1.Pod) bool {
		if metav1.GetControllerOf(p) != nil || p.DeletionTimestamp != nil || !sel.Matches(labels.Set(p.Labels)) {
			return false
		}
		p.OwnerReferences = append(p.OwnerReferences, ref)
		return true
	})
	if err != nil {
		s.log.Error("adopting pods", "daemonset", ds.Namespace+"/"+ds.Name, "error", err)
	}
}

// orphanPods, for a DELETE with propagationPolicy Orphan, removes the
// DaemonSet's controller reference from its pods before the DaemonSet
// goes, and records its name on them.
func (s *Server) orphanPods(ctx context.Context, obj object, opts *metav1.DeleteOptions) error {
	if opts.PropagationPolicy == nil || *opts.PropagationPolicy != metav1.DeletePropagationOrphan {
		return nil
	}
	ds := obj.(*appsv1.DaemonSet)
	err := s.modifyPods(ctx, ds.Namespace, func(p *corev1.Pod) bool {
		kept := p.OwnerReferences[:0:0]
		for _, ref := range p.OwnerReferences {
			if ref.UID != ds.UID {
				kept = append(kept, ref)
			}
		}
		if len(kept) == len(p.OwnerReferences) {
			return false
		}
		p.OwnerReferences = kept
		if len(kept) == 0 {
			p.OwnerReferences = nil
		}
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[AnnotationDaemonSet] = ds.Name
		return true
	})
	if err != nil {
		return storeError(s.pods, "", err)
	}
	return nil
}

// deleteNodePods removes the pod objects of a deleted node: no agent is
// left to report or remove them.
func (s *Server) deleteNodePods(ctx context.Context, obj object) {
	pods, _, err := s.list(ctx, s.pods, "", func(o object) bool { return podNodeName(o) == obj.GetName() })
	if err != nil {
		s.log.Error("listing a deleted node's pods", "node", obj.GetName(), "error", err)
		return
	}
	for _, p := range pods {
		if _, _, err := s.store.Delete(ctx, s.pods.key(p.GetNamespace(), p.GetName()), 0); err != nil && !errdefs.IsNotFound(err) {
			s.log.Error("deleting a deleted node's pod", "node", obj.GetName(), "pod", p.GetNamespace()+"/"+p.GetName(), "error", err)
		}
	}
}
