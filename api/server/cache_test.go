package server

import (
	"context"
	"net/http"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// TestDecodedCacheList checks that the cache's list is the store's list,
// decoding only the keys whose ModRevision changed and forgetting deleted
// keys. The cache is fed by list alone here (no broadcaster runs).
func TestDecodedCacheList(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, 0)
	nodes := newDecodedCache(nodesResource())
	put := func(n *corev1.Node, rev int64) int64 {
		t.Helper()
		data, err := nodes.res.encode(n)
		if err != nil {
			t.Fatal(err)
		}
		if rev == 0 {
			rev, err = st.Create(ctx, nodes.res.key("", n.Name), data)
		} else {
			rev, err = st.Update(ctx, nodes.res.key("", n.Name), data, rev)
		}
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	// list checks the cache's list against a fresh decode of the store's
	// and returns it by name.
	list := func() map[string]object {
		t.Helper()
		got, gotRev, err := nodes.list(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		kvs, rev, err := st.List(ctx, nodes.res.prefix(""))
		if err != nil {
			t.Fatal(err)
		}
		if gotRev != rev || len(got) != len(kvs) {
			t.Fatalf("list: %d objects at revision %d, the store has %d at %d", len(got), gotRev, len(kvs), rev)
		}
		byName := map[string]object{}
		for i, kv := range kvs {
			want, err := nodes.res.decode(kv)
			if err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(got[i], want) {
				t.Fatalf("list item %d: got %+v, want %+v", i, got[i], want)
			}
			byName[want.GetName()] = got[i]
		}
		return byName
	}

	revA := put(testNode("a"), 0)
	put(testNode("b"), 0)
	first := list()
	second := list()
	for name, o := range first {
		if second[name] != o {
			t.Errorf("node %s decoded again although unchanged", name)
		}
	}

	// A single read is a private copy of the cached object.
	kv, err := st.Get(ctx, nodes.res.key("", "b"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := nodes.decode(kv)
	if err != nil {
		t.Fatal(err)
	}
	if b == first["b"] || !equality.Semantic.DeepEqual(b, first["b"]) {
		t.Errorf("decode of b: got %p %+v, want a copy of %p", b, b, first["b"])
	}

	a := first["a"].(*corev1.Node).DeepCopy()
	a.Labels["changed"] = "yes"
	put(a, revA)
	third := list()
	if third["a"] == first["a"] || third["a"].GetLabels()["changed"] != "yes" {
		t.Errorf("changed node a not decoded again: %+v", third["a"])
	}
	if third["b"] != first["b"] {
		t.Error("unchanged node b decoded again")
	}

	if _, _, err := st.Delete(ctx, nodes.res.key("", "b"), 0); err != nil {
		t.Fatal(err)
	}
	if fourth := list(); len(fourth) != 1 {
		t.Errorf("after deleting b: %d nodes listed", len(fourth))
	}
	if _, ok := nodes.entries[nodes.res.key("", "b")]; ok {
		t.Error("deleted node b still cached")
	}
}

// TestDecodedCacheOfferAndForget checks that the broadcaster's offers and
// deletes never replace a newer cached revision with an older one.
func TestDecodedCacheOfferAndForget(t *testing.T) {
	c := newDecodedCache(nodesResource())
	older, newer := testNode("a"), testNode("a")
	c.offer("/nodes/a", 5, newer)
	c.offer("/nodes/a", 3, older)
	if e := c.entries["/nodes/a"]; e.rev != 5 || e.obj != newer {
		t.Errorf("an older offer replaced the newer entry: %+v", e)
	}
	c.forget("/nodes/a", 4)
	if _, ok := c.entries["/nodes/a"]; !ok {
		t.Error("a delete older than the cached revision dropped it")
	}
	c.forget("/nodes/a", 6)
	if _, ok := c.entries["/nodes/a"]; ok {
		t.Error("a newer delete left the entry")
	}
}

// TestControllersShareDecodedNodes checks that the broadcaster hands the
// objects it decodes to the cache, so that the controllers' next read
// does not decode them again.
func TestControllersShareDecodedNodes(t *testing.T) {
	h := newHarness(t, nil, nil, false)
	var created corev1.Node
	h.must("POST", "/api/v1/nodes", "", testNode("a"), http.StatusCreated, &created)
	key := h.srv.nodes.key("", "a")
	eventually(t, "the broadcaster cached node a", func() bool {
		h.srv.nodeCache.mu.Lock()
		defer h.srv.nodeCache.mu.Unlock()
		_, ok := h.srv.nodeCache.entries[key]
		return ok
	})
	h.srv.nodeCache.mu.Lock()
	cached := h.srv.nodeCache.entries[key].obj
	h.srv.nodeCache.mu.Unlock()
	got, _, err := h.srv.nodeCache.list(context.Background(), h.store)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != cached || got[0].GetResourceVersion() != created.ResourceVersion {
		t.Errorf("list gave %v, want the broadcaster's object at resourceVersion %s", got, created.ResourceVersion)
	}
}

// nodesResource is the Node descriptor alone.
func nodesResource() *resource {
	_, nodes, _ := newResources()
	return nodes
}

// TestDecodedCacheConcurrentOffers lists while the broadcaster's offers
// and deletes come in, as they do in the server (run with -race).
func TestDecodedCacheConcurrentOffers(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, 0)
	c := newDecodedCache(nodesResource())
	for _, name := range []string{"a", "b", "c"} {
		data, err := c.res.encode(testNode(name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Create(ctx, c.res.key("", name), data); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range int64(2000) {
			c.offer("/nodes/a", i, testNode("a"))
			c.forget("/nodes/x", i)
		}
	}()
	for range 50 {
		got, _, err := c.list(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("listed %d nodes, want 3", len(got))
		}
	}
	<-done
}
