package api

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func fieldsOf(errs field.ErrorList) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.Field)
	}
	slices.Sort(out)
	return out
}

func TestValidateConfigMap(t *testing.T) {
	meta := metav1.ObjectMeta{Name: "cfg", Namespace: "default"}
	big := strings.Repeat("x", MaxObjectSize/2)
	cases := []struct {
		name string
		cm   corev1.ConfigMap
		want []string // offending fields; nil = valid
	}{
		{"valid", corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"a.conf": "x", "_b-c": "y"}, BinaryData: map[string][]byte{"bin": {0}}}, nil},
		{"bad name", corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "Bad_Name", Namespace: "default"}}, []string{"metadata.name"}},
		{"key with slash", corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"a/b": "x"}}, []string{"data[a/b]"}},
		{"key dot dot", corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"..": "x"}}, []string{"data[..]"}},
		{"key leading dot dot", corev1.ConfigMap{ObjectMeta: meta, BinaryData: map[string][]byte{"..data": {1}}}, []string{"binaryData[..data]"}},
		{"key too long", corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{strings.Repeat("k", 254): "x"}}, []string{"data[" + strings.Repeat("k", 254) + "]"}},
		{"overlap", corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"k": "x"}, BinaryData: map[string][]byte{"k": {1}}}, []string{"binaryData[k]"}},
		{"exactly 1 MiB", corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"a": big, "b": big}}, nil},
		{"over 1 MiB", corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"a": big}, BinaryData: map[string][]byte{"b": []byte(big + "x")}}, []string{"data"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := fieldsOf(ValidateConfigMap(&tc.cm))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("fields %q, want %q", got, tc.want)
			}
		})
	}
}

func TestValidateSecret(t *testing.T) {
	meta := metav1.ObjectMeta{Name: "s", Namespace: "default"}
	cases := []struct {
		name   string
		secret corev1.Secret
		want   []string
	}{
		{"valid opaque", corev1.Secret{ObjectMeta: meta, Data: map[string][]byte{"password": []byte("x")}}, nil},
		{"bad key", corev1.Secret{ObjectMeta: meta, Data: map[string][]byte{"a b": nil}}, []string{"data[a b]"}},
		{"bad stringData key", corev1.Secret{ObjectMeta: meta, StringData: map[string]string{"a:b": "x"}}, []string{"data[a:b]"}},
		{"over 1 MiB", corev1.Secret{ObjectMeta: meta, Data: map[string][]byte{"a": make([]byte, MaxObjectSize+1)}}, []string{"data"}},
		{"tls without key", corev1.Secret{ObjectMeta: meta, Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": nil}}, []string{"data[tls.key]"}},
		{"bad type", corev1.Secret{ObjectMeta: meta, Type: "not a type!"}, []string{"type"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			SetDefaultsSecret(&tc.secret)
			got := fieldsOf(ValidateSecret(&tc.secret))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("fields %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSetDefaultsSecret(t *testing.T) {
	s := &corev1.Secret{Data: map[string][]byte{"a": []byte("data"), "b": []byte("kept")}, StringData: map[string]string{"a": "string"}}
	SetDefaultsSecret(s)
	if s.Type != corev1.SecretTypeOpaque {
		t.Errorf("type %q, want Opaque", s.Type)
	}
	if string(s.Data["a"]) != "string" || string(s.Data["b"]) != "kept" || s.StringData != nil {
		t.Errorf("stringData not merged over data: data %q, stringData %q", s.Data, s.StringData)
	}
}

func TestValidateImmutableUpdate(t *testing.T) {
	yes, no := true, false
	meta := metav1.ObjectMeta{Name: "cfg", Namespace: "default"}
	oldCM := &corev1.ConfigMap{ObjectMeta: meta, Immutable: &yes, Data: map[string]string{"k": "v"}}
	cmCases := []struct {
		name string
		cm   corev1.ConfigMap
		want []string
	}{
		{"unchanged", corev1.ConfigMap{ObjectMeta: meta, Immutable: &yes, Data: map[string]string{"k": "v"}}, nil},
		{"data changed", corev1.ConfigMap{ObjectMeta: meta, Immutable: &yes, Data: map[string]string{"k": "w"}}, []string{"data"}},
		{"binaryData added", corev1.ConfigMap{ObjectMeta: meta, Immutable: &yes, Data: map[string]string{"k": "v"}, BinaryData: map[string][]byte{"b": {1}}}, []string{"binaryData"}},
		{"made mutable", corev1.ConfigMap{ObjectMeta: meta, Immutable: &no, Data: map[string]string{"k": "v"}}, []string{"immutable"}},
		{"immutable unset", corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"k": "v"}}, []string{"immutable"}},
		{"renamed", corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "default"}, Immutable: &yes, Data: map[string]string{"k": "v"}}, []string{"metadata.name"}},
	}
	for _, tc := range cmCases {
		t.Run("configmap "+tc.name, func(t *testing.T) {
			got := fieldsOf(ValidateConfigMapUpdate(&tc.cm, oldCM))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("fields %q, want %q", got, tc.want)
			}
		})
	}
	mutable := &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"k": "v"}}
	if errs := ValidateConfigMapUpdate(&corev1.ConfigMap{ObjectMeta: meta, Immutable: &yes, Data: map[string]string{"k": "new"}}, mutable); len(errs) != 0 {
		t.Errorf("a mutable ConfigMap could not change data and become immutable: %v", errs)
	}

	oldS := &corev1.Secret{ObjectMeta: meta, Immutable: &yes, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"k": []byte("v")}}
	secretCases := []struct {
		name string
		s    corev1.Secret
		want []string
	}{
		{"unchanged", corev1.Secret{ObjectMeta: meta, Immutable: &yes, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"k": []byte("v")}}, nil},
		{"data changed", corev1.Secret{ObjectMeta: meta, Immutable: &yes, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"k": []byte("w")}}, []string{"data"}},
		{"made mutable", corev1.Secret{ObjectMeta: meta, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"k": []byte("v")}}, []string{"immutable"}},
		{"type changed", corev1.Secret{ObjectMeta: meta, Immutable: &yes, Type: "example.com/other", Data: map[string][]byte{"k": []byte("v")}}, []string{"type"}},
	}
	for _, tc := range secretCases {
		t.Run("secret "+tc.name, func(t *testing.T) {
			got := fieldsOf(ValidateSecretUpdate(&tc.s, oldS))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("fields %q, want %q", got, tc.want)
			}
		})
	}
}

func TestReferencedObjects(t *testing.T) {
	spec := &corev1.PodSpec{
		Volumes: []corev1.Volume{
			{Name: "a", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm-vol"}}}},
			{Name: "b", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s-vol"}}},
			{Name: "c", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "cm-proj"}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "s-proj"}}},
			}}}},
			{Name: "d", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		},
		InitContainers: []corev1.Container{{Name: "init", EnvFrom: []corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm-init"}}},
			{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "s-init"}}},
		}}},
		Containers: []corev1.Container{{Name: "main", Env: []corev1.EnvVar{
			{Name: "PLAIN", Value: "x"},
			{Name: "A", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cm-env"}, Key: "k"}}},
			{Name: "B", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s-env"}, Key: "k"}}},
			{Name: "C", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s-vol"}, Key: "k"}}},
		}}},
	}
	cms, secrets := ReferencedObjects(spec)
	if want := []string{"cm-env", "cm-init", "cm-proj", "cm-vol"}; !slices.Equal(cms, want) {
		t.Errorf("configMaps %q, want %q", cms, want)
	}
	if want := []string{"s-env", "s-init", "s-proj", "s-vol"}; !slices.Equal(secrets, want) {
		t.Errorf("secrets %q, want %q", secrets, want)
	}
	if cms, secrets := ReferencedObjects(&corev1.PodSpec{Containers: []corev1.Container{{Name: "x"}}}); cms != nil || secrets != nil {
		t.Errorf("a spec without references gave %q, %q", cms, secrets)
	}
}

func TestDecodeConfigMapAndSecret(t *testing.T) {
	const manifest = `apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: default}
data: {a.conf: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: default}
stringData: {password: hunter2}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: bad, namespace: default}
data: {"a/b": x}
`
	objs, err := DecodeAndValidate("m.yaml", []byte(manifest))
	if err == nil || !strings.Contains(err.Error(), "m.yaml: document 3: data[a/b]") {
		t.Fatalf("error %v, want one naming document 3's bad key", err)
	}
	if len(objs) != 2 || objs[0].ConfigMap == nil || objs[1].Secret == nil {
		t.Fatalf("objects %+v, want the ConfigMap and the Secret", objs)
	}
	if objs[0].ConfigMap.Data["a.conf"] != "hello" {
		t.Errorf("configmap data %q", objs[0].ConfigMap.Data)
	}
	if s := objs[1].Secret; string(s.Data["password"]) != "hunter2" || s.Type != corev1.SecretTypeOpaque {
		t.Errorf("secret not defaulted: type %q, data %q", s.Type, s.Data)
	}
}
