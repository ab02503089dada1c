package client

import (
	"bytes"
	"errors"
	"testing"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
)

// FuzzDecodeWatch feeds arbitrary bytes to the watch stream decoder. It
// must never panic, must only emit the four event types, and must end
// either cleanly, with a Status error, or with a classified error.
func FuzzDecodeWatch(f *testing.F) {
	f.Add([]byte(`{"type":"ADDED","object":{"kind":"DaemonSet","metadata":{"name":"a","resourceVersion":"3"}}}` + "\n"))
	f.Add([]byte(`{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}{"type":"DELETED","object":{}}`))
	f.Add([]byte(`{"type":"ERROR","object":{"kind":"Status","status":"Failure","code":410,"reason":"Expired"}}`))
	f.Add([]byte(`{"type":"MODIFIED","object":`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := DecodeWatch(bytes.NewReader(data), func(e Event[appsv1.DaemonSet]) bool {
			switch e.Type {
			case watch.Added, watch.Modified, watch.Deleted, watch.Bookmark:
			default:
				t.Fatalf("emitted event type %q", e.Type)
			}
			if e.Object == nil {
				t.Fatal("emitted an event without an object")
			}
			return true
		})
		var st *apierrors.StatusError
		if err != nil && !errors.As(err, &st) && !errdefs.IsInvalidArgument(err) && !errdefs.IsUnavailable(err) {
			t.Fatalf("unclassified error: %v", err)
		}
	})
}
