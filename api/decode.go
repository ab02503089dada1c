package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"go.yaml.in/yaml/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"
)

// Object is one object decoded from a manifest; exactly one of DaemonSet,
// Pod, ConfigMap and Secret is set.
type Object struct {
	// Doc is the 1-based number of the document of the source that held the
	// object (several objects share it when the document is a List).
	Doc int
	// DaemonSet is set for an apps/v1 DaemonSet.
	DaemonSet *appsv1.DaemonSet
	// Pod is set for a v1 (static) Pod.
	Pod *corev1.Pod
	// ConfigMap is set for a v1 ConfigMap.
	ConfigMap *corev1.ConfigMap
	// Secret is set for a v1 Secret.
	Secret *corev1.Secret
}

// ManifestError is one problem in one document of a manifest source, worded
// like the Kubernetes API server's errors; it is an errdefs.ErrInvalidArgument.
type ManifestError struct {
	// Source names where the manifest came from, usually a file name.
	Source string
	// Doc is the 1-based document number within Source.
	Doc int
	// Field is the path of the offending field, e.g. "spec.selector"; empty
	// when the problem concerns the document as a whole.
	Field string
	// Detail says what is wrong or what was expected.
	Detail string
}

// Error renders "source: document N: field: detail".
func (e *ManifestError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: document %d: ", e.Source, e.Doc)
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Detail)
	return b.String()
}

// Unwrap classifies every manifest problem as an invalid argument, so callers
// can tell a user's mistake from an I/O failure with errdefs.IsInvalidArgument.
func (e *ManifestError) Unwrap() error { return errdefs.ErrInvalidArgument }

// problem is a ManifestError before the source and document are known.
type problem struct {
	field  string
	detail string
}

// decoded is one object together with the field path prefix under which its
// document holds it ("" or "items[3]"), so that later validation errors point
// into the right List item.
type decoded struct {
	prefix string
	ds     *appsv1.DaemonSet
	pod    *corev1.Pod
	cm     *corev1.ConfigMap
	secret *corev1.Secret
}

// Decode strictly decodes every document of a YAML ("---" separated) or JSON
// stream into DaemonSets, Pods, ConfigMaps and Secrets. A document may also be
// a v1 List, PodList, ConfigMapList, SecretList or apps/v1 DaemonSetList.
// Empty documents are skipped. Unknown and duplicated fields, and any kind
// other than apps/v1 DaemonSet and v1 Pod, ConfigMap and Secret, are errors;
// the returned error joins one ManifestError per problem, naming the source,
// the document and the field path. Objects are neither defaulted nor
// validated; see DecodeAndValidate.
func Decode(source string, data []byte) ([]Object, error) {
	objs, err := collect(source, data, nil)
	if err != nil {
		return nil, err
	}
	return objs, nil
}

// DecodeAndValidate decodes like Decode, then defaults and validates every
// object as the API server would. The error joins one ManifestError per
// problem of every bad document; the objects of the good documents are
// returned with it, for callers that apply what is valid.
func DecodeAndValidate(source string, data []byte) ([]Object, error) {
	return collect(source, data, func(o decoded) field.ErrorList {
		switch {
		case o.ds != nil:
			SetDefaultsDaemonSet(o.ds)
			return ValidateDaemonSet(o.ds)
		case o.cm != nil:
			SetDefaultsConfigMap(o.cm)
			return ValidateConfigMap(o.cm)
		case o.secret != nil:
			SetDefaultsSecret(o.secret)
			return ValidateSecret(o.secret)
		}
		SetDefaultsPod(o.pod)
		return ValidatePod(o.pod)
	})
}

// collect decodes data, runs check (if any) on every object, and returns the
// objects of the documents without problems plus an error listing them all.
func collect(source string, data []byte, check func(decoded) field.ErrorList) ([]Object, error) {
	docs, streamErr := decodeAll(data)
	var errs []error
	var objs []Object
	for _, d := range docs {
		bad := len(d.problems) > 0
		for _, p := range d.problems {
			errs = append(errs, &ManifestError{Source: source, Doc: d.num, Field: p.field, Detail: p.detail})
		}
		var docObjs []Object
		for _, o := range d.objects {
			if check != nil {
				for _, fe := range check(o) {
					errs = append(errs, &ManifestError{Source: source, Doc: d.num, Field: joinPath(o.prefix, fe.Field), Detail: fe.ErrorBody()})
					bad = true
				}
			}
			docObjs = append(docObjs, Object{Doc: d.num, DaemonSet: o.ds, Pod: o.pod, ConfigMap: o.cm, Secret: o.secret})
		}
		if !bad {
			objs = append(objs, docObjs...)
		}
	}
	if streamErr != nil {
		errs = append(errs, &ManifestError{Source: source, Doc: len(docs) + 1, Detail: streamErr.Error()})
	}
	return objs, errors.Join(errs...)
}

// document is the outcome of decoding one document of a stream.
type document struct {
	num      int
	objects  []decoded
	problems []problem
}

// decodeAll splits data into documents and decodes each. The error reports a
// stream that cannot be split further; documents before it are returned.
func decodeAll(data []byte) ([]document, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return decodeJSONStream(trimmed)
	}
	var docs []document
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		chunk, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, err
		}
		d := document{num: len(docs) + 1}
		d.objects, d.problems = decodeYAMLDocument(chunk)
		docs = append(docs, d)
	}
}

// decodeJSONStream decodes one or more concatenated JSON objects.
func decodeJSONStream(data []byte) ([]document, error) {
	var docs []document
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			var syn *json.SyntaxError
			if errors.As(err, &syn) {
				line := bytes.Count(data[:min(int(syn.Offset), len(data))], []byte("\n")) + 1
				return docs, fmt.Errorf("line %d: %w", line, err)
			}
			return docs, err
		}
		d := document{num: len(docs) + 1}
		d.objects, d.problems = decodeJSONDocument(raw, "")
		docs = append(docs, d)
	}
}

// decodeYAMLDocument decodes one YAML document. Duplicate keys are found on
// the YAML tree itself, because converting YAML to JSON keeps only one of them.
func decodeYAMLDocument(doc []byte) ([]decoded, []problem) {
	var tree any
	if err := yaml.Unmarshal(doc, &tree); err != nil {
		return nil, []problem{{detail: err.Error()}}
	}
	if tree == nil {
		return nil, nil // empty document, or only comments
	}
	if _, ok := tree.(map[any]any); !ok {
		return nil, []problem{{detail: "not an object: expected a mapping with apiVersion and kind"}}
	}
	var ordered yaml.MapSlice
	if err := yaml.Unmarshal(doc, &ordered); err != nil {
		return nil, []problem{{detail: err.Error()}}
	}
	var probs []problem
	findDuplicateKeys(ordered, "", &probs)
	if len(probs) > 0 {
		return nil, probs
	}
	js, err := sigsyaml.YAMLToJSON(doc)
	if err != nil {
		return nil, []problem{{detail: err.Error()}}
	}
	return decodeJSONDocument(js, "")
}

// findDuplicateKeys walks a YAML tree decoded into MapSlices (which keep
// repeated keys) and reports every key seen twice in one mapping.
func findDuplicateKeys(node any, path string, probs *[]problem) {
	switch n := node.(type) {
	case yaml.MapSlice:
		seen := map[string]bool{}
		for _, item := range n {
			key := fmt.Sprint(item.Key)
			child := joinPath(path, key)
			if seen[key] {
				*probs = append(*probs, problem{field: child, detail: "duplicate field"})
			}
			seen[key] = true
			findDuplicateKeys(item.Value, child, probs)
		}
	case []any:
		for i, v := range n {
			findDuplicateKeys(v, fmt.Sprintf("%s[%d]", path, i), probs)
		}
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// listKinds are the list kinds a document may use to carry several objects,
// with the apiVersion/kind their items default to when they omit them.
var listKinds = map[[2]string][2]string{
	{"v1", "List"}:               {"", ""},
	{"v1", "PodList"}:            {"v1", "Pod"},
	{"apps/v1", "DaemonSetList"}: {"apps/v1", "DaemonSet"},
	{"v1", "ConfigMapList"}:      {"v1", "ConfigMap"},
	{"v1", "SecretList"}:         {"v1", "Secret"},
}

// listFields are the fields a List document may have.
var listFields = map[string]bool{"apiVersion": true, "kind": true, "metadata": true, "items": true}

// decodeJSONDocument decodes one JSON object. prefix is the path of the
// object within its document, for List items.
func decodeJSONDocument(data []byte, prefix string) ([]decoded, []problem) {
	var generic map[string]any
	dups, err := sigsjson.UnmarshalStrict(data, &generic, sigsjson.DisallowDuplicateFields)
	if err != nil {
		return nil, []problem{{field: prefix, detail: err.Error()}}
	}
	if generic == nil {
		return nil, nil // "null": an empty document
	}
	if probs := strictProblems(dups, prefix, "duplicate field"); len(probs) > 0 {
		return nil, probs
	}
	apiVersion, _ := generic["apiVersion"].(string)
	kind, _ := generic["kind"].(string)
	switch {
	case apiVersion == "apps/v1" && kind == "DaemonSet":
		ds := &appsv1.DaemonSet{}
		if probs := decodeTyped(data, ds, generic, prefix); len(probs) > 0 {
			return nil, probs
		}
		return []decoded{{prefix: prefix, ds: ds}}, nil
	case apiVersion == "v1" && kind == "Pod":
		pod := &corev1.Pod{}
		if probs := decodeTyped(data, pod, generic, prefix); len(probs) > 0 {
			return nil, probs
		}
		return []decoded{{prefix: prefix, pod: pod}}, nil
	case apiVersion == "v1" && kind == "ConfigMap":
		cm := &corev1.ConfigMap{}
		if probs := decodeTyped(data, cm, generic, prefix); len(probs) > 0 {
			return nil, probs
		}
		return []decoded{{prefix: prefix, cm: cm}}, nil
	case apiVersion == "v1" && kind == "Secret":
		secret := &corev1.Secret{}
		if probs := decodeTyped(data, secret, generic, prefix); len(probs) > 0 {
			return nil, probs
		}
		return []decoded{{prefix: prefix, secret: secret}}, nil
	}
	itemDefault, isList := listKinds[[2]string{apiVersion, kind}]
	switch {
	case isList && prefix == "":
		return decodeList(generic, itemDefault)
	case apiVersion == "":
		return nil, []problem{{field: joinPath(prefix, "apiVersion"), detail: "Required value: expected apps/v1 (DaemonSet) or v1 (Pod, ConfigMap, Secret)"}}
	case kind == "":
		return nil, []problem{{field: joinPath(prefix, "kind"), detail: "Required value: expected DaemonSet, Pod, ConfigMap or Secret"}}
	default:
		return nil, []problem{{field: prefix, detail: fmt.Sprintf("unsupported object apiVersion %q, kind %q: expected apps/v1 DaemonSet or v1 Pod, ConfigMap or Secret", apiVersion, kind)}}
	}
}

// decodeList decodes the items of a List document one by one, so that each
// item's errors carry its index.
func decodeList(generic map[string]any, itemDefault [2]string) ([]decoded, []problem) {
	var probs []problem
	keys := make([]string, 0, len(generic))
	for k := range generic {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !listFields[k] {
			probs = append(probs, problem{field: k, detail: "unknown field"})
		}
	}
	items, ok := generic["items"].([]any)
	if !ok && generic["items"] != nil {
		probs = append(probs, problem{field: "items", detail: "must be a list"})
	}
	if len(probs) > 0 {
		return nil, probs
	}
	var out []decoded
	for i, item := range items {
		prefix := fmt.Sprintf("items[%d]", i)
		m, ok := item.(map[string]any)
		if !ok {
			probs = append(probs, problem{field: prefix, detail: "not an object"})
			continue
		}
		if _, set := m["apiVersion"]; !set && itemDefault[0] != "" {
			m["apiVersion"] = itemDefault[0]
		}
		if _, set := m["kind"]; !set && itemDefault[1] != "" {
			m["kind"] = itemDefault[1]
		}
		data, err := json.Marshal(m)
		if err != nil {
			probs = append(probs, problem{field: prefix, detail: err.Error()})
			continue
		}
		objs, p := decodeJSONDocument(data, prefix)
		out = append(out, objs...)
		probs = append(probs, p...)
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return out, nil
}

// decodeTyped decodes data into obj, reporting unknown fields and values of
// the wrong type with their paths.
func decodeTyped(data []byte, obj any, generic map[string]any, prefix string) []problem {
	unknown, err := sigsjson.UnmarshalStrict(data, obj, sigsjson.DisallowUnknownFields)
	if err != nil {
		return []problem{typeProblem(err, generic, prefix)}
	}
	return strictProblems(unknown, prefix, "unknown field")
}

// strictProblems turns the strict errors of sigs.k8s.io/json, which carry the
// full field path, into problems; what kind of strict error they are is known
// from the single strict option the caller enabled.
func strictProblems(errs []error, prefix, detail string) []problem {
	var probs []problem
	for _, e := range errs {
		var fe sigsjson.FieldError
		if errors.As(e, &fe) {
			probs = append(probs, problem{field: joinPath(prefix, fe.FieldPath()), detail: detail})
		} else {
			probs = append(probs, problem{field: prefix, detail: e.Error()})
		}
	}
	return probs
}

// typeProblem describes a decoding failure. Quantities report their parse
// errors without any path, so a failure that is not a type error is looked
// for among the document's quantity fields.
func typeProblem(err error, generic map[string]any, prefix string) problem {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return problem{field: joinPath(prefix, te.Field), detail: fmt.Sprintf("invalid value: cannot decode %s into %s", te.Value, te.Type)}
	}
	if p, found := findBadQuantity(generic, prefix); found {
		return p
	}
	return problem{field: prefix, detail: err.Error()}
}

// quantityMaps are the keys whose values are maps of resource quantities, and
// quantityFields the keys whose value is one quantity.
var (
	quantityMaps   = map[string]bool{"limits": true, "requests": true, "overhead": true}
	quantityFields = map[string]bool{"sizeLimit": true}
)

func findBadQuantity(node any, path string) (problem, bool) {
	switch n := node.(type) {
	case map[string]any:
		keys := make([]string, 0, len(n))
		for k := range n {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			child := joinPath(path, k)
			if quantityFields[k] {
				if p, bad := checkQuantity(n[k], child); bad {
					return p, true
				}
			}
			if m, ok := n[k].(map[string]any); ok && quantityMaps[k] {
				names := make([]string, 0, len(m))
				for name := range m {
					names = append(names, name)
				}
				sort.Strings(names)
				for _, name := range names {
					if p, bad := checkQuantity(m[name], joinPath(child, name)); bad {
						return p, true
					}
				}
			}
			if p, found := findBadQuantity(n[k], child); found {
				return p, true
			}
		}
	case []any:
		for i, v := range n {
			if p, found := findBadQuantity(v, fmt.Sprintf("%s[%d]", path, i)); found {
				return p, true
			}
		}
	}
	return problem{}, false
}

func checkQuantity(v any, path string) (problem, bool) {
	s := fmt.Sprint(v)
	if _, err := resource.ParseQuantity(s); err != nil {
		return problem{field: path, detail: fmt.Sprintf("invalid quantity %q: %v", s, err)}, true
	}
	return problem{}, false
}
