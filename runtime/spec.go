package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// SpecInput is everything the OCI spec of one container depends on.
type SpecInput struct {
	Pod       *Pod
	Sandbox   *Sandbox
	Container *corev1.Container
	// Init says the container is one of spec.initContainers.
	Init bool
	// Image is the image's config: Entrypoint, Cmd, Env, WorkingDir, User.
	Image ocispec.ImageConfig
	// ID is the containerd container ID; it names the container's cgroup.
	ID string
	// SeccompDir is kubelet's <root-dir>/seccomp, where Localhost seccomp
	// profiles live.
	SeccompDir string
}

// hostInfo is what the spec depends on that SpecOpts reads from the
// machine, gathered once so that tests can pin it.
type hostInfo struct {
	node nodeCapacity
	// cgroup2 is true on a unified (v2) cgroup hierarchy.
	cgroup2 bool
	// swapControl is true when the memory controller can limit swap.
	swapControl bool
	// apparmor is true when the kernel enforces AppArmor profiles.
	apparmor bool
	// hostname is the node's hostname, the HOSTNAME of hostNetwork pods.
	hostname string
	// minOOMScoreAdj is the lowest oom_score_adj the kernel lets us set.
	minOOMScoreAdj int
}

// SpecOpts returns the containerd spec options that turn containerd's
// default Linux spec into the container's spec, as kubelet with
// containerd's CRI plugin would build it. The caller passes them to
// client.WithNewSpec after client.WithNewSnapshot (user and group names are
// resolved in the container's rootfs). Host-side effects the spec needs
// happen here: hostPath DirectoryOrCreate/FileOrCreate and subPath
// directories are created. Errors name the offending field.
func SpecOpts(in SpecInput) ([]oci.SpecOpts, error) {
	if in.Pod == nil || in.Pod.Spec == nil || in.Sandbox == nil || in.Container == nil {
		return nil, fmt.Errorf("spec input needs a pod with a spec, a sandbox and a container: %w", errdefs.ErrInvalidArgument)
	}
	node, err := hostCapacity(in.Sandbox.Dir)
	if err != nil {
		return nil, fmt.Errorf("node capacity: %w", err)
	}
	host := hostInfo{
		node:        node,
		cgroup2:     cgroup2(),
		swapControl: swapControllerAvailable(),
		apparmor:    apparmorEnabled(),
	}
	if host.hostname, err = os.Hostname(); err != nil {
		return nil, fmt.Errorf("hostname: %w", err)
	}
	if host.minOOMScoreAdj, err = minOOMScoreAdj(); err != nil {
		return nil, fmt.Errorf("oom_score_adj: %w", err)
	}
	return buildSpecOpts(in, host)
}

// buildSpecOpts is SpecOpts with the host's facts given. The options are
// ordered as containerd's CRI plugin orders them, which matters: later
// options override earlier ones (privileged clears masked paths and adds
// every capability; user options reset the additional GIDs).
func buildSpecOpts(in SpecInput, host hostInfo) ([]oci.SpecOpts, error) {
	c := in.Container
	privileged := isPrivileged(c)

	env, err := resolveEnv(in, host.node)
	if err != nil {
		return nil, err
	}
	args, err := processArgs(c, in.Image, env)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", containerFieldPath(in).Child("command"), err)
	}

	opts := []oci.SpecOpts{
		oci.WithoutRunMount,
		withoutDefaultSecurity,
		oci.WithProcessArgs(args...),
		oci.WithDefaultPathEnv,
		// No-new-privileges is decided by the security context below.
		oci.WithNewPrivileges,
	}
	switch {
	case c.WorkingDir != "":
		opts = append(opts, oci.WithProcessCwd(c.WorkingDir))
	case in.Image.WorkingDir != "":
		opts = append(opts, oci.WithProcessCwd(in.Image.WorkingDir))
	}

	hostname := podHostname(in.Pod)
	if in.Pod.Spec.HostNetwork {
		hostname = host.hostname
	}
	// A variable defined twice keeps its first place and its last value:
	// containerd appends duplicates rather than replacing them.
	environ := append([]string(nil), in.Image.Env...)
	seen := map[string]int{}
	for _, e := range env {
		if i, ok := seen[e.name]; ok {
			environ[i] = e.name + "=" + e.value
			continue
		}
		seen[e.name] = len(environ)
		environ = append(environ, e.name+"="+e.value)
	}
	opts = append(opts, oci.WithEnv([]string{"HOSTNAME=" + hostname}), oci.WithEnv(environ))

	userOpts, err := userOpts(in)
	if err != nil {
		return nil, err
	}
	opts = append(opts, userOpts...)

	// A cgroup namespace hides the host's hierarchy; containerd's CRI only
	// uses one on cgroup v2 and never for privileged containers.
	if host.cgroup2 && !privileged {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.CgroupNamespace}))
	}

	mounts, err := containerMounts(in, env)
	if err != nil {
		return nil, err
	}
	opts = append(opts, withContainerMounts(mounts))

	secOpts, err := securityOpts(in, host)
	if err != nil {
		return nil, err
	}
	opts = append(opts, secOpts...)

	opts = append(opts, resourceOpts(in, host)...)

	opts = append(opts, namespaceOpts(in.Sandbox, in.Pod.Spec)...)
	if in.Sandbox.UTSNSPath != "" {
		opts = append(opts, oci.WithHostname(podHostname(in.Pod)))
	}
	sysctls, err := podSysctls(in.Pod.Spec, in.Sandbox)
	if err != nil {
		return nil, err
	}
	if len(sysctls) > 0 {
		opts = append(opts, withSysctls(sysctls))
	}
	return opts, nil
}

// withoutDefaultSecurity drops the default spec's seccomp and AppArmor
// profiles and its RLIMIT_NOFILE of 1024, as containerd's CRI plugin does:
// Kubernetes containers inherit the runtime's limits and get only the
// profiles their security context asks for.
func withoutDefaultSecurity(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	if s.Process != nil {
		s.Process.ApparmorProfile = ""
		s.Process.Rlimits = nil
	}
	if s.Linux != nil {
		s.Linux.Seccomp = nil
	}
	return nil
}

// podHostname is the hostname kubelet gives a pod: spec.hostname or the
// pod's name, cut to 63 characters without a trailing '-' or '.'.
func podHostname(pod *Pod) string {
	h := pod.Name
	if pod.Spec.Hostname != "" {
		h = pod.Spec.Hostname
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// containerFieldPath is the field path of the input's container in the pod
// spec, so that errors name it as the API server would.
func containerFieldPath(in SpecInput) *field.Path {
	list, kind := in.Pod.Spec.Containers, "containers"
	if in.Init {
		list, kind = in.Pod.Spec.InitContainers, "initContainers"
	}
	for i := range list {
		if list[i].Name == in.Container.Name {
			return field.NewPath("spec", kind).Index(i)
		}
	}
	return field.NewPath("spec", kind).Key(in.Container.Name)
}

// ContainerSpecHash is a stable hash of the container spec, stored as a
// container label so that a changed spec is detected (kubelet's
// io.kubernetes.container.hash). It covers every field: JSON encoding sorts
// map keys and omits unset fields, so the hash only changes when the spec
// does.
func ContainerSpecHash(c *corev1.Container) string {
	// A corev1.Container has no field that fails to encode.
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// CreatedSpecHash is the spec hash label of container c created for pod: the
// hash of the pod spec's container of that name, not of c, because the agent
// passes c with its ConfigMap and Secret references resolved into values, and
// a changed ConfigMap must not look like a changed spec (kubelet restarts no
// container for it). A c the spec does not hold is hashed itself.
func CreatedSpecHash(pod *Pod, c *corev1.Container) string {
	if pod != nil && pod.Spec != nil {
		if sc := findContainer(pod.Spec, c.Name); sc != nil {
			return ContainerSpecHash(sc)
		}
	}
	return ContainerSpecHash(c)
}
