package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/daemonlet/daemonlet/store/cluster"
)

// Watch fan-out tuning.
const (
	// ringSize is how many recent events of a resource the broadcaster
	// keeps, so that watchers resuming from a recent resourceVersion join
	// without a store watch of their own.
	ringSize = 4096
	// subscriberBuffer is how many events a watcher may lag behind before
	// it is dropped; the client then resumes from its last version.
	subscriberBuffer = 256
	// bookmarkPeriod is how often an idle watcher that asked for them gets
	// a BOOKMARK.
	bookmarkPeriod = 30 * time.Second
	// writeTimeout bounds one write to a watcher, so a client that stopped
	// reading cannot pin its handler.
	writeTimeout = 10 * time.Second
	// rewatchDelay spaces the broadcaster's store re-watches after errors.
	rewatchDelay = time.Second
)

// watchEvent is one change, decoded and encoded once for every watcher.
type watchEvent struct {
	rev   int64
	obj   object
	frame []byte // a metav1.WatchEvent as JSON, newline-terminated
}

// subscriber is one HTTP watcher registered with a broadcaster. Its
// pending events are a slice that grows only while the watcher lags, not
// a channel of subscriberBuffer slots: most watchers are idle most of the
// time, and thousands of them would each hold the slots for nothing.
type subscriber struct {
	after int64 // only events with a higher revision are sent
	match func(object) bool
	// wake is signalled (cap 1, without blocking) when events are queued
	// or the subscriber is dropped.
	wake chan struct{}
	// queue holds the events not yet taken by the watcher, at most
	// subscriberBuffer (guarded by the broadcaster's mu).
	queue []*watchEvent
	// dropped is set when the broadcaster drops the subscriber; the
	// watcher's stream then ends once it has written the queue (guarded
	// by the broadcaster's mu).
	dropped bool
}

// signal wakes the subscriber's watcher without blocking.
func (sub *subscriber) signal() {
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

// broadcaster runs the single store watch of a resource and fans its
// events out to the subscribers.
type broadcaster struct {
	res    *resource
	store  cluster.Store
	log    *slog.Logger
	notify func() // called after each event (wakes the controllers)
	// cache, when set, is given every object decoded for the watchers,
	// so that the controllers need not decode it again.
	cache *decodedCache

	mu sync.Mutex
	// rev is the revision of the last event dispatched, or the revision
	// the watch started from (guarded by mu).
	rev int64
	// ringStart: every event with a revision > ringStart is in ring or
	// still to come (guarded by mu).
	ringStart int64
	ring      []*watchEvent // guarded by mu
	subs      map[*subscriber]struct{}
}

func newBroadcaster(res *resource, store cluster.Store, log *slog.Logger, notify func()) *broadcaster {
	rev := store.Revision()
	return &broadcaster{res: res, store: store, log: log.With("resource", res.name), notify: notify,
		rev: rev, ringStart: rev, subs: map[*subscriber]struct{}{}}
}

// run follows the store until ctx ends, then ends every subscriber's
// stream.
func (b *broadcaster) run(ctx context.Context) {
	defer b.dropAll(0)
	for ctx.Err() == nil {
		b.mu.Lock()
		from := b.rev
		b.mu.Unlock()
		ch, err := b.store.Watch(ctx, b.res.prefix(""), from)
		if errors.Is(err, cluster.ErrCompacted) {
			// Changes were lost: start over from now, and end every
			// stream so that its client resumes (and relists on 410).
			b.log.Warn("watch history compacted; restarting the fan-out", "from", from)
			b.dropAll(b.store.Revision())
			continue
		}
		if err != nil {
			b.log.Error("watching the store", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(rewatchDelay):
			}
			continue
		}
		for ev := range ch {
			e, err := b.res.makeEvent(ev)
			if err != nil {
				b.log.Error("skipping an undecodable change", "key", ev.KV.Key, "error", err)
				continue
			}
			// Before the controllers are woken, so that their next read
			// finds the change decoded.
			b.remember(ev, e)
			b.dispatch(e)
			b.notify()
		}
	}
}

// remember hands a change's decoded object to the cache, if any.
func (b *broadcaster) remember(ev cluster.Event, e *watchEvent) {
	switch {
	case b.cache == nil:
	case ev.Type == cluster.EventDelete:
		b.cache.forget(ev.KV.Key, ev.Revision)
	default:
		b.cache.offer(ev.KV.Key, ev.KV.ModRevision, e.obj)
	}
}

// dispatch records an event and hands it to every matching subscriber; a
// subscriber whose buffer is full is dropped rather than waited for.
func (b *broadcaster) dispatch(e *watchEvent) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.ring) >= ringSize {
		b.ringStart = b.ring[0].rev
		b.ring = b.ring[1:] // append reallocates when needed, freeing the front
	}
	b.ring = append(b.ring, e)
	b.rev = e.rev
	for sub := range b.subs {
		if e.rev <= sub.after || !sub.match(e.obj) {
			continue
		}
		if len(sub.queue) >= subscriberBuffer {
			b.drop(sub)
			continue
		}
		sub.queue = append(sub.queue, e)
		sub.signal()
	}
}

// drop ends a subscriber; b.mu must be held.
func (b *broadcaster) drop(sub *subscriber) {
	delete(b.subs, sub)
	sub.dropped = true
	sub.signal()
}

// take hands the watcher the queued events, in order, taking back the
// slice of its previous take (done with, and cleared) for reuse; open is
// false once the subscriber has been dropped.
func (b *broadcaster) take(sub *subscriber, done []*watchEvent) (events []*watchEvent, open bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	events, sub.queue = sub.queue, done[:0]
	return events, !sub.dropped
}

// dropAll ends every subscriber; with rev > 0 it also forgets the ring and
// restarts from rev.
func (b *broadcaster) dropAll(rev int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.subs {
		b.drop(sub)
	}
	if rev > 0 {
		b.ring, b.rev, b.ringStart = nil, rev, rev
	}
}

// subscribe registers a watcher for the changes after `after`, returning
// the matching ones already in the ring; ok is false when the ring no
// longer covers `after` and the caller must catch up from the store.
func (b *broadcaster) subscribe(after int64, match func(object) bool) (sub *subscriber, backlog []*watchEvent, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if after < b.ringStart {
		return nil, nil, false
	}
	for _, e := range b.ring {
		if e.rev > after && match(e.obj) {
			backlog = append(backlog, e)
		}
	}
	sub = &subscriber{wake: make(chan struct{}, 1), after: after, match: match}
	b.subs[sub] = struct{}{}
	return sub, backlog, true
}

func (b *broadcaster) unsubscribe(sub *subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[sub]; ok {
		b.drop(sub)
	}
}

// covers says whether the ring holds every event after rev.
func (b *broadcaster) covers(rev int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return rev >= b.ringStart
}

// bookmarkRevision is a revision a subscriber may resume from: nothing
// after it has been dispatched that the subscriber has not been given,
// provided its channel is empty.
func (b *broadcaster) bookmarkRevision(sub *subscriber) (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(b.rev, sub.after), len(sub.queue) == 0
}

// makeEvent decodes a store change and encodes its watch frame.
func (r *resource) makeEvent(ev cluster.Event) (*watchEvent, error) {
	o, err := r.decode(ev.KV)
	if err != nil {
		return nil, err
	}
	typ := watch.Modified
	switch {
	case ev.Type == cluster.EventDelete:
		typ = watch.Deleted
		o.SetResourceVersion(strconv.FormatInt(ev.Revision, 10))
	case ev.KV.CreateRevision == ev.KV.ModRevision:
		typ = watch.Added
	}
	frame, err := encodeFrame(typ, o)
	if err != nil {
		return nil, err
	}
	return &watchEvent{rev: ev.Revision, obj: o, frame: frame}, nil
}

func encodeFrame(typ watch.EventType, o kruntime.Object) ([]byte, error) {
	raw, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encoding a watch event: %w", err)
	}
	frame, err := json.Marshal(metav1.WatchEvent{Type: string(typ), Object: kruntime.RawExtension{Raw: raw}})
	if err != nil {
		return nil, fmt.Errorf("encoding a watch event: %w", err)
	}
	return append(frame, '\n'), nil
}

// watchStream writes frames to one HTTP watcher.
type watchStream struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (ws *watchStream) write(frame []byte) error {
	// Deadlines are best effort: not every ResponseWriter supports them.
	_ = ws.rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := ws.w.Write(frame); err != nil {
		return err
	}
	return ws.rc.Flush()
}

// serveWatch streams every matching change after the requested
// resourceVersion (after an ADDED for every existing object when it is
// empty or "0") until the client leaves, timeoutSeconds passes, the
// watcher falls behind or the server stops.
func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request, req request, opts listOptions) {
	ctx := r.Context()
	if opts.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.timeout)
		defer cancel()
	}
	res := req.res
	b := s.broadcasters[res]
	match := matcher(res, req.namespace, opts)

	var initial []object
	after, _ := strconv.ParseInt(opts.resourceVersion, 10, 64)
	if after == 0 {
		items, rev, err := s.list(ctx, res, req.namespace, match)
		if err != nil {
			writeError(w, err)
			return
		}
		initial, after = items, rev
	}

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	ws := &watchStream{w: w, rc: http.NewResponseController(w)}
	if err := ws.rc.Flush(); err != nil {
		return
	}
	for _, o := range initial {
		frame, err := encodeFrame(watch.Added, o)
		if err != nil || ws.write(frame) != nil {
			return
		}
	}

	sub, last, ok := s.join(ctx, ws, b, after, match)
	if !ok {
		return
	}
	defer b.unsubscribe(sub)
	var events []*watchEvent // the last take, handed back on the next
	var bookmarks <-chan time.Time
	if opts.bookmarks {
		t := s.clock.NewTimer(bookmarkPeriod)
		defer t.Stop()
		bookmarks = t.C()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.wake:
			var open bool
			events, open = b.take(sub, events)
			for _, e := range events {
				if ws.write(e.frame) != nil {
					return
				}
				last = e.rev
			}
			// An idle watcher keeps no event reachable.
			clear(events)
			if !open {
				return
			}
		case <-bookmarks:
			if rev, idle := b.bookmarkRevision(sub); idle && rev >= last {
				bm := res.newObject()
				bm.SetResourceVersion(strconv.FormatInt(rev, 10))
				res.setKind(bm, res.kind)
				frame, err := encodeFrame(watch.Bookmark, bm)
				if err != nil || ws.write(frame) != nil {
					return
				}
				last = rev
			}
			bookmarks = s.clock.After(bookmarkPeriod)
		}
	}
}

// join subscribes a watcher from revision after. While the broadcaster's
// ring no longer reaches back that far, the watcher catches up on a
// private store watch and switches to the shared one as soon as the ring
// covers what it has sent. ok is false when the stream has ended.
func (s *Server) join(ctx context.Context, ws *watchStream, b *broadcaster, after int64, match func(object) bool) (sub *subscriber, last int64, ok bool) {
	last = after
	for {
		sub, backlog, ok := b.subscribe(last, match)
		if ok {
			for _, e := range backlog {
				if ws.write(e.frame) != nil {
					b.unsubscribe(sub)
					return nil, 0, false
				}
				last = e.rev
			}
			return sub, last, true
		}
		if !s.catchUp(ctx, ws, b, &last, match) {
			return nil, 0, false
		}
	}
}

// catchUp streams the changes after *last from a private store watch until
// the broadcaster's ring covers *last; false means the stream has ended.
func (s *Server) catchUp(ctx context.Context, ws *watchStream, b *broadcaster, last *int64, match func(object) bool) bool {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.store.Watch(ctx, b.res.prefix(""), *last)
	if errors.Is(err, cluster.ErrCompacted) {
		_ = writeWatchFrameError(ws, apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d", *last)))
		return false
	}
	if err != nil {
		s.log.Error("catching a watcher up", "resource", b.res.name, "error", err)
		return false
	}
	for !b.covers(*last) {
		select {
		case <-ctx.Done():
			return false
		case ev, open := <-ch:
			if !open {
				return false // the client resumes from its last version
			}
			e, err := b.res.makeEvent(ev)
			if err != nil {
				s.log.Error("skipping an undecodable change", "key", ev.KV.Key, "error", err)
				continue
			}
			if match(e.obj) && ws.write(e.frame) != nil {
				return false
			}
			*last = e.rev
		}
	}
	return true
}

// writeWatchError answers a watch that cannot start with a 200 stream of
// one ERROR event, as kube-apiserver does for an expired resourceVersion.
func writeWatchError(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = writeWatchFrameError(&watchStream{w: w, rc: http.NewResponseController(w)}, err)
}

func writeWatchFrameError(ws *watchStream, err error) error {
	frame, encErr := encodeFrame(watch.Error, toStatus(err))
	if encErr != nil {
		return encErr
	}
	return ws.write(frame)
}
