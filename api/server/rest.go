package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/uuid"

	"github.com/daemonlet/daemonlet/store/cluster"
)

// maxUnconditionalRetries bounds the read-modify-write retries of a PUT
// without resourceVersion that races with other writers.
const maxUnconditionalRetries = 5

// hooks are the side effects particular resources add to the generic
// handlers (adoption, orphaning, heartbeats, cascading node deletion).
type hooks struct {
	// afterWrite runs after a successful create or main-resource update.
	afterWrite func(ctx context.Context, obj object)
	// beforeDelete runs before the store delete; an error aborts it.
	beforeDelete func(ctx context.Context, obj object, opts *metav1.DeleteOptions) error
	// afterDelete runs after a successful delete.
	afterDelete func(ctx context.Context, obj object)
	// statusUnchanged is asked before a /status write; true answers the
	// request with the stored object and writes nothing (heartbeats).
	statusUnchanged func(obj, old object) bool
}

// decode turns a stored value into an object carrying the key's
// ModRevision as resourceVersion.
func (r *resource) decode(kv cluster.KV) (object, error) {
	value, err := r.storage.unseal(kv.Key, kv.Value)
	if err != nil {
		return nil, err
	}
	o := r.newObject()
	if err := json.Unmarshal(value, o); err != nil {
		return nil, fmt.Errorf("decoding %s %s: %w", r.kind, kv.Key, err)
	}
	o.SetResourceVersion(strconv.FormatInt(kv.ModRevision, 10))
	r.setKind(o, r.kind)
	return o, nil
}

// encode is the stored form of an object: JSON without resourceVersion,
// which the store's revision supplies on read.
func (r *resource) encode(o object) ([]byte, error) {
	rv := o.GetResourceVersion()
	o.SetResourceVersion("")
	r.setKind(o, r.kind)
	data, err := json.Marshal(o)
	o.SetResourceVersion(rv)
	if err != nil {
		return nil, fmt.Errorf("encoding %s %s: %w", r.kind, o.GetName(), err)
	}
	return data, nil
}

// request is what the generic handlers parse from every request.
type request struct {
	res       *resource
	namespace string
	name      string
	dryRun    bool
}

func (s *Server) parse(res *resource, r *http.Request) (request, error) {
	req := request{res: res, namespace: r.PathValue("namespace"), name: r.PathValue("name")}
	switch v := r.URL.Query()["dryRun"]; {
	case len(v) == 0:
	case len(v) == 1 && v[0] == metav1.DryRunAll:
		req.dryRun = true
	default:
		return req, apierrors.NewBadRequest(fmt.Sprintf("dryRun: unsupported value %q, want %q", v, metav1.DryRunAll))
	}
	return req, nil
}

// authorizeRequest checks the user may do verb; the returned check must
// hold for the objects involved.
func (s *Server) authorizeRequest(r *http.Request, req request, verb, subresource string, sel fields.Selector) (objectCheck, error) {
	a := attributes{verb: verb, res: req.res, subresource: subresource, namespace: req.namespace, name: req.name, fields: sel}
	if req.res == s.configMaps || req.res == s.secrets {
		a.usedOnNode = func(node, namespace, name string) bool {
			return s.usedOnNode(r.Context(), req.res, node, namespace, name)
		}
	}
	return authorize(userFrom(r.Context()), a)
}

func (s *Server) handleGet(res *resource, subresource string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, err := s.parse(res, r)
		if err == nil {
			var o object
			o, err = s.get(r, req, subresource)
			if err == nil {
				writeJSON(w, http.StatusOK, o)
				return
			}
		}
		writeError(w, err)
	}
}

func (s *Server) get(r *http.Request, req request, subresource string) (object, error) {
	check, err := s.authorizeRequest(r, req, "get", subresource, nil)
	if err != nil {
		return nil, err
	}
	_, o, err := s.read(r.Context(), req)
	if err != nil {
		return nil, err
	}
	if check != nil && !check(o) {
		return nil, forbidden(userFrom(r.Context()), attributes{verb: "get", res: req.res, subresource: subresource, namespace: req.namespace, name: req.name})
	}
	s.presentNode(o)
	return o, nil
}

// read fetches and decodes one stored object, a private copy the caller
// may change.
func (s *Server) read(ctx context.Context, req request) (cluster.KV, object, error) {
	kv, err := s.store.Get(ctx, req.res.key(req.namespace, req.name))
	if err != nil {
		return kv, nil, storeError(req.res, req.name, err)
	}
	// Nodes and Pods, read on every heartbeat and status write, come
	// from the cache when it has their revision.
	if c := s.broadcasters[req.res].cache; c != nil {
		o, err := c.decode(kv)
		return kv, o, err
	}
	o, err := req.res.decode(kv)
	return kv, o, err
}

// listOptions are the query parameters of a list or watch.
type listOptions struct {
	labels          labels.Selector
	fields          fields.Selector
	watch           bool
	resourceVersion string
	timeout         time.Duration
	bookmarks       bool
}

func parseListOptions(res *resource, r *http.Request) (listOptions, error) {
	q := r.URL.Query()
	opts := listOptions{labels: labels.Everything(), fields: fields.Everything(), resourceVersion: q.Get("resourceVersion")}
	var err error
	if v := q.Get("labelSelector"); v != "" {
		if opts.labels, err = labels.Parse(v); err != nil {
			return opts, apierrors.NewBadRequest(fmt.Sprintf("labelSelector: %v", err))
		}
	}
	if v := q.Get("fieldSelector"); v != "" {
		if opts.fields, err = fields.ParseSelector(v); err != nil {
			return opts, apierrors.NewBadRequest(fmt.Sprintf("fieldSelector: %v", err))
		}
		for _, req := range opts.fields.Requirements() {
			if !slices.Contains(res.fieldLabels, req.Field) {
				return opts, apierrors.NewBadRequest(fmt.Sprintf("fieldSelector: field label %q is not supported for %s", req.Field, res.name))
			}
		}
	}
	if opts.watch, err = parseBool(q.Get("watch")); err != nil {
		return opts, apierrors.NewBadRequest(fmt.Sprintf("watch: %v", err))
	}
	if opts.bookmarks, err = parseBool(q.Get("allowWatchBookmarks")); err != nil {
		return opts, apierrors.NewBadRequest(fmt.Sprintf("allowWatchBookmarks: %v", err))
	}
	if v := q.Get("timeoutSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return opts, apierrors.NewBadRequest(fmt.Sprintf("timeoutSeconds: %q is not a non-negative integer", v))
		}
		opts.timeout = time.Duration(n) * time.Second
	}
	if v := opts.resourceVersion; v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 0 {
			return opts, apierrors.NewBadRequest(fmt.Sprintf("resourceVersion: %q is not a valid resource version", v))
		}
	}
	return opts, nil
}

func parseBool(v string) (bool, error) {
	if v == "" {
		return false, nil
	}
	return strconv.ParseBool(v)
}

// matcher is the per-watcher (or per-list) filter: namespace, labels and
// fields.
func matcher(res *resource, namespace string, opts listOptions) func(object) bool {
	return func(o object) bool {
		if namespace != "" && o.GetNamespace() != namespace {
			return false
		}
		if !opts.labels.Empty() && !opts.labels.Matches(labels.Set(o.GetLabels())) {
			return false
		}
		return opts.fields.Empty() || opts.fields.Matches(res.fieldSet(o))
	}
}

func (s *Server) handleList(res *resource) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, err := s.parse(res, r)
		if err != nil {
			writeError(w, err)
			return
		}
		opts, err := parseListOptions(res, r)
		if err != nil {
			writeError(w, err)
			return
		}
		verb := "list"
		if opts.watch {
			verb = "watch"
		}
		if _, err := s.authorizeRequest(r, req, verb, "", opts.fields); err != nil {
			writeError(w, err)
			return
		}
		if opts.watch {
			s.serveWatch(w, r, req, opts)
			return
		}
		items, rev, err := s.listPrefix(r.Context(), res, listPrefix(res, req.namespace, opts), matcher(res, req.namespace, opts))
		if err != nil {
			writeError(w, err)
			return
		}
		for _, o := range items {
			s.presentNode(o)
		}
		l := res.newList(items, strconv.FormatInt(rev, 10))
		res.setKind(l, res.listKind)
		writeJSON(w, http.StatusOK, l)
	}
}

// list reads the matching objects of a collection and the store revision
// of the read.
func (s *Server) list(ctx context.Context, res *resource, namespace string, match func(object) bool) ([]object, int64, error) {
	return s.listPrefix(ctx, res, res.prefix(namespace), match)
}

// listPrefix is list over the keys under prefix.
func (s *Server) listPrefix(ctx context.Context, res *resource, prefix string, match func(object) bool) ([]object, int64, error) {
	kvs, rev, err := s.store.List(ctx, prefix)
	if err != nil {
		return nil, 0, storeError(res, "", err)
	}
	items := make([]object, 0, len(kvs))
	for _, kv := range kvs {
		o, err := res.decode(kv)
		if err != nil {
			return nil, 0, apierrors.NewInternalError(err)
		}
		if match == nil || match(o) {
			items = append(items, o)
		}
	}
	return items, rev, nil
}

// listPrefix narrows a list by an exact metadata.name field selector to
// the keys that start with the object's own key, so that each agent's read
// of its Node decodes one object, not every Node of the fleet; match still
// makes the name exact.
func listPrefix(res *resource, namespace string, opts listOptions) string {
	if opts.fields != nil && (namespace != "" || !res.namespaced) {
		if name, ok := opts.fields.RequiresExactMatch("metadata.name"); ok && name != "" {
			return res.key(namespace, name)
		}
	}
	return res.prefix(namespace)
}

// checkTarget refuses a body whose kind or namespace contradicts the URL.
func checkTarget(req request, o object) error {
	gvk := o.GetObjectKind().GroupVersionKind()
	want := req.res.groupVersion().WithKind(req.res.kind)
	if (gvk.Kind != "" && gvk.Kind != want.Kind) || (gvk.Version != "" && gvk.GroupVersion() != want.GroupVersion()) {
		return apierrors.NewBadRequest(fmt.Sprintf("the body is a %s, want %s", gvk, want))
	}
	if !req.res.namespaced {
		if o.GetNamespace() != "" {
			return apierrors.NewBadRequest(fmt.Sprintf("%s is cluster-scoped: metadata.namespace must be empty", req.res.name))
		}
		return nil
	}
	switch ns := o.GetNamespace(); {
	case ns == "":
		o.SetNamespace(req.namespace)
	case ns != req.namespace:
		return apierrors.NewBadRequest(fmt.Sprintf("the namespace of the provided object (%s) does not match the namespace sent on the request (%s)", ns, req.namespace))
	}
	return nil
}

func (s *Server) handleCreate(res *resource) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, err := s.parse(res, r)
		if err == nil {
			var o object
			if o, err = s.create(w, r, req); err == nil {
				writeJSON(w, http.StatusCreated, o)
				return
			}
		}
		writeError(w, err)
	}
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, req request) (object, error) {
	res := req.res
	o := res.newObject()
	if err := decodeBody(w, r, o, false); err != nil {
		return nil, err
	}
	if err := checkTarget(req, o); err != nil {
		return nil, err
	}
	req.name = o.GetName()
	check, err := s.authorizeRequest(r, req, "create", "", nil)
	if err != nil {
		return nil, err
	}
	if check != nil && !check(o) {
		return nil, forbidden(userFrom(r.Context()), attributes{verb: "create", res: res, namespace: req.namespace, name: req.name})
	}
	res.defaults(o)
	if errs := res.validate(o); len(errs) > 0 {
		return nil, apierrors.NewInvalid(res.groupKind(), o.GetName(), errs)
	}
	// A pod's UID is its agent's: the agent names its pods itself (like a
	// kubelet's static pods), and matches the objects back by UID.
	if _, isPod := o.(*corev1.Pod); !isPod || o.GetUID() == "" {
		o.SetUID(uuid.NewUUID())
	}
	o.SetCreationTimestamp(metav1.NewTime(s.clock.Now()))
	o.SetResourceVersion("")
	o.SetDeletionTimestamp(nil)
	if res.specEqual != nil {
		o.SetGeneration(1)
	}
	s.addWarnings(w, res, o)
	if req.dryRun {
		return o, nil
	}
	key, data, err := sealedValue(res, o)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	rev, err := s.store.Create(r.Context(), key, data)
	if err != nil {
		return nil, storeError(res, o.GetName(), err)
	}
	o.SetResourceVersion(strconv.FormatInt(rev, 10))
	if h := s.hooks[res]; h.afterWrite != nil {
		h.afterWrite(r.Context(), o)
	}
	return o, nil
}

func (s *Server) addWarnings(w http.ResponseWriter, res *resource, o object) {
	if res.warnings == nil {
		return
	}
	for _, warning := range res.warnings(o) {
		w.Header().Add("Warning", warning)
	}
}

func (s *Server) handleUpdate(res *resource, status bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, err := s.parse(res, r)
		if err == nil {
			var o object
			if o, err = s.update(w, r, req, status); err == nil {
				writeJSON(w, http.StatusOK, o)
				return
			}
		}
		writeError(w, err)
	}
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, req request, status bool) (object, error) {
	res := req.res
	body := res.newObject()
	if err := decodeBody(w, r, body, false); err != nil {
		return nil, err
	}
	if err := checkTarget(req, body); err != nil {
		return nil, err
	}
	if body.GetName() != req.name {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", body.GetName(), req.name))
	}
	subresource := ""
	if status {
		subresource = "status"
	}
	check, err := s.authorizeRequest(r, req, "update", subresource, nil)
	if err != nil {
		return nil, err
	}
	deny := forbidden(userFrom(r.Context()), attributes{verb: "update", res: res, subresource: subresource, namespace: req.namespace, name: req.name})
	if check != nil && !check(body) {
		return nil, deny
	}
	for attempt := 0; ; attempt++ {
		o, err := s.updateOnce(w, r, req, body.DeepCopyObject().(object), status, check, deny)
		if errdefs.IsConflict(err) && body.GetResourceVersion() == "" && attempt < maxUnconditionalRetries {
			continue // unconditional update lost a race: re-read and retry
		}
		if errdefs.IsConflict(err) {
			return nil, storeError(res, req.name, err)
		}
		return o, err
	}
}

// updateOnce is one read-modify-write of an update; a store conflict is
// returned as is, for the caller to retry or report.
func (s *Server) updateOnce(w http.ResponseWriter, r *http.Request, req request, o object, status bool, check objectCheck, deny error) (object, error) {
	res := req.res
	kv, old, err := s.read(r.Context(), req)
	if err != nil {
		return nil, err
	}
	if check != nil && !check(old) {
		return nil, deny
	}
	if rv := o.GetResourceVersion(); rv != "" && rv != old.GetResourceVersion() {
		return nil, apierrors.NewConflict(res.groupResource(), req.name, errors.New(conflictMessage))
	}
	if status {
		next := old.DeepCopyObject().(object)
		res.copyStatus(next, o)
		o = next
		if h := s.hooks[res]; h.statusUnchanged != nil && h.statusUnchanged(o, old) {
			return old, nil
		}
	} else {
		res.defaults(o)
		if res.copyStatus != nil {
			res.copyStatus(o, old)
		}
		o.SetUID(old.GetUID())
		o.SetCreationTimestamp(old.GetCreationTimestamp())
		o.SetDeletionTimestamp(old.GetDeletionTimestamp())
		if res.specEqual != nil {
			o.SetGeneration(old.GetGeneration())
			if !res.specEqual(o, old) {
				o.SetGeneration(old.GetGeneration() + 1)
			}
		}
		if errs := res.validateUpdate(o, old); len(errs) > 0 {
			return nil, apierrors.NewInvalid(res.groupKind(), req.name, errs)
		}
		s.addWarnings(w, res, o)
	}
	o.SetResourceVersion(old.GetResourceVersion())
	data, err := res.encode(o)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	stored, err := res.storage.unseal(kv.Key, kv.Value)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	if req.dryRun || string(data) == string(stored) {
		return o, nil // a no-op update writes nothing, as in Kubernetes
	}
	if data, err = res.storage.seal(kv.Key, data); err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	rev, err := s.store.Update(r.Context(), kv.Key, data, kv.ModRevision)
	if err != nil {
		if errdefs.IsConflict(err) {
			return nil, err
		}
		return nil, storeError(res, req.name, err)
	}
	o.SetResourceVersion(strconv.FormatInt(rev, 10))
	if h := s.hooks[res]; !status && h.afterWrite != nil {
		h.afterWrite(r.Context(), o)
	}
	return o, nil
}

func (s *Server) handleDelete(res *resource) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, err := s.parse(res, r)
		if err == nil {
			var o object
			if o, err = s.delete(w, r, req); err == nil {
				writeJSON(w, http.StatusOK, o)
				return
			}
		}
		writeError(w, err)
	}
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, req request) (object, error) {
	res := req.res
	var opts metav1.DeleteOptions
	if err := decodeBody(w, r, &opts, true); err != nil {
		return nil, err
	}
	if p := r.URL.Query().Get("propagationPolicy"); p != "" {
		pp := metav1.DeletionPropagation(p)
		opts.PropagationPolicy = &pp
	}
	if pp := opts.PropagationPolicy; pp != nil {
		switch *pp {
		case metav1.DeletePropagationBackground, metav1.DeletePropagationForeground, metav1.DeletePropagationOrphan:
		default:
			return nil, apierrors.NewBadRequest(fmt.Sprintf("propagationPolicy: unsupported value %q", *pp))
		}
	}
	check, err := s.authorizeRequest(r, req, "delete", "", nil)
	if err != nil {
		return nil, err
	}
	// A delete without a resourceVersion precondition that loses a race
	// with another write (a controller's status update) re-reads and
	// retries, as an unconditional update does: the client asked for no
	// conflict.
	for attempt := 0; ; attempt++ {
		o, err := s.deleteOnce(r, req, &opts, check)
		if errdefs.IsConflict(err) && (opts.Preconditions == nil || opts.Preconditions.ResourceVersion == nil) && attempt < maxUnconditionalRetries {
			continue
		}
		if errdefs.IsConflict(err) {
			return nil, storeError(res, req.name, err)
		}
		return o, err
	}
}

// deleteOnce is one read-check-delete; a store conflict is returned as
// is, for the caller to retry or report.
func (s *Server) deleteOnce(r *http.Request, req request, opts *metav1.DeleteOptions, check objectCheck) (object, error) {
	res := req.res
	kv, old, err := s.read(r.Context(), req)
	if err != nil {
		return nil, err
	}
	if check != nil && !check(old) {
		return nil, forbidden(userFrom(r.Context()), attributes{verb: "delete", res: res, namespace: req.namespace, name: req.name})
	}
	if pre := opts.Preconditions; pre != nil {
		if pre.UID != nil && *pre.UID != old.GetUID() {
			return nil, apierrors.NewConflict(res.groupResource(), req.name,
				fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", *pre.UID, old.GetUID()))
		}
		if pre.ResourceVersion != nil && *pre.ResourceVersion != old.GetResourceVersion() {
			return nil, apierrors.NewConflict(res.groupResource(), req.name,
				fmt.Errorf("Precondition failed: ResourceVersion in precondition: %v, ResourceVersion in object meta: %v", *pre.ResourceVersion, old.GetResourceVersion()))
		}
	}
	if req.dryRun {
		return old, nil
	}
	h := s.hooks[res]
	if h.beforeDelete != nil {
		if err := h.beforeDelete(r.Context(), old, opts); err != nil {
			return nil, err
		}
	}
	_, rev, err := s.store.Delete(r.Context(), kv.Key, kv.ModRevision)
	if errdefs.IsConflict(err) {
		return nil, err
	}
	if err != nil {
		return nil, storeError(res, req.name, err)
	}
	old.SetResourceVersion(strconv.FormatInt(rev, 10))
	if h.afterDelete != nil {
		h.afterDelete(r.Context(), old)
	}
	return old, nil
}
