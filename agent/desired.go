package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/api"
	"github.com/daemonlet/daemonlet/runtime"
	"github.com/daemonlet/daemonlet/store"
)

// SourceUpdate is the full desired set of one source. An update with Err
// set says the source could not be read: the previous set of that source
// stays in force, so a bad read never removes pods.
type SourceUpdate struct {
	Source     string
	DaemonSets []*appsv1.DaemonSet
	// ConfigMaps and Secrets are the source's full sets of the objects its
	// pods reference; they replace the source's previous sets whole.
	ConfigMaps []*corev1.ConfigMap
	Secrets    []*corev1.Secret
	Err        error
}

// DesiredPod is one DaemonSet that a source wants on the node, with the
// template revision this node should run.
type DesiredPod struct {
	Namespace string
	Name      string
	Source    string
	// DaemonSet is the defaulted object as the source delivered it.
	DaemonSet *appsv1.DaemonSet
	// Revision is the template hash (the controller-revision-hash label)
	// of the newest revision, the last of Revisions.
	Revision string
	// Revisions are the revisions this node runs, oldest first: the
	// template's alone, or those the server's rollout controller pinned
	// (AnnotationRunRevisions). The last is started; an earlier one, the
	// old revision of a surge, only keeps running.
	Revisions []podRevision
}

// Key is the DaemonSet's namespace/name.
func (d DesiredPod) Key() string { return d.Namespace + "/" + d.Name }

// held says a pinned revision's template is unknown: the agent does not
// guess, it keeps whatever runs for the DaemonSet and starts nothing until
// the server source knows the revision.
func (d DesiredPod) held() bool {
	return slices.ContainsFunc(d.Revisions, func(r podRevision) bool { return r.Template == nil })
}

// newDesiredPod checks and wraps one DaemonSet of a source.
func newDesiredPod(source string, ds *appsv1.DaemonSet) (DesiredPod, error) {
	if ds == nil || ds.Name == "" {
		return DesiredPod{}, fmt.Errorf("source %s: DaemonSet without metadata.name: %w", source, errdefs.ErrInvalidArgument)
	}
	ns := ds.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	rev := api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
	if r := ds.Annotations[AnnotationRevision]; r != "" && source == SourceServer {
		rev = r
	}
	revs := []podRevision{{Hash: rev, Template: &ds.Spec.Template}}
	if v, ok := ds.Annotations[AnnotationRunRevisions]; ok && source == SourceServer {
		var err error
		if revs, err = parseRunRevisions(v); err != nil {
			return DesiredPod{}, fmt.Errorf("source %s: DaemonSet %s/%s: %w", source, ns, ds.Name, err)
		}
	}
	return DesiredPod{
		Namespace: ns,
		Name:      ds.Name,
		Source:    source,
		DaemonSet: ds,
		Revision:  revs[len(revs)-1].Hash,
		Revisions: revs,
	}, nil
}

// AnnotationRevision, on a DaemonSet of the server source, names the
// revision its pod runs instead of the template hash. The server source sets
// it on the DaemonSet it builds from an orphan pod (its owner was deleted
// with propagationPolicy Orphan), so that the rebuilt template, which need
// not hash as the original did, keeps the pod's revision and thus its UID:
// the pod runs on untouched. Other sources' DaemonSets never honour it, so a
// manifest cannot pin a revision and skip its rollouts.
const AnnotationRevision = "daemonlet.io/revision"

// desiredRecords turns a source's set into store records.
func desiredRecords(pods []DesiredPod, now time.Time) ([]store.DesiredRecord, error) {
	recs := make([]store.DesiredRecord, 0, len(pods))
	for _, d := range pods {
		b, err := json.Marshal(d.DaemonSet)
		if err != nil {
			return nil, fmt.Errorf("encode DaemonSet %s: %w", d.Key(), err)
		}
		recs = append(recs, store.DesiredRecord{Source: d.Source, Key: d.Key(), Revision: d.Revision, Object: b, UpdatedAt: now})
	}
	return recs, nil
}

// desiredFromRecord decodes one persisted DaemonSet.
func desiredFromRecord(rec store.DesiredRecord) (DesiredPod, error) {
	var ds appsv1.DaemonSet
	if err := json.Unmarshal(rec.Object, &ds); err != nil {
		return DesiredPod{}, fmt.Errorf("stored DaemonSet %s of source %s: %w: %w", rec.Key, rec.Source, errdefs.ErrInvalidArgument, err)
	}
	return newDesiredPod(rec.Source, &ds)
}

// sourceConflict is a DaemonSet name that two sources define.
type sourceConflict struct {
	Key    string // namespace/name
	Winner string // the source registered first, whose DaemonSet is used
	Loser  string // the source whose DaemonSet is ignored
}

func (c sourceConflict) String() string {
	return fmt.Sprintf("DaemonSet %s from source %q ignored: source %q already defines it", c.Key, c.Loser, c.Winner)
}

// mergeSources merges the sets of the sources by namespace/name. When two
// sources deliver the same name, the source registered first wins, so the
// outcome never depends on timing; every such clash is returned as a
// conflict. Within one source, the first occurrence wins. The result is
// sorted by key.
func mergeSources(order []string, sets map[string][]DesiredPod) (merged []DesiredPod, conflicts []sourceConflict) {
	owner := map[string]DesiredPod{}
	for _, src := range order {
		for _, d := range sets[src] {
			if first, ok := owner[d.Key()]; ok {
				conflicts = append(conflicts, sourceConflict{Key: d.Key(), Winner: first.Source, Loser: src})
				continue
			}
			owner[d.Key()] = d
		}
	}
	for _, k := range slices.Sorted(maps.Keys(owner)) {
		merged = append(merged, owner[k])
	}
	return merged, conflicts
}

// podName is the daemon pod's name on this node. It is deterministic, like
// a static pod's, so that a restarted agent finds its pods again. A second
// pod of the DaemonSet (a surge) gets surgePodName instead.
func podName(dsName, node string) string {
	return dsName + "-" + strings.ToLower(node)
}

// surgePodName is the name of a pod started while another pod of the same
// DaemonSet holds podName on the node: the server keys Pod objects by
// name, so the two need distinct ones. The revision makes it
// deterministic; a pod keeps the name it started with (see planPods).
func surgePodName(name, revision string) string {
	return name + "-" + revision
}

// podUID is the daemon pod's UID: a hash of the DaemonSet's identity, the
// node and the revision. It survives agent restarts, and a new revision
// gives a new pod, as the DaemonSet controller creates a new pod on update.
// A DaemonSet deleted and re-created with the same template keeps its pods.
func podUID(namespace, dsName, node, revision string) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{namespace, dsName, node, revision}, "\x00")))
	h := hex.EncodeToString(sum[:16])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// buildPod makes the runtime's pod of one revision of a DaemonSet, as the
// controller's pod template does: the revision's template labels plus
// controller-revision-hash, the daemon tolerations, and the node name. The
// name is podName; the planner may give it another (surgePodName).
func buildPod(d DesiredPod, rev podRevision, node string) *runtime.Pod {
	tmpl := rev.Template
	spec := tmpl.Spec.DeepCopy()
	api.AddDaemonPodTolerations(spec)
	spec.NodeName = node
	labels := maps.Clone(tmpl.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[api.LabelControllerRevisionHash] = rev.Hash
	return &runtime.Pod{
		UID:         podUID(d.Namespace, d.Name, node, rev.Hash),
		Name:        podName(d.Name, node),
		Namespace:   d.Namespace,
		NodeName:    node,
		Revision:    rev.Hash,
		Labels:      labels,
		Annotations: maps.Clone(tmpl.Annotations),
		Spec:        spec,
	}
}

// decision is what the node's eligibility means for one DaemonSet.
type decision int

const (
	// decideRun: the pod belongs here; start it if it is missing.
	decideRun decision = iota
	// decideKeep: an existing pod may keep running, but none is started
	// (an untolerated NoSchedule taint appeared after the pod started).
	decideKeep
	// decideStop: the pod must go.
	decideStop
)

func (d decision) String() string {
	switch d {
	case decideRun:
		return "run"
	case decideKeep:
		return "keep"
	}
	return "stop"
}

// eligibility is what the node's labels and taints say of one DaemonSet
// whatever the time: the DaemonSet controller's three-way predicate and the
// taint-eviction controller's delay for the daemon pod's tolerations. It
// changes only with the node or the DaemonSet, so the agent keeps it
// between sync passes; decide adds the time.
type eligibility struct {
	shouldRun, shouldContinue bool
	// evict, after and forever are api.NoExecuteEvictionDelay's answer.
	evict, forever bool
	after          time.Duration
}

// nodeEligibility evaluates ds, whose daemon pod has these tolerations, on
// node.
func nodeEligibility(node *corev1.Node, ds *appsv1.DaemonSet, tolerations []corev1.Toleration) eligibility {
	var e eligibility
	e.shouldRun, e.shouldContinue = api.NodeShouldRunDaemonPod(node, ds)
	if e.shouldRun || e.shouldContinue {
		e.evict, e.after, e.forever = api.NoExecuteEvictionDelay(node.Spec.Taints, tolerations)
	}
	return e
}

// decide applies the DaemonSet controller's three-way eligibility and the
// taint-eviction controller's tolerationSeconds at now. The eviction delay
// counts from noExecuteSince, when the agent last saw the node's NoExecute
// taints change. It returns the instant at which the answer changes by
// itself (zero if never) and why the pod must go.
func (e eligibility) decide(noExecuteSince, now time.Time) (d decision, wakeAt time.Time, why string) {
	if !e.shouldRun && !e.shouldContinue {
		return decideStop, time.Time{}, "node no longer eligible"
	}
	if e.evict && !e.forever {
		deadline := noExecuteSince.Add(e.after)
		if !now.Before(deadline) {
			return decideStop, time.Time{}, fmt.Sprintf("evicted: NoExecute taint tolerated for %v", e.after)
		}
		wakeAt = deadline
	}
	if e.shouldRun {
		return decideRun, wakeAt, ""
	}
	return decideKeep, wakeAt, ""
}

// noExecuteTaints is a canonical form of the node's NoExecute taints, so
// that the agent can tell when they change.
func noExecuteTaints(node *corev1.Node) string {
	var out []string
	for _, t := range node.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoExecute {
			out = append(out, t.Key+"="+t.Value)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
