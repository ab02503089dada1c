package api

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Well-known node labels the kubelet sets on its Node.
const (
	// LabelHostname is the node's host name.
	LabelHostname = "kubernetes.io/hostname"
	// LabelOS is the node's operating system (GOOS).
	LabelOS = "kubernetes.io/os"
	// LabelArch is the node's architecture (GOARCH).
	LabelArch = "kubernetes.io/arch"
	// LabelOSBeta is the deprecated beta form of LabelOS, still used by
	// older manifests' node selectors.
	LabelOSBeta = "beta.kubernetes.io/os"
	// LabelArchBeta is the deprecated beta form of LabelArch.
	LabelArchBeta = "beta.kubernetes.io/arch"
)

// ParseNodeLabels parses kubelet's --node-labels syntax, "k=v,k2=v2", into
// a map, validating keys as qualified names and values as label values.
// Spaces around keys and values are trimmed and a later key wins, as in the
// kubelet; an empty string gives an empty map.
func ParseNodeLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, pair := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("node label %q: malformed pair, expected key=value: %w", pair, errdefs.ErrInvalidArgument)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if errs := metav1validation.ValidateLabels(map[string]string{k: v}, field.NewPath("labels")); len(errs) > 0 {
			return nil, fmt.Errorf("node label %q: %s: %w", pair, errs.ToAggregate(), errdefs.ErrInvalidArgument)
		}
		out[k] = v
	}
	return out, nil
}

// ParseTaints parses kubelet's --register-with-taints syntax: each entry is
// "key=value:Effect" or "key:Effect", and an entry may hold several
// comma-separated taints. The effect must be NoSchedule, PreferNoSchedule or
// NoExecute, and a key may not appear twice with the same effect.
func ParseTaints(specs []string) ([]corev1.Taint, error) {
	var taints []corev1.Taint
	seen := map[string]bool{}
	for _, spec := range specs {
		for _, s := range strings.Split(spec, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			t, err := parseTaint(s)
			if err != nil {
				return nil, err
			}
			id := t.Key + ":" + string(t.Effect)
			if seen[id] {
				return nil, fmt.Errorf("taint %q: duplicated taint with the same key and effect: %w", s, errdefs.ErrInvalidArgument)
			}
			seen[id] = true
			taints = append(taints, t)
		}
	}
	return taints, nil
}

func parseTaint(s string) (corev1.Taint, error) {
	kv, effect, ok := strings.Cut(s, ":")
	if !ok || strings.Contains(effect, ":") {
		return corev1.Taint{}, fmt.Errorf("taint %q: expected key=value:Effect or key:Effect: %w", s, errdefs.ErrInvalidArgument)
	}
	key, value, _ := strings.Cut(kv, "=")
	t := corev1.Taint{Key: key, Value: value, Effect: corev1.TaintEffect(effect)}
	var errs field.ErrorList
	errs = append(errs, metav1validation.ValidateLabelName(t.Key, field.NewPath("key"))...)
	for _, msg := range validation.IsValidLabelValue(t.Value) {
		errs = append(errs, field.Invalid(field.NewPath("value"), t.Value, msg))
	}
	errs = append(errs, validateTaintEffect(t.Effect, false, field.NewPath("effect"))...)
	if len(errs) > 0 {
		return corev1.Taint{}, fmt.Errorf("taint %q: %s: %w", s, errs.ToAggregate(), errdefs.ErrInvalidArgument)
	}
	return t, nil
}

// NewNode describes this node as the kubelet registers it: the well-known
// hostname, os and arch labels (and their beta forms), overridden by the
// given labels like kubelet's --node-labels, and the given taints.
func NewNode(name string, labels map[string]string, taints []corev1.Taint) *corev1.Node {
	all := map[string]string{
		LabelHostname: name,
		LabelOS:       runtime.GOOS,
		LabelArch:     runtime.GOARCH,
		LabelOSBeta:   runtime.GOOS,
		LabelArchBeta: runtime.GOARCH,
	}
	for k, v := range labels {
		all[k] = v
	}
	return &corev1.Node{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: all},
		Spec:       corev1.NodeSpec{Taints: append([]corev1.Taint(nil), taints...)},
	}
}
