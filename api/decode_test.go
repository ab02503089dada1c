package api

import (
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
)

const minimalDS = `apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: ds
spec:
  selector:
    matchLabels: {app: ds}
  template:
    metadata:
      labels: {app: ds}
    spec:
      containers:
      - name: c
        image: busybox:1.36
`

func TestDecodeValid(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		data     string
		wantDocs []int
		wantKind []string
	}{
		{name: "single YAML", data: minimalDS, wantDocs: []int{1}, wantKind: []string{"DaemonSet"}},
		{name: "leading separator", data: "---\n" + minimalDS, wantDocs: []int{1}, wantKind: []string{"DaemonSet"}},
		{name: "empty input", data: "", wantDocs: nil},
		{name: "only comments", data: "# nothing here\n", wantDocs: nil},
		{name: "multi-document file with empty documents", file: "testdata/multi.yaml", wantDocs: []int{2, 3}, wantKind: []string{"DaemonSet", "Pod"}},
		{name: "JSON List", file: "testdata/list.json", wantDocs: []int{1, 1}, wantKind: []string{"DaemonSet", "Pod"}},
		{
			name:     "concatenated JSON objects",
			data:     `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"a","image":"x"}]}}` + "\n" + `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b"},"spec":{"containers":[{"name":"b","image":"x"}]}}`,
			wantDocs: []int{1, 2},
			wantKind: []string{"Pod", "Pod"},
		},
		{
			name:     "PodList items without apiVersion and kind",
			data:     `{"apiVersion":"v1","kind":"PodList","items":[{"metadata":{"name":"a"},"spec":{"containers":[{"name":"a","image":"x"}]}}]}`,
			wantDocs: []int{1},
			wantKind: []string{"Pod"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.data)
			if tc.file != "" {
				var err error
				if data, err = os.ReadFile(tc.file); err != nil {
					t.Fatal(err)
				}
			}
			objs, err := Decode("in", data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(objs) != len(tc.wantDocs) {
				t.Fatalf("got %d objects, want %d", len(objs), len(tc.wantDocs))
			}
			for i, o := range objs {
				if o.Doc != tc.wantDocs[i] {
					t.Errorf("object %d: Doc = %d, want %d", i, o.Doc, tc.wantDocs[i])
				}
				kind := "Pod"
				if o.DaemonSet != nil {
					kind = "DaemonSet"
				}
				if (o.DaemonSet == nil) == (o.Pod == nil) {
					t.Errorf("object %d: want exactly one of DaemonSet and Pod set", i)
				}
				if kind != tc.wantKind[i] {
					t.Errorf("object %d: kind %s, want %s", i, kind, tc.wantKind[i])
				}
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []string
	}{
		{
			name: "unknown field carries the full path",
			data: minimalDS + "---\n" + strings.Replace(minimalDS, "        image: busybox:1.36\n", "        image: busybox:1.36\n        imagePullPolicyy: Always\n", 1),
			want: []string{"ds.yaml: document 2: spec.template.spec.containers[0].imagePullPolicyy: unknown field"},
		},
		{
			name: "duplicate YAML key",
			data: strings.Replace(minimalDS, "  name: ds\n", "  name: ds\n  name: ds2\n", 1),
			want: []string{"ds.yaml: document 1: metadata.name: duplicate field"},
		},
		{
			name: "duplicate JSON key",
			data: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"a","name":"b","image":"x"}]}}`,
			want: []string{"ds.yaml: document 1: spec.containers[0].name: duplicate field"},
		},
		{
			name: "unsupported kind is named",
			data: "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
			want: []string{`ds.yaml: document 1: unsupported object apiVersion "apps/v1", kind "Deployment"`},
		},
		{
			name: "wrong apiVersion for DaemonSet",
			data: "apiVersion: extensions/v1beta1\nkind: DaemonSet\n",
			want: []string{`apiVersion "extensions/v1beta1", kind "DaemonSet"`},
		},
		{
			name: "missing kind",
			data: "apiVersion: v1\nmetadata: {name: x}\n",
			want: []string{"ds.yaml: document 1: kind: Required value"},
		},
		{
			name: "missing apiVersion",
			data: "kind: Pod\n",
			want: []string{"ds.yaml: document 1: apiVersion: Required value"},
		},
		{
			name: "wrong type names the field",
			data: strings.Replace(minimalDS, "        image: busybox:1.36\n", "        image: busybox:1.36\n        ports:\n        - containerPort: eighty\n", 1),
			want: []string{"ds.yaml: document 1: spec.template.spec.containers.ports.containerPort: invalid value: cannot decode string into int32"},
		},
		{
			name: "bad quantity names the field",
			data: strings.Replace(minimalDS, "        image: busybox:1.36\n", "        image: busybox:1.36\n        resources:\n          limits: {memory: 200Mx}\n", 1),
			want: []string{`ds.yaml: document 1: spec.template.spec.containers[0].resources.limits.memory: invalid quantity "200Mx"`},
		},
		{
			name: "document that is not an object",
			data: "- a\n- b\n",
			want: []string{"ds.yaml: document 1: not an object"},
		},
		{
			name: "YAML syntax error",
			data: "apiVersion: v1\nkind: Pod\n  bad: indent\n",
			want: []string{"ds.yaml: document 1: yaml: line 3"},
		},
		{
			name: "JSON syntax error in the second object",
			data: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"a","image":"x"}]}}` + "\n{\"apiVersion\": }",
			want: []string{"ds.yaml: document 2: line 2"},
		},
		{
			name: "unknown field in a List item",
			data: `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"a","image":"x"}]}},{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b","nam":"c"}}]}`,
			want: []string{"ds.yaml: document 1: items[1].metadata.nam: unknown field"},
		},
		{
			name: "every bad document is reported",
			data: "kind: Pod\n---\n" + minimalDS + "---\napiVersion: v1\nkind: Service\n",
			want: []string{"document 1: apiVersion", `document 3: unsupported object apiVersion "v1", kind "Service"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := Decode("ds.yaml", []byte(tc.data))
			if err == nil {
				t.Fatalf("Decode succeeded with %d objects, want error", len(objs))
			}
			if objs != nil {
				t.Errorf("Decode returned objects with an error")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("error %v is not an invalid argument", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestDecodeAndValidateFile(t *testing.T) {
	data, err := os.ReadFile("testdata/invalid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := DecodeAndValidate("invalid.yaml", data)
	if err == nil {
		t.Fatal("want error")
	}
	for _, w := range []string{
		"invalid.yaml: document 2: spec.template.spec.containers[0].imagePullPolicyy: unknown field",
		"invalid.yaml: document 3: spec.template.metadata.labels: Invalid value: ",
		"`selector` does not match template `labels`",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q\ndoes not contain %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "document 1") {
		t.Errorf("the valid document 1 is reported: %v", err)
	}
	if len(objs) != 1 || objs[0].Doc != 1 || objs[0].DaemonSet.Name != "good" {
		t.Errorf("want only the good document's object, got %+v", objs)
	}
}

func TestDecodeAndValidateDefaultsAndListPaths(t *testing.T) {
	data := `{"apiVersion":"v1","kind":"List","items":[` +
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"ok"},"spec":{"containers":[{"name":"a","image":"x:1"}]}},` +
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad"},"spec":{"containers":[{"name":"a","image":"x:1","ports":[{"containerPort":70000}]}]}}]}`
	_, err := DecodeAndValidate("list.json", []byte(data))
	if err == nil || !strings.Contains(err.Error(), "list.json: document 1: items[1].spec.containers[0].ports[0].containerPort: Invalid value: 70000") {
		t.Fatalf("got %v, want the containerPort error under items[1]", err)
	}

	objs, err := DecodeAndValidate("multi.yaml", mustRead(t, "testdata/multi.yaml"))
	if err != nil {
		t.Fatalf("DecodeAndValidate: %v", err)
	}
	pod := objs[1].Pod
	if pod.Namespace != "default" || pod.Spec.Containers[0].ImagePullPolicy != corev1.PullAlways {
		t.Errorf("pod not defaulted: namespace %q, pull policy %q", pod.Namespace, pod.Spec.Containers[0].ImagePullPolicy)
	}
	if got := pod.Spec.Containers[0].LivenessProbe.HTTPGet.Path; got != "/" {
		t.Errorf("probe path defaulted to %q, want /", got)
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
