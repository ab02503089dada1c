package api

import (
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	schedulingcorev1 "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// enableTaintComparison turns on the Lt/Gt toleration operators in the
// component-helpers matching; validation accepts them, so matching must too.
const enableTaintComparison = true

// daemonPodTolerations are the tolerations the DaemonSet controller adds to
// every daemon pod (K8S-SEMANTICS.md §1.3), so that daemons survive node
// conditions and cordons; none has tolerationSeconds, so they never expire.
var daemonPodTolerations = []corev1.Toleration{
	{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeDiskPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeMemoryPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodePIDPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
}

// hostNetworkTolerations are added only to hostNetwork daemon pods, which do
// not need the pod network to work.
var hostNetworkTolerations = []corev1.Toleration{
	{Key: corev1.TaintNodeNetworkUnavailable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
}

// AddDaemonPodTolerations adds the tolerations the DaemonSet controller gives
// every daemon pod. A user toleration with the same key, effect, operator and
// value is replaced, so a tolerationSeconds the user set on one of them is
// dropped, as in Kubernetes (kubernetes/kubernetes#92960).
func AddDaemonPodTolerations(spec *corev1.PodSpec) {
	for _, t := range daemonPodTolerations {
		addOrUpdateToleration(spec, t)
	}
	if spec.HostNetwork {
		for _, t := range hostNetworkTolerations {
			addOrUpdateToleration(spec, t)
		}
	}
}

// addOrUpdateToleration replaces every toleration matching t (same key,
// effect, operator and value) by t, or appends t when none matches.
func addOrUpdateToleration(spec *corev1.PodSpec, t corev1.Toleration) {
	out := make([]corev1.Toleration, 0, len(spec.Tolerations)+1)
	replaced := false
	for _, old := range spec.Tolerations {
		if old.MatchToleration(&t) {
			if equality.Semantic.DeepEqual(old, t) {
				return
			}
			out = append(out, t)
			replaced = true
			continue
		}
		out = append(out, old)
	}
	if !replaced {
		out = append(out, t)
	}
	spec.Tolerations = out
}

// NodeShouldRunDaemonPod decides, as the DaemonSet controller does
// (K8S-SEMANTICS.md §1.1), whether a pod of ds should be started on node
// (shouldRun) and whether a pod already there may keep running
// (shouldContinueRunning). A node selector or affinity mismatch, or a
// template nodeName naming another node, gives (false, false); an untolerated
// NoSchedule taint gives (false, true); an untolerated NoExecute taint gives
// (false, false). PreferNoSchedule taints are ignored.
func NodeShouldRunDaemonPod(node *corev1.Node, ds *appsv1.DaemonSet) (shouldRun, shouldContinueRunning bool) {
	if node == nil || ds == nil {
		return false, false
	}
	if n := ds.Spec.Template.Spec.NodeName; n != "" && n != node.Name {
		return false, false
	}
	pod := newDaemonPod(ds, node.Name)
	if fits, _ := nodeaffinity.GetRequiredNodeAffinity(pod).Match(node); !fits {
		// A term that fails to parse does not match; the error is ignored
		// for the same backward compatibility the controller keeps.
		return false, false
	}
	logger := logr.Discard()
	_, untolerated := schedulingcorev1.FindMatchingUntoleratedTaint(logger, node.Spec.Taints, pod.Spec.Tolerations,
		func(t *corev1.Taint) bool {
			return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
		}, enableTaintComparison)
	if !untolerated {
		return true, true
	}
	_, untoleratedNoExecute := schedulingcorev1.FindMatchingUntoleratedTaint(logger, node.Spec.Taints, pod.Spec.Tolerations,
		func(t *corev1.Taint) bool { return t.Effect == corev1.TaintEffectNoExecute }, enableTaintComparison)
	return false, !untoleratedNoExecute
}

// newDaemonPod is the hypothetical pod the controller evaluates: the
// template bound to the node, with the daemon tolerations added.
func newDaemonPod(ds *appsv1.DaemonSet, nodeName string) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: *ds.Spec.Template.ObjectMeta.DeepCopy(),
		Spec:       *ds.Spec.Template.Spec.DeepCopy(),
	}
	pod.Namespace = ds.Namespace
	pod.Spec.NodeName = nodeName
	AddDaemonPodTolerations(&pod.Spec)
	return pod
}

// NoExecuteEvictionDelay says when the taint-eviction controller would evict
// a pod with these tolerations from a node with these taints
// (K8S-SEMANTICS.md §1.4); pass the daemon pod's tolerations, i.e. after
// AddDaemonPodTolerations. Only NoExecute taints count. An untolerated one
// means evict now (true, 0, false). If all are tolerated, the first
// toleration matching each taint is used: the smallest tolerationSeconds
// among them is the delay (true, d, false), <= 0 meaning now; if none has
// tolerationSeconds the pod stays forever (false, 0, true), as it does when
// there is no NoExecute taint. The delay counts from when the caller first
// saw the taint.
func NoExecuteEvictionDelay(taints []corev1.Taint, tolerations []corev1.Toleration) (evict bool, after time.Duration, forever bool) {
	logger := logr.Discard()
	minSeconds, bounded := int64(0), false
	for i := range taints {
		taint := &taints[i]
		if taint.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		var used *corev1.Toleration
		for j := range tolerations {
			if tolerations[j].ToleratesTaint(logger, taint, enableTaintComparison) {
				used = &tolerations[j]
				break
			}
		}
		if used == nil {
			return true, 0, false
		}
		if used.TolerationSeconds == nil {
			continue
		}
		if s := *used.TolerationSeconds; !bounded || s < minSeconds {
			minSeconds, bounded = s, true
		}
	}
	if !bounded {
		return false, 0, true
	}
	if minSeconds <= 0 {
		return true, 0, false
	}
	return true, time.Duration(minSeconds) * time.Second, false
}
