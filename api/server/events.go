package server

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// eventSource is the component name the controllers' Events carry, as
// kube-controller-manager's DaemonSet controller names itself.
const eventSource = "daemonset-controller"

// newEventResource describes core/v1 events: what the controllers report
// about the objects they manage, for kubectl describe and get events.
func newEventResource() *resource {
	return &resource{
		version: "v1", name: "events", singular: "event", shortNames: []string{"ev"},
		kind: "Event", listKind: "EventList", namespaced: true,
		fieldLabels: []string{"metadata.name", "metadata.namespace", "involvedObject.kind", "involvedObject.name",
			"involvedObject.namespace", "involvedObject.uid", "reason", "type", "source"},
		newObject: func() object { return &corev1.Event{} },
		newList: func(items []object, rv string) kruntime.Object {
			l := &corev1.EventList{ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: make([]corev1.Event, len(items))}
			for i, o := range items {
				l.Items[i] = *o.(*corev1.Event)
			}
			return l
		},
		defaults: func(o object) {
			if e := o.(*corev1.Event); e.Type == "" {
				e.Type = corev1.EventTypeNormal
			}
		},
		validate: func(o object) field.ErrorList { return validateEvent(o.(*corev1.Event)) },
		validateUpdate: func(o, _ object) field.ErrorList {
			return validateEvent(o.(*corev1.Event))
		},
		fieldSet: func(o object) fields.Set {
			e := o.(*corev1.Event)
			s := metaFields(o)
			s["involvedObject.kind"] = e.InvolvedObject.Kind
			s["involvedObject.name"] = e.InvolvedObject.Name
			s["involvedObject.namespace"] = e.InvolvedObject.Namespace
			s["involvedObject.uid"] = string(e.InvolvedObject.UID)
			s["reason"] = e.Reason
			s["type"] = e.Type
			s["source"] = e.Source.Component
			return s
		},
	}
}

// validateEvent is the core of kube-apiserver's ValidateEvent: a valid
// name, an involved object, a known type, and the involved object's
// namespace (when set) the event's own.
func validateEvent(e *corev1.Event) field.ErrorList {
	errs := apimachineryvalidation.ValidateObjectMeta(&e.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	io := field.NewPath("involvedObject")
	if e.InvolvedObject.Kind == "" {
		errs = append(errs, field.Required(io.Child("kind"), ""))
	}
	if e.InvolvedObject.Name == "" {
		errs = append(errs, field.Required(io.Child("name"), ""))
	}
	if ns := e.InvolvedObject.Namespace; ns != "" && ns != e.Namespace {
		errs = append(errs, field.Invalid(io.Child("namespace"), ns, "does not match event.namespace"))
	}
	if e.Type != corev1.EventTypeNormal && e.Type != corev1.EventTypeWarning {
		errs = append(errs, field.NotSupported(field.NewPath("type"), e.Type, []string{corev1.EventTypeNormal, corev1.EventTypeWarning}))
	}
	return errs
}

// recordEvent stores an Event about obj (a DaemonSet for the rollout
// controller), named as client-go's recorder names them: the object's name
// and a unique suffix from the time. A failure is logged, not returned:
// events are best effort.
func (s *Server) recordEvent(ctx context.Context, obj object, kind, eventType, reason, message string) {
	now := metav1.NewTime(s.clock.Now())
	e := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", obj.GetName(), now.UnixNano()),
			Namespace: obj.GetNamespace(),
		},
		InvolvedObject: corev1.ObjectReference{
			Kind: kind, APIVersion: obj.GetObjectKind().GroupVersionKind().GroupVersion().String(),
			Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: obj.GetUID(), ResourceVersion: obj.GetResourceVersion(),
		},
		Reason: reason, Message: message, Type: eventType,
		Source:         corev1.EventSource{Component: eventSource},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if err := s.createObject(ctx, s.events, e); err != nil {
		s.log.Warn("recording an event", "object", obj.GetNamespace()+"/"+obj.GetName(), "reason", reason, "error", err)
	}
}

// collectEvents deletes the Events last seen more than eventTTL ago.
func (s *Server) collectEvents(ctx context.Context) error {
	cutoff := s.clock.Now().Add(-eventTTL)
	expired, _, err := s.list(ctx, s.events, "", func(o object) bool {
		e := o.(*corev1.Event)
		last := e.LastTimestamp.Time
		if last.IsZero() {
			last = e.CreationTimestamp.Time
		}
		return last.Before(cutoff)
	})
	if err != nil {
		return err
	}
	for _, e := range expired {
		if err := s.deleteObject(ctx, s.events, e); err != nil {
			return err
		}
	}
	return nil
}
