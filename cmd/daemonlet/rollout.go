package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
)

// Annotations kubectl's rollout commands read and write.
const (
	// annotationChangeCause is the change cause rollout history shows; the
	// rollout controller copies it from the DaemonSet into each revision.
	annotationChangeCause = "kubernetes.io/change-cause"
	// annotationRestartedAt, on the pod template, is how rollout restart
	// changes the template without changing what runs.
	annotationRestartedAt = "kubectl.kubernetes.io/restartedAt"
)

// newRolloutCommand is kubectl rollout for DaemonSets: status, history,
// undo and restart; pause and resume refuse, as kubectl's do for
// DaemonSets.
func newRolloutCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout SUBCOMMAND",
		Short: "Manage the rollout of a DaemonSet",
		Long: `Manage the rollout of a DaemonSet: follow it (status), list its revisions
(history), go back to an earlier one (undo) or roll every pod anew (restart).
Name the DaemonSet as ds/NAME, daemonset/NAME or ds NAME.`,
	}
	flags := addClientFlags(cmd)
	cmd.AddCommand(newRolloutStatusCommand(flags), newRolloutHistoryCommand(flags), newRolloutUndoCommand(flags),
		newRolloutRestartCommand(flags), newRolloutUnsupportedCommand(flags, "pause", "pausing"),
		newRolloutUnsupportedCommand(flags, "resume", "resuming"))
	return cmd
}

// rolloutArgs is the usage of every rollout subcommand's arguments.
const rolloutArgs = "(TYPE NAME | TYPE/NAME)"

// rolloutTarget is the DaemonSet name in TYPE/NAME or TYPE NAME.
func rolloutTarget(args []string) (string, error) {
	var typ, name string
	switch {
	case len(args) == 1 && strings.Contains(args[0], "/"):
		typ, name, _ = strings.Cut(args[0], "/")
	case len(args) == 2 && !strings.Contains(args[0], "/"):
		typ, name = args[0], args[1]
	default:
		return "", fmt.Errorf("required resource not specified: give ds/NAME or ds NAME: %w", errdefs.ErrInvalidArgument)
	}
	kind, err := lookupKind(typ)
	if err != nil {
		return "", err
	}
	if kind != kindDaemonSet {
		return "", fmt.Errorf("rollout works on daemonsets only, not %s: %w", kind.resource, errdefs.ErrInvalidArgument)
	}
	if name == "" {
		return "", fmt.Errorf("resource name may not be empty: %w", errdefs.ErrInvalidArgument)
	}
	return name, nil
}

// rolloutRunE is the RunE of a rollout subcommand: run gets the client and
// the DaemonSet's name from the arguments.
func rolloutRunE(flags *clientFlags, run func(cmd *cobra.Command, c *client.Client, name string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		name, err := rolloutTarget(args)
		if err != nil {
			return err
		}
		c, err := flags.client(cmd)
		if err != nil {
			return err
		}
		return run(cmd, c, name)
	}
}

// newRolloutStatusCommand is kubectl rollout status: it follows the
// rollout until done, failed or timed out.
func newRolloutStatusCommand(flags *clientFlags) *cobra.Command {
	var follow bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status " + rolloutArgs,
		Short: "Show the status of the rollout",
		Long: `Show the status of the rollout. By default it watches the DaemonSet until the
rollout is done and exits non-zero if it fails (progress deadline exceeded) or
--timeout passes; with --watch=false it prints the status once and exits.`,
		Example: "  daemonlet rollout status ds/fluentd -n kube-system --timeout 5m",
		Args:    cobra.RangeArgs(1, 2),
	}
	cmd.Flags().BoolVarP(&follow, "watch", "w", true, "Watch the status of the rollout until it's done.")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "The length of time to wait before ending watch, zero means never (e.g. 1s, 2m, 3h).")
	cmd.RunE = rolloutRunE(flags, func(cmd *cobra.Command, c *client.Client, name string) error {
		return rolloutStatus(cmd.Context(), c.DaemonSets(flags.namespace), cmd.OutOrStdout(), name, follow, timeout)
	})
	return cmd
}

// daemonSetRolloutStatus is kubectl's DaemonSetStatusViewer, plus the
// Deployment viewer's failure on an exceeded progress deadline: the message
// to print (with its newline), and whether the rollout is done.
func daemonSetRolloutStatus(ds *appsv1.DaemonSet) (string, bool, error) {
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		return "", false, errdefs.ErrFailedPrecondition.WithMessage(
			"rollout status is only available for " + string(appsv1.RollingUpdateDaemonSetStrategyType) + " strategy type")
	}
	st := &ds.Status
	if ds.Generation > st.ObservedGeneration {
		return "Waiting for daemon set spec update to be observed...\n", false, nil
	}
	for _, c := range st.Conditions {
		if c.Type == api.DaemonSetProgressing && c.Status == corev1.ConditionFalse && c.Reason == api.ReasonProgressDeadlineExceeded {
			return "", false, errdefs.ErrAborted.WithMessage(fmt.Sprintf("daemon set %q exceeded its progress deadline", ds.Name))
		}
	}
	switch {
	case st.UpdatedNumberScheduled < st.DesiredNumberScheduled:
		return fmt.Sprintf("Waiting for daemon set %q rollout to finish: %d out of %d new pods have been updated...\n",
			ds.Name, st.UpdatedNumberScheduled, st.DesiredNumberScheduled), false, nil
	case st.NumberAvailable < st.DesiredNumberScheduled:
		return fmt.Sprintf("Waiting for daemon set %q rollout to finish: %d of %d updated pods are available...\n",
			ds.Name, st.NumberAvailable, st.DesiredNumberScheduled), false, nil
	}
	return fmt.Sprintf("daemon set %q successfully rolled out\n", ds.Name), true, nil
}

// rolloutStatus prints the DaemonSet's rollout status, each distinct
// message once, until it is done (or once, without follow). It watches
// the DaemonSet rather than polling it, and resumes the watch where it
// left off when the server ends or drops it.
func rolloutStatus(ctx context.Context, dss *client.Resource[appsv1.DaemonSet, appsv1.DaemonSetList], out io.Writer, name string, follow bool, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	// timedOut turns the failure that the deadline caused into kubectl's
	// message, with the DaemonSet and the time waited.
	timedOut := func(err error) error {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("timed out waiting for the condition: daemon set %q rollout did not finish within %s: %w", name, timeout, context.DeadlineExceeded)
		}
		return err
	}
	var last string
	report := func(ds *appsv1.DaemonSet) (bool, error) {
		msg, done, err := daemonSetRolloutStatus(ds)
		if err != nil {
			return false, err
		}
		if msg != last {
			fmt.Fprint(out, msg)
			last = msg
		}
		return done, nil
	}
	ds, err := dss.Get(ctx, name)
	if err != nil {
		return timedOut(err)
	}
	if done, err := report(ds); err != nil || done || !follow {
		return err
	}
	rv := ds.ResourceVersion
	for {
		w, err := dss.Watch(ctx, client.ListOptions{FieldSelector: "metadata.name=" + name, ResourceVersion: rv})
		if err != nil {
			return timedOut(err)
		}
		done, err := func() (bool, error) {
			defer w.Stop()
			for ev := range w.Events() {
				rv = ev.Object.ResourceVersion
				switch ev.Type {
				case watch.Bookmark:
					continue
				case watch.Deleted:
					return false, fmt.Errorf("daemon set %q has been deleted: %w", name, errdefs.ErrNotFound)
				}
				if done, err := report(ev.Object); err != nil || done {
					return done, err
				}
			}
			return false, w.Err()
		}()
		switch {
		case done:
			return nil
		case ctx.Err() != nil:
			return timedOut(ctx.Err())
		case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
			// The watch window moved past rv: start again from a fresh read.
			if ds, err = dss.Get(ctx, name); err != nil {
				return timedOut(err)
			}
			if done, err := report(ds); err != nil || done {
				return err
			}
			rv = ds.ResourceVersion
		case err != nil && !errdefs.IsUnavailable(err):
			return err
		}
		// A clean end (the server's watch timeout) or a dropped stream:
		// watch again from rv; a server that is gone fails the next Watch.
	}
}

// newRolloutHistoryCommand is kubectl rollout history: the revisions, or
// one revision's pod template.
func newRolloutHistoryCommand(flags *clientFlags) *cobra.Command {
	var revision int64
	cmd := &cobra.Command{
		Use:   "history " + rolloutArgs,
		Short: "View rollout history",
		Long: `View the revisions of a DaemonSet, with their change causes (the
kubernetes.io/change-cause annotation of the DaemonSet when the revision was
made); --revision shows the pod template of one.`,
		Example: "  daemonlet rollout history ds/fluentd --revision 3",
		Args:    cobra.RangeArgs(1, 2),
	}
	cmd.Flags().Int64Var(&revision, "revision", 0, "See the details, including podTemplate of the revision specified")
	cmd.RunE = rolloutRunE(flags, func(cmd *cobra.Command, c *client.Client, name string) error {
		ds, err := c.DaemonSets(flags.namespace).Get(cmd.Context(), name)
		if err != nil {
			return err
		}
		revs, err := daemonSetRevisions(cmd.Context(), c, ds)
		if err != nil {
			return err
		}
		return printRolloutHistory(cmd.OutOrStdout(), ds.Name, revs, revision)
	})
	return cmd
}

// daemonSetRevisions lists the ControllerRevisions the DaemonSet controls,
// by revision number.
func daemonSetRevisions(ctx context.Context, c *client.Client, ds *appsv1.DaemonSet) ([]appsv1.ControllerRevision, error) {
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("daemonset %s: selector: %w: %w", ds.Name, errdefs.ErrInvalidArgument, err)
	}
	l, err := c.ControllerRevisions(ds.Namespace).List(ctx, client.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	var owned []appsv1.ControllerRevision
	for _, cr := range l.Items {
		if ref := metav1.GetControllerOf(&cr); ref != nil && ref.UID == ds.UID {
			owned = append(owned, cr)
		}
	}
	slices.SortFunc(owned, byRevision)
	return owned, nil
}

// byRevision orders ControllerRevisions by revision number.
func byRevision(a, b appsv1.ControllerRevision) int { return cmp.Compare(a.Revision, b.Revision) }

// findRevision is the revision numbered n, nil when there is none.
func findRevision(revs []appsv1.ControllerRevision, n int64) *appsv1.ControllerRevision {
	for i := range revs {
		if revs[i].Revision == n {
			return &revs[i]
		}
	}
	return nil
}

// printRolloutHistory writes kubectl's rollout history of the DaemonSet
// name: the revision table, or with revision > 0 that revision's template.
func printRolloutHistory(out io.Writer, name string, revs []appsv1.ControllerRevision, revision int64) error {
	qualified := kindDaemonSet.qualifiedName(name, false)
	if revision > 0 {
		cr := findRevision(revs, revision)
		if cr == nil {
			return errdefs.ErrNotFound.WithMessage("unable to find the specified revision")
		}
		tmpl, err := api.RevisionTemplate(cr)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s with revision #%d\n", qualified, revision)
		d := newDescriber(out)
		describePodTemplate(d, tmpl)
		d.line(1, "Node-Selectors:\t%s", orNone(labels.FormatLabels(tmpl.Spec.NodeSelector)))
		var tolerations []string
		for _, t := range tmpl.Spec.Tolerations {
			tolerations = append(tolerations, toleration(t))
		}
		d.list(1, "Tolerations", tolerations)
		if err := d.w.Flush(); err != nil {
			return err
		}
		_, err = fmt.Fprintln(out)
		return err
	}
	if len(revs) == 0 {
		_, err := fmt.Fprintf(out, "%s No rollout history found.\n", qualified)
		return err
	}
	// kubectl prints the name, a space, and the table on the next lines.
	fmt.Fprintf(out, "%s \n", qualified)
	d := newDescriber(out)
	d.line(0, "REVISION\tCHANGE-CAUSE")
	for _, cr := range revs {
		d.line(0, "%d\t%s", cr.Revision, orNone(cr.Annotations[annotationChangeCause]))
	}
	if err := d.w.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(out)
	return err
}

// toleration renders a toleration as kubectl describe does:
// key=value:Effect op=Operator for Ns.
func toleration(t corev1.Toleration) string {
	s := t.Key
	if t.Value != "" {
		s += "=" + t.Value
	}
	if t.Effect != "" {
		s += ":" + string(t.Effect)
	}
	if t.Operator == corev1.TolerationOpExists && t.Value == "" {
		if t.Key != "" || t.Effect != "" {
			s += " "
		}
		s += "op=Exists"
	}
	if t.TolerationSeconds != nil {
		s += fmt.Sprintf(" for %ds", *t.TolerationSeconds)
	}
	return s
}

// newRolloutUndoCommand is kubectl rollout undo: it writes an earlier
// revision's template into the DaemonSet, which the server then rolls out.
func newRolloutUndoCommand(flags *clientFlags) *cobra.Command {
	var toRevision int64
	cmd := &cobra.Command{
		Use:   "undo " + rolloutArgs,
		Short: "Undo a previous rollout",
		Long: `Roll back to a previous revision: its pod template becomes the DaemonSet's,
which the server then rolls out like any template change (the revision gets the
next number).`,
		Example: "  daemonlet rollout undo ds/fluentd --to-revision 3",
		Args:    cobra.RangeArgs(1, 2),
	}
	cmd.Flags().Int64Var(&toRevision, "to-revision", 0, "The revision to rollback to. Default to 0 (last revision).")
	cmd.RunE = rolloutRunE(flags, func(cmd *cobra.Command, c *client.Client, name string) error {
		var result string
		err := updateObject(cmd.Context(), c.DaemonSets(flags.namespace), name, func(ds *appsv1.DaemonSet) (bool, error) {
			revs, err := daemonSetRevisions(cmd.Context(), c, ds)
			if err != nil {
				return false, err
			}
			cr, err := rollbackTarget(revs, toRevision)
			if err != nil {
				return false, err
			}
			tmpl, err := api.RevisionTemplate(cr)
			if err != nil {
				return false, err
			}
			if equality.Semantic.DeepEqual(ds.Spec.Template, *tmpl) {
				result = fmt.Sprintf("skipped rollback (current template already matches revision %d)", cr.Revision)
				return false, nil
			}
			ds.Spec.Template = *tmpl
			result = "rolled back"
			return true, nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", kindDaemonSet.qualifiedName(name, false), result)
		return nil
	})
	return cmd
}

// rollbackTarget is the revision undo returns to, as kubectl picks it:
// toRevision, or with 0 the second highest.
func rollbackTarget(revs []appsv1.ControllerRevision, toRevision int64) (*appsv1.ControllerRevision, error) {
	if toRevision == 0 {
		if len(revs) <= 1 {
			return nil, errdefs.ErrFailedPrecondition.WithMessage("no last revision to roll back to")
		}
		sorted := slices.Clone(revs)
		slices.SortFunc(sorted, byRevision)
		return &sorted[len(sorted)-2], nil
	}
	if cr := findRevision(revs, toRevision); cr != nil {
		return cr, nil
	}
	return nil, errdefs.ErrNotFound.WithMessage(fmt.Sprintf("unable to find specified revision %d in history", toRevision))
}

// newRolloutRestartCommand is kubectl rollout restart: a template change
// that changes nothing but a timestamp, so that every pod is replaced.
func newRolloutRestartCommand(flags *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restart " + rolloutArgs,
		Short: "Restart a resource",
		Long: `Restart every pod of the DaemonSet, under its update strategy, by stamping the
pod template with a kubectl.kubernetes.io/restartedAt annotation.`,
		Example: "  daemonlet rollout restart ds/fluentd",
		Args:    cobra.RangeArgs(1, 2),
	}
	cmd.RunE = rolloutRunE(flags, func(cmd *cobra.Command, c *client.Client, name string) error {
		now := time.Now().Format(time.RFC3339)
		err := updateObject(cmd.Context(), c.DaemonSets(flags.namespace), name, func(ds *appsv1.DaemonSet) (bool, error) {
			if ds.Spec.Template.Annotations == nil {
				ds.Spec.Template.Annotations = map[string]string{}
			}
			ds.Spec.Template.Annotations[annotationRestartedAt] = now
			return true, nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s restarted\n", kindDaemonSet.qualifiedName(name, false))
		return nil
	})
	return cmd
}

// newRolloutUnsupportedCommand is pause or resume, which kubectl refuses
// for DaemonSets (only Deployments can be paused); it still checks that
// the DaemonSet exists, as kubectl does.
func newRolloutUnsupportedCommand(flags *clientFlags, verb, gerund string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   verb + " " + rolloutArgs,
		Short: "Not supported for DaemonSets (as in kubectl)",
		Args:  cobra.RangeArgs(1, 2),
	}
	cmd.RunE = rolloutRunE(flags, func(cmd *cobra.Command, c *client.Client, name string) error {
		if _, err := c.DaemonSets(flags.namespace).Get(cmd.Context(), name); err != nil {
			return err
		}
		gr := schema.GroupResource{Group: kindDaemonSet.gvk.Group, Resource: kindDaemonSet.resource}
		return errdefs.ErrNotImplemented.WithMessage(fmt.Sprintf("%s %q %s is not supported", gr, name, gerund))
	})
	return cmd
}

// updateObject reads the object called name, lets edit change it, and
// writes it back conditionally (the read's resourceVersion), rereading and
// editing again on 409 Conflict; edit returning false means there is
// nothing to write.
func updateObject[T, L any](ctx context.Context, r *client.Resource[T, L], name string, edit func(*T) (bool, error)) error {
	var err error
	for range conflictRetries {
		var obj *T
		if obj, err = r.Get(ctx, name); err != nil {
			return err
		}
		var changed bool
		if changed, err = edit(obj); err != nil || !changed {
			return err
		}
		if _, err = r.Update(ctx, obj, client.WriteOptions{}); !apierrors.IsConflict(err) {
			return err
		}
	}
	return err
}

// printControllerRevisions writes kubectl's controllerrevision table; the
// controller is named as kind.group/name.
func printControllerRevisions(out io.Writer, items []appsv1.ControllerRevision, opts tableOptions) error {
	w := newTabWriter(out)
	writeRow(w, opts, "NAMESPACE", "NAME", "CONTROLLER", "REVISION", "AGE")
	for i := range items {
		cr := &items[i]
		controller := "<none>"
		if ref := metav1.GetControllerOf(cr); ref != nil {
			gv, err := schema.ParseGroupVersion(ref.APIVersion)
			if err != nil {
				return fmt.Errorf("controllerrevision %s: owner apiVersion: %w: %w", cr.Name, errdefs.ErrInvalidArgument, err)
			}
			controller = strings.ToLower(gv.WithKind(ref.Kind).GroupKind().String()) + "/" + ref.Name
		}
		writeRow(w, opts, cr.Namespace, cr.Name, controller, fmt.Sprint(cr.Revision), age(cr.CreationTimestamp, opts.now))
	}
	return w.Flush()
}
