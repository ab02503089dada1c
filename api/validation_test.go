package api

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	sigsyaml "sigs.k8s.io/yaml"
)

const baseDS = `apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  namespace: ops
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      initContainers:
      - name: setup
        image: busybox:1.36
      containers:
      - name: agent
        image: example.com/agent:v1
        ports:
        - containerPort: 8080
          name: http
        env:
        - name: NODE
          valueFrom:
            fieldRef: {fieldPath: spec.nodeName}
        volumeMounts:
        - name: data
          mountPath: /data
        readinessProbe:
          httpGet: {port: 8080}
      volumes:
      - name: data
        hostPath: {path: /var/lib/agent, type: DirectoryOrCreate}
`

// baseDaemonSet decodes baseDS, which must be valid.
func baseDaemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	objs, err := DecodeAndValidate("base.yaml", []byte(baseDS))
	if err != nil {
		t.Fatalf("base manifest: %v", err)
	}
	return objs[0].DaemonSet
}

func TestValidateDaemonSetInvalidManifests(t *testing.T) {
	tmpl := func(ds *appsv1.DaemonSet) *corev1.PodSpec { return &ds.Spec.Template.Spec }
	ctr := func(ds *appsv1.DaemonSet) *corev1.Container { return &ds.Spec.Template.Spec.Containers[0] }
	tests := []struct {
		name   string
		mutate func(ds *appsv1.DaemonSet)
		want   string // field path and the start of the detail
	}{
		{"name not a DNS subdomain", func(ds *appsv1.DaemonSet) { ds.Name = "Agent_1" }, "metadata.name: Invalid value: \"Agent_1\""},
		{"namespace not a DNS label", func(ds *appsv1.DaemonSet) { ds.Namespace = "ops.team" }, "metadata.namespace: Invalid value: \"ops.team\""},
		{"bad label key", func(ds *appsv1.DaemonSet) { ds.Labels = map[string]string{"-bad": "x"} }, "metadata.labels: Invalid value: \"-bad\""},
		{"label value too long", func(ds *appsv1.DaemonSet) { ds.Labels = map[string]string{"k": strings.Repeat("v", 64)} }, "metadata.labels: Invalid value: \"" + strings.Repeat("v", 64)},
		{"bad annotation key", func(ds *appsv1.DaemonSet) { ds.Annotations = map[string]string{"a b": "x"} }, "metadata.annotations: Invalid value: \"a b\""},
		{"missing selector", func(ds *appsv1.DaemonSet) { ds.Spec.Selector = nil }, "spec.selector: Required value"},
		{"empty selector", func(ds *appsv1.DaemonSet) { ds.Spec.Selector = &metav1.LabelSelector{} }, "spec.selector: Invalid value: {}: empty selector is invalid for daemonset"},
		{"selector does not match", func(ds *appsv1.DaemonSet) { ds.Spec.Selector.MatchLabels["app"] = "other" }, "spec.template.metadata.labels: Invalid value: {\"app\":\"agent\"}: `selector` does not match template `labels`"},
		{"bad selector operator", func(ds *appsv1.DaemonSet) {
			ds.Spec.Selector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Is"}}
		}, "spec.selector.matchExpressions[0].operator: Invalid value: \"Is\""},
		{"restartPolicy not Always", func(ds *appsv1.DaemonSet) { tmpl(ds).RestartPolicy = corev1.RestartPolicyNever }, "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""},
		{"activeDeadlineSeconds", func(ds *appsv1.DaemonSet) { tmpl(ds).ActiveDeadlineSeconds = ptr.To[int64](10) }, "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in DaemonSet is not Supported"},
		{"negative minReadySeconds", func(ds *appsv1.DaemonSet) { ds.Spec.MinReadySeconds = -1 }, "spec.minReadySeconds: Invalid value: -1"},
		{"negative revisionHistoryLimit", func(ds *appsv1.DaemonSet) { ds.Spec.RevisionHistoryLimit = ptr.To[int32](-1) }, "spec.revisionHistoryLimit: Invalid value: -1"},
		{"unknown update strategy", func(ds *appsv1.DaemonSet) { ds.Spec.UpdateStrategy.Type = "Recreate" }, "spec.updateStrategy.type: Unsupported value: \"Recreate\""},
		{"maxUnavailable over 100%", func(ds *appsv1.DaemonSet) {
			ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = ptr.To(intstr.FromString("150%"))
		}, "spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"},
		{"maxUnavailable not a percent", func(ds *appsv1.DaemonSet) {
			ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = ptr.To(intstr.FromString("ten"))
		}, "spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: \"ten\""},
		{"negative maxSurge", func(ds *appsv1.DaemonSet) {
			ds.Spec.UpdateStrategy.RollingUpdate.MaxSurge = ptr.To(intstr.FromInt32(-1))
		}, "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: -1"},
		{"maxSurge with maxUnavailable", func(ds *appsv1.DaemonSet) {
			ds.Spec.UpdateStrategy.RollingUpdate.MaxSurge = ptr.To(intstr.FromInt32(1))
		}, "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: \"1\": may not be set when maxUnavailable is non-zero"},
		{"both zero", func(ds *appsv1.DaemonSet) {
			ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = ptr.To(intstr.FromString("0%"))
		}, "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"},
		{"no containers", func(ds *appsv1.DaemonSet) { tmpl(ds).Containers = nil }, "spec.template.spec.containers: Required value"},
		{"container name not a DNS label", func(ds *appsv1.DaemonSet) { ctr(ds).Name = "Agent" }, "spec.template.spec.containers[0].name: Invalid value: \"Agent\""},
		{"container name shared with init container", func(ds *appsv1.DaemonSet) { ctr(ds).Name = "setup" }, "spec.template.spec.containers[0].name: Duplicate value: \"setup\""},
		{"missing image", func(ds *appsv1.DaemonSet) { ctr(ds).Image = "" }, "spec.template.spec.containers[0].image: Required value"},
		{"containerPort out of range", func(ds *appsv1.DaemonSet) { ctr(ds).Ports[0].ContainerPort = 70000 }, "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 70000"},
		{"hostPort out of range", func(ds *appsv1.DaemonSet) { ctr(ds).Ports[0].HostPort = -1 }, "spec.template.spec.containers[0].ports[0].hostPort: Invalid value: -1"},
		{"bad protocol", func(ds *appsv1.DaemonSet) { ctr(ds).Ports[0].Protocol = "ICMP" }, "spec.template.spec.containers[0].ports[0].protocol: Unsupported value: \"ICMP\""},
		{"duplicate port name", func(ds *appsv1.DaemonSet) {
			ctr(ds).Ports = append(ctr(ds).Ports, corev1.ContainerPort{Name: "http", ContainerPort: 8081, Protocol: corev1.ProtocolTCP})
		}, "spec.template.spec.containers[0].ports[1].name: Duplicate value: \"http\""},
		{"bad env name", func(ds *appsv1.DaemonSet) { ctr(ds).Env[0].Name = "A=B" }, "spec.template.spec.containers[0].env[0].name: Invalid value: \"A=B\""},
		{"env value and valueFrom", func(ds *appsv1.DaemonSet) { ctr(ds).Env[0].Value = "x" }, "spec.template.spec.containers[0].env[0].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty"},
		{"unsupported fieldRef", func(ds *appsv1.DaemonSet) { ctr(ds).Env[0].ValueFrom.FieldRef.FieldPath = "spec.hostname" }, "spec.template.spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.hostname\""},
		{"duplicate volume name", func(ds *appsv1.DaemonSet) { tmpl(ds).Volumes = append(tmpl(ds).Volumes, tmpl(ds).Volumes[0]) }, "spec.template.spec.volumes[1].name: Duplicate value: \"data\""},
		{"mount of an undeclared volume", func(ds *appsv1.DaemonSet) { ctr(ds).VolumeMounts[0].Name = "logs" }, "spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"logs\""},
		{"relative mountPath", func(ds *appsv1.DaemonSet) { ctr(ds).VolumeMounts[0].MountPath = "data" }, "spec.template.spec.containers[0].volumeMounts[0].mountPath: Invalid value: \"data\": must be an absolute path"},
		{"subPath with backstep", func(ds *appsv1.DaemonSet) { ctr(ds).VolumeMounts[0].SubPath = "a/../../etc" }, "spec.template.spec.containers[0].volumeMounts[0].subPath: Invalid value: \"a/../../etc\": must not contain '..'"},
		{"absolute subPath", func(ds *appsv1.DaemonSet) { ctr(ds).VolumeMounts[0].SubPath = "/etc" }, "spec.template.spec.containers[0].volumeMounts[0].subPath: Invalid value: \"/etc\": must be a relative path"},
		{"relative hostPath", func(ds *appsv1.DaemonSet) { tmpl(ds).Volumes[0].HostPath.Path = "var/lib" }, "spec.template.spec.volumes[0].hostPath.path: Invalid value: \"var/lib\": must be an absolute path"},
		{"bad hostPath type", func(ds *appsv1.DaemonSet) { tmpl(ds).Volumes[0].HostPath.Type = ptr.To(corev1.HostPathType("Folder")) }, "spec.template.spec.volumes[0].hostPath.type: Unsupported value: \"Folder\""},
		{"two volume types", func(ds *appsv1.DaemonSet) { tmpl(ds).Volumes[0].EmptyDir = &corev1.EmptyDirVolumeSource{} }, "spec.template.spec.volumes[0].emptyDir: Forbidden: may not specify more than 1 volume type"},
		{"requests above limits", func(ds *appsv1.DaemonSet) {
			ctr(ds).Resources = corev1.ResourceRequirements{
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("100Mi")},
				Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("200Mi")},
			}
		}, "spec.template.spec.containers[0].resources.requests[memory]: Invalid value: \"200Mi\": must be less than or equal to memory limit of 100Mi"},
		{"negative quantity", func(ds *appsv1.DaemonSet) {
			ctr(ds).Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("-1")}
		}, "spec.template.spec.containers[0].resources.limits[cpu]: Invalid value: \"-1\""},
		{"unknown resource name", func(ds *appsv1.DaemonSet) {
			ctr(ds).Resources.Limits = corev1.ResourceList{"gpu": resource.MustParse("1")}
		}, "spec.template.spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers"},
		{"liveness successThreshold", func(ds *appsv1.DaemonSet) {
			ctr(ds).LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}, SuccessThreshold: 2}
		}, "spec.template.spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"},
		{"startup successThreshold", func(ds *appsv1.DaemonSet) {
			ctr(ds).StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}, SuccessThreshold: 3}
		}, "spec.template.spec.containers[0].startupProbe.successThreshold: Invalid value: 3: must be 1"},
		{"probe with two handlers", func(ds *appsv1.DaemonSet) {
			ctr(ds).ReadinessProbe.TCPSocket = &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}
		}, "spec.template.spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type"},
		{"probe without handler", func(ds *appsv1.DaemonSet) {
			ctr(ds).ReadinessProbe.HTTPGet = nil
		}, "spec.template.spec.containers[0].readinessProbe: Required value: must specify a handler type"},
		{"probe port out of range", func(ds *appsv1.DaemonSet) {
			ctr(ds).ReadinessProbe.HTTPGet.Port = intstr.FromInt32(0)
		}, "spec.template.spec.containers[0].readinessProbe.httpGet.port: Invalid value: \"0\""},
		{"probe on init container", func(ds *appsv1.DaemonSet) {
			tmpl(ds).InitContainers[0].LivenessProbe = ctr(ds).ReadinessProbe
		}, "spec.template.spec.initContainers[0].livenessProbe: Forbidden"},
		{"bad dnsPolicy", func(ds *appsv1.DaemonSet) { tmpl(ds).DNSPolicy = "Google" }, "spec.template.spec.dnsPolicy: Unsupported value: \"Google\""},
		{"dnsPolicy None without dnsConfig", func(ds *appsv1.DaemonSet) { tmpl(ds).DNSPolicy = corev1.DNSNone }, "spec.template.spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"},
		{"bad nameserver", func(ds *appsv1.DaemonSet) {
			tmpl(ds).DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"dns.example"}}
		}, "spec.template.spec.dnsConfig.nameservers[0]: Invalid value: \"dns.example\""},
		{"toleration value with Exists", func(ds *appsv1.DaemonSet) {
			tmpl(ds).Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists, Value: "v"}}
		}, "spec.template.spec.tolerations[0].value: Invalid value: \"v\": value must be empty when `operator` is 'Exists'"},
		{"tolerationSeconds without NoExecute", func(ds *appsv1.DaemonSet) {
			tmpl(ds).Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule, TolerationSeconds: ptr.To[int64](5)}}
		}, "spec.template.spec.tolerations[0].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set"},
		{"bad toleration effect", func(ds *appsv1.DaemonSet) {
			tmpl(ds).Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists, Effect: "NoRun"}}
		}, "spec.template.spec.tolerations[0].effect: Unsupported value: \"NoRun\""},
		{"bad node affinity operator", func(ds *appsv1.DaemonSet) {
			tmpl(ds).Affinity = requiredAffinity(corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: "Near"}}})
		}, "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: Unsupported value: \"Near\""},
		{"matchFields on an unsupported field", func(ds *appsv1.DaemonSet) {
			tmpl(ds).Affinity = requiredAffinity(corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.uid", Operator: corev1.NodeSelectorOpIn, Values: []string{"x"}}}})
		}, "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].key: Unsupported value: \"metadata.uid\""},
		{"bad nodeSelector value", func(ds *appsv1.DaemonSet) { tmpl(ds).NodeSelector = map[string]string{"zone": "a b"} }, "spec.template.spec.nodeSelector: Invalid value: \"a b\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds := baseDaemonSet(t)
			tc.mutate(ds)
			// Round-trip through a manifest, so the whole pipeline a user's
			// file goes through is exercised.
			data, err := sigsyaml.Marshal(ds)
			if err != nil {
				t.Fatal(err)
			}
			_, err = DecodeAndValidate("ds.yaml", data)
			want := "ds.yaml: document 1: " + tc.want
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("got error %v\nwant it to contain %q", err, want)
			}
		})
	}
}

func requiredAffinity(terms ...corev1.NodeSelectorTerm) *corev1.Affinity {
	return &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms},
	}}
}

func TestValidateDaemonSetAccepts(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(ds *appsv1.DaemonSet)
	}{
		{"surge with maxUnavailable 0", func(ds *appsv1.DaemonSet) {
			ds.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromString("25%"))}
		}},
		{"OnDelete ignores a rollingUpdate block", func(ds *appsv1.DaemonSet) {
			ds.Spec.UpdateStrategy.Type = appsv1.OnDeleteDaemonSetStrategyType
			ds.Spec.UpdateStrategy.RollingUpdate.MaxSurge = ptr.To(intstr.FromInt32(5))
		}},
		{"revisionHistoryLimit 0", func(ds *appsv1.DaemonSet) { ds.Spec.RevisionHistoryLimit = ptr.To[int32](0) }},
		{"100% maxUnavailable", func(ds *appsv1.DaemonSet) {
			ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = ptr.To(intstr.FromString("100%"))
		}},
		{"sidecar with probe", func(ds *appsv1.DaemonSet) {
			ic := &ds.Spec.Template.Spec.InitContainers[0]
			ic.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
			ic.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}, TimeoutSeconds: 1, PeriodSeconds: 10, SuccessThreshold: 1, FailureThreshold: 3}
		}},
		{"dnsPolicy None with dnsConfig", func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.DNSPolicy = corev1.DNSNone
			ds.Spec.Template.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"10.0.0.10"}, Searches: []string{"svc.cluster.local."}}
		}},
		{"label and annotation fieldRefs", func(ds *appsv1.DaemonSet) {
			ds.Spec.Template.Spec.Containers[0].Env = append(ds.Spec.Template.Spec.Containers[0].Env,
				corev1.EnvVar{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.labels['app']"}}})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds := baseDaemonSet(t)
			tc.mutate(ds)
			if errs := ValidateDaemonSet(ds); len(errs) > 0 {
				t.Errorf("unexpected errors: %v", errs.ToAggregate())
			}
		})
	}
}

func TestValidateDaemonSetUpdate(t *testing.T) {
	old := baseDaemonSet(t)
	changedTemplate := old.DeepCopy()
	changedTemplate.Spec.Template.Spec.Containers[0].Image = "example.com/agent:v2"
	if errs := ValidateDaemonSetUpdate(changedTemplate, old); len(errs) > 0 {
		t.Errorf("template change rejected: %v", errs.ToAggregate())
	}
	changedSelector := old.DeepCopy()
	changedSelector.Spec.Selector.MatchLabels["tier"] = "node"
	changedSelector.Spec.Template.Labels["tier"] = "node"
	errs := ValidateDaemonSetUpdate(changedSelector, old)
	if len(errs) != 1 || errs[0].Field != "spec.selector" || !strings.Contains(errs[0].Error(), "field is immutable") {
		t.Errorf("got %v, want spec.selector: field is immutable", errs.ToAggregate())
	}
}

func TestValidatePod(t *testing.T) {
	base := func() *corev1.Pod {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "static"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1.36"}}},
		}
		SetDefaultsPod(pod)
		return pod
	}
	if errs := ValidatePod(base()); len(errs) > 0 {
		t.Fatalf("valid pod rejected: %v", errs.ToAggregate())
	}
	tests := []struct {
		name   string
		mutate func(*corev1.Pod)
		want   string
	}{
		{"restartPolicy Never is allowed", func(p *corev1.Pod) { p.Spec.RestartPolicy = corev1.RestartPolicyNever }, ""},
		{"bad restartPolicy", func(p *corev1.Pod) { p.Spec.RestartPolicy = "Sometimes" }, "spec.restartPolicy: Unsupported value: \"Sometimes\""},
		{"activeDeadlineSeconds 0", func(p *corev1.Pod) { p.Spec.ActiveDeadlineSeconds = ptr.To[int64](0) }, "spec.activeDeadlineSeconds: Invalid value: 0"},
		{"missing name", func(p *corev1.Pod) { p.Name = "" }, "metadata.name: Required value"},
		{"missing namespace", func(p *corev1.Pod) { p.Namespace = "" }, "metadata.namespace: Required value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := base()
			tc.mutate(pod)
			err := ValidatePod(pod).ToAggregate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}
