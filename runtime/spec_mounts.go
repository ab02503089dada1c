package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Paths inside the container that the pod's sandbox provides.
const (
	etcHosts      = "/etc/hosts"
	etcHostname   = "/etc/hostname"
	etcResolvConf = "/etc/resolv.conf"
	devShm        = "/dev/shm"
)

// bindMount is one host path bound into the container.
type bindMount struct {
	src, dst    string
	readOnly    bool
	propagation corev1.MountPropagationMode
}

// containerMounts resolves the container's volume mounts to host paths,
// checking hostPath types, creating what kubelet creates, and adds the
// sandbox's /etc/hosts, /etc/hostname, /etc/resolv.conf (and the host's
// /dev/shm with hostIPC) unless the container mounts something there.
func containerMounts(in SpecInput, env []envVar) ([]bindMount, error) {
	c, spec := in.Container, in.Pod.Spec
	base := containerFieldPath(in)
	volumes := make(map[string]int, len(spec.Volumes))
	for i, v := range spec.Volumes {
		volumes[v.Name] = i
	}
	var mounts []bindMount
	taken := map[string]bool{}
	for j, vm := range c.VolumeMounts {
		fp := base.Child("volumeMounts").Index(j)
		i, ok := volumes[vm.Name]
		if !ok {
			return nil, fmt.Errorf("%s: no volume %q in spec.volumes: %w", fp.Child("name"), vm.Name, errdefs.ErrInvalidArgument)
		}
		src, err := volumeSource(in.Sandbox, &spec.Volumes[i], field.NewPath("spec", "volumes").Index(i))
		if err != nil {
			return nil, err
		}
		if src, err = subPathSource(src, vm, env, fp); err != nil {
			return nil, err
		}
		mode := corev1.MountPropagationNone
		if vm.MountPropagation != nil {
			mode = *vm.MountPropagation
		}
		if err := checkPropagation(src, mode, isPrivileged(c), fp.Child("mountPropagation")); err != nil {
			return nil, err
		}
		// ConfigMap and Secret data is read-only to containers whatever the
		// mount says, as kubelet mounts these volumes.
		ro := vm.ReadOnly || projectsObjects(&spec.Volumes[i].VolumeSource)
		mounts = append(mounts, bindMount{src: src, dst: vm.MountPath, readOnly: ro, propagation: mode})
		taken[filepath.Clean(vm.MountPath)] = true
	}

	// kubelet mounts its hosts file read-write even on a read-only rootfs;
	// containerd's CRI mounts hostname and resolv.conf read-only when the
	// rootfs is. Missing files are skipped, as CRI does.
	roRoot := c.SecurityContext != nil && c.SecurityContext.ReadOnlyRootFilesystem != nil && *c.SecurityContext.ReadOnlyRootFilesystem
	for _, f := range []struct {
		src, dst string
		ro       bool
	}{
		{in.Sandbox.HostsPath(), etcHosts, false},
		{in.Sandbox.HostnamePath(), etcHostname, roRoot},
		{in.Sandbox.ResolvConfPath(), etcResolvConf, roRoot},
	} {
		if taken[f.dst] {
			continue
		}
		if _, err := os.Stat(f.src); err != nil {
			continue
		}
		mounts = append(mounts, bindMount{src: f.src, dst: f.dst, readOnly: f.ro, propagation: corev1.MountPropagationNone})
	}
	if spec.HostIPC && !taken[devShm] {
		mounts = append(mounts, bindMount{src: devShm, dst: devShm, propagation: corev1.MountPropagationNone})
	}
	return mounts, nil
}

// volumeSource returns the host directory or file of a pod volume, after
// kubelet's hostPath type checks.
func volumeSource(sb *Sandbox, v *corev1.Volume, fp *field.Path) (string, error) {
	switch {
	case v.HostPath != nil:
		t := corev1.HostPathUnset
		if v.HostPath.Type != nil {
			t = *v.HostPath.Type
		}
		if err := checkHostPath(v.HostPath.Path, t); err != nil {
			return "", fmt.Errorf("%s: %w", fp.Child("hostPath", "type"), err)
		}
		src, err := filepath.EvalSymlinks(v.HostPath.Path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", fp.Child("hostPath", "path"), err)
		}
		return src, nil
	case v.EmptyDir != nil:
		dir := sb.EmptyDirPath(v.Name)
		if _, err := os.Stat(dir); err != nil {
			return "", fmt.Errorf("%s: emptyDir %s not prepared by the sandbox: %w", fp.Child("emptyDir"), dir, errdefs.ErrFailedPrecondition)
		}
		return dir, nil
	case projectsObjects(&v.VolumeSource):
		dir := sb.VolumePath(v.Name)
		if _, err := os.Stat(dir); err != nil {
			return "", fmt.Errorf("%s: volume %s not prepared by the sandbox: %w", fp, dir, errdefs.ErrFailedPrecondition)
		}
		return dir, nil
	}
	return "", fmt.Errorf("%s: volume type not supported: %w", fp, errdefs.ErrNotImplemented)
}

// checkHostPath applies a hostPath volume's type as kubelet's hostPath
// plugin does, creating the directory or file for the *OrCreate types. With
// no type, a missing path becomes a directory, as the container runtime
// creates missing bind sources.
func checkHostPath(path string, t corev1.HostPathType) error {
	fi, err := os.Stat(path)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("hostPath %s: %w", path, err)
	}
	fail := func(what string) error {
		return fmt.Errorf("hostPath type check failed: %s is not a %s: %w", path, what, errdefs.ErrFailedPrecondition)
	}
	switch t {
	case corev1.HostPathUnset:
		if !exists {
			return os.MkdirAll(path, 0o755)
		}
	case corev1.HostPathDirectoryOrCreate, corev1.HostPathDirectory:
		if !exists && t == corev1.HostPathDirectoryOrCreate {
			return os.MkdirAll(path, 0o755)
		}
		if !exists || !fi.IsDir() {
			return fail("directory")
		}
	case corev1.HostPathFileOrCreate, corev1.HostPathFile:
		if !exists && t == corev1.HostPathFileOrCreate {
			// Like kubelet, the parent directory is not created.
			f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return fmt.Errorf("hostPath %s: %w", path, err)
			}
			return f.Close()
		}
		if !exists || !fi.Mode().IsRegular() {
			return fail("file")
		}
	case corev1.HostPathSocket:
		if !exists || fi.Mode().Type() != fs.ModeSocket {
			return fail("socket file")
		}
	case corev1.HostPathCharDev:
		if !exists || fi.Mode().Type() != fs.ModeDevice|fs.ModeCharDevice {
			return fail("character device")
		}
	case corev1.HostPathBlockDev:
		if !exists || fi.Mode().Type() != fs.ModeDevice {
			return fail("block device")
		}
	default:
		return fmt.Errorf("%q is an invalid hostPath type: %w", t, errdefs.ErrInvalidArgument)
	}
	return nil
}

// subPathSource returns the host path of a mount's subPath (or expanded
// subPathExpr) inside the volume at src, creating missing directories with
// the volume's mode as kubelet does, and refusing any path that leaves the
// volume, through ".." or through a symlink.
func subPathSource(src string, vm corev1.VolumeMount, env []envVar, fp *field.Path) (string, error) {
	sub, subField := vm.SubPath, fp.Child("subPath")
	if vm.SubPathExpr != "" {
		subField = fp.Child("subPathExpr")
		lookup := envLookup(env)
		var missing []string
		sub = expandVars(vm.SubPathExpr, func(name string) (string, bool) {
			v, ok := lookup(name)
			if !ok || v == "" {
				missing = append(missing, name)
			}
			return v, true
		})
		if len(missing) > 0 {
			return "", fmt.Errorf("%s: missing value for %s: %w", subField, strings.Join(missing, ", "), errdefs.ErrInvalidArgument)
		}
	}
	if sub == "" {
		return src, nil
	}
	if filepath.IsAbs(sub) {
		return "", fmt.Errorf("%s: %q must be a relative path: %w", subField, sub, errdefs.ErrInvalidArgument)
	}
	for _, part := range strings.Split(sub, "/") {
		if part == ".." {
			return "", fmt.Errorf("%s: %q must not contain '..': %w", subField, sub, errdefs.ErrInvalidArgument)
		}
	}
	root, err := filepath.EvalSymlinks(src)
	if err != nil {
		return "", fmt.Errorf("%s: %w", subField, err)
	}
	rootInfo, err := os.Stat(root)
	if err != nil {
		return "", fmt.Errorf("%s: %w", subField, err)
	}
	escape := func(p string) error {
		return fmt.Errorf("%s: subpath %q resolves to %s, outside the volume %s: %w", subField, sub, p, root, errdefs.ErrInvalidArgument)
	}
	cur := root
	for _, part := range strings.Split(sub, "/") {
		if part == "" || part == "." {
			continue
		}
		next := filepath.Join(cur, part)
		fi, err := os.Lstat(next)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(next, rootInfo.Mode().Perm()); err != nil {
				return "", fmt.Errorf("%s: %w", subField, err)
			}
			// Mkdir's mode is cut by the umask; kubelet's is not.
			if err := os.Chmod(next, rootInfo.Mode().Perm()); err != nil {
				return "", fmt.Errorf("%s: %w", subField, err)
			}
		case err != nil:
			return "", fmt.Errorf("%s: %w", subField, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			if next, err = filepath.EvalSymlinks(next); err != nil {
				return "", fmt.Errorf("%s: %w", subField, err)
			}
			if !within(root, next) {
				return "", escape(next)
			}
		}
		cur = next
	}
	return cur, nil
}

// within reports whether p is root or lies below it.
func within(root, p string) bool {
	return root == "/" || p == root || strings.HasPrefix(p, root+"/")
}

// checkPropagation enforces what Kubernetes and containerd require of a
// propagated mount: Bidirectional only for privileged containers and from a
// shared mount; HostToContainer from a shared or slave mount.
func checkPropagation(src string, mode corev1.MountPropagationMode, privileged bool, fp *field.Path) error {
	var want []string
	switch mode {
	case corev1.MountPropagationNone:
		return nil
	case corev1.MountPropagationBidirectional:
		if !privileged {
			return fmt.Errorf("%s: Bidirectional mount propagation is available only to privileged containers: %w", fp, errdefs.ErrInvalidArgument)
		}
		want = []string{"shared:"}
	case corev1.MountPropagationHostToContainer:
		want = []string{"shared:", "master:"}
	default:
		return fmt.Errorf("%s: unsupported mount propagation %q: %w", fp, mode, errdefs.ErrInvalidArgument)
	}
	m, err := mountOf(src)
	if err != nil {
		return fmt.Errorf("%s: %w", fp, err)
	}
	for _, opt := range strings.Fields(m.Optional) {
		for _, w := range want {
			if strings.HasPrefix(opt, w) {
				return nil
			}
		}
	}
	what := "a shared mount"
	if mode == corev1.MountPropagationHostToContainer {
		what = "a shared or slave mount"
	}
	return fmt.Errorf("%s: path %q is mounted on %q but it is not %s: %w", fp, src, m.Mountpoint, what, errdefs.ErrFailedPrecondition)
}

// mountOf returns the mount that holds path, from /proc/self/mountinfo.
func mountOf(path string) (*mountinfo.Info, error) {
	ms, err := mountinfo.GetMounts(mountinfo.ParentsFilter(path))
	if err != nil {
		return nil, err
	}
	var best *mountinfo.Info
	for _, m := range ms {
		if best == nil || len(m.Mountpoint) >= len(best.Mountpoint) {
			best = m
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no mount holds %s: %w", path, errdefs.ErrNotFound)
	}
	return best, nil
}

// withContainerMounts replaces the default spec's mounts that the container
// mounts over, adds containerd's read-only /sys/fs/cgroup, then adds the
// bind mounts, shallowest destination first so that a parent never hides a
// child.
func withContainerMounts(mounts []bindMount) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		dsts := map[string]bool{}
		for _, m := range mounts {
			dsts[filepath.Clean(m.dst)] = true
		}
		defaults := append(s.Mounts, specs.Mount{
			Destination: "/sys/fs/cgroup",
			Type:        "cgroup",
			Source:      "cgroup",
			Options:     []string{"nosuid", "noexec", "nodev", "relatime", "ro"},
		})
		s.Mounts = nil
		for _, m := range defaults {
			dst := filepath.Clean(m.Destination)
			if dsts[dst] || (dsts["/dev"] && strings.HasPrefix(dst, "/dev/")) {
				continue
			}
			s.Mounts = append(s.Mounts, m)
		}
		sorted := append([]bindMount(nil), mounts...)
		sort.SliceStable(sorted, func(i, j int) bool { return depth(sorted[i].dst) < depth(sorted[j].dst) })
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		for _, m := range sorted {
			opts := []string{"rbind"}
			switch m.propagation {
			case corev1.MountPropagationBidirectional:
				opts = append(opts, "rshared")
				s.Linux.RootfsPropagation = "rshared"
			case corev1.MountPropagationHostToContainer:
				opts = append(opts, "rslave")
				if s.Linux.RootfsPropagation != "rshared" {
					s.Linux.RootfsPropagation = "rslave"
				}
			default:
				opts = append(opts, "rprivate")
			}
			if m.readOnly {
				opts = append(opts, "ro")
			} else {
				opts = append(opts, "rw")
			}
			s.Mounts = append(s.Mounts, specs.Mount{Source: m.src, Destination: m.dst, Type: "bind", Options: opts})
		}
		return nil
	}
}

// depth is the number of separators in a cleaned container path.
func depth(p string) int { return strings.Count(filepath.Clean(p), "/") }
