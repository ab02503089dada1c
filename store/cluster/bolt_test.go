package cluster_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"

	"github.com/daemonlet/daemonlet/store"
	"github.com/daemonlet/daemonlet/store/cluster"
	"github.com/daemonlet/daemonlet/store/cluster/clustertest"
)

// openBolt opens a store at path and closes it when the test ends.
func openBolt(t testing.TB, path string, historyLimit int) *cluster.Bolt {
	t.Helper()
	s, err := cluster.OpenBolt(path, cluster.BoltOptions{
		HistoryLimit: historyLimit,
		Logger:       slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatalf("OpenBolt(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	clustertest.Run(t, func(t *testing.T) cluster.Store {
		return openBolt(t, filepath.Join(t.TempDir(), "cluster.db"), clustertest.HistoryLimit)
	})
}

func TestReopenKeepsDataRevisionAndHistory(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cluster.db")
	s := openBolt(t, path, 0)
	ra, err := s.Create(ctx, "/a", []byte("a1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "/b", []byte("b1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, "/a", []byte("a2"), ra); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Delete(ctx, "/b", 0); err != nil {
		t.Fatal(err)
	}
	rev := s.Revision()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openBolt(t, path, 0)
	if got := s.Revision(); got != rev {
		t.Errorf("Revision after reopen = %d, want %d", got, rev)
	}
	kvs, listRev, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 1 || kvs[0].Key != "/a" || string(kvs[0].Value) != "a2" || kvs[0].CreateRevision != ra || listRev != rev {
		t.Errorf("List after reopen = %+v at %d, want only /a=a2 created at %d, at revision %d", kvs, listRev, ra, rev)
	}
	ch, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for want := int64(1); want <= rev; want++ {
		select {
		case ev := <-ch:
			if ev.Revision != want {
				t.Fatalf("replay after reopen: revision %d, want %d", ev.Revision, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("replay after reopen: revision %d not received", want)
		}
	}
	next, err := s.Create(ctx, "/c", []byte("c"))
	if err != nil || next != rev+1 {
		t.Errorf("first write after reopen = revision %d, %v; want %d", next, err, rev+1)
	}
}

// readLayout returns the log revisions and the meta counters of a closed
// store file, read as doc.go draws them.
func readLayout(t *testing.T, path string) (logRevs []int64, meta map[string]string) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	meta = make(map[string]string)
	if err := bdb.View(func(tx *bolt.Tx) error {
		root := tx.Bucket([]byte("v1"))
		if err := root.Bucket([]byte("log")).ForEach(func(k, _ []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("log key %x is not 8 bytes", k)
			}
			logRevs = append(logRevs, int64(binary.BigEndian.Uint64(k)))
			return nil
		}); err != nil {
			return err
		}
		return root.Bucket([]byte("meta")).ForEach(func(k, v []byte) error {
			meta[string(k)] = string(v)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return logRevs, meta
}

func TestHistoryTrim(t *testing.T) {
	for _, tc := range []struct {
		limit, writes int
		wantCompacted int64
	}{
		// A limit of 8 trims one change per write once it holds 9.
		{limit: 8, writes: 20, wantCompacted: 12},
		// A limit of 16 trims 2 at a time once it holds 18: at 30 it drops
		// 13 and 14, and 31 is retained on top of the 16.
		{limit: 16, writes: 31, wantCompacted: 14},
		// Below the limit plus a batch, nothing is dropped.
		{limit: 16, writes: 17, wantCompacted: 0},
	} {
		t.Run(fmt.Sprintf("limit%d-writes%d", tc.limit, tc.writes), func(t *testing.T) {
			ctx := t.Context()
			path := filepath.Join(t.TempDir(), "cluster.db")
			s := openBolt(t, path, tc.limit)
			for i := range tc.writes {
				if _, err := s.Create(ctx, fmt.Sprintf("/k/%d", i), []byte("v")); err != nil {
					t.Fatal(err)
				}
			}
			if tc.wantCompacted > 0 {
				if _, err := s.Watch(ctx, "", tc.wantCompacted-1); !errors.Is(err, cluster.ErrCompacted) {
					t.Errorf("Watch from %d error = %v, want ErrCompacted", tc.wantCompacted-1, err)
				}
			}
			if _, err := s.Watch(ctx, "", tc.wantCompacted); err != nil {
				t.Errorf("Watch from the compacted revision %d: %v", tc.wantCompacted, err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			logRevs, meta := readLayout(t, path)
			if got, want := meta["compactedRevision"], strconv.FormatInt(tc.wantCompacted, 10); got != want {
				t.Errorf("meta compactedRevision = %q, want %q", got, want)
			}
			if got, want := meta["revision"], strconv.Itoa(tc.writes); got != want {
				t.Errorf("meta revision = %q, want %q", got, want)
			}
			if got, want := meta["version"], "1"; got != want {
				t.Errorf("meta version = %q, want %q", got, want)
			}
			if want := int64(tc.writes) - tc.wantCompacted; int64(len(logRevs)) != want ||
				logRevs[0] != tc.wantCompacted+1 || logRevs[len(logRevs)-1] != int64(tc.writes) {
				t.Errorf("log holds revisions %v, want %d..%d", logRevs, tc.wantCompacted+1, tc.writes)
			}
		})
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.db")
	openBolt(t, path, 0)
	s, err := cluster.OpenBolt(path, cluster.BoltOptions{LockTimeout: 50 * time.Millisecond})
	if !errdefs.IsUnavailable(err) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("second OpenBolt error = %v, want Unavailable", err)
	}
}

func TestOpenRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "foreign.db")
	bdb, err := bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("theirs"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := bdb.Close(); err != nil {
		t.Fatal(err)
	}

	agent := filepath.Join(dir, "agent.db")
	db, err := store.Open(agent, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, path string
		want       func(error) bool
	}{
		{"another program's bbolt file", foreign, errdefs.IsFailedPrecondition},
		{"the agent's state file", agent, errdefs.IsFailedPrecondition},
		{"not a bbolt file", garbage, errdefs.IsDataLoss},
		{"empty path", "", errdefs.IsInvalidArgument},
	} {
		s, err := cluster.OpenBolt(tc.path, cluster.BoltOptions{})
		if !tc.want(err) {
			if err == nil {
				s.Close()
			}
			t.Errorf("%s: OpenBolt error = %v, want another class", tc.name, err)
		}
	}
	if _, err := cluster.OpenBolt(filepath.Join(dir, "x.db"), cluster.BoltOptions{HistoryLimit: -1}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("negative HistoryLimit: OpenBolt error = %v, want InvalidArgument", err)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.db")
	if err := openBolt(t, path, 0).Close(); err != nil {
		t.Fatal(err)
	}
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("v1")).Bucket([]byte("meta")).Put([]byte("version"), []byte("99"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := bdb.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := cluster.OpenBolt(path, cluster.BoltOptions{})
	if !errdefs.IsFailedPrecondition(err) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("OpenBolt of schema 99 error = %v, want FailedPrecondition", err)
	}
}

func TestCloseEndsWatchers(t *testing.T) {
	ctx := t.Context()
	s := openBolt(t, filepath.Join(t.TempDir(), "cluster.db"), 0)
	for i := range 2 * 1024 {
		if _, err := s.Create(ctx, fmt.Sprintf("/k/%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	live, err := s.Watch(ctx, "", s.Revision())
	if err != nil {
		t.Fatal(err)
	}
	// Unread, this one's replay goroutine is blocked on its full channel.
	replaying, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]<-chan cluster.Event{"live": live, "replaying": replaying} {
		closed := false
		for !closed {
			select {
			case _, ok := <-ch:
				closed = !ok
			case <-time.After(10 * time.Second):
				t.Fatalf("%s watcher not closed by Close", name)
			}
		}
	}
	if _, err := s.Watch(ctx, "", 0); !errdefs.IsUnavailable(err) {
		t.Errorf("Watch after Close error = %v, want Unavailable", err)
	}
	if _, err := s.Get(ctx, "/k/1"); !errdefs.IsUnavailable(err) {
		t.Errorf("Get after Close error = %v, want Unavailable", err)
	}
	if _, err := s.Create(ctx, "/new", nil); !errdefs.IsUnavailable(err) {
		t.Errorf("Create after Close error = %v, want Unavailable", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestSlowReplayingWatcherResumes closes a watcher that neither reads its
// replay nor keeps up with the live changes queued meanwhile, and resumes it
// from the last revision it received.
func TestSlowReplayingWatcherResumes(t *testing.T) {
	ctx := t.Context()
	s := openBolt(t, filepath.Join(t.TempDir(), "cluster.db"), 0)
	write := func(n int) {
		for range n {
			if _, err := s.Update(ctx, "/k", []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.Create(ctx, "/k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	write(1100)
	ch, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	write(1100)
	// The watcher holds at most 1024 events and 1024 queued ones, so it is
	// closed before the 2201st; it then re-watches once from the last
	// revision it received and must get the rest, with no gap.
	next, resumes := int64(1), 0
	for next <= s.Revision() {
		select {
		case ev, ok := <-ch:
			switch {
			case !ok && resumes > 0:
				t.Fatalf("resumed watcher closed at revision %d", next)
			case !ok:
				resumes++
				if ch, err = s.Watch(ctx, "", next-1); err != nil {
					t.Fatalf("re-watch from %d: %v", next-1, err)
				}
			case ev.Revision != next:
				t.Fatalf("received revision %d, want %d", ev.Revision, next)
			default:
				next++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("revision %d not received", next)
		}
	}
	if resumes != 1 {
		t.Error("the slow watcher was never closed")
	}
}

func BenchmarkCreate(b *testing.B) {
	ctx := b.Context()
	s := openBolt(b, filepath.Join(b.TempDir(), "cluster.db"), 0)
	value := make([]byte, 2048)
	b.SetBytes(int64(len(value)))
	for i := 0; b.Loop(); i++ {
		if _, err := s.Create(ctx, fmt.Sprintf("/pods/default/p-%d", i), value); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWatchFanout measures one write reaching 1000 watchers: the time
// from the write's start until every watcher has received its event.
func BenchmarkWatchFanout(b *testing.B) {
	const watchers = 1000
	ctx, cancel := context.WithCancel(b.Context())
	s := openBolt(b, filepath.Join(b.TempDir(), "cluster.db"), 0)
	if _, err := s.Create(ctx, "/nodes/n", []byte("v")); err != nil {
		b.Fatal(err)
	}
	var (
		received sync.WaitGroup
		readers  sync.WaitGroup
	)
	for range watchers {
		ch, err := s.Watch(ctx, "/nodes/", s.Revision())
		if err != nil {
			b.Fatal(err)
		}
		readers.Go(func() {
			for range ch {
				received.Done()
			}
		})
	}
	value := make([]byte, 2048)
	for b.Loop() {
		received.Add(watchers)
		if _, err := s.Update(ctx, "/nodes/n", value, 0); err != nil {
			b.Fatal(err)
		}
		received.Wait()
	}
	cancel()
	readers.Wait()
}
