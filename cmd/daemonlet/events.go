package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"

	"github.com/daemonlet/daemonlet/api/client"
)

// describeObjectEvents ends a description with kubectl's "Events:" section:
// the Events whose involvedObject is obj, of the given kind. As kubectl
// does, it leaves the section out when the Events cannot be listed (an
// older server, or a token that may not read them): the description
// itself is still worth having.
func describeObjectEvents(ctx context.Context, out io.Writer, c *client.Client, kind string, obj metav1.Object, now time.Time) error {
	events, err := objectEvents(ctx, c, kind, obj)
	if err != nil {
		return nil
	}
	return describeEvents(out, events, now)
}

// objectEvents lists the Events about obj, as kubectl describe searches
// them: by involvedObject kind, name, namespace and UID. A Node's Events
// live in any namespace, and kubelets put the node's name where its UID
// belongs, so for a Node both are taken.
func objectEvents(ctx context.Context, c *client.Client, kind string, obj metav1.Object) ([]corev1.Event, error) {
	sel := fields.Set{
		"involvedObject.kind": kind,
		"involvedObject.name": obj.GetName(),
	}
	if obj.GetNamespace() != "" {
		sel["involvedObject.namespace"] = obj.GetNamespace()
	}
	l, err := c.Events(obj.GetNamespace()).List(ctx, client.ListOptions{FieldSelector: sel.AsSelector().String()})
	if err != nil {
		return nil, err
	}
	var out []corev1.Event
	for _, e := range l.Items {
		uid := e.InvolvedObject.UID
		if uid == obj.GetUID() || (kind == "Node" && uid == types.UID(obj.GetName())) {
			out = append(out, e)
		}
	}
	return out, nil
}

// describeEvents writes kubectl's "Events:" section: oldest last-seen
// first, with the repetitions of a recurring Event in its Age column;
// "<none>" when there are none.
func describeEvents(out io.Writer, events []corev1.Event, now time.Time) error {
	d := newDescriber(out)
	if len(events) == 0 {
		d.line(0, "Events:\t<none>")
		return d.w.Flush()
	}
	events = slices.Clone(events)
	slices.SortStableFunc(events, func(a, b corev1.Event) int { return a.LastTimestamp.Compare(b.LastTimestamp.Time) })
	d.line(0, "Events:")
	d.line(1, "Type\tReason\tAge\tFrom\tMessage")
	d.line(1, "----\t------\t----\t----\t-------")
	for _, e := range events {
		first := age(e.FirstTimestamp, now)
		if !e.EventTime.IsZero() {
			first = age(metav1.NewTime(e.EventTime.Time), now)
		}
		interval := first
		switch {
		case e.Series != nil:
			interval = fmt.Sprintf("%s (x%d over %s)", age(metav1.NewTime(e.Series.LastObservedTime.Time), now), e.Series.Count, first)
		case e.Count > 1:
			interval = fmt.Sprintf("%s (x%d over %s)", age(e.LastTimestamp, now), e.Count, first)
		}
		from := e.Source.Component
		if from == "" {
			from = e.ReportingController
		}
		d.line(1, "%s\t%s\t%s\t%s\t%s", e.Type, e.Reason, interval, from, strings.TrimSpace(e.Message))
	}
	return d.w.Flush()
}
