package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"
)

// kindInfo describes one resource type the CLI knows.
type kindInfo struct {
	// resource is the plural, as in URLs and errors ("daemonsets").
	resource string
	// gvk is the type of the objects.
	gvk schema.GroupVersionKind
	// namespaced is false for nodes.
	namespaced bool
}

// Resource types of the CLI, by kubectl's names.
var (
	kindDaemonSet = kindInfo{resource: "daemonsets", gvk: appsv1.SchemeGroupVersion.WithKind("DaemonSet"), namespaced: true}
	kindNode      = kindInfo{resource: "nodes", gvk: corev1.SchemeGroupVersion.WithKind("Node")}
	kindPod       = kindInfo{resource: "pods", gvk: corev1.SchemeGroupVersion.WithKind("Pod"), namespaced: true}
	kindConfigMap = kindInfo{resource: "configmaps", gvk: corev1.SchemeGroupVersion.WithKind("ConfigMap"), namespaced: true}
	kindSecret    = kindInfo{resource: "secrets", gvk: corev1.SchemeGroupVersion.WithKind("Secret"), namespaced: true}
	// kindControllerRevision is only for get (lookupGetKind): the other
	// verbs' lookupKind does not know it.
	kindControllerRevision = kindInfo{resource: "controllerrevisions", gvk: appsv1.SchemeGroupVersion.WithKind("ControllerRevision"), namespaced: true}
)

// lookupKind resolves kubectl's names and short names of a resource type.
func lookupKind(name string) (kindInfo, error) {
	switch strings.ToLower(name) {
	case "ds", "daemonset", "daemonsets", "daemonset.apps", "daemonsets.apps":
		return kindDaemonSet, nil
	case "no", "node", "nodes":
		return kindNode, nil
	case "po", "pod", "pods":
		return kindPod, nil
	case "cm", "configmap", "configmaps":
		return kindConfigMap, nil
	case "secret", "secrets":
		return kindSecret, nil
	}
	return kindInfo{}, fmt.Errorf("the server doesn't have a resource type %q: %w", name, errdefs.ErrInvalidArgument)
}

// lookupGetKind is lookupKind plus the types only get lists: the
// DaemonSets' ControllerRevisions, which kubectl names without a short name.
func lookupGetKind(name string) (kindInfo, error) {
	switch strings.ToLower(name) {
	case "controllerrevision", "controllerrevisions", "controllerrevision.apps", "controllerrevisions.apps":
		return kindControllerRevision, nil
	}
	return lookupKind(name)
}

// qualifiedName is how kubectl names an object of the type in messages:
// "daemonset.apps/NAME" (with a slash) or `daemonset.apps "NAME"`.
func (k kindInfo) qualifiedName(name string, quoted bool) string {
	kind := strings.ToLower(k.gvk.Kind)
	if k.gvk.Group != "" {
		kind += "." + k.gvk.Group
	}
	if quoted {
		return fmt.Sprintf("%s %q", kind, name)
	}
	return kind + "/" + name
}

// newTabWriter is kubectl's table writer: columns three spaces apart.
func newTabWriter(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
}

// tableOptions say which columns a table has.
type tableOptions struct {
	wide          bool
	allNamespaces bool
	now           time.Time
}

// age renders the age of an object as kubectl does.
func age(ts metav1.Time, now time.Time) string {
	if ts.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(ts.Time))
}

// orNone is s, or "<none>" when s is empty.
func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// writeRow writes tab-separated cells, prefixed with the namespace when the
// table lists all namespaces.
func writeRow(w io.Writer, opts tableOptions, namespace string, cells ...string) {
	if opts.allNamespaces {
		cells = append([]string{namespace}, cells...)
	}
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

// printDaemonSets writes kubectl's daemonset table.
func printDaemonSets(out io.Writer, items []appsv1.DaemonSet, opts tableOptions) error {
	w := newTabWriter(out)
	head := []string{"NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"}
	if opts.wide {
		head = append(head, "CONTAINERS", "IMAGES", "SELECTOR")
	}
	writeRow(w, opts, "NAMESPACE", head...)
	for _, ds := range items {
		st := ds.Status
		row := []string{ds.Name, itoa(st.DesiredNumberScheduled), itoa(st.CurrentNumberScheduled), itoa(st.NumberReady),
			itoa(st.UpdatedNumberScheduled), itoa(st.NumberAvailable), labels.FormatLabels(ds.Spec.Template.Spec.NodeSelector), age(ds.CreationTimestamp, opts.now)}
		if opts.wide {
			var names, images []string
			for _, c := range ds.Spec.Template.Spec.Containers {
				names = append(names, c.Name)
				images = append(images, c.Image)
			}
			row = append(row, strings.Join(names, ","), strings.Join(images, ","), orNone(metav1.FormatLabelSelector(ds.Spec.Selector)))
		}
		writeRow(w, opts, ds.Namespace, row...)
	}
	return w.Flush()
}

// itoa formats a status counter.
func itoa(n int32) string { return strconv.Itoa(int(n)) }

// nodeStatus is kubectl's STATUS of a node: Ready or NotReady from the Ready
// condition (Unknown without one), plus SchedulingDisabled.
func nodeStatus(node *corev1.Node) string {
	var status []string
	for _, c := range node.Status.Conditions {
		if c.Type != corev1.NodeReady {
			continue
		}
		if c.Status == corev1.ConditionTrue {
			status = append(status, "Ready")
		} else {
			status = append(status, "NotReady")
		}
		break
	}
	if len(status) == 0 {
		status = append(status, "Unknown")
	}
	if node.Spec.Unschedulable {
		status = append(status, "SchedulingDisabled")
	}
	return strings.Join(status, ",")
}

// nodeRoles is kubectl's ROLES: the node-role.kubernetes.io/<role> labels
// and the kubernetes.io/role label.
func nodeRoles(node *corev1.Node) string {
	roles := map[string]bool{}
	for k, v := range node.Labels {
		switch {
		case strings.HasPrefix(k, "node-role.kubernetes.io/"):
			if role := strings.TrimPrefix(k, "node-role.kubernetes.io/"); role != "" {
				roles[role] = true
			}
		case k == "kubernetes.io/role" && v != "":
			roles[v] = true
		}
	}
	names := make([]string, 0, len(roles))
	for r := range roles {
		names = append(names, r)
	}
	sort.Strings(names)
	return orNone(strings.Join(names, ","))
}

// nodeAddress is the first address of the type, or "<none>".
func nodeAddress(node *corev1.Node, typ corev1.NodeAddressType) string {
	for _, a := range node.Status.Addresses {
		if a.Type == typ {
			return a.Address
		}
	}
	return "<none>"
}

// printNodes writes kubectl's node table.
func printNodes(out io.Writer, items []corev1.Node, opts tableOptions) error {
	w := newTabWriter(out)
	opts.allNamespaces = false
	head := []string{"NAME", "STATUS", "ROLES", "AGE", "VERSION"}
	if opts.wide {
		head = append(head, "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME")
	}
	writeRow(w, opts, "", head...)
	for i := range items {
		n := &items[i]
		row := []string{n.Name, nodeStatus(n), nodeRoles(n), age(n.CreationTimestamp, opts.now), n.Status.NodeInfo.KubeletVersion}
		if opts.wide {
			info := n.Status.NodeInfo
			row = append(row, nodeAddress(n, corev1.NodeInternalIP), nodeAddress(n, corev1.NodeExternalIP),
				orNone(info.OSImage), orNone(info.KernelVersion), orNone(info.ContainerRuntimeVersion))
		}
		writeRow(w, opts, "", row...)
	}
	return w.Flush()
}

// podStatus is kubectl's STATUS of a pod: the phase or reason, refined by
// the init containers' and containers' states.
func podStatus(pod *corev1.Pod) string {
	reason := string(pod.Status.Phase)
	if pod.Status.Reason != "" {
		reason = pod.Status.Reason
	}
	initializing := false
	for i, c := range pod.Status.InitContainerStatuses {
		switch {
		case c.State.Terminated != nil && c.State.Terminated.ExitCode == 0:
			continue
		case c.State.Terminated != nil:
			if c.State.Terminated.Reason != "" {
				reason = "Init:" + c.State.Terminated.Reason
			} else if c.State.Terminated.Signal != 0 {
				reason = fmt.Sprintf("Init:Signal:%d", c.State.Terminated.Signal)
			} else {
				reason = fmt.Sprintf("Init:ExitCode:%d", c.State.Terminated.ExitCode)
			}
		case c.State.Waiting != nil && c.State.Waiting.Reason != "" && c.State.Waiting.Reason != "PodInitializing":
			reason = "Init:" + c.State.Waiting.Reason
		default:
			reason = fmt.Sprintf("Init:%d/%d", i, len(pod.Spec.InitContainers))
		}
		initializing = true
		break
	}
	if !initializing {
		hasRunning := false
		for i := len(pod.Status.ContainerStatuses) - 1; i >= 0; i-- {
			c := pod.Status.ContainerStatuses[i]
			switch {
			case c.State.Waiting != nil && c.State.Waiting.Reason != "":
				reason = c.State.Waiting.Reason
			case c.State.Terminated != nil && c.State.Terminated.Reason != "":
				reason = c.State.Terminated.Reason
			case c.State.Terminated != nil && c.State.Terminated.Signal != 0:
				reason = fmt.Sprintf("Signal:%d", c.State.Terminated.Signal)
			case c.State.Terminated != nil:
				reason = fmt.Sprintf("ExitCode:%d", c.State.Terminated.ExitCode)
			case c.Ready && c.State.Running != nil:
				hasRunning = true
			}
		}
		if reason == "Completed" && hasRunning {
			reason = "NotReady"
			if podReady(pod) {
				reason = "Running"
			}
		}
	}
	if pod.DeletionTimestamp != nil {
		reason = "Terminating"
	}
	return reason
}

// podReady says whether the pod's Ready condition is True.
func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podRestarts is kubectl's RESTARTS: the sum over containers, with the age
// of the last restart.
func podRestarts(pod *corev1.Pod, now time.Time) string {
	var restarts int32
	var last time.Time
	for _, c := range pod.Status.ContainerStatuses {
		restarts += c.RestartCount
		if t := c.LastTerminationState.Terminated; t != nil && t.FinishedAt.After(last) {
			last = t.FinishedAt.Time
		}
	}
	if restarts > 0 && !last.IsZero() {
		return fmt.Sprintf("%d (%s ago)", restarts, duration.HumanDuration(now.Sub(last)))
	}
	return itoa(restarts)
}

// printPods writes kubectl's pod table.
func printPods(out io.Writer, items []corev1.Pod, opts tableOptions) error {
	w := newTabWriter(out)
	head := []string{"NAME", "READY", "STATUS", "RESTARTS", "AGE"}
	if opts.wide {
		head = append(head, "IP", "NODE", "NOMINATED NODE", "READINESS GATES")
	}
	writeRow(w, opts, "NAMESPACE", head...)
	for i := range items {
		p := &items[i]
		ready := 0
		for _, c := range p.Status.ContainerStatuses {
			if c.Ready {
				ready++
			}
		}
		row := []string{p.Name, fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers)), podStatus(p), podRestarts(p, opts.now), age(p.CreationTimestamp, opts.now)}
		if opts.wide {
			row = append(row, orNone(p.Status.PodIP), orNone(p.Spec.NodeName), orNone(p.Status.NominatedNodeName), readinessGates(p))
		}
		writeRow(w, opts, p.Namespace, row...)
	}
	return w.Flush()
}

// readinessGates is kubectl's READINESS GATES column: "met/total".
func readinessGates(pod *corev1.Pod) string {
	if len(pod.Spec.ReadinessGates) == 0 {
		return "<none>"
	}
	met := 0
	for _, g := range pod.Spec.ReadinessGates {
		for _, c := range pod.Status.Conditions {
			if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
				met++
			}
		}
	}
	return fmt.Sprintf("%d/%d", met, len(pod.Spec.ReadinessGates))
}

// withKind returns a JSON encoding of obj with its kind and apiVersion set,
// which the typed client's objects may lack.
func withKind(obj runtime.Object, gvk schema.GroupVersionKind) (json.RawMessage, error) {
	obj = obj.DeepCopyObject()
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	return json.Marshal(obj)
}

// printObjects writes objs as -o json, yaml or name asks: a single object
// as itself when single, otherwise a v1 List, as kubectl does.
func printObjects(out io.Writer, format string, kind kindInfo, objs []runtime.Object, single bool) error {
	if format == "name" {
		for _, o := range objs {
			m, err := metaOf(o)
			if err != nil {
				return err
			}
			fmt.Fprintln(out, kind.qualifiedName(m.GetName(), false))
		}
		return nil
	}
	list := &metav1.List{TypeMeta: metav1.TypeMeta{Kind: "List", APIVersion: "v1"}, Items: []runtime.RawExtension{}}
	for _, o := range objs {
		raw, err := withKind(o, kind.gvk)
		if err != nil {
			return err
		}
		list.Items = append(list.Items, runtime.RawExtension{Raw: raw})
	}
	raw, err := json.Marshal(list)
	if single && len(list.Items) == 1 {
		raw = list.Items[0].Raw
	}
	if err != nil {
		return err
	}
	// kubectl prints what it decoded as unstructured: keys sorted, indented
	// by four spaces; UseNumber keeps integers exact.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return err
	}
	if m, ok := doc.(map[string]any); ok && m["kind"] == "List" {
		// kubectl's lists carry an empty resourceVersion, which ListMeta
		// omits.
		m["metadata"] = map[string]any{"resourceVersion": ""}
	}
	data, err := json.MarshalIndent(doc, "", "    ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		if data, err = yaml.JSONToYAML(data); err != nil {
			return err
		}
		_, err = out.Write(data)
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", data)
	return err
}

// metaOf is the object metadata of o.
func metaOf(o runtime.Object) (metav1.Object, error) {
	m, ok := o.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata: %w", o, errdefs.ErrInvalidArgument)
	}
	return m, nil
}
