package api

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/rand"
)

// LabelControllerRevisionHash is the label that carries a pod template's
// revision hash on daemon pods and revisions, as in Kubernetes.
const LabelControllerRevisionHash = "controller-revision-hash"

// TemplateHash returns the revision hash of a pod template: FNV-32a over the
// template's JSON encoding (deterministic: struct fields in order, map keys
// sorted) plus the collision count when set, encoded with
// rand.SafeEncodeString like the controller-revision-hash label. Hash the
// template as stored (defaulted, before daemon tolerations are added), so
// that the same manifest always yields the same revision.
func TemplateHash(tmpl *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	// Encoding an API struct cannot fail: it holds no channels, functions
	// or cyclic pointers, and its custom marshalers (quantities, times)
	// always succeed.
	data, err := json.Marshal(tmpl)
	if err != nil {
		panic(fmt.Sprintf("encoding a pod template: %v", err))
	}
	h.Write(data)
	if collisionCount != nil {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(*collisionCount))
		h.Write(b[:])
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}
