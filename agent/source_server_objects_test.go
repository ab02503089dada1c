package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/daemonlet/daemonlet/api/client"
)

// objectsServer is a minimal server of the REST paths the server source
// reads: a fixed list per collection, and watches fed by send.
type objectsServer struct {
	t       *testing.T
	mu      sync.Mutex
	lists   map[string]runtime.Object // by path
	watches map[string][]chan metav1.WatchEvent
	queries []string // the list and watch requests, path?query
}

func newObjectsServer(t *testing.T) (*objectsServer, *client.Client) {
	s := &objectsServer{t: t, lists: map[string]runtime.Object{}, watches: map[string][]chan metav1.WatchEvent{}}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	c, err := client.New(client.Config{Servers: []string{srv.URL}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func (s *objectsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.queries = append(s.queries, r.URL.Path+"?"+r.URL.Query().Get("fieldSelector"))
	list, ok := s.lists[r.URL.Path]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Query().Get("watch") == "" {
		_ = json.NewEncoder(w).Encode(list)
		return
	}
	ch := make(chan metav1.WatchEvent, 4)
	s.mu.Lock()
	s.watches[r.URL.Path] = append(s.watches[r.URL.Path], ch)
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	for {
		select {
		case ev := <-ch:
			_ = json.NewEncoder(w).Encode(ev)
			w.(http.Flusher).Flush()
		case <-r.Context().Done():
			return
		}
	}
}

// send delivers a watch event to the open watches of path.
func (s *objectsServer) send(path, typ string, obj any) {
	s.t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		s.t.Fatal(err)
	}
	waitFor(s.t, "a watch of "+path, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.watches[path]) > 0
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.watches[path] {
		ch <- metav1.WatchEvent{Type: typ, Object: runtime.RawExtension{Raw: raw}}
	}
}

// TestServerSourceDeliversReferencedObjects: the server source watches
// each ConfigMap and Secret its DaemonSets use, by name, sends them with
// the set (only once each was fetched), and sends a changed ConfigMap.
func TestServerSourceDeliversReferencedObjects(t *testing.T) {
	srv, c := newObjectsServer(t)
	ds := webDaemonSet("web")
	ds.ResourceVersion = "1"
	ds.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "conf", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web-conf"}}}}}
	ds.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "T", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "web-creds"}, Key: "t"}}}}
	cm := corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web-conf", Namespace: "default", ResourceVersion: "2"}, Data: map[string]string{"a": "1"}}
	sec := corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-creds", Namespace: "default", ResourceVersion: "3"}, Data: map[string][]byte{"t": []byte("x")}}
	srv.lists["/apis/apps/v1/daemonsets"] = &appsv1.DaemonSetList{ListMeta: metav1.ListMeta{ResourceVersion: "3"}, Items: []appsv1.DaemonSet{*ds}}
	srv.lists["/api/v1/pods"] = &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "3"}}
	srv.lists["/api/v1/namespaces/default/configmaps"] = &corev1.ConfigMapList{ListMeta: metav1.ListMeta{ResourceVersion: "3"}, Items: []corev1.ConfigMap{cm}}
	srv.lists["/api/v1/namespaces/default/secrets"] = &corev1.SecretList{ListMeta: metav1.ListMeta{ResourceVersion: "3"}, Items: []corev1.Secret{sec}}

	src := NewServerSource(ServerSourceConfig{Client: c, NodeName: testNode, Coalesce: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan SourceUpdate)
	done := make(chan struct{})
	go func() { src.Run(ctx, updates); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	next := func() SourceUpdate {
		t.Helper()
		select {
		case u := <-updates:
			return u
		case <-time.After(10 * time.Second):
			t.Fatal("no update from the server source")
			return SourceUpdate{}
		}
	}
	u := next()
	if u.Err != nil || len(u.DaemonSets) != 1 || len(u.ConfigMaps) != 1 || len(u.Secrets) != 1 {
		t.Fatalf("first update = %+v, want the DaemonSet with its ConfigMap and Secret", u)
	}
	if u.ConfigMaps[0].Data["a"] != "1" || string(u.Secrets[0].Data["t"]) != "x" {
		t.Errorf("objects = %+v, %+v", u.ConfigMaps[0], u.Secrets[0])
	}
	srv.mu.Lock()
	queries := slices.Clone(srv.queries)
	srv.mu.Unlock()
	for _, want := range []string{"/api/v1/namespaces/default/configmaps?metadata.name=web-conf", "/api/v1/namespaces/default/secrets?metadata.name=web-creds"} {
		if !slices.Contains(queries, want) {
			t.Errorf("requests %q lack %s: objects must be read by name", queries, want)
		}
	}

	cm.Data, cm.ResourceVersion = map[string]string{"a": "2"}, "4"
	srv.send("/api/v1/namespaces/default/configmaps", "MODIFIED", &cm)
	if u := next(); len(u.ConfigMaps) != 1 || u.ConfigMaps[0].Data["a"] != "2" || len(u.DaemonSets) != 1 {
		t.Errorf("update after the change = %+v", u)
	}
}
