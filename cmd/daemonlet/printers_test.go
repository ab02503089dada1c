package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

var printNow = time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)

func created(ago time.Duration) metav1.Time { return metav1.NewTime(printNow.Add(-ago)) }

func fixedDaemonSets() []appsv1.DaemonSet {
	return []appsv1.DaemonSet{{
		ObjectMeta: metav1.ObjectMeta{Name: "fluentd", Namespace: "kube-system", CreationTimestamp: created(49 * time.Hour)},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "fluentd"}},
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				NodeSelector: map[string]string{"kubernetes.io/os": "linux"},
				Containers:   []corev1.Container{{Name: "fluentd", Image: "fluentd:v1"}, {Name: "sidecar", Image: "busybox"}},
			}},
		},
		Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, CurrentNumberScheduled: 3, NumberReady: 2, UpdatedNumberScheduled: 1, NumberAvailable: 2},
	}}
}

func TestPrintDaemonSetTables(t *testing.T) {
	var b bytes.Buffer
	if err := printDaemonSets(&b, fixedDaemonSets(), tableOptions{now: printNow}); err != nil {
		t.Fatal(err)
	}
	want := `NAME      DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   NODE SELECTOR            AGE
fluentd   3         3         2       1            2           kubernetes.io/os=linux   2d1h
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	if err := printDaemonSets(&b, fixedDaemonSets(), tableOptions{now: printNow, wide: true, allNamespaces: true}); err != nil {
		t.Fatal(err)
	}
	want = `NAMESPACE     NAME      DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   NODE SELECTOR            AGE    CONTAINERS        IMAGES               SELECTOR
kube-system   fluentd   3         3         2       1            2           kubernetes.io/os=linux   2d1h   fluentd,sidecar   fluentd:v1,busybox   app=fluentd
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestPrintNodeTable(t *testing.T) {
	nodes := []corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "n1", CreationTimestamp: created(10 * time.Minute), Labels: map[string]string{"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/edge": ""}},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}, NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "daemonlet/v0.1.0"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "n2", CreationTimestamp: created(90 * time.Second)}, Spec: corev1.NodeSpec{Unschedulable: true},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "n3"}},
	}
	var b bytes.Buffer
	if err := printNodes(&b, nodes, tableOptions{now: printNow}); err != nil {
		t.Fatal(err)
	}
	want := "NAME   STATUS                        ROLES                AGE         VERSION\n" +
		"n1     Ready                         control-plane,edge   10m         daemonlet/v0.1.0\n" +
		"n2     NotReady,SchedulingDisabled   <none>               90s         \n" +
		"n3     Unknown                       <none>               <unknown>   \n"
	if b.String() != want {
		t.Errorf("got\n%q\nwant\n%q", b.String(), want)
	}
}

func TestPrintPodTable(t *testing.T) {
	running := metav1.NewTime(printNow.Add(-5 * time.Minute))
	pods := []corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "fluentd-n1", Namespace: "kube-system", CreationTimestamp: created(time.Hour)},
			Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "a"}, {Name: "b"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.5", ContainerStatuses: []corev1.ContainerStatus{
				{Name: "a", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: running}}, RestartCount: 2,
					LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, FinishedAt: running}}},
				{Name: "b", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}},
			}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "init-n2", Namespace: "default", CreationTimestamp: created(3 * time.Second)},
			Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "i"}}, Containers: []corev1.Container{{Name: "a"}}},
			Status: corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{
				{Name: "i", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}},
	}
	var b bytes.Buffer
	if err := printPods(&b, pods, tableOptions{now: printNow, wide: true, allNamespaces: true}); err != nil {
		t.Fatal(err)
	}
	want := `NAMESPACE     NAME         READY   STATUS             RESTARTS     AGE   IP         NODE     NOMINATED NODE   READINESS GATES
kube-system   fluentd-n1   1/2     CrashLoopBackOff   2 (5m ago)   60m   10.0.0.5   n1       <none>           <none>
default       init-n2      0/1     Init:0/1           0            3s    <none>     <none>   <none>           <none>
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestPrintObjects(t *testing.T) {
	ds := fixedDaemonSets()
	objs := []runtime.Object{&ds[0]}
	var b bytes.Buffer
	if err := printObjects(&b, "name", kindDaemonSet, objs, false); err != nil || b.String() != "daemonset.apps/fluentd\n" {
		t.Errorf("name: %q %v", b.String(), err)
	}
	b.Reset()
	if err := printObjects(&b, "yaml", kindDaemonSet, objs, false); err != nil {
		t.Fatal(err)
	}
	if y := b.String(); !strings.HasPrefix(y, "apiVersion: v1\nitems:\n- apiVersion: apps/v1\n  kind: DaemonSet\n") || !strings.Contains(y, "\nkind: List\nmetadata:\n  resourceVersion: \"\"\n") {
		t.Errorf("yaml list:\n%s", y)
	}
	b.Reset()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}}}
	if err := printObjects(&b, "json", kindNode, []runtime.Object{node}, true); err != nil {
		t.Fatal(err)
	}
	if j := b.String(); !strings.HasPrefix(j, "{\n    \"apiVersion\": \"v1\",\n    \"kind\": \"Node\",\n    \"metadata\": {\n") || !strings.Contains(j, `"cpu": "2"`) || node.Kind != "" {
		t.Errorf("json object:\n%s", j)
	}
}

func TestDescribeDaemonSet(t *testing.T) {
	ds := fixedDaemonSets()[0]
	ds.Labels = map[string]string{"app": "fluentd", "tier": "logging"}
	ds.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "LEVEL", Value: "info"}}
	ds.Spec.Template.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "logs", MountPath: "/var/log", ReadOnly: true}}
	ds.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "logs", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/log"}}}}
	pods := []corev1.Pod{{Status: corev1.PodStatus{Phase: corev1.PodRunning}}, {Status: corev1.PodStatus{Phase: corev1.PodRunning}}, {Status: corev1.PodStatus{Phase: corev1.PodPending}}}
	var b bytes.Buffer
	if err := describeDaemonSet(&b, &ds, pods); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Name:                                            fluentd\n",
		"Selector:                                        app=fluentd\n",
		"Node-Selector:                                   kubernetes.io/os=linux\n",
		"Labels:                                          app=fluentd\n                                                 tier=logging\n",
		"Annotations:                                     <none>\n",
		"Desired Number of Nodes Scheduled:               3\n",
		"Number of Nodes Scheduled with Up-to-date Pods:  1\n",
		"Pods Status:                                     2 Running / 1 Waiting / 0 Succeeded / 0 Failed\n",
		"    fluentd:\n", "      Image:      fluentd:v1\n", "        LEVEL:  info\n", "      Mounts:   /var/log from logs (ro)\n",
		"      Path:          /var/log\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("description lacks %q:\n%s", want, b.String())
		}
	}
}
