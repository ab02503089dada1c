package agent

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/api"
)

// AnnotationRunRevisions, on a DaemonSet of the server source, lists the
// revisions this node runs when the server's rollout controller pinned
// them (api.AnnotationNodeRevisions): a JSON array, oldest first, of
// {"hash": ..., "template": ...}. The server source writes it with the
// templates it resolved from the DaemonSet or its ControllerRevisions, so
// that the stored desired record alone rebuilds every revision after a
// restart without the server, and the store's schema stays as it is. An
// entry without a template is a revision whose ControllerRevision the
// source does not know: the DaemonSet is held (see DesiredPod.held). Other
// sources' DaemonSets never honour it, as for AnnotationRevision.
const AnnotationRunRevisions = "daemonlet.io/run-revisions"

// podRevision is one revision a node runs: its hash (the
// controller-revision-hash label) and its pod template, nil when unknown.
type podRevision struct {
	Hash     string                  `json:"hash"`
	Template *corev1.PodTemplateSpec `json:"template,omitempty"`
}

// parseRunRevisions reads AnnotationRunRevisions.
func parseRunRevisions(v string) ([]podRevision, error) {
	var revs []podRevision
	if err := json.Unmarshal([]byte(v), &revs); err != nil {
		return nil, fmt.Errorf("metadata.annotations[%s]: %w: %w", AnnotationRunRevisions, errdefs.ErrInvalidArgument, err)
	}
	if len(revs) == 0 {
		return nil, fmt.Errorf("metadata.annotations[%s]: no revision: %w", AnnotationRunRevisions, errdefs.ErrInvalidArgument)
	}
	for _, r := range revs {
		if r.Hash == "" {
			return nil, fmt.Errorf("metadata.annotations[%s]: a revision without hash: %w", AnnotationRunRevisions, errdefs.ErrInvalidArgument)
		}
	}
	return revs, nil
}

// pinRevisions applies the rollout controller's pins for ds on this node
// (hashes, oldest first, from api.NodeRevisions) to ds, a copy the caller
// owns: it records them in AnnotationRunRevisions, each with its template,
// the DaemonSet's own for the current hash and else the one of the
// ControllerRevision api.RevisionName(ds, hash) in crs (by namespace/name).
// No pin, or a pin of the current template alone, leaves ds as it is. It
// returns why each revision it could not resolve is unknown; those
// entries have no template.
func pinRevisions(ds *appsv1.DaemonSet, hashes []string, crs map[string]*appsv1.ControllerRevision) (unknown []error) {
	current := api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
	ns := ds.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	var revs []podRevision
	for _, h := range hashes {
		if h == "" || slices.ContainsFunc(revs, func(r podRevision) bool { return r.Hash == h }) {
			continue
		}
		r := podRevision{Hash: h}
		switch cr := crs[ns+"/"+api.RevisionName(ds.Name, h)]; {
		case h == current:
			r.Template = &ds.Spec.Template
		case cr == nil:
			unknown = append(unknown, fmt.Errorf("DaemonSet %s: revision %s: ControllerRevision %s: %w", objectKey(ds), h, api.RevisionName(ds.Name, h), errdefs.ErrNotFound))
		default:
			tmpl, err := api.RevisionTemplate(cr)
			if err != nil {
				unknown = append(unknown, fmt.Errorf("DaemonSet %s: revision %s: %w: %w", objectKey(ds), h, errdefs.ErrInvalidArgument, err))
				break
			}
			r.Template = tmpl
		}
		revs = append(revs, r)
	}
	if len(revs) == 0 || (len(revs) == 1 && revs[0].Hash == current) {
		return unknown
	}
	// Encoding API templates cannot fail (see api.TemplateHash).
	b, _ := json.Marshal(revs)
	if ds.Annotations == nil {
		ds.Annotations = map[string]string{}
	}
	ds.Annotations[AnnotationRunRevisions] = string(b)
	return unknown
}
