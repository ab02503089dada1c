package etcdtest

import (
	"context"
	"net/http"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestKillRestart checks that a 3-member cluster serves writes with one
// member killed and that the restarted member catches up on them.
func TestKillRestart(t *testing.T) {
	c := StartCluster(t, 3)
	if got := len(c.Endpoints()); got != 3 {
		t.Fatalf("Endpoints() has %d URLs, want 3", got)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cli := c.Client(t)
	if _, err := cli.Put(ctx, "/before", "1"); err != nil {
		t.Fatalf("put: %v", err)
	}

	c.Kill(0)
	if err := healthy(&http.Client{Timeout: time.Second}, c.Endpoint(0)); err == nil {
		t.Fatal("killed member 0 still answers /health")
	}
	// Killing the leader starts an election; a put during it may time out
	// on the server side, so the write is retried until the two live
	// members have a leader again.
	for {
		_, err := cli.Put(ctx, "/during", "2")
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("put with member 0 killed: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	c.Restart(0)
	only0, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{c.Endpoint(0)},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer only0.Close()
	// A linearizable read on the restarted member waits for it to catch up.
	resp, err := only0.Get(ctx, "/during")
	if err != nil {
		t.Fatalf("get from restarted member 0: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "2" {
		t.Fatalf("restarted member 0 has /during = %v, want 2", resp.Kvs)
	}
}
