package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/api/client"
)

// printConfigMaps writes kubectl's configmap table.
func printConfigMaps(out io.Writer, items []corev1.ConfigMap, opts tableOptions) error {
	w := newTabWriter(out)
	writeRow(w, opts, "NAMESPACE", "NAME", "DATA", "AGE")
	for _, cm := range items {
		writeRow(w, opts, cm.Namespace, cm.Name, strconv.Itoa(len(cm.Data)+len(cm.BinaryData)), age(cm.CreationTimestamp, opts.now))
	}
	return w.Flush()
}

// printSecrets writes kubectl's secret table: the number of keys, never
// their values.
func printSecrets(out io.Writer, items []corev1.Secret, opts tableOptions) error {
	w := newTabWriter(out)
	writeRow(w, opts, "NAMESPACE", "NAME", "TYPE", "DATA", "AGE")
	for _, s := range items {
		writeRow(w, opts, s.Namespace, s.Name, string(s.Type), strconv.Itoa(len(s.Data)), age(s.CreationTimestamp, opts.now))
	}
	return w.Flush()
}

// sortedKeys are the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// describeConfigMap writes kubectl's description of a ConfigMap: its
// values in full, binary ones by size.
func describeConfigMap(out io.Writer, cm *corev1.ConfigMap) error {
	d := newDescriber(out)
	d.line(0, "Name:\t%s", cm.Name)
	d.line(0, "Namespace:\t%s", cm.Namespace)
	d.mapLines(0, "Labels", cm.Labels, "=")
	d.mapLines(0, "Annotations", cm.Annotations, ": ")
	if err := d.w.Flush(); err != nil {
		return err
	}
	// Values may hold tabs and many lines: written as they are, outside the
	// aligned table.
	fmt.Fprint(out, "\nData\n====\n")
	for _, k := range sortedKeys(cm.Data) {
		fmt.Fprintf(out, "%s:\n----\n%s\n\n", k, cm.Data[k])
	}
	fmt.Fprint(out, "\nBinaryData\n====\n")
	for _, k := range sortedKeys(cm.BinaryData) {
		fmt.Fprintf(out, "%s: %d bytes\n", k, len(cm.BinaryData[k]))
	}
	return nil
}

// describeSecret writes kubectl's description of a Secret: the size of each
// value, never the value.
func describeSecret(out io.Writer, s *corev1.Secret) error {
	d := newDescriber(out)
	d.line(0, "Name:\t%s", s.Name)
	d.line(0, "Namespace:\t%s", s.Namespace)
	d.mapLines(0, "Labels", s.Labels, "=")
	d.mapLines(0, "Annotations", s.Annotations, ": ")
	d.line(0, "")
	d.line(0, "Type:\t%s", s.Type)
	d.line(0, "")
	d.line(0, "Data")
	d.line(0, "====")
	for _, k := range sortedKeys(s.Data) {
		d.line(0, "%s:\t%d bytes", k, len(s.Data[k]))
	}
	return d.w.Flush()
}

// dataObject is a ConfigMap or Secret read from a manifest; exactly one of
// the two is set.
type dataObject struct {
	configMap *corev1.ConfigMap
	secret    *corev1.Secret
}

func (o dataObject) meta() metav1.Object {
	if o.configMap != nil {
		return o.configMap
	}
	return o.secret
}

func (o dataObject) kind() kindInfo {
	if o.configMap != nil {
		return kindConfigMap
	}
	return kindSecret
}

// apply creates or updates the object on the server.
func (o dataObject) apply(ctx context.Context, c *client.Client, opts client.WriteOptions) (string, error) {
	if o.configMap != nil {
		return applyConfigMap(ctx, c, o.configMap, opts)
	}
	return applySecret(ctx, c, o.secret, opts)
}

// applyConfigMap creates cm or updates the stored one to it, as
// applyDaemonSet does for DaemonSets.
func applyConfigMap(ctx context.Context, c *client.Client, cm *corev1.ConfigMap, opts client.WriteOptions) (string, error) {
	return applyObject(ctx, c.ConfigMaps(cm.Namespace), cm,
		func(cur *corev1.ConfigMap) bool {
			eq := apiequality.Semantic.DeepEqual
			return eq(cur.Data, cm.Data) && eq(cur.BinaryData, cm.BinaryData) && eq(cur.Immutable, cm.Immutable) &&
				eq(cur.Labels, cm.Labels) && eq(cur.Annotations, cm.Annotations)
		},
		func(cur *corev1.ConfigMap) {
			cur.Labels, cur.Annotations, cur.Data, cur.BinaryData, cur.Immutable = cm.Labels, cm.Annotations, cm.Data, cm.BinaryData, cm.Immutable
		}, opts)
}

// applySecret creates s or updates the stored one to it, as applyDaemonSet
// does for DaemonSets; s is defaulted (stringData merged into data).
func applySecret(ctx context.Context, c *client.Client, s *corev1.Secret, opts client.WriteOptions) (string, error) {
	return applyObject(ctx, c.Secrets(s.Namespace), s,
		func(cur *corev1.Secret) bool {
			eq := apiequality.Semantic.DeepEqual
			return eq(cur.Data, s.Data) && cur.Type == s.Type && eq(cur.Immutable, s.Immutable) &&
				eq(cur.Labels, s.Labels) && eq(cur.Annotations, s.Annotations)
		},
		func(cur *corev1.Secret) {
			cur.Labels, cur.Annotations, cur.Data, cur.Type, cur.Immutable = s.Labels, s.Annotations, s.Data, s.Type, s.Immutable
		}, opts)
}

// applyObject is the create-or-update loop of apply: want is created when
// missing, left alone when same says the stored object already matches, and
// otherwise merged into the stored object and updated, retried on conflict.
func applyObject[T, L any, PT interface {
	*T
	metav1.Object
}](ctx context.Context, r *client.Resource[T, L], want PT, same func(cur PT) bool, merge func(cur PT), opts client.WriteOptions) (string, error) {
	var err error
	for range conflictRetries {
		var cur *T
		cur, err = r.Get(ctx, want.GetName())
		if apierrors.IsNotFound(err) {
			if _, err = r.Create(ctx, (*T)(want), opts); apierrors.IsAlreadyExists(err) {
				continue
			}
			return "created", err
		}
		if err != nil {
			return "", err
		}
		if same(PT(cur)) {
			return "unchanged", nil
		}
		merge(PT(cur))
		if _, err = r.Update(ctx, cur, opts); apierrors.IsConflict(err) {
			continue
		}
		return "configured", err
	}
	return "", err
}
