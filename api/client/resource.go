package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Resource is one kind of object on the server, in one namespace or in all
// of them: T is the object type and L its list type.
type Resource[T, L any] struct {
	c          *Client
	gvk        schema.GroupVersionKind
	resource   string // the plural in the path, e.g. "daemonsets"
	namespaced bool
	namespace  string // "" = all namespaces (list and watch only) or cluster-scoped
}

// DaemonSets is the apps/v1 DaemonSets of namespace; "" means all namespaces,
// which allows only List and Watch.
func (c *Client) DaemonSets(namespace string) *Resource[appsv1.DaemonSet, appsv1.DaemonSetList] {
	return &Resource[appsv1.DaemonSet, appsv1.DaemonSetList]{c: c, gvk: appsv1.SchemeGroupVersion.WithKind("DaemonSet"), resource: "daemonsets", namespaced: true, namespace: namespace}
}

// Nodes is the cluster-scoped v1 Nodes.
func (c *Client) Nodes() *Resource[corev1.Node, corev1.NodeList] {
	return &Resource[corev1.Node, corev1.NodeList]{c: c, gvk: corev1.SchemeGroupVersion.WithKind("Node"), resource: "nodes"}
}

// Pods is the v1 Pods of namespace; "" means all namespaces, which allows
// only List and Watch.
func (c *Client) Pods(namespace string) *Resource[corev1.Pod, corev1.PodList] {
	return &Resource[corev1.Pod, corev1.PodList]{c: c, gvk: corev1.SchemeGroupVersion.WithKind("Pod"), resource: "pods", namespaced: true, namespace: namespace}
}

// ConfigMaps is the v1 ConfigMaps of namespace; "" means all namespaces,
// which allows only List and Watch.
func (c *Client) ConfigMaps(namespace string) *Resource[corev1.ConfigMap, corev1.ConfigMapList] {
	return &Resource[corev1.ConfigMap, corev1.ConfigMapList]{c: c, gvk: corev1.SchemeGroupVersion.WithKind("ConfigMap"), resource: "configmaps", namespaced: true, namespace: namespace}
}

// ControllerRevisions is the namespaced apps/v1 controllerrevisions
// collection: the revision history of DaemonSets.
func (c *Client) ControllerRevisions(namespace string) *Resource[appsv1.ControllerRevision, appsv1.ControllerRevisionList] {
	return &Resource[appsv1.ControllerRevision, appsv1.ControllerRevisionList]{c: c, gvk: appsv1.SchemeGroupVersion.WithKind("ControllerRevision"), resource: "controllerrevisions", namespaced: true, namespace: namespace}
}

// Events is the v1 Events of namespace; "" means all namespaces, which
// allows only List and Watch.
func (c *Client) Events(namespace string) *Resource[corev1.Event, corev1.EventList] {
	return &Resource[corev1.Event, corev1.EventList]{c: c, gvk: corev1.SchemeGroupVersion.WithKind("Event"), resource: "events", namespaced: true, namespace: namespace}
}

// Secrets is the v1 Secrets of namespace; "" means all namespaces, which
// allows only List and Watch.
func (c *Client) Secrets(namespace string) *Resource[corev1.Secret, corev1.SecretList] {
	return &Resource[corev1.Secret, corev1.SecretList]{c: c, gvk: corev1.SchemeGroupVersion.WithKind("Secret"), resource: "secrets", namespaced: true, namespace: namespace}
}

// ListOptions narrows a List or Watch, with the query parameters of the same
// names.
type ListOptions struct {
	// LabelSelector is a label selector such as "app=x,tier!=db".
	LabelSelector string
	// FieldSelector is a field selector such as "spec.nodeName=n1".
	FieldSelector string
	// ResourceVersion is where a Watch starts: every change after it.
	ResourceVersion string
	// TimeoutSeconds ends a Watch after that many seconds; 0 leaves it to the
	// server.
	TimeoutSeconds int64
	// AllowWatchBookmarks asks for BOOKMARK events on an idle Watch.
	AllowWatchBookmarks bool
}

// WriteOptions modify a Create or an Update.
type WriteOptions struct {
	// DryRun asks the server to default and validate without storing.
	DryRun bool
}

// GroupResource names the resource as errors do, e.g. "daemonsets.apps".
func (r *Resource[T, L]) GroupResource() schema.GroupResource {
	return schema.GroupResource{Group: r.gvk.Group, Resource: r.resource}
}

// collectionPath is the path of the resource's collection, all namespaces
// when the namespace is "".
func (r *Resource[T, L]) collectionPath() string {
	prefix := "/api/" + r.gvk.Version
	if r.gvk.Group != "" {
		prefix = "/apis/" + r.gvk.Group + "/" + r.gvk.Version
	}
	if r.namespaced && r.namespace != "" {
		return prefix + "/namespaces/" + url.PathEscape(r.namespace) + "/" + r.resource
	}
	return prefix + "/" + r.resource
}

// objectPath is the path of one object; a namespaced resource needs its
// namespace for that.
func (r *Resource[T, L]) objectPath(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%s: a name is required: %w", r.GroupResource(), errdefs.ErrInvalidArgument)
	}
	if r.namespaced && r.namespace == "" {
		return "", fmt.Errorf("%s %q: a namespace is required: %w", r.GroupResource(), name, errdefs.ErrInvalidArgument)
	}
	return r.collectionPath() + "/" + url.PathEscape(name), nil
}

// Get reads the object called name.
func (r *Resource[T, L]) Get(ctx context.Context, name string) (*T, error) {
	path, err := r.objectPath(name)
	if err != nil {
		return nil, err
	}
	out := new(T)
	if err := r.c.do(ctx, request{method: http.MethodGet, path: path, gr: r.GroupResource(), name: name}, out); err != nil {
		return nil, err
	}
	return out, nil
}

// List reads the objects that match opts.
func (r *Resource[T, L]) List(ctx context.Context, opts ListOptions) (*L, error) {
	out := new(L)
	if err := r.c.do(ctx, request{method: http.MethodGet, path: r.collectionPath(), query: opts.query(false), gr: r.GroupResource()}, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Create stores a new object and returns it as the server stored it.
func (r *Resource[T, L]) Create(ctx context.Context, obj *T, opts WriteOptions) (*T, error) {
	body, name, err := r.body(obj)
	if err != nil {
		return nil, err
	}
	if r.namespaced && r.namespace == "" {
		return nil, fmt.Errorf("%s %q: a namespace is required: %w", r.GroupResource(), name, errdefs.ErrInvalidArgument)
	}
	out := new(T)
	req := request{method: http.MethodPost, path: r.collectionPath(), query: opts.query(), body: body, gr: r.GroupResource(), name: name}
	if err := r.c.do(ctx, req, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Update replaces the object named in obj; a non-empty
// metadata.resourceVersion makes it conditional (409 Conflict when stale).
func (r *Resource[T, L]) Update(ctx context.Context, obj *T, opts WriteOptions) (*T, error) {
	return r.put(ctx, obj, "", opts)
}

// UpdateStatus replaces the status of the object named in obj.
func (r *Resource[T, L]) UpdateStatus(ctx context.Context, obj *T) (*T, error) {
	return r.put(ctx, obj, "/status", WriteOptions{})
}

// put sends obj to its object path plus suffix.
func (r *Resource[T, L]) put(ctx context.Context, obj *T, suffix string, opts WriteOptions) (*T, error) {
	body, name, err := r.body(obj)
	if err != nil {
		return nil, err
	}
	path, err := r.objectPath(name)
	if err != nil {
		return nil, err
	}
	out := new(T)
	req := request{method: http.MethodPut, path: path + suffix, query: opts.query(), body: body, gr: r.GroupResource(), name: name}
	if err := r.c.do(ctx, req, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Delete removes the object called name.
func (r *Resource[T, L]) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	path, err := r.objectPath(name)
	if err != nil {
		return err
	}
	opts.TypeMeta = metav1.TypeMeta{Kind: "DeleteOptions", APIVersion: "v1"}
	return r.c.do(ctx, request{method: http.MethodDelete, path: path, body: &opts, gr: r.GroupResource(), name: name}, nil)
}

// body returns a shallow copy of obj with its kind and apiVersion set (the
// caller's object is left alone) and the object's name.
func (r *Resource[T, L]) body(obj *T) (*T, string, error) {
	if obj == nil {
		return nil, "", fmt.Errorf("%s: nil object: %w", r.GroupResource(), errdefs.ErrInvalidArgument)
	}
	cp := *obj
	ro, ok := any(&cp).(runtime.Object)
	if !ok {
		return nil, "", fmt.Errorf("%T is not a Kubernetes object: %w", obj, errdefs.ErrInvalidArgument)
	}
	ro.GetObjectKind().SetGroupVersionKind(r.gvk)
	m, err := meta.Accessor(ro)
	if err != nil {
		return nil, "", fmt.Errorf("%T: %w: %w", obj, errdefs.ErrInvalidArgument, err)
	}
	return &cp, m.GetName(), nil
}

// query encodes the options as Kubernetes' query parameters.
func (o ListOptions) query(watch bool) url.Values {
	q := url.Values{}
	if o.LabelSelector != "" {
		q.Set("labelSelector", o.LabelSelector)
	}
	if o.FieldSelector != "" {
		q.Set("fieldSelector", o.FieldSelector)
	}
	if o.ResourceVersion != "" {
		q.Set("resourceVersion", o.ResourceVersion)
	}
	if o.TimeoutSeconds > 0 {
		q.Set("timeoutSeconds", strconv.FormatInt(o.TimeoutSeconds, 10))
	}
	if watch {
		q.Set("watch", "true")
		if o.AllowWatchBookmarks {
			q.Set("allowWatchBookmarks", "true")
		}
	}
	return q
}

// query encodes the options as Kubernetes' query parameters.
func (o WriteOptions) query() url.Values {
	q := url.Values{}
	if o.DryRun {
		q.Set("dryRun", metav1.DryRunAll)
	}
	return q
}
