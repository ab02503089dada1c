package store

import (
	"bytes"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// PodRecord is what the agent must remember about a pod it created that
// containerd cannot tell it: ownership, revision and crash-loop state.
type PodRecord struct {
	// UID identifies the pod; it is the pod's bucket name.
	UID string
	// Namespace is the pod's namespace.
	Namespace string
	// Name is the pod's name.
	Name string
	// Owner is the owning DaemonSet as "namespace/name".
	Owner string
	// Source names the desired-state source the pod came from.
	Source string
	// Revision is the template revision the pod runs.
	Revision string
	// CreatedAt is when the agent created the pod.
	CreatedAt time.Time
	// Containers holds per-container restart state, keyed by container name.
	Containers map[string]ContainerRecord
	// Terminating records that a stop was decided, so that a restarted agent
	// finishes the stop instead of restarting the pod.
	Terminating bool
}

// ContainerRecord is the restart and back-off state of one container, kept
// so that an agent restart does not reset CrashLoopBackOff.
type ContainerRecord struct {
	// RestartCount is how many times the container has been restarted.
	RestartCount int
	// LastExitCode is the exit code of the previous run.
	LastExitCode int32
	// LastFinishedAt is when the previous run exited.
	LastFinishedAt time.Time
	// BackOff is the current crash back-off delay.
	BackOff time.Duration
	// BackOffUntil is when the current back-off ends.
	BackOffUntil time.Time
}

// podV1 is the on-disk form of a PodRecord; UID is the bucket name.
type podV1 struct {
	Namespace   string                 `json:"namespace,omitempty"`
	Name        string                 `json:"name,omitempty"`
	Owner       string                 `json:"owner,omitempty"`
	Source      string                 `json:"source,omitempty"`
	Revision    string                 `json:"revision,omitempty"`
	CreatedAt   time.Time              `json:"createdAt,omitzero"`
	Containers  map[string]containerV1 `json:"containers,omitempty"`
	Terminating bool                   `json:"terminating,omitempty"`
}

// containerV1 is the on-disk form of a ContainerRecord.
type containerV1 struct {
	RestartCount   int       `json:"restartCount,omitempty"`
	LastExitCode   int32     `json:"lastExitCode,omitempty"`
	LastFinishedAt time.Time `json:"lastFinishedAt,omitzero"`
	BackOffNanos   int64     `json:"backOffNs,omitempty"`
	BackOffUntil   time.Time `json:"backOffUntil,omitzero"`
}

// podToV1 converts a PodRecord to its on-disk form.
func podToV1(p PodRecord) podV1 {
	out := podV1{
		Namespace:   p.Namespace,
		Name:        p.Name,
		Owner:       p.Owner,
		Source:      p.Source,
		Revision:    p.Revision,
		CreatedAt:   p.CreatedAt,
		Terminating: p.Terminating,
	}
	if len(p.Containers) > 0 {
		out.Containers = make(map[string]containerV1, len(p.Containers))
		for name, c := range p.Containers {
			out.Containers[name] = containerV1{
				RestartCount:   c.RestartCount,
				LastExitCode:   c.LastExitCode,
				LastFinishedAt: c.LastFinishedAt,
				BackOffNanos:   int64(c.BackOff),
				BackOffUntil:   c.BackOffUntil,
			}
		}
	}
	return out
}

// podFromV1 converts the on-disk form of pod uid back to a PodRecord.
func podFromV1(uid string, p podV1) PodRecord {
	out := PodRecord{
		UID:         uid,
		Namespace:   p.Namespace,
		Name:        p.Name,
		Owner:       p.Owner,
		Source:      p.Source,
		Revision:    p.Revision,
		CreatedAt:   p.CreatedAt,
		Terminating: p.Terminating,
	}
	if len(p.Containers) > 0 {
		out.Containers = make(map[string]ContainerRecord, len(p.Containers))
		for name, c := range p.Containers {
			out.Containers[name] = ContainerRecord{
				RestartCount:   c.RestartCount,
				LastExitCode:   c.LastExitCode,
				LastFinishedAt: c.LastFinishedAt,
				BackOff:        time.Duration(c.BackOffNanos),
				BackOffUntil:   c.BackOffUntil,
			}
		}
	}
	return out
}

// PutPod creates or wholly replaces the record of pod p.UID.
func (db *DB) PutPod(p PodRecord) error {
	if p.UID == "" {
		return fmt.Errorf("put pod %s/%s: empty UID: %w", p.Namespace, p.Name, errdefs.ErrInvalidArgument)
	}
	v, err := encode(podToV1(p))
	if err != nil {
		return fmt.Errorf("put pod %s: %w", p.UID, err)
	}
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		pods, err := rootBucket(tx, bucketPods)
		if err != nil {
			return err
		}
		uid := []byte(p.UID)
		// A plain value where the pod's bucket belongs is corruption that
		// ListPods reported; writing a fresh record is how it heals.
		if pods.Bucket(uid) == nil {
			if err := pods.Delete(uid); err != nil {
				return err
			}
		}
		b, err := pods.CreateBucketIfNotExists(uid)
		if err != nil {
			return err
		}
		return b.Put(keyPodRecord, v)
	})
	if err != nil {
		return fmt.Errorf("put pod %s: %w", p.UID, err)
	}
	return nil
}

// GetPod returns the record of pod uid, or an errdefs.ErrNotFound error.
func (db *DB) GetPod(uid string) (PodRecord, error) {
	var e rawEntry
	err := db.bolt.View(func(tx *bolt.Tx) error {
		pods, err := rootBucket(tx, bucketPods)
		if err != nil {
			return err
		}
		e = readPod(pods, []byte(uid))
		return nil
	})
	if err != nil {
		return PodRecord{}, fmt.Errorf("get pod %s: %w", uid, err)
	}
	return decodePod(e)
}

// DeletePod removes pod uid and everything stored under it; deleting an
// absent pod is not an error, so a retried cleanup succeeds.
func (db *DB) DeletePod(uid string) error {
	if uid == "" {
		return fmt.Errorf("delete pod: empty UID: %w", errdefs.ErrInvalidArgument)
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		pods, err := rootBucket(tx, bucketPods)
		if err != nil {
			return err
		}
		return deleteEntry(pods, []byte(uid))
	})
	if err != nil {
		return fmt.Errorf("delete pod %s: %w", uid, err)
	}
	return nil
}

// ListPods returns every decodable pod record, ordered by UID, plus the
// errors of undecodable ones keyed by UID (nil when there are none), so that
// one corrupt pod record does not brick the agent. The error result is for
// failures that make the whole list unreadable.
func (db *DB) ListPods() ([]PodRecord, map[string]error, error) {
	var entries []rawEntry
	err := db.bolt.View(func(tx *bolt.Tx) error {
		pods, err := rootBucket(tx, bucketPods)
		if err != nil {
			return err
		}
		return pods.ForEach(func(uid, _ []byte) error {
			entries = append(entries, readPod(pods, uid))
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list pods: %w", err)
	}
	var recs []PodRecord
	var errs map[string]error
	for _, e := range entries {
		p, err := decodePod(e)
		if err != nil {
			if errs == nil {
				errs = make(map[string]error)
			}
			errs[e.key] = err
			continue
		}
		recs = append(recs, p)
	}
	return recs, errs, nil
}

// readPod copies the raw record of pod uid out of the pods bucket, or says
// why there is none.
func readPod(pods *bolt.Bucket, uid []byte) rawEntry {
	e := rawEntry{key: string(uid)}
	b := pods.Bucket(uid)
	if b == nil {
		if pods.Get(uid) != nil {
			e.err = fmt.Errorf("plain value where the pod's bucket belongs: %w", errdefs.ErrDataLoss)
		} else {
			e.err = errdefs.ErrNotFound
		}
		return e
	}
	v := b.Get(keyPodRecord)
	if v == nil {
		e.err = fmt.Errorf("pod bucket has no %s key: %w", keyPodRecord, errdefs.ErrDataLoss)
		return e
	}
	// bbolt values are only valid inside the transaction.
	e.value = bytes.Clone(v)
	return e
}

// decodePod turns a raw entry read by readPod into a PodRecord.
func decodePod(e rawEntry) (PodRecord, error) {
	if e.err != nil {
		return PodRecord{}, fmt.Errorf("pod %s: %w", e.key, e.err)
	}
	p, err := decode[podV1](e.value)
	if err != nil {
		return PodRecord{}, fmt.Errorf("pod %s: %w", e.key, err)
	}
	return podFromV1(e.key, p), nil
}
