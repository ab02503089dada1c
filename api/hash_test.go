package api

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
)

func TestTemplateHash(t *testing.T) {
	base := testDS(nil).Spec.Template
	h := TemplateHash(&base, nil)
	if msgs := validation.IsValidLabelValue(h); len(msgs) > 0 || h == "" {
		t.Fatalf("hash %q is not a label value: %v", h, msgs)
	}
	if again := TemplateHash(base.DeepCopy(), nil); again != h {
		t.Errorf("hash not stable: %s then %s", h, again)
	}

	// A manifest decoded twice hashes the same.
	a, err := DecodeAndValidate("a", []byte(baseDS))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := DecodeAndValidate("b", []byte(baseDS))
	if TemplateHash(&a[0].DaemonSet.Spec.Template, nil) != TemplateHash(&b[0].DaemonSet.Spec.Template, nil) {
		t.Errorf("same manifest, different hashes")
	}

	changes := map[string]func(*corev1.PodTemplateSpec){
		"image":      func(p *corev1.PodTemplateSpec) { p.Spec.Containers[0].Image = "busybox:1.37" },
		"label":      func(p *corev1.PodTemplateSpec) { p.Labels["x"] = "y" },
		"annotation": func(p *corev1.PodTemplateSpec) { p.Annotations = map[string]string{"restartedAt": "now"} },
	}
	for name, change := range changes {
		tmpl := base.DeepCopy()
		change(tmpl)
		if TemplateHash(tmpl, nil) == h {
			t.Errorf("changing the %s did not change the hash", name)
		}
	}
	c0, c1 := TemplateHash(&base, ptr.To[int32](0)), TemplateHash(&base, ptr.To[int32](1))
	if c0 == c1 || c0 == h {
		t.Errorf("collision count does not change the hash: nil %s, 0 %s, 1 %s", h, c0, c1)
	}
}
