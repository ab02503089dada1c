package runtime

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// listTimeout bounds one shared list: it runs on no caller's context, as
// callers that give up must not fail the others that share it.
const listTimeout = time.Minute

// listCalls shares one list among the callers that ask concurrently. Every
// pod worker lists the containers on each of its passes, and the periodic
// resync wakes all of them at once: without sharing, N pods cost N lists
// of N containers each time.
//
// A caller never gets a list that began before it asked: it joins the
// list that has not started yet, which starts once the one under way (if
// any) is done. So a result is as fresh as a list of the caller's own.
type listCalls[T any] struct {
	mu   sync.Mutex
	next *listCall[T] // not started yet; callers join it
	last *listCall[T] // the latest started or about to start
}

// listCall is one shared list.
type listCall[T any] struct {
	done chan struct{}
	out  []T
	err  error
}

// do returns list's answer from a call that started after do was called.
// list runs with ctx's values but without its cancellation, bounded by
// listTimeout; do itself returns when ctx ends. Each caller gets its own
// slice, whose elements it must not mutate: they are shared.
func (l *listCalls[T]) do(ctx context.Context, list func(context.Context) ([]T, error)) ([]T, error) {
	l.mu.Lock()
	c := l.next
	if c == nil {
		c = &listCall[T]{done: make(chan struct{})}
		prev := l.last
		l.next, l.last = c, c
		go func() {
			if prev != nil {
				<-prev.done
			}
			l.mu.Lock()
			l.next = nil // from now on, callers wait for the next one
			l.mu.Unlock()
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), listTimeout)
			defer cancel()
			c.out, c.err = list(lctx)
			close(c.done)
		}()
	}
	l.mu.Unlock()
	select {
	case <-c.done:
		return slices.Clone(c.out), c.err
	case <-ctx.Done():
		return nil, fmt.Errorf("list: %w", ctx.Err())
	}
}
