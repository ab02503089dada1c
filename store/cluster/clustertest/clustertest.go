// Package clustertest is the conformance suite of cluster.Store: every
// backend (bbolt now, etcd later) runs Run, so that the server sees the same
// revisions, preconditions, watch order and compaction whichever store it uses.
package clustertest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/daemonlet/daemonlet/store/cluster"
)

const (
	// HistoryLimit is the watch history the stores given to Run must keep: at
	// least the last HistoryLimit changes, and at most 2*HistoryLimit, so that
	// the compaction subtest can tell both bounds.
	HistoryLimit = 64
	// MinWatchBuffer is the number of changes a store given to Run must hold
	// for a watcher that does not read before closing it.
	MinWatchBuffer = 256
	// MaxWatchBacklog is the number of undelivered changes after which a store
	// given to Run must have closed a watcher that does not read.
	MaxWatchBacklog = 2048
)

// waitTimeout bounds every wait for an event or a closed channel, so that a
// lost event fails the test instead of hanging it.
const waitTimeout = 20 * time.Second

// Run runs the conformance subtests. open is called once per subtest and
// must return a new, empty store that keeps the HistoryLimit, MinWatchBuffer
// and MaxWatchBacklog bounds and that open closes in a t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) cluster.Store) {
	for _, tc := range []struct {
		name string
		test func(t *testing.T, s cluster.Store)
	}{
		{"RevisionsIncreaseAcrossKeys", testRevisions},
		{"GetMissing", testGetMissing},
		{"CreateExisting", testCreateExisting},
		{"UpdatePreconditions", testUpdatePreconditions},
		{"DeletePreconditions", testDeletePreconditions},
		{"ListSortedWithRevision", testList},
		{"ValuesAreCopies", testValuesAreCopies},
		{"InvalidArguments", testInvalidArguments},
		{"WatchFromZero", testWatchFromZero},
		{"WatchFromMiddle", testWatchFromMiddle},
		{"WatchLive", testWatchLive},
		{"WatchFromFutureRevision", testWatchFromFuture},
		{"WatchPrefix", testWatchPrefix},
		{"WatchConcurrentWritersDuringReplay", testWatchStress},
		{"Compaction", testCompaction},
		{"SlowWatcherClosed", testSlowWatcher},
		{"ContextCancelClosesWatch", testCancel},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, open(t)) })
	}
}

// history records the changes a test made, so that watch results can be
// checked against them.
type history struct {
	mu     sync.Mutex
	events []cluster.Event
}

func (h *history) add(ev cluster.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

// after returns the recorded changes with a revision above rev, in revision
// order, optionally only those whose key starts with prefix.
func (h *history) after(rev int64, prefix string) []cluster.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []cluster.Event
	for _, ev := range h.events {
		if ev.Revision > rev && strings.HasPrefix(ev.KV.Key, prefix) {
			out = append(out, ev)
		}
	}
	slices.SortFunc(out, func(a, b cluster.Event) int { return cmp.Compare(a.Revision, b.Revision) })
	return out
}

// tryCreate, tryUpdate and tryDelete write through s and record the event a
// watcher must see; they are safe to call from any goroutine.
func (h *history) tryCreate(ctx context.Context, s cluster.Store, key, value string) (int64, error) {
	rev, err := s.Create(ctx, key, []byte(value))
	if err != nil {
		return 0, fmt.Errorf("Create(%q): %w", key, err)
	}
	h.add(cluster.Event{Type: cluster.EventPut, KV: cluster.KV{Key: key, Value: []byte(value), CreateRevision: rev, ModRevision: rev}, Revision: rev})
	return rev, nil
}

func (h *history) tryUpdate(ctx context.Context, s cluster.Store, key, value string, created int64) (int64, error) {
	rev, err := s.Update(ctx, key, []byte(value), 0)
	if err != nil {
		return 0, fmt.Errorf("Update(%q): %w", key, err)
	}
	h.add(cluster.Event{Type: cluster.EventPut, KV: cluster.KV{Key: key, Value: []byte(value), CreateRevision: created, ModRevision: rev}, Revision: rev})
	return rev, nil
}

func (h *history) tryDelete(ctx context.Context, s cluster.Store, key string) (int64, error) {
	kv, rev, err := s.Delete(ctx, key, 0)
	if err != nil {
		return 0, fmt.Errorf("Delete(%q): %w", key, err)
	}
	gone := kv
	gone.ModRevision = rev
	h.add(cluster.Event{Type: cluster.EventDelete, KV: gone, Revision: rev})
	return rev, nil
}

// create, update and del are tryCreate, tryUpdate and tryDelete for the test
// goroutine: they stop the test on error.
func create(t *testing.T, s cluster.Store, h *history, key, value string) int64 {
	t.Helper()
	rev, err := h.tryCreate(t.Context(), s, key, value)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func update(t *testing.T, s cluster.Store, h *history, key, value string, created int64) int64 {
	t.Helper()
	rev, err := h.tryUpdate(t.Context(), s, key, value, created)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func del(t *testing.T, s cluster.Store, h *history, key string) int64 {
	t.Helper()
	rev, err := h.tryDelete(t.Context(), s, key)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func format(ev cluster.Event) string {
	return fmt.Sprintf("{%v %q=%q create=%d mod=%d rev=%d}",
		ev.Type, ev.KV.Key, ev.KV.Value, ev.KV.CreateRevision, ev.KV.ModRevision, ev.Revision)
}

// receive reads n events from ch, failing on a closed channel or a timeout.
func receive(t *testing.T, ch <-chan cluster.Event, n int) []cluster.Event {
	t.Helper()
	var got []cluster.Event
	timeout := time.After(waitTimeout)
	for len(got) < n {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watch channel closed after %d of %d events", len(got), n)
			}
			got = append(got, ev)
		case <-timeout:
			t.Fatalf("received %d of %d events within %s", len(got), n, waitTimeout)
		}
	}
	return got
}

// expectEvents receives len(want) events and compares them with want.
func expectEvents(t *testing.T, ch <-chan cluster.Event, want []cluster.Event) {
	t.Helper()
	compare(t, receive(t, ch, len(want)), want)
}

func compare(t *testing.T, got, want []cluster.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d events, want %d", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if format(got[i]) != format(want[i]) {
			t.Errorf("event %d = %s, want %s", i, format(got[i]), format(want[i]))
		}
	}
}

// expectQuiet fails if ch delivers anything within a short while; used
// before a write whose event must be the next one.
func expectQuiet(t *testing.T, ch <-chan cluster.Event) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if ok {
			t.Errorf("unexpected event %s", format(ev))
		} else {
			t.Error("watch channel closed unexpectedly")
		}
	case <-time.After(50 * time.Millisecond):
	}
}

// drainUntilClosed reads ch until it is closed, failing on a timeout.
func drainUntilClosed(t *testing.T, ch <-chan cluster.Event) []cluster.Event {
	t.Helper()
	var got []cluster.Event
	timeout := time.After(waitTimeout)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return got
			}
			got = append(got, ev)
		case <-timeout:
			t.Fatalf("watch channel not closed within %s (%d events received)", waitTimeout, len(got))
		}
	}
}

func testRevisions(t *testing.T, s cluster.Store) {
	ctx := t.Context()
	var h history
	start := s.Revision()
	r1 := create(t, s, &h, "/a", "a1")
	r2 := create(t, s, &h, "/b", "b1")
	r3 := update(t, s, &h, "/a", "a2", r1)
	r4 := del(t, s, &h, "/b")
	if !(start < r1 && r1 < r2 && r2 < r3 && r3 < r4) {
		t.Errorf("revisions not increasing across keys: start %d, then %d %d %d %d", start, r1, r2, r3, r4)
	}
	if got := s.Revision(); got != r4 {
		t.Errorf("Revision() = %d, want the last write's %d", got, r4)
	}
	kv, err := s.Get(ctx, "/a")
	if err != nil {
		t.Fatal(err)
	}
	if kv.Key != "/a" || string(kv.Value) != "a2" || kv.CreateRevision != r1 || kv.ModRevision != r3 {
		t.Errorf("Get(/a) = %+v, want value a2, create %d, mod %d", kv, r1, r3)
	}
}

func testGetMissing(t *testing.T, s cluster.Store) {
	if _, err := s.Get(t.Context(), "/missing"); !errdefs.IsNotFound(err) {
		t.Errorf("Get of a missing key error = %v, want NotFound", err)
	}
}

func testCreateExisting(t *testing.T, s cluster.Store) {
	ctx := t.Context()
	var h history
	r1 := create(t, s, &h, "/a", "first")
	if _, err := s.Create(ctx, "/a", []byte("second")); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second Create error = %v, want AlreadyExists", err)
	}
	if got := s.Revision(); got != r1 {
		t.Errorf("failed Create moved the revision from %d to %d", r1, got)
	}
	if kv, err := s.Get(ctx, "/a"); err != nil || string(kv.Value) != "first" || kv.ModRevision != r1 {
		t.Errorf("after failed Create, Get = %+v, %v; want the first value at %d", kv, err, r1)
	}
}

func testUpdatePreconditions(t *testing.T, s cluster.Store) {
	ctx := t.Context()
	var h history
	r1 := create(t, s, &h, "/a", "v1")
	if _, err := s.Update(ctx, "/a", []byte("wrong"), r1+100); !errdefs.IsConflict(err) {
		t.Errorf("Update with a wrong revision error = %v, want Conflict", err)
	}
	r2, err := s.Update(ctx, "/a", []byte("v2"), r1)
	if err != nil {
		t.Fatalf("Update with the current revision: %v", err)
	}
	if r2 <= r1 {
		t.Errorf("Update revision %d not above %d", r2, r1)
	}
	if _, err := s.Update(ctx, "/a", []byte("stale"), r1); !errdefs.IsConflict(err) {
		t.Errorf("Update with a stale revision error = %v, want Conflict", err)
	}
	r3, err := s.Update(ctx, "/a", []byte("v3"), 0)
	if err != nil {
		t.Fatalf("unconditional Update: %v", err)
	}
	kv, err := s.Get(ctx, "/a")
	if err != nil {
		t.Fatal(err)
	}
	if string(kv.Value) != "v3" || kv.CreateRevision != r1 || kv.ModRevision != r3 {
		t.Errorf("Get = %+v, want v3 created at %d, modified at %d", kv, r1, r3)
	}
	for _, expected := range []int64{0, r3} {
		if _, err := s.Update(ctx, "/missing", []byte("x"), expected); !errdefs.IsNotFound(err) {
			t.Errorf("Update of a missing key (expected revision %d) error = %v, want NotFound", expected, err)
		}
	}
	if got := s.Revision(); got != r3 {
		t.Errorf("failed Updates moved the revision from %d to %d", r3, got)
	}
}

func testDeletePreconditions(t *testing.T, s cluster.Store) {
	ctx := t.Context()
	var h history
	r1 := create(t, s, &h, "/a", "v1")
	r2 := update(t, s, &h, "/a", "v2", r1)
	if _, _, err := s.Delete(ctx, "/a", r1); !errdefs.IsConflict(err) {
		t.Errorf("Delete with a stale revision error = %v, want Conflict", err)
	}
	if _, err := s.Get(ctx, "/a"); err != nil {
		t.Fatalf("key gone after a failed Delete: %v", err)
	}
	kv, r3, err := s.Delete(ctx, "/a", r2)
	if err != nil {
		t.Fatalf("Delete with the current revision: %v", err)
	}
	if kv.Key != "/a" || string(kv.Value) != "v2" || kv.CreateRevision != r1 || kv.ModRevision != r2 {
		t.Errorf("Delete returned %+v, want the stored v2 created at %d, modified at %d", kv, r1, r2)
	}
	if r3 <= r2 || s.Revision() != r3 {
		t.Errorf("Delete revision %d, Revision() %d; want one above %d", r3, s.Revision(), r2)
	}
	if _, err := s.Get(ctx, "/a"); !errdefs.IsNotFound(err) {
		t.Errorf("Get after Delete error = %v, want NotFound", err)
	}
	if _, _, err := s.Delete(ctx, "/a", 0); !errdefs.IsNotFound(err) {
		t.Errorf("second Delete error = %v, want NotFound", err)
	}
	create(t, s, &h, "/b", "b")
	del(t, s, &h, "/b")
}

func testList(t *testing.T, s cluster.Store) {
	ctx := t.Context()
	var h history
	for _, key := range []string{"/pods/ns/c", "/nodes/n", "/pods/ns/a", "/pods/ns2/x", "/pods/ns/b"} {
		create(t, s, &h, key, "v"+key)
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"/pods/ns/", []string{"/pods/ns/a", "/pods/ns/b", "/pods/ns/c"}},
		{"", []string{"/nodes/n", "/pods/ns/a", "/pods/ns/b", "/pods/ns/c", "/pods/ns2/x"}},
		{"/none/", nil},
	} {
		kvs, rev, err := s.List(ctx, tc.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", tc.prefix, err)
		}
		var keys []string
		for _, kv := range kvs {
			keys = append(keys, kv.Key)
			if string(kv.Value) != "v"+kv.Key || kv.ModRevision == 0 || kv.CreateRevision != kv.ModRevision {
				t.Errorf("List(%q) item %+v: wrong value or revisions", tc.prefix, kv)
			}
		}
		if !slices.Equal(keys, tc.want) {
			t.Errorf("List(%q) keys = %q, want %q", tc.prefix, keys, tc.want)
		}
		if rev != s.Revision() {
			t.Errorf("List(%q) revision = %d, want the store's %d", tc.prefix, rev, s.Revision())
		}
	}
}

func testValuesAreCopies(t *testing.T, s cluster.Store) {
	ctx := t.Context()
	value := []byte("original")
	if _, err := s.Create(ctx, "/a", value); err != nil {
		t.Fatal(err)
	}
	value[0] = 'X'
	kv, err := s.Get(ctx, "/a")
	if err != nil {
		t.Fatal(err)
	}
	kv.Value[0] = 'Y'
	kvs, _, err := s.List(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	kvs[0].Value[0] = 'Z'
	if kv, err := s.Get(ctx, "/a"); err != nil || string(kv.Value) != "original" {
		t.Errorf("Get after modifying the caller's slices = %q, %v; want %q", kv.Value, err, "original")
	}
}

func testInvalidArguments(t *testing.T, s cluster.Store) {
	ctx := t.Context()
	before := s.Revision()
	if _, err := s.Create(ctx, "", []byte("x")); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Create with an empty key error = %v, want InvalidArgument", err)
	}
	if _, err := s.Watch(ctx, "", -1); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Watch from revision -1 error = %v, want InvalidArgument", err)
	}
	if s.Revision() != before {
		t.Errorf("a failed write moved the revision from %d to %d", before, s.Revision())
	}
}

// writeSample makes a create, a create, an update and a delete, and returns
// their revisions.
func writeSample(t *testing.T, s cluster.Store, h *history) []int64 {
	t.Helper()
	ra := create(t, s, h, "/a", "a1")
	rb := create(t, s, h, "/b", "b1")
	return []int64{ra, rb, update(t, s, h, "/a", "a2", ra), del(t, s, h, "/b")}
}

func testWatchFromZero(t *testing.T, s cluster.Store) {
	var h history
	writeSample(t, s, &h)
	ch, err := s.Watch(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	expectEvents(t, ch, h.after(0, ""))
	expectQuiet(t, ch)
	rev := create(t, s, &h, "/c", "c1")
	expectEvents(t, ch, h.after(rev-1, ""))
}

func testWatchFromMiddle(t *testing.T, s cluster.Store) {
	var h history
	revs := writeSample(t, s, &h)
	ch, err := s.Watch(t.Context(), "", revs[1])
	if err != nil {
		t.Fatal(err)
	}
	want := h.after(revs[1], "")
	if len(want) != 2 {
		t.Fatalf("history after %d has %d changes, want 2", revs[1], len(want))
	}
	expectEvents(t, ch, want)
	last := revs[len(revs)-1]
	create(t, s, &h, "/c", "c1")
	expectEvents(t, ch, h.after(last, ""))
}

func testWatchLive(t *testing.T, s cluster.Store) {
	var h history
	writeSample(t, s, &h)
	from := s.Revision()
	ch, err := s.Watch(t.Context(), "", from)
	if err != nil {
		t.Fatal(err)
	}
	expectQuiet(t, ch)
	ra := create(t, s, &h, "/live", "1")
	update(t, s, &h, "/live", "2", ra)
	del(t, s, &h, "/live")
	expectEvents(t, ch, h.after(from, ""))
}

// testWatchFromFuture watches from a revision not yet written, as a watch
// from a List's revision can (List may see a write that is not yet
// published): the changes up to that revision must not be sent.
func testWatchFromFuture(t *testing.T, s cluster.Store) {
	var h history
	from := s.Revision() + 2
	ch, err := s.Watch(t.Context(), "", from)
	if err != nil {
		t.Fatal(err)
	}
	create(t, s, &h, "/a", "1")
	create(t, s, &h, "/b", "1")
	if s.Revision() != from {
		t.Fatalf("two writes moved the revision to %d, want %d", s.Revision(), from)
	}
	expectQuiet(t, ch)
	create(t, s, &h, "/c", "1")
	expectEvents(t, ch, h.after(from, ""))
}

func testWatchPrefix(t *testing.T, s cluster.Store) {
	var h history
	writeKeys := func() {
		for _, key := range []string{"/pods/a/x", "/pods/ab/y", "/nodes/a", "/pods/a/z"} {
			create(t, s, &h, key+fmt.Sprint(s.Revision()), "v")
		}
	}
	writeKeys()
	ch, err := s.Watch(t.Context(), "/pods/a/", 0)
	if err != nil {
		t.Fatal(err)
	}
	writeKeys()
	want := h.after(0, "/pods/a/")
	if len(want) != 4 {
		t.Fatalf("history has %d changes under /pods/a/, want 4", len(want))
	}
	expectEvents(t, ch, want)
	expectQuiet(t, ch)
}

// testWatchStress starts watchers at random revisions while several
// goroutines write, and checks that each sees exactly the changes after its
// start: the window between a watcher's replay and its live events loses
// and repeats nothing.
func testWatchStress(t *testing.T, s cluster.Store) {
	const (
		writers       = 4
		writesEach    = 40
		watchers      = 8
		preWrites     = 20
		markerKey     = "/stress/end"
		watcherPrefix = "/stress/"
	)
	ctx := t.Context()
	var h history
	for i := range preWrites {
		create(t, s, &h, fmt.Sprintf("/stress/pre/%d", i), "pre")
	}

	type started struct {
		from   int64
		events chan []cluster.Event
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		watches []started
	)
	for w := range writers {
		wg.Go(func() {
			key := fmt.Sprintf("/stress/w%d", w)
			var (
				created int64
				err     error
			)
			for i := range writesEach {
				switch {
				case created == 0:
					created, err = h.tryCreate(ctx, s, key, fmt.Sprint(i))
				case i%7 == 6:
					_, err = h.tryDelete(ctx, s, key)
					created = 0
				default:
					_, err = h.tryUpdate(ctx, s, key, fmt.Sprint(i), created)
				}
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range watchers {
			time.Sleep(time.Duration(rand.IntN(4)) * time.Millisecond)
			var (
				ch   <-chan cluster.Event
				from int64
				err  error
			)
			// Writes between Revision and Watch can push a random start out
			// of the history; pick again.
			for attempt := 0; ; attempt++ {
				cur := s.Revision()
				from = max(0, cur-rand.Int64N(HistoryLimit/2+1))
				ch, err = s.Watch(ctx, watcherPrefix, from)
				if !errors.Is(err, cluster.ErrCompacted) || attempt == 100 {
					break
				}
			}
			if err != nil {
				t.Errorf("Watch from %d: %v", from, err)
				return
			}
			got := make(chan []cluster.Event, 1)
			go func() {
				var events []cluster.Event
				defer func() { got <- events }()
				timeout := time.After(waitTimeout)
				for {
					select {
					case ev, ok := <-ch:
						if !ok {
							return
						}
						events = append(events, ev)
						if ev.KV.Key == markerKey {
							return
						}
					case <-timeout:
						return
					}
				}
			}()
			mu.Lock()
			watches = append(watches, started{from: from, events: got})
			mu.Unlock()
		}
	})
	wg.Wait()
	create(t, s, &h, markerKey, "end")
	if len(watches) != watchers {
		t.Fatalf("%d watchers started, want %d", len(watches), watchers)
	}
	for _, w := range watches {
		got := <-w.events
		want := h.after(w.from, watcherPrefix)
		if len(got) == 0 || got[len(got)-1].KV.Key != markerKey {
			t.Errorf("watcher from %d: the final change never arrived (%d events)", w.from, len(got))
		}
		for i := range min(len(got), len(want)) {
			if format(got[i]) != format(want[i]) {
				t.Errorf("watcher from %d: event %d = %s, want %s", w.from, i, format(got[i]), format(want[i]))
				break
			}
		}
		if len(got) != len(want) {
			t.Errorf("watcher from %d: got %d events, want %d", w.from, len(got), len(want))
		}
	}
}

func testCompaction(t *testing.T, s cluster.Store) {
	ctx := t.Context()
	var h history
	var revs []int64
	for i := range 3 * HistoryLimit {
		revs = append(revs, create(t, s, &h, fmt.Sprintf("/k/%04d", i), "v"))
	}
	// At most 2*HistoryLimit changes are kept, so the first HistoryLimit are gone.
	for _, from := range []int64{0, revs[HistoryLimit-2]} {
		if _, err := s.Watch(ctx, "", from); !errors.Is(err, cluster.ErrCompacted) {
			t.Errorf("Watch from %d after %d writes error = %v, want ErrCompacted", from, len(revs), err)
		}
	}
	// At least HistoryLimit are kept.
	from := revs[2*HistoryLimit-1]
	ch, err := s.Watch(ctx, "", from)
	if err != nil {
		t.Fatalf("Watch within the last %d changes: %v", HistoryLimit, err)
	}
	expectEvents(t, ch, h.after(from, ""))
	kvs, _, err := s.List(ctx, "/k/")
	if err != nil || len(kvs) != len(revs) {
		t.Errorf("List after compaction = %d keys, %v; want all %d (compaction drops history, not data)", len(kvs), err, len(revs))
	}
}

// testSlowWatcher writes more than MaxWatchBacklog changes to a watcher that
// does not read: it must be closed, what it received must have no gap, and a
// new watch from its last revision must deliver the rest if it is retained,
// or fail with ErrCompacted (the caller then lists again).
func testSlowWatcher(t *testing.T, s cluster.Store) {
	ctx := t.Context()
	var h history
	from := s.Revision()
	ch, err := s.Watch(ctx, "", from)
	if err != nil {
		t.Fatal(err)
	}
	created := create(t, s, &h, "/slow", "0")
	for i := range MaxWatchBacklog {
		update(t, s, &h, "/slow", fmt.Sprint(i+1), created)
	}
	got := drainUntilClosed(t, ch)
	want := h.after(from, "")
	if len(got) < MinWatchBuffer || len(got) >= len(want) {
		t.Fatalf("slow watcher received %d of %d events before closing, want between %d and all",
			len(got), len(want), MinWatchBuffer)
	}
	compare(t, got, want[:len(got)])
	last := got[len(got)-1].Revision
	missed := want[len(got):]
	resumed, err := s.Watch(ctx, "", last)
	switch {
	case errors.Is(err, cluster.ErrCompacted) && len(missed) > HistoryLimit:
	case err != nil:
		t.Fatalf("re-watch from the last received revision %d, %d changes behind: %v", last, len(missed), err)
	case len(missed) > 2*HistoryLimit:
		t.Fatalf("re-watch from revision %d, %d changes behind, succeeded; want ErrCompacted", last, len(missed))
	default:
		expectEvents(t, resumed, missed)
	}
}

func testCancel(t *testing.T, s cluster.Store) {
	var h history
	writeSample(t, s, &h)
	t.Run("Live", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		ch, err := s.Watch(ctx, "", s.Revision())
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		if got := drainUntilClosed(t, ch); len(got) != 0 {
			t.Errorf("cancelled live watcher delivered %d events", len(got))
		}
		create(t, s, &h, "/after-cancel", "x")
	})
	t.Run("Replaying", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		ch, err := s.Watch(ctx, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		receive(t, ch, 1)
		cancel()
		drainUntilClosed(t, ch)
	})
	t.Run("AlreadyCancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		ch, err := s.Watch(ctx, "", 0)
		if err == nil {
			drainUntilClosed(t, ch)
		}
	})
}
