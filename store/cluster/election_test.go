package cluster_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/daemonlet/daemonlet/internal/etcdtest"
	"github.com/daemonlet/daemonlet/store/cluster"
)

// leaderLog checks that at most one elector leads at any time: each win
// increments leaders and each loss decrements it, and a win that finds
// another leader fails the test.
type leaderLog struct {
	t       *testing.T
	mu      sync.Mutex
	leaders int
	wins    []string
	// failed holds the campaign error that ended each follow, by elector.
	failed map[string]error
}

// follow campaigns with e until ctx ends or a campaign fails, recording
// each term. It never resigns: the test ends candidates by closing their
// stores, as a crash would.
func (l *leaderLog) follow(ctx context.Context, name string, e cluster.Elector) {
	for {
		if err := e.Campaign(ctx); err != nil {
			if ctx.Err() == nil {
				l.mu.Lock()
				l.failed[name] = err
				l.mu.Unlock()
			}
			return
		}
		l.mu.Lock()
		l.leaders++
		l.wins = append(l.wins, name)
		if l.leaders > 1 {
			l.t.Errorf("%s won while %d others lead", name, l.leaders-1)
		}
		l.mu.Unlock()
		select {
		case <-e.Leading():
		case <-ctx.Done():
			return
		}
		l.mu.Lock()
		l.leaders--
		l.mu.Unlock()
	}
}

// waitWins waits until n terms have been won and returns the winners.
func (l *leaderLog) waitWins(n int, within time.Duration) []string {
	l.t.Helper()
	deadline := time.Now().Add(within)
	for {
		l.mu.Lock()
		wins := append([]string(nil), l.wins...)
		l.mu.Unlock()
		if len(wins) >= n {
			return wins
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%d leadership terms within %s, want %d (winners %v)", len(wins), within, n, wins)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEtcdElection runs candidates on separate clients of a 3-member
// cluster: one leads; closing its client (its session dies without revoking
// the lease) hands leadership to another once the TTL expires; a Resign
// hands it over at once; and two never lead at the same time.
func TestEtcdElection(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	const ttl = 2 * time.Second
	ctx, cancel := context.WithCancel(t.Context())
	l := &leaderLog{t: t, failed: map[string]error{}}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	stores := map[string]*cluster.Etcd{}
	electors := map[string]*cluster.EtcdElector{}
	for _, name := range []string{"a", "b", "c"} {
		s, err := cluster.OpenEtcd(cluster.EtcdConfig{Endpoints: c.Endpoints(), Prefix: "/election"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() }) // a second Close does nothing
		stores[name] = s
		electors[name] = cluster.NewEtcdElector(s, name, ttl)
	}
	wg.Go(func() { l.follow(ctx, "a", electors["a"]) })
	first := l.waitWins(1, 10*time.Second)[0]
	if first != "a" {
		t.Fatalf("first leader %s, want a, the only candidate", first)
	}
	wg.Go(func() { l.follow(ctx, "b", electors["b"]) })
	wg.Go(func() { l.follow(ctx, "c", electors["c"]) })
	time.Sleep(500 * time.Millisecond)
	if wins := l.waitWins(1, 0); len(wins) != 1 {
		t.Fatalf("leadership changed without a failure: %v", wins)
	}

	killed := time.Now()
	if err := stores["a"].Close(); err != nil {
		t.Fatal(err)
	}
	second := l.waitWins(2, ttl+10*time.Second)[1]
	took := time.Since(killed)
	t.Logf("%s leads %s after a's client closed", second, took)
	if took < ttl/2 {
		t.Errorf("%s won %s after a's client closed, before a's lease (TTL %s) could expire", second, took, ttl)
	}

	resigned := time.Now()
	if err := electors[second].Resign(ctx); err != nil {
		t.Fatalf("resign: %v", err)
	}
	wins := l.waitWins(3, 10*time.Second)
	if took := time.Since(resigned); took >= ttl {
		t.Errorf("%s won %s after %s resigned, want no wait for the TTL", wins[2], took, second)
	}
	t.Logf("terms: %v", wins)
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, err := range l.failed {
		if name != "a" {
			t.Errorf("%s: campaign: %v", name, err)
		}
	}
}

func TestLocalElector(t *testing.T) {
	e := cluster.NewLocalElector()
	select {
	case <-e.Leading():
	default:
		t.Fatal("Leading() open before Campaign")
	}
	if err := e.Campaign(t.Context()); err != nil {
		t.Fatal(err)
	}
	leading := e.Leading()
	select {
	case <-leading:
		t.Fatal("Leading() closed right after Campaign")
	default:
	}
	if err := e.Resign(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-leading:
	default:
		t.Fatal("Leading() still open after Resign")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := e.Campaign(ctx); err == nil {
		t.Error("Campaign with an ended context succeeded")
	}
}
