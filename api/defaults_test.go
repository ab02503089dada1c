package api

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestDefaultPullPolicy(t *testing.T) {
	tests := []struct {
		image string
		want  corev1.PullPolicy
	}{
		{"busybox", corev1.PullAlways},
		{"busybox:latest", corev1.PullAlways},
		{"registry.local:5000/team/app", corev1.PullAlways},
		{"registry.local:5000/team/app:1.2", corev1.PullIfNotPresent},
		{"busybox:1.36", corev1.PullIfNotPresent},
		{"busybox@sha256:" + strings.Repeat("a", 64), corev1.PullIfNotPresent},
		{"busybox:latest@sha256:" + strings.Repeat("a", 64), corev1.PullAlways},
		{"Not A Reference", corev1.PullIfNotPresent},
	}
	for _, tc := range tests {
		if got := defaultPullPolicy(tc.image); got != tc.want {
			t.Errorf("defaultPullPolicy(%q) = %s, want %s", tc.image, got, tc.want)
		}
	}
}

func TestSetDefaultsDaemonSet(t *testing.T) {
	ds := &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{
			Name: "c", Image: "app:1",
			Ports:         []corev1.ContainerPort{{ContainerPort: 80}},
			Env:           []corev1.EnvVar{{Name: "N", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}},
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(80)}}},
		}},
		Volumes: []corev1.Volume{
			{Name: "scratch"},
			{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
			{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
			{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/x"}}},
		},
	}}}}
	SetDefaultsDaemonSet(ds)

	s := ds.Spec
	ru := s.UpdateStrategy.RollingUpdate
	c := s.Template.Spec.Containers[0]
	p := c.LivenessProbe
	checks := []struct {
		name      string
		got, want any
	}{
		{"namespace", ds.Namespace, "default"},
		{"updateStrategy.type", s.UpdateStrategy.Type, appsv1.RollingUpdateDaemonSetStrategyType},
		{"maxUnavailable", ru.MaxUnavailable.String(), "1"},
		{"maxSurge", ru.MaxSurge.String(), "0"},
		{"revisionHistoryLimit", *s.RevisionHistoryLimit, int32(10)},
		{"restartPolicy", s.Template.Spec.RestartPolicy, corev1.RestartPolicyAlways},
		{"dnsPolicy", s.Template.Spec.DNSPolicy, corev1.DNSClusterFirst},
		{"terminationGracePeriodSeconds", *s.Template.Spec.TerminationGracePeriodSeconds, int64(30)},
		{"schedulerName", s.Template.Spec.SchedulerName, "default-scheduler"},
		{"securityContext set", s.Template.Spec.SecurityContext != nil, true},
		{"imagePullPolicy", c.ImagePullPolicy, corev1.PullIfNotPresent},
		{"terminationMessagePath", c.TerminationMessagePath, "/dev/termination-log"},
		{"terminationMessagePolicy", c.TerminationMessagePolicy, corev1.TerminationMessageReadFile},
		{"port protocol", c.Ports[0].Protocol, corev1.ProtocolTCP},
		{"fieldRef apiVersion", c.Env[0].ValueFrom.FieldRef.APIVersion, "v1"},
		{"probe timeout", p.TimeoutSeconds, int32(1)},
		{"probe period", p.PeriodSeconds, int32(10)},
		{"probe success", p.SuccessThreshold, int32(1)},
		{"probe failure", p.FailureThreshold, int32(3)},
		{"httpGet path", p.HTTPGet.Path, "/"},
		{"httpGet scheme", p.HTTPGet.Scheme, corev1.URISchemeHTTP},
		{"sourceless volume is emptyDir", s.Template.Spec.Volumes[0].EmptyDir != nil, true},
		{"configMap defaultMode", *s.Template.Spec.Volumes[1].ConfigMap.DefaultMode, int32(0o644)},
		{"secret defaultMode", *s.Template.Spec.Volumes[2].Secret.DefaultMode, int32(0o644)},
		{"hostPath type", *s.Template.Spec.Volumes[3].HostPath.Type, corev1.HostPathUnset},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if errs := ValidateDaemonSet(ds); len(errs) == 0 {
		t.Errorf("DaemonSet without selector validated")
	}
}

func TestSetDefaultsDaemonSetKeepsUserValues(t *testing.T) {
	ds := &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}}}
	SetDefaultsDaemonSet(ds)
	if ds.Spec.UpdateStrategy.RollingUpdate != nil {
		t.Errorf("OnDelete got a rollingUpdate block: %+v", ds.Spec.UpdateStrategy.RollingUpdate)
	}
	surge := intstr.FromString("10%")
	ds = &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
		RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxSurge: &surge},
	}}}
	SetDefaultsDaemonSet(ds)
	if got := ds.Spec.UpdateStrategy.RollingUpdate.MaxSurge.String(); got != "10%" {
		t.Errorf("maxSurge overwritten with %s", got)
	}
}

func TestSetDefaultsPod(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		HostNetwork: true,
		Containers: []corev1.Container{{
			Name: "c", Image: "app",
			Ports:     []corev1.ContainerPort{{ContainerPort: 9100}},
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
		}},
	}}
	SetDefaultsPod(pod)
	c := pod.Spec.Containers[0]
	if c.Ports[0].HostPort != 9100 {
		t.Errorf("hostPort = %d, want containerPort 9100 under hostNetwork", c.Ports[0].HostPort)
	}
	if req := c.Resources.Requests[corev1.ResourceMemory]; req.String() != "64Mi" {
		t.Errorf("memory request = %s, want 64Mi from the limit", req.String())
	}
	if pod.Spec.EnableServiceLinks == nil || !*pod.Spec.EnableServiceLinks {
		t.Errorf("enableServiceLinks not defaulted to true")
	}
	if c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("imagePullPolicy = %s, want Always for an untagged image", c.ImagePullPolicy)
	}
}

func TestStaticPodDaemonSet(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "etcd", Namespace: "kube-system", Labels: map[string]string{"tier": "control-plane"}, Annotations: map[string]string{"a": "b"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "etcd", Image: "etcd:3.5"}}},
	}
	SetDefaultsPod(pod)
	if errs := ValidatePod(pod); len(errs) > 0 {
		t.Fatalf("pod invalid: %v", errs.ToAggregate())
	}
	ds := StaticPodDaemonSet(pod)
	if errs := ValidateDaemonSet(ds); len(errs) > 0 {
		t.Fatalf("wrapped DaemonSet invalid: %v", errs.ToAggregate())
	}
	if ds.Name != "etcd" || ds.Namespace != "kube-system" || ds.Labels["tier"] != "control-plane" {
		t.Errorf("metadata not carried over: %+v", ds.ObjectMeta)
	}
	tl := ds.Spec.Template.Labels
	if tl[LabelStaticPod] != "etcd" || tl["tier"] != "control-plane" || ds.Spec.Template.Annotations["a"] != "b" {
		t.Errorf("template metadata: labels %v annotations %v", tl, ds.Spec.Template.Annotations)
	}
	if _, set := pod.Labels[LabelStaticPod]; set {
		t.Errorf("the pod's own labels were modified")
	}
	tols := ds.Spec.Template.Spec.Tolerations
	if len(tols) != 1 || tols[0].Operator != corev1.TolerationOpExists || tols[0].Effect != corev1.TaintEffectNoExecute || tols[0].Key != "" {
		t.Errorf("tolerations = %v, want the file-pod NoExecute toleration", tols)
	}
	node := NewNode("n", nil, []corev1.Taint{{Key: "anything", Effect: corev1.TaintEffectNoExecute}})
	if run, cont := NodeShouldRunDaemonPod(node, ds); !run || !cont {
		t.Errorf("static pod on a NoExecute-tainted node: (%v, %v), want (true, true)", run, cont)
	}

	long := pod.DeepCopy()
	long.Name = strings.Repeat("a", 100)
	if errs := ValidateDaemonSet(StaticPodDaemonSet(long)); len(errs) > 0 {
		t.Errorf("long pod name gives an invalid DaemonSet: %v", errs.ToAggregate())
	}
}
