package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/runtime"
)

func testConfigMap(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Data: data}
}

func testSecret(name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

func testObjects(cms []*corev1.ConfigMap, secrets []*corev1.Secret) *objectSet {
	return mergeObjects([]string{"file"}, map[string]sourceObjects{"file": {configMaps: cms, secrets: secrets}})
}

func ptrTo[T any](v T) *T { return &v }

func TestResolveEnv(t *testing.T) {
	objs := testObjects(
		[]*corev1.ConfigMap{testConfigMap("cfg", map[string]string{"LEVEL": "debug", "PATH_X": "$(HOME)/x", "bad=name": "v", "SHARED": "from-cm"})},
		[]*corev1.Secret{testSecret("creds", map[string]string{"password": "hunter2", "USER": "admin"})},
	)
	c := &corev1.Container{
		Name: "c",
		EnvFrom: []corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
			{Prefix: "S_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}}},
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: ptrTo(true)}},
		},
		Env: []corev1.EnvVar{
			{Name: "PLAIN", Value: "p"},
			{Name: "PASS", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "password"}}},
			{Name: "SHARED", Value: "from-env"},
			{Name: "OPT", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "nokey", Optional: ptrTo(true)}}},
			{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		},
	}
	got, skipped, err := resolveEnv(c, "default", objs)
	if err != nil {
		t.Fatal(err)
	}
	want := []corev1.EnvVar{
		{Name: "LEVEL", Value: "debug"},
		{Name: "PATH_X", Value: "$$(HOME)/x"}, // kept literal: the runtime expands $(VAR)
		{Name: "S_USER", Value: "admin"},
		{Name: "S_password", Value: "hunter2"},
		{Name: "PLAIN", Value: "p"},
		{Name: "PASS", Value: "hunter2"},
		{Name: "SHARED", Value: "from-env"},
		c.Env[4],
	}
	if !reflect.DeepEqual(got.Env, want) || got.EnvFrom != nil {
		t.Errorf("resolved env\n got %+v\nwant %+v (envFrom %v)", got.Env, want, got.EnvFrom)
	}
	if !reflect.DeepEqual(skipped, []string{"bad=name"}) {
		t.Errorf("skipped = %v, want [bad=name]", skipped)
	}
	if len(c.EnvFrom) != 3 || c.Env[1].ValueFrom == nil {
		t.Error("resolveEnv modified its input")
	}
}

func TestResolveEnvMissing(t *testing.T) {
	objs := testObjects([]*corev1.ConfigMap{testConfigMap("cfg", map[string]string{"a": "1"})}, nil)
	ref := func(name string) corev1.LocalObjectReference { return corev1.LocalObjectReference{Name: name} }
	for _, tc := range []struct {
		c    corev1.Container
		want string
	}{
		{corev1.Container{EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: ref("nope")}}}}, `configmap "nope" not found`},
		{corev1.Container{EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: ref("s")}}}}, `secret "s" not found`},
		{corev1.Container{Env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: ref("s"), Key: "k"}}}}}, `secret "s" not found`},
		{corev1.Container{Env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: ref("cfg"), Key: "b"}}}}}, "couldn't find key b in ConfigMap default/cfg"},
	} {
		_, _, err := resolveEnv(&tc.c, "default", objs)
		if !errdefs.IsNotFound(err) || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("resolveEnv(%+v) error = %v, want NotFound %q", tc.c, err, tc.want)
		}
	}
	// Another namespace's object of the same name is not visible.
	c := corev1.Container{EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: ref("cfg")}}}}
	if _, _, err := resolveEnv(&c, "other", objs); !errdefs.IsNotFound(err) {
		t.Errorf("resolveEnv in namespace other = %v, want NotFound", err)
	}
}

func TestVolumePayload(t *testing.T) {
	objs := testObjects(
		[]*corev1.ConfigMap{{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "default"}, Data: map[string]string{"a.conf": "A", "b.conf": "B"}, BinaryData: map[string][]byte{"bin": {0, 1}}}},
		[]*corev1.Secret{testSecret("creds", map[string]string{"token": "T"})},
	)
	file := func(data string, mode os.FileMode) volumeFile { return volumeFile{data: []byte(data), mode: mode} }
	for _, tc := range []struct {
		name string
		src  corev1.VolumeSource
		want map[string]volumeFile
		err  string
	}{
		{"all keys, default mode", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
			map[string]volumeFile{"a.conf": file("A", 0o644), "b.conf": file("B", 0o644), "bin": file("\x00\x01", 0o644)}, ""},
		{"items with paths and modes", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, DefaultMode: ptrTo[int32](0o600),
			Items: []corev1.KeyToPath{{Key: "a.conf", Path: "etc/a"}, {Key: "b.conf", Path: "b", Mode: ptrTo[int32](0o400)}}}},
			map[string]volumeFile{"etc/a": file("A", 0o600), "b": file("B", 0o400)}, ""},
		{"missing item key", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Items: []corev1.KeyToPath{{Key: "zz", Path: "z"}}}},
			nil, "configmap references non-existent config key: zz"},
		{"missing item key, optional", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Optional: ptrTo(true), Items: []corev1.KeyToPath{{Key: "zz", Path: "z"}, {Key: "a.conf", Path: "a"}}}},
			map[string]volumeFile{"a": file("A", 0o644)}, ""},
		{"missing configmap", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}}}, nil, `configmap "nope" not found`},
		{"missing optional secret", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "nope", Optional: ptrTo(true)}}, map[string]volumeFile{}, ""},
		{"secret", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "creds", DefaultMode: ptrTo[int32](0o440)}}, map[string]volumeFile{"token": file("T", 0o440)}, ""},
		{"projected", corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{DefaultMode: ptrTo[int32](0o640), Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Items: []corev1.KeyToPath{{Key: "a.conf", Path: "conf/a"}}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Items: []corev1.KeyToPath{{Key: "token", Path: "tok", Mode: ptrTo[int32](0o400)}}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Optional: ptrTo(true)}},
		}}}, map[string]volumeFile{"conf/a": file("A", 0o640), "tok": file("T", 0o400)}, ""},
		{"projected missing secret", corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}}},
		}}}, nil, `secret "nope" not found`},
		{"path escaping the volume", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Items: []corev1.KeyToPath{{Key: "a.conf", Path: "../a"}}}},
			nil, "must not contain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := volumePayload(&corev1.Volume{Name: "v", VolumeSource: tc.src}, "default", objs)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("payload\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

// readVolume returns the files visible through the volume's top-level
// names, following the ..data links as a container would.
func readVolume(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		root := filepath.Join(dir, e.Name())
		if fi, err := os.Stat(root); err == nil && fi.IsDir() {
			root += "/" // Walk follows a symlinked root only with the slash
		}
		err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil || fi.IsDir() {
				return err
			}
			if fi, err = os.Stat(p); err != nil { // the mode behind a top-level link
				return err
			}
			b, err := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			out[rel] = fmt.Sprintf("%s %o", b, fi.Mode().Perm())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestWriteVolume(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	v1 := map[string]volumeFile{"a": {data: []byte("1"), mode: 0o644}, "sub/b": {data: []byte("2"), mode: 0o400}}
	changed, err := writeVolume(dir, v1, now)
	if err != nil || !changed {
		t.Fatalf("first write: changed %v, %v", changed, err)
	}
	if got, want := readVolume(t, dir), map[string]string{"a": "1 644", "sub/b": "2 400"}; !reflect.DeepEqual(got, want) {
		t.Errorf("volume = %v, want %v", got, want)
	}
	if l, err := os.Readlink(filepath.Join(dir, "a")); err != nil || l != "..data/a" {
		t.Errorf("a links to %q (%v), want ..data/a", l, err)
	}
	target, _ := os.Readlink(filepath.Join(dir, "..data"))
	if !strings.HasPrefix(target, "..2026_01_02_03_04_05.") {
		t.Errorf("..data -> %q, want a timestamped directory", target)
	}

	// The same payload again is no write.
	if changed, err := writeVolume(dir, v1, now); err != nil || changed {
		t.Errorf("unchanged rewrite: changed %v, %v", changed, err)
	}

	// A new payload drops "sub", changes "a" and adds "c"; the old
	// timestamped directory goes.
	v2 := map[string]volumeFile{"a": {data: []byte("one"), mode: 0o600}, "c": {data: []byte("3"), mode: 0o644}}
	if changed, err := writeVolume(dir, v2, now.Add(time.Second)); err != nil || !changed {
		t.Fatalf("second write: changed %v, %v", changed, err)
	}
	if got, want := readVolume(t, dir), map[string]string{"a": "one 600", "c": "3 644"}; !reflect.DeepEqual(got, want) {
		t.Errorf("volume = %v, want %v", got, want)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 4 || !strings.Contains(strings.Join(names, " "), "..data ") {
		t.Errorf("volume entries %v, want ..data, one timestamped dir, a and c", names)
	}
}

// TestWriteVolumeIsAtomic has readers resolve ..data and read every file
// while a writer alternates between two payloads: each read set is wholly
// the old one or wholly the new one. A set whose directory was removed
// under the reader (the writer dropped the old payload) is read again.
func TestWriteVolumeIsAtomic(t *testing.T) {
	dir := t.TempDir()
	payload := func(gen int) map[string]volumeFile {
		files := map[string]volumeFile{}
		for i := range 20 {
			// Large enough that a torn write would be visible.
			files[fmt.Sprintf("f%02d", i)] = volumeFile{data: []byte(strings.Repeat(fmt.Sprint(gen%10), 4096)), mode: 0o644}
		}
		return files
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := writeVolume(dir, payload(0), now); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var complete atomic.Int64
	errs := make(chan error, 4)
	for range 3 {
		wg.Go(func() {
			for !stop.Load() {
				target, err := os.Readlink(filepath.Join(dir, "..data"))
				if err != nil {
					errs <- fmt.Errorf("..data unreadable: %w", err)
					return
				}
				var first string
				torn := false
				for i := range 20 {
					b, err := os.ReadFile(filepath.Join(dir, target, fmt.Sprintf("f%02d", i)))
					if errors.Is(err, os.ErrNotExist) {
						torn = true // superseded and removed: read again
						break
					}
					if err != nil {
						errs <- err
						return
					}
					if len(b) != 4096 {
						errs <- fmt.Errorf("file f%02d of %s has %d bytes, want 4096", i, target, len(b))
						return
					}
					if i == 0 {
						first = string(b)
					} else if string(b) != first {
						errs <- fmt.Errorf("%s mixes payloads", target)
						return
					}
				}
				if !torn {
					complete.Add(1)
				}
				// Reading through the user-visible link never fails.
				if _, err := os.ReadFile(filepath.Join(dir, "f00")); err != nil {
					errs <- fmt.Errorf("f00 unreadable during an update: %w", err)
					return
				}
			}
		})
	}
	for gen := 1; gen <= 200; gen++ {
		if _, err := writeVolume(dir, payload(gen), now.Add(time.Duration(gen)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if complete.Load() == 0 {
		t.Error("readers never completed a read; the test checked nothing")
	}
}

// TestConfigMapVolumeAndSecretEnvThroughTheWorker runs a pod on the fake
// runtime: a missing ConfigMap holds it in CreateContainerConfigError
// naming the object; once the ConfigMap arrives it starts with the file in
// its volume and the Secret in its env; an update rewrites the file and
// restarts nothing.
func TestConfigMapVolumeAndSecretEnvThroughTheWorker(t *testing.T) {
	h := newHarness(t, nil)
	sbRoot := t.TempDir()
	h.rt.SetSandboxRoot(sbRoot)
	h.rt.AddImage("img")
	h.start("file")
	c := ctr("app", "img")
	c.VolumeMounts = []corev1.VolumeMount{{Name: "conf", MountPath: "/etc/app"}}
	c.Env = []corev1.EnvVar{{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "token"}}}}
	ds := daemonSet("cm", c)
	ds.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}}
	secret := testSecret("creds", map[string]string{"token": "s3cret"})

	sendObjs := func(cms []*corev1.ConfigMap) {
		t.Helper()
		select {
		case h.updates <- SourceUpdate{Source: "file", DaemonSets: []*appsv1.DaemonSet{ds}, ConfigMaps: cms, Secrets: []*corev1.Secret{secret}}:
		case <-time.After(10 * time.Second):
			t.Fatal("agent does not take updates")
		}
	}
	sendObjs(nil)
	p := h.pod("cm-node1", "waiting for its ConfigMap", func(p PodStatus) bool {
		return len(p.Containers) == 1 && p.Containers[0].Reason == reasonCreateConfigError
	})
	if msg := p.Containers[0].Message; !strings.Contains(msg, `configmap "cfg" not found`) {
		t.Errorf("waiting message %q does not name the ConfigMap", msg)
	}
	if n := len(h.containers("cm-node1")); n != 0 {
		t.Fatalf("%d containers created before the ConfigMap exists", n)
	}

	sendObjs([]*corev1.ConfigMap{testConfigMap("cfg", map[string]string{"app.conf": "v1"})})
	run := h.running("cm-node1", "app", 0)
	file := filepath.Join(sbRoot, run.PodUID, "volumes", "conf", "app.conf")
	if b, err := os.ReadFile(file); err != nil || string(b) != "v1" {
		t.Fatalf("volume file = %q, %v; want v1", b, err)
	}
	spec, ok := h.rt.CreatedSpec(run.ID)
	if !ok || len(spec.Env) != 1 || spec.Env[0] != (corev1.EnvVar{Name: "TOKEN", Value: "s3cret"}) {
		t.Errorf("created env = %+v, want TOKEN=s3cret", spec.Env)
	}

	sendObjs([]*corev1.ConfigMap{testConfigMap("cfg", map[string]string{"app.conf": "v2"})})
	waitFor(t, "the volume file rewritten", func() bool {
		b, _ := os.ReadFile(file)
		return string(b) == "v2"
	})
	cs := h.containers("cm-node1")
	if len(cs) != 1 || cs[0].ID != run.ID || cs[0].State != runtime.StateRunning {
		t.Errorf("containers after the update = %+v, want only %s still running", cs, run.ID)
	}
}

// TestObjectsSurviveARestart: the last-known ConfigMaps and Secrets come
// back from the store when the agent starts without its sources, so that a
// pod created after a reboot while offline still gets them.
func TestObjectsSurviveARestart(t *testing.T) {
	h := newHarness(t, nil)
	h.start("file")
	select {
	case h.updates <- SourceUpdate{Source: "file",
		ConfigMaps: []*corev1.ConfigMap{testConfigMap("cfg", map[string]string{"a": "1"})},
		Secrets:    []*corev1.Secret{testSecret("creds", map[string]string{"token": "t"})}}:
	case <-time.After(10 * time.Second):
		t.Fatal("agent does not take updates")
	}
	waitFor(t, "the objects to be applied", func() bool { return h.a.currentObjects().secret("default", "creds") != nil })
	h.stop()

	h.start("file")
	waitFor(t, "the agent to restore", func() bool { return h.a.currentObjects() != nil })
	objs := h.a.currentObjects()
	if cm := objs.configMap("default", "cfg"); cm == nil || cm.Data["a"] != "1" {
		t.Errorf("restored ConfigMap = %+v", cm)
	}
	if s := objs.secret("default", "creds"); s == nil || string(s.Data["token"]) != "t" {
		t.Errorf("restored Secret = %+v", s)
	}
}

func TestCheckObjectsDropsDuplicatesAndNameless(t *testing.T) {
	first, second := testConfigMap("c", map[string]string{"v": "1"}), testConfigMap("c", map[string]string{"v": "2"})
	nameless := testSecret("", nil)
	got, errs := checkObjects("file", sourceObjects{
		configMaps: []*corev1.ConfigMap{first, second},
		secrets:    []*corev1.Secret{nameless, testSecret("c", nil)},
	})
	if len(got.configMaps) != 1 || got.configMaps[0] != first || len(got.secrets) != 1 || got.secrets[0].Name != "c" {
		t.Errorf("checked = %+v", got)
	}
	if len(errs) != 2 || !errdefs.IsAlreadyExists(errs[0]) || !errdefs.IsInvalidArgument(errs[1]) {
		t.Errorf("errors = %v, want a duplicate and a nameless one", errs)
	}
}
