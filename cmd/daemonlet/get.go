package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/daemonlet/daemonlet/api/client"
)

// newGetCommand is kubectl get for DaemonSets, Nodes, Pods, ConfigMaps,
// Secrets and ControllerRevisions.
func newGetCommand() *cobra.Command {
	var output, selector string
	cmd := &cobra.Command{
		Use:   "get (ds|nodes|pods|cm|secrets|controllerrevisions) [NAME]",
		Short: "Display one or many DaemonSets, nodes, pods, ConfigMaps, Secrets or ControllerRevisions",
		Args:  cobra.RangeArgs(1, 2),
	}
	flags := addClientFlags(cmd)
	flags.addAllNamespacesFlag(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: wide, yaml, json or name")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "label selector to filter on, e.g. app=x,tier!=db")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		kind, err := lookupGetKind(args[0])
		if err != nil {
			return err
		}
		switch output {
		case "", "wide", "yaml", "json", "name":
		default:
			return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: json,name,wide,yaml: %w", output, errdefs.ErrInvalidArgument)
		}
		var name string
		if len(args) == 2 {
			name = args[1]
			if flags.allNamespaces {
				return fmt.Errorf("a resource cannot be retrieved by name across all namespaces: %w", errdefs.ErrInvalidArgument)
			}
		}
		c, err := flags.client(cmd)
		if err != nil {
			return err
		}
		namespace := flags.namespace
		if flags.allNamespaces {
			namespace = ""
		}
		objs, err := fetch(cmd.Context(), c, kind, namespace, name, client.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		return printGet(cmd.OutOrStdout(), cmd.ErrOrStderr(), kind, objs, getView{
			output: output, single: name != "", namespace: namespace,
			table: tableOptions{wide: output == "wide", allNamespaces: flags.allNamespaces && kind.namespaced, now: time.Now()},
		})
	}
	return cmd
}

// fetch gets one object by name, or lists the objects matching opts.
func fetch(ctx context.Context, c *client.Client, kind kindInfo, namespace, name string, opts client.ListOptions) ([]runtime.Object, error) {
	switch kind {
	case kindDaemonSet:
		return fetchTyped(ctx, c.DaemonSets(namespace), name, opts, func(l *appsv1.DaemonSetList) []appsv1.DaemonSet { return l.Items })
	case kindNode:
		return fetchTyped(ctx, c.Nodes(), name, opts, func(l *corev1.NodeList) []corev1.Node { return l.Items })
	case kindConfigMap:
		return fetchTyped(ctx, c.ConfigMaps(namespace), name, opts, func(l *corev1.ConfigMapList) []corev1.ConfigMap { return l.Items })
	case kindSecret:
		return fetchTyped(ctx, c.Secrets(namespace), name, opts, func(l *corev1.SecretList) []corev1.Secret { return l.Items })
	case kindControllerRevision:
		return fetchTyped(ctx, c.ControllerRevisions(namespace), name, opts, func(l *appsv1.ControllerRevisionList) []appsv1.ControllerRevision { return l.Items })
	default:
		return fetchTyped(ctx, c.Pods(namespace), name, opts, func(l *corev1.PodList) []corev1.Pod { return l.Items })
	}
}

// fetchTyped is fetch for one type; PT is *T, a runtime.Object.
func fetchTyped[T, L any, PT interface {
	*T
	runtime.Object
}](ctx context.Context, r *client.Resource[T, L], name string, opts client.ListOptions, items func(*L) []T) ([]runtime.Object, error) {
	if name != "" {
		obj, err := r.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		return []runtime.Object{PT(obj)}, nil
	}
	l, err := r.List(ctx, opts)
	if err != nil {
		return nil, err
	}
	list := items(l)
	out := make([]runtime.Object, len(list))
	for i := range list {
		out[i] = PT(&list[i])
	}
	return out, nil
}

// getView is how get prints what it fetched.
type getView struct {
	output    string
	single    bool
	namespace string // "" = all namespaces
	table     tableOptions
}

// printGet prints objs as a table (or names, yaml, json), and kubectl's "No
// resources found" on errOut for an empty table.
func printGet(out, errOut io.Writer, kind kindInfo, objs []runtime.Object, v getView) error {
	if v.output == "yaml" || v.output == "json" {
		return printObjects(out, v.output, kind, objs, v.single)
	}
	if len(objs) == 0 {
		if kind.namespaced && v.namespace != "" {
			fmt.Fprintf(errOut, "No resources found in %s namespace.\n", v.namespace)
		} else {
			fmt.Fprintln(errOut, "No resources found")
		}
		return nil
	}
	if v.output == "name" {
		return printObjects(out, v.output, kind, objs, v.single)
	}
	switch kind {
	case kindDaemonSet:
		return printDaemonSets(out, typed[appsv1.DaemonSet](objs), v.table)
	case kindNode:
		return printNodes(out, typed[corev1.Node](objs), v.table)
	case kindConfigMap:
		return printConfigMaps(out, typed[corev1.ConfigMap](objs), v.table)
	case kindSecret:
		return printSecrets(out, typed[corev1.Secret](objs), v.table)
	case kindControllerRevision:
		return printControllerRevisions(out, typed[appsv1.ControllerRevision](objs), v.table)
	default:
		return printPods(out, typed[corev1.Pod](objs), v.table)
	}
}

// typed converts objects back to their type.
func typed[T any](objs []runtime.Object) []T {
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := any(o).(*T); ok {
			out = append(out, *t)
		}
	}
	return out
}
