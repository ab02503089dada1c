package agent

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/runtime"
	"github.com/daemonlet/daemonlet/runtime/runtimetest"
	"github.com/daemonlet/daemonlet/store"
)

func TestCrashBackOffSequence(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var prev time.Duration
	var got []time.Duration
	for range 9 {
		started := t0
		finished := started.Add(time.Second)
		restartAt, next := crashBackOff(prev, started, finished)
		got = append(got, restartAt.Sub(finished))
		prev = next
		t0 = restartAt
	}
	want := []time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 300 * time.Second, 300 * time.Second, 300 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("delays = %v, want %v", got, want)
	}
	// A container that ran for more than 10 minutes starts over.
	restartAt, next := crashBackOff(300*time.Second, t0, t0.Add(11*time.Minute))
	if !restartAt.Equal(t0.Add(11*time.Minute)) || next != 10*time.Second {
		t.Fatalf("after a long run: restart in %v, next %v", restartAt.Sub(t0.Add(11*time.Minute)), next)
	}
	// Exactly 10 minutes is not more than 10 minutes.
	if restartAt, _ := crashBackOff(40*time.Second, t0, t0.Add(10*time.Minute)); restartAt.Sub(t0.Add(10*time.Minute)) != 40*time.Second {
		t.Fatalf("10 minutes reset the back-off")
	}
}

func TestPullBackOffSequence(t *testing.T) {
	var d time.Duration
	var got []time.Duration
	for range 7 {
		d = nextPullBackOff(d)
		got = append(got, d)
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 300 * time.Second, 300 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("delays = %v, want %v", got, want)
	}
}

func TestComputePodActions(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	spec := &corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "init1", Image: "i"}, {Name: "init2", Image: "i"}},
		Containers:     []corev1.Container{{Name: "a", Image: "x"}, {Name: "b", Image: "y"}},
	}
	hash := func(name string) string {
		for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
			for i := range cs {
				if cs[i].Name == name {
					return runtime.ContainerSpecHash(&cs[i])
				}
			}
		}
		return "other"
	}
	c := func(name string, attempt int, state runtime.ContainerState, code int32) runtime.Container {
		return runtime.Container{
			ID: fmt.Sprintf("%s-%d", name, attempt), Name: name, Attempt: attempt, State: state, ExitCode: code,
			Init: name == "init1" || name == "init2", SpecHash: hash(name),
			StartedAt: now.Add(-time.Minute), FinishedAt: now.Add(-5 * time.Second),
		}
	}
	tests := []struct {
		name     string
		observed []runtime.Container
		recs     map[string]store.ContainerRecord
		want     string
	}{
		{name: "nothing yet: first init container", want: "start=init:init1#0"},
		{name: "init running: wait", observed: []runtime.Container{c("init1", 0, runtime.StateRunning, 0)}, want: "in sync"},
		{name: "init done: next init",
			observed: []runtime.Container{c("init1", 0, runtime.StateExited, 0)},
			want:     "start=init:init2#0"},
		{name: "init failed once: immediate restart",
			observed: []runtime.Container{c("init1", 0, runtime.StateExited, 1)},
			want:     "start=init:init1#1"},
		{name: "init failed again: back-off",
			observed: []runtime.Container{c("init1", 1, runtime.StateExited, 1)},
			recs:     map[string]store.ContainerRecord{"init1": {RestartCount: 1, BackOff: 10 * time.Second}},
			want:     "wait=init1@2025-01-01T12:00:05Z"},
		{name: "all init done: app containers in order",
			observed: []runtime.Container{c("init1", 0, runtime.StateExited, 0), c("init2", 0, runtime.StateExited, 0)},
			want:     "start=a#0,b#0"},
		{name: "app container exists: init phase over even without init containers",
			observed: []runtime.Container{c("a", 0, runtime.StateRunning, 0)},
			want:     "start=b#0"},
		{name: "created but not started: start it",
			observed: []runtime.Container{c("a", 0, runtime.StateRunning, 0), c("b", 2, runtime.StateCreated, 0)},
			want:     "start=b#2(created)"},
		{name: "superseded attempts removed, running one killed",
			observed: []runtime.Container{
				c("a", 0, runtime.StateExited, 1), c("a", 1, runtime.StateRunning, 0),
				c("b", 0, runtime.StateRunning, 0), c("b", 1, runtime.StateRunning, 0)},
			want: "kill=b-0 remove=a-0"},
		{name: "unknown container and changed spec killed",
			observed: []runtime.Container{
				{ID: "gone-0", Name: "gone", State: runtime.StateRunning},
				{ID: "a-0", Name: "a", SpecHash: "old", State: runtime.StateRunning},
				c("b", 0, runtime.StateRunning, 0)},
			want: "kill=gone-0,a-0 start=a#0"},
		{name: "record knows earlier attempts whose containers are gone",
			observed: []runtime.Container{c("b", 0, runtime.StateRunning, 0)},
			recs:     map[string]store.ContainerRecord{"a": {RestartCount: 4, LastFinishedAt: now.Add(-time.Hour)}},
			want:     "start=a#5"},
		{name: "back-off elapsed: restart",
			observed: []runtime.Container{c("a", 3, runtime.StateExited, 2), c("b", 0, runtime.StateRunning, 0)},
			recs:     map[string]store.ContainerRecord{"a": {RestartCount: 3, BackOff: 5 * time.Second}},
			want:     "start=a#4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := computePodActions("default/p", spec, tt.observed, tt.recs, now)
			if got.String() != tt.want {
				t.Fatalf("got %q, want %q", got.String(), tt.want)
			}
		})
	}
}

func TestComputePodActionsRecordsTheNextAttempt(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	spec := &corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "x"}}}
	exited := runtime.Container{
		ID: "a-2", Name: "a", Attempt: 2, State: runtime.StateExited, ExitCode: 137,
		SpecHash:  runtime.ContainerSpecHash(&spec.Containers[0]),
		StartedAt: now.Add(-time.Minute), FinishedAt: now.Add(-30 * time.Second),
	}
	acts := computePodActions("default/p", spec, []runtime.Container{exited},
		map[string]store.ContainerRecord{"a": {RestartCount: 2, BackOff: 20 * time.Second}}, now)
	if len(acts.Start) != 1 {
		t.Fatalf("actions %v, want one start", acts)
	}
	want := store.ContainerRecord{RestartCount: 3, LastExitCode: 137, LastFinishedAt: exited.FinishedAt,
		BackOff: 40 * time.Second, BackOffUntil: exited.FinishedAt.Add(20 * time.Second)}
	if got := acts.Start[0].Record; got != want {
		t.Fatalf("record %+v, want %+v", got, want)
	}
	// Within the back-off the container waits, with kubelet's message.
	acts = computePodActions("default/p", spec, []runtime.Container{exited},
		map[string]store.ContainerRecord{"a": {RestartCount: 2, BackOff: 40 * time.Second}}, now)
	if len(acts.Wait) != 1 || acts.Wait[0].Message != "back-off 40s restarting failed container=a pod=default/p" {
		t.Fatalf("wait %+v", acts.Wait)
	}
	if !acts.WakeAt().Equal(exited.FinishedAt.Add(40 * time.Second)) {
		t.Fatalf("wake at %v", acts.WakeAt())
	}
}

func TestPlanPods(t *testing.T) {
	// Every intent is of DaemonSet ns/<key's name>; its pod's revision is
	// "r" plus the UID.
	run := func(key, uid string) podIntent {
		ns, name := splitKey(key)
		return podIntent{DaemonSet: "ns/" + name, Key: key, UID: uid, Decision: decideRun,
			Pod: &runtime.Pod{Namespace: ns, Name: name, UID: uid, Revision: "r" + uid}}
	}
	with := func(in podIntent, d decision) podIntent { in.Decision, in.Why = d, "because"; return in }
	kept := func(in podIntent) podIntent { in.Kept = true; return in }
	held := func(ds string, d decision) podIntent {
		return podIntent{DaemonSet: ds, Decision: d, Why: "because", Hold: true}
	}
	worker := func(key, uid string) podObserved {
		_, name, _ := strings.Cut(key, "/")
		ds, _, _ := strings.Cut(name, "-")
		return podObserved{DaemonSet: "ns/" + ds, Key: key, UID: uid, Worker: true}
	}
	orphan := func(key, uid string) podObserved { o := worker(key, uid); o.Worker = false; return o }
	stopping := func(o podObserved) podObserved { o.Terminating = true; return o }
	tests := []struct {
		name     string
		intents  []podIntent
		observed []podObserved
		allow    bool
		want     string
	}{
		{name: "new pod", intents: []podIntent{run("ns/a", "u1")}, want: "start=[ns/a@u1]"},
		{name: "existing worker is updated", intents: []podIntent{run("ns/a", "u1")},
			observed: []podObserved{worker("ns/a", "u1")}, want: "update=[ns/a]"},
		{name: "orphan of the same revision is adopted", intents: []podIntent{run("ns/a", "u1")},
			observed: []podObserved{orphan("ns/a", "u1")}, want: "start=[ns/a@u1]"},
		{name: "orphan known only by its containers is adopted by UID", intents: []podIntent{run("ns/a", "u1")},
			observed: []podObserved{{Key: "ns/a", UID: "u1"}}, want: "start=[ns/a@u1]"},
		{name: "new revision: old pod stops first, new one waits",
			intents:  []podIntent{run("ns/a", "u2")},
			observed: []podObserved{worker("ns/a", "u1")},
			want:     "stop=[u1(replaced by revision ru2)] waiting=[ns/a]"},
		{name: "new revision: an old pod known only by its containers' pod name stops first",
			intents:  []podIntent{run("ns/a", "u2")},
			observed: []podObserved{{Key: "ns/a", UID: "u1"}},
			want:     "stop=[u1(replaced by revision ru2)] waiting=[ns/a]"},
		{name: "same uid still terminating: wait",
			intents:  []podIntent{run("ns/a", "u1")},
			observed: []podObserved{stopping(worker("ns/a", "u1"))},
			want:     "waiting=[ns/a]"},
		{name: "keep: existing pod stays, nothing new starts",
			intents:  []podIntent{with(run("ns/a", "u1"), decideKeep), with(run("ns/b", "u2"), decideKeep)},
			observed: []podObserved{worker("ns/a", "u1")},
			want:     "update=[ns/a]"},
		{name: "keep: an older revision is left alone", allow: true,
			intents:  []podIntent{with(run("ns/a", "u2"), decideKeep)},
			observed: []podObserved{worker("ns/a", "u1")},
			want:     "nothing to do"},
		{name: "stop: every pod of the DaemonSet",
			intents:  []podIntent{with(run("ns/a", "u2"), decideStop)},
			observed: []podObserved{worker("ns/a", "u1"), orphan("ns/a", "u2"), worker("ns/a-x", "u3"), worker("ns/b", "u4")},
			want:     "stop=[u1(because) u2(because) u3(because)]"},
		{name: "surge: the new pod starts beside the old one under another name",
			intents:  []podIntent{kept(run("ns/a", "u1")), run("ns/a", "u2")},
			observed: []podObserved{worker("ns/a", "u1")},
			want:     "start=[ns/a-ru2@u2]"},
		{name: "surge running: the old pod is untouched, the new one updated under its name",
			intents:  []podIntent{kept(run("ns/a", "u1")), run("ns/a", "u2")},
			observed: []podObserved{worker("ns/a", "u1"), worker("ns/a-ru2", "u2")},
			want:     "update=[ns/a-ru2]"},
		{name: "surge over: the old pod stops, the new one keeps its name",
			intents:  []podIntent{run("ns/a", "u2")},
			observed: []podObserved{worker("ns/a", "u1"), worker("ns/a-ru2", "u2")},
			want:     "update=[ns/a-ru2] stop=[u1(replaced by revision ru2)]"},
		{name: "next surge: the new pod takes the free name",
			intents:  []podIntent{kept(run("ns/a", "u2")), run("ns/a", "u3")},
			observed: []podObserved{worker("ns/a-ru2", "u2")},
			want:     "start=[ns/a@u3]"},
		{name: "restart mid-surge: both pods are adopted under their names",
			intents:  []podIntent{kept(run("ns/a", "u1")), run("ns/a", "u2")},
			observed: []podObserved{orphan("ns/a", "u1"), orphan("ns/a-ru2", "u2")},
			allow:    true,
			want:     "start=[ns/a@u1 ns/a-ru2@u2]"},
		{name: "surge without the old pod: only the new one starts",
			intents: []podIntent{kept(run("ns/a", "u1")), run("ns/a", "u2")},
			want:    "start=[ns/a@u2]"},
		{name: "surge beside a third pod: it stops first",
			intents:  []podIntent{kept(run("ns/a", "u1")), run("ns/a", "u2")},
			observed: []podObserved{worker("ns/a", "u1"), worker("ns/a-r0", "u0")},
			want:     "stop=[u0(replaced by revision ru2)] waiting=[ns/a]"},
		{name: "held: every pod of the DaemonSet runs on, nothing starts",
			intents:  []podIntent{held("ns/a", decideRun), run("ns/b", "u9")},
			observed: []podObserved{worker("ns/a", "u1"), orphan("ns/a-r2", "u2")},
			allow:    true,
			want:     "start=[ns/b@u9]"},
		{name: "held but no longer eligible: stopped",
			intents:  []podIntent{held("ns/a", decideStop)},
			observed: []podObserved{worker("ns/a", "u1")},
			want:     "stop=[u1(because)]"},
		{name: "undesired pods wait for every source", observed: []podObserved{worker("ns/x", "u9"), {UID: "sb"}},
			want: "nothing to do"},
		{name: "undesired pods go once allowed", observed: []podObserved{worker("ns/x", "u9"), {UID: "sb"}}, allow: true,
			want: "stop=[u9(no longer desired) sb(no longer desired)]"},
		{name: "an interrupted stop is finished even before the sources speak",
			observed: []podObserved{stopping(orphan("ns/x", "u9"))},
			want:     "stop=[u9(no longer desired)]"},
		{name: "pods known by owner and by name are taken in the order observed",
			intents:  []podIntent{run("ns/a", "u3")},
			observed: []podObserved{{Key: "ns/a", UID: "u1"}, worker("ns/a", "u2")},
			want:     "stop=[u1(replaced by revision ru3) u2(replaced by revision ru3)] waiting=[ns/a]"},
		{name: "pods known by name and by owner are taken in the order observed",
			intents:  []podIntent{run("ns/a", "u3")},
			observed: []podObserved{worker("ns/a", "u2"), {Key: "ns/a", UID: "u1"}},
			want:     "stop=[u2(replaced by revision ru3) u1(replaced by revision ru3)] waiting=[ns/a]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := planPods(tt.intents, tt.observed, tt.allow).String(); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestPlanPodsRenamesOnlyTheCopy: a chosen name is set on a copy of the
// intent's pod, whose name is the pod's and whose other fields are kept.
func TestPlanPodsRenamesOnlyTheCopy(t *testing.T) {
	pod := &runtime.Pod{Namespace: "ns", Name: "a", UID: "u2", Revision: "r2", Labels: map[string]string{"x": "y"}}
	in := podIntent{DaemonSet: "ns/a", Key: "ns/a", UID: "u2", Decision: decideRun, Pod: pod}
	plan := planPods([]podIntent{in}, []podObserved{{DaemonSet: "ns/a", Key: "ns/a-r2", UID: "u2"}}, true)
	if len(plan.Start) != 1 || plan.Start[0].Pod.Name != "a-r2" || plan.Start[0].Pod.Labels["x"] != "y" || plan.Start[0].Pod.UID != "u2" {
		t.Fatalf("plan %v, start %+v", plan, plan.Start)
	}
	if pod.Name != "a" {
		t.Fatalf("the intent's pod was renamed to %q", pod.Name)
	}
}

func TestMergeSourcesFirstRegisteredWins(t *testing.T) {
	ds := func(src, name, image string) DesiredPod {
		d, err := newDesiredPod(src, &appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
			Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "c", Image: image}}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	sets := map[string][]DesiredPod{
		"second": {ds("second", "x", "from-second"), ds("second", "y", "y")},
		"first":  {ds("first", "x", "from-first")},
	}
	for range 5 { // map order must not matter
		merged, conflicts := mergeSources([]string{"first", "second"}, sets)
		if len(merged) != 2 || merged[0].Source != "first" || merged[1].Name != "y" {
			t.Fatalf("merged %+v", merged)
		}
		want := []sourceConflict{{Key: "ns/x", Winner: "first", Loser: "second"}}
		if !reflect.DeepEqual(conflicts, want) {
			t.Fatalf("conflicts %v, want %v", conflicts, want)
		}
	}
}

func TestPodIdentity(t *testing.T) {
	if podUID("ns", "a", "n1", "r1") != podUID("ns", "a", "n1", "r1") {
		t.Fatal("pod UID is not stable")
	}
	seen := map[string]bool{}
	for _, args := range [][4]string{{"ns", "a", "n1", "r1"}, {"ns", "a", "n1", "r2"}, {"ns", "a", "n2", "r1"}, {"ns2", "a", "n1", "r1"}, {"ns", "a-n", "1", "r1"}} {
		uid := podUID(args[0], args[1], args[2], args[3])
		if seen[uid] {
			t.Fatalf("UID collision for %v", args)
		}
		seen[uid] = true
	}
	if got := podName("agent", "Node-1"); got != "agent-node-1" {
		t.Fatalf("pod name %q", got)
	}
}

// TestDerivedIntentsFollowTheDesiredPodAndTheNode: a sync pass reuses the
// pods and the eligibility it derived from a DesiredPod while neither it
// nor the node changes, and derives them again when one does.
func TestDerivedIntentsFollowTheDesiredPodAndTheNode(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	a, err := New(Config{NodeName: testNode, Runtime: runtimetest.New(clock.RealClock{}), Store: db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	intents := func(ds *appsv1.DaemonSet) podIntent {
		t.Helper()
		d, err := newDesiredPod("file", ds)
		if err != nil {
			t.Fatal(err)
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		in, _ := a.appendIntents(nil, d, now)
		if len(in) != 1 {
			t.Fatalf("%d intents, want 1", len(in))
		}
		return in[0]
	}
	ds := daemonSet("web", ctr("app", "img"))
	ds.Spec.Template.Spec.NodeSelector = map[string]string{"pool": "a"}
	d, err := newDesiredPod("file", ds)
	if err != nil {
		t.Fatal(err)
	}
	pass := func() podIntent {
		a.mu.Lock()
		defer a.mu.Unlock()
		in, _ := a.appendIntents(nil, d, now)
		return in[0]
	}
	first := pass()
	if first.Decision != decideStop {
		t.Fatalf("decision %v on a node without the selected label, want stop", first.Decision)
	}
	if again := pass(); again.Pod != first.Pod || again.Decision != decideStop {
		t.Fatalf("a second pass built the pod again or decided %v", again.Decision)
	}
	a.SetNode(api.NewNode(testNode, map[string]string{"pool": "a"}, nil))
	if moved := pass(); moved.Decision != decideRun || moved.Pod != first.Pod {
		t.Fatalf("after the node got the label: decision %v, same pod %v; want run, same pod", moved.Decision, moved.Pod == first.Pod)
	}
	changed := ds.DeepCopy()
	changed.Spec.Template.Spec.Containers[0].Image = "img:2"
	if in := intents(changed); in.Pod.Revision == first.Pod.Revision || in.Pod.Spec.Containers[0].Image != "img:2" || in.Decision != decideRun {
		t.Fatalf("a changed template gave revision %s (was %s), image %s, decision %v",
			in.Pod.Revision, first.Pod.Revision, in.Pod.Spec.Containers[0].Image, in.Decision)
	}
}
