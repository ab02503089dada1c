package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"

	"github.com/daemonlet/daemonlet/api"
)

// dsYAML is a valid DaemonSet manifest document.
func dsYAML(name, image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: %[1]s
spec:
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      containers:
      - name: main
        image: %[2]s
`, name, image)
}

// podYAML is a valid static Pod manifest document.
func podYAML(name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  containers:
  - name: main
    image: nginx
`, name)
}

// badDSYAML is a DaemonSet whose container has no image.
func badDSYAML(name string) string {
	return strings.Replace(dsYAML(name, "x"), "        image: x\n", "", 1)
}

func writeManifest(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func sourceTestLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// updateNames lists the update's DaemonSets as namespace/name.
func updateNames(u SourceUpdate) []string {
	var out []string
	for _, ds := range u.DaemonSets {
		out = append(out, objectKey(ds))
	}
	return out
}

func newTestFileSource(t *testing.T, path string, period time.Duration) *FileSource {
	return NewFileSource(FileSourceConfig{Path: path, CheckFrequency: period, Logger: sourceTestLogger(t)})
}

func TestFileSourceMultiDocBadFileAndDotFiles(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, filepath.Join(dir, "a.yaml"), dsYAML("a1", "busybox")+"---\n"+dsYAML("a2", "busybox"))
	writeManifest(t, filepath.Join(dir, "b.yaml"), badDSYAML("b"))
	writeManifest(t, filepath.Join(dir, "c.yaml"), podYAML("web"))
	writeManifest(t, filepath.Join(dir, ".hidden.yaml"), dsYAML("hidden", "busybox"))
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, filepath.Join(dir, "sub", "d.yaml"), dsYAML("nested", "busybox"))

	s := newTestFileSource(t, dir, time.Hour)
	u, changed := s.scan()
	if !changed || u.Err != nil || u.Source != SourceFile {
		t.Fatalf("first scan: changed=%v update=%+v", changed, u)
	}
	if got, want := updateNames(u), []string{"default/a1", "default/a2", "default/web"}; !slices.Equal(got, want) {
		t.Fatalf("set = %v, want %v", got, want)
	}
	rep := s.Report()
	if len(rep.FileErrors) != 1 {
		t.Fatalf("file errors = %+v, want one for b.yaml", rep.FileErrors)
	}
	fe := rep.FileErrors[0]
	if fe.File != filepath.Join(dir, "b.yaml") || !strings.Contains(fe.Error, "document 1") || !strings.Contains(fe.Error, "spec.template.spec.containers[0].image") {
		t.Errorf("file error = %+v, want b.yaml, its document and the field", fe)
	}
	if rep.LastSync.IsZero() || rep.Error != "" {
		t.Errorf("report = %+v, want a sync time and no source error", rep)
	}

	if _, changed := s.scan(); changed {
		t.Error("a scan without changes reported a change")
	}
}

func TestFileSourceBadEditKeepsOldObjectsAndRemovalRemoves(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	writeManifest(t, a, dsYAML("a", "busybox:1"))
	writeManifest(t, b, dsYAML("b", "busybox:1"))
	s := newTestFileSource(t, dir, time.Hour)
	if u, _ := s.scan(); !slices.Equal(updateNames(u), []string{"default/a", "default/b"}) {
		t.Fatalf("set = %v", updateNames(u))
	}

	writeManifest(t, a, badDSYAML("a"))
	u, _ := s.scan()
	if got := updateNames(u); !slices.Equal(got, []string{"default/a", "default/b"}) {
		t.Fatalf("after a bad edit set = %v, want a's old object kept", got)
	}
	if img := u.DaemonSets[0].Spec.Template.Spec.Containers[0].Image; img != "busybox:1" {
		t.Errorf("kept object has image %q, want the last good busybox:1", img)
	}
	if fe := s.Report().FileErrors; len(fe) != 1 || fe[0].File != a {
		t.Errorf("file errors = %+v, want one for a.yaml", fe)
	}

	writeManifest(t, a, dsYAML("a", "busybox:2"))
	u, changed := s.scan()
	if !changed || u.DaemonSets[0].Spec.Template.Spec.Containers[0].Image != "busybox:2" {
		t.Fatalf("fixed file not applied: changed=%v set=%v", changed, updateNames(u))
	}
	if fe := s.Report().FileErrors; len(fe) != 0 {
		t.Errorf("file errors after the fix = %+v, want none", fe)
	}

	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	u, changed = s.scan()
	if !changed || !slices.Equal(updateNames(u), []string{"default/a"}) {
		t.Fatalf("after removing b.yaml: changed=%v set=%v, want only a", changed, updateNames(u))
	}
}

func TestFileSourceDuplicateAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, filepath.Join(dir, "1.yaml"), dsYAML("same", "busybox:1"))
	writeManifest(t, filepath.Join(dir, "2.yaml"), dsYAML("same", "busybox:2"))
	s := newTestFileSource(t, dir, time.Hour)
	u, _ := s.scan()
	if len(u.DaemonSets) != 1 || u.DaemonSets[0].Spec.Template.Spec.Containers[0].Image != "busybox:1" {
		t.Fatalf("set = %v, want the first file's object only", updateNames(u))
	}
	fe := s.Report().FileErrors
	if len(fe) != 1 || fe[0].File != filepath.Join(dir, "2.yaml") || !strings.Contains(fe[0].Error, "1.yaml") {
		t.Errorf("file errors = %+v, want 2.yaml naming 1.yaml", fe)
	}
}

func TestFileSourceDeliversConfigMapsAndSecrets(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bundle.yaml")
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: conf\ndata: {a: b}\n"
	secret := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: ops\nstringData: {token: t0k}\n"
	writeManifest(t, p, cm+"---\n"+dsYAML("app", "busybox")+"---\n"+badDSYAML("broken"))
	s := newTestFileSource(t, dir, time.Hour)
	s.scan()
	// The bad third document rejects the file, numbered as the user wrote it.
	if fe := s.Report().FileErrors; len(fe) != 1 || !strings.Contains(fe[0].Error, "document 3") {
		t.Fatalf("file errors = %+v", fe)
	}

	writeManifest(t, p, cm+"---\n"+dsYAML("app", "busybox")+"---\n"+secret)
	u, _ := s.scan()
	if !slices.Equal(updateNames(u), []string{"default/app"}) || len(u.ConfigMaps) != 1 || len(u.Secrets) != 1 {
		t.Fatalf("update = %v, %d ConfigMaps, %d Secrets", updateNames(u), len(u.ConfigMaps), len(u.Secrets))
	}
	if c := u.ConfigMaps[0]; c.Namespace != "default" || c.Name != "conf" || c.Data["a"] != "b" {
		t.Errorf("ConfigMap = %+v", c)
	}
	// stringData is merged into data, as the API server does.
	if sec := u.Secrets[0]; sec.Namespace != "ops" || string(sec.Data["token"]) != "t0k" || sec.StringData != nil || sec.Type != corev1.SecretTypeOpaque {
		t.Errorf("Secret = %+v", sec)
	}
	if fe := s.Report().FileErrors; len(fe) != 0 {
		t.Errorf("file errors = %+v", fe)
	}

	// A file of ConfigMaps only is fine; a second definition in another
	// file is ignored and reported.
	writeManifest(t, filepath.Join(dir, "z.yaml"), cm)
	u, _ = s.scan()
	if len(u.ConfigMaps) != 1 {
		t.Errorf("ConfigMaps = %d, want 1", len(u.ConfigMaps))
	}
	if fe := s.Report().FileErrors; len(fe) != 1 || !strings.Contains(fe[0].Error, "ConfigMap default/conf ignored") {
		t.Errorf("file errors = %+v", fe)
	}
}

func TestDecodeManifestRejectsBadObjects(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata: {\"a/b\": x}\n", "data[a/b]"},
		{"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n", "metadata.name"},
		{"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata: {a: x}\nbinaryData: {a: eA==}\n", "binaryData[a]"},
		{"apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nbogus: 1\n", "bogus"},
		{"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata: {a: " + strings.Repeat("x", api.MaxObjectSize+1) + "}\n", "Too long"},
		{"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n", "already defined by document 1"},
	} {
		if _, err := decodeManifest("m.yaml", []byte(tc.doc)); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("decodeManifest error = %v, want one naming %q", err, tc.want)
		}
	}
}

func TestFileSourceMissingPathAndSingleFile(t *testing.T) {
	dir := t.TempDir()
	s := newTestFileSource(t, filepath.Join(dir, "absent"), time.Hour)
	u, changed := s.scan()
	if !changed || u.Err != nil || len(u.DaemonSets) != 0 {
		t.Fatalf("missing path: changed=%v update=%+v, want an empty set", changed, u)
	}

	p := filepath.Join(dir, "one.yaml")
	writeManifest(t, p, dsYAML("one", "busybox"))
	writeManifest(t, filepath.Join(dir, "other.yaml"), dsYAML("other", "busybox"))
	s = newTestFileSource(t, p, time.Hour)
	if u, _ := s.scan(); !slices.Equal(updateNames(u), []string{"default/one"}) {
		t.Fatalf("single file: set = %v", updateNames(u))
	}
}

func TestFileSourceEmptiedFileKeepsObjects(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.yaml")
	writeManifest(t, p, dsYAML("a", "busybox"))
	s := newTestFileSource(t, dir, time.Hour)
	s.scan()
	writeManifest(t, p, "")
	if u, _ := s.scan(); !slices.Equal(updateNames(u), []string{"default/a"}) {
		t.Fatalf("set = %v, want a kept while its file is empty", updateNames(u))
	}
	if fe := s.Report().FileErrors; len(fe) != 1 || !strings.Contains(fe[0].Error, "empty file") {
		t.Errorf("file errors = %+v", fe)
	}
}

// runSource runs src until the test ends and returns its updates.
func runSource(t *testing.T, src Source) <-chan SourceUpdate {
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan SourceUpdate)
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Run(ctx, updates)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return updates
}

func nextUpdate(t *testing.T, updates <-chan SourceUpdate, within time.Duration) SourceUpdate {
	t.Helper()
	select {
	case u := <-updates:
		return u
	case <-time.After(within):
		t.Fatalf("no update within %v", within)
		return SourceUpdate{}
	}
}

func TestFileSourceWatchNoticesChangesPromptly(t *testing.T) {
	dir := t.TempDir()
	// An hour-long poll: only the inotify watch can deliver in time.
	updates := runSource(t, newTestFileSource(t, dir, time.Hour))
	if u := nextUpdate(t, updates, 5*time.Second); len(u.DaemonSets) != 0 {
		t.Fatalf("initial set = %v, want empty", updateNames(u))
	}

	// Written under a dot name and renamed, as editors and config managers do.
	tmp := filepath.Join(dir, ".a.yaml.tmp")
	writeManifest(t, tmp, dsYAML("a", "busybox"))
	if err := os.Rename(tmp, filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	if u := nextUpdate(t, updates, 3*time.Second); !slices.Equal(updateNames(u), []string{"default/a"}) {
		t.Fatalf("set = %v, want a", updateNames(u))
	}
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	if u := nextUpdate(t, updates, 3*time.Second); len(u.DaemonSets) != 0 {
		t.Fatalf("after removal set = %v, want empty", updateNames(u))
	}
}

func TestFileSourcePollFindsDirectoryCreatedLater(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "manifests")
	updates := runSource(t, newTestFileSource(t, dir, 100*time.Millisecond))
	if u := nextUpdate(t, updates, 5*time.Second); u.Err != nil || len(u.DaemonSets) != 0 {
		t.Fatalf("missing directory: %+v, want an empty set", u)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, filepath.Join(dir, "a.yaml"), dsYAML("a", "busybox"))
	if u := nextUpdate(t, updates, 5*time.Second); !slices.Equal(updateNames(u), []string{"default/a"}) {
		t.Fatalf("set = %v, want a", updateNames(u))
	}
}

func TestDecodeManifestKeepsJSONNumbering(t *testing.T) {
	data := `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}
{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"c","image":"nginx"}]}}
{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad"},"spec":{"containers":[{"name":"c"}]}}`
	_, err := decodeManifest("m.json", []byte(data))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "m.json: document 3: spec.containers[0].image") {
		t.Errorf("err = %v, want document 3's missing image", err)
	}
	m, err := decodeManifest("m.json", []byte(data[:strings.LastIndex(data, "\n")]))
	if err != nil || len(m.secrets) != 1 || len(m.daemonSets) != 1 {
		t.Errorf("decodeManifest = %+v, %v; want a Secret and a static pod", m, err)
	}
}

func TestFileSourceListErrorKeepsSet(t *testing.T) {
	base := t.TempDir()
	parent := filepath.Join(base, "d")
	dir := filepath.Join(parent, "m")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, filepath.Join(dir, "a.yaml"), dsYAML("a", "busybox"))
	s := newTestFileSource(t, dir, time.Hour)
	s.scan()

	// A file where a directory of the path should be: not "missing" (which
	// would empty the set) but unreadable.
	if err := os.RemoveAll(parent); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, parent, "")
	u, changed := s.scan()
	if !changed || u.Err == nil || u.DaemonSets != nil {
		t.Fatalf("list error: changed=%v update=%+v, want an error update", changed, u)
	}
	if _, changed := s.scan(); changed {
		t.Error("the same list error was sent twice")
	}
	if rep := s.Report(); rep.Error == "" {
		t.Error("list error not reported")
	}

	if err := os.Remove(parent); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, filepath.Join(dir, "a.yaml"), dsYAML("a", "busybox"))
	u, changed = s.scan()
	if !changed || u.Err != nil || !slices.Equal(updateNames(u), []string{"default/a"}) {
		t.Fatalf("after recovery: changed=%v set=%v err=%v", changed, updateNames(u), u.Err)
	}
}
