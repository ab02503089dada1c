package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
)

// conflictRetries bounds read-modify-write retries on 409 Conflict, as
// client-go's retry.DefaultRetry does (five steps).
const conflictRetries = 5

// Values of --dry-run.
const (
	dryRunNone   = "none"
	dryRunClient = "client"
	dryRunServer = "server"
)

// newApplyCommand is kubectl apply for manifests of DaemonSets, ConfigMaps
// and Secrets.
func newApplyCommand() *cobra.Command {
	var files []string
	var dryRun string
	cmd := &cobra.Command{
		Use:   "apply -f (FILE|DIR|-)",
		Short: "Create or update DaemonSets, ConfigMaps and Secrets from manifests",
		Args:  cobra.NoArgs,
	}
	flags := addClientFlags(cmd)
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "manifest file, directory of .yaml/.yml/.json files, or - for stdin")
	cmd.Flags().StringVar(&dryRun, "dry-run", dryRunNone, `"none", "client" (validate only, no server) or "server" (the server validates, stores nothing)`)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if len(files) == 0 {
			return fmt.Errorf("must specify -f: %w", errdefs.ErrInvalidArgument)
		}
		if dryRun != dryRunNone && dryRun != dryRunClient && dryRun != dryRunServer {
			return fmt.Errorf(`invalid dry-run value (%s). Must be "none", "server", or "client": %w`, dryRun, errdefs.ErrInvalidArgument)
		}
		sets, data, decodeErr := readDaemonSets(files, cmd.InOrStdin())
		all := make([]metav1.Object, 0, len(data)+len(sets))
		for _, o := range data {
			all = append(all, o.meta())
		}
		for _, ds := range sets {
			all = append(all, ds)
		}
		if err := placeInNamespace(all, flags.namespace, cmd.Flags().Changed("namespace")); err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if dryRun == dryRunClient {
			for _, o := range data {
				fmt.Fprintf(out, "%s created (dry run)\n", o.kind().qualifiedName(o.meta().GetName(), false))
			}
			for _, ds := range sets {
				fmt.Fprintf(out, "%s created (dry run)\n", kindDaemonSet.qualifiedName(ds.Name, false))
			}
			return decodeErr
		}
		if len(all) == 0 {
			return decodeErr
		}
		c, err := flags.client(cmd)
		if err != nil {
			return err
		}
		suffix := ""
		if dryRun == dryRunServer {
			suffix = " (server dry run)"
		}
		errs := []error{decodeErr}
		// ConfigMaps and Secrets go first, so that the pods of the
		// DaemonSets find what they reference.
		for _, o := range data {
			result, err := o.apply(cmd.Context(), c, client.WriteOptions{DryRun: dryRun == dryRunServer})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Fprintf(out, "%s %s%s\n", o.kind().qualifiedName(o.meta().GetName(), false), result, suffix)
		}
		for _, ds := range sets {
			result, err := applyDaemonSet(cmd.Context(), c, ds, client.WriteOptions{DryRun: dryRun == dryRunServer})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Fprintf(out, "%s %s%s\n", kindDaemonSet.qualifiedName(ds.Name, false), result, suffix)
		}
		return errors.Join(errs...)
	}
	return cmd
}

// readDaemonSets decodes, defaults and validates every manifest into its
// DaemonSets and its ConfigMaps and Secrets; the error lists the bad
// documents, whose objects are left out, and the v1 Pods, which daemonlet's
// server does not take.
func readDaemonSets(files []string, stdin io.Reader) ([]*appsv1.DaemonSet, []dataObject, error) {
	var sets []*appsv1.DaemonSet
	var objects []dataObject
	var errs []error
	for _, f := range files {
		sources, err := expandFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, src := range sources {
			var data []byte
			if src == "-" {
				data, err = io.ReadAll(stdin)
			} else {
				data, err = os.ReadFile(src)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			objs, err := api.DecodeAndValidate(src, data)
			errs = append(errs, err)
			given := givenNamespaces(src, data)
			for _, o := range objs {
				if o.Pod != nil {
					errs = append(errs, fmt.Errorf("%s: document %d: pod %q: the server takes only apps/v1 DaemonSets, ConfigMaps and Secrets; put static v1 Pods in an agent's --pod-manifest-path: %w",
						src, o.Doc, o.Pod.Name, errdefs.ErrInvalidArgument))
					continue
				}
				// Defaulting filled in "default"; -n decides instead when
				// the manifest named no namespace.
				kind, m := objectMeta(o)
				if ns, ok := given[docName(o.Doc, kind, m.GetName())]; ok && ns == "" {
					m.SetNamespace("")
				}
				if o.DaemonSet != nil {
					sets = append(sets, o.DaemonSet)
				} else {
					objects = append(objects, dataObject{configMap: o.ConfigMap, secret: o.Secret})
				}
			}
		}
	}
	return sets, objects, errors.Join(errs...)
}

// givenNamespaces maps document and name to the namespace the manifest
// itself states (before defaulting), for the objects of a stream that
// decodes without errors.
func givenNamespaces(src string, data []byte) map[string]string {
	objs, err := api.Decode(src, data)
	if err != nil {
		return nil
	}
	given := map[string]string{}
	for _, o := range objs {
		if o.Pod == nil {
			kind, m := objectMeta(o)
			given[docName(o.Doc, kind, m.GetName())] = m.GetNamespace()
		}
	}
	return given
}

// objectMeta is the kind and metadata of a decoded object.
func objectMeta(o api.Object) (string, metav1.Object) {
	switch {
	case o.ConfigMap != nil:
		return "ConfigMap", o.ConfigMap
	case o.Secret != nil:
		return "Secret", o.Secret
	case o.Pod != nil:
		return "Pod", o.Pod
	}
	return "DaemonSet", o.DaemonSet
}

// docName keys an object by its document, kind and name.
func docName(doc int, kind, name string) string { return fmt.Sprintf("%d/%s/%s", doc, kind, name) }

// expandFile turns a -f argument into files: a directory gives its
// .yaml, .yml and .json files in name order, as kubectl without -R does.
func expandFile(path string) ([]string, error) {
	if path == "-" {
		return []string{path}, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("the path %q does not exist: %w", path, errdefs.ErrNotFound)
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("error reading %s: recognized file extensions are [.json .yaml .yml]: %w", path, errdefs.ErrNotFound)
	}
	return files, nil
}

// placeInNamespace puts objects without a namespace into namespace and, as
// kubectl, refuses objects of another namespace when -n was given.
func placeInNamespace(objs []metav1.Object, namespace string, explicit bool) error {
	for _, o := range objs {
		switch ns := o.GetNamespace(); {
		case ns == "":
			o.SetNamespace(namespace)
		case explicit && ns != namespace:
			return fmt.Errorf("the namespace from the provided object %q does not match the namespace %q. You must pass '--namespace=%s' to perform this operation: %w",
				ns, namespace, ns, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// applyDaemonSet creates ds or updates the stored one to it, and says which
// ("created", "configured" or "unchanged"). An update keeps the stored
// object's other metadata and its status, and is retried on conflict.
func applyDaemonSet(ctx context.Context, c *client.Client, ds *appsv1.DaemonSet, opts client.WriteOptions) (string, error) {
	r := c.DaemonSets(ds.Namespace)
	var err error
	for range conflictRetries {
		var cur *appsv1.DaemonSet
		cur, err = r.Get(ctx, ds.Name)
		if apierrors.IsNotFound(err) {
			if _, err = r.Create(ctx, ds, opts); apierrors.IsAlreadyExists(err) {
				continue
			}
			return "created", err
		}
		if err != nil {
			return "", err
		}
		if sameDaemonSet(cur, ds) {
			return "unchanged", nil
		}
		next := cur.DeepCopy()
		next.Labels, next.Annotations, next.Spec = ds.Labels, ds.Annotations, ds.Spec
		if _, err = r.Update(ctx, next, opts); apierrors.IsConflict(err) {
			continue
		}
		return "configured", err
	}
	return "", err
}

// sameDaemonSet says whether applying want to cur would change nothing the
// manifest states: spec, labels and annotations, compared semantically
// (quantities by value, nil and empty alike).
func sameDaemonSet(cur, want *appsv1.DaemonSet) bool {
	eq := apiequality.Semantic.DeepEqual
	return eq(cur.Spec, want.Spec) && eq(cur.Labels, want.Labels) && eq(cur.Annotations, want.Annotations)
}
