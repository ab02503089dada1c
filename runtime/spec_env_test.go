package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestExpandVars(t *testing.T) {
	vars := map[string]string{"A": "a", "EMPTY": "", "B": "$(A)"}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"$(A)", "a"},
		{"x$(A)y$(A)", "xaya"},
		{"$(EMPTY)|", "|"},
		{"$(UNKNOWN)", "$(UNKNOWN)"},
		{"$$(A)", "$(A)"},
		{"$$$(A)", "$a"},
		{"$$", "$"},
		{"$", "$"},
		{"a$", "a$"},
		{"$A", "$A"},
		{"$(A", "$(A"},
		{"$(", "$("},
		{"$()", "$()"},
		{"$(B)", "$(A)"}, // values are not expanded again
		{"$(A)$(", "a$("},
		{"€$(A)€", "€a€"},
	} {
		if got := expandVars(tc.in, lookup); got != tc.want {
			t.Errorf("expandVars(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestProcessArgs(t *testing.T) {
	env := []envVar{{"X", "ex"}}
	img := ocispec.ImageConfig{Entrypoint: []string{"/ep"}, Cmd: []string{"cmd1", "cmd2"}}
	for _, tc := range []struct {
		name          string
		command, args []string
		img           ocispec.ImageConfig
		want          []string
	}{
		{"image only", nil, nil, img, []string{"/ep", "cmd1", "cmd2"}},
		{"args replace cmd", nil, []string{"a"}, img, []string{"/ep", "a"}},
		{"command drops cmd", []string{"/c"}, nil, img, []string{"/c"}},
		{"command and args", []string{"/c"}, []string{"a"}, img, []string{"/c", "a"}},
		{"expansion", []string{"/c", "$(X)"}, []string{"$(X)-$(Y)", "$$(X)"}, img, []string{"/c", "ex", "ex-$(Y)", "$(X)"}},
		{"empty entrypoint cleared", nil, nil, ocispec.ImageConfig{Entrypoint: []string{""}, Cmd: []string{"sh"}}, []string{"sh"}},
		{"no entrypoint", nil, []string{"a"}, ocispec.ImageConfig{Cmd: []string{"sh"}}, []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := processArgs(&corev1.Container{Command: tc.command, Args: tc.args}, tc.img, env)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("args = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	_, err := processArgs(&corev1.Container{}, ocispec.ImageConfig{}, nil)
	errIs(t, err, errdefs.ErrInvalidArgument, "no command")
}

func TestEnvOrderAndExpansion(t *testing.T) {
	f := newSpecFixture(t)
	f.in.Container.Env = []corev1.EnvVar{
		{Name: "LATER_REF", Value: "$(FIRST)"}, // FIRST is not defined yet
		{Name: "FIRST", Value: "one"},
		{Name: "SECOND", Value: "$(FIRST)-two-$$(FIRST)"},
		{Name: "IMG_REF", Value: "$(IMG)"}, // image variables are invisible
		{Name: "FIRST", Value: "uno"},      // redefinition wins
		{Name: "AFTER", Value: "$(FIRST)"},
		{Name: "EMPTY"},
	}
	f.in.Container.Args = []string{"$(FIRST)", "$(SECOND)"}
	s := f.mustSpec(t)
	want := []string{"PATH=/usr/bin:/bin", "HOSTNAME=agent-x7k2p", "IMG=1",
		"LATER_REF=$(FIRST)", "FIRST=uno", "SECOND=one-two-$(FIRST)", "IMG_REF=$(IMG)", "AFTER=uno", "EMPTY="}
	if !slices.Equal(s.Process.Env, want) {
		t.Errorf("env = %q\nwant %q", s.Process.Env, want)
	}
	if want := []string{"/bin/agent", "uno", "one-two-$(FIRST)"}; !slices.Equal(s.Process.Args, want) {
		t.Errorf("args = %q, want %q", s.Process.Args, want)
	}
}

func TestEnvFieldRefs(t *testing.T) {
	f := newSpecFixture(t)
	ref := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	for _, tc := range []struct{ path, want string }{
		{"metadata.name", "agent-x7k2p"},
		{"metadata.namespace", "kube-system"},
		{"metadata.uid", "uid-1"},
		{"metadata.labels['app']", "agent"},
		{"metadata.labels['missing']", ""},
		{"metadata.annotations['note']", "hi"},
		{"spec.nodeName", "node-1"},
		{"spec.serviceAccountName", "agent-sa"},
		{"status.hostIP", "192.0.2.10"},
		{"status.hostIPs", "192.0.2.10"},
		{"status.podIP", "10.88.0.5"},
		{"status.podIPs", "10.88.0.5"},
	} {
		f.in.Container.Env = []corev1.EnvVar{{Name: "V", ValueFrom: ref(tc.path)}}
		env, err := resolveEnv(f.in, testHost.node)
		if err != nil || len(env) != 1 || env[0].value != tc.want {
			t.Errorf("%s = %v, %v; want %q", tc.path, env, err, tc.want)
		}
	}
	f.in.Container.Env = []corev1.EnvVar{{Name: "V", ValueFrom: ref("metadata.labels")}}
	_, err := resolveEnv(f.in, testHost.node)
	errIs(t, err, errdefs.ErrInvalidArgument, "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath", "metadata.labels")

	f.in.Container.Env = []corev1.EnvVar{{Name: "V", ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}}}
	_, err = resolveEnv(f.in, testHost.node)
	errIs(t, err, errdefs.ErrNotImplemented, "spec.containers[0].env[0].valueFrom")
}

func TestEnvResourceFieldRefs(t *testing.T) {
	f := newSpecFixture(t)
	f.in.Pod.Spec.Containers = append(f.in.Pod.Spec.Containers, corev1.Container{Name: "other",
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}})
	f.in.Container = &f.in.Pod.Spec.Containers[0]
	f.in.Container.Resources = corev1.ResourceRequirements{
		Limits: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("1500m"),
			corev1.ResourceMemory: resource.MustParse("100Mi"),
		},
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
	}
	q := resource.MustParse
	for _, tc := range []struct {
		res       string
		divisor   resource.Quantity
		container string
		want      string
	}{
		{"limits.cpu", resource.Quantity{}, "", "2"}, // 1.5 rounds up
		{"limits.cpu", q("1m"), "", "1500"},
		{"requests.cpu", q("1m"), "", "250"},
		{"requests.cpu", resource.Quantity{}, "", "1"},
		{"limits.memory", resource.Quantity{}, "", "104857600"},
		{"limits.memory", q("1Mi"), "", "100"},
		{"limits.memory", q("1Gi"), "", "1"},
		{"requests.memory", q("1Mi"), "", "100"},          // defaulted from the limit
		{"limits.ephemeral-storage", q("1Gi"), "", "100"}, // node allocatable
		{"requests.ephemeral-storage", resource.Quantity{}, "", "0"},
		{"limits.memory", q("1Mi"), "other", "1024"},
		{"limits.cpu", resource.Quantity{}, "other", "4"}, // node allocatable
		{"requests.cpu", q("1m"), "other", "0"},
	} {
		f.in.Container.Env = []corev1.EnvVar{{Name: "V", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
			ContainerName: tc.container, Resource: tc.res, Divisor: tc.divisor}}}}
		env, err := resolveEnv(f.in, testHost.node)
		if err != nil || env[0].value != tc.want {
			t.Errorf("%s/%s (divisor %s) = %v, %v; want %s", tc.container, tc.res, tc.divisor.String(), env, err, tc.want)
		}
	}
	f.in.Container.Env = []corev1.EnvVar{{Name: "V", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.gpu"}}}}
	_, err := resolveEnv(f.in, testHost.node)
	errIs(t, err, errdefs.ErrInvalidArgument, "spec.containers[0].env[0].valueFrom.resourceFieldRef", "limits.gpu")
	f.in.Container.Env = []corev1.EnvVar{{Name: "V", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("-1")}}}}
	_, err = resolveEnv(f.in, testHost.node)
	errIs(t, err, errdefs.ErrInvalidArgument, "divisor -1")
	f.in.Container.Env = []corev1.EnvVar{{Name: "V", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: "nope", Resource: "limits.cpu"}}}}
	_, err = resolveEnv(f.in, testHost.node)
	errIs(t, err, errdefs.ErrInvalidArgument, "nope")
}

func TestMemTotal(t *testing.T) {
	p := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(p, []byte("MemFree:  10 kB\nMemTotal:       24731708 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := memTotal(p); err != nil || got != 24731708*1024 {
		t.Errorf("memTotal = %d, %v", got, err)
	}
	if err := os.WriteFile(p, []byte("MemFree: 1 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := memTotal(p); !errdefs.IsNotFound(err) {
		t.Errorf("err = %v, want NotFound", err)
	}
}

func TestHostCapacity(t *testing.T) {
	c, err := hostCapacity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if c.MilliCPU < 1000 || c.MilliCPU%1000 != 0 || c.Memory <= 0 || c.EphemeralStorage <= 0 {
		t.Errorf("capacity = %+v", c)
	}
}
