package api

import (
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// AnnotationNodeRevisions, on a Node, is how the server's rollout
// controller tells the node's agent which revisions of each server
// DaemonSet to run: a JSON object from "namespace/name" to a list of
// controller-revision-hash values. One revision is the normal case; two,
// [old, new], is a surge, where the new pod starts next to the old one and
// the old one stops when the controller drops it from the list. A DaemonSet
// missing from the object runs its current template: a node new to it has
// nothing to keep.
const AnnotationNodeRevisions = "daemonlet.io/daemonset-revisions"

// Rollout annotations on a DaemonSet: daemonlet's additions to apps/v1,
// kept in annotations so that manifests stay valid apps/v1.
const (
	// AnnotationProgressDeadline is the number of seconds a RollingUpdate
	// may go without progress before the controller marks it failed.
	AnnotationProgressDeadline = "daemonlet.io/progress-deadline-seconds"
	// AnnotationAutoRollback, "true", makes a failed rollout roll back to
	// the last revision that was available on every node.
	AnnotationAutoRollback = "daemonlet.io/auto-rollback"
)

// The DaemonSet condition the rollout controller maintains, named and used
// as a Deployment's: Progressing, False with ProgressDeadlineExceeded once a
// rollout is stuck past its deadline.
const (
	DaemonSetProgressing           appsv1.DaemonSetConditionType = "Progressing"
	ReasonProgressDeadlineExceeded                               = "ProgressDeadlineExceeded"
	ReasonNewRevisionAvailable                                   = "NewRevisionAvailable"
	ReasonRolloutInProgress                                      = "RolloutInProgress"
	ReasonRolledBack                                             = "RolledBack"
)

// NodeRevisions is the decoded AnnotationNodeRevisions of one Node.
type NodeRevisions map[string][]string

// ParseNodeRevisions reads AnnotationNodeRevisions; a Node without it gives
// an empty map.
func ParseNodeRevisions(node *corev1.Node) (NodeRevisions, error) {
	out := NodeRevisions{}
	v, ok := node.Annotations[AnnotationNodeRevisions]
	if !ok || v == "" {
		return out, nil
	}
	if err := json.Unmarshal([]byte(v), &out); err != nil {
		return nil, fmt.Errorf("node %s: metadata.annotations[%s]: %w", node.Name, AnnotationNodeRevisions, err)
	}
	return out, nil
}

// SetNodeRevisions writes revs into the Node's AnnotationNodeRevisions (the
// keys in sorted order, so that equal maps give equal objects), removing
// the annotation when revs is empty.
func SetNodeRevisions(node *corev1.Node, revs NodeRevisions) {
	if len(revs) == 0 {
		delete(node.Annotations, AnnotationNodeRevisions)
		return
	}
	// Encoding a map of string slices cannot fail.
	b, _ := json.Marshal(revs)
	if node.Annotations == nil {
		node.Annotations = map[string]string{}
	}
	node.Annotations[AnnotationNodeRevisions] = string(b)
}

// ProgressDeadline is the DaemonSet's AnnotationProgressDeadline; ok is
// false when it is not set. Validation keeps it a positive integer.
func ProgressDeadline(ds *appsv1.DaemonSet) (d time.Duration, ok bool) {
	v, set := ds.Annotations[AnnotationProgressDeadline]
	if !set {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || n <= 0 {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// AutoRollback tells whether the DaemonSet asks for AnnotationAutoRollback.
func AutoRollback(ds *appsv1.DaemonSet) bool {
	return ds.Annotations[AnnotationAutoRollback] == "true"
}

// validateRolloutAnnotations checks daemonlet's rollout annotations.
func validateRolloutAnnotations(meta *metav1.ObjectMeta, p *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	ap := p.Child("annotations")
	if v, ok := meta.Annotations[AnnotationProgressDeadline]; ok {
		if n, err := strconv.ParseInt(v, 10, 32); err != nil || n <= 0 {
			allErrs = append(allErrs, field.Invalid(ap.Key(AnnotationProgressDeadline), v, "must be a positive integer number of seconds"))
		}
	}
	if v, ok := meta.Annotations[AnnotationAutoRollback]; ok && v != "true" && v != "false" {
		allErrs = append(allErrs, field.NotSupported(ap.Key(AnnotationAutoRollback), v, []string{"true", "false"}))
	}
	return allErrs
}

// ValidateSurge refuses a RollingUpdate with maxSurge that cannot work: the
// surge pod starts next to the old one on the same node, so a hostPort, or
// a containerPort under hostNetwork, that the old pod holds would keep the
// new pod from ever starting, and the rollout would stall (as it does in
// Kubernetes). The server applies it to the DaemonSets it rolls out.
func ValidateSurge(ds *appsv1.DaemonSet) field.ErrorList {
	us := ds.Spec.UpdateStrategy
	if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil || !isNonZero(us.RollingUpdate.MaxSurge) {
		return nil
	}
	p := field.NewPath("spec", "updateStrategy", "rollingUpdate", "maxSurge")
	spec := &ds.Spec.Template.Spec
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			for _, port := range c.Ports {
				switch {
				case port.HostPort != 0:
					return field.ErrorList{field.Forbidden(p, fmt.Sprintf(
						"a surge pod starts next to the old pod on the same node, and container %q's hostPort %d would be held by the old pod; use maxUnavailable instead",
						c.Name, port.HostPort))}
				case spec.HostNetwork && port.ContainerPort != 0:
					return field.ErrorList{field.Forbidden(p, fmt.Sprintf(
						"a surge pod starts next to the old pod on the same node, and with hostNetwork container %q's port %d would be held by the old pod; use maxUnavailable instead",
						c.Name, port.ContainerPort))}
				}
			}
		}
	}
	return nil
}

// RollingUpdateBudget resolves maxUnavailable and maxSurge against the
// number of nodes that should run the DaemonSet, rounding percentages up as
// the DaemonSet controller does; with both zero and desired > 0,
// maxUnavailable becomes 1 (K8S-SEMANTICS.md §4.4).
func RollingUpdateBudget(ds *appsv1.DaemonSet, desired int) (maxUnavailable, maxSurge int, err error) {
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ru == nil {
		return 1, 0, nil
	}
	zero := intstr.FromInt32(0)
	mu, ms := ru.MaxUnavailable, ru.MaxSurge
	if mu == nil {
		mu = &zero
	}
	if ms == nil {
		ms = &zero
	}
	if maxUnavailable, err = intstr.GetScaledValueFromIntOrPercent(mu, desired, true); err != nil {
		return 0, 0, fmt.Errorf("spec.updateStrategy.rollingUpdate.maxUnavailable: %w", err)
	}
	if maxSurge, err = intstr.GetScaledValueFromIntOrPercent(ms, desired, true); err != nil {
		return 0, 0, fmt.Errorf("spec.updateStrategy.rollingUpdate.maxSurge: %w", err)
	}
	if desired > 0 && maxUnavailable == 0 && maxSurge == 0 {
		maxUnavailable = 1
	}
	return maxUnavailable, maxSurge, nil
}

// RevisionName is the name of a DaemonSet's ControllerRevision for a
// template hash, as the DaemonSet controller names it.
func RevisionName(dsName, hash string) string { return dsName + "-" + hash }

// revisionData is the shape of a DaemonSet ControllerRevision's data: the
// patch that restores the template, as the DaemonSet controller writes it.
type revisionData struct {
	Spec struct {
		Template corev1.PodTemplateSpec `json:"template"`
	} `json:"spec"`
}

// NewControllerRevision is the ControllerRevision recording ds's current
// template under hash with the given revision number: named <ds>-<hash>,
// labelled with the template's labels and controller-revision-hash,
// annotated with the DaemonSet's annotations (where
// kubernetes.io/change-cause comes from), and controlled by the DaemonSet.
func NewControllerRevision(ds *appsv1.DaemonSet, hash string, revision int64) (*appsv1.ControllerRevision, error) {
	// The controller's patch form: the template with "$patch": "replace".
	tmpl, err := kruntime.DefaultUnstructuredConverter.ToUnstructured(&ds.Spec.Template)
	if err != nil {
		return nil, fmt.Errorf("DaemonSet %s/%s: encode template: %w", ds.Namespace, ds.Name, err)
	}
	tmpl["$patch"] = "replace"
	data, err := json.Marshal(map[string]any{"spec": map[string]any{"template": tmpl}})
	if err != nil {
		return nil, fmt.Errorf("DaemonSet %s/%s: encode template: %w", ds.Namespace, ds.Name, err)
	}
	labels := maps.Clone(ds.Spec.Template.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelControllerRevisionHash] = hash
	return &appsv1.ControllerRevision{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "ControllerRevision"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace:       ds.Namespace,
			Name:            RevisionName(ds.Name, hash),
			Labels:          labels,
			Annotations:     maps.Clone(ds.Annotations),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))},
		},
		Data:     kruntime.RawExtension{Raw: data},
		Revision: revision,
	}, nil
}

// RevisionTemplate is the pod template a DaemonSet ControllerRevision
// records.
func RevisionTemplate(cr *appsv1.ControllerRevision) (*corev1.PodTemplateSpec, error) {
	var d revisionData
	if err := json.Unmarshal(cr.Data.Raw, &d); err != nil {
		return nil, fmt.Errorf("ControllerRevision %s/%s: data: %w", cr.Namespace, cr.Name, err)
	}
	return &d.Spec.Template, nil
}
