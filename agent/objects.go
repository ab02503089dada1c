package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/daemonlet/daemonlet/runtime"
	"github.com/daemonlet/daemonlet/store"
)

// defaultVolumeMode is the file mode of configMap, secret and projected
// volume files without defaultMode or item mode (kubelet's 0644).
const defaultVolumeMode = 0o644

// objectSet is one immutable snapshot of the ConfigMaps and Secrets the
// sources delivered, merged by namespace/name. The agent replaces it whole
// on every change, so a worker compares snapshots by pointer to learn that
// something changed.
type objectSet struct {
	configMaps map[string]*corev1.ConfigMap // by namespace/name
	secrets    map[string]*corev1.Secret    // by namespace/name
}

// metaKey is the namespace/name of an object, with the default namespace
// for an empty one, as manifests may leave it out.
func metaKey(m metav1.ObjectMeta) string {
	ns := m.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	return ns + "/" + m.Name
}

// configMap returns the ConfigMap namespace/name, or nil.
func (s *objectSet) configMap(namespace, name string) *corev1.ConfigMap {
	if s == nil {
		return nil
	}
	return s.configMaps[namespace+"/"+name]
}

// secret returns the Secret namespace/name, or nil.
func (s *objectSet) secret(namespace, name string) *corev1.Secret {
	if s == nil {
		return nil
	}
	return s.secrets[namespace+"/"+name]
}

// objectNotFound is the error of a missing ConfigMap or Secret, worded as
// the API server's NotFound so that the waiting message reads as kubelet's.
func objectNotFound(kind, name string) error {
	return fmt.Errorf("%s %q not found: %w", kind, name, errdefs.ErrNotFound)
}

// configMapData returns a ConfigMap's data and binaryData as bytes.
func configMapData(cm *corev1.ConfigMap) map[string][]byte {
	out := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		out[k] = []byte(v)
	}
	maps.Copy(out, cm.BinaryData)
	return out
}

// secretData returns a Secret's data, with stringData merged over it as the
// API server does on write (a file-sourced Secret may carry stringData).
func secretData(s *corev1.Secret) map[string][]byte {
	out := maps.Clone(s.Data)
	if out == nil {
		out = map[string][]byte{}
	}
	for k, v := range s.StringData {
		out[k] = []byte(v)
	}
	return out
}

// escapeEnvValue keeps a value from a ConfigMap or Secret literal: the
// runtime expands $(VAR) in env values, which kubelet does not do for
// values read from objects.
func escapeEnvValue(v string) string { return strings.ReplaceAll(v, "$", "$$") }

// resolveEnv returns a copy of c whose envFrom and configMapKeyRef and
// secretKeyRef env entries are replaced by plain values read from objs, in
// kubelet's order: envFrom first (each key prefixed), then env, a later
// definition winning. A missing object or key that is not optional is an
// error naming it (errdefs.ErrNotFound). envFrom keys that are not valid
// variable names are skipped and returned, as kubelet skips them with an
// event.
func resolveEnv(c *corev1.Container, namespace string, objs *objectSet) (*corev1.Container, []string, error) {
	out := c.DeepCopy()
	if len(c.EnvFrom) == 0 && !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.ValueFrom != nil && (e.ValueFrom.ConfigMapKeyRef != nil || e.ValueFrom.SecretKeyRef != nil)
	}) {
		return out, nil, nil
	}
	var skipped []string
	fromEnvFrom := map[string]string{}
	for _, ef := range c.EnvFrom {
		var data map[string][]byte
		switch {
		case ef.ConfigMapRef != nil:
			cm := objs.configMap(namespace, ef.ConfigMapRef.Name)
			if cm == nil {
				if isOptional(ef.ConfigMapRef.Optional) {
					continue
				}
				return nil, nil, objectNotFound("configmap", ef.ConfigMapRef.Name)
			}
			data = configMapData(cm)
		case ef.SecretRef != nil:
			s := objs.secret(namespace, ef.SecretRef.Name)
			if s == nil {
				if isOptional(ef.SecretRef.Optional) {
					continue
				}
				return nil, nil, objectNotFound("secret", ef.SecretRef.Name)
			}
			data = secretData(s)
		}
		for _, k := range slices.Sorted(maps.Keys(data)) {
			name := ef.Prefix + k
			if errs := validation.IsEnvVarName(name); len(errs) > 0 {
				skipped = append(skipped, name)
				continue
			}
			fromEnvFrom[name] = string(data[k])
		}
	}
	env := make([]corev1.EnvVar, 0, len(fromEnvFrom)+len(c.Env))
	defined := map[string]bool{}
	for _, e := range c.Env {
		defined[e.Name] = true
	}
	// Variables that env redefines are left out: env wins, and dropping
	// them keeps $(VAR) references in env seeing the env value.
	for _, name := range slices.Sorted(maps.Keys(fromEnvFrom)) {
		if !defined[name] {
			env = append(env, corev1.EnvVar{Name: name, Value: escapeEnvValue(fromEnvFrom[name])})
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v, ok, err := lookupKey("configmap", "ConfigMap", namespace, ref.Name, ref.Key, ref.Optional, func() map[string][]byte {
				if cm := objs.configMap(namespace, ref.Name); cm != nil {
					return configMapData(cm)
				}
				return nil
			})
			if err != nil {
				return nil, nil, err
			}
			if !ok {
				continue
			}
			e = corev1.EnvVar{Name: e.Name, Value: escapeEnvValue(v)}
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok, err := lookupKey("secret", "Secret", namespace, ref.Name, ref.Key, ref.Optional, func() map[string][]byte {
				if s := objs.secret(namespace, ref.Name); s != nil {
					return secretData(s)
				}
				return nil
			})
			if err != nil {
				return nil, nil, err
			}
			if !ok {
				continue
			}
			e = corev1.EnvVar{Name: e.Name, Value: escapeEnvValue(v)}
		}
		env = append(env, e)
	}
	out.Env, out.EnvFrom = env, nil
	return out, skipped, nil
}

// lookupKey reads one key of an object for an env variable; ok is false
// when an optional object or key is missing, in which case kubelet leaves
// the variable out.
func lookupKey(kind, title, namespace, name, key string, optional *bool, data func() map[string][]byte) (string, bool, error) {
	d := data()
	if d == nil {
		if isOptional(optional) {
			return "", false, nil
		}
		return "", false, objectNotFound(kind, name)
	}
	v, ok := d[key]
	if !ok {
		if isOptional(optional) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("couldn't find key %s in %s %s/%s: %w", key, title, namespace, name, errdefs.ErrNotFound)
	}
	return string(v), true, nil
}

func isOptional(b *bool) bool { return b != nil && *b }

// volumeFile is one file of a volume's payload.
type volumeFile struct {
	data []byte
	mode os.FileMode
}

// volumePayload computes the files of a configMap, secret or projected
// volume from objs, keyed by their relative path. A missing optional object
// contributes nothing (an empty volume, as kubelet mounts it); a missing
// object, or an item naming a missing key, that is not optional is an
// error naming it.
func volumePayload(v *corev1.Volume, namespace string, objs *objectSet) (map[string]volumeFile, error) {
	files := map[string]volumeFile{}
	switch {
	case v.ConfigMap != nil:
		src := v.ConfigMap
		cm := objs.configMap(namespace, src.Name)
		if cm == nil {
			if isOptional(src.Optional) {
				return files, nil
			}
			return nil, objectNotFound("configmap", src.Name)
		}
		return files, project(files, "configmap", configMapData(cm), src.Items, modeOr(src.DefaultMode), isOptional(src.Optional))
	case v.Secret != nil:
		src := v.Secret
		s := objs.secret(namespace, src.SecretName)
		if s == nil {
			if isOptional(src.Optional) {
				return files, nil
			}
			return nil, objectNotFound("secret", src.SecretName)
		}
		return files, project(files, "secret", secretData(s), src.Items, modeOr(src.DefaultMode), isOptional(src.Optional))
	case v.Projected != nil:
		mode := modeOr(v.Projected.DefaultMode)
		for _, ps := range v.Projected.Sources {
			var err error
			switch {
			case ps.ConfigMap != nil:
				cm := objs.configMap(namespace, ps.ConfigMap.Name)
				if cm == nil {
					if isOptional(ps.ConfigMap.Optional) {
						continue
					}
					return nil, objectNotFound("configmap", ps.ConfigMap.Name)
				}
				err = project(files, "configmap", configMapData(cm), ps.ConfigMap.Items, mode, isOptional(ps.ConfigMap.Optional))
			case ps.Secret != nil:
				s := objs.secret(namespace, ps.Secret.Name)
				if s == nil {
					if isOptional(ps.Secret.Optional) {
						continue
					}
					return nil, objectNotFound("secret", ps.Secret.Name)
				}
				err = project(files, "secret", secretData(s), ps.Secret.Items, mode, isOptional(ps.Secret.Optional))
			default:
				err = fmt.Errorf("projected volume %s: only configMap and secret sources are supported: %w", v.Name, errdefs.ErrNotImplemented)
			}
			if err != nil {
				return nil, err
			}
		}
		return files, nil
	}
	return nil, fmt.Errorf("volume %s is not a configMap, secret or projected volume: %w", v.Name, errdefs.ErrInvalidArgument)
}

// modeOr is a volume's defaultMode, or kubelet's default.
func modeOr(m *int32) os.FileMode {
	if m == nil {
		return defaultVolumeMode
	}
	return os.FileMode(*m) & fs.ModePerm
}

// project adds the files of one object to files: every key under its own
// name, or only the listed items at their paths with their modes.
func project(files map[string]volumeFile, kind string, data map[string][]byte, items []corev1.KeyToPath, mode os.FileMode, optional bool) error {
	add := func(p string, f volumeFile) error {
		if err := checkVolumePath(p); err != nil {
			return err
		}
		p = path.Clean(p)
		if _, dup := files[p]; dup {
			return fmt.Errorf("path %q is projected twice: %w", p, errdefs.ErrInvalidArgument)
		}
		files[p] = f
		return nil
	}
	if len(items) == 0 {
		for k, v := range data {
			if err := add(k, volumeFile{data: v, mode: mode}); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return fmt.Errorf("%s references non-existent config key: %s: %w", kind, it.Key, errdefs.ErrNotFound)
		}
		m := mode
		if it.Mode != nil {
			m = os.FileMode(*it.Mode) & fs.ModePerm
		}
		if err := add(it.Path, volumeFile{data: v, mode: m}); err != nil {
			return err
		}
	}
	return nil
}

// checkVolumePath refuses a file path that would leave the volume or
// collide with the atomic writer's own "..*" entries; the API server
// rejects these too, but a file source is only as careful as its author.
func checkVolumePath(p string) error {
	if p == "" || path.IsAbs(p) {
		return fmt.Errorf("volume file path %q must be relative and non-empty: %w", p, errdefs.ErrInvalidArgument)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." || strings.HasPrefix(part, "..") {
			return fmt.Errorf("volume file path %q must not contain \"..\" or start an element with it: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// Names of the atomic writer's entries in a volume directory.
const (
	volumeDataLink    = "..data"
	volumeDataTmpLink = "..data_tmp"
)

// writeVolume makes dir hold exactly files, kubelet's AtomicWriter way: the
// files are written into a fresh timestamped directory "..<ts>", the
// symlink "..data" is switched to it by renaming a new "..data_tmp" link
// over it (one atomic rename), and each top-level name is a symlink into
// "..data". A reader therefore sees the complete old set or the complete
// new one, never a mix or a half-written file. It reports whether it
// changed anything; an unchanged payload is not rewritten.
func writeVolume(dir string, files map[string]volumeFile, now time.Time) (bool, error) {
	oldTarget, err := os.Readlink(filepath.Join(dir, volumeDataLink))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("volume %s: %w", dir, err)
	}
	if oldTarget != "" && sameFiles(filepath.Join(dir, oldTarget), files) {
		return false, linkTopLevel(dir, files)
	}
	tsDir, err := os.MkdirTemp(dir, now.UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, fmt.Errorf("volume %s: %w", dir, err)
	}
	// MkdirTemp makes it 0700; containers running as any user read it.
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return false, fmt.Errorf("volume %s: %w", dir, err)
	}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		f := files[p]
		full := filepath.Join(tsDir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return false, fmt.Errorf("volume %s: %w", dir, err)
		}
		if err := os.WriteFile(full, f.data, f.mode); err != nil {
			return false, fmt.Errorf("volume %s: %w", dir, err)
		}
		// WriteFile's mode is cut by the umask.
		if err := os.Chmod(full, f.mode); err != nil {
			return false, fmt.Errorf("volume %s: %w", dir, err)
		}
	}
	tmpLink := filepath.Join(dir, volumeDataTmpLink)
	if err := os.Remove(tmpLink); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("volume %s: %w", dir, err)
	}
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		return false, fmt.Errorf("volume %s: %w", dir, err)
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, volumeDataLink)); err != nil {
		return false, fmt.Errorf("volume %s: swap %s: %w", dir, volumeDataLink, err)
	}
	if err := linkTopLevel(dir, files); err != nil {
		return true, err
	}
	if err := unlinkStale(dir, files); err != nil {
		return true, err
	}
	if oldTarget != "" {
		if err := os.RemoveAll(filepath.Join(dir, oldTarget)); err != nil {
			return true, fmt.Errorf("volume %s: remove old payload: %w", dir, err)
		}
	}
	return true, nil
}

// topLevel returns the first element of each file path.
func topLevel(files map[string]volumeFile) map[string]bool {
	out := map[string]bool{}
	for p := range files {
		first, _, _ := strings.Cut(p, "/")
		out[first] = true
	}
	return out
}

// linkTopLevel makes each top-level name a symlink into ..data.
func linkTopLevel(dir string, files map[string]volumeFile) error {
	for name := range topLevel(files) {
		link := filepath.Join(dir, name)
		want := filepath.Join(volumeDataLink, name)
		if got, err := os.Readlink(link); err == nil && got == want {
			continue
		}
		if err := os.RemoveAll(link); err != nil {
			return fmt.Errorf("volume %s: %w", dir, err)
		}
		if err := os.Symlink(want, link); err != nil {
			return fmt.Errorf("volume %s: %w", dir, err)
		}
	}
	return nil
}

// unlinkStale removes the top-level links of names the payload no longer
// has; the writer's own "..*" entries are left alone.
func unlinkStale(dir string, files map[string]volumeFile) error {
	keep := topLevel(files)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("volume %s: %w", dir, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") || keep[e.Name()] {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("volume %s: %w", dir, err)
		}
	}
	return nil
}

// sameFiles says whether the payload directory dir holds exactly files,
// with the same contents and modes.
func sameFiles(dir string, files map[string]volumeFile) bool {
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		f, ok := files[filepath.ToSlash(rel)]
		if !ok {
			return fs.ErrNotExist
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode().Perm() != f.mode {
			return fs.ErrInvalid
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(data, f.data) {
			return fs.ErrInvalid
		}
		n++
		return nil
	})
	return err == nil && n == len(files)
}

// projectVolumes writes every configMap, secret and projected volume of the
// pod into the sandbox's volume directories. It stops at the first volume
// whose objects cannot be resolved; the error names the object.
func projectVolumes(pod *runtime.Pod, sb *runtime.Sandbox, objs *objectSet, now time.Time) error {
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		if v.ConfigMap == nil && v.Secret == nil && v.Projected == nil {
			continue
		}
		files, err := volumePayload(v, pod.Namespace, objs)
		if err != nil {
			return err
		}
		dir := sb.VolumePath(v.Name)
		// The sandbox makes the directory (a tmpfs for Secrets); making
		// it here could put Secrets on disk.
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("volume %s: directory %s not prepared by the sandbox: %w", v.Name, dir, errdefs.ErrFailedPrecondition)
		}
		if _, err := writeVolume(dir, files, now); err != nil {
			return err
		}
	}
	return nil
}

// projectsVolumes says whether the pod has volumes filled from objects.
func projectsVolumes(spec *corev1.PodSpec) bool {
	return slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool {
		return v.ConfigMap != nil || v.Secret != nil || v.Projected != nil
	})
}

// sourceObjects is one source's last full sets of ConfigMaps and Secrets.
type sourceObjects struct {
	configMaps []*corev1.ConfigMap
	secrets    []*corev1.Secret
}

// mergeObjects merges the sources' objects by namespace/name; as for
// DaemonSets, the source registered first wins a name both deliver.
func mergeObjects(order []string, per map[string]sourceObjects) *objectSet {
	set := &objectSet{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	for _, src := range order {
		for _, cm := range per[src].configMaps {
			if k := metaKey(cm.ObjectMeta); set.configMaps[k] == nil {
				set.configMaps[k] = cm
			}
		}
		for _, s := range per[src].secrets {
			if k := metaKey(s.ObjectMeta); set.secrets[k] == nil {
				set.secrets[k] = s
			}
		}
	}
	return set
}

// checkObjects drops the objects of a source update that have no name or
// repeat an earlier one's, returning an error for each, as the agent
// treats bad DaemonSets: the rest of the set still applies.
func checkObjects(source string, objs sourceObjects) (sourceObjects, []error) {
	var out sourceObjects
	var errs []error
	seen := map[string]bool{}
	ok := func(kind string, m metav1.ObjectMeta) bool {
		key := metaKey(m)
		switch {
		case m.Name == "":
			errs = append(errs, fmt.Errorf("source %s: %s without metadata.name: %w", source, kind, errdefs.ErrInvalidArgument))
			return false
		case seen[kind+" "+key]:
			errs = append(errs, fmt.Errorf("source %s: %s %s defined twice; the first is used: %w", source, kind, key, errdefs.ErrAlreadyExists))
			return false
		}
		seen[kind+" "+key] = true
		return true
	}
	for _, cm := range objs.configMaps {
		if cm != nil && ok(store.KindConfigMap, cm.ObjectMeta) {
			out.configMaps = append(out.configMaps, cm)
		}
	}
	for _, sec := range objs.secrets {
		if sec != nil && ok(store.KindSecret, sec.ObjectMeta) {
			out.secrets = append(out.secrets, sec)
		}
	}
	return out, errs
}

// objectRecords encodes a source's checked objects for the store, which
// seals the Secrets.
func objectRecords(source string, objs sourceObjects, now time.Time) ([]store.ObjectRecord, error) {
	recs := make([]store.ObjectRecord, 0, len(objs.configMaps)+len(objs.secrets))
	add := func(kind string, m metav1.ObjectMeta, obj any) error {
		key := metaKey(m)
		b, err := json.Marshal(obj)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", kind, key, err)
		}
		recs = append(recs, store.ObjectRecord{Source: source, Kind: kind, Key: key, Object: b, UpdatedAt: now})
		return nil
	}
	for _, cm := range objs.configMaps {
		if err := add(store.KindConfigMap, cm.ObjectMeta, cm); err != nil {
			return nil, err
		}
	}
	for _, s := range objs.secrets {
		if err := add(store.KindSecret, s.ObjectMeta, s); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// objectsFromRecords decodes the stored objects per source; undecodable
// ones are returned as errors and left out.
func objectsFromRecords(recs []store.ObjectRecord) (map[string]sourceObjects, []error) {
	out := map[string]sourceObjects{}
	var errs []error
	for _, rec := range recs {
		so := out[rec.Source]
		switch rec.Kind {
		case store.KindConfigMap:
			var cm corev1.ConfigMap
			if err := json.Unmarshal(rec.Object, &cm); err != nil {
				errs = append(errs, fmt.Errorf("stored ConfigMap %s of source %s: %w: %w", rec.Key, rec.Source, errdefs.ErrDataLoss, err))
				continue
			}
			so.configMaps = append(so.configMaps, &cm)
		case store.KindSecret:
			var s corev1.Secret
			if err := json.Unmarshal(rec.Object, &s); err != nil {
				errs = append(errs, fmt.Errorf("stored Secret %s of source %s: %w: %w", rec.Key, rec.Source, errdefs.ErrDataLoss, err))
				continue
			}
			so.secrets = append(so.secrets, &s)
		}
		out[rec.Source] = so
	}
	return out, errs
}
