package server

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/daemonlet/daemonlet/api"
)

// Annotations the rollout controller keeps on a DaemonSet's
// ControllerRevisions.
const (
	// AnnotationFullyAvailable, "true", marks a revision that was once
	// available on every eligible reachable node: what an automatic
	// rollback may return to.
	AnnotationFullyAvailable = "daemonlet.io/fully-available"
	// AnnotationRolloutFailed, "true", marks a revision whose rollout
	// exceeded its progress deadline; an automatic rollback never returns
	// to it, so that two bad revisions cannot roll back to each other
	// forever. It is cleared when the revision becomes fully available.
	AnnotationRolloutFailed = "daemonlet.io/rollout-failed"
)

// newControllerRevisionResource describes apps/v1 controllerrevisions,
// the DaemonSets' template history.
func newControllerRevisionResource() *resource {
	return &resource{
		group: "apps", version: "v1", name: "controllerrevisions", singular: "controllerrevision",
		kind: "ControllerRevision", listKind: "ControllerRevisionList", namespaced: true,
		fieldLabels: []string{"metadata.name", "metadata.namespace"},
		newObject:   func() object { return &appsv1.ControllerRevision{} },
		newList: func(items []object, rv string) kruntime.Object {
			l := &appsv1.ControllerRevisionList{ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: make([]appsv1.ControllerRevision, len(items))}
			for i, o := range items {
				l.Items[i] = *o.(*appsv1.ControllerRevision)
			}
			return l
		},
		defaults: func(object) {},
		validate: func(o object) field.ErrorList { return validateControllerRevision(o.(*appsv1.ControllerRevision)) },
		validateUpdate: func(o, old object) field.ErrorList {
			cr, prev := o.(*appsv1.ControllerRevision), old.(*appsv1.ControllerRevision)
			errs := validateControllerRevision(cr)
			if !equality.Semantic.DeepEqual(cr.Data, prev.Data) {
				errs = append(errs, field.Forbidden(field.NewPath("data"), "field is immutable"))
			}
			return errs
		},
		fieldSet: metaFields,
	}
}

// validateControllerRevision is kube-apiserver's ValidateControllerRevision:
// a valid name, data present, a non-negative revision.
func validateControllerRevision(cr *appsv1.ControllerRevision) field.ErrorList {
	errs := apimachineryvalidation.ValidateObjectMeta(&cr.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	if len(cr.Data.Raw) == 0 && cr.Data.Object == nil {
		errs = append(errs, field.Required(field.NewPath("data"), "data is mandatory"))
	}
	if cr.Revision < 0 {
		errs = append(errs, field.Invalid(field.NewPath("revision"), cr.Revision, "must be greater than or equal to 0"))
	}
	return errs
}

// errHashCollision says that the current template's ControllerRevision
// name is taken by other data; status.collisionCount was raised and the
// next sync computes another hash.
var errHashCollision = fmt.Errorf("controller revision hash collision: %w", errdefs.ErrAlreadyExists)

// revisionHash is the controller-revision-hash a ControllerRevision
// records.
func revisionHash(cr *appsv1.ControllerRevision) string {
	return cr.Labels[api.LabelControllerRevisionHash]
}

// constructHistory makes sure the ControllerRevision of ds's current
// template (hash) exists with the highest revision number
// (K8S-SEMANTICS.md §4.2): created as max+1, or bumped to max+1 when an
// older one matches (rolling back 2→1 makes revision 1 revision 3). crs
// are the DaemonSet's revisions; the returned list includes the current
// one as stored.
func (s *Server) constructHistory(ctx context.Context, ds *appsv1.DaemonSet, hash string, crs []*appsv1.ControllerRevision) ([]*appsv1.ControllerRevision, error) {
	want, err := api.NewControllerRevision(ds, hash, 0)
	if err != nil {
		return nil, err
	}
	var maxRev int64
	var current *appsv1.ControllerRevision
	for _, cr := range crs {
		if cr.Name == want.Name {
			current = cr
			continue
		}
		maxRev = max(maxRev, cr.Revision)
	}
	if current == nil {
		want.Revision = maxRev + 1
		if err := s.createObject(ctx, s.controllerRevisions, want); err != nil {
			return nil, err
		}
		return append(crs, want), nil
	}
	// Both sides are json.Marshal output, so equal templates give equal
	// bytes.
	if !bytes.Equal(current.Data.Raw, want.Data.Raw) {
		if err := s.raiseCollisionCount(ctx, ds); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("DaemonSet %s/%s: revision %s holds another template: %w", ds.Namespace, ds.Name, want.Name, errHashCollision)
	}
	if current.Revision > maxRev {
		return crs, nil
	}
	current.Revision = maxRev + 1
	// The change-cause of the rollback, or of its reapplication, is the
	// DaemonSet's now; the controller's own marks stay.
	annotations := maps.Clone(ds.Annotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	for _, k := range []string{AnnotationFullyAvailable, AnnotationRolloutFailed} {
		if v, ok := current.Annotations[k]; ok {
			annotations[k] = v
		}
	}
	current.Annotations = annotations
	if err := s.updateObject(ctx, s.controllerRevisions, current); err != nil {
		return nil, err
	}
	return crs, nil
}

// raiseCollisionCount increments ds's status.collisionCount on a fresh
// read.
func (s *Server) raiseCollisionCount(ctx context.Context, ds *appsv1.DaemonSet) error {
	return s.modifyDaemonSet(ctx, ds.Namespace, ds.Name, ds.UID, func(fresh *appsv1.DaemonSet) bool {
		if !equality.Semantic.DeepEqual(fresh.Status.CollisionCount, ds.Status.CollisionCount) {
			return false // raised meanwhile
		}
		n := int32(1)
		if c := fresh.Status.CollisionCount; c != nil {
			n = *c + 1
		}
		fresh.Status.CollisionCount = &n
		return true
	})
}

// cleanupHistory deletes the DaemonSet's oldest non-current revisions
// beyond spec.revisionHistoryLimit, but never one that a node pins or a
// live pod carries (inUse): an agent still needs its template.
func (s *Server) cleanupHistory(ctx context.Context, ds *appsv1.DaemonSet, hash string, crs []*appsv1.ControllerRevision, inUse map[string]bool) error {
	limit := int(api.DefaultRevisionHistoryLimit)
	if ds.Spec.RevisionHistoryLimit != nil {
		limit = int(*ds.Spec.RevisionHistoryLimit)
	}
	var old []*appsv1.ControllerRevision
	for _, cr := range crs {
		if revisionHash(cr) != hash {
			old = append(old, cr)
		}
	}
	excess := len(old) - limit
	if excess <= 0 {
		return nil
	}
	slices.SortFunc(old, func(a, b *appsv1.ControllerRevision) int { return cmp.Compare(a.Revision, b.Revision) })
	for _, cr := range old {
		if excess == 0 {
			break
		}
		if inUse[revisionHash(cr)] {
			continue
		}
		if err := s.deleteObject(ctx, s.controllerRevisions, cr); err != nil {
			return err
		}
		excess--
	}
	return nil
}

// setRevisionMarks sets (value "true") or removes (value "") annotations
// on the ControllerRevision of ds's hash; a missing revision is not an
// error.
func (s *Server) setRevisionMarks(ctx context.Context, ds *appsv1.DaemonSet, hash string, marks map[string]string) error {
	for attempt := 0; ; attempt++ {
		kv, o, err := s.read(ctx, request{res: s.controllerRevisions, namespace: ds.Namespace, name: api.RevisionName(ds.Name, hash)})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		cr := o.(*appsv1.ControllerRevision)
		changed := false
		for k, v := range marks {
			if cur, ok := cr.Annotations[k]; v == "" && ok {
				delete(cr.Annotations, k)
				changed = true
			} else if v != "" && cur != v {
				if cr.Annotations == nil {
					cr.Annotations = map[string]string{}
				}
				cr.Annotations[k] = v
				changed = true
			}
		}
		if !changed {
			return nil
		}
		cr.ResourceVersion = strconv.FormatInt(kv.ModRevision, 10)
		err = s.updateObject(ctx, s.controllerRevisions, cr)
		if !errdefs.IsConflict(err) || attempt == maxPodRetries {
			return err
		}
	}
}

// sealedValue is o's store key and its encoded, sealed value.
func sealedValue(res *resource, o object) (string, []byte, error) {
	key := res.key(o.GetNamespace(), o.GetName())
	data, err := res.encode(o)
	if err == nil {
		data, err = res.storage.seal(key, data)
	}
	return key, data, err
}

// createObject stores a new object as the API's create does (uid,
// creation time, generation 1 for kinds that carry it), for the
// controllers' own writes, which need no authorization or validation.
func (s *Server) createObject(ctx context.Context, res *resource, o object) error {
	o.SetUID(uuid.NewUUID())
	o.SetCreationTimestamp(metav1.NewTime(s.clock.Now()))
	o.SetResourceVersion("")
	if res.specEqual != nil {
		o.SetGeneration(1)
	}
	key, data, err := sealedValue(res, o)
	if err != nil {
		return err
	}
	rev, err := s.store.Create(ctx, key, data)
	if err != nil {
		return fmt.Errorf("creating %s %s/%s: %w", res.kind, o.GetNamespace(), o.GetName(), err)
	}
	o.SetResourceVersion(strconv.FormatInt(rev, 10))
	return nil
}

// updateObject writes o if the stored object still has o's
// resourceVersion (errdefs.ErrConflict otherwise), and sets the new one.
func (s *Server) updateObject(ctx context.Context, res *resource, o object) error {
	rv, err := parseRevision(o.GetResourceVersion())
	if err != nil {
		return err
	}
	key, data, err := sealedValue(res, o)
	if err != nil {
		return err
	}
	rev, err := s.store.Update(ctx, key, data, rv)
	if err != nil {
		return fmt.Errorf("updating %s %s/%s: %w", res.kind, o.GetNamespace(), o.GetName(), err)
	}
	o.SetResourceVersion(strconv.FormatInt(rev, 10))
	return nil
}

// deleteObject deletes o if it is unchanged since read; a conflict or an
// object already gone is not an error (the next sync looks again).
func (s *Server) deleteObject(ctx context.Context, res *resource, o object) error {
	rv, err := parseRevision(o.GetResourceVersion())
	if err != nil {
		return err
	}
	_, _, err = s.store.Delete(ctx, res.key(o.GetNamespace(), o.GetName()), rv)
	if err != nil && !errdefs.IsConflict(err) && !errdefs.IsNotFound(err) {
		return fmt.Errorf("deleting %s %s/%s: %w", res.kind, o.GetNamespace(), o.GetName(), err)
	}
	return nil
}

// modifyDaemonSet applies change to a fresh read of the DaemonSet (uid
// must match: a recreated one is another DaemonSet) and writes it when
// change returns true, retrying on conflicts; a DaemonSet gone is not an
// error.
func (s *Server) modifyDaemonSet(ctx context.Context, namespace, name string, uid types.UID, change func(*appsv1.DaemonSet) bool) error {
	for attempt := 0; ; attempt++ {
		_, o, err := s.read(ctx, request{res: s.daemonSets, namespace: namespace, name: name})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		ds := o.(*appsv1.DaemonSet)
		if ds.UID != uid || !change(ds) {
			return nil
		}
		err = s.updateObject(ctx, s.daemonSets, ds)
		if !errdefs.IsConflict(err) || attempt == maxPodRetries {
			return err
		}
	}
}
