package agent

// Figure 5 of make bench, sync cost: one pass of the agent's sync loop
// that changes nothing, with 100 DaemonSets known and 20 pods running.

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/yaml"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/bench"
	"github.com/daemonlet/daemonlet/runtime/runtimetest"
	"github.com/daemonlet/daemonlet/store"
)

const (
	// syncBenchDaemonSets is how many DaemonSets the agent knows.
	syncBenchDaemonSets = 100
	// syncBenchRunning is how many of them run a pod on the node; the
	// others select nodes labelled otherwise.
	syncBenchRunning = 20
)

// syncBenchSet is the source's set: syncBenchDaemonSets DaemonSets of one
// container, of which only the first syncBenchRunning fit the node.
func syncBenchSet() []*appsv1.DaemonSet {
	set := make([]*appsv1.DaemonSet, 0, syncBenchDaemonSets)
	for i := range syncBenchDaemonSets {
		ds := daemonSet(fmt.Sprintf("ds-%03d", i), ctr("app", "img"))
		if i >= syncBenchRunning {
			ds.Spec.Template.Spec.NodeSelector = map[string]string{"bench.daemonlet.io/pool": "elsewhere"}
		}
		set = append(set, ds)
	}
	return set
}

// startSyncBenchAgent runs an agent on the fake runtime and a bbolt store
// with syncBenchSet delivered, waits until its pods run, and returns it
// with the context its sync passes take. The agent's own loop stays
// idle: its periodic resync is an hour away and nothing rings it.
func startSyncBenchAgent(tb testing.TB) (*Agent, context.Context) {
	tb.Helper()
	db, err := store.Open(filepath.Join(tb.TempDir(), "state.db"), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	rt := runtimetest.New(clock.RealClock{})
	a, err := New(Config{
		NodeName: testNode, Node: api.NewNode(testNode, nil, nil), Runtime: rt, Store: db,
		Logger:     slog.New(slog.DiscardHandler),
		SyncPeriod: time.Hour,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan SourceUpdate)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, updates, []string{"file"}) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	select {
	case updates <- SourceUpdate{Source: "file", DaemonSets: syncBenchSet()}:
	case <-time.After(30 * time.Second):
		tb.Fatal("agent does not take the update")
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		running := 0
		pods := a.Pods()
		for _, p := range pods {
			if isRunning(p) {
				running++
			}
		}
		if running == syncBenchRunning && len(pods) == syncBenchRunning {
			return a, ctx
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d pods, %d running; want %d running", len(pods), running, syncBenchRunning)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkSyncNoChange times one sync pass (Agent.sync, what the loop
// runs after every source update, doorbell and resync) that finds
// nothing to start, update or stop.
func BenchmarkSyncNoChange(b *testing.B) {
	a, ctx := startSyncBenchAgent(b)
	before := len(a.Pods())
	b.ReportAllocs()
	for b.Loop() {
		a.sync(ctx)
	}
	b.StopTimer()
	if after := len(a.Pods()); after != before {
		b.Fatalf("a pass that should change nothing went from %d to %d pods", before, after)
	}
}

// syncBenchManifest is syncBenchSet as one YAML manifest of 100 documents.
func syncBenchManifest(tb testing.TB) []byte {
	tb.Helper()
	var docs []string
	for _, ds := range syncBenchSet() {
		ds.APIVersion, ds.Kind = "apps/v1", "DaemonSet"
		b, err := yaml.Marshal(ds)
		if err != nil {
			tb.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	return []byte(strings.Join(docs, "---\n"))
}

// TestBenchSyncCost records figure 5 (make bench): BenchmarkSyncNoChange's
// ns/op and allocs/op. The reference is decoding and validating the same
// 100 DaemonSets from one YAML manifest (api.DecodeAndValidate), the work
// the file source does once per change of the folder: it puts the cost of
// the pass that runs on every wake-up next to the cost of reading its input.
// Under make test both run briefly (testing.Benchmark's own sizing, with a
// small benchtime) and the test checks that they produced sane numbers.
func TestBenchSyncCost(t *testing.T) {
	if !bench.Full() {
		// testing.Benchmark sizes its runs by -test.benchtime (1 s by
		// default); a smoke run needs a handful of iterations only.
		f := flag.Lookup("test.benchtime")
		old := f.Value.String()
		if err := f.Value.Set("20x"); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = f.Value.Set(old) }()
	}
	manifest := syncBenchManifest(t)
	res := testing.Benchmark(BenchmarkSyncNoChange)
	ref := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			objs, err := api.DecodeAndValidate("bench", manifest)
			if err != nil || len(objs) != syncBenchDaemonSets {
				b.Fatalf("decoded %d objects: %v", len(objs), err)
			}
		}
	})
	if res.N == 0 || res.T <= 0 || ref.N == 0 || ref.T <= 0 {
		t.Fatalf("a benchmark did not run (it failed; see its log): sync %v, reference %v", res, ref)
	}
	nsPerOp := float64(res.NsPerOp())
	cond := fmt.Sprintf("Agent.sync on the fake runtime and bbolt, %d DaemonSets known, %d pods running, %d passes, %d allocs/op, %d B/op; reference: api.DecodeAndValidate of the same %d DaemonSets as one YAML manifest (%d allocs/op); %d CPUs shared",
		syncBenchDaemonSets, syncBenchRunning, res.N, res.AllocsPerOp(), res.AllocedBytesPerOp(), syncBenchDaemonSets, ref.AllocsPerOp(), runtime.NumCPU())
	bench.Record(t, bench.Figure{
		Name: "sync-cost", Value: nsPerOp / 1e6, Unit: "ms",
		Reference: float64(ref.NsPerOp()) / 1e6, ReferenceName: "decode+validate 100 DaemonSets",
		Target: "< 1 ms", Met: nsPerOp < 1e6, Conditions: cond,
	})
}
