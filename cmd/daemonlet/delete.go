package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/api"
)

// target is one object to delete.
type target struct {
	kind            kindInfo
	namespace, name string
}

// newDeleteCommand is kubectl delete for DaemonSets, pods and nodes, by name
// or by manifest.
func newDeleteCommand() *cobra.Command {
	var files []string
	var cascade string
	var ignoreNotFound bool
	cmd := &cobra.Command{
		Use:   "delete ((ds|pod|node|cm|secret) NAME... | -f FILE)",
		Short: "Delete DaemonSets, pods, nodes, ConfigMaps or Secrets by name or by manifest",
	}
	flags := addClientFlags(cmd)
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "manifest file, directory or - whose objects to delete")
	cmd.Flags().StringVar(&cascade, "cascade", "background", `"background", "foreground" or "orphan" (keep the DaemonSet's pods running)`)
	cmd.Flags().Lookup("cascade").NoOptDefVal = "background"
	cmd.Flags().BoolVar(&ignoreNotFound, "ignore-not-found", false, "treat a missing object as deleted")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		policy, err := propagationPolicy(cascade)
		if err != nil {
			return err
		}
		targets, err := deleteTargets(args, files, flags.namespace, cmd)
		if err != nil {
			return err
		}
		c, err := flags.client(cmd)
		if err != nil {
			return err
		}
		var errs []error
		for _, t := range targets {
			opts := metav1.DeleteOptions{PropagationPolicy: &policy}
			switch t.kind {
			case kindDaemonSet:
				err = c.DaemonSets(t.namespace).Delete(cmd.Context(), t.name, opts)
			case kindPod:
				err = c.Pods(t.namespace).Delete(cmd.Context(), t.name, opts)
			case kindConfigMap:
				err = c.ConfigMaps(t.namespace).Delete(cmd.Context(), t.name, opts)
			case kindSecret:
				err = c.Secrets(t.namespace).Delete(cmd.Context(), t.name, opts)
			default:
				err = c.Nodes().Delete(cmd.Context(), t.name, opts)
			}
			switch {
			case apierrors.IsNotFound(err) && ignoreNotFound:
			case err != nil:
				errs = append(errs, err)
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "%s deleted\n", t.kind.qualifiedName(t.name, true))
			}
		}
		return errors.Join(errs...)
	}
	return cmd
}

// propagationPolicy maps --cascade to DeleteOptions.propagationPolicy.
func propagationPolicy(cascade string) (metav1.DeletionPropagation, error) {
	switch cascade {
	case "background", "true":
		return metav1.DeletePropagationBackground, nil
	case "foreground":
		return metav1.DeletePropagationForeground, nil
	case "orphan", "false":
		return metav1.DeletePropagationOrphan, nil
	}
	return "", fmt.Errorf(`invalid cascade value (%s). Must be "background", "foreground", or "orphan": %w`, cascade, errdefs.ErrInvalidArgument)
}

// deleteTargets is what to delete: TYPE NAME... or the objects of -f.
func deleteTargets(args, files []string, namespace string, cmd *cobra.Command) ([]target, error) {
	if len(files) > 0 {
		if len(args) > 0 {
			return nil, fmt.Errorf("when -f is given, no TYPE NAME arguments: %w", errdefs.ErrInvalidArgument)
		}
		return manifestTargets(files, namespace, cmd)
	}
	if len(args) < 2 {
		return nil, fmt.Errorf("you must specify the type and name of what to delete, or -f FILE: %w", errdefs.ErrInvalidArgument)
	}
	kind, err := lookupKind(args[0])
	if err != nil {
		return nil, err
	}
	var targets []target
	for _, name := range args[1:] {
		targets = append(targets, target{kind: kind, namespace: namespace, name: name})
	}
	return targets, nil
}

// manifestTargets names the objects of the manifests, without validating
// them: deleting needs only kind, namespace and name.
func manifestTargets(files []string, namespace string, cmd *cobra.Command) ([]target, error) {
	var targets []target
	for _, f := range files {
		sources, err := expandFile(f)
		if err != nil {
			return nil, err
		}
		for _, src := range sources {
			var data []byte
			if src == "-" {
				data, err = io.ReadAll(cmd.InOrStdin())
			} else {
				data, err = os.ReadFile(src)
			}
			if err != nil {
				return nil, err
			}
			objs, err := api.Decode(src, data)
			if err != nil {
				return nil, err
			}
			for _, o := range objs {
				t := target{kind: kindDaemonSet, namespace: namespace}
				m := metav1.Object(o.DaemonSet)
				switch {
				case o.Pod != nil:
					t.kind, m = kindPod, o.Pod
				case o.ConfigMap != nil:
					t.kind, m = kindConfigMap, o.ConfigMap
				case o.Secret != nil:
					t.kind, m = kindSecret, o.Secret
				}
				t.name = m.GetName()
				if m.GetNamespace() != "" {
					t.namespace = m.GetNamespace()
				}
				targets = append(targets, t)
			}
		}
	}
	return targets, nil
}
