package server

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	corev1 "k8s.io/api/core/v1"
)

func TestParseTokenFile(t *testing.T) {
	a, err := ParseTokenFile(strings.NewReader("# comment\n\nt1,alice,u1,\"system:masters,dev\"\n t2 , bob , u2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if u, ok := a.Authenticate("t1"); !ok || u.Name != "alice" || u.UID != "u1" || strings.Join(u.Groups, "|") != "system:masters|dev" {
		t.Errorf("t1: %+v %v", u, ok)
	}
	if u, ok := a.Authenticate("t2"); !ok || u.Name != "bob" || len(u.Groups) != 0 {
		t.Errorf("t2: %+v %v", u, ok)
	}
	if _, ok := a.Authenticate("t3"); ok {
		t.Error("unknown token accepted")
	}
	for _, tc := range []struct{ name, in, line string }{
		{"two columns", "t1,alice,u1\nt2,bob\n", "line 2"},
		{"five columns", "t1,a,u,g,x\n", "line 1"},
		{"empty token", "t1,a,u\n,b,u\n", "line 2"},
		{"empty user", "t1, ,u\n", "line 1"},
		{"duplicate", "t1,a,u\nt1,b,u\n", "line 2"},
		{"bad quote", "t1,a,u,\"g\n", "line 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTokenFile(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.line) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v, want one naming %q", err, tc.line)
			}
		})
	}
}

func FuzzParseTokenFile(f *testing.F) {
	f.Add(testTokenFile)
	f.Add("t,u,i,\"a,b\"\n#x\n")
	f.Fuzz(func(t *testing.T, in string) {
		a, err := ParseTokenFile(strings.NewReader(in))
		if err == nil && a == nil {
			t.Fatal("nil authenticator without error")
		}
	})
}

func TestAuthMatrix(t *testing.T) {
	h := newHarness(t, nil, nil, true)
	// Setup as admin: a DaemonSet, nodes n1 and n2, a pod on each.
	ds := testDaemonSet("web")
	h.must("POST", dsPath, adminToken, ds, http.StatusCreated, ds)
	h.must("POST", "/api/v1/nodes", node1Token, testNode("n1"), http.StatusCreated, nil)
	h.must("POST", "/api/v1/nodes", adminToken, testNode("n2"), http.StatusCreated, nil)
	h.must("POST", "/api/v1/namespaces/default/pods", node1Token, testPod(ds, "n1", "h", true, ds.CreationTimestamp.Time), http.StatusCreated, nil)
	h.must("POST", "/api/v1/namespaces/default/pods", adminToken, testPod(ds, "n2", "h", true, ds.CreationTimestamp.Time), http.StatusCreated, nil)

	var n1 corev1.Node
	h.must("GET", "/api/v1/nodes/n1", node1Token, nil, http.StatusOK, &n1)
	n1.ResourceVersion = "" // as agents write status: the rollout controller pins n1 meanwhile
	var p1 corev1.Pod
	h.must("GET", "/api/v1/namespaces/default/pods/web-n1", node1Token, nil, http.StatusOK, &p1)
	p2 := testPod(ds, "n2", "h", false, ds.CreationTimestamp.Time)

	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		code                      int
	}{
		{"admin lists nodes", "GET", "/api/v1/nodes", adminToken, nil, 200},
		{"no token", "GET", "/api/v1/nodes", "", nil, 401},
		{"bad token", "GET", "/api/v1/nodes", "nope", nil, 401},
		{"bad token on healthz", "GET", "/healthz", "nope", nil, 401},
		{"healthz without token", "GET", "/healthz", "", nil, 200},
		{"discovery needs a user", "GET", "/api/v1", "", nil, 401},
		{"other user discovery", "GET", "/apis/apps/v1", otherToken, nil, 200},
		{"other user get ds", "GET", dsPath + "/web", otherToken, nil, 403},
		{"other user list pods", "GET", "/api/v1/pods", otherToken, nil, 403},
		{"node lists ds", "GET", "/apis/apps/v1/daemonsets", node1Token, nil, 200},
		{"node watches ds", "GET", "/apis/apps/v1/daemonsets?watch=1&timeoutSeconds=1", node1Token, nil, 200},
		{"node creates ds", "POST", dsPath, node1Token, testDaemonSet("x"), 403},
		{"node deletes ds", "DELETE", dsPath + "/web", node1Token, nil, 403},
		{"node gets own node", "GET", "/api/v1/nodes/n1", node1Token, nil, 200},
		{"node gets other node", "GET", "/api/v1/nodes/n2", node1Token, nil, 403},
		{"node creates other node", "POST", "/api/v1/nodes", node1Token, testNode("n3"), 403},
		{"node updates own status", "PUT", "/api/v1/nodes/n1/status", node1Token, &n1, 200},
		{"node deletes own node", "DELETE", "/api/v1/nodes/n1", node1Token, nil, 403},
		{"node lists all nodes", "GET", "/api/v1/nodes", node1Token, nil, 403},
		{"node lists own node", "GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dn1", node1Token, nil, 200},
		{"node lists other node", "GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dn2", node1Token, nil, 403},
		{"node lists own pods", "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", node1Token, nil, 200},
		{"node lists all pods", "GET", "/api/v1/pods", node1Token, nil, 403},
		{"node gets other pod", "GET", "/api/v1/namespaces/default/pods/web-n2", node1Token, nil, 403},
		{"node creates other pod", "POST", "/api/v1/namespaces/default/pods", node1Token, testPod(ds, "n2", "h", true, ds.CreationTimestamp.Time), 403},
		{"node updates other pod status", "PUT", "/api/v1/namespaces/default/pods/web-n2/status", node1Token, p2, 403},
		{"node updates own pod status", "PUT", "/api/v1/namespaces/default/pods/web-n1/status", node1Token, &p1, 200},
		{"node deletes own pod", "DELETE", "/api/v1/namespaces/default/pods/web-n1", node1Token, nil, 200},
		{"admin deletes ds", "DELETE", dsPath + "/web", adminToken, nil, 200},
	} {
		resp, data := h.do(tc.method, tc.path, tc.token, tc.body)
		if resp.StatusCode != tc.code {
			t.Errorf("%s: %s %s: %d, want %d: %s", tc.name, tc.method, tc.path, resp.StatusCode, tc.code, data)
			continue
		}
		if tc.code >= 400 && !strings.HasPrefix(tc.path, "/healthz") {
			statusOf(t, data) // errors are Status objects
		}
	}
	_, data := h.do("DELETE", dsPath+"/web", node1Token, nil)
	want := `daemonsets.apps "web" is forbidden: User "system:node:n1" cannot delete resource "daemonsets" in API group "apps" in the namespace "default"`
	if got := statusOf(t, data).Message; got != want {
		t.Errorf("message %q\nwant    %q", got, want)
	}
}
