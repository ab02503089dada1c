package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/containerd/errdefs"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/daemonlet/daemonlet/store/cluster"
)

// maxBodyBytes is kube-apiserver's request body limit (3 MiB).
const maxBodyBytes = 3 << 20

// conflictMessage is the API server's text for a stale resourceVersion.
const conflictMessage = "the object has been modified; please apply your changes to the latest version and try again"

// toStatus converts any error to the metav1.Status the client receives;
// errors that are not already API errors are internal errors.
func toStatus(err error) *metav1.Status {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		se = apierrors.NewInternalError(err)
	}
	st := se.Status()
	st.Kind, st.APIVersion = "Status", "v1"
	return &st
}

func writeError(w http.ResponseWriter, err error) {
	st := toStatus(err)
	writeJSON(w, int(st.Code), st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// A write error means the client went away; there is no one to tell.
	_ = json.NewEncoder(w).Encode(v)
}

// storeError translates a store error about res/name into the API error a
// client expects.
func storeError(res *resource, name string, err error) error {
	switch {
	case errdefs.IsNotFound(err):
		return apierrors.NewNotFound(res.groupResource(), name)
	case errdefs.IsAlreadyExists(err):
		return apierrors.NewAlreadyExists(res.groupResource(), name)
	case errdefs.IsConflict(err):
		return apierrors.NewConflict(res.groupResource(), name, errors.New(conflictMessage))
	case errors.Is(err, cluster.ErrCompacted):
		return apierrors.NewResourceExpired(err.Error())
	case errdefs.IsUnavailable(err):
		return apierrors.NewServiceUnavailable(err.Error())
	}
	return apierrors.NewInternalError(err)
}

// decodeBody reads a JSON or YAML request body of at most maxBodyBytes
// into v; an empty body is an error unless optional.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("limit is %d", maxBodyBytes))
	}
	if err != nil {
		return apierrors.NewBadRequest(fmt.Sprintf("reading the request body: %v", err))
	}
	if len(data) == 0 && optional {
		return nil
	}
	if len(data) == 0 {
		return apierrors.NewBadRequest("the request body is empty")
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/yaml" || mt == "application/x-yaml" {
		if data, err = yaml.YAMLToJSON(data); err != nil {
			return apierrors.NewBadRequest(fmt.Sprintf("the request body is not valid YAML: %v", err))
		}
	}
	if err := json.Unmarshal(data, v); err != nil {
		return apierrors.NewBadRequest(fmt.Sprintf("the request body is not valid JSON: %v", err))
	}
	return nil
}
