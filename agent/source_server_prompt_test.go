package agent

import (
	"slices"
	"testing"
	"time"
)

// TestServerSourceSendsTheFirstChangeAtOnce: with an hour-long window, the
// first set goes out at once (the leading edge), and a change right after
// it is gathered into the next set instead of being sent.
func TestServerSourceSendsTheFirstChangeAtOnce(t *testing.T) {
	rig := newServerRig(t)
	rig.createDS(daemonSet("a", ctr("app", "img")))
	src := NewServerSource(ServerSourceConfig{Client: rig.c, NodeName: testNode, Coalesce: time.Hour, Logger: sourceTestLogger(t)})
	updates := runSource(t, src)

	u := nextUpdate(t, updates, 10*time.Second)
	if u.Err != nil || !slices.Equal(updateNames(u), []string{"default/a"}) {
		t.Fatalf("first set = %v (err %v), want default/a", updateNames(u), u.Err)
	}
	rig.createDS(daemonSet("b", ctr("app", "img")))
	select {
	case u := <-updates:
		t.Fatalf("a set %v within the window after the first one", updateNames(u))
	case <-time.After(300 * time.Millisecond):
	}
}
