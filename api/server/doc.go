// Package server is daemonlet's central endpoint: the Kubernetes-style REST
// API for DaemonSets, Nodes and Pods over a cluster.Store, the watch
// fan-out to agents, authentication and authorization, and the controllers
// that must run once for the whole fleet (DaemonSet status, node heartbeat
// timeouts, orphaning and adoption).
//
// Layout:
//
//	resources.go   the descriptor table: one entry per resource (path, kind,
//	               list kind, scope, defaulting/validation/merge hooks);
//	rest.go        one generic implementation of get/list/create/update/
//	               delete over that table;
//	watch.go       one store watch per resource prefix feeding a
//	               broadcaster: events are decoded and JSON-encoded once,
//	               filtered per watcher, and sent on a buffered channel; a
//	               watcher whose buffer is full is dropped (its stream ends
//	               and the client resumes from its last resourceVersion);
//	auth.go        the token file, authentication and the authorization
//	               matrix (system:masters, NodeRestriction for
//	               system:node:<name>);
//	status.go      the DaemonSet status controller (debounced, writes only
//	               on change);
//	nodes.go       heartbeats kept in memory and the node monitor that marks
//	               silent nodes Ready=Unknown;
//	owners.go      orphaning on delete, adoption on create/update, and the
//	               removal of a deleted node's pods;
//	discovery.go   /version, /healthz, /api, /apis: enough for kubectl get.
//
// resourceVersion is the decimal store revision; objects are stored as JSON
// without it and get it back from the key's ModRevision on every read, so
// the store stays the single source of truth for versions.
package server
