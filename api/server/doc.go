// Package server is daemonlet's central endpoint: the Kubernetes-style REST
// API for DaemonSets, Nodes, Pods, ConfigMaps, Secrets, ControllerRevisions
// and Events over a cluster.Store, the watch
// fan-out to agents, authentication and authorization, and the controllers
// that must run once for the whole fleet (DaemonSet status and rollouts,
// node heartbeat timeouts, orphaning and adoption).
//
// Layout:
//
//	resources.go   the descriptor table: one entry per resource (path, kind,
//	               list kind, scope, defaulting/validation/merge hooks);
//	rest.go        one generic implementation of get/list/create/update/
//	               delete over that table;
//	watch.go       one store watch per resource prefix feeding a
//	               broadcaster: events are decoded and JSON-encoded once,
//	               filtered per watcher, and queued per watcher (the queue
//	               grows only while the watcher lags); a watcher that falls
//	               too far behind is dropped (its stream ends and the client
//	               resumes from its last resourceVersion);
//	cache.go       the decoded Nodes and Pods, by store key and revision,
//	               that the controllers share: only what changed is decoded;
//	auth.go        the token file, authentication and the authorization
//	               matrix (system:masters, NodeRestriction for
//	               system:node:<name>, which reads only the ConfigMaps
//	               and Secrets its DaemonSets and pods reference);
//	encryption.go  kube-apiserver's EncryptionConfiguration: Secrets sealed
//	               with AES-GCM (the store key as authenticated data) before
//	               the store sees them, in kube-apiserver's value format;
//	status.go      the DaemonSet status controller (debounced, writes only
//	               on change);
//	nodes.go       heartbeats kept in memory and the node monitor that marks
//	               silent nodes Ready=Unknown;
//	owners.go      orphaning on delete, adoption on create/update, and the
//	               removal of a deleted node's pods;
//	discovery.go   /version, /healthz, /api, /apis: enough for kubectl get;
//	rollout.go     the rollout controller: it pins the revisions each node
//	               runs in the Node's daemonlet.io/daemonset-revisions
//	               annotation (the contract with the agents, api/rollout.go),
//	               the progress deadline, automatic rollback, OnDelete's pod
//	               deletion hook, NodeRestriction for the pins, its metrics;
//	rollout_plan.go the pure planner of one rollout step (maxUnavailable,
//	               maxSurge, OnDelete), table- and property-tested;
//	revisions.go   ControllerRevisions: the resource, constructHistory and
//	               cleanupHistory;
//	events.go      core/v1 Events: the resource and the controllers'
//	               recorder.
//
// # Several replicas
//
// Any number of servers may share one store (etcd): every one serves the
// whole API, and writes stay consistent through the store's compare-and-swap
// on revisions. The work that must happen once, the status controller and
// the node monitor and the rollout controller, runs only on the replica
// that Config.Elector elected;
// Run campaigns, runs them for as long as the leadership lasts (cancelling
// them when it is lost), campaigns again, and resigns on the way out so that
// another replica takes over at once. Their writes carry the revision they
// read, so a deposed leader that has not noticed yet only gets conflicts.
//
// Heartbeats reach whichever replica an agent talks to, and the leader must
// see them without 5000 nodes writing the store every 10s: each replica
// keeps them in memory as a single server does, and with
// Config.HeartbeatWriteInterval (the daemonlet server sets half the grace
// period with etcd) it writes a node's heartbeat only when the stored one is
// that much older. The node monitor counts the newer of the heartbeat it
// received and the stored one, so a node is seen alive within the interval
// plus one agent period, short of the grace period, for a store write every
// interval per node instead of every heartbeat (5000 nodes at 20s: 250
// writes a second; a 3-member etcd on 127.0.0.1 of a shared 2-core machine
// took 5000 node-sized 2.5 KB writes in 2.3s, about 2200 a second, so this
// is about a ninth of it; those writes also use up the store's history
// window, 100000 revisions being some 7 minutes of heartbeats, which only
// shortens how long a disconnected watcher can resume). Forwarding
// heartbeats to the leader would need replica-to-replica traffic and its
// own failover, and an etcd lease per node would need a second key per node
// and lease bookkeeping in the store; the periodic write needs neither. The
// stored time is the agent's clock and the leader compares it with its own,
// so replicas and agents need synchronised clocks (NTP), as Kubernetes'
// node leases do. A new leader gives every node a
// fresh grace period, as kube-controller-manager does after a restart.
//
// resourceVersion is the decimal store revision; objects are stored as JSON
// without it and get it back from the key's ModRevision on every read, so
// the store stays the single source of truth for versions.
package server
