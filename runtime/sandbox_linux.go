package runtime

import (
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"slices"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// nsKind is one kind of namespace a sandbox can own.
type nsKind struct {
	name string // the file name under /proc/<pid>/task/<tid>/ns
	flag int    // the unshare(2) flag
}

// The namespaces a pod sandbox owns (PID and mount namespaces are per
// container, made by runc).
var (
	nsNet = nsKind{name: "net", flag: unix.CLONE_NEWNET}
	nsIPC = nsKind{name: "ipc", flag: unix.CLONE_NEWIPC}
	nsUTS = nsKind{name: "uts", flag: unix.CLONE_NEWUTS}
)

// makeNamespace creates a namespace of the kind and pins it by bind-mounting
// it onto target (created as an empty file). For UTS, hostname is set inside
// first; for network, the loopback interface is brought up, as every pod
// expects a working lo and no CNI plugin call is needed for it.
//
// The work runs in a goroutine locked to its OS thread that never unlocks:
// the thread has left the process's namespaces, and a goroutine that exits
// while locked makes the Go runtime terminate the thread instead of reusing
// it for other goroutines.
func makeNamespace(kind nsKind, target, hostname string) error {
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("create %s namespace file: %w", kind.name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		errc <- enterNewNamespace(kind, target, hostname)
	}()
	return <-errc
}

// enterNewNamespace runs on a locked thread that is thrown away afterwards.
func enterNewNamespace(kind nsKind, target, hostname string) error {
	if err := unix.Unshare(kind.flag); err != nil {
		return fmt.Errorf("unshare %s namespace: %w", kind.name, err)
	}
	switch kind {
	case nsUTS:
		if err := unix.Sethostname([]byte(hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", hostname, err)
		}
	case nsNet:
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	src := fmt.Sprintf("/proc/self/task/%d/ns/%s", unix.Gettid(), kind.name)
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount %s namespace onto %s: %w", kind.name, target, err)
	}
	return nil
}

// loopbackUp sets the IFF_UP flag of lo in the calling thread's network
// namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: read flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// isNamespaceFile tells whether path is a mounted namespace (an nsfs file),
// that is, whether the namespace it pinned is still alive. After a reboot
// the file is still there but empty.
func isNamespaceFile(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// mountTmpfs mounts a tmpfs on dir. size is the mount's size option in
// bytes ("" for the kernel's default of half the RAM).
func mountTmpfs(dir, size string) error {
	data := ""
	if size != "" {
		data = "size=" + size
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

// unmountAllUnder unmounts every mount at or below dir (namespace files,
// tmpfs emptyDirs), deepest first, so that deleting dir afterwards deletes
// only the pod's own files. It fails if any mount remains.
func unmountAllUnder(dir string) error {
	for range 8 { // a path may carry stacked mounts; each pass peels one
		mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
		if err != nil {
			return fmt.Errorf("read mounts under %s: %w", dir, err)
		}
		if len(mounts) == 0 {
			return nil
		}
		points := make([]string, 0, len(mounts))
		for _, m := range mounts {
			points = append(points, m.Mountpoint)
		}
		slices.Sort(points)
		slices.Reverse(points)
		for _, p := range slices.Compact(points) {
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", p, err)
			}
		}
	}
	return fmt.Errorf("mounts remain under %s after unmounting: %w", dir, errdefs.ErrFailedPrecondition)
}
