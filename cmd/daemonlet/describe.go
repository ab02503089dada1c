package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/daemonlet/daemonlet/api/client"
)

// newDescribeCommand is kubectl describe for a DaemonSet, node or pod.
func newDescribeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe (ds|node|pod|cm|secret) NAME",
		Short: "Show the details of a DaemonSet, node, pod, ConfigMap or Secret (without its values)",
		Args:  cobra.ExactArgs(2),
	}
	flags := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		kind, err := lookupKind(args[0])
		if err != nil {
			return err
		}
		c, err := flags.client(cmd)
		if err != nil {
			return err
		}
		ctx, name, now := cmd.Context(), args[1], time.Now()
		out := cmd.OutOrStdout()
		switch kind {
		case kindDaemonSet:
			ds, err := c.DaemonSets(flags.namespace).Get(ctx, name)
			if err != nil {
				return err
			}
			pods, err := ownedPods(ctx, c, ds)
			if err != nil {
				return err
			}
			if err := describeDaemonSet(out, ds, pods); err != nil {
				return err
			}
			return describeObjectEvents(ctx, out, c, "DaemonSet", ds, now)
		case kindNode:
			node, err := c.Nodes().Get(ctx, name)
			if err != nil {
				return err
			}
			pods, err := c.Pods("").List(ctx, client.ListOptions{FieldSelector: "spec.nodeName=" + name})
			if err != nil {
				return err
			}
			if err := describeNode(out, node, pods.Items, now); err != nil {
				return err
			}
			return describeObjectEvents(ctx, out, c, "Node", node, now)
		case kindConfigMap:
			cm, err := c.ConfigMaps(flags.namespace).Get(ctx, name)
			if err != nil {
				return err
			}
			return describeConfigMap(out, cm)
		case kindSecret:
			secret, err := c.Secrets(flags.namespace).Get(ctx, name)
			if err != nil {
				return err
			}
			return describeSecret(out, secret)
		default:
			pod, err := c.Pods(flags.namespace).Get(ctx, name)
			if err != nil {
				return err
			}
			if err := describePod(out, pod); err != nil {
				return err
			}
			return describeObjectEvents(ctx, out, c, "Pod", pod, now)
		}
	}
	return cmd
}

// ownedPods lists the pods the DaemonSet controls.
func ownedPods(ctx context.Context, c *client.Client, ds *appsv1.DaemonSet) ([]corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("daemonset %s: selector: %w: %w", ds.Name, errdefs.ErrInvalidArgument, err)
	}
	l, err := c.Pods(ds.Namespace).List(ctx, client.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	var owned []corev1.Pod
	for _, p := range l.Items {
		if ref := metav1.GetControllerOf(&p); ref != nil && ref.UID == ds.UID {
			owned = append(owned, p)
		}
	}
	return owned, nil
}

// describer writes kubectl describe's "Key:\tvalue" lines at indentation
// levels of two spaces, aligned per block by a tab writer.
type describer struct {
	w *tabwriter.Writer
}

// newDescriber starts a description on out.
func newDescriber(out io.Writer) *describer {
	return &describer{w: tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)}
}

// line writes one line at level.
func (d *describer) line(level int, format string, args ...any) {
	fmt.Fprintf(d.w, strings.Repeat("  ", level)+format+"\n", args...)
}

// mapLines writes a map as kubectl does: the first entry after the title,
// the others below it, sorted; "<none>" when empty.
func (d *describer) mapLines(level int, title string, m map[string]string, sep string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		d.line(level, "%s:\t<none>", title)
		return
	}
	for i, k := range keys {
		if i == 0 {
			d.line(level, "%s:\t%s%s%s", title, k, sep, m[k])
		} else {
			d.line(level, "\t%s%s%s", k, sep, m[k])
		}
	}
}

// list writes values as mapLines does.
func (d *describer) list(level int, title string, values []string) {
	if len(values) == 0 {
		d.line(level, "%s:\t<none>", title)
		return
	}
	for i, v := range values {
		if i == 0 {
			d.line(level, "%s:\t%s", title, v)
		} else {
			d.line(level, "\t%s", v)
		}
	}
}

// timestamp is describe's time format.
func timestamp(t metav1.Time) string {
	if t.IsZero() {
		return "<unset>"
	}
	return t.Format(time.RFC1123Z)
}

// describeDaemonSet writes kubectl's description of a DaemonSet.
func describeDaemonSet(out io.Writer, ds *appsv1.DaemonSet, pods []corev1.Pod) error {
	d := newDescriber(out)
	d.line(0, "Name:\t%s", ds.Name)
	d.line(0, "Namespace:\t%s", ds.Namespace)
	d.line(0, "Selector:\t%s", orNone(metav1.FormatLabelSelector(ds.Spec.Selector)))
	d.line(0, "Node-Selector:\t%s", labels.FormatLabels(ds.Spec.Template.Spec.NodeSelector))
	d.mapLines(0, "Labels", ds.Labels, "=")
	d.mapLines(0, "Annotations", ds.Annotations, ": ")
	st := ds.Status
	d.line(0, "Desired Number of Nodes Scheduled:\t%d", st.DesiredNumberScheduled)
	d.line(0, "Current Number of Nodes Scheduled:\t%d", st.CurrentNumberScheduled)
	d.line(0, "Number of Nodes Scheduled with Up-to-date Pods:\t%d", st.UpdatedNumberScheduled)
	d.line(0, "Number of Nodes Scheduled with Available Pods:\t%d", st.NumberAvailable)
	d.line(0, "Number of Nodes Misscheduled:\t%d", st.NumberMisscheduled)
	phases := map[corev1.PodPhase]int{}
	for _, p := range pods {
		phases[p.Status.Phase]++
	}
	d.line(0, "Pods Status:\t%d Running / %d Waiting / %d Succeeded / %d Failed",
		phases[corev1.PodRunning], phases[corev1.PodPending], phases[corev1.PodSucceeded], phases[corev1.PodFailed])
	describePodTemplate(d, &ds.Spec.Template)
	return d.w.Flush()
}

// describePodTemplate writes a DaemonSet's pod template as kubectl does,
// under "Pod Template:".
func describePodTemplate(d *describer, tmpl *corev1.PodTemplateSpec) {
	d.line(0, "Pod Template:")
	d.mapLines(1, "Labels", tmpl.Labels, "=")
	if len(tmpl.Annotations) > 0 {
		d.mapLines(1, "Annotations", tmpl.Annotations, ": ")
	}
	describePodSpec(d, 1, &tmpl.Spec, nil)
}

// describePodSpec writes the containers and volumes of a pod or template
// at level, with the containers' statuses when given.
func describePodSpec(d *describer, level int, spec *corev1.PodSpec, statuses []corev1.ContainerStatus) {
	if len(spec.InitContainers) > 0 {
		d.line(level, "Init Containers:")
		for i := range spec.InitContainers {
			describeContainer(d, level, &spec.InitContainers[i], nil)
		}
	}
	d.line(level, "Containers:")
	for i := range spec.Containers {
		c := &spec.Containers[i]
		var st *corev1.ContainerStatus
		for j := range statuses {
			if statuses[j].Name == c.Name {
				st = &statuses[j]
			}
		}
		describeContainer(d, level, c, st)
	}
	if len(spec.Volumes) == 0 {
		d.line(level, "Volumes:\t<none>")
		return
	}
	d.line(level, "Volumes:")
	for _, v := range spec.Volumes {
		d.line(level+1, "%s:", v.Name)
		switch {
		case v.HostPath != nil:
			typ := ""
			if v.HostPath.Type != nil {
				typ = string(*v.HostPath.Type)
			}
			d.line(level+2, "Type:\tHostPath (bare host directory volume)")
			d.line(level+2, "Path:\t%s", v.HostPath.Path)
			d.line(level+2, "HostPathType:\t%s", typ)
		case v.EmptyDir != nil:
			d.line(level+2, "Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)")
			d.line(level+2, "Medium:\t%s", v.EmptyDir.Medium)
		case v.ConfigMap != nil:
			d.line(level+2, "Type:\tConfigMap (a volume populated by a ConfigMap)")
			d.line(level+2, "Name:\t%s", v.ConfigMap.Name)
		case v.Secret != nil:
			d.line(level+2, "Type:\tSecret (a volume populated by a Secret)")
			d.line(level+2, "SecretName:\t%s", v.Secret.SecretName)
		default:
			d.line(level+2, "Type:\t<unknown>")
		}
	}
}

// describeContainer writes one container of a pod spec described at level
// (with its status when known).
func describeContainer(d *describer, level int, c *corev1.Container, st *corev1.ContainerStatus) {
	d.line(level+1, "%s:", c.Name)
	if st != nil {
		d.line(level+2, "Container ID:\t%s", st.ContainerID)
	}
	d.line(level+2, "Image:\t%s", c.Image)
	var ports, hostPorts []string
	for _, p := range c.Ports {
		ports = append(ports, fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol))
		hostPorts = append(hostPorts, fmt.Sprintf("%d/%s", p.HostPort, p.Protocol))
	}
	d.line(level+2, "Port:\t%s", orNone(strings.Join(ports, ", ")))
	d.line(level+2, "Host Port:\t%s", orNone(strings.Join(hostPorts, ", ")))
	if len(c.Command) > 0 {
		d.list(level+2, "Command", c.Command)
	}
	if len(c.Args) > 0 {
		d.list(level+2, "Args", c.Args)
	}
	if st != nil {
		d.line(level+2, "State:\t%s", containerState(st.State))
		if st.LastTerminationState.Terminated != nil {
			d.line(level+2, "Last State:\t%s", containerState(st.LastTerminationState))
		}
		d.line(level+2, "Ready:\t%t", st.Ready)
		d.line(level+2, "Restart Count:\t%d", st.RestartCount)
	}
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			env = append(env, fmt.Sprintf("%s:\t (%s:%s)", e.Name, e.ValueFrom.FieldRef.APIVersion, e.ValueFrom.FieldRef.FieldPath))
		case e.ValueFrom != nil:
			env = append(env, e.Name+":\t<set from a reference>")
		default:
			env = append(env, fmt.Sprintf("%s:\t%s", e.Name, e.Value))
		}
	}
	if len(env) == 0 {
		d.line(level+2, "Environment:\t<none>")
	} else {
		d.line(level+2, "Environment:")
		for _, e := range env {
			d.line(level+3, "%s", e)
		}
	}
	var mounts []string
	for _, m := range c.VolumeMounts {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		mounts = append(mounts, fmt.Sprintf("%s from %s (%s)", m.MountPath, m.Name, mode))
	}
	d.list(level+2, "Mounts", mounts)
}

// containerState renders a container state on one line.
func containerState(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "Running (started " + timestamp(s.Running.StartedAt) + ")"
	case s.Waiting != nil:
		return strings.TrimSpace("Waiting " + s.Waiting.Reason)
	case s.Terminated != nil:
		return fmt.Sprintf("Terminated (reason %s, exit code %d)", orNone(s.Terminated.Reason), s.Terminated.ExitCode)
	}
	return "Waiting"
}

// describeNode writes kubectl's description of a node and the
// non-terminated pods on it.
func describeNode(out io.Writer, node *corev1.Node, pods []corev1.Pod, now time.Time) error {
	d := newDescriber(out)
	d.line(0, "Name:\t%s", node.Name)
	d.line(0, "Roles:\t%s", nodeRoles(node))
	d.mapLines(0, "Labels", node.Labels, "=")
	d.mapLines(0, "Annotations", node.Annotations, ": ")
	d.line(0, "CreationTimestamp:\t%s", timestamp(node.CreationTimestamp))
	var taints []string
	for _, t := range node.Spec.Taints {
		taints = append(taints, t.ToString())
	}
	d.list(0, "Taints", taints)
	d.line(0, "Unschedulable:\t%t", node.Spec.Unschedulable)
	d.line(0, "Conditions:")
	d.line(1, "Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage")
	d.line(1, "----\t------\t-----------------\t------------------\t------\t-------")
	for _, c := range node.Status.Conditions {
		d.line(1, "%s\t%s\t%s\t%s\t%s\t%s", c.Type, c.Status, timestamp(c.LastHeartbeatTime), timestamp(c.LastTransitionTime), c.Reason, c.Message)
	}
	d.line(0, "Addresses:")
	for _, a := range node.Status.Addresses {
		d.line(1, "%s:\t%s", a.Type, a.Address)
	}
	for _, rl := range []struct {
		title string
		list  corev1.ResourceList
	}{{"Capacity", node.Status.Capacity}, {"Allocatable", node.Status.Allocatable}} {
		d.line(0, "%s:", rl.title)
		names := make([]string, 0, len(rl.list))
		for n := range rl.list {
			names = append(names, string(n))
		}
		sort.Strings(names)
		for _, n := range names {
			q := rl.list[corev1.ResourceName(n)]
			d.line(1, "%s:\t%s", n, q.String())
		}
	}
	info := node.Status.NodeInfo
	d.line(0, "System Info:")
	d.line(1, "Machine ID:\t%s", info.MachineID)
	d.line(1, "Boot ID:\t%s", info.BootID)
	d.line(1, "Kernel Version:\t%s", info.KernelVersion)
	d.line(1, "OS Image:\t%s", info.OSImage)
	d.line(1, "Operating System:\t%s", info.OperatingSystem)
	d.line(1, "Architecture:\t%s", info.Architecture)
	d.line(1, "Container Runtime Version:\t%s", info.ContainerRuntimeVersion)
	d.line(1, "Kubelet Version:\t%s", info.KubeletVersion)
	var running []corev1.Pod
	for _, p := range pods {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			running = append(running, p)
		}
	}
	d.line(0, "Non-terminated Pods:\t(%d in total)", len(running))
	if len(running) > 0 {
		d.line(1, "Namespace\tName\tAge")
		d.line(1, "---------\t----\t---")
		for _, p := range running {
			d.line(1, "%s\t%s\t%s", p.Namespace, p.Name, age(p.CreationTimestamp, now))
		}
	}
	return d.w.Flush()
}

// describePod writes kubectl's description of a pod.
func describePod(out io.Writer, pod *corev1.Pod) error {
	d := newDescriber(out)
	d.line(0, "Name:\t%s", pod.Name)
	d.line(0, "Namespace:\t%s", pod.Namespace)
	node := pod.Spec.NodeName
	if node != "" && pod.Status.HostIP != "" {
		node += "/" + pod.Status.HostIP
	}
	d.line(0, "Node:\t%s", orNone(node))
	if pod.Status.StartTime != nil {
		d.line(0, "Start Time:\t%s", timestamp(*pod.Status.StartTime))
	}
	d.mapLines(0, "Labels", pod.Labels, "=")
	d.mapLines(0, "Annotations", pod.Annotations, ": ")
	d.line(0, "Status:\t%s", podStatus(pod))
	d.line(0, "IP:\t%s", pod.Status.PodIP)
	if ref := metav1.GetControllerOf(pod); ref != nil {
		d.line(0, "Controlled By:\t%s/%s", ref.Kind, ref.Name)
	}
	describePodSpec(d, 0, &pod.Spec, pod.Status.ContainerStatuses)
	if len(pod.Status.Conditions) > 0 {
		d.line(0, "Conditions:")
		d.line(1, "Type\tStatus")
		for _, c := range pod.Status.Conditions {
			d.line(1, "%s\t%s", c.Type, c.Status)
		}
	}
	return d.w.Flush()
}
