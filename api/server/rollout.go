package server

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/daemonlet/daemonlet/api"
)

// Rollout controller tuning.
const (
	// rolloutMinInterval is the least time between the starts of two
	// syncs: a change after a quiet spell is synced at once (a rollout
	// wave waits on the controller), a burst of changes is gathered into
	// the next sync. The interval grows to the last sync's duration, up
	// to rolloutMaxInterval, so that a large fleet's syncs leave the
	// server at least half of a core.
	rolloutMinInterval = 50 * time.Millisecond
	rolloutMaxInterval = time.Second
	// rolloutRetry is the delay before a failed sync is retried.
	rolloutRetry = time.Second
	// maxPinWritesPerSync bounds the Node writes of one sync, so that a
	// DaemonSet new to 5000 nodes does not hold the controller for one long
	// sync; the rest follow in the next syncs, started at once. Agents do
	// not wait for pins (a missing pin runs the current template).
	maxPinWritesPerSync = 1000
	// pinWriters is how many Node writes run at once: etcd batches
	// concurrent writes into one fsync.
	pinWriters = 8
	// eventTTL is how long Events are kept (kube-apiserver's --event-ttl
	// default); the rollout controller deletes older ones every
	// eventGCPeriod, so that nodes reporting about themselves cannot fill
	// the store.
	eventTTL      = time.Hour
	eventGCPeriod = 10 * time.Minute
)

// The rollout controller (issue 5) drives DaemonSet updates on the fleet
// by pinning, in each Node's api.AnnotationNodeRevisions, the revisions
// its agent runs; the agents do the rest. Every sync reads everything from
// the store (DaemonSets, Nodes with their pins, Pods, ControllerRevisions;
// Nodes and Pods through the decoded-object cache, which decodes only what
// changed), so a new leader resumes a rollout half way; only the progress clock is
// kept in memory, and a new leader starts every deadline afresh. Per DaemonSet, one sync:
//
//  1. constructHistory: the current template's ControllerRevision exists,
//     with the highest revision number, before any node is pinned to it;
//  2. planRollout: the new pin lists (pure, rollout_plan.go);
//  3. cleanupHistory: old revisions beyond revisionHistoryLimit go, except
//     those pinned or carried by a live pod;
//  4. progress: the Progressing condition, the deadline, its Event,
//     metric and automatic rollback, and the fully-available mark;
//
// then the pin changes of all DaemonSets are written node by node (one
// annotation per node holds them all), at most maxPinWritesPerSync per
// sync.

// rolloutController is one leadership term's rollout controller; only its
// goroutine uses it.
type rolloutController struct {
	s *Server
	// progress is, per DaemonSet, the rollout it tracks and when it last
	// progressed.
	progress map[types.UID]*rolloutProgress
}

// rolloutProgress is the progress of one DaemonSet's current rollout.
type rolloutProgress struct {
	hash               string
	last               time.Time // the last progress (or the rollout's start)
	availableAtCurrent int
}

// runRolloutController syncs the rollouts when DaemonSets, Nodes, Pods or
// ControllerRevisions change (rate-limited by rolloutMinInterval), when a
// pod is due to become available, at a progress deadline, and at once
// while pin writes remain.
func (s *Server) runRolloutController(ctx context.Context) {
	c := &rolloutController{s: s, progress: map[types.UID]*rolloutProgress{}}
	defer s.rolloutMetrics.reset()
	var (
		due      <-chan time.Time
		lastSync time.Time     // when the last sync started
		lastTook time.Duration // how long it took
	)
	gc := s.clock.After(eventGCPeriod)
	for {
		select {
		case <-ctx.Done():
			return
		case <-gc:
			if err := s.collectEvents(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("deleting expired events", "error", err)
			}
			gc = s.clock.After(eventGCPeriod)
			continue
		case <-s.rolloutKick:
		case <-due:
		}
		if wait := max(rolloutMinInterval, min(lastTook, rolloutMaxInterval)) - s.clock.Since(lastSync); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-s.clock.After(wait):
			}
		}
		select { // changes so far are covered by this sync
		case <-s.rolloutKick:
		default:
		}
		lastSync = s.clock.Now()
		start := time.Now()
		next, err := c.sync(ctx)
		lastTook = time.Since(start)
		s.rolloutMetrics.syncDuration.Observe(lastTook.Seconds())
		if err != nil && ctx.Err() == nil {
			s.log.Error("syncing DaemonSet rollouts", "error", err)
			next = rolloutRetry
		}
		due = nil
		if next > 0 {
			due = s.clock.After(next)
		}
	}
}

// kickRollout asks the rollout controller for a sync without blocking.
func (s *Server) kickRollout() {
	select {
	case s.rolloutKick <- struct{}{}:
	default:
	}
}

// kickControllers wakes the status and rollout controllers after a change.
func (s *Server) kickControllers() {
	s.kickStatus()
	s.kickRollout()
}

// rolloutState is one sync's read of the store.
type rolloutState struct {
	dss   []*appsv1.DaemonSet
	nodes []*corev1.Node
	revs  map[string]api.NodeRevisions               // node → its pins
	pods  map[types.UID]map[string][]*corev1.Pod     // DaemonSet UID → node → pods, oldest first
	crs   map[types.UID][]*appsv1.ControllerRevision // DaemonSet UID → its revisions
}

func (c *rolloutController) read(ctx context.Context) (*rolloutState, error) {
	s := c.s
	st := &rolloutState{revs: map[string]api.NodeRevisions{}, pods: map[types.UID]map[string][]*corev1.Pod{}, crs: map[types.UID][]*appsv1.ControllerRevision{}}
	// Revisions before DaemonSets: a revision whose DaemonSet is not
	// listed then is one whose DaemonSet is gone.
	crs, _, err := s.list(ctx, s.controllerRevisions, "", nil)
	if err != nil {
		return nil, err
	}
	dss, _, err := s.list(ctx, s.daemonSets, "", nil)
	if err != nil {
		return nil, err
	}
	// From the decoded caches, whose objects are shared: pods are only
	// read, nodes are copied below since pinNode changes them.
	nodes, _, err := s.nodeCache.list(ctx, s.store)
	if err != nil {
		return nil, err
	}
	pods, _, err := s.podCache.list(ctx, s.store)
	if err != nil {
		return nil, err
	}
	live := map[types.UID]bool{}
	for _, o := range dss {
		ds := o.(*appsv1.DaemonSet)
		st.dss = append(st.dss, ds)
		live[ds.UID] = true
	}
	for _, o := range nodes {
		n := o.(*corev1.Node).DeepCopy()
		st.nodes = append(st.nodes, n)
		revs, err := api.ParseNodeRevisions(n)
		if err != nil {
			s.log.Warn("replacing unreadable pins", "node", n.Name, "error", err)
			revs = api.NodeRevisions{}
		}
		st.revs[n.Name] = revs
	}
	for _, o := range pods {
		p := o.(*corev1.Pod)
		ref := metav1.GetControllerOf(p)
		if ref == nil || ref.Kind != "DaemonSet" || p.Spec.NodeName == "" {
			continue
		}
		byNode := st.pods[ref.UID]
		if byNode == nil {
			byNode = map[string][]*corev1.Pod{}
			st.pods[ref.UID] = byNode
		}
		byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p)
	}
	for _, byNode := range st.pods {
		for _, ps := range byNode {
			slices.SortFunc(ps, func(a, b *corev1.Pod) int {
				if olderPod(a, b) {
					return -1
				}
				return 1
			})
		}
	}
	for _, o := range crs {
		cr := o.(*appsv1.ControllerRevision)
		ref := metav1.GetControllerOf(cr)
		if ref == nil || ref.Kind != "DaemonSet" {
			continue // not the controller's: left alone
		}
		if !live[ref.UID] {
			// No garbage collector runs: the history of a deleted
			// DaemonSet goes with it.
			if err := s.deleteObject(ctx, s.controllerRevisions, cr); err != nil {
				return nil, err
			}
			continue
		}
		st.crs[ref.UID] = append(st.crs[ref.UID], cr)
	}
	return st, nil
}

// dsKey is a DaemonSet's key in the pins annotation.
func dsKey(ds *appsv1.DaemonSet) string { return ds.Namespace + "/" + ds.Name }

// sync is one pass over every DaemonSet; it returns when to look again (0:
// on the next change only).
func (c *rolloutController) sync(ctx context.Context) (time.Duration, error) {
	s := c.s
	st, err := c.read(ctx)
	if err != nil {
		return 0, err
	}
	now := s.clock.Now()
	changes := map[string]map[string][]string{} // node → DaemonSet key → pins (nil: remove)
	hashes := map[string]string{}               // DaemonSet key → current hash
	var next time.Duration
	soonest := func(d time.Duration) {
		if d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	var errs []error
	live := map[string]bool{}
	seen := map[types.UID]bool{}
	slices.SortFunc(st.dss, func(a, b *appsv1.DaemonSet) int { return cmp.Compare(dsKey(a), dsKey(b)) })
	for _, ds := range st.dss {
		key := dsKey(ds)
		live[key] = true
		seen[ds.UID] = true
		if ds.DeletionTimestamp != nil {
			continue
		}
		hash := api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
		hashes[key] = hash
		plan, due, err := c.syncDaemonSet(ctx, st, ds, hash, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("DaemonSet %s: %w", key, err))
			continue
		}
		soonest(due)
		for node, pins := range plan.pins {
			if changes[node] == nil {
				changes[node] = map[string][]string{}
			}
			changes[node][key] = pins
		}
	}
	for uid := range c.progress {
		if !seen[uid] {
			delete(c.progress, uid)
		}
	}
	s.rolloutMetrics.forgetExcept(live)
	// Pins of DaemonSets that are gone: the agents stop their pods anyway.
	for node, revs := range st.revs {
		for key := range revs {
			if !live[key] {
				if changes[node] == nil {
					changes[node] = map[string][]string{}
				}
				changes[node][key] = nil
			}
		}
	}
	more, err := c.writePins(ctx, st, changes, hashes)
	if err != nil {
		errs = append(errs, err)
	}
	if more {
		soonest(time.Millisecond) // the rest of the writes, after rolloutMinInterval
	}
	return next, errors.Join(errs...)
}

// syncDaemonSet runs steps 1 to 4 for one DaemonSet and returns its plan
// and when it wants to be looked at again.
func (c *rolloutController) syncDaemonSet(ctx context.Context, st *rolloutState, ds *appsv1.DaemonSet, hash string, now time.Time) (*rolloutPlan, time.Duration, error) {
	s := c.s
	key := dsKey(ds)
	crs, err := s.constructHistory(ctx, ds, hash, st.crs[ds.UID])
	if err != nil {
		return nil, 0, err
	}
	in := rolloutInput{ds: ds, hash: hash, now: now, recorded: map[string]bool{}}
	for _, cr := range crs {
		in.recorded[revisionHash(cr)] = true
	}
	inUse := map[string]bool{hash: true}
	for _, n := range st.nodes {
		shouldRun, shouldContinue := api.NodeShouldRunDaemonPod(n, ds)
		rn := rolloutNode{name: n.Name, eligible: shouldRun, keep: shouldContinue, reachable: nodeReachable(n), pins: st.revs[n.Name][key]}
		for _, p := range st.pods[ds.UID][n.Name] {
			rp := rolloutPod{hash: p.Labels[api.LabelControllerRevisionHash], terminating: p.DeletionTimestamp != nil}
			if rc := readyCondition(p); rc != nil && rc.Status == corev1.ConditionTrue {
				rp.ready, rp.readySince = true, rc.LastTransitionTime.Time
			}
			rn.pods = append(rn.pods, rp)
			inUse[rp.hash] = true
		}
		for _, h := range rn.pins {
			inUse[h] = true
		}
		in.nodes = append(in.nodes, rn)
	}
	plan, err := planRollout(in)
	if err != nil {
		return nil, 0, err
	}
	if len(plan.pins) > 0 {
		s.log.Debug("rollout step", "daemonset", key, "revision", hash, "plan", plan)
	}
	for _, pins := range plan.pins {
		for _, h := range pins {
			inUse[h] = true
		}
	}
	if err := s.cleanupHistory(ctx, ds, hash, crs, inUse); err != nil {
		return nil, 0, err
	}
	s.rolloutMetrics.observe(ds, plan)
	due, err := c.trackProgress(ctx, ds, hash, crs, plan, now)
	if err != nil {
		return nil, 0, err
	}
	if plan.requeue > 0 && (due == 0 || plan.requeue < due) {
		due = plan.requeue
	}
	return plan, due, nil
}

// nodeReachable tells whether the node's agent still reports: a Ready
// condition that the node monitor has not turned Unknown.
func nodeReachable(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status != corev1.ConditionUnknown
		}
	}
	return false
}

// trackProgress maintains the Progressing condition of a RollingUpdate
// DaemonSet (as a Deployment's; apps/v1 DaemonSet conditions have no
// lastUpdateTime),
// marks a revision that became available everywhere, and at the progress
// deadline reports the failure and, when asked, rolls back. It returns
// when the deadline falls (0: none pending).
func (c *rolloutController) trackProgress(ctx context.Context, ds *appsv1.DaemonSet, hash string, crs []*appsv1.ControllerRevision, plan *rolloutPlan, now time.Time) (time.Duration, error) {
	s := c.s
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		return 0, nil
	}
	cond := daemonSetCondition(ds, api.DaemonSetProgressing)
	p := c.progress[ds.UID]
	switch {
	case p == nil:
		// New in this term: the deadline starts afresh, as node grace
		// periods do (a deadline cut short by a failover would be worse).
		p = &rolloutProgress{hash: hash, last: now, availableAtCurrent: plan.availableAtCurrent}
		if hasMark(crs, hash, AnnotationRolloutFailed) {
			p.last = time.Time{} // it failed under an earlier leader, and stays failed until it progresses
		}
		c.progress[ds.UID] = p
	case p.hash != hash:
		*p = rolloutProgress{hash: hash, last: now, availableAtCurrent: plan.availableAtCurrent}
	case plan.moved > 0 || plan.availableAtCurrent > p.availableAtCurrent:
		p.last = now
	}
	p.availableAtCurrent = plan.availableAtCurrent
	deadline, hasDeadline := api.ProgressDeadline(ds)

	want := appsv1.DaemonSetCondition{Type: api.DaemonSetProgressing, Status: corev1.ConditionTrue, Reason: api.ReasonRolloutInProgress,
		Message: fmt.Sprintf("DaemonSet %q is rolling out revision %s.", ds.Name, hash)}
	var due time.Duration
	switch {
	case plan.complete:
		want.Reason = api.ReasonNewRevisionAvailable
		want.Message = fmt.Sprintf("DaemonSet %q has successfully progressed: revision %s is available on every node.", ds.Name, hash)
		if plan.updated > 0 && !hasMark(crs, hash, AnnotationFullyAvailable) {
			if err := s.setRevisionMarks(ctx, ds, hash, map[string]string{AnnotationFullyAvailable: "true", AnnotationRolloutFailed: ""}); err != nil {
				return 0, err
			}
		}
	case hasDeadline && !now.Before(p.last.Add(deadline)):
		want.Status, want.Reason = corev1.ConditionFalse, api.ReasonProgressDeadlineExceeded
		want.Message = fmt.Sprintf("DaemonSet %q has timed out progressing: revision %s made no progress for %v.", ds.Name, hash, deadline)
		if cond == nil || cond.Reason != api.ReasonProgressDeadlineExceeded {
			return 0, c.deadlineExceeded(ctx, ds, hash, crs, want)
		}
	case hasDeadline:
		due = p.last.Add(deadline).Sub(now)
	}
	return due, c.setCondition(ctx, ds, want)
}

// deadlineExceeded reports a stuck rollout once: condition, Warning
// Event, metric, the revision marked failed, and with auto-rollback the
// rollback.
func (c *rolloutController) deadlineExceeded(ctx context.Context, ds *appsv1.DaemonSet, hash string, crs []*appsv1.ControllerRevision, cond appsv1.DaemonSetCondition) error {
	s := c.s
	if err := s.setRevisionMarks(ctx, ds, hash, map[string]string{AnnotationRolloutFailed: "true"}); err != nil {
		return err
	}
	if err := c.setCondition(ctx, ds, cond); err != nil {
		return err
	}
	s.rolloutMetrics.failures.WithLabelValues(ds.Namespace, ds.Name).Inc()
	s.log.Warn("rollout exceeded its progress deadline", "daemonset", dsKey(ds), "revision", hash)
	target := rollbackTarget(crs, hash)
	msg := cond.Message
	switch {
	case !api.AutoRollback(ds):
	case target == nil:
		msg += " No fully available revision to roll back to."
	default:
		msg += fmt.Sprintf(" Rolling back to revision %d (%s).", target.Revision, revisionHash(target))
	}
	s.recordEvent(ctx, ds, "DaemonSet", corev1.EventTypeWarning, api.ReasonProgressDeadlineExceeded, msg)
	if !api.AutoRollback(ds) || target == nil {
		return nil
	}
	return c.rollBack(ctx, ds, hash, target)
}

// rollbackTarget is the newest revision, other than the failed one, that
// was available everywhere and never failed (nil: none).
func rollbackTarget(crs []*appsv1.ControllerRevision, failed string) *appsv1.ControllerRevision {
	var best *appsv1.ControllerRevision
	for _, cr := range crs {
		if revisionHash(cr) == failed || cr.Annotations[AnnotationFullyAvailable] != "true" || cr.Annotations[AnnotationRolloutFailed] == "true" {
			continue
		}
		if best == nil || cr.Revision > best.Revision {
			best = cr
		}
	}
	return best
}

// rollBack writes the target revision's template into the DaemonSet, as
// kubectl rollout undo does: an ordinary template update, rolled out under
// the update strategy.
func (c *rolloutController) rollBack(ctx context.Context, ds *appsv1.DaemonSet, failed string, target *appsv1.ControllerRevision) error {
	s := c.s
	tmpl, err := api.RevisionTemplate(target)
	if err != nil {
		return err
	}
	rolled := false
	err = s.modifyDaemonSet(ctx, ds.Namespace, ds.Name, ds.UID, func(fresh *appsv1.DaemonSet) bool {
		if api.TemplateHash(&fresh.Spec.Template, fresh.Status.CollisionCount) != failed {
			return false // the template changed meanwhile: that is the user's rollout now
		}
		fresh.Spec.Template = *tmpl
		fresh.Generation++
		rolled = true
		return true
	})
	if err != nil || !rolled {
		return err
	}
	s.rolloutMetrics.rollbacks.WithLabelValues(ds.Namespace, ds.Name).Inc()
	s.log.Warn("rolled back a stuck rollout", "daemonset", dsKey(ds), "from", failed, "to", revisionHash(target))
	s.recordEvent(ctx, ds, "DaemonSet", corev1.EventTypeNormal, api.ReasonRolledBack,
		fmt.Sprintf("Rolled back from revision %s to revision %d (%s): the rollout exceeded its progress deadline.", failed, target.Revision, revisionHash(target)))
	return nil
}

func hasMark(crs []*appsv1.ControllerRevision, hash, mark string) bool {
	for _, cr := range crs {
		if revisionHash(cr) == hash {
			return cr.Annotations[mark] == "true"
		}
	}
	return false
}

func daemonSetCondition(ds *appsv1.DaemonSet, t appsv1.DaemonSetConditionType) *appsv1.DaemonSetCondition {
	for i := range ds.Status.Conditions {
		if ds.Status.Conditions[i].Type == t {
			return &ds.Status.Conditions[i]
		}
	}
	return nil
}

// setCondition writes want into the DaemonSet's status conditions when it
// differs from the stored one (the status controller keeps conditions as it
// finds them); lastTransitionTime moves only with the status.
func (c *rolloutController) setCondition(ctx context.Context, ds *appsv1.DaemonSet, want appsv1.DaemonSetCondition) error {
	now := metav1.NewTime(c.s.clock.Now())
	return c.s.modifyDaemonSet(ctx, ds.Namespace, ds.Name, ds.UID, func(fresh *appsv1.DaemonSet) bool {
		cur := daemonSetCondition(fresh, want.Type)
		if cur == nil {
			want.LastTransitionTime = now
			fresh.Status.Conditions = append(fresh.Status.Conditions, want)
			return true
		}
		if cur.Status == want.Status && cur.Reason == want.Reason && cur.Message == want.Message {
			return false
		}
		want.LastTransitionTime = cur.LastTransitionTime
		if cur.Status != want.Status {
			want.LastTransitionTime = now
		}
		*cur = want
		return true
	})
}

// writePins applies changes (node → DaemonSet key → pins, nil removing
// the key) to the Nodes, pinWriters at a time and at most
// maxPinWritesPerSync; more tells that some were left for the next sync.
// hashes (DaemonSet key → current hash) count the moves onto the current
// revision.
//
// The changes that only drop revisions (a surge ended, a node unpinned)
// are written first, and the others only once all of those succeeded: the
// plan spent the budget they free, so a new surge must not reach an agent
// while the surge it replaces still stands.
func (c *rolloutController) writePins(ctx context.Context, st *rolloutState, changes map[string]map[string][]string, hashes map[string]string) (more bool, err error) {
	var release, take []*corev1.Node
	for _, n := range st.nodes {
		switch change := changes[n.Name]; {
		case change == nil:
		case onlyDrops(st.revs[n.Name], change):
			release = append(release, n)
		default:
			take = append(take, n)
		}
	}
	todo := append(release, take...)
	if len(todo) > maxPinWritesPerSync {
		todo, more = todo[:maxPinWritesPerSync], true
	}
	release, take = todo[:min(len(release), len(todo))], todo[min(len(release), len(todo)):]
	if err := c.writeNodePins(ctx, st, release, changes, hashes); err != nil {
		return true, err
	}
	return more, c.writeNodePins(ctx, st, take, changes, hashes)
}

// onlyDrops tells whether change leaves every DaemonSet of a node with a
// subset of the revisions it is pinned to.
func onlyDrops(before api.NodeRevisions, change map[string][]string) bool {
	for key, pins := range change {
		for _, h := range pins {
			if !slices.Contains(before[key], h) {
				return false
			}
		}
	}
	return true
}

// writeNodePins writes the pin changes of nodes, pinWriters at a time.
func (c *rolloutController) writeNodePins(ctx context.Context, st *rolloutState, nodes []*corev1.Node, changes map[string]map[string][]string, hashes map[string]string) error {
	s := c.s
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, pinWriters)
	)
	for _, n := range nodes {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			before := st.revs[n.Name]
			written, err := s.pinNode(ctx, n, changes[n.Name])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			if !written {
				return
			}
			for key, pins := range changes[n.Name] {
				if h, ok := hashes[key]; ok && slices.Contains(pins, h) && !slices.Contains(before[key], h) && len(before[key]) > 0 {
					ns, name, _ := strings.Cut(key, "/")
					s.rolloutMetrics.moves.WithLabelValues(ns, name).Inc()
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// pinNode applies one node's pin changes with optimistic concurrency,
// re-reading the Node on a conflict (a status write raced us); written is
// false when nothing changed or the node is gone.
func (s *Server) pinNode(ctx context.Context, node *corev1.Node, change map[string][]string) (written bool, err error) {
	for attempt := 0; ; attempt++ {
		revs, err := api.ParseNodeRevisions(node)
		if err != nil {
			revs = api.NodeRevisions{} // unreadable: the controller's to rewrite
		}
		changed := false
		for key, pins := range change {
			if _, ok := revs[key]; pins == nil && ok {
				delete(revs, key)
				changed = true
			} else if pins != nil && !slices.Equal(revs[key], pins) {
				revs[key] = pins
				changed = true
			}
		}
		if !changed {
			return false, nil
		}
		api.SetNodeRevisions(node, revs)
		err = s.updateObject(ctx, s.nodes, node)
		switch {
		case err == nil:
			return true, nil
		case errdefs.IsNotFound(err):
			return false, nil
		case !errdefs.IsConflict(err) || attempt == maxPodRetries:
			return false, err
		}
		_, o, err := s.read(ctx, request{res: s.nodes, name: node.Name})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		node = o.(*corev1.Node)
	}
}

// podDeleted is the pods' afterDelete hook and implements OnDelete: when a
// user (not an agent, which deletes the objects of pods it stopped) deletes
// a DaemonSet pod of a revision that is not the current one, the node is
// pinned to the current revision; its agent restarts the pod on the
// deletion and then replaces it. The pin is written here, on whichever
// replica served the DELETE, rather than remembered for the controller:
// that would be lost with a leader change, and a later sync cannot tell a
// deleted pod from its agent's replacement.
func (s *Server) podDeleted(ctx context.Context, obj object) {
	pod := obj.(*corev1.Pod)
	if _, isNode := strings.CutPrefix(userFrom(ctx).Name, NodeUserPrefix); isNode && slices.Contains(userFrom(ctx).Groups, GroupNodes) {
		return
	}
	ref := metav1.GetControllerOf(pod)
	if ref == nil || ref.Kind != "DaemonSet" || pod.Spec.NodeName == "" {
		return
	}
	_, o, err := s.read(ctx, request{res: s.daemonSets, namespace: pod.Namespace, name: ref.Name})
	if err != nil {
		return // the DaemonSet is gone (or unreadable): nothing to pin
	}
	ds := o.(*appsv1.DaemonSet)
	hash := api.TemplateHash(&ds.Spec.Template, ds.Status.CollisionCount)
	if ds.UID != ref.UID || ds.Spec.UpdateStrategy.Type != appsv1.OnDeleteDaemonSetStrategyType || pod.Labels[api.LabelControllerRevisionHash] == hash {
		return
	}
	_, no, err := s.read(ctx, request{res: s.nodes, name: pod.Spec.NodeName})
	if err == nil {
		_, err = s.pinNode(ctx, no.(*corev1.Node), map[string][]string{dsKey(ds): {hash}})
	}
	if err != nil && !apierrors.IsNotFound(err) {
		s.log.Error("pinning a node to the current revision after its pod was deleted", "node", pod.Spec.NodeName, "daemonset", dsKey(ds), "error", err)
	}
}

// guardNodeRevisions is NodeRestriction for the pins: a node may not set
// or change api.AnnotationNodeRevisions on its Node (its agent would
// choose its own revisions), and a whole-object PUT from a node that
// leaves the annotation out keeps the stored one instead of wiping it; it
// is made conditional on the stored resourceVersion, so that it cannot
// write back pins the controller changed meanwhile. Status writes never
// touch metadata.
func (s *Server) guardNodeRevisions(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := userFrom(r.Context())
		node, isNode := strings.CutPrefix(u.Name, NodeUserPrefix)
		if !isNode || !slices.Contains(u.Groups, GroupNodes) || slices.Contains(u.Groups, GroupMasters) ||
			!strings.HasPrefix(r.URL.Path, s.nodes.basePath()+"/nodes") || strings.HasSuffix(r.URL.Path, "/status") ||
			(r.Method != http.MethodPut && r.Method != http.MethodPost) {
			next.ServeHTTP(w, r)
			return
		}
		var body corev1.Node
		if err := decodeBody(w, r, &body, false); err != nil {
			writeError(w, err)
			return
		}
		refuse := func() {
			writeError(w, apierrors.NewForbidden(s.nodes.groupResource(), body.Name, fmt.Errorf(
				"node %q may not set or change metadata.annotations[%s]: the server's rollout controller owns it", node, api.AnnotationNodeRevisions)))
		}
		pins, hasPins := body.Annotations[api.AnnotationNodeRevisions]
		if r.Method == http.MethodPost {
			if hasPins {
				refuse()
				return
			}
		} else if _, stored, err := s.read(r.Context(), request{res: s.nodes, name: body.Name}); err == nil {
			old := stored.(*corev1.Node)
			oldPins, oldHas := old.Annotations[api.AnnotationNodeRevisions]
			switch {
			case hasPins && (!oldHas || pins != oldPins):
				refuse()
				return
			case !hasPins && oldHas:
				if body.Annotations == nil {
					body.Annotations = map[string]string{}
				}
				body.Annotations[api.AnnotationNodeRevisions] = oldPins
				if body.ResourceVersion == "" {
					body.ResourceVersion = old.ResourceVersion
				}
			}
		}
		data, err := json.Marshal(&body)
		if err != nil {
			writeError(w, apierrors.NewInternalError(err))
			return
		}
		r2 := r.Clone(r.Context())
		r2.Body = io.NopCloser(bytes.NewReader(data))
		r2.ContentLength = int64(len(data))
		r2.Header.Set("Content-Type", "application/json")
		next.ServeHTTP(w, r2)
	})
}

// rolloutMetrics are the rollout controller's metrics (issue 7); the
// per-DaemonSet series of a deleted DaemonSet are deleted with it, and the
// node gauges are the leader's only.
type rolloutMetrics struct {
	nodes                      *prometheus.GaugeVec
	failures, rollbacks, moves *prometheus.CounterVec
	syncDuration               prometheus.Histogram

	mu    sync.Mutex
	known map[string]bool // "namespace/name" with series (guarded by mu)
}

func newRolloutMetrics() *rolloutMetrics {
	labels := []string{"namespace", "daemonset"}
	return &rolloutMetrics{
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "daemonlet_server_rollout_nodes",
			Help: "Eligible nodes of a DaemonSet by rollout state: updated (current revision available), pending (an available older revision, or surging), unavailable (no available pod, or the node unreachable); reported by the leader.",
		}, append(labels, "state")),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "daemonlet_server_rollout_failures_total",
			Help: "Rollouts that exceeded their progress deadline.",
		}, labels),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "daemonlet_server_rollbacks_total",
			Help: "Automatic rollbacks after a rollout exceeded its progress deadline.",
		}, labels),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "daemonlet_server_rollout_node_moves_total",
			Help: "Nodes the rollout controller moved from an older revision onto the current one.",
		}, labels),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "daemonlet_server_rollout_sync_duration_seconds",
			Help:    "Duration of the rollout controller's syncs over every DaemonSet, pin writes included.",
			Buckets: requestDurationBuckets,
		}),
		known: map[string]bool{},
	}
}

func (m *rolloutMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.nodes, m.failures, m.rollbacks, m.moves, m.syncDuration}
}

// observe sets the DaemonSet's node gauges from a plan.
func (m *rolloutMetrics) observe(ds *appsv1.DaemonSet, plan *rolloutPlan) {
	m.mu.Lock()
	m.known[dsKey(ds)] = true
	m.mu.Unlock()
	for state, v := range map[string]int{"updated": plan.updated, "pending": plan.pending, "unavailable": plan.unavailable} {
		m.nodes.WithLabelValues(ds.Namespace, ds.Name, state).Set(float64(v))
	}
}

// forgetExcept deletes the series of every DaemonSet not in live.
func (m *rolloutMetrics) forgetExcept(live map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for key := range m.known {
		if live[key] {
			continue
		}
		ns, name, _ := strings.Cut(key, "/")
		l := prometheus.Labels{"namespace": ns, "daemonset": name}
		for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{m.nodes, m.failures, m.rollbacks, m.moves} {
			v.DeletePartialMatch(l)
		}
		delete(m.known, key)
	}
}

// reset drops the node gauges when the leadership ends: another replica
// reports them now.
func (m *rolloutMetrics) reset() {
	m.nodes.Reset()
}
