package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daemonlet/daemonlet/store/cluster"
)

const (
	cmPath     = "/api/v1/namespaces/default/configmaps"
	secretPath = "/api/v1/namespaces/default/secrets"
)

func testConfigMap(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}
}

func testSecret(name string, data map[string]string) *corev1.Secret {
	return &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}, ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: data}
}

func TestConfigMapAndSecretCRUDAndWatch(t *testing.T) {
	h := newHarness(t, nil, nil, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		kind, path, all string
		obj             func(name, value string) object
		value           func(o object) string
		empty           func() object
	}{
		{"ConfigMap", cmPath, "/api/v1/configmaps",
			func(name, v string) object { return testConfigMap(name, map[string]string{"k": v}) },
			func(o object) string { return o.(*corev1.ConfigMap).Data["k"] },
			func() object { return &corev1.ConfigMap{} }},
		{"Secret", secretPath, "/api/v1/secrets",
			func(name, v string) object { return testSecret(name, map[string]string{"k": v}) },
			func(o object) string { return string(o.(*corev1.Secret).Data["k"]) },
			func() object { return &corev1.Secret{} }},
	} {
		{ // h.must fails the parent test, so no subtests
			newObj := tc.empty
			ch, _ := h.watch(ctx, tc.all+"?watch=1", "")
			created := newObj()
			h.must("POST", tc.path, "", tc.obj("a", "one"), http.StatusCreated, created)
			if created.GetUID() == "" || created.GetResourceVersion() == "" || tc.value(created) != "one" {
				t.Fatalf("created %+v", created)
			}
			if sec, ok := created.(*corev1.Secret); ok && (sec.Type != corev1.SecretTypeOpaque || sec.StringData != nil) {
				t.Errorf("secret not defaulted: type %q, stringData %v", sec.Type, sec.StringData)
			}
			h.must("POST", tc.path, "", tc.obj("a", "again"), http.StatusConflict, nil)
			h.must("POST", tc.path, "", tc.obj("Bad_Name", "x"), http.StatusUnprocessableEntity, nil)
			_, data := h.do("POST", tc.path, "", tc.obj("big", strings.Repeat("x", 1<<20+1)))
			if st := statusOf(t, data); st.Code != http.StatusUnprocessableEntity || !hasCause(st, "data") {
				t.Errorf("oversized object: %d %v", st.Code, st.Details)
			}

			got := newObj()
			h.must("GET", tc.path+"/a", "", nil, http.StatusOK, got)
			upd := tc.obj("a", "two")
			upd.SetResourceVersion(got.GetResourceVersion())
			h.must("PUT", tc.path+"/a", "", upd, http.StatusOK, got)
			if tc.value(got) != "two" {
				t.Errorf("updated value %q", tc.value(got))
			}
			h.must("PUT", tc.path+"/a", "", upd, http.StatusConflict, nil) // stale resourceVersion
			h.must("GET", tc.path+"/a/status", "", nil, http.StatusNotFound, nil)

			var list struct {
				Kind  string
				Items []struct{}
			}
			h.must("GET", tc.path, "", nil, http.StatusOK, &list)
			if list.Kind != tc.kind+"List" || len(list.Items) != 1 {
				t.Errorf("list kind %q, %d items", list.Kind, len(list.Items))
			}
			h.must("DELETE", tc.path+"/a", "", nil, http.StatusOK, nil)
			h.must("GET", tc.path+"/a", "", nil, http.StatusNotFound, nil)

			var events []string
			for range 3 {
				typ, meta := next(t, ch)
				events = append(events, typ+" "+meta.Name)
			}
			if got, want := strings.Join(events, ", "), "ADDED a, MODIFIED a, DELETED a"; got != want {
				t.Errorf("%s events %s, want %s", tc.kind, got, want)
			}
		}
	}
	// Discovery lists both, without a status subresource.
	var rl metav1.APIResourceList
	h.must("GET", "/api/v1", "", nil, http.StatusOK, &rl)
	names := map[string]bool{}
	for _, r := range rl.APIResources {
		names[r.Name] = true
	}
	if !names["configmaps"] || !names["secrets"] || names["secrets/status"] {
		t.Errorf("discovery resources %v", names)
	}
}

func TestConfigMapImmutable(t *testing.T) {
	h := newHarness(t, nil, nil, false)
	cm := testConfigMap("frozen", map[string]string{"k": "v"})
	cm.Immutable = ptrTo(true)
	h.must("POST", cmPath, "", cm, http.StatusCreated, nil)
	cm.Data["k"] = "changed"
	_, data := h.do("PUT", cmPath+"/frozen", "", cm)
	if st := statusOf(t, data); st.Code != http.StatusUnprocessableEntity || !hasCause(st, "data") {
		t.Errorf("update of an immutable ConfigMap: %d %v", st.Code, st.Details)
	}
}

func TestSecretAuthMatrix(t *testing.T) {
	h := newHarness(t, nil, nil, true)
	h.must("POST", "/api/v1/nodes", adminToken, testNode("n1"), http.StatusCreated, nil)
	for _, name := range []string{"used", "unused", "elsewhere", "bypod"} {
		h.must("POST", secretPath, adminToken, testSecret(name, map[string]string{"k": "v"}), http.StatusCreated, nil)
	}
	h.must("POST", cmPath, adminToken, testConfigMap("cfg", map[string]string{"k": "v"}), http.StatusCreated, nil)

	// "web" runs on n1 and uses the secret "used" and the ConfigMap "cfg";
	// "picky" uses "elsewhere" but its nodeSelector excludes n1.
	web := testDaemonSet("web")
	web.Spec.Template.Spec.Volumes = []corev1.Volume{
		{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "used"}}},
		{Name: "c", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
	}
	h.must("POST", dsPath, adminToken, web, http.StatusCreated, nil)
	picky := testDaemonSet("picky")
	picky.Spec.Template.Spec.NodeSelector = map[string]string{"disk": "ssd"}
	picky.Spec.Template.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "elsewhere"}}}}
	h.must("POST", dsPath, adminToken, picky, http.StatusCreated, nil)
	// A pod object bound to n1 that uses "bypod": pods do not grant access,
	// since a node could make one up naming any Secret.
	orphan := testPod(&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "old"}, Spec: *picky.Spec.DeepCopy()}, "n1", "h", true, web.CreationTimestamp.Time)
	orphan.Spec.NodeSelector = nil
	orphan.Spec.Containers[0].EnvFrom[0].SecretRef.Name = "bypod"
	h.must("POST", "/api/v1/namespaces/default/pods", adminToken, orphan, http.StatusCreated, nil)

	for _, tc := range []struct {
		name, method, path string
		body               any
		code               int
	}{
		{"referenced by a DS on the node", "GET", secretPath + "/used", nil, 200},
		{"configmap referenced by a DS on the node", "GET", cmPath + "/cfg", nil, 200},
		{"watch of one referenced name", "GET", secretPath + "?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dused", nil, 200},
		{"list of one referenced name", "GET", secretPath + "?fieldSelector=metadata.name%3Dused", nil, 200},
		{"referenced only by a pod bound to the node", "GET", secretPath + "/bypod", nil, 403},
		{"not referenced", "GET", secretPath + "/unused", nil, 403},
		{"referenced by a DS excluding the node", "GET", secretPath + "/elsewhere", nil, 403},
		{"watch of an unreferenced name", "GET", secretPath + "?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dunused", nil, 403},
		{"list of all secrets", "GET", secretPath, nil, 403},
		{"list across namespaces", "GET", "/api/v1/secrets?fieldSelector=metadata.name%3Dused", nil, 403},
		{"create", "POST", secretPath, testSecret("mine", map[string]string{"k": "v"}), 403},
		{"update a referenced one", "PUT", secretPath + "/used", testSecret("used", map[string]string{"k": "x"}), 403},
		{"delete a referenced one", "DELETE", secretPath + "/used", nil, 403},
		{"update a referenced configmap", "PUT", cmPath + "/cfg", testConfigMap("cfg", nil), 403},
	} {
		resp, data := h.do(tc.method, tc.path, node1Token, tc.body)
		if resp.StatusCode != tc.code {
			t.Errorf("%s: %s %s: %d, want %d: %s", tc.name, tc.method, tc.path, resp.StatusCode, tc.code, data)
		}
	}
	_, data := h.do("GET", secretPath+"/unused", node1Token, nil)
	want := `secrets "unused" is forbidden: User "system:node:n1" cannot get resource "secrets" in API group "" in the namespace "default"`
	if got := statusOf(t, data).Message; got != want {
		t.Errorf("message %q\nwant    %q", got, want)
	}
	// Once the DaemonSet stops using it, the node loses access.
	updateDaemonSet(h, "web", func(ds *appsv1.DaemonSet) { ds.Spec.Template.Spec.Volumes = ds.Spec.Template.Spec.Volumes[1:] })
	h.must("GET", secretPath+"/used", node1Token, nil, http.StatusForbidden, nil)
}

func writeEncryptionConfig(t *testing.T, providers string) *Encryption {
	t.Helper()
	path := filepath.Join(t.TempDir(), "enc.yaml")
	cfg := "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n" + providers
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	enc, err := LoadEncryptionConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

func aesgcmProvider(keys ...string) string {
	s := "  - aesgcm:\n      keys:\n"
	for _, k := range keys {
		s += "      - name: " + k + "\n        secret: " + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte(k[:1]), 32)) + "\n"
	}
	return s
}

const identityProvider = "  - identity: {}\n"

// openFileStore opens a bbolt store at path, closed when the test ends
// unless closed before.
func openFileStore(t *testing.T, path string) *cluster.Bolt {
	t.Helper()
	st, err := cluster.OpenBolt(path, cluster.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestEncryptionAtRest(t *testing.T) {
	const value = "s3cr3t-P@ssw0rd-value"
	b64 := base64.StdEncoding.EncodeToString([]byte(value))
	dbPath := filepath.Join(t.TempDir(), "cluster.db")

	// Written with key1.
	st := openFileStore(t, dbPath)
	h := serveHarness(t, Config{Store: st, Encryption: writeEncryptionConfig(t, aesgcmProvider("key1")+identityProvider)})
	h.must("POST", secretPath, "", testSecret("pw", map[string]string{"password": value}), http.StatusCreated, nil)
	var got corev1.Secret
	h.must("GET", secretPath+"/pw", "", nil, http.StatusOK, &got)
	if string(got.Data["password"]) != value {
		t.Fatalf("GET returned %q", got.Data["password"])
	}
	h.must("POST", cmPath, "", testConfigMap("plain", map[string]string{"k": "cm-visible-value"}), http.StatusCreated, nil)
	raw, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(value)) || bytes.Contains(raw, []byte(b64)) {
		t.Error("the secret's value is in the data file in clear or in base64")
	}
	if !bytes.Contains(raw, []byte(aesgcmPrefix+"key1:")) {
		t.Error("no aesgcm value in the data file")
	}
	if !bytes.Contains(raw, []byte("cm-visible-value")) {
		t.Error("configmaps, not configured for encryption, are not stored plain")
	}
	kv, err := st.Get(context.Background(), "/secrets/default/pw")
	if err != nil {
		t.Fatal(err)
	}

	// A second key in front: the old value still reads, new writes use
	// key2; a server without key1 cannot read the old value.
	enc2 := writeEncryptionConfig(t, aesgcmProvider("key2", "key1"))
	plain, err := enc2.forResource("secrets").unseal(kv.Key, kv.Value)
	if err != nil || !bytes.Contains(plain, []byte(b64)) {
		t.Fatalf("key2+key1 config cannot read key1's value: %v", err)
	}
	sealed, err := enc2.forResource("secrets").seal(kv.Key, plain)
	if err != nil || !bytes.HasPrefix(sealed, []byte(aesgcmPrefix+"key2:")) {
		t.Errorf("new writes not sealed with key2: %.24q %v", sealed, err)
	}
	if _, err := enc2.forResource("secrets").unseal("/secrets/default/other", sealed); err == nil {
		t.Error("a value moved under another key decrypted")
	}
	if _, err := writeEncryptionConfig(t, aesgcmProvider("key3")).forResource("secrets").unseal(kv.Key, kv.Value); err == nil {
		t.Error("a config without key1 decrypted key1's value")
	}
	if _, err := writeEncryptionConfig(t, identityProvider).forResource("secrets").unseal(kv.Key, kv.Value); err == nil {
		t.Error("identity alone decrypted an aesgcm value")
	}
}

func TestEncryptionRotationThroughServer(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "cluster.db")
	st := openFileStore(t, dbPath)
	enc1 := writeEncryptionConfig(t, aesgcmProvider("key1"))
	h := serveHarness(t, Config{Store: st, Encryption: enc1})
	h.must("POST", secretPath, "", testSecret("pw", map[string]string{"k": "first"}), http.StatusCreated, nil)

	h2 := serveHarness(t, Config{Store: st, Encryption: writeEncryptionConfig(t, aesgcmProvider("key2", "key1"))})
	var got corev1.Secret
	h2.must("GET", secretPath+"/pw", "", nil, http.StatusOK, &got)
	if string(got.Data["k"]) != "first" {
		t.Fatalf("read %q through key2+key1", got.Data["k"])
	}
	got.StringData = map[string]string{"k": "second"}
	h2.must("PUT", secretPath+"/pw", "", &got, http.StatusOK, nil)
	kv, err := st.Get(context.Background(), "/secrets/default/pw")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(kv.Value, []byte(aesgcmPrefix+"key2:")) {
		t.Errorf("rewritten value not under key2: %.24q", kv.Value)
	}
}

func TestEncryptionIdentityOnly(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "cluster.db")
	st := openFileStore(t, dbPath)
	enc := writeEncryptionConfig(t, identityProvider+aesgcmProvider("key1"))
	if enc.Encrypts("secrets") {
		t.Error("identity first: Encrypts says secrets are encrypted")
	}
	h := serveHarness(t, Config{Store: st, Encryption: enc})
	h.must("POST", secretPath, "", testSecret("pw", map[string]string{"k": "plainly"}), http.StatusCreated, nil)
	kv, err := st.Get(context.Background(), "/secrets/default/pw")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(kv.Value, []byte("{")) || !bytes.Contains(kv.Value, []byte(base64.StdEncoding.EncodeToString([]byte("plainly")))) {
		t.Errorf("identity did not store plain JSON: %.40q", kv.Value)
	}
}

func TestParseEncryptionConfigErrors(t *testing.T) {
	head := "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
	for name, cfg := range map[string]string{
		"wrong kind":       "apiVersion: v1\nkind: Secret\n",
		"unknown field":    head + "- resources: [secrets]\n  providers: [{identity: {}}]\n  extra: 1\n",
		"no providers":     head + "- resources: [secrets]\n  providers: []\n",
		"short key":        head + "- resources: [secrets]\n  providers: [{aesgcm: {keys: [{name: k, secret: " + base64.StdEncoding.EncodeToString([]byte("short")) + "}]}}]\n",
		"not base64":       head + "- resources: [secrets]\n  providers: [{aesgcm: {keys: [{name: k, secret: '!!'}]}}]\n",
		"unsupported":      head + "- resources: [secrets]\n  providers: [{secretbox: {keys: []}}]\n",
		"other resource":   head + "- resources: [pods]\n  providers: [{identity: {}}]\n",
		"duplicate key":    head + "- resources: [secrets]\n" + strings.Replace(aesgcmProvider("k1", "k1"), "  - aesgcm", "  providers:\n  - aesgcm", 1),
		"empty aesgcm key": head + "- resources: [secrets]\n  providers: [{aesgcm: {keys: []}}]\n",
	} {
		if _, err := ParseEncryptionConfig([]byte(cfg)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
