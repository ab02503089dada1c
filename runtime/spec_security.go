package runtime

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/contrib/apparmor"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	pkgapparmor "github.com/containerd/containerd/v2/pkg/apparmor"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/component-helpers/node/util/sysctl"
)

// appArmorDefaultProfile is the name under which containerd's default
// AppArmor profile is loaded for RuntimeDefault containers.
const appArmorDefaultProfile = "daemonlet-default"

// kubeletMaskedPaths and kubeletReadonlyPaths are what kubelet asks the
// runtime to mask and make read-only in /proc and /sys for the Default
// procMount; they replace containerd's own defaults.
var (
	kubeletMaskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
	kubeletReadonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// isPrivileged reports whether the container asks to be privileged.
func isPrivileged(c *corev1.Container) bool {
	return c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
}

// effectiveSecurity is a container's security context with the pod's
// values filled in where the container leaves them unset, as kubelet's
// DetermineEffectiveSecurityContext merges them.
type effectiveSecurity struct {
	runAsUser, runAsGroup *int64
	runAsNonRoot          *bool
	seccomp               *corev1.SeccompProfile
	seccompField          *field.Path
	appArmor              *corev1.AppArmorProfile
}

// effectiveSecurityOf merges the pod's and the container's security
// contexts of the input.
func effectiveSecurityOf(in SpecInput) effectiveSecurity {
	var e effectiveSecurity
	if psc := in.Pod.Spec.SecurityContext; psc != nil {
		e.runAsUser, e.runAsGroup, e.runAsNonRoot = psc.RunAsUser, psc.RunAsGroup, psc.RunAsNonRoot
		e.seccomp, e.appArmor = psc.SeccompProfile, psc.AppArmorProfile
		e.seccompField = field.NewPath("spec", "securityContext", "seccompProfile")
	}
	if sc := in.Container.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			e.runAsUser = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			e.runAsGroup = sc.RunAsGroup
		}
		if sc.RunAsNonRoot != nil {
			e.runAsNonRoot = sc.RunAsNonRoot
		}
		if sc.SeccompProfile != nil {
			e.seccomp = sc.SeccompProfile
			e.seccompField = containerFieldPath(in).Child("securityContext", "seccompProfile")
		}
		if sc.AppArmorProfile != nil {
			e.appArmor = sc.AppArmorProfile
		}
	}
	return e
}

// processUser works out the user string handed to oci.WithUser and the
// user whose /etc/group memberships become additional GIDs, as kubelet and
// containerd's CRI do together. Without runAsUser the image's user (its
// part before ':') is used, and its group is dropped: kubelet only passes
// the image's uid or name on. runAsNonRoot is enforced with kubelet's
// messages.
func processUser(in SpecInput) (user, groupsOf string, err error) {
	e := effectiveSecurityOf(in)
	imgUser, _, _ := strings.Cut(in.Image.User, ":")
	var imgUID *int64
	imgName := ""
	switch uid, perr := strconv.ParseInt(imgUser, 10, 64); {
	case imgUser == "":
		imgUID = new(int64) // an image without a user runs as root
	case perr == nil:
		imgUID = &uid
	default:
		imgName = imgUser
	}
	if e.runAsNonRoot != nil && *e.runAsNonRoot {
		pod := fmt.Sprintf("%s_%s(%s)", in.Pod.Name, in.Pod.Namespace, in.Pod.UID)
		switch {
		case e.runAsUser != nil && *e.runAsUser == 0:
			return "", "", fmt.Errorf("container's runAsUser breaks non-root policy (pod: %q, container: %s): %w", pod, in.Container.Name, errdefs.ErrFailedPrecondition)
		case e.runAsUser != nil:
		case imgUID == nil:
			return "", "", fmt.Errorf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root (pod: %q, container: %s): %w", imgName, pod, in.Container.Name, errdefs.ErrFailedPrecondition)
		case *imgUID == 0:
			return "", "", fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %q, container: %s): %w", pod, in.Container.Name, errdefs.ErrFailedPrecondition)
		default:
			if errs := validation.IsValidUserID(*imgUID); len(errs) > 0 {
				return "", "", fmt.Errorf("container has runAsNonRoot and image has an invalid user id (%d). (Must be 1-(%d)): %s (pod: %q, container: %s): %w",
					*imgUID, math.MaxInt32, strings.Join(errs, "; "), pod, in.Container.Name, errdefs.ErrFailedPrecondition)
			}
		}
	}
	switch {
	case e.runAsUser != nil:
		user = strconv.FormatInt(*e.runAsUser, 10)
	case imgUID != nil:
		user = strconv.FormatInt(*imgUID, 10)
	default:
		user = imgName
	}
	groupsOf = user
	if e.runAsGroup != nil {
		user += ":" + strconv.FormatInt(*e.runAsGroup, 10)
	}
	return user, groupsOf, nil
}

// supplementalGroups are the pod's fsGroup and supplementalGroups, which
// every container of the pod gets as additional GIDs.
func supplementalGroups(spec *corev1.PodSpec) []uint32 {
	psc := spec.SecurityContext
	if psc == nil {
		return nil
	}
	var gids []uint32
	if psc.FSGroup != nil {
		gids = append(gids, uint32(*psc.FSGroup))
	}
	for _, g := range psc.SupplementalGroups {
		gids = append(gids, uint32(g))
	}
	return gids
}

// userOpts sets the process user, then its groups: the memberships of the
// user in the image's /etc/group (unless supplementalGroupsPolicy is
// Strict), merged with the pod's supplemental groups.
func userOpts(in SpecInput) ([]oci.SpecOpts, error) {
	user, groupsOf, err := processUser(in)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", containerFieldPath(in).Child("securityContext"), err)
	}
	opts := []oci.SpecOpts{oci.WithUser(user)}
	psc := in.Pod.Spec.SecurityContext
	if psc == nil || psc.SupplementalGroupsPolicy == nil || *psc.SupplementalGroupsPolicy == corev1.SupplementalGroupsPolicyMerge {
		opts = append(opts, oci.WithAdditionalGIDs(groupsOf))
	}
	return append(opts, withMergedGIDs(supplementalGroups(in.Pod.Spec))), nil
}

// withMergedGIDs adds gids to the process's additional GIDs, sorted and
// without duplicates, as containerd's CRI merges them.
func withMergedGIDs(gids []uint32) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		all := append(slices.Clone(s.Process.User.AdditionalGids), gids...)
		slices.Sort(all)
		s.Process.User.AdditionalGids = slices.Compact(all)
		return nil
	}
}

// capName turns a Kubernetes capability name (NET_ADMIN, or CAP_NET_ADMIN)
// into the OCI one.
func capName(c corev1.Capability) string {
	n := strings.ToUpper(string(c))
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	return n
}

// isAll reports whether a capability entry means every capability.
func isAll(c corev1.Capability) bool { return strings.EqualFold(string(c), "ALL") }

// capabilityOpts applies add and drop on top of containerd's default set:
// ALL first (add ALL grants every known capability, drop ALL clears the
// set), then the single names, so that drop ALL with add NET_ADMIN leaves
// only NET_ADMIN.
func capabilityOpts(caps *corev1.Capabilities) []oci.SpecOpts {
	if caps == nil {
		return nil
	}
	var opts []oci.SpecOpts
	if slices.ContainsFunc(caps.Add, isAll) {
		opts = append(opts, oci.WithAllKnownCapabilities)
	}
	if slices.ContainsFunc(caps.Drop, isAll) {
		opts = append(opts, oci.WithCapabilities(nil))
	}
	var add, drop []string
	for _, c := range caps.Add {
		if !isAll(c) {
			add = append(add, capName(c))
		}
	}
	for _, c := range caps.Drop {
		if !isAll(c) {
			drop = append(drop, capName(c))
		}
	}
	return append(opts, oci.WithAddedCapabilities(add), oci.WithDroppedCapabilities(drop))
}

// securityOpts translates the security context: masked paths,
// capabilities, privileged, no-new-privileges, read-only rootfs, AppArmor
// and seccomp, in containerd's CRI order.
func securityOpts(in SpecInput, host hostInfo) ([]oci.SpecOpts, error) {
	c := in.Container
	sc := c.SecurityContext
	privileged := isPrivileged(c)
	opts := []oci.SpecOpts{
		oci.WithMaskedPaths(slices.Clone(kubeletMaskedPaths)),
		oci.WithReadonlyPaths(slices.Clone(kubeletReadonlyPaths)),
	}
	if sc != nil {
		opts = append(opts, capabilityOpts(sc.Capabilities)...)
	}
	if privileged {
		// Every capability, all host devices, writable sysfs and cgroupfs,
		// nothing masked.
		opts = append(opts, oci.WithPrivileged, oci.WithHostDevices, oci.WithAllDevicesAllowed)
	}
	// Ambient capabilities for non-root users are undefined in Kubernetes;
	// containerd clears them (kubernetes/kubernetes#56374).
	opts = append(opts, withoutAmbientCaps)
	if sc != nil && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		opts = append(opts, oci.WithNoNewPrivileges)
	}
	if sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		opts = append(opts, oci.WithRootFSReadonly())
	}

	e := effectiveSecurityOf(in)
	aa, err := appArmorOpt(e.appArmor, privileged, host.apparmor)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", containerFieldPath(in).Child("securityContext", "appArmorProfile"), err)
	}
	if aa != nil {
		opts = append(opts, aa)
	}
	sec, err := seccompOpt(e.seccomp, e.seccompField, privileged, in.SeccompDir)
	if err != nil {
		return nil, err
	}
	if sec != nil {
		opts = append(opts, sec)
	}
	return opts, nil
}

// withoutAmbientCaps clears the ambient capability set.
func withoutAmbientCaps(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	if s.Process != nil && s.Process.Capabilities != nil {
		s.Process.Capabilities.Ambient = nil
	}
	return nil
}

// seccompOpt picks the seccomp filter: none for privileged containers and
// for Unconfined or an unset profile (kubelet's default while its
// seccompDefault setting is off), containerd's default filter for
// RuntimeDefault, or a JSON profile under seccompDir for Localhost.
func seccompOpt(p *corev1.SeccompProfile, fp *field.Path, privileged bool, seccompDir string) (oci.SpecOpts, error) {
	if privileged || p == nil {
		return nil, nil
	}
	switch p.Type {
	case corev1.SeccompProfileTypeUnconfined:
		return nil, nil
	case corev1.SeccompProfileTypeRuntimeDefault:
		return seccomp.WithDefaultProfile(), nil
	case corev1.SeccompProfileTypeLocalhost:
		fp = fp.Child("localhostProfile")
		if p.LocalhostProfile == nil || *p.LocalhostProfile == "" {
			return nil, fmt.Errorf("%s: required for a Localhost profile: %w", fp, errdefs.ErrInvalidArgument)
		}
		rel := *p.LocalhostProfile
		if filepath.IsAbs(rel) || slices.Contains(strings.Split(rel, "/"), "..") {
			return nil, fmt.Errorf("%s: %q must be a relative path without '..': %w", fp, rel, errdefs.ErrInvalidArgument)
		}
		path := filepath.Join(seccompDir, rel)
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%s: seccomp profile %s: %w", fp, path, errdefs.ErrFailedPrecondition)
		}
		return seccomp.WithProfile(path), nil
	}
	return nil, fmt.Errorf("%s: unknown seccomp profile type %q: %w", fp.Child("type"), p.Type, errdefs.ErrInvalidArgument)
}

// appArmorOpt picks the AppArmor profile as containerd's CRI does: on a
// host without AppArmor only Unconfined (or nothing) is accepted; with
// AppArmor, an unset profile means RuntimeDefault, which privileged
// containers skip.
func appArmorOpt(p *corev1.AppArmorProfile, privileged, enabled bool) (oci.SpecOpts, error) {
	t := corev1.AppArmorProfileTypeRuntimeDefault
	if p != nil {
		t = p.Type
	}
	if !enabled {
		if p != nil && t != corev1.AppArmorProfileTypeUnconfined {
			return nil, fmt.Errorf("AppArmor profile %s requested but AppArmor is not enabled on this host: %w", t, errdefs.ErrFailedPrecondition)
		}
		return nil, nil
	}
	switch t {
	case corev1.AppArmorProfileTypeUnconfined:
		return nil, nil
	case corev1.AppArmorProfileTypeRuntimeDefault:
		if privileged {
			return nil, nil
		}
		return apparmor.WithDefaultProfile(appArmorDefaultProfile), nil
	}
	return nil, fmt.Errorf("AppArmor profile type %s is not supported: %w", t, errdefs.ErrNotImplemented)
}

// apparmorEnabled reports whether the host enforces AppArmor.
func apparmorEnabled() bool { return pkgapparmor.HostSupports() }

// namespaceOpts joins the sandbox's network, IPC and UTS namespaces by
// path, or the host's when the sandbox has none (hostNetwork, hostIPC), and
// gives the container the host's PID namespace with hostPID, else its own.
func namespaceOpts(sb *Sandbox, spec *corev1.PodSpec) []oci.SpecOpts {
	var opts []oci.SpecOpts
	for _, ns := range []struct {
		t    specs.LinuxNamespaceType
		path string
	}{
		{specs.NetworkNamespace, sb.NetNSPath},
		{specs.IPCNamespace, sb.IPCNSPath},
		{specs.UTSNamespace, sb.UTSNSPath},
	} {
		if ns.path == "" {
			opts = append(opts, oci.WithHostNamespace(ns.t))
		} else {
			opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: ns.t, Path: ns.path}))
		}
	}
	if spec.HostPID {
		opts = append(opts, oci.WithHostNamespace(specs.PIDNamespace))
	}
	return opts
}

// podSysctls returns the pod's sysctls by their dotted names. Only
// namespaced sysctls are allowed, and only when the pod has its own
// namespace of that kind: net.* needs a pod network namespace, the IPC ones
// a pod IPC namespace.
func podSysctls(spec *corev1.PodSpec, sb *Sandbox) (map[string]string, error) {
	if spec.SecurityContext == nil || len(spec.SecurityContext.Sysctls) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(spec.SecurityContext.Sysctls))
	for i, s := range spec.SecurityContext.Sysctls {
		fp := field.NewPath("spec", "securityContext", "sysctls").Index(i).Child("name")
		ns, name, prefixed := sysctl.GetNamespace(s.Name)
		if prefixed {
			return nil, fmt.Errorf("%s: %q: a sysctl name, not a pattern, is required: %w", fp, s.Name, errdefs.ErrInvalidArgument)
		}
		var own string
		switch ns {
		case sysctl.NetNamespace:
			own = sb.NetNSPath
		case sysctl.IPCNamespace:
			own = sb.IPCNSPath
		case sysctl.UTSNamespace:
			own = sb.UTSNSPath
		default:
			return nil, fmt.Errorf("%s: %q is not a namespaced sysctl: %w", fp, s.Name, errdefs.ErrInvalidArgument)
		}
		if own == "" {
			return nil, fmt.Errorf("%s: %q would change the host's %s namespace: %w", fp, s.Name, ns, errdefs.ErrInvalidArgument)
		}
		out[name] = s.Value
	}
	return out, nil
}

// withSysctls sets kernel parameters in the container's namespaces.
func withSysctls(m map[string]string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Sysctl == nil {
			s.Linux.Sysctl = map[string]string{}
		}
		for k, v := range m {
			s.Linux.Sysctl[k] = v
		}
		return nil
	}
}
