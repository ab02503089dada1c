package runtime

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestListCallsShareOnlyListsThatStartedAfterTheCall: callers that arrive
// while a list runs share a later one, never the running one; a caller
// that gives up fails neither the list it started nor the callers that
// share it.
func TestListCallsShareOnlyListsThatStartedAfterTheCall(t *testing.T) {
	var l listCalls[int]
	var calls atomic.Int32
	firstStarted := make(chan struct{})
	releaseFirst := make(chan struct{})
	list := func(ctx context.Context) ([]int, error) {
		n := calls.Add(1)
		if n == 1 {
			close(firstStarted)
			<-releaseFirst
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return []int{int(n)}, nil
	}

	first := make(chan []int, 1)
	go func() {
		out, err := l.do(context.Background(), list)
		if err != nil {
			t.Error(err)
		}
		first <- out
	}()
	<-firstStarted

	// List 1 runs. This caller starts the next list and gives up on it.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := l.do(ctx, list)
		gaveUp <- err
	}()
	for {
		l.mu.Lock()
		queued := l.next != nil
		l.mu.Unlock()
		if queued {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("a caller that gave up got %v, want context.Canceled", err)
	}

	const joiners = 10
	var wg sync.WaitGroup
	results := make(chan []int, joiners)
	for range joiners {
		wg.Go(func() {
			out, err := l.do(context.Background(), list)
			if err != nil {
				t.Errorf("a caller sharing a list started by one that gave up: %v", err)
			}
			results <- out
		})
	}
	// Give the joiners time to queue; the assertions on freshness below
	// hold whatever the timing, only the sharing count depends on it.
	time.Sleep(100 * time.Millisecond)
	close(releaseFirst)
	if out := <-first; len(out) != 1 || out[0] != 1 {
		t.Fatalf("first caller got %v, want [1]", out)
	}
	wg.Wait()
	close(results)
	var outs [][]int
	for out := range results {
		if len(out) != 1 || out[0] < 2 {
			t.Fatalf("a caller that came while list 1 ran got %v, want a later list", out)
		}
		outs = append(outs, out)
	}
	if n := calls.Load(); n > 1+joiners/2 {
		t.Fatalf("%d callers made %d lists; concurrent callers should share", joiners+2, n)
	}
	outs[0][0] = -1
	if outs[1][0] == -1 {
		t.Fatal("callers share one slice")
	}

	// Nothing runs now: a lone caller gets a list of its own.
	before := calls.Load()
	if out, err := l.do(context.Background(), list); err != nil || len(out) != 1 || out[0] != int(before)+1 {
		t.Fatalf("a lone caller got %v, %v; want [%d]", out, err, before+1)
	}
}
