package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/api/client"
)

func TestRolloutTarget(t *testing.T) {
	for _, tc := range []struct {
		args []string
		name string
		ok   bool
	}{
		{[]string{"ds/x"}, "x", true},
		{[]string{"daemonset/x"}, "x", true},
		{[]string{"daemonsets.apps/x"}, "x", true},
		{[]string{"daemonsets", "x"}, "x", true},
		{[]string{"ds", "x"}, "x", true},
		{[]string{"x"}, "", false},
		{[]string{"ds/"}, "", false},
		{[]string{"pod/x"}, "", false},
		{[]string{"deployment/x"}, "", false},
		{[]string{"ds/x", "y"}, "", false},
	} {
		name, err := rolloutTarget(tc.args)
		if (err == nil) != tc.ok || name != tc.name {
			t.Errorf("rolloutTarget(%q) = %q, %v", tc.args, name, err)
		}
		if err != nil && !errdefs.IsInvalidArgument(err) {
			t.Errorf("rolloutTarget(%q): %v is not an invalid argument", tc.args, err)
		}
	}
}

func TestRolloutStatusMessages(t *testing.T) {
	ds := func(gen, observed int64, desired, updated, available int32, conds ...appsv1.DaemonSetCondition) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Name: "x", Generation: gen},
			Spec:       appsv1.DaemonSetSpec{UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType}},
			Status: appsv1.DaemonSetStatus{ObservedGeneration: observed, DesiredNumberScheduled: desired,
				UpdatedNumberScheduled: updated, NumberAvailable: available, Conditions: conds},
		}
	}
	stuck := appsv1.DaemonSetCondition{Type: api.DaemonSetProgressing, Status: corev1.ConditionFalse, Reason: api.ReasonProgressDeadlineExceeded}
	progressing := appsv1.DaemonSetCondition{Type: api.DaemonSetProgressing, Status: corev1.ConditionTrue, Reason: api.ReasonRolloutInProgress}
	onDelete := ds(1, 1, 1, 1, 1)
	onDelete.Spec.UpdateStrategy.Type = appsv1.OnDeleteDaemonSetStrategyType
	for _, tc := range []struct {
		ds   *appsv1.DaemonSet
		msg  string
		done bool
		err  string
		is   func(error) bool
	}{
		{ds: ds(2, 1, 3, 3, 3), msg: "Waiting for daemon set spec update to be observed...\n"},
		{ds: ds(2, 2, 3, 1, 3, progressing), msg: "Waiting for daemon set \"x\" rollout to finish: 1 out of 3 new pods have been updated...\n"},
		{ds: ds(2, 2, 3, 3, 2), msg: "Waiting for daemon set \"x\" rollout to finish: 2 of 3 updated pods are available...\n"},
		{ds: ds(2, 2, 3, 3, 3), msg: "daemon set \"x\" successfully rolled out\n", done: true},
		{ds: ds(0, 0, 0, 0, 0), msg: "daemon set \"x\" successfully rolled out\n", done: true},
		// A stuck rollout fails at once, but only once its generation is
		// observed: the condition may be about the previous template.
		{ds: ds(2, 2, 3, 1, 1, stuck), err: `daemon set "x" exceeded its progress deadline`, is: errdefs.IsAborted},
		{ds: ds(3, 2, 3, 1, 1, stuck), msg: "Waiting for daemon set spec update to be observed...\n"},
		{ds: onDelete, err: "rollout status is only available for RollingUpdate strategy type", is: errdefs.IsFailedPrecondition},
	} {
		msg, done, err := daemonSetRolloutStatus(tc.ds)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err || !tc.is(err) {
				t.Errorf("%+v: error %v, want %q", tc.ds.Status, err, tc.err)
			}
			continue
		}
		if err != nil || msg != tc.msg || done != tc.done {
			t.Errorf("%+v: %q, %v, %v; want %q, %v", tc.ds.Status, msg, done, err, tc.msg, tc.done)
		}
	}
}

// revision is a ControllerRevision of DaemonSet x with the given number
// and template image.
func revision(t *testing.T, n int64, image, cause string, age time.Duration) appsv1.ControllerRevision {
	t.Helper()
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "default", UID: "ds-uid"},
		Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: image}}},
		}},
	}
	if cause != "" {
		ds.Annotations = map[string]string{annotationChangeCause: cause}
	}
	cr, err := api.NewControllerRevision(ds, fmt.Sprintf("h%d", n), n)
	if err != nil {
		t.Fatal(err)
	}
	cr.CreationTimestamp = created(age)
	return *cr
}

func TestRolloutUndoTarget(t *testing.T) {
	revs := []appsv1.ControllerRevision{revision(t, 4, "b", "", 0), revision(t, 2, "a", "", 0), revision(t, 7, "c", "", 0)}
	if cr, err := rollbackTarget(revs, 0); err != nil || cr.Revision != 4 {
		t.Errorf("to the last revision: %v, %v; want revision 4", cr, err)
	}
	if cr, err := rollbackTarget(revs, 2); err != nil || cr.Revision != 2 {
		t.Errorf("to revision 2: %v, %v", cr, err)
	}
	if _, err := rollbackTarget(revs, 3); err == nil || err.Error() != "unable to find specified revision 3 in history" || !errdefs.IsNotFound(err) {
		t.Errorf("to a missing revision: %v", err)
	}
	for _, few := range [][]appsv1.ControllerRevision{nil, revs[:1]} {
		if _, err := rollbackTarget(few, 0); err == nil || err.Error() != "no last revision to roll back to" || !errdefs.IsFailedPrecondition(err) {
			t.Errorf("%d revisions: %v", len(few), err)
		}
	}
}

func TestPrintRolloutHistory(t *testing.T) {
	revs := []appsv1.ControllerRevision{revision(t, 1, "app:v1", "", 0), revision(t, 12, "app:v2", "kubectl apply --image app:v2", 0)}
	var b bytes.Buffer
	if err := printRolloutHistory(&b, "x", revs, 0); err != nil {
		t.Fatal(err)
	}
	// kubectl's exact bytes, trailing space and blank line included.
	want := "daemonset.apps/x \nREVISION  CHANGE-CAUSE\n1         <none>\n12        kubectl apply --image app:v2\n\n"
	if b.String() != want {
		t.Errorf("history:\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	if err := printRolloutHistory(&b, "x", nil, 0); err != nil || b.String() != "daemonset.apps/x No rollout history found.\n" {
		t.Errorf("empty history: %q, %v", b.String(), err)
	}
	b.Reset()
	secs := int64(300)
	tmplRev := revision(t, 12, "app:v2", "", 0)
	tmpl, err := api.RevisionTemplate(&tmplRev)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.Spec.Tolerations = []corev1.Toleration{
		{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "logs", Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &secs},
		{Operator: corev1.TolerationOpExists},
	}
	tmpl.Annotations = map[string]string{annotationRestartedAt: "2026-01-02T15:00:00Z"}
	withTolerations, err := api.NewControllerRevision(&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: appsv1.DaemonSetSpec{Template: *tmpl}}, "h12", 12)
	if err != nil {
		t.Fatal(err)
	}
	revs[1] = *withTolerations
	if err := printRolloutHistory(&b, "x", revs, 12); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"daemonset.apps/x with revision #12\nPod Template:\n  Labels:       app=x\n",
		"  Annotations:  kubectl.kubernetes.io/restartedAt: 2026-01-02T15:00:00Z\n",
		"  Containers:\n    main:\n      Image:        app:v2\n",
		"  Volumes:          <none>\n  Node-Selectors:   <none>\n",
		"  Tolerations:      node-role.kubernetes.io/control-plane:NoSchedule op=Exists\n" +
			"                    dedicated=logs:NoExecute for 300s\n" +
			"                    op=Exists\n\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("revision 12 lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(out, "op=Exists\n\n") {
		t.Errorf("revision 12 does not end as kubectl's does (a blank line):\n%q", out)
	}
	if err := printRolloutHistory(&b, "x", revs, 5); err == nil || err.Error() != "unable to find the specified revision" || !errdefs.IsNotFound(err) {
		t.Errorf("unknown revision: %v", err)
	}
}

func TestPrintControllerRevisions(t *testing.T) {
	orphan := revision(t, 3, "a", "", 90*time.Second)
	orphan.Name, orphan.OwnerReferences = "lonely", nil
	items := []appsv1.ControllerRevision{revision(t, 1, "a", "", 49*time.Hour), revision(t, 12, "b", "", 5*time.Minute), orphan}
	var b bytes.Buffer
	if err := printControllerRevisions(&b, items, tableOptions{now: printNow}); err != nil {
		t.Fatal(err)
	}
	want := `NAME     CONTROLLER         REVISION   AGE
x-h1     daemonset.apps/x   1          2d1h
x-h12    daemonset.apps/x   12         5m
lonely   <none>             3          90s
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	if err := printControllerRevisions(&b, items[:1], tableOptions{now: printNow, allNamespaces: true}); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^NAMESPACE\s+NAME\s+CONTROLLER\s+REVISION\s+AGE\ndefault\s+x-h1\s+daemonset.apps/x\s+1\s+2d1h\n$`).MatchString(b.String()) {
		t.Errorf("table across namespaces:\n%s", b.String())
	}
}

func TestDescribeEvents(t *testing.T) {
	var b bytes.Buffer
	if err := describeEvents(&b, nil, printNow); err != nil || b.String() != "Events:  <none>\n" {
		t.Errorf("no events: %q, %v", b.String(), err)
	}
	events := []corev1.Event{
		{Type: corev1.EventTypeWarning, Reason: api.ReasonProgressDeadlineExceeded, Message: "rollout stuck \n",
			Source: corev1.EventSource{Component: "daemonset-controller"}, FirstTimestamp: created(time.Minute), LastTimestamp: created(time.Minute), Count: 1},
		{Type: corev1.EventTypeNormal, Reason: "SuccessfulCreate", Message: "Created pod: x-abc",
			Source: corev1.EventSource{Component: "daemonset-controller"}, FirstTimestamp: created(time.Hour), LastTimestamp: created(10 * time.Minute), Count: 4},
		{Type: corev1.EventTypeNormal, Reason: "Pulled", Message: "pulled", ReportingController: "daemonlet",
			EventTime: metav1.NewMicroTime(printNow.Add(-20 * time.Second)), LastTimestamp: created(20 * time.Second)},
	}
	b.Reset()
	if err := describeEvents(&b, events, printNow); err != nil {
		t.Fatal(err)
	}
	// Oldest first by last-seen time, as kubectl sorts them.
	want := `Events:
  Type     Reason                    Age                From                  Message
  ----     ------                    ----               ----                  -------
  Normal   SuccessfulCreate          10m (x4 over 60m)  daemonset-controller  Created pod: x-abc
  Warning  ProgressDeadlineExceeded  60s                daemonset-controller  rollout stuck
  Normal   Pulled                    20s                daemonlet             pulled
`
	if b.String() != want {
		t.Errorf("events:\n%s\nwant\n%s", b.String(), want)
	}
}

// newAdminClient is a client of the test server startAPIServer runs.
func newAdminClient(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Servers: []string{os.Getenv(envServer)}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitRevisions waits until the server's rollout controller has recorded
// the DaemonSet's revisions as want, by number, and returns them.
func waitRevisions(t *testing.T, c *client.Client, name string, want ...int64) []appsv1.ControllerRevision {
	t.Helper()
	var revs []appsv1.ControllerRevision
	waitUntil(t, 20*time.Second, fmt.Sprintf("revisions %v of %s", want, name), func() error {
		ds, err := c.DaemonSets("default").Get(context.Background(), name)
		if err != nil {
			return err
		}
		if revs, err = daemonSetRevisions(context.Background(), c, ds); err != nil {
			return err
		}
		var got []int64
		for _, cr := range revs {
			got = append(got, cr.Revision)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("revisions %v", got)
		}
		return nil
	})
	return revs
}

func TestRolloutHistoryUndoRestart(t *testing.T) {
	startAPIServer(t)
	c := newAdminClient(t)
	ctx := context.Background()
	if _, errOut, code := runCLI(t, manifest("v1"), "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	waitRevisions(t, c, "agent", 1)
	if _, errOut, code := runCLI(t, "", "rollout", "undo", "ds/agent"); code != 1 || errOut != "error: no last revision to roll back to\n" {
		t.Errorf("undo with one revision: exit %d, %q", code, errOut)
	}
	// A second DaemonSet selecting the same labels: its revisions carry
	// them too, but are not agent's.
	other := strings.Replace(manifest("v9"), "name: agent\n", "name: other\n", 1)
	if _, errOut, code := runCLI(t, other, "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply other: %s", errOut)
	}
	waitRevisions(t, c, "other", 1)

	if _, errOut, code := runCLI(t, manifest("v2"), "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply v2: %s", errOut)
	}
	waitRevisions(t, c, "agent", 1, 2)
	out, errOut, code := runCLI(t, "", "rollout", "history", "daemonset/agent")
	if code != 0 || out != "daemonset.apps/agent \nREVISION  CHANGE-CAUSE\n1         <none>\n2         <none>\n\n" {
		t.Errorf("history: exit %d, %q, %q", code, out, errOut)
	}
	out, _, code = runCLI(t, "", "rollout", "history", "ds", "agent", "--revision", "1")
	if code != 0 || !strings.HasPrefix(out, "daemonset.apps/agent with revision #1\nPod Template:\n") || !strings.Contains(out, "registry.example/agent:v1\n") {
		t.Errorf("history --revision 1: exit %d:\n%s", code, out)
	}
	if _, errOut, code := runCLI(t, "", "rollout", "history", "ds/agent", "--revision", "9"); code != 1 || errOut != "error: unable to find the specified revision\n" {
		t.Errorf("history --revision 9: exit %d, %q", code, errOut)
	}
	out, _, code = runCLI(t, "", "get", "controllerrevisions")
	if code != 0 || len(regexp.MustCompile(`(?m)^agent-\S+\s+daemonset\.apps/agent\s+[12]\s+\S+$`).FindAllString(out, -1)) != 2 ||
		!regexp.MustCompile(`(?m)^other-\S+\s+daemonset\.apps/other\s+1\s+\S+$`).MatchString(out) {
		t.Errorf("get controllerrevisions: exit %d:\n%s", code, out)
	}

	if _, errOut, code := runCLI(t, "", "rollout", "undo", "ds/agent", "--to-revision", "9"); code != 1 || errOut != "error: unable to find specified revision 9 in history\n" {
		t.Errorf("undo --to-revision 9: exit %d, %q", code, errOut)
	}
	if out, errOut, code := runCLI(t, "", "rollout", "undo", "ds/agent"); code != 0 || out != "daemonset.apps/agent rolled back\n" {
		t.Fatalf("undo: exit %d, %q, %q", code, out, errOut)
	}
	ds, err := c.DaemonSets("default").Get(ctx, "agent")
	if err != nil {
		t.Fatal(err)
	}
	if img := ds.Spec.Template.Spec.Containers[0].Image; img != "registry.example/agent:v1" {
		t.Errorf("after undo the template runs %s", img)
	}
	// Revisions roll forward: revision 1 comes back as 3.
	waitRevisions(t, c, "agent", 2, 3)
	if out, errOut, code := runCLI(t, "", "rollout", "undo", "ds/agent", "--to-revision", "3"); code != 0 ||
		out != "daemonset.apps/agent skipped rollback (current template already matches revision 3)\n" {
		t.Errorf("undo to the current revision: exit %d, %q, %q", code, out, errOut)
	}
	if out, _, _ := runCLI(t, "", "rollout", "history", "ds/other"); out != "daemonset.apps/other \nREVISION  CHANGE-CAUSE\n1         <none>\n\n" {
		t.Errorf("history of other:\n%s", out)
	}

	before := time.Now().Add(-time.Second)
	if out, errOut, code := runCLI(t, "", "rollout", "restart", "ds/agent"); code != 0 || out != "daemonset.apps/agent restarted\n" {
		t.Fatalf("restart: exit %d, %q, %q", code, out, errOut)
	}
	if ds, err = c.DaemonSets("default").Get(ctx, "agent"); err != nil {
		t.Fatal(err)
	}
	at, err := time.Parse(time.RFC3339, ds.Spec.Template.Annotations[annotationRestartedAt])
	if err != nil || at.Before(before) || ds.Spec.Template.Spec.Containers[0].Image != "registry.example/agent:v1" {
		t.Errorf("after restart: template annotations %v (%v), image %s", ds.Spec.Template.Annotations, err, ds.Spec.Template.Spec.Containers[0].Image)
	}
	waitRevisions(t, c, "agent", 2, 3, 4)

	for _, verb := range []string{"pause", "resume"} {
		gerund := strings.TrimSuffix(verb, "e") + "ing"
		if _, errOut, code := runCLI(t, "", "rollout", verb, "ds/agent"); code != 1 || errOut != `error: daemonsets.apps "agent" `+gerund+" is not supported\n" {
			t.Errorf("%s: exit %d, %q", verb, code, errOut)
		}
	}
	if _, errOut, code := runCLI(t, "", "rollout", "undo", "ds/missing"); code != 1 || errOut != "Error from server (NotFound): daemonsets.apps \"missing\" not found\n" {
		t.Errorf("undo of a missing DaemonSet: exit %d, %q", code, errOut)
	}
}

// lines delivers what is written to the returned writer line by line.
func lines(t *testing.T) (io.WriteCloser, <-chan string) {
	t.Helper()
	pr, pw := io.Pipe()
	ch := make(chan string)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	t.Cleanup(func() { pw.Close() })
	return pw, ch
}

// nextLine is the next line of ch, failing the test if none comes.
func nextLine(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case l := <-ch:
		return l
	case <-time.After(20 * time.Second):
		t.Fatal("no output line within 20s")
		return ""
	}
}

func TestRolloutStatusWatches(t *testing.T) {
	startAPIServer(t)
	c := newAdminClient(t)
	ctx := context.Background()
	// A Node without an agent: the DaemonSet wants a pod there that never
	// comes, so its rollout waits until the Node goes.
	if _, err := c.Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runCLI(t, manifest("v1"), "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	const waiting = `Waiting for daemon set "agent" rollout to finish: 0 out of 1 new pods have been updated...`
	waitWaiting := func() {
		t.Helper()
		waitUntil(t, 20*time.Second, "the DaemonSet to want one pod", func() error {
			out, _, _ := runCLI(t, "", "rollout", "status", "ds/agent", "--watch=false")
			if out != waiting+"\n" {
				return fmt.Errorf("status %q", out)
			}
			return nil
		})
	}
	waitWaiting()
	// Without --watch, an unfinished rollout is not an error (as kubectl).
	if out, errOut, code := runCLI(t, "", "rollout", "status", "ds", "agent", "-w=false"); code != 0 || out != waiting+"\n" {
		t.Errorf("status --watch=false: exit %d, %q, %q", code, out, errOut)
	}
	out, errOut, code := runCLI(t, "", "rollout", "status", "ds/agent", "--timeout", "300ms")
	if code != 1 || out != waiting+"\n" ||
		errOut != "error: timed out waiting for the condition: daemon set \"agent\" rollout did not finish within 300ms: context deadline exceeded\n" {
		t.Errorf("status --timeout: exit %d, %q, %q", code, out, errOut)
	}

	// The watch sees the rollout finish when the Node goes.
	w, ch := lines(t)
	done := make(chan error, 1)
	go func() { done <- rolloutStatus(ctx, c.DaemonSets("default"), w, "agent", true, 0) }()
	if l := nextLine(t, ch); l != waiting {
		t.Fatalf("first status line %q", l)
	}
	if err := c.Nodes().Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if l := nextLine(t, ch); l != `daemon set "agent" successfully rolled out` {
		t.Errorf("status line after the Node went: %q", l)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("status: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("status did not return after the rollout finished")
	}

	// A DaemonSet deleted under the watch fails it.
	if _, err := c.Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}}, client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitWaiting()
	w2, ch2 := lines(t)
	go func() { done <- rolloutStatus(ctx, c.DaemonSets("default"), w2, "agent", true, 0) }()
	if l := nextLine(t, ch2); l != waiting {
		t.Fatalf("first status line %q", l)
	}
	if err := c.DaemonSets("default").Delete(ctx, "agent", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errdefs.IsNotFound(err) {
			t.Errorf("status of a deleted DaemonSet: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("status did not return after the DaemonSet was deleted")
	}

	// OnDelete DaemonSets have no rollout to follow.
	onDelete := strings.Replace(manifest("v1"), "spec:\n  selector:", "spec:\n  updateStrategy: {type: OnDelete}\n  selector:", 1)
	if _, errOut, code := runCLI(t, onDelete, "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply OnDelete: %s", errOut)
	}
	if _, errOut, code := runCLI(t, "", "rollout", "status", "ds/agent"); code != 1 || errOut != "error: rollout status is only available for RollingUpdate strategy type\n" {
		t.Errorf("status of OnDelete: exit %d, %q", code, errOut)
	}
}

func TestDescribeShowsEvents(t *testing.T) {
	startAPIServer(t)
	c := newAdminClient(t)
	ctx := context.Background()
	if _, errOut, code := runCLI(t, manifest("v1"), "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	ds, err := c.DaemonSets("default").Get(ctx, "agent")
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	event := func(name, reason string) *corev1.Event {
		return &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: name, Namespace: "default"},
			InvolvedObject: corev1.ObjectReference{Kind: "DaemonSet", APIVersion: "apps/v1", Namespace: "default", Name: "agent", UID: ds.UID},
			Type:           corev1.EventTypeNormal, Reason: reason, Message: "about agent",
			Source: corev1.EventSource{Component: "daemonset-controller"}, FirstTimestamp: now, LastTimestamp: now, Count: 1,
		}
	}
	old := event("agent.old", "OldIncarnation")
	old.InvolvedObject.UID = "uid-of-a-deleted-agent"
	for _, e := range []*corev1.Event{event("agent.1", "RolledBack"), old} {
		if _, err := c.Events("default").Create(ctx, e, client.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code := runCLI(t, "", "describe", "ds", "agent")
	if code != 0 || !regexp.MustCompile(`\nEvents:\n  Type    Reason      Age   From                  Message\n  ----    ------      ----  ----                  -------\n  Normal  RolledBack  \S+\s+daemonset-controller  about agent\n$`).MatchString(out) {
		t.Errorf("describe ds: exit %d, %s:\n%s", code, errOut, out)
	}
	if _, err := c.Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if out, _, code := runCLI(t, "", "describe", "node", "n1"); code != 0 || !strings.HasSuffix(out, "\nEvents:  <none>\n") {
		t.Errorf("describe node: exit %d:\n%s", code, out)
	}
	// A kubelet's Event about its Node names the node where the UID goes.
	nodeEvent := event("n1.1", "Starting")
	nodeEvent.InvolvedObject = corev1.ObjectReference{Kind: "Node", Name: "n1", UID: "n1"}
	if _, err := c.Events("default").Create(ctx, nodeEvent, client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if out, _, code := runCLI(t, "", "describe", "node", "n1"); code != 0 || !regexp.MustCompile(`\n  Normal  Starting  \S+\s+daemonset-controller  about agent\n$`).MatchString(out) {
		t.Errorf("describe node with an event: exit %d:\n%s", code, out)
	}
}
