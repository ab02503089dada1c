package server

import (
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/runtime"
)

// object is what every served type is: a Kubernetes object with metadata.
type object interface {
	metav1.Object
	kruntime.Object
}

// resource describes one served collection; the REST handlers, the watch
// broadcaster and authorization are written once against it.
type resource struct {
	group, version string
	name           string // plural, as in the URL: "daemonsets"
	singular       string
	shortNames     []string
	kind, listKind string
	namespaced     bool
	// fieldLabels are the field selector keys the collection supports.
	fieldLabels []string

	newObject func() object
	newList   func(items []object, resourceVersion string) kruntime.Object
	// defaults fills in what the API server defaults on create and update.
	defaults func(object)
	// validate checks a defaulted object on create.
	validate func(object) field.ErrorList
	// validateUpdate checks a defaulted object against the stored one.
	validateUpdate func(obj, old object) field.ErrorList
	// copyStatus sets dst's status to src's: a PUT on the main resource
	// keeps the stored status, a PUT on /status keeps the stored rest; nil
	// for kinds without status, which then have no /status subresource.
	copyStatus func(dst, src object)
	// specEqual, when set, makes the resource carry metadata.generation,
	// bumped on every spec change.
	specEqual func(a, b object) bool
	// warnings lists the Warning headers a create or update gets.
	warnings func(object) []string
	// fieldSet is what field selectors match against.
	fieldSet func(object) fields.Set
	// storage encrypts values at rest; nil stores them in plain.
	storage *transformer
}

func (r *resource) groupVersion() schema.GroupVersion {
	return schema.GroupVersion{Group: r.group, Version: r.version}
}

func (r *resource) groupResource() schema.GroupResource {
	return schema.GroupResource{Group: r.group, Resource: r.name}
}

func (r *resource) groupKind() schema.GroupKind {
	return schema.GroupKind{Group: r.group, Kind: r.kind}
}

// basePath is the URL prefix of the resource's group version.
func (r *resource) basePath() string {
	if r.group == "" {
		return "/api/" + r.version
	}
	return "/apis/" + r.group + "/" + r.version
}

// prefix is the store key prefix of the collection, or of one namespace of
// it when namespace is not empty.
func (r *resource) prefix(namespace string) string {
	if r.namespaced && namespace != "" {
		return "/" + r.name + "/" + namespace + "/"
	}
	return "/" + r.name + "/"
}

// key is the store key of one object.
func (r *resource) key(namespace, name string) string {
	if r.namespaced {
		return "/" + r.name + "/" + namespace + "/" + name
	}
	return "/" + r.name + "/" + name
}

func (r *resource) setKind(o kruntime.Object, kind string) {
	o.GetObjectKind().SetGroupVersionKind(r.groupVersion().WithKind(kind))
}

func metaFields(o object) fields.Set {
	return fields.Set{"metadata.name": o.GetName(), "metadata.namespace": o.GetNamespace()}
}

func podNodeName(o object) string {
	if p, ok := o.(*corev1.Pod); ok {
		return p.Spec.NodeName
	}
	return ""
}

// newResources builds the descriptor table of the three served resources.
func newResources() (daemonSets, nodes, pods *resource) {
	daemonSets = &resource{
		group: "apps", version: "v1", name: "daemonsets", singular: "daemonset", shortNames: []string{"ds"},
		kind: "DaemonSet", listKind: "DaemonSetList", namespaced: true,
		fieldLabels: []string{"metadata.name", "metadata.namespace"},
		newObject:   func() object { return &appsv1.DaemonSet{} },
		newList: func(items []object, rv string) kruntime.Object {
			l := &appsv1.DaemonSetList{ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: make([]appsv1.DaemonSet, len(items))}
			for i, o := range items {
				l.Items[i] = *o.(*appsv1.DaemonSet)
			}
			return l
		},
		defaults: func(o object) { api.SetDefaultsDaemonSet(o.(*appsv1.DaemonSet)) },
		validate: func(o object) field.ErrorList { return api.ValidateDaemonSet(o.(*appsv1.DaemonSet)) },
		validateUpdate: func(o, old object) field.ErrorList {
			return api.ValidateDaemonSetUpdate(o.(*appsv1.DaemonSet), old.(*appsv1.DaemonSet))
		},
		copyStatus: func(dst, src object) { dst.(*appsv1.DaemonSet).Status = src.(*appsv1.DaemonSet).Status },
		specEqual: func(a, b object) bool {
			return equality.Semantic.DeepEqual(a.(*appsv1.DaemonSet).Spec, b.(*appsv1.DaemonSet).Spec)
		},
		warnings: daemonSetWarnings,
		fieldSet: metaFields,
	}
	nodes = &resource{
		version: "v1", name: "nodes", singular: "node", shortNames: []string{"no"},
		kind: "Node", listKind: "NodeList",
		fieldLabels: []string{"metadata.name"},
		newObject:   func() object { return &corev1.Node{} },
		newList: func(items []object, rv string) kruntime.Object {
			l := &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: make([]corev1.Node, len(items))}
			for i, o := range items {
				l.Items[i] = *o.(*corev1.Node)
			}
			return l
		},
		defaults: func(object) {},
		validate: validateNode,
		validateUpdate: func(o, old object) field.ErrorList {
			return validateNode(o)
		},
		copyStatus: func(dst, src object) { dst.(*corev1.Node).Status = src.(*corev1.Node).Status },
		fieldSet:   func(o object) fields.Set { return fields.Set{"metadata.name": o.GetName()} },
	}
	pods = &resource{
		version: "v1", name: "pods", singular: "pod", shortNames: []string{"po"},
		kind: "Pod", listKind: "PodList", namespaced: true,
		fieldLabels: []string{"metadata.name", "metadata.namespace", "spec.nodeName"},
		newObject:   func() object { return &corev1.Pod{} },
		newList: func(items []object, rv string) kruntime.Object {
			l := &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: make([]corev1.Pod, len(items))}
			for i, o := range items {
				l.Items[i] = *o.(*corev1.Pod)
			}
			return l
		},
		defaults: func(o object) { api.SetDefaultsPod(o.(*corev1.Pod)) },
		validate: func(o object) field.ErrorList { return api.ValidatePod(o.(*corev1.Pod)) },
		validateUpdate: func(o, old object) field.ErrorList {
			return api.ValidatePod(o.(*corev1.Pod))
		},
		copyStatus: func(dst, src object) { dst.(*corev1.Pod).Status = src.(*corev1.Pod).Status },
		fieldSet: func(o object) fields.Set {
			s := metaFields(o)
			s["spec.nodeName"] = podNodeName(o)
			return s
		},
	}
	return daemonSets, nodes, pods
}

func validateNode(o object) field.ErrorList {
	return apimachineryvalidation.ValidateObjectMeta(&o.(*corev1.Node).ObjectMeta, false,
		apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
}

// daemonSetWarnings turns the template fields daemonlet does not run into
// Warning header texts: apps/v1 accepts them, so they are reported, not
// refused.
func daemonSetWarnings(o object) []string {
	ds := o.(*appsv1.DaemonSet)
	var out []string
	for _, e := range runtime.CheckPodSpec(&ds.Spec.Template.Spec) {
		// CheckPodSpec's paths start at the pod spec ("spec..."); in a
		// DaemonSet that spec sits under spec.template.
		out = append(out, "299 - "+strconv.Quote("spec.template."+e.Field+": "+e.Detail))
	}
	return out
}

// newObjectResources builds the descriptors of ConfigMaps and Secrets, whose
// values are encrypted at rest when enc says so.
func newObjectResources(enc *Encryption) (configMaps, secrets *resource) {
	configMaps = &resource{
		version: "v1", name: "configmaps", singular: "configmap", shortNames: []string{"cm"},
		kind: "ConfigMap", listKind: "ConfigMapList", namespaced: true,
		fieldLabels: []string{"metadata.name", "metadata.namespace"},
		newObject:   func() object { return &corev1.ConfigMap{} },
		newList: func(items []object, rv string) kruntime.Object {
			l := &corev1.ConfigMapList{ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: make([]corev1.ConfigMap, len(items))}
			for i, o := range items {
				l.Items[i] = *o.(*corev1.ConfigMap)
			}
			return l
		},
		defaults: func(o object) { api.SetDefaultsConfigMap(o.(*corev1.ConfigMap)) },
		validate: func(o object) field.ErrorList { return api.ValidateConfigMap(o.(*corev1.ConfigMap)) },
		validateUpdate: func(o, old object) field.ErrorList {
			return api.ValidateConfigMapUpdate(o.(*corev1.ConfigMap), old.(*corev1.ConfigMap))
		},
		fieldSet: metaFields,
		storage:  enc.forResource("configmaps"),
	}
	secrets = &resource{
		version: "v1", name: "secrets", singular: "secret",
		kind: "Secret", listKind: "SecretList", namespaced: true,
		fieldLabels: []string{"metadata.name", "metadata.namespace", "type"},
		newObject:   func() object { return &corev1.Secret{} },
		newList: func(items []object, rv string) kruntime.Object {
			l := &corev1.SecretList{ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: make([]corev1.Secret, len(items))}
			for i, o := range items {
				l.Items[i] = *o.(*corev1.Secret)
			}
			return l
		},
		defaults: func(o object) { api.SetDefaultsSecret(o.(*corev1.Secret)) },
		validate: func(o object) field.ErrorList { return api.ValidateSecret(o.(*corev1.Secret)) },
		validateUpdate: func(o, old object) field.ErrorList {
			return api.ValidateSecretUpdate(o.(*corev1.Secret), old.(*corev1.Secret))
		},
		fieldSet: func(o object) fields.Set {
			s := metaFields(o)
			s["type"] = string(o.(*corev1.Secret).Type)
			return s
		},
		storage: enc.forResource("secrets"),
	}
	return configMaps, secrets
}
