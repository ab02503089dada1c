package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/containerd/errdefs"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// Event is one change of a watched object.
type Event[T any] struct {
	// Type is watch.Added, watch.Modified, watch.Deleted or watch.Bookmark.
	Type watch.EventType
	// Object is the object after the change (for Deleted: its last state;
	// for Bookmark: only kind, apiVersion and metadata.resourceVersion).
	Object *T
}

// DecodeWatch reads a stream of metav1.WatchEvent JSON objects, newline
// delimited or simply concatenated, and emits each as a typed Event until the
// stream ends or emit returns false. A clean end of the stream between
// events, or emit returning false, gives nil. An ERROR event ends the stream
// with its metav1.Status as an *apierrors.StatusError (410 Expired when the
// requested resourceVersion is too old). A stream cut inside an event is
// errdefs.ErrUnavailable; malformed or unknown events are
// errdefs.ErrInvalidArgument.
func DecodeWatch[T any](r io.Reader, emit func(Event[T]) bool) error {
	dec := json.NewDecoder(r)
	for n := 1; ; n++ {
		var ev metav1.WatchEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("watch event %d: stream cut inside the event: %w", n, errdefs.ErrUnavailable)
			}
			var syn *json.SyntaxError
			var typ *json.UnmarshalTypeError
			if errors.As(err, &syn) || errors.As(err, &typ) {
				return fmt.Errorf("watch event %d: %w: %w", n, errdefs.ErrInvalidArgument, err)
			}
			return fmt.Errorf("watch event %d: %w: %w", n, errdefs.ErrUnavailable, err)
		}
		if len(ev.Object.Raw) == 0 || string(ev.Object.Raw) == "null" {
			return fmt.Errorf("watch event %d (%s): no object: %w", n, ev.Type, errdefs.ErrInvalidArgument)
		}
		typ := watch.EventType(ev.Type)
		switch typ {
		case watch.Error:
			var st metav1.Status
			if err := json.Unmarshal(ev.Object.Raw, &st); err != nil || !isStatus(&st) {
				return fmt.Errorf("watch event %d: ERROR without a Status object: %w", n, errdefs.ErrInvalidArgument)
			}
			return &apierrors.StatusError{ErrStatus: st}
		case watch.Added, watch.Modified, watch.Deleted, watch.Bookmark:
			obj := new(T)
			if err := json.Unmarshal(ev.Object.Raw, obj); err != nil {
				return fmt.Errorf("watch event %d (%s): %w: %w", n, typ, errdefs.ErrInvalidArgument, err)
			}
			if !emit(Event[T]{Type: typ, Object: obj}) {
				return nil
			}
		default:
			return fmt.Errorf("watch event %d: unknown type %q: %w", n, ev.Type, errdefs.ErrInvalidArgument)
		}
	}
}

// Watcher delivers the events of one watch stream.
type Watcher[T any] struct {
	events chan Event[T]
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	err     error // under mu; set before events closes
	stopped bool  // under mu; Stop was called, so the end is not an error
}

// Watch opens a stream of the changes to the objects that match opts, after
// opts.ResourceVersion (empty or "0": first an ADDED event per existing
// object). Events arrive on Events(); the caller calls Stop when done.
func (r *Resource[T, L]) Watch(ctx context.Context, opts ListOptions) (*Watcher[T], error) {
	ctx, cancel := context.WithCancel(ctx)
	resp, err := r.c.send(ctx, request{method: http.MethodGet, path: r.collectionPath(), query: opts.query(true), gr: r.GroupResource()})
	if err != nil {
		cancel()
		return nil, err
	}
	w := &Watcher[T]{events: make(chan Event[T]), cancel: cancel, done: make(chan struct{})}
	go w.run(ctx, resp.Body)
	return w, nil
}

// run decodes body into the events channel until the stream or ctx ends.
func (w *Watcher[T]) run(ctx context.Context, body io.ReadCloser) {
	defer close(w.done)
	defer close(w.events)
	defer body.Close()
	err := DecodeWatch(body, func(ev Event[T]) bool {
		select {
		case w.events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.stopped:
	case err == nil && ctx.Err() != nil:
		w.err = fmt.Errorf("watch: %w: %w", errdefs.ErrUnavailable, ctx.Err())
	default:
		w.err = err
	}
}

// Events is the channel of events; it is closed at the end of the stream.
func (w *Watcher[T]) Events() <-chan Event[T] { return w.events }

// Err says why the stream ended, once Events is closed: nil for a clean end
// or after Stop, an *apierrors.StatusError from an ERROR event (410 when the
// resourceVersion is too old: relist, then watch from the list's), or an
// error classed errdefs.ErrUnavailable when the connection broke.
func (w *Watcher[T]) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Stop ends the stream and waits for Events to close; it may be called more
// than once.
func (w *Watcher[T]) Stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	w.cancel()
	<-w.done
}
