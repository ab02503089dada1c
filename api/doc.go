// Package api is the contract shared by the daemonlet agent, server and CLI.
//
// It uses Kubernetes' own types (k8s.io/api apps/v1 DaemonSet, core/v1 Pod
// and Node) rather than copies, so that real DaemonSet YAML works unchanged,
// and adds what the Kubernetes API server and controllers would otherwise
// supply:
//
//   - Decode / DecodeAndValidate: strict YAML or JSON decoding of manifests,
//     where every error names the source, the document and the field path;
//   - SetDefaultsDaemonSet / SetDefaultsPod: the API server's defaulting;
//   - ValidateDaemonSet / ValidateDaemonSetUpdate / ValidatePod: the API
//     server's validation, as field.ErrorList;
//   - NodeShouldRunDaemonPod / NoExecuteEvictionDelay: the DaemonSet
//     controller's eligibility predicate and the taint-eviction controller's
//     timing;
//   - ParseNodeLabels / ParseTaints / NewNode: the node's self-description
//     from kubelet-style flags;
//   - TemplateHash: the controller-revision-hash of a pod template;
//   - SetDefaults/Validate(Update) of ConfigMaps and Secrets, and
//     ReferencedObjects: which of them a pod spec needs (what a node may
//     read, and what an agent must fetch).
//
// The package imports no other daemonlet package, so every other package may
// depend on it.
package api
