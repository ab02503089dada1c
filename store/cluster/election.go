package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
)

// Elector chooses one leader among the servers that share a store, for the
// work only one of them may do at a time (such as the DaemonSet
// controller).
//
// A leader does its work until the channel of Leading is closed, then stops
// and may Campaign again. Campaign, Resign and Leading may be called from
// different goroutines, but Campaign must not run twice at once.
type Elector interface {
	// Campaign blocks until this process is the leader, or ctx ends; it
	// returns at once when already leading.
	Campaign(ctx context.Context) error
	// Leading returns a channel closed when the current leadership is lost or
	// resigned; when not leading, the channel is already closed.
	Leading() <-chan struct{}
	// Resign gives leadership up, closing the channel of Leading first, so
	// that another process can lead at once instead of after a timeout.
	Resign(ctx context.Context) error
}

// closedChan is the Leading channel of an elector that does not lead.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// LocalElector is the Elector of a single server on a Bolt store, whose file
// lock already makes it the only one: Campaign always wins at once.
type LocalElector struct {
	// mu guards leading.
	mu      sync.Mutex
	leading chan struct{}
}

var _ Elector = (*LocalElector)(nil)

// NewLocalElector returns an elector that is not leading until Campaign.
func NewLocalElector() *LocalElector {
	return &LocalElector{leading: closedChan}
}

// Campaign makes the process the leader unless ctx has ended.
func (l *LocalElector) Campaign(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.leading == closedChan {
		l.leading = make(chan struct{})
	}
	return nil
}

// Leading returns the channel closed by Resign.
func (l *LocalElector) Leading() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leading
}

// Resign ends the leadership.
func (l *LocalElector) Resign(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.leading != closedChan {
		close(l.leading)
		l.leading = closedChan
	}
	return nil
}

// DefaultElectionTTL is the lease TTL of an EtcdElector created with a zero
// TTL: how long a crashed leader blocks the others, and about how long a
// partitioned leader keeps leading before it notices.
const DefaultElectionTTL = 5 * time.Second

// EtcdElector is the Elector of servers sharing an etcd cluster: an etcd
// concurrency.Election on "<Prefix>/leader" whose candidates' keys are bound
// to a lease (a concurrency.Session) that the client keeps alive.
//
// Leadership ends when the session ends: after Resign, when the store is
// closed, or when the client has had no keep-alive answer for the TTL, which
// is when etcd itself expires the lease and the next candidate wins. The two
// clocks are not synchronised: a leader cut off from etcd can still think
// it leads for up to the keep-alive round trip plus half a second (the
// client's expiry check interval) after another has won; work that must
// never overlap should also check its writes with the store's revisions.
type EtcdElector struct {
	store    *Etcd
	key      string
	identity string
	ttl      int

	// mu guards the fields below.
	mu       sync.Mutex
	session  *concurrency.Session
	election *concurrency.Election
	leading  chan struct{}
	// resigned is closed by Resign to close leading.
	resigned chan struct{}
}

var _ Elector = (*EtcdElector)(nil)

// NewEtcdElector returns an elector on the store's cluster; identity (a
// host name, say) is the value the leader's key holds, for operators. A ttl
// under a second means DefaultElectionTTL.
func NewEtcdElector(store *Etcd, identity string, ttl time.Duration) *EtcdElector {
	if ttl < time.Second {
		ttl = DefaultElectionTTL
	}
	return &EtcdElector{
		store:    store,
		key:      store.prefix + "/leader",
		identity: identity,
		ttl:      int(ttl / time.Second),
		leading:  closedChan,
	}
}

// Campaign blocks until this process holds the oldest key of the election.
func (e *EtcdElector) Campaign(ctx context.Context) error {
	select {
	case <-e.Leading():
	default:
		return nil
	}
	for {
		session, err := concurrency.NewSession(e.store.client, concurrency.WithTTL(e.ttl))
		if err != nil {
			return fmt.Errorf("campaign %s: new session: %w", e.key, etcdError(err))
		}
		election := concurrency.NewElection(session, e.key)
		if err := election.Campaign(ctx, e.identity); err != nil {
			_ = session.Close() // the campaign's error is the one to report
			return fmt.Errorf("campaign %s: %w", e.key, etcdError(err))
		}
		// Campaign only waits for older candidates to go: check that this
		// session's own key outlived the wait.
		resp, err := e.store.client.Get(ctx, election.Key())
		if err != nil {
			_ = session.Close()
			return fmt.Errorf("campaign %s: %w", e.key, etcdError(err))
		}
		select {
		case <-session.Done():
		default:
			if len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision == election.Rev() {
				e.lead(session, election)
				return nil
			}
		}
		_ = session.Close()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("campaign %s: %w", e.key, err)
		}
	}
}

// lead records a won election and closes the Leading channel when the
// session ends or Resign is called.
func (e *EtcdElector) lead(session *concurrency.Session, election *concurrency.Election) {
	leading, resigned := make(chan struct{}), make(chan struct{})
	e.mu.Lock()
	e.session, e.election, e.leading, e.resigned = session, election, leading, resigned
	e.mu.Unlock()
	e.store.logger.Info("elected leader", "election", e.key, "identity", e.identity)
	go func() {
		select {
		case <-session.Done():
			e.store.logger.Warn("lost leadership", "election", e.key, "identity", e.identity)
		case <-resigned:
		}
		close(leading)
	}()
}

// Leading returns the channel of the current leadership.
func (e *EtcdElector) Leading() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading
}

// Resign closes the Leading channel, then deletes the leader key and ends
// the session, so that the next candidate wins without waiting for the TTL.
func (e *EtcdElector) Resign(ctx context.Context) error {
	e.mu.Lock()
	session, election, leading, resigned := e.session, e.election, e.leading, e.resigned
	e.session, e.election, e.leading, e.resigned = nil, nil, closedChan, nil
	e.mu.Unlock()
	if session == nil {
		return nil
	}
	close(resigned)
	<-leading
	err := election.Resign(ctx)
	if cerr := session.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// The lease expires within the TTL anyway.
		return fmt.Errorf("resign %s: %w", e.key, etcdError(err))
	}
	return nil
}
