package server

import (
	"context"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The node lifecycle controller's reason and message for a silent node.
const (
	nodeStatusUnknownReason  = "NodeStatusUnknown"
	nodeStatusUnknownMessage = "Kubelet stopped posting node status."
	nodeNeverPostedMessage   = "Kubelet never posted node status."
)

// heartbeats holds when each node last posted its status. It lives in
// memory only: a heartbeat that changes nothing else is never written to
// the store, so that thousands of nodes cost little. After a restart every
// node gets a fresh grace period, as with kube-controller-manager.
type heartbeats struct {
	mu   sync.Mutex
	last map[string]time.Time // node name → last heartbeat, or start of its grace period (guarded by mu)
	// posted holds only heartbeats nodes really sent, which GET and LIST
	// show (guarded by mu).
	posted map[string]time.Time
}

// newTerm gives every node a fresh grace period when this replica becomes
// the leader: heartbeats that reached other replicas were not counted here,
// and those written to the store are taken into account by checkNodes.
func (h *heartbeats) newTerm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.last)
}

func (h *heartbeats) beat(node string, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last[node] = at
	h.posted[node] = at
}

// presentNode shows a node's latest heartbeat, kept in memory, in what
// clients read (GET and LIST); the store keeps the last one written.
func (s *Server) presentNode(o object) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return
	}
	s.heartbeats.mu.Lock()
	at, ok := s.heartbeats.posted[n.Name]
	s.heartbeats.mu.Unlock()
	if !ok {
		return
	}
	for i := range n.Status.Conditions {
		c := &n.Status.Conditions[i]
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && at.After(c.LastHeartbeatTime.Time) {
			c.LastHeartbeatTime = metav1.NewTime(at)
		}
	}
}

// nodeHeartbeat records a status PUT as a heartbeat and says whether it
// changed anything besides heartbeat times (then it must be written). With
// a HeartbeatWriteInterval it also asks for a write when the stored
// heartbeat is that much older than this one, so that a leader elsewhere
// sees the node alive; both times are the agent's, so the replicas' clocks
// do not enter the comparison.
func (s *Server) nodeHeartbeat(obj, old object) bool {
	s.heartbeats.beat(obj.GetName(), s.clock.Now())
	next, prev := &obj.(*corev1.Node).Status, &old.(*corev1.Node).Status
	if !equality.Semantic.DeepEqual(withoutHeartbeats(next), withoutHeartbeats(prev)) {
		return false
	}
	interval := s.cfg.HeartbeatWriteInterval
	return interval <= 0 || readyHeartbeat(next).Sub(readyHeartbeat(prev)) < interval
}

// readyHeartbeat returns the lastHeartbeatTime of the Ready condition (zero
// without one).
func readyHeartbeat(st *corev1.NodeStatus) time.Time {
	for _, c := range st.Conditions {
		if c.Type == corev1.NodeReady {
			return c.LastHeartbeatTime.Time
		}
	}
	return time.Time{}
}

func withoutHeartbeats(st *corev1.NodeStatus) *corev1.NodeStatus {
	c := st.DeepCopy()
	for i := range c.Conditions {
		c.Conditions[i].LastHeartbeatTime = metav1.Time{}
	}
	return c
}

// nodeWritten starts the grace period of a newly registered node.
func (s *Server) nodeWritten(_ context.Context, obj object) {
	s.heartbeats.mu.Lock()
	defer s.heartbeats.mu.Unlock()
	if _, ok := s.heartbeats.last[obj.GetName()]; !ok {
		s.heartbeats.last[obj.GetName()] = s.clock.Now()
	}
}

// runNodeMonitor checks the nodes' heartbeats a few times per grace
// period.
func (s *Server) runNodeMonitor(ctx context.Context) {
	period := s.cfg.NodeMonitorGracePeriod / 4
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(period):
		}
		if err := s.checkNodes(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("checking node heartbeats", "error", err)
		}
	}
}

// checkNodes marks Ready=Unknown every node silent for longer than the
// grace period, writing only nodes whose Ready condition changes.
func (s *Server) checkNodes(ctx context.Context) error {
	// The cache's shared nodes: a silent one is copied before it changes.
	nodes, _, err := s.nodeCache.list(ctx, s.store)
	if err != nil {
		return err
	}
	now := s.clock.Now()
	var silent []*corev1.Node
	s.heartbeats.mu.Lock()
	seen := make(map[string]bool, len(nodes))
	for _, o := range nodes {
		n := o.(*corev1.Node)
		seen[n.Name] = true
		last, ok := s.heartbeats.last[n.Name]
		if !ok {
			s.heartbeats.last[n.Name] = now // first seen since start: a fresh grace period
			continue
		}
		// A heartbeat another replica wrote counts too.
		if stored := readyHeartbeat(&n.Status); stored.After(last) {
			last = stored
		}
		if now.Sub(last) >= s.cfg.NodeMonitorGracePeriod {
			silent = append(silent, n.DeepCopy())
		}
	}
	for name := range s.heartbeats.last {
		if !seen[name] {
			delete(s.heartbeats.last, name)
			delete(s.heartbeats.posted, name)
		}
	}
	s.heartbeats.mu.Unlock()

	for _, n := range silent {
		if !markUnknown(n, now) {
			continue
		}
		data, err := s.nodes.encode(n)
		if err != nil {
			return err
		}
		rv, err := parseRevision(n.ResourceVersion)
		if err != nil {
			return err
		}
		_, err = s.store.Update(ctx, s.nodes.key("", n.Name), data, rv)
		switch {
		case errdefs.IsConflict(err), errdefs.IsNotFound(err):
			// The node changed or left meanwhile: look again next period.
		case err != nil:
			return err
		default:
			s.log.Info("node stopped posting status", "node", n.Name)
		}
	}
	return nil
}

// markUnknown sets the Ready condition to Unknown as the node lifecycle
// controller does; false when it already is.
func markUnknown(n *corev1.Node, now time.Time) bool {
	t := metav1.NewTime(now)
	for i := range n.Status.Conditions {
		c := &n.Status.Conditions[i]
		if c.Type != corev1.NodeReady {
			continue
		}
		if c.Status == corev1.ConditionUnknown {
			return false
		}
		c.Status, c.Reason, c.Message, c.LastTransitionTime = corev1.ConditionUnknown, nodeStatusUnknownReason, nodeStatusUnknownMessage, t
		return true
	}
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{
		Type: corev1.NodeReady, Status: corev1.ConditionUnknown, Reason: nodeStatusUnknownReason,
		Message: nodeNeverPostedMessage, LastHeartbeatTime: t, LastTransitionTime: t,
	})
	return true
}
