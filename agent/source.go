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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// decodeManifest decodes one manifest (a file or an HTTP body) into the
// DaemonSets it defines, wrapping static Pods with api.StaticPodDaemonSet.
// The manifest is taken whole or not at all (err), so that a half-valid edit
// never removes the objects of its valid half. ConfigMap and Secret
// documents are skipped and returned in skipped, one error each naming the
// manifest and the document, so that a manifest bundling a DaemonSet with
// its ConfigMap still runs the DaemonSet.
func decodeManifest(name string, data []byte) (dss []*appsv1.DaemonSet, skipped []error, err error) {
	data, skipped = skipUnsupportedKinds(name, data)
	objs, err := api.DecodeAndValidate(name, data)
	if err != nil {
		return nil, skipped, err
	}
	dss = make([]*appsv1.DaemonSet, 0, len(objs))
	seen := map[string]int{}
	for _, o := range objs {
		var ds *appsv1.DaemonSet
		switch {
		case o.DaemonSet != nil:
			ds = o.DaemonSet
		case o.Pod != nil:
			ds = api.StaticPodDaemonSet(o.Pod)
		default:
			return nil, skipped, fmt.Errorf("%s: document %d: neither a DaemonSet nor a Pod: %w", name, o.Doc, errdefs.ErrInvalidArgument)
		}
		key := objectKey(ds)
		if first, dup := seen[key]; dup {
			return nil, skipped, fmt.Errorf("%s: document %d: DaemonSet %s is already defined by document %d: %w", name, o.Doc, key, first, errdefs.ErrInvalidArgument)
		}
		seen[key] = o.Doc
		dss = append(dss, ds)
	}
	return dss, skipped, nil
}

// notYetSupportedKinds are the v1 kinds a manifest may hold next to its
// DaemonSets that daemonlet will serve to pods later; until then they are
// skipped with a report rather than failing the whole manifest.
var notYetSupportedKinds = map[string]bool{"ConfigMap": true, "Secret": true}

// skipUnsupportedKinds blanks out the documents of a not-yet-supported kind,
// keeping the document count, so that api's errors still number documents
// as the user wrote them. A stream it cannot split is returned unchanged for
// api to report.
func skipUnsupportedKinds(name string, data []byte) ([]byte, []error) {
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
	var skipped []error
	for i, doc := range docs {
		var tm metav1.TypeMeta
		if yaml.Unmarshal(doc, &tm) != nil || tm.APIVersion != "v1" || !notYetSupportedKinds[tm.Kind] {
			continue
		}
		skipped = append(skipped, fmt.Errorf("%s: document %d: kind %s is not yet supported; the document is skipped: %w", name, i+1, tm.Kind, errdefs.ErrNotImplemented))
		docs[i] = []byte("# skipped: " + tm.Kind + "\n") // an empty document to api
	}
	if len(skipped) == 0 {
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
	return out.Bytes(), skipped
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
