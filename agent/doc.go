// Package agent is daemonlet's node agent core: it merges the desired
// DaemonSets of its sources, decides from the node's labels and taints which
// of them run here, and drives one worker per daemon pod through the
// runtime.
//
// # Data flow
//
//	sources ──SourceUpdate──► Run: merge by namespace/name, persist to the
//	                          store (ReplaceDesired), then sync
//	sync: eligibility per DaemonSet (api.NodeShouldRunDaemonPod, NoExecute
//	      eviction) → podIntent list → planPods (pure) → start / update /
//	      stop pod workers; the sync loop never waits on a worker
//	worker: computePodActions (pure) → executor steps → runtime
//
// # ConfigMaps and Secrets
//
// A SourceUpdate also carries the source's full sets of ConfigMaps and
// Secrets; they are persisted (ReplaceObjects, Secrets encrypted) before
// the DaemonSets that use them, merged into one immutable snapshot, and
// every worker is woken when it changes. A worker writes its pod's
// configMap, secret and projected volumes into the sandbox's directories
// (a tmpfs for Secrets) kubelet's atomic way (writeVolume: a timestamped
// directory behind a "..data" symlink swapped by one rename) before the
// first container starts, and again whenever the snapshot changes, without
// restarting anything. Env references (configMapKeyRef, secretKeyRef,
// envFrom) are resolved into plain values on a copy of the container at
// each create, so they take effect at the next start; the container's spec
// hash stays that of the template (runtime.CreatedSpecHash). A missing
// object that is not optional holds the container in
// CreateContainerConfigError until a snapshot brings it.
//
// # Pod worker state machine
//
// Each pod has one goroutine. Its state field is the single source of truth
// for where the pod is in its life; nothing is derived from flags.
//
//	               pod received
//	Pending ─────────────────────► Pulling ───► Starting ───► Running
//	                                 ▲   │        ▲   │          │
//	                   back-off over │   │ pull   │   │ create   │ a container
//	                                 │   ▼ failed │   ▼ failed   │ exited
//	                                BackOff ◄─────────┴──────────┘
//
//	any state ── stop requested ──► Terminating ──► Terminated
//	Pending ── spec uses unsupported fields ──► Failed (nothing runs)
//
// A stop cancels the per-pod context, so a hung pull or create is
// abandoned. Terminating stops the containers in parallel with the grace
// period (at least 2s), then removes them, the sandbox and the pod record;
// Terminated means the worker has exited. A crashed container waits in
// BackOff (CrashLoopBackOff) before it is restarted, as does a failed pull
// (ImagePullBackOff) or a failed create (CreateContainerError).
//
// Terminating retries with a bounded back-off until it succeeds; an agent
// shutdown interrupts it and leaves the pod record marked Terminating, so
// that the next agent finishes the job.
//
// # Shutdown and restart
//
// Cancelling Run's context stops the sync loop and every worker but leaves
// the containers running: only a pod stop kills containers. On start, the
// agent loads the last-known desired state and the pod records from the
// store and lists the runtime's containers; running containers whose pod,
// revision and container spec hash are still desired are adopted, not
// restarted. Pods that are no longer desired are removed only once every
// source has delivered a set or the last-known state came from the store.
//
// # Locking
//
// Agent.mu guards the agent's maps; podWorker.mu guards a worker's shared
// fields. A worker never takes Agent.mu while it holds its own lock.
package agent
