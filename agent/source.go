package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/daemonlet/daemonlet/api"
)

// Source names, as kubelet writes them in the kubernetes.io/config.source
// annotation of static pods.
const (
	SourceFile = "file"
	SourceHTTP = "http"
)

// DefaultCheckFrequency is kubelet's fileCheckFrequency and
// httpCheckFrequency: how often a source re-reads even without a change
// notification.
const DefaultCheckFrequency = 20 * time.Second

// Source is one origin of desired DaemonSets. Run sends a full set on every
// change (so that a DaemonSet missing from the latest read is removed), or
// an update with Err when the source cannot be read at all.
type Source interface {
	// Name is the source's name in SourceUpdate.Source (SourceFile, ...).
	Name() string
	// Run reads the source until ctx ends, sending to updates.
	Run(ctx context.Context, updates chan<- SourceUpdate)
	// Report describes the source's last read, for the /sources endpoint.
	Report() SourceReport
}

// SourceReport is what a source knows of its own reads: when it last read
// successfully and what went wrong, per file where it has files.
type SourceReport struct {
	Name string `json:"name"`
	// Location is the manifest path or URL.
	Location string `json:"location"`
	// LastAttempt is the time of the last read, good or bad.
	LastAttempt time.Time `json:"lastAttempt,omitzero"`
	// LastSync is the time of the last read that produced a set.
	LastSync time.Time `json:"lastSync,omitzero"`
	// Error is why the last read produced no set (unreachable URL, non-200
	// answer, unreadable body); empty after a good read.
	Error string `json:"error,omitempty"`
	// FileErrors lists the manifest files (or the URL) whose content was
	// rejected; their previous objects, if any, stay in the set.
	FileErrors []FileError `json:"fileErrors,omitempty"`
}

// FileError is one rejected manifest, with the error that names its
// document and field.
type FileError struct {
	File  string `json:"file"`
	Error string `json:"error"`
}

// manifest is what one manifest (a file or an HTTP body) defines.
type manifest struct {
	daemonSets []*appsv1.DaemonSet
	configMaps []*corev1.ConfigMap
	secrets    []*corev1.Secret
}

// count is the number of objects the manifest defines.
func (m manifest) count() int { return len(m.daemonSets) + len(m.configMaps) + len(m.secrets) }

// decodeManifest decodes one manifest into the DaemonSets (static Pods
// wrapped with api.StaticPodDaemonSet), ConfigMaps and Secrets it defines.
// The manifest is taken whole or not at all, so that a half-valid edit
// never removes the objects of its valid half.
func decodeManifest(name string, data []byte) (manifest, error) {
	var m manifest
	data, err := extractObjects(name, data, &m)
	if err != nil {
		return manifest{}, err
	}
	objs, err := api.DecodeAndValidate(name, data)
	if err != nil {
		return manifest{}, err
	}
	m.daemonSets = make([]*appsv1.DaemonSet, 0, len(objs))
	seen := map[string]int{}
	for _, o := range objs {
		var ds *appsv1.DaemonSet
		switch {
		case o.DaemonSet != nil:
			ds = o.DaemonSet
		case o.Pod != nil:
			ds = api.StaticPodDaemonSet(o.Pod)
		default:
			return manifest{}, fmt.Errorf("%s: document %d: neither a DaemonSet nor a Pod: %w", name, o.Doc, errdefs.ErrInvalidArgument)
		}
		key := objectKey(ds)
		if first, dup := seen[key]; dup {
			return manifest{}, fmt.Errorf("%s: document %d: DaemonSet %s is already defined by document %d: %w", name, o.Doc, key, first, errdefs.ErrInvalidArgument)
		}
		seen[key] = o.Doc
		m.daemonSets = append(m.daemonSets, ds)
	}
	return m, nil
}

// defaultNamespace sets the default namespace on an object without one.
func defaultNamespace(m *metav1.ObjectMeta) {
	if m.Namespace == "" {
		m.Namespace = metav1.NamespaceDefault
	}
}

// extractObjects takes the v1 ConfigMap and Secret documents out of a
// manifest into m, blanking them out (keeping the document count, so that
// api's errors still number documents as the user wrote them) for api to
// decode the rest. They are decoded here rather than by
// api.DecodeAndValidate because api validates them as the server does, with
// the namespace required (the server takes it from the path), and static
// manifests may leave it out. A stream it cannot split is returned
// unchanged for api to report.
func extractObjects(name string, data []byte, m *manifest) ([]byte, error) {
	var docs [][]byte
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	isJSON := len(trimmed) > 0 && trimmed[0] == '{'
	if isJSON {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		for {
			var raw json.RawMessage
			if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return data, nil
			}
			docs = append(docs, raw)
		}
	} else {
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return data, nil
			}
			docs = append(docs, doc)
		}
	}
	found := false
	seen := map[string]int{}
	for i, doc := range docs {
		var tm metav1.TypeMeta
		if yaml.Unmarshal(doc, &tm) != nil || tm.APIVersion != "v1" || (tm.Kind != "ConfigMap" && tm.Kind != "Secret") {
			continue
		}
		where := fmt.Sprintf("%s: document %d (%s)", name, i+1, tm.Kind)
		var meta *metav1.ObjectMeta
		var errs field.ErrorList
		// The namespace is defaulted first, as the server takes it from the
		// request path; api's validation then checks what the API server
		// checks.
		if tm.Kind == "ConfigMap" {
			cm := &corev1.ConfigMap{}
			if err := yaml.UnmarshalStrict(doc, cm); err != nil {
				return nil, fmt.Errorf("%s: %v: %w", where, err, errdefs.ErrInvalidArgument)
			}
			defaultNamespace(&cm.ObjectMeta)
			errs = api.ValidateConfigMap(cm)
			meta = &cm.ObjectMeta
			m.configMaps = append(m.configMaps, cm)
		} else {
			sec := &corev1.Secret{}
			if err := yaml.UnmarshalStrict(doc, sec); err != nil {
				return nil, fmt.Errorf("%s: %v: %w", where, err, errdefs.ErrInvalidArgument)
			}
			defaultNamespace(&sec.ObjectMeta)
			api.SetDefaultsSecret(sec)
			errs = api.ValidateSecret(sec)
			meta = &sec.ObjectMeta
			m.secrets = append(m.secrets, sec)
		}
		if len(errs) > 0 {
			return nil, fmt.Errorf("%s: %v: %w", where, errs.ToAggregate(), errdefs.ErrInvalidArgument)
		}
		id := tm.Kind + " " + meta.Namespace + "/" + meta.Name
		if first, dup := seen[id]; dup {
			return nil, fmt.Errorf("%s: %s is already defined by document %d: %w", where, id, first, errdefs.ErrInvalidArgument)
		}
		seen[id] = i + 1
		docs[i] = []byte("# taken out: " + tm.Kind + "\n") // an empty document to api
		found = true
	}
	if !found {
		return data, nil
	}
	// Rebuilt as YAML documents, JSON ones included (JSON is YAML), since
	// a blanked-out first document leaves no JSON object to start with.
	var out bytes.Buffer
	for _, doc := range docs {
		out.WriteString("---\n")
		out.Write(doc)
		if !bytes.HasSuffix(doc, []byte("\n")) {
			out.WriteString("\n")
		}
	}
	return out.Bytes(), nil
}

// objectKey is the namespace/name the agent merges sources by.
func objectKey(ds *appsv1.DaemonSet) string {
	ns := ds.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	return ns + "/" + ds.Name
}

// sendUpdate delivers u unless ctx ends first; it reports whether it did.
func sendUpdate(ctx context.Context, updates chan<- SourceUpdate, u SourceUpdate) bool {
	select {
	case updates <- u:
		return true
	case <-ctx.Done():
		return false
	}
}
