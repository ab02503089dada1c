package api

import (
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func testNode(labels map[string]string, taints ...corev1.Taint) *corev1.Node {
	return NewNode("node-1", labels, taints)
}

func testDS(mutate func(spec *corev1.PodSpec)) *appsv1.DaemonSet {
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "ds", Namespace: "default"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ds"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "ds"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1.36"}}},
			},
		},
	}
	if mutate != nil {
		mutate(&ds.Spec.Template.Spec)
	}
	SetDefaultsDaemonSet(ds)
	return ds
}

func expr(key string, op corev1.NodeSelectorOperator, values ...string) corev1.NodeSelectorTerm {
	return corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func withAffinity(terms ...corev1.NodeSelectorTerm) func(*corev1.PodSpec) {
	return func(s *corev1.PodSpec) { s.Affinity = requiredAffinity(terms...) }
}

func taint(key string, effect corev1.TaintEffect) corev1.Taint {
	return corev1.Taint{Key: key, Effect: effect}
}

func TestNodeShouldRunDaemonPod(t *testing.T) {
	zoneA := map[string]string{"zone": "a", "cores": "8"}
	tests := []struct {
		name         string
		node         *corev1.Node
		mutate       func(*corev1.PodSpec)
		run, cont    bool
		skipValidate bool
	}{
		{name: "plain node", node: testNode(nil), run: true, cont: true},
		{name: "nodeName matches", node: testNode(nil), mutate: func(s *corev1.PodSpec) { s.NodeName = "node-1" }, run: true, cont: true},
		{name: "nodeName mismatch", node: testNode(nil), mutate: func(s *corev1.PodSpec) { s.NodeName = "node-2" }},
		{name: "nodeSelector matches", node: testNode(zoneA), mutate: func(s *corev1.PodSpec) { s.NodeSelector = map[string]string{"zone": "a"} }, run: true, cont: true},
		{name: "nodeSelector mismatch", node: testNode(zoneA), mutate: func(s *corev1.PodSpec) { s.NodeSelector = map[string]string{"zone": "b"} }},
		{name: "nodeSelector needs all keys", node: testNode(zoneA), mutate: func(s *corev1.PodSpec) { s.NodeSelector = map[string]string{"zone": "a", "ssd": "true"} }},
		{name: "well-known os label", node: testNode(nil), mutate: func(s *corev1.PodSpec) { s.NodeSelector = map[string]string{LabelOS: "linux"} }, run: true, cont: true},
		{name: "In matches", node: testNode(zoneA), mutate: withAffinity(expr("zone", corev1.NodeSelectorOpIn, "a", "b")), run: true, cont: true},
		{name: "In mismatch", node: testNode(zoneA), mutate: withAffinity(expr("zone", corev1.NodeSelectorOpIn, "b"))},
		{name: "NotIn matches", node: testNode(zoneA), mutate: withAffinity(expr("zone", corev1.NodeSelectorOpNotIn, "b")), run: true, cont: true},
		{name: "NotIn mismatch", node: testNode(zoneA), mutate: withAffinity(expr("zone", corev1.NodeSelectorOpNotIn, "a"))},
		{name: "Exists matches", node: testNode(zoneA), mutate: withAffinity(expr("zone", corev1.NodeSelectorOpExists)), run: true, cont: true},
		{name: "Exists mismatch", node: testNode(zoneA), mutate: withAffinity(expr("gpu", corev1.NodeSelectorOpExists))},
		{name: "DoesNotExist matches", node: testNode(zoneA), mutate: withAffinity(expr("gpu", corev1.NodeSelectorOpDoesNotExist)), run: true, cont: true},
		{name: "DoesNotExist mismatch", node: testNode(zoneA), mutate: withAffinity(expr("zone", corev1.NodeSelectorOpDoesNotExist))},
		{name: "Gt matches", node: testNode(zoneA), mutate: withAffinity(expr("cores", corev1.NodeSelectorOpGt, "4")), run: true, cont: true},
		{name: "Gt mismatch", node: testNode(zoneA), mutate: withAffinity(expr("cores", corev1.NodeSelectorOpGt, "8"))},
		{name: "Lt matches", node: testNode(zoneA), mutate: withAffinity(expr("cores", corev1.NodeSelectorOpLt, "16")), run: true, cont: true},
		{name: "Lt mismatch", node: testNode(zoneA), mutate: withAffinity(expr("cores", corev1.NodeSelectorOpLt, "2"))},
		{name: "terms are ORed", node: testNode(zoneA), mutate: withAffinity(expr("zone", corev1.NodeSelectorOpIn, "b"), expr("zone", corev1.NodeSelectorOpIn, "a")), run: true, cont: true},
		{name: "expressions in a term are ANDed", node: testNode(zoneA), mutate: withAffinity(corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
			{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}},
			{Key: "gpu", Operator: corev1.NodeSelectorOpExists},
		}})},
		{name: "empty term matches nothing", node: testNode(zoneA), mutate: withAffinity(corev1.NodeSelectorTerm{}), skipValidate: true},
		{name: "matchFields metadata.name In", node: testNode(nil), mutate: withAffinity(corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{
			{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"node-1"}},
		}}), run: true, cont: true},
		{name: "matchFields metadata.name other node", node: testNode(nil), mutate: withAffinity(corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{
			{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"node-2"}},
		}})},
		{name: "matchFields metadata.name NotIn", node: testNode(nil), mutate: withAffinity(corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{
			{Key: "metadata.name", Operator: corev1.NodeSelectorOpNotIn, Values: []string{"node-1"}},
		}})},
		{name: "preferred affinity is ignored", node: testNode(nil), mutate: func(s *corev1.PodSpec) {
			s.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{
				{Weight: 1, Preference: expr("zone", corev1.NodeSelectorOpIn, "z")},
			}}}
		}, run: true, cont: true},
		{name: "untolerated NoSchedule keeps running pods", node: testNode(nil, taint("dedicated", corev1.TaintEffectNoSchedule)), cont: true},
		{name: "untolerated NoExecute", node: testNode(nil, taint("dedicated", corev1.TaintEffectNoExecute))},
		{name: "PreferNoSchedule ignored", node: testNode(nil, taint("dedicated", corev1.TaintEffectPreferNoSchedule)), run: true, cont: true},
		{name: "tolerated NoSchedule", node: testNode(nil, taint("dedicated", corev1.TaintEffectNoSchedule)), mutate: func(s *corev1.PodSpec) {
			s.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}}
		}, run: true, cont: true},
		{name: "tolerated NoExecute with tolerationSeconds still runs", node: testNode(nil, taint("dedicated", corev1.TaintEffectNoExecute)), mutate: func(s *corev1.PodSpec) {
			s.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](30)}}
		}, run: true, cont: true},
		{name: "Equal toleration needs the value", node: testNode(nil, corev1.Taint{Key: "k", Value: "v", Effect: corev1.TaintEffectNoSchedule}), mutate: func(s *corev1.PodSpec) {
			s.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpEqual, Value: "w"}}
		}, cont: true},
		{name: "NoSchedule plus tolerated NoExecute", node: testNode(nil, taint("a", corev1.TaintEffectNoSchedule), taint("b", corev1.TaintEffectNoExecute)), mutate: func(s *corev1.PodSpec) {
			s.Tolerations = []corev1.Toleration{{Key: "b", Operator: corev1.TolerationOpExists}}
		}, cont: true},
		{name: "cordoned node is tolerated", node: testNode(nil, taint(corev1.TaintNodeUnschedulable, corev1.TaintEffectNoSchedule)), run: true, cont: true},
		{name: "not-ready is tolerated", node: testNode(nil, taint(corev1.TaintNodeNotReady, corev1.TaintEffectNoExecute)), run: true, cont: true},
		{name: "unreachable is tolerated", node: testNode(nil, taint(corev1.TaintNodeUnreachable, corev1.TaintEffectNoExecute)), run: true, cont: true},
		{name: "disk pressure is tolerated", node: testNode(nil, taint(corev1.TaintNodeDiskPressure, corev1.TaintEffectNoSchedule)), run: true, cont: true},
		{name: "network-unavailable blocks pod-network pods", node: testNode(nil, taint(corev1.TaintNodeNetworkUnavailable, corev1.TaintEffectNoSchedule)), cont: true},
		{name: "network-unavailable tolerated with hostNetwork", node: testNode(nil, taint(corev1.TaintNodeNetworkUnavailable, corev1.TaintEffectNoSchedule)), mutate: func(s *corev1.PodSpec) {
			s.HostNetwork = true
		}, run: true, cont: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds := testDS(tc.mutate)
			if errs := ValidateDaemonSet(ds); len(errs) > 0 && !tc.skipValidate {
				t.Fatalf("test DaemonSet is invalid: %v", errs.ToAggregate())
			}
			run, cont := NodeShouldRunDaemonPod(tc.node, ds)
			if run != tc.run || cont != tc.cont {
				t.Errorf("got (shouldRun=%v, shouldContinueRunning=%v), want (%v, %v)", run, cont, tc.run, tc.cont)
			}
		})
	}
}

func TestNodeShouldRunDaemonPodDoesNotMutate(t *testing.T) {
	ds := testDS(nil)
	NodeShouldRunDaemonPod(testNode(nil), ds)
	if len(ds.Spec.Template.Spec.Tolerations) != 0 {
		t.Errorf("template tolerations changed to %v", ds.Spec.Template.Spec.Tolerations)
	}
}

func TestSeedExampleEligibleOnControlPlane(t *testing.T) {
	objs, err := DecodeAndValidate("fluentd-elasticsearch.yaml", mustRead(t, "../deploy/examples/fluentd-elasticsearch.yaml"))
	if err != nil {
		t.Fatalf("seed example: %v", err)
	}
	if len(objs) != 1 || objs[0].DaemonSet == nil {
		t.Fatalf("want one DaemonSet, got %+v", objs)
	}
	ds := objs[0].DaemonSet
	node := NewNode("cp-1", nil, []corev1.Taint{taint("node-role.kubernetes.io/control-plane", corev1.TaintEffectNoSchedule)})
	if run, cont := NodeShouldRunDaemonPod(node, ds); !run || !cont {
		t.Errorf("seed example on a control-plane node: got (%v, %v), want (true, true)", run, cont)
	}
	other := NewNode("w-1", nil, []corev1.Taint{taint("gpu", corev1.TaintEffectNoSchedule)})
	if run, cont := NodeShouldRunDaemonPod(other, ds); run || !cont {
		t.Errorf("seed example on a gpu-tainted node: got (%v, %v), want (false, true)", run, cont)
	}
}

func TestAddDaemonPodTolerations(t *testing.T) {
	spec := &corev1.PodSpec{Tolerations: []corev1.Toleration{
		{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](30)},
		{Key: "custom", Operator: corev1.TolerationOpExists},
	}}
	AddDaemonPodTolerations(spec)
	if got, want := len(spec.Tolerations), 7; got != want {
		t.Fatalf("got %d tolerations, want %d: %v", got, want, spec.Tolerations)
	}
	if spec.Tolerations[0].Key != corev1.TaintNodeNotReady || spec.Tolerations[0].TolerationSeconds != nil {
		t.Errorf("user not-ready toleration not replaced in place by the infinite one: %+v", spec.Tolerations[0])
	}
	if spec.Tolerations[1].Key != "custom" {
		t.Errorf("user toleration lost: %+v", spec.Tolerations[1])
	}
	AddDaemonPodTolerations(spec)
	if len(spec.Tolerations) != 7 {
		t.Errorf("second call changed the tolerations: %v", spec.Tolerations)
	}
	hostNet := &corev1.PodSpec{HostNetwork: true}
	AddDaemonPodTolerations(hostNet)
	if len(hostNet.Tolerations) != 7 || hostNet.Tolerations[6].Key != corev1.TaintNodeNetworkUnavailable {
		t.Errorf("hostNetwork pod tolerations: %v", hostNet.Tolerations)
	}
}

func TestNoExecuteEvictionDelay(t *testing.T) {
	noExec := func(key string) corev1.Taint { return taint(key, corev1.TaintEffectNoExecute) }
	tol := func(key string, seconds *int64) corev1.Toleration {
		return corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: seconds}
	}
	daemonTols := func(user ...corev1.Toleration) []corev1.Toleration {
		spec := &corev1.PodSpec{Tolerations: user}
		AddDaemonPodTolerations(spec)
		return spec.Tolerations
	}
	tests := []struct {
		name        string
		taints      []corev1.Taint
		tolerations []corev1.Toleration
		evict       bool
		after       time.Duration
		forever     bool
	}{
		{name: "no taints", forever: true},
		{name: "only NoSchedule taints", taints: []corev1.Taint{taint("a", corev1.TaintEffectNoSchedule)}, forever: true},
		{name: "untolerated NoExecute", taints: []corev1.Taint{noExec("a")}, evict: true},
		{name: "tolerated without seconds", taints: []corev1.Taint{noExec("a")}, tolerations: []corev1.Toleration{tol("a", nil)}, forever: true},
		{name: "tolerated for 30s", taints: []corev1.Taint{noExec("a")}, tolerations: []corev1.Toleration{tol("a", ptr.To[int64](30))}, evict: true, after: 30 * time.Second},
		{name: "minimum over taints", taints: []corev1.Taint{noExec("a"), noExec("b")},
			tolerations: []corev1.Toleration{tol("a", ptr.To[int64](60)), tol("b", ptr.To[int64](20))}, evict: true, after: 20 * time.Second},
		{name: "one forever, one bounded", taints: []corev1.Taint{noExec("a"), noExec("b")},
			tolerations: []corev1.Toleration{tol("a", nil), tol("b", ptr.To[int64](20))}, evict: true, after: 20 * time.Second},
		{name: "zero seconds evicts now", taints: []corev1.Taint{noExec("a")}, tolerations: []corev1.Toleration{tol("a", ptr.To[int64](0))}, evict: true},
		{name: "negative seconds evicts now", taints: []corev1.Taint{noExec("a")}, tolerations: []corev1.Toleration{tol("a", ptr.To[int64](-5))}, evict: true},
		{name: "one untolerated among tolerated", taints: []corev1.Taint{noExec("a"), noExec("b")}, tolerations: []corev1.Toleration{tol("a", nil)}, evict: true},
		{name: "daemon pods ignore user seconds on not-ready", taints: []corev1.Taint{noExec(corev1.TaintNodeNotReady)},
			tolerations: daemonTols(tol(corev1.TaintNodeNotReady, ptr.To[int64](30))), forever: true},
		{name: "daemon pods keep user seconds on custom taints", taints: []corev1.Taint{noExec("maintenance")},
			tolerations: daemonTols(tol("maintenance", ptr.To[int64](300))), evict: true, after: 300 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evict, after, forever := NoExecuteEvictionDelay(tc.taints, tc.tolerations)
			if evict != tc.evict || after != tc.after || forever != tc.forever {
				t.Errorf("got (%v, %v, %v), want (%v, %v, %v)", evict, after, forever, tc.evict, tc.after, tc.forever)
			}
		})
	}
}
