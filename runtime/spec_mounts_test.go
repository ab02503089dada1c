package runtime

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

func hostPathVolume(name, path string, t corev1.HostPathType) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &t}}}
}

func TestHostPathTypes(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	writeFile(t, file, "")
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	missing := filepath.Join(dir, "missing")

	for _, tc := range []struct {
		name  string
		path  string
		typ   corev1.HostPathType
		fails string // the "not a ..." of the error, or "" for success
	}{
		{"unset existing file", file, corev1.HostPathUnset, ""},
		{"directory", dir, corev1.HostPathDirectory, ""},
		{"directory on file", file, corev1.HostPathDirectory, "is not a directory"},
		{"directory missing", missing, corev1.HostPathDirectory, "is not a directory"},
		{"directoryOrCreate on file", file, corev1.HostPathDirectoryOrCreate, "is not a directory"},
		{"file", file, corev1.HostPathFile, ""},
		{"file on directory", dir, corev1.HostPathFile, "is not a file"},
		{"file on socket", sock, corev1.HostPathFile, "is not a file"},
		{"fileOrCreate on directory", dir, corev1.HostPathFileOrCreate, "is not a file"},
		{"socket", sock, corev1.HostPathSocket, ""},
		{"socket on file", file, corev1.HostPathSocket, "is not a socket file"},
		{"char device", "/dev/null", corev1.HostPathCharDev, ""},
		{"char device on file", file, corev1.HostPathCharDev, "is not a character device"},
		{"block device on char device", "/dev/null", corev1.HostPathBlockDev, "is not a block device"},
		{"block device missing", missing, corev1.HostPathBlockDev, "is not a block device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkHostPath(tc.path, tc.typ)
			if tc.fails == "" {
				if err != nil {
					t.Errorf("err = %v", err)
				}
				return
			}
			errIs(t, err, errdefs.ErrFailedPrecondition, "hostPath type check failed", tc.path, tc.fails)
		})
	}
	errIs(t, checkHostPath(dir, "Bogus"), errdefs.ErrInvalidArgument, "Bogus")
}

func TestHostPathBlockDevice(t *testing.T) {
	for _, dev := range []string{"/dev/loop0", "/dev/sda", "/dev/vda", "/dev/nvme0n1", "/dev/xvda"} {
		if fi, err := os.Stat(dev); err == nil && fi.Mode().Type() == os.ModeDevice {
			if err := checkHostPath(dev, corev1.HostPathBlockDev); err != nil {
				t.Errorf("%s: %v", dev, err)
			}
			return
		}
	}
	t.Skip("no block device found in /dev")
}

func TestHostPathCreates(t *testing.T) {
	dir := t.TempDir()
	nested := filepath.Join(dir, "a", "b")
	if err := checkHostPath(nested, corev1.HostPathDirectoryOrCreate); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(nested); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Errorf("DirectoryOrCreate made %v, %v; want a 0755 directory", fi, err)
	}
	file := filepath.Join(dir, "f")
	if err := checkHostPath(file, corev1.HostPathFileOrCreate); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("FileOrCreate made %v, %v; want a file", fi, err)
	}
	if err := checkHostPath(filepath.Join(dir, "no-parent", "f"), corev1.HostPathFileOrCreate); err == nil {
		t.Error("FileOrCreate created a missing parent directory")
	}
	unset := filepath.Join(dir, "unset")
	if err := checkHostPath(unset, corev1.HostPathUnset); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(unset); err != nil || !fi.IsDir() {
		t.Errorf("a missing untyped hostPath became %v, %v; want a directory", fi, err)
	}
}

// TestObjectVolumesMountReadOnly: ConfigMap and Secret data is read-only
// in the container even when the mount does not ask for it, as kubelet
// mounts it.
func TestObjectVolumesMountReadOnly(t *testing.T) {
	f := newSpecFixture(t)
	f.in.Pod.Spec.Volumes = []corev1.Volume{
		{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}}},
		{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
	}
	for _, v := range f.in.Pod.Spec.Volumes {
		if err := os.MkdirAll(f.in.Sandbox.VolumePath(v.Name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.in.Container.VolumeMounts = []corev1.VolumeMount{{Name: "conf", MountPath: "/etc/app"}, {Name: "creds", MountPath: "/creds"}}
	s := f.mustSpec(t)
	for dst, vol := range map[string]string{"/etc/app": "conf", "/creds": "creds"} {
		if m := findMount(s, dst); m == nil || m.Source != f.in.Sandbox.VolumePath(vol) || !slices.Contains(m.Options, "ro") {
			t.Errorf("%s = %+v, want a read-only bind of %s", dst, m, f.in.Sandbox.VolumePath(vol))
		}
	}
}

func TestVolumeMounts(t *testing.T) {
	f := newSpecFixture(t)
	host := t.TempDir()
	f.in.Pod.Spec.Volumes = []corev1.Volume{
		hostPathVolume("data", host, corev1.HostPathDirectory),
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	if err := os.MkdirAll(f.in.Sandbox.EmptyDirPath("scratch"), 0o777); err != nil {
		t.Fatal(err)
	}
	f.in.Container.VolumeMounts = []corev1.VolumeMount{
		{Name: "data", MountPath: "/a/b/c", SubPath: "sub"},
		{Name: "data", MountPath: "/a", ReadOnly: true},
		{Name: "scratch", MountPath: "/a/b"},
		{Name: "data", MountPath: "/etc/hosts", SubPath: "hosts"},
		{Name: "scratch", MountPath: "/dev/shm"},
	}
	s := f.mustSpec(t)
	var binds []string
	for _, m := range s.Mounts {
		if m.Type == "bind" {
			binds = append(binds, m.Destination)
		}
	}
	if want := []string{"/a", "/a/b", "/etc/hosts", "/dev/shm", "/etc/hostname", "/etc/resolv.conf", "/a/b/c"}; !slices.Equal(binds, want) {
		t.Errorf("bind mounts in order %q, want %q", binds, want)
	}
	if m := findMount(s, "/a"); m.Source != host || !slices.Equal(m.Options, []string{"rbind", "rprivate", "ro"}) {
		t.Errorf("/a = %+v", m)
	}
	if m := findMount(s, "/a/b/c"); m.Source != filepath.Join(host, "sub") {
		t.Errorf("/a/b/c source %s, want the created subPath", m.Source)
	}
	if fi, err := os.Stat(filepath.Join(host, "sub")); err != nil || !fi.IsDir() {
		t.Errorf("subPath directory not created: %v", err)
	}
	if m := findMount(s, "/a/b"); m.Source != f.in.Sandbox.EmptyDirPath("scratch") {
		t.Errorf("/a/b = %+v, want the emptyDir", m)
	}
	if m := findMount(s, "/etc/hosts"); m.Source == f.in.Sandbox.HostsPath() {
		t.Error("the sandbox's hosts file shadows the container's own /etc/hosts mount")
	}
	n := 0
	for _, m := range s.Mounts {
		if m.Destination == "/dev/shm" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d mounts at /dev/shm, want the container's only", n)
	}
}

func TestVolumeMountErrors(t *testing.T) {
	f := newSpecFixture(t)
	file := filepath.Join(t.TempDir(), "file")
	writeFile(t, file, "")
	f.in.Pod.Spec.Volumes = []corev1.Volume{
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		hostPathVolume("v", file, corev1.HostPathDirectory),
	}
	f.in.Container.VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/v"}}
	_, err := f.spec(t)
	errIs(t, err, errdefs.ErrFailedPrecondition, "spec.volumes[1].hostPath.type", file, "is not a directory")

	f.in.Container.VolumeMounts = []corev1.VolumeMount{{Name: "nope", MountPath: "/v"}}
	_, err = f.spec(t)
	errIs(t, err, errdefs.ErrInvalidArgument, "spec.containers[0].volumeMounts[0].name", "nope")

	f.in.Container.VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/v"}}
	_, err = f.spec(t)
	errIs(t, err, errdefs.ErrFailedPrecondition, "spec.volumes[0].emptyDir")
}

func TestSubPath(t *testing.T) {
	vol := t.TempDir()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(vol, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../..", filepath.Join(vol, "up")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(vol, "in"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("in", filepath.Join(vol, "inner")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(vol, 0o770); err != nil {
		t.Fatal(err)
	}
	fp := newSpecFixture(t).in
	path := containerFieldPath(fp).Child("volumeMounts").Index(0)
	env := []envVar{{"NODE", "n1"}, {"EMPTY", ""}}
	for _, tc := range []struct {
		name      string
		vm        corev1.VolumeMount
		want      string // source, relative to vol
		errFields []string
	}{
		{"none", corev1.VolumeMount{}, "", nil},
		{"nested created", corev1.VolumeMount{SubPath: "x/y"}, "x/y", nil},
		{"symlink inside", corev1.VolumeMount{SubPath: "inner/z"}, "in/z", nil},
		{"expr", corev1.VolumeMount{SubPathExpr: "logs/$(NODE)"}, "logs/n1", nil},
		{"expr missing", corev1.VolumeMount{SubPathExpr: "$(NOPE)/$(EMPTY)"}, "", []string{"subPathExpr", "missing value for NOPE, EMPTY"}},
		{"symlink escape", corev1.VolumeMount{SubPath: "escape/x"}, "", []string{"subPath", "outside the volume"}},
		{"relative symlink escape", corev1.VolumeMount{SubPath: "up"}, "", []string{"subPath", "outside the volume"}},
		{"dotdot", corev1.VolumeMount{SubPath: "a/../../b"}, "", []string{"subPath", "'..'"}},
		{"absolute", corev1.VolumeMount{SubPath: "/etc"}, "", []string{"subPath", "relative"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := subPathSource(vol, tc.vm, env, path)
			if tc.errFields != nil {
				errIs(t, err, errdefs.ErrInvalidArgument, append(tc.errFields, "spec.containers[0].volumeMounts[0]")...)
				return
			}
			if err != nil || got != filepath.Join(vol, tc.want) {
				t.Errorf("source = %q, %v; want %q", got, err, filepath.Join(vol, tc.want))
			}
		})
	}
	if fi, err := os.Stat(filepath.Join(vol, "x", "y")); err != nil || fi.Mode().Perm() != 0o770 {
		t.Errorf("created subPath %v, %v; want the volume's mode 0770", fi, err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("escape created %v outside the volume", entries)
	}
}

func TestMountPropagation(t *testing.T) {
	f := newSpecFixture(t)
	private := t.TempDir()
	yes := true
	mode := func(m corev1.MountPropagationMode) *corev1.MountPropagationMode { return &m }
	f.in.Pod.Spec.Volumes = []corev1.Volume{hostPathVolume("v", private, corev1.HostPathDirectory)}

	f.in.Container.VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/v", MountPropagation: mode(corev1.MountPropagationBidirectional)}}
	_, err := f.spec(t)
	errIs(t, err, errdefs.ErrInvalidArgument, "spec.containers[0].volumeMounts[0].mountPropagation", "privileged")

	if m, err := mountOf(private); err != nil || len(m.Optional) != 0 {
		t.Skipf("%s is on a propagating mount (%v, %v); this test needs a private one", private, m, err)
	}
	f.in.Container.SecurityContext = &corev1.SecurityContext{Privileged: &yes}
	_, err = f.spec(t)
	errIs(t, err, errdefs.ErrFailedPrecondition, "spec.containers[0].volumeMounts[0].mountPropagation", private, "is not a shared mount")

	f.in.Container.VolumeMounts[0].MountPropagation = mode(corev1.MountPropagationHostToContainer)
	_, err = f.spec(t)
	errIs(t, err, errdefs.ErrFailedPrecondition, "mountPropagation", "is not a shared or slave mount")

	if os.Geteuid() != 0 {
		t.Skip("making a shared mount needs root")
	}
	shared := t.TempDir()
	if err := unix.Mount("tmpfs", shared, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(shared, unix.MNT_DETACH) })
	if err := unix.Mount("", shared, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	f.in.Pod.Spec.Volumes = []corev1.Volume{hostPathVolume("v", shared, corev1.HostPathDirectory)}
	for _, tc := range []struct {
		mode      corev1.MountPropagationMode
		opt, root string
	}{
		{corev1.MountPropagationBidirectional, "rshared", "rshared"},
		{corev1.MountPropagationHostToContainer, "rslave", "rslave"},
		{corev1.MountPropagationNone, "rprivate", ""},
	} {
		f.in.Container.VolumeMounts[0].MountPropagation = mode(tc.mode)
		s := f.mustSpec(t)
		if m := findMount(s, "/v"); !slices.Contains(m.Options, tc.opt) || s.Linux.RootfsPropagation != tc.root {
			t.Errorf("%s: mount %v rootfsPropagation %q; want %s and %q", tc.mode, m.Options, s.Linux.RootfsPropagation, tc.opt, tc.root)
		}
	}
}
