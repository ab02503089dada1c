package api

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestNodeRevisionsRoundTrip(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	revs, err := ParseNodeRevisions(node)
	if err != nil || len(revs) != 0 {
		t.Fatalf("a node without the annotation: %v, %v; want an empty map", revs, err)
	}
	want := NodeRevisions{"ops/b": {"old", "new"}, "ops/a": {"h1"}}
	SetNodeRevisions(node, want)
	// Keys are written sorted, so equal maps give byte-equal annotations.
	if got := node.Annotations[AnnotationNodeRevisions]; got != `{"ops/a":["h1"],"ops/b":["old","new"]}` {
		t.Errorf("annotation = %s", got)
	}
	got, err := ParseNodeRevisions(node)
	if err != nil || !equality.Semantic.DeepEqual(map[string][]string(got), map[string][]string(want)) {
		t.Errorf("parsed %v, %v; want %v", got, err, want)
	}
	SetNodeRevisions(node, nil)
	if _, ok := node.Annotations[AnnotationNodeRevisions]; ok {
		t.Error("an empty map left the annotation in place")
	}
	node.Annotations[AnnotationNodeRevisions] = "{not json"
	if _, err := ParseNodeRevisions(node); err == nil || !strings.Contains(err.Error(), "node n1: metadata.annotations["+AnnotationNodeRevisions+"]") {
		t.Errorf("bad annotation: %v; want an error naming the node and the annotation", err)
	}
}

func TestRolloutAnnotations(t *testing.T) {
	ds := baseDaemonSet(t)
	if _, ok := ProgressDeadline(ds); ok || AutoRollback(ds) {
		t.Fatal("a DaemonSet without annotations has a deadline or auto-rollback")
	}
	ds.Annotations = map[string]string{AnnotationProgressDeadline: "90", AnnotationAutoRollback: "true"}
	if d, ok := ProgressDeadline(ds); !ok || d != 90*time.Second || !AutoRollback(ds) {
		t.Errorf("deadline %v %v, auto-rollback %v", d, ok, AutoRollback(ds))
	}
	if errs := ValidateDaemonSet(ds); len(errs) != 0 {
		t.Errorf("valid annotations refused: %v", errs)
	}
	for _, tc := range []struct{ key, value, want string }{
		{AnnotationProgressDeadline, "0", "metadata.annotations[daemonlet.io/progress-deadline-seconds]: Invalid value: \"0\": must be a positive integer"},
		{AnnotationProgressDeadline, "10m", "metadata.annotations[daemonlet.io/progress-deadline-seconds]: Invalid value: \"10m\""},
		{AnnotationAutoRollback, "yes", "metadata.annotations[daemonlet.io/auto-rollback]: Unsupported value: \"yes\""},
	} {
		bad := baseDaemonSet(t)
		bad.Annotations = map[string]string{tc.key: tc.value}
		errs := ValidateDaemonSet(bad)
		if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), tc.want) {
			t.Errorf("%s=%q: %v; want %q", tc.key, tc.value, errs, tc.want)
		}
	}
}

func surgeDS(t *testing.T) *appsv1.DaemonSet {
	ds := baseDaemonSet(t)
	ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = ptr.To(intstr.FromInt32(0))
	ds.Spec.UpdateStrategy.RollingUpdate.MaxSurge = ptr.To(intstr.FromString("25%"))
	return ds
}

func TestValidateSurge(t *testing.T) {
	if errs := ValidateSurge(surgeDS(t)); len(errs) != 0 {
		t.Errorf("surge with a plain containerPort refused: %v", errs)
	}
	ds := surgeDS(t)
	ds.Spec.Template.Spec.Containers[0].Ports[0].HostPort = 8080
	errs := ValidateSurge(ds)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `spec.updateStrategy.rollingUpdate.maxSurge: Forbidden: a surge pod starts next to the old pod on the same node, and container "agent"'s hostPort 8080`) {
		t.Errorf("hostPort with surge: %v", errs)
	}
	ds = surgeDS(t)
	ds.Spec.Template.Spec.HostNetwork = true
	if errs := ValidateSurge(ds); len(errs) != 1 || !strings.Contains(errs[0].Error(), "with hostNetwork container \"agent\"'s port 8080") {
		t.Errorf("hostNetwork with surge: %v", errs)
	}
	// Without surge a hostPort is fine: the old pod stops first.
	ds = baseDaemonSet(t)
	ds.Spec.Template.Spec.Containers[0].Ports[0].HostPort = 8080
	if errs := ValidateSurge(ds); len(errs) != 0 {
		t.Errorf("hostPort without surge refused: %v", errs)
	}
}

func TestRollingUpdateBudget(t *testing.T) {
	for _, tc := range []struct {
		unavail, surge *intstr.IntOrString
		desired        int
		wantU, wantS   int
	}{
		{ptr.To(intstr.FromInt32(1)), nil, 5, 1, 0},
		{ptr.To(intstr.FromString("10%")), ptr.To(intstr.FromInt32(0)), 5, 1, 0}, // rounded up
		{ptr.To(intstr.FromString("10%")), nil, 500, 50, 0},
		{ptr.To(intstr.FromString("34%")), nil, 3, 2, 0},
		{ptr.To(intstr.FromInt32(0)), ptr.To(intstr.FromString("25%")), 10, 0, 3},
		{ptr.To(intstr.FromString("0%")), ptr.To(intstr.FromString("0%")), 4, 1, 0}, // both zero: 1
		{ptr.To(intstr.FromString("0%")), ptr.To(intstr.FromString("0%")), 0, 0, 0},
	} {
		ds := baseDaemonSet(t)
		ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable, ds.Spec.UpdateStrategy.RollingUpdate.MaxSurge = tc.unavail, tc.surge
		u, s, err := RollingUpdateBudget(ds, tc.desired)
		if err != nil || u != tc.wantU || s != tc.wantS {
			t.Errorf("maxUnavailable %v maxSurge %v of %d: %d, %d, %v; want %d, %d", tc.unavail, tc.surge, tc.desired, u, s, err, tc.wantU, tc.wantS)
		}
	}
}

func TestControllerRevisionRoundTrip(t *testing.T) {
	ds := baseDaemonSet(t)
	ds.UID = "ds-uid"
	ds.Annotations = map[string]string{"kubernetes.io/change-cause": "v1"}
	hash := TemplateHash(&ds.Spec.Template, nil)
	cr, err := NewControllerRevision(ds, hash, 3)
	if err != nil {
		t.Fatal(err)
	}
	if cr.Name != "agent-"+hash || cr.Namespace != "ops" || cr.Revision != 3 ||
		cr.Labels[LabelControllerRevisionHash] != hash || cr.Labels["app"] != "agent" ||
		cr.Annotations["kubernetes.io/change-cause"] != "v1" {
		t.Errorf("revision metadata: %+v", cr.ObjectMeta)
	}
	if ref := metav1.GetControllerOf(cr); ref == nil || ref.UID != "ds-uid" || ref.Kind != "DaemonSet" {
		t.Errorf("controller reference %+v", ref)
	}
	if !strings.Contains(string(cr.Data.Raw), `"$patch":"replace"`) {
		t.Errorf("data is not the controller's patch form: %s", cr.Data.Raw)
	}
	tmpl, err := RevisionTemplate(cr)
	if err != nil {
		t.Fatal(err)
	}
	if got := TemplateHash(tmpl, nil); got != hash {
		t.Errorf("the recorded template hashes to %s, want %s: the round trip changed it", got, hash)
	}
	cr.Data.Raw = []byte("{")
	if _, err := RevisionTemplate(cr); err == nil || !strings.Contains(err.Error(), "ControllerRevision ops/agent-"+hash) {
		t.Errorf("bad data: %v", err)
	}
}
