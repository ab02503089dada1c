package runtime

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestCheckPodSpecAcceptsSupported(t *testing.T) {
	dirType := corev1.HostPathDirectoryOrCreate
	grace := int64(30)
	spec := &corev1.PodSpec{
		ServiceAccountName: "sa", AutomountServiceAccountToken: ptr(false), SchedulerName: "default-scheduler",
		PriorityClassName: "system-node-critical", Priority: ptr[int32](2000001000), EnableServiceLinks: ptr(true),
		NodeSelector: map[string]string{"a": "b"}, Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		Affinity: &corev1.Affinity{}, DNSPolicy: corev1.DNSClusterFirstWithHostNet, DNSConfig: &corev1.PodDNSConfig{},
		TerminationGracePeriodSeconds: &grace, ImagePullSecrets: []corev1.LocalObjectReference{{Name: "reg"}},
		HostNetwork: false, ShareProcessNamespace: ptr(false), HostUsers: ptr(true), OS: &corev1.PodOS{Name: corev1.Linux},
		SecurityContext: &corev1.PodSecurityContext{
			RunAsUser: ptr[int64](1000), FSGroup: ptr[int64](2000),
			SeccompProfile:  &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined},
			Sysctls:         []corev1.Sysctl{{Name: "net.ipv4.ip_local_port_range", Value: "1 2"}, {Name: "kernel.shm_rmid_forced", Value: "1"}},
		},
		Volumes: []corev1.Volume{
			{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log", Type: &dirType}}},
			{Name: "e", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
			{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}}},
			{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
			{Name: "p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{}}, {Secret: &corev1.SecretProjection{}},
			}}}},
		},
		InitContainers: []corev1.Container{{Name: "init", Image: "i"}},
		Containers: []corev1.Container{{
			Name: "main", Image: "i",
			Env: []corev1.EnvVar{
				{Name: "A", Value: "1"},
				{Name: "B", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['x']"}}},
				{Name: "C", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIPs"}}},
				{Name: "D", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.ephemeral-storage"}}},
				{Name: "E", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{Key: "k"}}},
				{Name: "F", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}},
			},
			EnvFrom:                []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{}}, {Prefix: "S_", SecretRef: &corev1.SecretEnvSource{}}},
			Resources:              corev1.ResourceRequirements{Limits: rl("cpu", "1", "memory", "1Gi", "ephemeral-storage", "1Gi")},
			Lifecycle:              &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"x"}}}, PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 1}}},
			LivenessProbe:          &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/"}}},
			ReadinessProbe:         &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{}}},
			VolumeMounts:           []corev1.VolumeMount{{Name: "h", MountPath: "/h", RecursiveReadOnly: ptr(corev1.RecursiveReadOnlyDisabled)}},
			TerminationMessagePath: "/dev/termination-log",
			SecurityContext: &corev1.SecurityContext{
				Privileged: ptr(true), ProcMount: ptr(corev1.DefaultProcMount),
				Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}},
			},
		}},
	}
	if errs := CheckPodSpec(spec); len(errs) != 0 {
		t.Errorf("CheckPodSpec = %v, want no errors", errs)
	}
}

func TestCheckPodSpecNamesFields(t *testing.T) {
	c := func(mut func(*corev1.Container)) []corev1.Container {
		ct := corev1.Container{Name: "c", Image: "i"}
		mut(&ct)
		return []corev1.Container{ct}
	}
	vol := func(src corev1.VolumeSource) []corev1.Volume {
		return []corev1.Volume{{Name: "ok", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}, {Name: "v", VolumeSource: src}}
	}
	for _, tc := range []struct {
		spec corev1.PodSpec
		want string
	}{
		{corev1.PodSpec{Volumes: vol(corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{}})}, "spec.volumes[1].nfs"},
		{corev1.PodSpec{Volumes: vol(corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{}})}, "spec.volumes[1].downwardAPI"},
		{corev1.PodSpec{Volumes: vol(corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{}}, {DownwardAPI: &corev1.DownwardAPIProjection{}},
		}}})}, "spec.volumes[1].projected.sources[1]"},
		{corev1.PodSpec{Volumes: vol(corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{}})}, "spec.volumes[1].persistentVolumeClaim"},
		{corev1.PodSpec{Volumes: vol(corev1.VolumeSource{})}, "spec.volumes[1]"},
		{corev1.PodSpec{Volumes: vol(corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumHugePages}})}, "spec.volumes[1].emptyDir.medium"},
		{corev1.PodSpec{EphemeralContainers: []corev1.EphemeralContainer{{}}}, "spec.ephemeralContainers"},
		{corev1.PodSpec{ShareProcessNamespace: ptr(true)}, "spec.shareProcessNamespace"},
		{corev1.PodSpec{RuntimeClassName: ptr("kata")}, "spec.runtimeClassName"},
		{corev1.PodSpec{ResourceClaims: []corev1.PodResourceClaim{{Name: "x"}}}, "spec.resourceClaims"},
		{corev1.PodSpec{HostUsers: ptr(false)}, "spec.hostUsers"},
		{corev1.PodSpec{OS: &corev1.PodOS{Name: corev1.Windows}}, "spec.os.name"},
		{corev1.PodSpec{Resources: &corev1.ResourceRequirements{}}, "spec.resources"},
		{corev1.PodSpec{SetHostnameAsFQDN: ptr(true)}, "spec.setHostnameAsFQDN"},
		{corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{SELinuxOptions: &corev1.SELinuxOptions{}}}, "spec.securityContext.seLinuxOptions"},
		{corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{WindowsOptions: &corev1.WindowsSecurityContextOptions{}}}, "spec.securityContext.windowsOptions"},
		{corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeLocalhost}}}, "spec.securityContext.appArmorProfile.type"},
		{corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "vm.swappiness"}}}}, "spec.securityContext.sysctls[0].name"},
		{corev1.PodSpec{HostNetwork: true, SecurityContext: &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "net.core.somaxconn"}}}}, "spec.securityContext.sysctls[0].name"},
		{corev1.PodSpec{HostIPC: true, SecurityContext: &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "kernel.msgmax"}}}}, "spec.securityContext.sysctls[0].name"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) { c.EnvFrom = []corev1.EnvFromSource{{Prefix: "p"}} })}, "spec.containers[0].envFrom[0]"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) {
			c.Env = []corev1.EnvVar{{Name: "x", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}
		})}, "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) {
			c.Env = []corev1.EnvVar{{Name: "x", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.hugepages-2Mi"}}}}
		})}, "spec.containers[0].env[0].valueFrom.resourceFieldRef.resource"},
		{corev1.PodSpec{InitContainers: c(func(c *corev1.Container) {
			c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{}}}
		})}, "spec.initContainers[0].lifecycle.preStop.httpGet"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) {
			c.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{TCPSocket: &corev1.TCPSocketAction{}}}
		})}, "spec.containers[0].lifecycle.postStart.tcpSocket"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) { c.ResizePolicy = []corev1.ContainerResizePolicy{{}} })}, "spec.containers[0].resizePolicy"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) { c.VolumeDevices = []corev1.VolumeDevice{{}} })}, "spec.containers[0].volumeDevices"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) { c.Resources.Claims = []corev1.ResourceClaim{{Name: "x"}} })}, "spec.containers[0].resources.claims"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) { c.Resources.Limits = rl("nvidia.com/gpu", "1") })}, "spec.containers[0].resources.limits[nvidia.com/gpu]"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) { c.Resources.Requests = rl("hugepages-2Mi", "2Mi") })}, "spec.containers[0].resources.requests[hugepages-2Mi]"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) { c.TTY = true })}, "spec.containers[0].tty"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) { c.Stdin = true })}, "spec.containers[0].stdin"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) { c.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways) })}, "spec.containers[0].restartPolicy"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) {
			c.VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/v", ReadOnly: true, RecursiveReadOnly: ptr(corev1.RecursiveReadOnlyEnabled)}}
		})}, "spec.containers[0].volumeMounts[0].recursiveReadOnly"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{SELinuxOptions: &corev1.SELinuxOptions{}}
		})}, "spec.containers[0].securityContext.seLinuxOptions"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{WindowsOptions: &corev1.WindowsSecurityContextOptions{}}
		})}, "spec.containers[0].securityContext.windowsOptions"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{ProcMount: ptr(corev1.UnmaskedProcMount)}
		})}, "spec.containers[0].securityContext.procMount"},
		{corev1.PodSpec{Containers: c(func(c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{AppArmorProfile: &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeLocalhost}}
		})}, "spec.containers[0].securityContext.appArmorProfile.type"},
	} {
		errs := CheckPodSpec(&tc.spec)
		var fields []string
		for _, e := range errs {
			fields = append(fields, e.Field)
		}
		if !slices.Contains(fields, tc.want) || len(errs) != 1 {
			t.Errorf("CheckPodSpec errors %v, want exactly one naming %s", errs, tc.want)
		}
	}
	if errs := CheckPodSpec(nil); len(errs) != 1 {
		t.Errorf("CheckPodSpec(nil) = %v", errs)
	}
}
