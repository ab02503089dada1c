package agent

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/daemonlet/daemonlet/runtime/runtimetest"
	"github.com/daemonlet/daemonlet/store"
)

// gatedStore is the real store whose ReplaceDesired can be made to hang,
// which hangs the sync loop that calls it.
type gatedStore struct {
	*store.DB
	mu   sync.Mutex
	gate chan struct{} // nil: open
}

func (s *gatedStore) ReplaceDesired(source string, recs []store.DesiredRecord) error {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return s.DB.ReplaceDesired(source, recs)
}

// hold makes ReplaceDesired hang until the returned function is called.
func (s *gatedStore) hold() (release func()) {
	gate := make(chan struct{})
	s.mu.Lock()
	s.gate = gate
	s.mu.Unlock()
	return sync.OnceFunc(func() {
		s.mu.Lock()
		s.gate = nil
		s.mu.Unlock()
		close(gate)
	})
}

// notification is one datagram received on the test's NOTIFY_SOCKET.
type notification struct {
	msg string
	at  time.Time
}

// TestNotifySystemdWatchdogFollowsSyncLoop plays systemd: it owns the
// notify socket and sets a 1s watchdog, and checks READY=1 after the first
// sync over every source, pings about every 0.5s, none while the sync loop
// hangs, and pings again once it runs.
func TestNotifySystemdWatchdogFollowsSyncLoop(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "1000000")
	t.Setenv("WATCHDOG_PID", "")
	notes := make(chan notification, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			notes <- notification{msg: string(buf[:n]), at: time.Now()}
		}
	}()

	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := &gatedStore{DB: db}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	const period = 100 * time.Millisecond
	a, err := New(Config{NodeName: testNode, Runtime: runtimetest.New(clock.RealClock{}), Store: st, Logger: logger, SyncPeriod: period})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan SourceUpdate)
	var wg sync.WaitGroup
	wg.Go(func() { _ = a.Run(ctx, updates, []string{"file"}) })
	wg.Go(func() { NotifySystemd(ctx, a, logger) })
	defer func() {
		cancel()
		wg.Wait()
	}()

	next := func(within time.Duration) (notification, bool) {
		select {
		case n := <-notes:
			return n, true
		case <-time.After(within):
			return notification{}, false
		}
	}
	// Nothing, READY=1 included, until the source reported.
	if n, ok := next(600 * time.Millisecond); ok {
		t.Fatalf("%q before the source reported", n.msg)
	}
	updates <- SourceUpdate{Source: "file"}
	n, ok := next(2 * time.Second)
	if !ok || n.msg != "READY=1" {
		t.Fatalf("after the first sync: %q (received %v), want READY=1", n.msg, ok)
	}

	// Pings every half WATCHDOG_USEC.
	var pings []time.Time
	for len(pings) < 4 {
		n, ok := next(2 * time.Second)
		if !ok || n.msg != "WATCHDOG=1" {
			t.Fatalf("ping %d: %q (received %v), want WATCHDOG=1", len(pings)+1, n.msg, ok)
		}
		pings = append(pings, n.at)
	}
	for i := 1; i < len(pings); i++ {
		if gap := pings[i].Sub(pings[i-1]); gap < 350*time.Millisecond || gap > 750*time.Millisecond {
			t.Errorf("pings %v apart, want about 500ms", gap)
		}
	}

	// A hung sync loop: once Healthy notices, no more pings.
	release := st.hold()
	defer release()
	updates <- SourceUpdate{Source: "file"}
	waitFor(t, "the hung loop to be unhealthy", func() bool { return a.Healthy() != nil })
	// A ping already on its way when the check failed is not a failure.
	time.Sleep(50 * time.Millisecond)
	for len(notes) > 0 {
		<-notes
	}
	if n, ok := next(1500 * time.Millisecond); ok {
		t.Fatalf("%q while the sync loop hangs", n.msg)
	}

	release()
	n, ok = next(2 * time.Second)
	if !ok || !strings.HasPrefix(n.msg, "WATCHDOG=1") {
		t.Fatalf("after the loop resumed: %q (received %v), want WATCHDOG=1", n.msg, ok)
	}
}
