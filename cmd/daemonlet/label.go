package main

import (
	"context"
	"fmt"
	"maps"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/daemonlet/daemonlet/api/client"
)

// newLabelCommand is kubectl label for nodes.
func newLabelCommand() *cobra.Command {
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "label node NAME KEY=VALUE... KEY-...",
		Short: "Set or remove labels of a node",
		Args:  cobra.MinimumNArgs(3),
	}
	flags := addClientFlags(cmd)
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "allow changing the value of an existing label")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if kind, err := lookupKind(args[0]); err != nil {
			return err
		} else if kind != kindNode {
			return fmt.Errorf("daemonlet labels only nodes, not %s: %w", kind.resource, errdefs.ErrInvalidArgument)
		}
		set, remove, err := parseLabelArgs(args[2:])
		if err != nil {
			return err
		}
		c, err := flags.client(cmd)
		if err != nil {
			return err
		}
		var msg string
		err = updateNode(cmd.Context(), c, args[1], func(node *corev1.Node) error {
			var next map[string]string
			next, msg, err = editLabels(node.Labels, set, remove, overwrite, cmd)
			node.Labels = next
			return err
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", kindNode.qualifiedName(args[1], false), msg)
		return nil
	}
	return cmd
}

// parseLabelArgs splits kubectl's KEY=VALUE and KEY- arguments, checking
// keys and values as the API server would.
func parseLabelArgs(args []string) (map[string]string, []string, error) {
	set := map[string]string{}
	var remove []string
	for _, a := range args {
		if key, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
			if errs := validation.IsQualifiedName(key); len(errs) > 0 {
				return nil, nil, fmt.Errorf("invalid label key %q: %s: %w", key, strings.Join(errs, "; "), errdefs.ErrInvalidArgument)
			}
			remove = append(remove, key)
			continue
		}
		key, value, ok := strings.Cut(a, "=")
		if !ok {
			return nil, nil, fmt.Errorf("invalid label spec: %s, should be KEY=VALUE or KEY-: %w", a, errdefs.ErrInvalidArgument)
		}
		errs := validation.IsQualifiedName(key)
		errs = append(errs, validation.IsValidLabelValue(value)...)
		if len(errs) > 0 {
			return nil, nil, fmt.Errorf("invalid label spec: %s: %s: %w", a, strings.Join(errs, "; "), errdefs.ErrInvalidArgument)
		}
		set[key] = value
	}
	for _, key := range remove {
		if _, ok := set[key]; ok {
			return nil, nil, fmt.Errorf("can not both modify and remove the label %q in the same command: %w", key, errdefs.ErrInvalidArgument)
		}
	}
	return set, remove, nil
}

// editLabels applies set and remove to a copy of cur and says what kubectl
// would: "labeled", "unlabeled" (only removals) or "not labeled". Changing
// an existing value needs overwrite.
func editLabels(cur, set map[string]string, remove []string, overwrite bool, cmd *cobra.Command) (map[string]string, string, error) {
	next := maps.Clone(cur)
	if next == nil {
		next = map[string]string{}
	}
	for k, v := range set {
		if old, ok := next[k]; ok && old != v && !overwrite {
			return nil, "", fmt.Errorf("'%s' already has a value (%s), and --overwrite is false: %w", k, old, errdefs.ErrFailedPrecondition)
		}
		next[k] = v
	}
	for _, k := range remove {
		if _, ok := next[k]; !ok {
			fmt.Fprintf(cmd.ErrOrStderr(), "label %q not found.\n", k)
		}
		delete(next, k)
	}
	switch {
	case maps.Equal(cur, next):
		return next, "not labeled", nil
	case len(set) == 0 && !overwrite:
		return next, "unlabeled", nil
	}
	return next, "labeled", nil
}

// updateNode reads node name, lets edit change it, and writes it back
// conditionally, rereading on conflict.
func updateNode(ctx context.Context, c *client.Client, name string, edit func(*corev1.Node) error) error {
	return updateObject(ctx, c.Nodes(), name, func(n *corev1.Node) (bool, error) { return true, edit(n) })
}
