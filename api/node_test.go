package api

import (
	"reflect"
	"runtime"
	"testing"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
)

func TestParseNodeLabels(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]string
		wantErr bool
	}{
		{in: "", want: map[string]string{}},
		{in: "zone=a", want: map[string]string{"zone": "a"}},
		{in: "zone=a, example.com/role=edge ,empty=", want: map[string]string{"zone": "a", "example.com/role": "edge", "empty": ""}},
		{in: "zone=a,zone=b", want: map[string]string{"zone": "b"}},
		{in: "zone", wantErr: true},
		{in: "-bad=x", wantErr: true},
		{in: "k=bad value", wantErr: true},
		{in: "a/b/c=x", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseNodeLabels(tc.in)
		if tc.wantErr {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("ParseNodeLabels(%q) = %v, %v; want an invalid-argument error", tc.in, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseNodeLabels(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseTaints(t *testing.T) {
	tests := []struct {
		in      []string
		want    []corev1.Taint
		wantErr bool
	}{
		{in: nil, want: nil},
		{in: []string{"node-role.kubernetes.io/control-plane:NoSchedule"}, want: []corev1.Taint{{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}}},
		{in: []string{"dedicated=edge:NoExecute,gpu=true:PreferNoSchedule", "k=:NoSchedule"}, want: []corev1.Taint{
			{Key: "dedicated", Value: "edge", Effect: corev1.TaintEffectNoExecute},
			{Key: "gpu", Value: "true", Effect: corev1.TaintEffectPreferNoSchedule},
			{Key: "k", Effect: corev1.TaintEffectNoSchedule},
		}},
		{in: []string{"k=v:NoRun"}, wantErr: true},
		{in: []string{"k=v"}, wantErr: true},
		{in: []string{"k:"}, wantErr: true},
		{in: []string{":NoSchedule"}, wantErr: true},
		{in: []string{"k=bad value:NoSchedule"}, wantErr: true},
		{in: []string{"k=a:NoSchedule", "k=b:NoSchedule"}, wantErr: true},
		{in: []string{"k=a:b:NoSchedule"}, wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseTaints(tc.in)
		if tc.wantErr {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("ParseTaints(%q) = %v, %v; want an invalid-argument error", tc.in, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseTaints(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestNewNode(t *testing.T) {
	taints := []corev1.Taint{{Key: "a", Effect: corev1.TaintEffectNoSchedule}}
	node := NewNode("edge-7", map[string]string{"zone": "x", LabelArch: "custom"}, taints)
	want := map[string]string{
		LabelHostname: "edge-7",
		LabelOS:       runtime.GOOS,
		LabelArch:     "custom",
		LabelOSBeta:   runtime.GOOS,
		LabelArchBeta: runtime.GOARCH,
		"zone":        "x",
	}
	if node.Name != "edge-7" || !reflect.DeepEqual(node.Labels, want) {
		t.Errorf("node %s labels %v, want %v", node.Name, node.Labels, want)
	}
	taints[0].Key = "changed"
	if node.Spec.Taints[0].Key != "a" {
		t.Errorf("node shares the caller's taint slice")
	}
}
