package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// newTaintCommand is kubectl taint for nodes.
func newTaintCommand() *cobra.Command {
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "taint node NAME KEY[=VALUE]:EFFECT... KEY[:EFFECT]-...",
		Short: "Add or remove taints of a node",
		Args:  cobra.MinimumNArgs(3),
	}
	flags := addClientFlags(cmd)
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "allow replacing a taint with the same key and effect")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if kind, err := lookupKind(args[0]); err != nil {
			return err
		} else if kind != kindNode {
			return fmt.Errorf("daemonlet taints only nodes, not %s: %w", kind.resource, errdefs.ErrInvalidArgument)
		}
		add, remove, err := parseTaintArgs(args[2:])
		if err != nil {
			return err
		}
		c, err := flags.client(cmd)
		if err != nil {
			return err
		}
		err = updateNode(cmd.Context(), c, args[1], func(node *corev1.Node) error {
			var err error
			node.Spec.Taints, err = editTaints(node.Name, node.Spec.Taints, add, remove, overwrite)
			return err
		})
		if err != nil {
			return err
		}
		msg := "tainted"
		if len(add) == 0 {
			msg = "untainted"
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", kindNode.qualifiedName(args[1], false), msg)
		return nil
	}
	return cmd
}

// parseTaintArgs parses kubectl's taint specs: KEY[=VALUE]:EFFECT adds,
// KEY[:EFFECT]- removes (every effect when none is named).
func parseTaintArgs(args []string) (add, remove []corev1.Taint, err error) {
	for _, a := range args {
		spec, removal := strings.CutSuffix(a, "-")
		keyValue, effect, hasEffect := strings.Cut(spec, ":")
		key, value, _ := strings.Cut(keyValue, "=")
		if errs := validation.IsQualifiedName(key); len(errs) > 0 {
			return nil, nil, fmt.Errorf("invalid taint spec: %s, %s: %w", a, strings.Join(errs, "; "), errdefs.ErrInvalidArgument)
		}
		if errs := validation.IsValidLabelValue(value); len(errs) > 0 {
			return nil, nil, fmt.Errorf("invalid taint spec: %s, %s: %w", a, strings.Join(errs, "; "), errdefs.ErrInvalidArgument)
		}
		t := corev1.Taint{Key: key, Value: value, Effect: corev1.TaintEffect(effect)}
		switch t.Effect {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		case "":
			if !removal || hasEffect {
				return nil, nil, fmt.Errorf("invalid taint spec: %s, an effect (NoSchedule, PreferNoSchedule or NoExecute) is required: %w", a, errdefs.ErrInvalidArgument)
			}
		default:
			return nil, nil, fmt.Errorf("invalid taint effect: %s, unsupported taint effect: %w", effect, errdefs.ErrInvalidArgument)
		}
		if removal {
			remove = append(remove, t)
		} else {
			add = append(add, t)
		}
	}
	return add, remove, nil
}

// editTaints returns cur with remove taken out and add put in: a removal
// without an effect takes every taint with its key, a missing one is an
// error, and replacing a taint of the same key and effect needs overwrite.
func editTaints(node string, cur, add, remove []corev1.Taint, overwrite bool) ([]corev1.Taint, error) {
	next := slices.Clone(cur)
	for _, r := range remove {
		before := len(next)
		next = slices.DeleteFunc(next, func(t corev1.Taint) bool {
			return t.Key == r.Key && (r.Effect == "" || t.Effect == r.Effect)
		})
		if len(next) == before {
			return nil, fmt.Errorf("taint %q not found: %w", r.ToString(), errdefs.ErrNotFound)
		}
	}
	for _, a := range add {
		i := slices.IndexFunc(next, func(t corev1.Taint) bool { return t.MatchTaint(&a) })
		if i < 0 {
			next = append(next, a)
			continue
		}
		if !overwrite {
			return nil, fmt.Errorf("node %s already has %s taint(s) with same effect(s) and --overwrite is false: %w", node, a.Key, errdefs.ErrFailedPrecondition)
		}
		next[i] = a
	}
	return next, nil
}
