package bench_test

// Helpers of the fleet figures (propagation, server footprint, HA
// propagation): applying a change, timing when every agent and every
// reference watcher has seen it, and the light agents of the footprint.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/daemonlet/daemonlet/agent"
	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
	"github.com/daemonlet/daemonlet/bench"
	"github.com/daemonlet/daemonlet/internal/fleetsim"
)

// propagationDS is the DaemonSet whose template the propagation figures
// change: no node carries its nodeSelector's label, so a change is a pure
// propagation (the agents put it in their desired state and run nothing),
// neither gated by a rolling update's budget nor followed by a fleet of
// pod replacements and status writes that would load the next apply.
func propagationDS() *appsv1.DaemonSet {
	ds := fleetsim.NewDaemonSet("default", "propagation", "example.com/propagation:1")
	ds.Spec.Template.Spec.NodeSelector = map[string]string{"bench.daemonlet.io/propagation": "nowhere"}
	return ds
}

// propagationTimeout bounds the wait for one change to reach everyone.
const propagationTimeout = 60 * time.Second

// applyPause separates an apply from the previous one's aftermath (the
// status controller's write of the DaemonSet, which the agents' sources
// also coalesce), so that each apply meets a quiet fleet.
var applyPause = bench.Pick(time.Second, 300*time.Millisecond)

// seenLog gathers, per generation of propagationDS, when each agent was
// handed it (fleetsim's EventSeen); its observe is the fleet's OnEvent.
// Generations, not revisions, key it: the watchers and light agents then
// need not hash every template they receive, and one apply is one
// generation.
type seenLog struct {
	mu     sync.Mutex
	byGen  map[int64]map[string]time.Time // generation → node → first seen
	notify chan struct{}                  // rung on every new sighting; capacity 1
}

func newSeenLog() *seenLog {
	return &seenLog{byGen: map[int64]map[string]time.Time{}, notify: make(chan struct{}, 1)}
}

func (l *seenLog) observe(e fleetsim.Event) {
	if e.Kind != fleetsim.EventSeen || e.Pod.Name != "propagation" {
		return
	}
	l.mu.Lock()
	m := l.byGen[e.Generation]
	if m == nil {
		m = map[string]time.Time{}
		l.byGen[e.Generation] = m
	}
	if _, ok := m[e.Pod.Node]; !ok {
		m[e.Pod.Node] = e.Time
	}
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

// wait returns when n agents have seen generation gen, or false at the
// deadline.
func (l *seenLog) wait(gen int64, n int, deadline time.Time) bool {
	for {
		l.mu.Lock()
		got := len(l.byGen[gen])
		l.mu.Unlock()
		if got >= n {
			return true
		}
		select {
		case <-l.notify:
		case <-time.After(time.Until(deadline)):
			return false
		}
	}
}

// since is how long after t0 every agent saw generation gen.
func (l *seenLog) since(gen int64, t0 time.Time) []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]time.Duration, 0, len(l.byGen[gen]))
	for _, at := range l.byGen[gen] {
		out = append(out, at.Sub(t0))
	}
	return out
}

// watcherSet is the reference: plain api/client watches of DaemonSets,
// each noting when it first received each revision of propagationDS.
type watcherSet struct {
	watchers []*client.Watcher[appsv1.DaemonSet]
	wg       sync.WaitGroup
	log      *seenLog
}

// watchersPerClient keeps each reference client's watches on one HTTP/2
// connection, under the server's default limit of concurrent streams.
const watchersPerClient = 200

// startWatchers opens n DaemonSet watches from the current resourceVersion,
// watchersPerClient per client of the given servers.
func startWatchers(t testing.TB, urls []string, caFile string, n int) *watcherSet {
	t.Helper()
	ctx := context.Background()
	ws := &watcherSet{log: newSeenLog()}
	t.Cleanup(ws.stop)
	var c *client.Client
	var rv string
	for i := range n {
		if i%watchersPerClient == 0 {
			var err error
			c, err = client.New(client.Config{Servers: urls, Token: fleetsim.AdminToken, CAFile: caFile, UserAgent: "bench-watcher"})
			if err != nil {
				t.Fatal(err)
			}
			list, err := c.DaemonSets("").List(ctx, client.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rv = list.ResourceVersion
		}
		w, err := c.DaemonSets("").Watch(ctx, client.ListOptions{ResourceVersion: rv})
		if err != nil {
			t.Fatalf("watcher %d: %v", i, err)
		}
		ws.watchers = append(ws.watchers, w)
		node := fmt.Sprintf("watcher-%d", i)
		ws.wg.Go(func() {
			for ev := range w.Events() {
				if ev.Type == watch.Bookmark || ev.Object.Name != "propagation" {
					continue
				}
				ws.log.observe(fleetsim.Event{Time: time.Now(), Kind: fleetsim.EventSeen, Pod: fleetsim.Pod{Node: node, Name: ev.Object.Name}, Generation: ev.Object.Generation})
			}
		})
	}
	return ws
}

func (ws *watcherSet) stop() {
	for _, w := range ws.watchers {
		w.Stop()
	}
	ws.wg.Wait()
	ws.watchers = nil
}

// propagationRun is the outcome of timing several applies.
type propagationRun struct {
	agents, watchers []time.Duration
}

// timeApplies changes propagationDS's template `applies` times through
// admin and times, from each apply's request, when each of nAgents agents,
// and each reference watcher, saw the new revision. The DaemonSet must exist and
// have been seen already.
func timeApplies(t testing.TB, admin *client.Client, nAgents int, agents *seenLog, refs *watcherSet, applies int) propagationRun {
	t.Helper()
	ctx := context.Background()
	nRefs := 0
	if refs != nil {
		nRefs = len(refs.watchers)
	}
	var run propagationRun
	for i := range applies {
		time.Sleep(applyPause)
		var t0 time.Time
		ds, err := fleetsim.UpdateDaemonSetWith(ctx, admin, "default", "propagation", func(ds *appsv1.DaemonSet) {
			if ds.Spec.Template.Annotations == nil {
				ds.Spec.Template.Annotations = map[string]string{}
			}
			ds.Spec.Template.Annotations["bench.daemonlet.io/apply"] = fmt.Sprintf("%d-%d", time.Now().UnixNano(), i)
			// The clock starts as the update is sent (after the read of
			// the current object): it includes the server's write.
			t0 = time.Now()
		})
		if err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
		gen := ds.Generation
		deadline := time.Now().Add(propagationTimeout)
		if !agents.wait(gen, nAgents, deadline) {
			t.Fatalf("apply %d: only %d of %d agents saw generation %d within %v", i, len(agents.since(gen, t0)), nAgents, gen, propagationTimeout)
		}
		if refs != nil && !refs.log.wait(gen, nRefs, deadline) {
			t.Fatalf("apply %d: only %d of %d watchers saw generation %d within %v", i, len(refs.log.since(gen, t0)), nRefs, gen, propagationTimeout)
		}
		run.agents = append(run.agents, agents.since(gen, t0)...)
		if refs != nil {
			run.watchers = append(run.watchers, refs.log.since(gen, t0)...)
		}
	}
	checkDurations(t, "agents", run.agents)
	checkDurations(t, "watchers", run.watchers)
	return run
}

// checkDurations fails the test on a propagation time that cannot be: one
// before the apply was sent or beyond the wait's bound.
func checkDurations(t testing.TB, who string, ds []time.Duration) {
	t.Helper()
	for _, d := range ds {
		if d <= 0 || d > propagationTimeout {
			t.Fatalf("%s: propagation time %v out of (0, %v]", who, d, propagationTimeout)
		}
	}
}

// createPropagationDS creates propagationDS and waits until nAgents agents
// and every watcher have seen it, so that the timed applies start from a settled
// fleet.
func createPropagationDS(t testing.TB, admin *client.Client, nAgents int, agents *seenLog, refs *watcherSet) {
	t.Helper()
	ds, err := admin.DaemonSets("default").Create(context.Background(), propagationDS(), client.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(propagationTimeout)
	if !agents.wait(ds.Generation, nAgents, deadline) {
		t.Fatal("not every agent saw the new DaemonSet")
	}
	if refs != nil && !refs.log.wait(ds.Generation, len(refs.watchers), deadline) {
		t.Fatal("not every watcher saw the new DaemonSet")
	}
}

// quantiles are the p50, p99 and max of durations, in seconds.
func quantiles(ds []time.Duration) (p50, p99, max float64) {
	s := bench.Seconds(ds)
	return bench.Quantile(s, 0.50), bench.Quantile(s, 0.99), bench.Quantile(s, 1)
}

// agentsDir is a folder for thousands of agents' stores: on /dev/shm when
// there is one (see fleetsim.Config.Dir), removed when the test ends.
func agentsDir(t testing.TB) string {
	t.Helper()
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "daemonlet-bench-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	return dir
}

// requireFiles fails the test, with the reason, when the process may not
// open n more files (sockets included).
func requireFiles(t testing.TB, n int) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		// Go raises the soft limit at start; this covers a build that
		// does not.
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("raise RLIMIT_NOFILE: %v", err)
		}
	}
	if uint64(n) > lim.Cur {
		t.Fatalf("this figure needs about %d open files; RLIMIT_NOFILE is %d (raise the hard limit: ulimit -Hn)", n, lim.Cur)
	}
}

// lightFleet is N light agents: per node, what a server sees of an agent
// without the agent itself. Each has its own client (its node's token,
// one HTTP/2 connection) and runs the agent's own ServerSource (list and
// watch of DaemonSets and of the node's pods, coalesced into sets) and,
// with a heartbeat period, registers its Node and posts its status with
// the client calls agent.NodeSync makes (Nodes().Create, then
// Nodes().UpdateStatus every period). They leave out NodeSync's watch of
// the Node, whose list by metadata.name costs the server a decode of every
// Node (see the report), and everything the agent does after its source.
type lightFleet struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startLightFleet starts n light agents against the servers and returns
// once every one has delivered its first set. Every set's revision of
// propagationDS is noted in seen (as fleetsim's EventSeen: the moment the
// set leaves the source). The test's cleanup stops them.
func startLightFleet(t testing.TB, urls []string, caFile string, n int, heartbeat time.Duration, seen *seenLog) *lightFleet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	lf := &lightFleet{cancel: cancel}
	t.Cleanup(lf.stop)
	discard := slog.New(slog.DiscardHandler)
	delivered := make(chan struct{}, n)
	for i := range n {
		name := fleetsim.NodeName(i)
		c, err := client.New(client.Config{Servers: urls, Token: fleetsim.NodeToken(name), CAFile: caFile, UserAgent: "bench-light-agent"})
		if err != nil {
			t.Fatal(err)
		}
		if heartbeat > 0 {
			since := metav1.Now()
			if _, err := c.Nodes().Create(ctx, lightNode(name, since), client.WriteOptions{}); err != nil {
				t.Fatalf("register %s: %v", name, err)
			}
			lf.wg.Go(func() { lightHeartbeat(ctx, c, name, since, heartbeat) })
		}
		source := agent.NewServerSource(agent.ServerSourceConfig{Client: c, NodeName: name, Logger: discard})
		updates := make(chan agent.SourceUpdate)
		lf.wg.Go(func() { source.Run(ctx, updates) })
		lf.wg.Go(func() {
			first := true
			for {
				select {
				case <-ctx.Done():
					return
				case u := <-updates:
					now := time.Now()
					for _, ds := range u.DaemonSets {
						seen.observe(fleetsim.Event{Time: now, Kind: fleetsim.EventSeen, Pod: fleetsim.Pod{Node: name, Name: ds.Name}, Generation: ds.Generation})
					}
					if first && u.Err == nil {
						delivered <- struct{}{}
						first = false
					}
				}
			}
		})
	}
	deadline := time.After(5 * time.Minute)
	for i := range n {
		select {
		case <-delivered:
		case <-deadline:
			t.Fatalf("%d of %d light agents synced after 5 minutes", i, n)
		}
	}
	return lf
}

func (lf *lightFleet) stop() {
	lf.cancel()
	lf.wg.Wait()
}

// lightNode is the Node a light agent registers and heartbeats: the
// well-known labels and a Ready condition, ready since since, with a
// heartbeat of now; as agent.NodeSync's, only the heartbeat time changes
// from one post to the next.
func lightNode(name string, since metav1.Time) *corev1.Node {
	node := api.NewNode(name, nil, nil)
	node.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: since,
			Reason: "KubeletReady", Message: "bench light agent",
		}},
		NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "daemonlet/bench", ContainerRuntimeVersion: "fake://"},
	}
	return node
}

// lightHeartbeat posts the node's status every period, unconditionally,
// as agent.NodeSync's heartbeat does.
func lightHeartbeat(ctx context.Context, c *client.Client, name string, since metav1.Time, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: lightNode(name, since).Status}
		// A failed heartbeat is retried at the next tick, as the agent's.
		_, _ = c.Nodes().UpdateStatus(ctx, obj)
	}
}

// tokenFile writes fleetsim's --token-auth-file for n nodes into dir.
func tokenFile(t testing.TB, dir string, n int) string {
	t.Helper()
	p := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(p, []byte(fleetsim.Tokens(n)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
