package store

import (
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
)

// recordVersion is the envelope version this binary writes and the newest it
// can read; see the compatibility rules in doc.go.
const recordVersion = 1

// envelope wraps every stored value so that its encoding can change per record.
type envelope struct {
	V    int             `json:"v"`
	Data json.RawMessage `json:"data"`
}

// encode wraps data in an envelope of the current record version.
func encode(data any) ([]byte, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	out, err := json.Marshal(envelope{V: recordVersion, Data: raw})
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	return out, nil
}

// decode unwraps an envelope into T. Unknown fields are ignored so that
// records written by a newer binary that only added fields still load.
func decode[T any](raw []byte) (T, error) {
	var zero T
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return zero, fmt.Errorf("decode record envelope: %v: %w", err, errdefs.ErrDataLoss)
	}
	switch {
	case env.V < 1:
		return zero, fmt.Errorf("decode record: envelope has no valid version \"v\": %w", errdefs.ErrDataLoss)
	case env.V > recordVersion:
		return zero, fmt.Errorf("decode record: envelope version %d is newer than this binary reads (%d): %w",
			env.V, recordVersion, errdefs.ErrFailedPrecondition)
	}
	var data T
	if err := json.Unmarshal(env.Data, &data); err != nil {
		return zero, fmt.Errorf("decode record data: %v: %w", err, errdefs.ErrDataLoss)
	}
	return data, nil
}
