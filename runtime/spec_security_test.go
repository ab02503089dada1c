package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
)

func ptr[T any](v T) *T { return &v }

func TestUserAndGroups(t *testing.T) {
	strict := corev1.SupplementalGroupsPolicyStrict
	for _, tc := range []struct {
		name      string
		pod       *corev1.PodSecurityContext
		container *corev1.SecurityContext
		image     string
		uid, gid  uint32
		gids      []uint32
	}{
		{"image without user runs as root", nil, nil, "", 0, 0, []uint32{0}},
		{"numeric image user", nil, nil, "1000", 1000, 1001, []uint32{1001, 3000}},
		{"named image user", nil, nil, "app", 1000, 1001, []uint32{1001, 3000}},
		{"image group is dropped", nil, nil, "1000:5", 1000, 1001, []uint32{1001, 3000}},
		{"runAsUser not in passwd", &corev1.PodSecurityContext{RunAsUser: ptr[int64](2000)}, nil, "app", 2000, 0, []uint32{0}},
		{"runAsUser and runAsGroup", nil, &corev1.SecurityContext{RunAsUser: ptr[int64](1000), RunAsGroup: ptr[int64](7)}, "", 1000, 7, []uint32{7, 3000}},
		{"container overrides pod", &corev1.PodSecurityContext{RunAsUser: ptr[int64](5), RunAsGroup: ptr[int64](6)},
			&corev1.SecurityContext{RunAsUser: ptr[int64](1000)}, "", 1000, 6, []uint32{6, 3000}},
		{"runAsGroup with the image's user", &corev1.PodSecurityContext{RunAsGroup: ptr[int64](7)}, nil, "1000:5", 1000, 7, []uint32{7, 3000}},
		{"fsGroup and supplementalGroups", &corev1.PodSecurityContext{FSGroup: ptr[int64](40), SupplementalGroups: []int64{50, 40, 3000}},
			nil, "app", 1000, 1001, []uint32{40, 50, 1001, 3000}},
		{"strict policy skips /etc/group", &corev1.PodSecurityContext{SupplementalGroups: []int64{50}, SupplementalGroupsPolicy: &strict},
			nil, "app", 1000, 1001, []uint32{50, 1001}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSpecFixture(t)
			f.in.Pod.Spec.SecurityContext = tc.pod
			f.in.Container.SecurityContext = tc.container
			f.in.Image.User = tc.image
			u := f.mustSpec(t).Process.User
			if u.UID != tc.uid || u.GID != tc.gid || !slices.Equal(u.AdditionalGids, tc.gids) {
				t.Errorf("user = %d:%d %v, want %d:%d %v", u.UID, u.GID, u.AdditionalGids, tc.uid, tc.gid, tc.gids)
			}
		})
	}
}

func TestRunAsNonRoot(t *testing.T) {
	const pod = `"agent-x7k2p_kube-system(uid-1)"`
	for _, tc := range []struct {
		name      string
		pod       *corev1.PodSecurityContext
		container *corev1.SecurityContext
		image     string
		err       string
	}{
		{"runAsUser 0", &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}, &corev1.SecurityContext{RunAsUser: ptr[int64](0)}, "1000",
			"container's runAsUser breaks non-root policy (pod: " + pod + ", container: main)"},
		{"image root", nil, &corev1.SecurityContext{RunAsNonRoot: ptr(true)}, "0:0",
			"container has runAsNonRoot and image will run as root (pod: " + pod + ", container: main)"},
		{"image without user", &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}, nil, "",
			"container has runAsNonRoot and image will run as root"},
		{"non-numeric image user", &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}, nil, "app",
			"container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root (pod: " + pod + ", container: main)"},
		{"image uid too large", &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}, nil, "4294967296", "invalid user id (4294967296)"},
		{"numeric image user", &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}, nil, "1000", ""},
		{"runAsUser over a root image", &corev1.PodSecurityContext{RunAsNonRoot: ptr(true), RunAsUser: ptr[int64](1000)}, nil, "", ""},
		{"container allows root", &corev1.PodSecurityContext{RunAsNonRoot: ptr(true)}, &corev1.SecurityContext{RunAsNonRoot: ptr(false)}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSpecFixture(t)
			f.in.Pod.Spec.SecurityContext = tc.pod
			f.in.Container.SecurityContext = tc.container
			f.in.Image.User = tc.image
			_, err := buildSpecOpts(f.in, testHost)
			if tc.err == "" {
				if err != nil {
					t.Errorf("err = %v", err)
				}
				return
			}
			errIs(t, err, errdefs.ErrFailedPrecondition, "spec.containers[0].securityContext", tc.err)
		})
	}
}

func TestCapabilities(t *testing.T) {
	def := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
		"CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}
	f := newSpecFixture(t)
	if got := f.mustSpec(t).Process.Capabilities.Bounding; !slices.Equal(got, def) {
		t.Fatalf("default capabilities = %v", got)
	}
	without := func(caps []string, drop ...string) []string {
		return slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return slices.Contains(drop, c) })
	}
	for _, tc := range []struct {
		name      string
		add, drop []corev1.Capability
		want      []string // nil: every known capability but check
		check     func(t *testing.T, caps []string)
	}{
		{name: "add with and without prefix", add: []corev1.Capability{"NET_ADMIN", "CAP_SYS_TIME", "sys_ptrace"},
			want: append(slices.Clone(def), "CAP_NET_ADMIN", "CAP_SYS_TIME", "CAP_SYS_PTRACE")},
		{name: "drop some", drop: []corev1.Capability{"NET_RAW", "chown"}, want: without(def, "CAP_NET_RAW", "CAP_CHOWN")},
		{name: "drop ALL add one", add: []corev1.Capability{"NET_BIND_SERVICE"}, drop: []corev1.Capability{"ALL"},
			want: []string{"CAP_NET_BIND_SERVICE"}},
		{name: "drop all lowercase", drop: []corev1.Capability{"all"}, want: []string{}},
		{name: "add ALL drop one", add: []corev1.Capability{"ALL"}, drop: []corev1.Capability{"CHOWN"},
			check: func(t *testing.T, caps []string) {
				if slices.Contains(caps, "CAP_CHOWN") || !slices.Contains(caps, "CAP_SYS_ADMIN") {
					t.Errorf("caps = %v, want every known capability but CAP_CHOWN", caps)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSpecFixture(t)
			f.in.Container.SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: tc.add, Drop: tc.drop}}
			c := f.mustSpec(t).Process.Capabilities
			if tc.check != nil {
				tc.check(t, c.Bounding)
				return
			}
			for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted} {
				if len(set) != len(tc.want) || !slices.Equal(slices.Sorted(slices.Values(set)), slices.Sorted(slices.Values(tc.want))) {
					t.Errorf("caps = %v, want %v", set, tc.want)
				}
			}
			if len(c.Ambient) != 0 {
				t.Errorf("ambient caps %v", c.Ambient)
			}
		})
	}
}

func TestPrivileged(t *testing.T) {
	f := newSpecFixture(t)
	f.in.Container.SecurityContext = &corev1.SecurityContext{
		Privileged:     ptr(true),
		Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	s := f.mustSpec(t)
	// Privileged containers get the caller's capabilities: all of them as root.
	if os.Geteuid() == 0 && !slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") {
		t.Errorf("privileged caps = %v, want all (drop ignored)", s.Process.Capabilities.Bounding)
	}
	if len(s.Linux.MaskedPaths) != 0 || len(s.Linux.ReadonlyPaths) != 0 {
		t.Errorf("masked %v readonly %v, want none", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	if s.Linux.Seccomp != nil {
		t.Error("seccomp set for a privileged container")
	}
	for _, dst := range []string{"/sys", "/sys/fs/cgroup"} {
		if m := findMount(s, dst); m == nil || slices.Contains(m.Options, "ro") {
			t.Errorf("%s = %+v, want writable", dst, m)
		}
	}
	if d := s.Linux.Resources.Devices; len(d) == 0 || !d[len(d)-1].Allow || d[len(d)-1].Access != "rwm" {
		t.Errorf("device cgroup %+v, want all allowed", d)
	}
	if len(s.Linux.Devices) == 0 {
		t.Error("no host devices")
	}
}

func TestNoNewPrivileges(t *testing.T) {
	f := newSpecFixture(t)
	f.in.Container.SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: ptr(true)}
	if f.mustSpec(t).Process.NoNewPrivileges {
		t.Error("noNewPrivileges with allowPrivilegeEscalation: true")
	}
	f.in.Container.SecurityContext.AllowPrivilegeEscalation = ptr(false)
	if !f.mustSpec(t).Process.NoNewPrivileges {
		t.Error("no noNewPrivileges with allowPrivilegeEscalation: false")
	}
}

func TestSeccomp(t *testing.T) {
	profile := func(typ corev1.SeccompProfileType, local string) *corev1.SeccompProfile {
		p := &corev1.SeccompProfile{Type: typ}
		if local != "" {
			p.LocalhostProfile = &local
		}
		return p
	}
	for _, tc := range []struct {
		name           string
		pod, container *corev1.SeccompProfile
		want           specs.LinuxSeccompAction // "" for no filter
		class          error
		err            []string
	}{
		{name: "unset is unconfined"},
		{name: "runtime default", container: profile(corev1.SeccompProfileTypeRuntimeDefault, ""), want: specs.ActErrno},
		{name: "pod runtime default", pod: profile(corev1.SeccompProfileTypeRuntimeDefault, ""), want: specs.ActErrno},
		{name: "container unconfined overrides pod", pod: profile(corev1.SeccompProfileTypeRuntimeDefault, ""),
			container: profile(corev1.SeccompProfileTypeUnconfined, "")},
		{name: "localhost", container: profile(corev1.SeccompProfileTypeLocalhost, "profiles/log.json"), want: specs.ActLog},
		{name: "localhost missing", pod: profile(corev1.SeccompProfileTypeLocalhost, "nope.json"), class: errdefs.ErrFailedPrecondition,
			err: []string{"spec.securityContext.seccompProfile.localhostProfile", "nope.json"}},
		{name: "localhost escaping", container: profile(corev1.SeccompProfileTypeLocalhost, "../x.json"), class: errdefs.ErrInvalidArgument,
			err: []string{"spec.containers[0].securityContext.seccompProfile.localhostProfile", "'..'"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSpecFixture(t)
			writeFile(t, filepath.Join(f.in.SeccompDir, "profiles/log.json"), `{"defaultAction":"SCMP_ACT_LOG"}`)
			f.in.Pod.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: tc.pod}
			f.in.Container.SecurityContext = &corev1.SecurityContext{SeccompProfile: tc.container}
			s, err := f.spec(t)
			if tc.err != nil {
				errIs(t, err, tc.class, tc.err...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.want == "" && s.Linux.Seccomp != nil:
				t.Errorf("seccomp %v, want none", s.Linux.Seccomp.DefaultAction)
			case tc.want != "" && (s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != tc.want):
				t.Errorf("seccomp %+v, want default action %s", s.Linux.Seccomp, tc.want)
			}
		})
	}
}

func TestAppArmor(t *testing.T) {
	rd := &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeRuntimeDefault}
	un := &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
	for _, tc := range []struct {
		name                string
		p                   *corev1.AppArmorProfile
		privileged, enabled bool
		wantOpt, wantErr    bool
	}{
		{"disabled unset", nil, false, false, false, false},
		{"disabled unconfined", un, false, false, false, false},
		{"disabled runtime default", rd, false, false, false, true},
		{"enabled unset is runtime default", nil, false, true, true, false},
		{"enabled runtime default", rd, false, true, true, false},
		{"enabled privileged", rd, true, true, false, false},
		{"enabled unconfined", un, false, true, false, false},
		{"localhost", &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeLocalhost}, false, true, false, true},
	} {
		opt, err := appArmorOpt(tc.p, tc.privileged, tc.enabled)
		if (opt != nil) != tc.wantOpt || (err != nil) != tc.wantErr {
			t.Errorf("%s: opt %v err %v; want opt %v err %v", tc.name, opt != nil, err, tc.wantOpt, tc.wantErr)
		}
	}
	f := newSpecFixture(t)
	f.in.Container.SecurityContext = &corev1.SecurityContext{AppArmorProfile: rd}
	_, err := buildSpecOpts(f.in, testHost)
	errIs(t, err, errdefs.ErrFailedPrecondition, "spec.containers[0].securityContext.appArmorProfile", "not enabled")
}

func TestSysctls(t *testing.T) {
	f := newSpecFixture(t)
	f.in.Pod.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{
		{Name: "net.ipv4.ip_local_port_range", Value: "1024 65000"},
		{Name: "net/ipv4/conf/eth0.100/rp_filter", Value: "2"},
		{Name: "kernel.shm_rmid_forced", Value: "1"},
		{Name: "kernel.domainname", Value: "example"},
	}}
	want := map[string]string{
		"net.ipv4.ip_local_port_range": "1024 65000", "net.ipv4.conf.eth0/100.rp_filter": "2",
		"kernel.shm_rmid_forced": "1", "kernel.domainname": "example",
	}
	if got := f.mustSpec(t).Linux.Sysctl; !mapsEqual(got, want) {
		t.Errorf("sysctls = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		name, sysctl string
		sb           func(*Sandbox)
		err          string
	}{
		{"not namespaced", "vm.swappiness", nil, "is not a namespaced sysctl"},
		{"pattern", "net.ipv4.*", nil, "not a pattern"},
		{"host network", "net.ipv4.tcp_syncookies", func(s *Sandbox) { s.NetNSPath = "" }, "host's Net namespace"},
		{"host IPC", "kernel.msgmax", func(s *Sandbox) { s.IPCNSPath = "" }, "host's IPC namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSpecFixture(t)
			f.in.Pod.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "kernel.domainname", Value: "d"}, {Name: tc.sysctl, Value: "1"}}}
			if tc.sb != nil {
				tc.sb(f.in.Sandbox)
			}
			_, err := buildSpecOpts(f.in, testHost)
			errIs(t, err, errdefs.ErrInvalidArgument, "spec.securityContext.sysctls[1].name", tc.sysctl, tc.err)
		})
	}
}

func TestCgroupNamespaceOnV2(t *testing.T) {
	f := newSpecFixture(t)
	host := testHost
	host.cgroup2 = true
	opts, err := buildSpecOpts(f.in, host)
	if err != nil {
		t.Fatal(err)
	}
	s := f.apply(t, opts)
	if _, ok := nsMap(s)[specs.CgroupNamespace]; !ok {
		t.Error("no cgroup namespace on cgroup v2")
	}
	f.in.Container.SecurityContext = &corev1.SecurityContext{Privileged: ptr(true)}
	if opts, err = buildSpecOpts(f.in, host); err != nil {
		t.Fatal(err)
	}
	if _, ok := nsMap(f.apply(t, opts))[specs.CgroupNamespace]; ok {
		t.Error("cgroup namespace for a privileged container")
	}
}
