package api

import (
	"fmt"
	"hash/fnv"
	"maps"

	"github.com/distribution/reference"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Default values the Kubernetes API server fills in (K8S-SEMANTICS.md §2).
const (
	// DefaultNamespace is the namespace of an object that names none.
	DefaultNamespace = "default"
	// DefaultSchedulerName is the default pod spec schedulerName.
	DefaultSchedulerName = "default-scheduler"
	// DefaultTerminationGracePeriodSeconds is the default pod grace period.
	DefaultTerminationGracePeriodSeconds int64 = 30
	// DefaultRevisionHistoryLimit is the default DaemonSet revisionHistoryLimit.
	DefaultRevisionHistoryLimit int32 = 10
	// DefaultVolumeMode is the default mode of secret, configMap, downwardAPI
	// and projected volume files (0644).
	DefaultVolumeMode int32 = 0o644
)

// SetDefaultsDaemonSet fills in the fields the API server defaults on an
// apps/v1 DaemonSet and its pod template.
func SetDefaultsDaemonSet(ds *appsv1.DaemonSet) {
	if ds.Namespace == "" {
		ds.Namespace = DefaultNamespace
	}
	us := &ds.Spec.UpdateStrategy
	if us.Type == "" {
		us.Type = appsv1.RollingUpdateDaemonSetStrategyType
	}
	if us.Type == appsv1.RollingUpdateDaemonSetStrategyType {
		if us.RollingUpdate == nil {
			us.RollingUpdate = &appsv1.RollingUpdateDaemonSet{}
		}
		if us.RollingUpdate.MaxUnavailable == nil {
			one := intstr.FromInt32(1)
			us.RollingUpdate.MaxUnavailable = &one
		}
		if us.RollingUpdate.MaxSurge == nil {
			zero := intstr.FromInt32(0)
			us.RollingUpdate.MaxSurge = &zero
		}
	}
	if ds.Spec.RevisionHistoryLimit == nil {
		limit := DefaultRevisionHistoryLimit
		ds.Spec.RevisionHistoryLimit = &limit
	}
	setDefaultsPodSpec(&ds.Spec.Template.Spec)
}

// SetDefaultsPod fills in the fields the API server defaults on a v1 Pod,
// including the pod-only ones (enableServiceLinks, requests from limits,
// hostPort from containerPort under hostNetwork).
func SetDefaultsPod(pod *corev1.Pod) {
	if pod.Namespace == "" {
		pod.Namespace = DefaultNamespace
	}
	spec := &pod.Spec
	setDefaultsPodSpec(spec)
	if spec.EnableServiceLinks == nil {
		enable := corev1.DefaultEnableServiceLinks
		spec.EnableServiceLinks = &enable
	}
	for _, ctrs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range ctrs {
			c := &ctrs[i]
			if len(c.Resources.Limits) > 0 && c.Resources.Requests == nil {
				c.Resources.Requests = corev1.ResourceList{}
			}
			for name, limit := range c.Resources.Limits {
				if _, set := c.Resources.Requests[name]; !set {
					c.Resources.Requests[name] = limit.DeepCopy()
				}
			}
			if spec.HostNetwork {
				for j := range c.Ports {
					if c.Ports[j].HostPort == 0 {
						c.Ports[j].HostPort = c.Ports[j].ContainerPort
					}
				}
			}
		}
	}
}

func setDefaultsPodSpec(spec *corev1.PodSpec) {
	if spec.RestartPolicy == "" {
		spec.RestartPolicy = corev1.RestartPolicyAlways
	}
	if spec.DNSPolicy == "" {
		spec.DNSPolicy = corev1.DNSClusterFirst
	}
	if spec.TerminationGracePeriodSeconds == nil {
		grace := DefaultTerminationGracePeriodSeconds
		spec.TerminationGracePeriodSeconds = &grace
	}
	if spec.SchedulerName == "" {
		spec.SchedulerName = DefaultSchedulerName
	}
	if spec.SecurityContext == nil {
		spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	for i := range spec.InitContainers {
		setDefaultsContainer(&spec.InitContainers[i])
	}
	for i := range spec.Containers {
		setDefaultsContainer(&spec.Containers[i])
	}
	for i := range spec.Volumes {
		setDefaultsVolume(&spec.Volumes[i].VolumeSource)
	}
}

func setDefaultsContainer(c *corev1.Container) {
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = defaultPullPolicy(c.Image)
	}
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = corev1.TerminationMessagePathDefault
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	for i := range c.Ports {
		if c.Ports[i].Protocol == "" {
			c.Ports[i].Protocol = corev1.ProtocolTCP
		}
	}
	for i := range c.Env {
		if vf := c.Env[i].ValueFrom; vf != nil && vf.FieldRef != nil && vf.FieldRef.APIVersion == "" {
			vf.FieldRef.APIVersion = "v1"
		}
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		setDefaultsProbe(p)
	}
	if lc := c.Lifecycle; lc != nil {
		for _, h := range []*corev1.LifecycleHandler{lc.PostStart, lc.PreStop} {
			if h != nil {
				setDefaultsHTTPGet(h.HTTPGet)
			}
		}
	}
}

// defaultPullPolicy is Always for ":latest" and for references with neither
// tag nor digest (which mean latest), IfNotPresent otherwise, including for
// references that do not parse, as the API server does.
func defaultPullPolicy(image string) corev1.PullPolicy {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return corev1.PullIfNotPresent
	}
	if tagged, ok := named.(reference.Tagged); ok {
		if tagged.Tag() == "latest" {
			return corev1.PullAlways
		}
		return corev1.PullIfNotPresent
	}
	if _, ok := named.(reference.Digested); ok {
		return corev1.PullIfNotPresent
	}
	return corev1.PullAlways
}

func setDefaultsProbe(p *corev1.Probe) {
	if p == nil {
		return
	}
	if p.TimeoutSeconds == 0 {
		p.TimeoutSeconds = 1
	}
	if p.PeriodSeconds == 0 {
		p.PeriodSeconds = 10
	}
	if p.SuccessThreshold == 0 {
		p.SuccessThreshold = 1
	}
	if p.FailureThreshold == 0 {
		p.FailureThreshold = 3
	}
	setDefaultsHTTPGet(p.HTTPGet)
}

func setDefaultsHTTPGet(h *corev1.HTTPGetAction) {
	if h == nil {
		return
	}
	if h.Path == "" {
		h.Path = "/"
	}
	if h.Scheme == "" {
		h.Scheme = corev1.URISchemeHTTP
	}
}

func setDefaultsVolume(vs *corev1.VolumeSource) {
	if volumeSourceCount(vs) == 0 {
		vs.EmptyDir = &corev1.EmptyDirVolumeSource{}
	}
	if vs.HostPath != nil && vs.HostPath.Type == nil {
		unset := corev1.HostPathUnset
		vs.HostPath.Type = &unset
	}
	if vs.Secret != nil {
		defaultMode(&vs.Secret.DefaultMode)
	}
	if vs.ConfigMap != nil {
		defaultMode(&vs.ConfigMap.DefaultMode)
	}
	if vs.DownwardAPI != nil {
		defaultMode(&vs.DownwardAPI.DefaultMode)
		defaultFieldRefs(vs.DownwardAPI.Items)
	}
	if vs.Projected != nil {
		defaultMode(&vs.Projected.DefaultMode)
		for i := range vs.Projected.Sources {
			src := &vs.Projected.Sources[i]
			if src.DownwardAPI != nil {
				defaultFieldRefs(src.DownwardAPI.Items)
			}
			if t := src.ServiceAccountToken; t != nil && t.ExpirationSeconds == nil {
				hour := int64(3600)
				t.ExpirationSeconds = &hour
			}
		}
	}
}

func defaultMode(mode **int32) {
	if *mode == nil {
		m := DefaultVolumeMode
		*mode = &m
	}
}

func defaultFieldRefs(items []corev1.DownwardAPIVolumeFile) {
	for i := range items {
		if f := items[i].FieldRef; f != nil && f.APIVersion == "" {
			f.APIVersion = "v1"
		}
	}
}

// LabelStaticPod is the template label, valued with the pod name, by which
// the DaemonSet that StaticPodDaemonSet builds selects its pod.
const LabelStaticPod = "daemonlet.io/static-pod"

// StaticPodDaemonSet wraps a defaulted, validated static Pod in a DaemonSet
// so that the agent runs both kinds the same way: same namespace, name and
// labels; the template carries the pod's labels and annotations plus
// LabelStaticPod, which the selector matches; the spec is the pod's, with the
// {operator: Exists, effect: NoExecute} toleration the kubelet gives file
// pods, so that no NoExecute taint evicts them. The pod's restartPolicy is
// kept as it is.
func StaticPodDaemonSet(pod *corev1.Pod) *appsv1.DaemonSet {
	selectorValue := pod.Name
	if len(validation.IsValidLabelValue(selectorValue)) > 0 {
		// A pod name may be a 253-character subdomain; a label value may
		// not, so long names are represented by their hash.
		h := fnv.New32a()
		h.Write([]byte(pod.Name))
		selectorValue = rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
	}
	tmplLabels := map[string]string{}
	for k, v := range pod.Labels {
		tmplLabels[k] = v
	}
	tmplLabels[LabelStaticPod] = selectorValue
	spec := pod.Spec.DeepCopy()
	addOrUpdateToleration(spec, corev1.Toleration{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute})
	ds := &appsv1.DaemonSet{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      pod.Name,
			Namespace: pod.Namespace,
			Labels:    maps.Clone(pod.Labels),
		},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{LabelStaticPod: selectorValue}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: tmplLabels, Annotations: maps.Clone(pod.Annotations)},
				Spec:       *spec,
			},
		},
	}
	SetDefaultsDaemonSet(ds)
	return ds
}
