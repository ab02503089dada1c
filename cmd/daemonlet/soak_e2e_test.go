package main

// The long fault loops (issue 9). Under make test they run a few rounds,
// under make soak (DAEMONLET_SOAK=1) the full length.

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// soak returns full under make soak and quick otherwise.
func soak[T any](quick, full T) T {
	if os.Getenv("DAEMONLET_SOAK") != "" {
		return full
	}
	return quick
}

// soakRNG is a random source whose seed the test logs, so that a failing
// sequence can be replayed with DAEMONLET_SOAK_SEED.
func soakRNG(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DAEMONLET_SOAK_SEED"); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatalf("DAEMONLET_SOAK_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (DAEMONLET_SOAK_SEED replays it)", seed)
	return rand.New(rand.NewPCG(seed, seed))
}

// manifestSet is the node's --pod-manifest-path as the loop changes it:
// each DaemonSet's generation, 0 when it has no manifest.
type manifestSet struct {
	t   *testing.T
	n   *node
	gen map[string]int
	rev map[string]string
}

// change applies one random change: creates an absent DaemonSet, or
// updates (two times in three) or deletes a present one. Files are
// replaced by rename, as an operator's tooling should, so that the agent
// never reads half a manifest.
func (m *manifestSet) change(rng *rand.Rand) string {
	names := []string{"soak-a", "soak-b", "soak-c"}
	name := names[rng.IntN(len(names))]
	path := filepath.Join(m.n.manifests, name+".yaml")
	if m.gen[name] > 0 && rng.IntN(3) == 0 {
		if err := os.Remove(path); err != nil {
			m.t.Fatal(err)
		}
		delete(m.gen, name)
		delete(m.rev, name)
		return "delete " + name
	}
	m.gen[name]++
	manifest := soakDS(name, m.gen[name])
	tmp := filepath.Join(m.n.manifests, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(manifest), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		m.t.Fatal(err)
	}
	m.rev[name] = revisionOf(m.t, manifest)
	return fmt.Sprintf("apply %s generation %d", name, m.gen[name])
}

// TestSoakCrashConsistency kills the agent with SIGKILL at random moments
// while DaemonSets are created, updated and deleted under it, and after
// each restart checks the node: exactly the desired pods run, each once,
// nothing of any other pod is left anywhere, and the bbolt file the
// killed agent left passes bbolt's consistency check.
func TestSoakCrashConsistency(t *testing.T) {
	rounds := soak(3, 100)
	rng := soakRNG(t)
	n := newNode(t, "")
	m := &manifestSet{t: t, n: n, gen: map[string]int{}, rev: map[string]string{}}
	inv := newInvariants(n)
	n.start()
	started := time.Now()
	for round := range rounds {
		var ops []string
		for range 1 + rng.IntN(3) {
			ops = append(ops, m.change(rng))
		}
		// The agent is reading, starting, stopping or persisting when
		// the kill comes; from 0 ms it may still be starting up.
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		n.kill9()
		checkStateDB(t, n)
		if rng.IntN(2) == 0 {
			ops = append(ops, m.change(rng)+" (agent down)")
		}
		n.start()
		waitUntil(t, 90*time.Second, fmt.Sprintf("round %d (%v) to converge on %v", round, ops, m.gen), func() error {
			return inv.converged(m.rev)
		})
	}
	t.Logf("%d rounds in %v", rounds, time.Since(started).Round(time.Second))
	for _, name := range slices.Sorted(maps.Keys(m.gen)) {
		if err := os.Remove(filepath.Join(n.manifests, name+".yaml")); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 60*time.Second, "every pod to go", func() error { return inv.converged(map[string]string{}) })
}

// TestSoakServerAway stops the server for a while under a running agent
// (10 s under make test, 2 minutes under make soak): the pods keep
// running untouched, the agent reports the server unreachable, and when
// the server is back the node resyncs and runs a DaemonSet applied then.
func TestSoakServerAway(t *testing.T) {
	away := soak(10*time.Second, 2*time.Minute)
	s, n, inv, want := runningFirst(t, "away-node")
	s.waitDS("default", "first", 1, 1, 1)
	before := n.runningByPod()

	s.stop(syscall.SIGKILL)
	gone := time.Now()
	waitUntil(t, 30*time.Second, "the agent to report the server unreachable", func() error {
		_, msg, err := serverSource(n)
		if err == nil && msg == "" {
			return fmt.Errorf("no error reported")
		}
		return err
	})
	for time.Since(gone) < away {
		time.Sleep(time.Second)
		if err := inv.converged(want); err != nil {
			t.Fatalf("%v after the server went away: %v", time.Since(gone).Round(time.Second), err)
		}
	}
	assertUntouched(t, "with the server away", before, n.runningByPod())

	s.start()
	waitUntil(t, 60*time.Second, "the agent to reconnect", func() error {
		if _, msg, err := serverSource(n); err != nil || msg != "" {
			return fmt.Errorf("source error %q (%v)", msg, err)
		}
		return nil
	})
	second := soakDS("second", 1)
	applyDS(t, s, second)
	want["second"] = revisionOf(t, second)
	waitUntil(t, 60*time.Second, "the DaemonSet applied after the server returned", func() error { return inv.converged(want) })
	s.waitDS("default", "first", 1, 1, 1)
	s.waitDS("default", "second", 1, 1, 1)
	assertUntouched(t, "after the server returned", before, n.runningByPod())
}
