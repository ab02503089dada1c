package server

import (
	"net/http"
	goruntime "runtime"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"
)

// apiVersion is the Kubernetes API version whose types the server speaks
// (k8s.io/api v0.37 is Kubernetes 1.37).
var apiVersion = version.Info{Major: "1", Minor: "37", GitVersion: "v1.37.0-daemonlet"}

// resourceVerbs are the verbs of the main resources.
var resourceVerbs = metav1.Verbs{"create", "delete", "get", "list", "update", "watch"}

func (s *Server) discoveryRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		info := apiVersion
		info.GoVersion, info.Compiler = goruntime.Version(), goruntime.Compiler
		info.Platform = goruntime.GOOS + "/" + goruntime.GOARCH
		writeJSON(w, http.StatusOK, info)
	})
	for _, p := range []string{"/healthz", "/livez"} {
		mux.HandleFunc("GET "+p, func(w http.ResponseWriter, _ *http.Request) { writeText(w, http.StatusOK, "ok") })
	}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.running.Load() {
			writeText(w, http.StatusServiceUnavailable, "controllers not running")
			return
		}
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /api", requireUser(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, &metav1.APIVersions{
			TypeMeta: metav1.TypeMeta{Kind: "APIVersions"},
			Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{
				{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host},
			},
		})
	}))
	mux.HandleFunc("GET /apis", requireUser(func(w http.ResponseWriter, _ *http.Request) {
		gv := metav1.GroupVersionForDiscovery{GroupVersion: "apps/v1", Version: "v1"}
		writeJSON(w, http.StatusOK, &metav1.APIGroupList{
			TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"},
			Groups:   []metav1.APIGroup{{Name: "apps", Versions: []metav1.GroupVersionForDiscovery{gv}, PreferredVersion: gv}},
		})
	}))
	for _, gv := range []struct {
		path, groupVersion string
		resources          []*resource
	}{
		{"/api/v1", "v1", []*resource{s.nodes, s.pods, s.configMaps, s.secrets, s.events}},
		{"/apis/apps/v1", "apps/v1", []*resource{s.daemonSets, s.controllerRevisions}},
	} {
		list := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv.groupVersion}
		for _, res := range gv.resources {
			main := metav1.APIResource{Name: res.name, SingularName: res.singular, Namespaced: res.namespaced, Kind: res.kind,
				Verbs: resourceVerbs, ShortNames: res.shortNames}
			if res.copyStatus == nil {
				// Like Kubernetes, ConfigMaps and Secrets are not in "all".
				list.APIResources = append(list.APIResources, main)
				continue
			}
			main.Categories = []string{"all"}
			list.APIResources = append(list.APIResources, main,
				metav1.APIResource{Name: res.name + "/status", Namespaced: res.namespaced, Kind: res.kind, Verbs: metav1.Verbs{"get", "update"}})
		}
		mux.HandleFunc("GET "+gv.path, requireUser(func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, list)
		}))
	}
}

func writeText(w http.ResponseWriter, code int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(text))
}
