package runtime

import (
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/component-helpers/node/util/sysctl"
)

// CheckPodSpec reports every pod-template field the runtime does not
// implement, each as an error naming the field (spec.volumes[2].nfs, ...),
// so that a DaemonSet is refused up front rather than run half-right.
// Fields that only matter to a cluster (service accounts, scheduling,
// priority, DNS settings the sandbox handles, probes, termination
// settings, image pull secrets) are accepted.
func CheckPodSpec(spec *corev1.PodSpec) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec")
	if spec == nil {
		return field.ErrorList{field.Required(p, "")}
	}
	unsupported := func(fp *field.Path, what string) {
		errs = append(errs, field.Forbidden(fp, what+" is not supported by daemonlet"))
	}
	for i := range spec.Volumes {
		errs = append(errs, checkVolume(&spec.Volumes[i], p.Child("volumes").Index(i))...)
	}
	if len(spec.EphemeralContainers) > 0 {
		unsupported(p.Child("ephemeralContainers"), "ephemeral containers")
	}
	if spec.ShareProcessNamespace != nil && *spec.ShareProcessNamespace {
		unsupported(p.Child("shareProcessNamespace"), "a shared process namespace")
	}
	if spec.RuntimeClassName != nil {
		unsupported(p.Child("runtimeClassName"), "a runtime class")
	}
	if len(spec.ResourceClaims) > 0 {
		unsupported(p.Child("resourceClaims"), "dynamic resource allocation")
	}
	if spec.HostUsers != nil && !*spec.HostUsers {
		unsupported(p.Child("hostUsers"), "a user namespace")
	}
	if spec.OS != nil && spec.OS.Name != corev1.Linux {
		errs = append(errs, field.NotSupported(p.Child("os", "name"), spec.OS.Name, []corev1.OSName{corev1.Linux}))
	}
	if spec.Resources != nil {
		unsupported(p.Child("resources"), "pod-level resources")
	}
	if spec.SetHostnameAsFQDN != nil && *spec.SetHostnameAsFQDN {
		unsupported(p.Child("setHostnameAsFQDN"), "a fully qualified hostname")
	}
	if sc := spec.SecurityContext; sc != nil {
		sp := p.Child("securityContext")
		if sc.SELinuxOptions != nil {
			unsupported(sp.Child("seLinuxOptions"), "SELinux")
		}
		if sc.WindowsOptions != nil {
			unsupported(sp.Child("windowsOptions"), "Windows")
		}
		errs = append(errs, checkAppArmor(sc.AppArmorProfile, sp.Child("appArmorProfile"))...)
		for i, s := range sc.Sysctls {
			if ns, _, _ := sysctl.GetNamespace(s.Name); ns != sysctl.NetNamespace && ns != sysctl.IPCNamespace && ns != sysctl.UTSNamespace {
				errs = append(errs, field.Invalid(sp.Child("sysctls").Index(i).Child("name"), s.Name, "only namespaced sysctls (net.*, IPC, kernel.domainname) are supported"))
			} else if ns == sysctl.NetNamespace && spec.HostNetwork {
				errs = append(errs, field.Invalid(sp.Child("sysctls").Index(i).Child("name"), s.Name, "may not be specified when 'hostNetwork' is true"))
			} else if ns == sysctl.IPCNamespace && spec.HostIPC {
				errs = append(errs, field.Invalid(sp.Child("sysctls").Index(i).Child("name"), s.Name, "may not be specified when 'hostIPC' is true"))
			}
		}
	}
	for i := range spec.InitContainers {
		errs = append(errs, checkContainer(&spec.InitContainers[i], p.Child("initContainers").Index(i))...)
	}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		cp := p.Child("containers").Index(i)
		errs = append(errs, checkContainer(c, cp)...)
		if c.RestartPolicy != nil {
			unsupported(cp.Child("restartPolicy"), "a per-container restart policy")
		}
	}
	return errs
}

// checkVolume accepts hostPath, emptyDir (not backed by huge pages),
// configMap, secret and projected (of configMap and secret sources only)
// volumes and names the source of any other.
func checkVolume(v *corev1.Volume, fp *field.Path) field.ErrorList {
	switch {
	case v.HostPath != nil, v.ConfigMap != nil, v.Secret != nil:
		return nil
	case v.Projected != nil:
		var errs field.ErrorList
		for i, s := range v.Projected.Sources {
			if s.ConfigMap == nil && s.Secret == nil {
				errs = append(errs, field.Forbidden(fp.Child("projected", "sources").Index(i),
					"only configMap and secret projections are supported by daemonlet"))
			}
		}
		return errs
	case v.EmptyDir != nil:
		if v.EmptyDir.Medium != corev1.StorageMediumDefault && v.EmptyDir.Medium != corev1.StorageMediumMemory {
			return field.ErrorList{field.NotSupported(fp.Child("emptyDir", "medium"), v.EmptyDir.Medium,
				[]corev1.StorageMedium{corev1.StorageMediumDefault, corev1.StorageMediumMemory})}
		}
		return nil
	}
	// Name the one set source by its JSON field name.
	src := reflect.ValueOf(v.VolumeSource)
	for i := 0; i < src.NumField(); i++ {
		if f := src.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			name, _, _ := strings.Cut(src.Type().Field(i).Tag.Get("json"), ",")
			return field.ErrorList{field.Forbidden(fp.Child(name), name+" volumes are not supported by daemonlet (hostPath, emptyDir, configMap, secret and projected are)")}
		}
	}
	return field.ErrorList{field.Required(fp, "a volume source (hostPath, emptyDir, configMap, secret or projected) is required")}
}

// checkAppArmor accepts the RuntimeDefault and Unconfined profiles.
func checkAppArmor(p *corev1.AppArmorProfile, fp *field.Path) field.ErrorList {
	if p == nil || p.Type == corev1.AppArmorProfileTypeRuntimeDefault || p.Type == corev1.AppArmorProfileTypeUnconfined {
		return nil
	}
	return field.ErrorList{field.NotSupported(fp.Child("type"), p.Type,
		[]corev1.AppArmorProfileType{corev1.AppArmorProfileTypeRuntimeDefault, corev1.AppArmorProfileTypeUnconfined})}
}

// checkContainer reports the unsupported fields of one container.
func checkContainer(c *corev1.Container, fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	unsupported := func(p *field.Path, what string) {
		errs = append(errs, field.Forbidden(p, what+" is not supported by daemonlet"))
	}
	for i, e := range c.EnvFrom {
		if e.ConfigMapRef == nil && e.SecretRef == nil {
			errs = append(errs, field.Required(fp.Child("envFrom").Index(i), "a configMapRef or a secretRef is required"))
		}
	}
	for i, e := range c.Env {
		if e.ValueFrom == nil {
			continue
		}
		vp := fp.Child("env").Index(i).Child("valueFrom")
		switch vf := e.ValueFrom; {
		case vf.ConfigMapKeyRef != nil, vf.SecretKeyRef != nil:
			// Resolved by the agent into plain values before the container
			// is created.
		case vf.FileKeyRef != nil:
			unsupported(vp.Child("fileKeyRef"), "fileKeyRef")
		case vf.FieldRef != nil:
			if !envFieldPathOK(vf.FieldRef.FieldPath) {
				errs = append(errs, field.NotSupported(vp.Child("fieldRef", "fieldPath"), vf.FieldRef.FieldPath, envFieldPaths))
			}
		case vf.ResourceFieldRef != nil:
			if !resourceNameOK(vf.ResourceFieldRef.Resource) {
				errs = append(errs, field.NotSupported(vp.Child("resourceFieldRef", "resource"), vf.ResourceFieldRef.Resource,
					[]string{"limits.cpu", "limits.memory", "limits.ephemeral-storage", "requests.cpu", "requests.memory", "requests.ephemeral-storage"}))
			}
		}
	}
	if l := c.Lifecycle; l != nil {
		errs = append(errs, checkHandler(l.PostStart, fp.Child("lifecycle", "postStart"))...)
		errs = append(errs, checkHandler(l.PreStop, fp.Child("lifecycle", "preStop"))...)
	}
	if len(c.ResizePolicy) > 0 {
		unsupported(fp.Child("resizePolicy"), "in-place resize")
	}
	if len(c.VolumeDevices) > 0 {
		unsupported(fp.Child("volumeDevices"), "raw block volumes")
	}
	if len(c.Resources.Claims) > 0 {
		unsupported(fp.Child("resources", "claims"), "dynamic resource allocation")
	}
	for _, list := range []struct {
		name string
		rl   corev1.ResourceList
	}{{"limits", c.Resources.Limits}, {"requests", c.Resources.Requests}} {
		for name := range list.rl {
			if name != corev1.ResourceCPU && name != corev1.ResourceMemory && name != corev1.ResourceEphemeralStorage {
				errs = append(errs, field.NotSupported(fp.Child("resources", list.name).Key(string(name)), name,
					[]corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage}))
			}
		}
	}
	if c.Stdin || c.StdinOnce {
		unsupported(fp.Child("stdin"), "stdin")
	}
	if c.TTY {
		unsupported(fp.Child("tty"), "a terminal")
	}
	for i, vm := range c.VolumeMounts {
		if vm.RecursiveReadOnly != nil && *vm.RecursiveReadOnly == corev1.RecursiveReadOnlyEnabled {
			unsupported(fp.Child("volumeMounts").Index(i).Child("recursiveReadOnly"), "recursiveReadOnly: Enabled")
		}
	}
	if sc := c.SecurityContext; sc != nil {
		sp := fp.Child("securityContext")
		if sc.SELinuxOptions != nil {
			unsupported(sp.Child("seLinuxOptions"), "SELinux")
		}
		if sc.WindowsOptions != nil {
			unsupported(sp.Child("windowsOptions"), "Windows")
		}
		if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
			errs = append(errs, field.NotSupported(sp.Child("procMount"), *sc.ProcMount, []corev1.ProcMountType{corev1.DefaultProcMount}))
		}
		errs = append(errs, checkAppArmor(sc.AppArmorProfile, sp.Child("appArmorProfile"))...)
	}
	return errs
}

// envFieldPathOK reports whether an env fieldRef path is one kubelet
// resolves for env variables.
func envFieldPathOK(path string) bool {
	if base, _, ok := subscript(path); ok {
		return base == "metadata.labels" || base == "metadata.annotations"
	}
	for _, p := range envFieldPaths {
		if p == path && !strings.Contains(p, "[") {
			return true
		}
	}
	return false
}

// resourceNameOK reports whether a resourceFieldRef names a resource the
// runtime resolves.
func resourceNameOK(r string) bool {
	kind, name, _ := strings.Cut(r, ".")
	if kind != "limits" && kind != "requests" {
		return false
	}
	return name == string(corev1.ResourceCPU) || name == string(corev1.ResourceMemory) || name == string(corev1.ResourceEphemeralStorage)
}

// checkHandler accepts exec and sleep lifecycle handlers.
func checkHandler(h *corev1.LifecycleHandler, fp *field.Path) field.ErrorList {
	switch {
	case h == nil:
		return nil
	case h.HTTPGet != nil:
		return field.ErrorList{field.Forbidden(fp.Child("httpGet"), "httpGet hooks are not supported by daemonlet (exec and sleep are)")}
	case h.TCPSocket != nil:
		return field.ErrorList{field.Forbidden(fp.Child("tcpSocket"), "tcpSocket hooks are not supported by daemonlet (exec and sleep are)")}
	}
	return nil
}
