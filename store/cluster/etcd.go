package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	// DefaultEtcdPrefix is the key prefix OpenEtcd uses when EtcdConfig.Prefix
	// is empty, kube-apiserver's default --etcd-prefix.
	DefaultEtcdPrefix = "/registry"
	// DefaultEtcdDialTimeout bounds OpenEtcd's first request when
	// EtcdConfig.DialTimeout is zero.
	DefaultEtcdDialTimeout = 5 * time.Second
)

// EtcdConfig says which etcd cluster OpenEtcd talks to and how.
type EtcdConfig struct {
	// Endpoints are the client URLs of the cluster's members; the client
	// fails over between them.
	Endpoints []string
	// Prefix is prepended to every key, as kube-apiserver's --etcd-prefix, so
	// that several stores can share a cluster; it must not be a prefix of
	// another store's Prefix. Empty means DefaultEtcdPrefix.
	Prefix string
	// CAFile, CertFile and KeyFile configure TLS: the CA that signs the
	// members' certificates and the client's own certificate and key.
	CAFile, CertFile, KeyFile string
	// DialTimeout bounds connecting and OpenEtcd's first request; zero means
	// DefaultEtcdDialTimeout.
	DialTimeout time.Duration
	// HistoryLimit is the number of most recent revisions the store keeps
	// when it compacts etcd's history (as kube-apiserver's compactor does);
	// zero means DefaultHistoryLimit.
	HistoryLimit int
	// Logger receives compaction and watch messages; nil discards them.
	Logger *slog.Logger
}

// Etcd is the Store backed by an etcd v3 cluster: etcd's own revision is the
// store revision, preconditions are etcd transactions and Watch is an etcd
// watch, so several servers can share one cluster.
//
// Compaction: etcd keeps every revision until compacted, and the key space
// is shared, so after a write at revision R the store compacts the cluster to
// R-HistoryLimit once that is a trim batch (an eighth of the limit, at most
// 1024 revisions) past its last compaction, like Bolt trims its log; the
// limit counts revisions of the whole cluster, not only of this Prefix. It
// does not compact past a revision that one of its own new watches has yet
// to receive (see catchUpHold), since etcd would cancel that watch.
type Etcd struct {
	client       *clientv3.Client
	prefix       string
	logger       *slog.Logger
	historyLimit int64
	trimBatch    int64

	// revision is the highest response header revision seen.
	revision atomic.Int64
	// compacted is the revision this store last compacted to; written under
	// compactMu, read without it for the writes' quick check.
	compacted atomic.Int64
	// compactMu serialises compactions with each other and with the
	// registration of watch holds, so that a compaction either completes
	// before a new watch's first read or respects its hold.
	compactMu sync.Mutex
	// holds are the start revisions of the watches that are catching up;
	// guarded by compactMu.
	holds map[*watchHold]struct{}

	// ctx ends every watch when Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	// mu guards closed and the Add of watches, so that Close's Wait does not
	// race a new watch.
	mu      sync.Mutex
	closed  bool
	watches sync.WaitGroup
}

var _ Store = (*Etcd)(nil)

// OpenEtcd connects to the etcd cluster and reads its current revision;
// errdefs.ErrUnavailable when no member answers within the dial timeout.
func OpenEtcd(cfg EtcdConfig) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("open etcd store: no endpoints: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.HistoryLimit < 0 {
		return nil, fmt.Errorf("open etcd store: negative history limit %d: %w", cfg.HistoryLimit, errdefs.ErrInvalidArgument)
	}
	prefix := strings.TrimSuffix(cfg.Prefix, "/")
	if cfg.Prefix == "" {
		prefix = DefaultEtcdPrefix
	}
	timeout := cfg.DialTimeout
	if timeout <= 0 {
		timeout = DefaultEtcdDialTimeout
	}
	limit := int64(cfg.HistoryLimit)
	if limit == 0 {
		limit = DefaultHistoryLimit
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	clientCfg := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: timeout,
		// The client's own zap logs would bypass the server's slog; the
		// errors it reports reach the caller instead.
		Logger: zap.NewNop(),
	}
	if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" {
		tlsInfo := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.CAFile}
		tlsCfg, err := tlsInfo.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("open etcd store: TLS configuration: %w: %w", errdefs.ErrInvalidArgument, err)
		}
		clientCfg.TLS = tlsCfg
	}
	client, err := clientv3.New(clientCfg)
	if err != nil {
		return nil, fmt.Errorf("open etcd store %v: %w", cfg.Endpoints, etcdError(err))
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Etcd{
		client:       client,
		prefix:       prefix,
		logger:       logger,
		historyLimit: limit,
		trimBatch:    max(1, min(limit/8, 1024)),
		ctx:          ctx,
		cancel:       cancel,
		holds:        make(map[*watchHold]struct{}),
	}
	// A first read fails fast on an unreachable cluster and sets Revision.
	readCtx, readCancel := context.WithTimeout(ctx, timeout)
	defer readCancel()
	resp, err := client.Get(readCtx, prefix, clientv3.WithCountOnly())
	if err != nil {
		cancel()
		_ = client.Close() // the read's error is the one to report
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("open etcd store %v: no answer within %s: %w: %w", cfg.Endpoints, timeout, errdefs.ErrUnavailable, err)
		}
		return nil, fmt.Errorf("open etcd store %v: %w", cfg.Endpoints, etcdError(err))
	}
	e.seen(resp.Header)
	return e, nil
}

// etcdError gives the client's errors an errdefs class: a request etcd
// refuses for its size is the caller's, anything else (no leader, no member
// reachable) is the cluster being unavailable. Context errors pass through.
func etcdError(err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, rpctypes.ErrRequestTooLarge), errors.Is(err, rpctypes.ErrTooManyOps):
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	default:
		return fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
	}
}

// seen records a response's revision for Revision.
func (e *Etcd) seen(h interface{ GetRevision() int64 }) {
	rev := h.GetRevision()
	for {
		cur := e.revision.Load()
		if rev <= cur || e.revision.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// etcdKey returns the etcd key of a store key.
func (e *Etcd) etcdKey(key string) (string, error) {
	if key == "" {
		return "", fmt.Errorf("empty key: %w", errdefs.ErrInvalidArgument)
	}
	return e.prefix + key, nil
}

// kv converts an etcd key-value under the prefix into a KV.
func (e *Etcd) kv(kv *mvccpb.KeyValue) KV {
	return KV{
		Key:            strings.TrimPrefix(string(kv.Key), e.prefix),
		Value:          kv.Value,
		CreateRevision: kv.CreateRevision,
		ModRevision:    kv.ModRevision,
	}
}

// Close ends every watch, waits for their goroutines and closes the client.
// Calling it again does nothing.
func (e *Etcd) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	e.watches.Wait()
	if err := e.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close etcd store: %w", err)
	}
	return nil
}

// Revision returns the highest revision this store has seen in a response,
// its own writes included; other servers' writes raise it only once read.
func (e *Etcd) Revision() int64 { return e.revision.Load() }

// Get returns the key's current value with a linearizable read.
func (e *Etcd) Get(ctx context.Context, key string) (KV, error) {
	k, err := e.etcdKey(key)
	if err != nil {
		return KV{}, fmt.Errorf("get: %w", err)
	}
	resp, err := e.client.Get(ctx, k)
	if err != nil {
		return KV{}, fmt.Errorf("get %s: %w", key, etcdError(err))
	}
	e.seen(resp.Header)
	if len(resp.Kvs) == 0 {
		return KV{}, fmt.Errorf("get %s: %w", key, errdefs.ErrNotFound)
	}
	return e.kv(resp.Kvs[0]), nil
}

// List returns the keys under prefix, sorted by key, and the revision of
// the read.
func (e *Etcd) List(ctx context.Context, prefix string) ([]KV, int64, error) {
	resp, err := e.client.Get(ctx, e.prefix+prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", prefix, etcdError(err))
	}
	e.seen(resp.Header)
	kvs := make([]KV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		kvs = append(kvs, e.kv(kv))
	}
	return kvs, resp.Header.Revision, nil
}

// Create stores a new key with a transaction that requires it to be absent.
func (e *Etcd) Create(ctx context.Context, key string, value []byte) (int64, error) {
	k, err := e.etcdKey(key)
	if err != nil {
		return 0, fmt.Errorf("create: %w", err)
	}
	resp, err := e.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(value))).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", key, etcdError(err))
	}
	e.seen(resp.Header)
	if !resp.Succeeded {
		return 0, fmt.Errorf("create %s: %w", key, errdefs.ErrAlreadyExists)
	}
	e.compact(ctx, resp.Header.Revision)
	return resp.Header.Revision, nil
}

// Update replaces an existing key's value with a transaction that requires
// the key to exist and, unless expectedModRevision is 0, its ModRevision.
func (e *Etcd) Update(ctx context.Context, key string, value []byte, expectedModRevision int64) (int64, error) {
	k, err := e.etcdKey(key)
	if err != nil {
		return 0, fmt.Errorf("update: %w", err)
	}
	resp, err := e.txn(ctx, k, expectedModRevision, clientv3.OpPut(k, string(value)))
	if err != nil {
		return 0, fmt.Errorf("update %s: %w", key, err)
	}
	return resp.Header.Revision, nil
}

// Delete removes a key with a transaction that requires it to exist and,
// unless expectedModRevision is 0, its ModRevision; it returns the key as
// it was stored.
func (e *Etcd) Delete(ctx context.Context, key string, expectedModRevision int64) (KV, int64, error) {
	k, err := e.etcdKey(key)
	if err != nil {
		return KV{}, 0, fmt.Errorf("delete: %w", err)
	}
	resp, err := e.txn(ctx, k, expectedModRevision, clientv3.OpDelete(k, clientv3.WithPrevKV()))
	if err != nil {
		return KV{}, 0, fmt.Errorf("delete %s: %w", key, err)
	}
	prev := resp.Responses[0].GetResponseDeleteRange().GetPrevKvs()
	if len(prev) != 1 {
		return KV{}, 0, fmt.Errorf("delete %s: etcd returned %d previous values: %w", key, len(prev), errdefs.ErrUnknown)
	}
	return e.kv(prev[0]), resp.Header.Revision, nil
}

// txn runs op on the existing key k if its ModRevision is expected (any
// when 0); on failure its else branch reads k to tell a missing key from a
// changed one.
func (e *Etcd) txn(ctx context.Context, k string, expected int64, op clientv3.Op) (*clientv3.TxnResponse, error) {
	if expected < 0 {
		return nil, fmt.Errorf("negative expected revision %d: %w", expected, errdefs.ErrInvalidArgument)
	}
	cond := clientv3.Compare(clientv3.CreateRevision(k), ">", 0)
	if expected != 0 {
		cond = clientv3.Compare(clientv3.ModRevision(k), "=", expected)
	}
	resp, err := e.client.Txn(ctx).If(cond).Then(op).Else(clientv3.OpGet(k, clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return nil, etcdError(err)
	}
	e.seen(resp.Header)
	if !resp.Succeeded {
		if len(resp.Responses[0].GetResponseRange().GetKvs()) == 0 {
			return nil, errdefs.ErrNotFound
		}
		return nil, fmt.Errorf("modified since revision %d: %w", expected, errdefs.ErrConflict)
	}
	e.compact(ctx, resp.Header.Revision)
	return resp, nil
}

// catchUpHold is how long a new watch keeps this store from compacting past
// the revision it has to receive next. etcd serves a watch that starts in
// the past from a background loop that runs every 100ms, and cancels it if
// its start was compacted meanwhile; once caught up, a watch receives
// changes as they are written and compaction no longer concerns it. The hold
// is bounded so that a watch of a quiet prefix, which receives nothing and so
// never shows progress, cannot hold compaction forever.
const catchUpHold = 5 * time.Second

// watchHold is a new watch's claim on the history it has yet to receive.
type watchHold struct {
	// next is the revision the watch has to receive next.
	next  atomic.Int64
	until time.Time
}

// hold registers a watch hold from revision next.
func (e *Etcd) hold(next int64) *watchHold {
	h := &watchHold{until: time.Now().Add(catchUpHold)}
	h.next.Store(next)
	e.compactMu.Lock()
	e.holds[h] = struct{}{}
	e.compactMu.Unlock()
	return h
}

// release removes a watch hold.
func (e *Etcd) release(h *watchHold) {
	e.compactMu.Lock()
	delete(e.holds, h)
	e.compactMu.Unlock()
}

// compact compacts etcd's history to rev-HistoryLimit after the write at
// rev once that is a trim batch past the last compaction, but not past a
// revision a catching-up watch of this store still needs. A failure is only
// logged: the write succeeded, and the next batch retries.
func (e *Etcd) compact(ctx context.Context, rev int64) {
	to := rev - e.historyLimit
	if to-e.compacted.Load() < e.trimBatch {
		return
	}
	e.compactMu.Lock()
	defer e.compactMu.Unlock()
	now := time.Now()
	for h := range e.holds {
		if now.Before(h.until) {
			to = min(to, h.next.Load())
		}
	}
	last := e.compacted.Load()
	if to-last < e.trimBatch {
		return
	}
	_, err := e.client.Compact(ctx, to)
	switch {
	case err == nil:
		e.compacted.Store(to)
		e.logger.Debug("compacted etcd history", "revision", to)
	case errors.Is(err, rpctypes.ErrCompacted):
		// Another server sharing the cluster compacted further already.
		e.compacted.Store(to)
	default:
		e.logger.Warn("compact etcd history", "revision", to, "error", err)
	}
}

// Watch streams the changes under prefix after afterRevision from an etcd
// watch. The watch starts with a read at afterRevision+1 so that a compacted
// start is reported as ErrCompacted here rather than as a closed channel;
// a compaction that overtakes the watch after that closes the channel, and
// the caller's re-watch then gets ErrCompacted.
func (e *Etcd) Watch(ctx context.Context, prefix string, afterRevision int64) (<-chan Event, error) {
	if afterRevision < 0 {
		return nil, fmt.Errorf("watch %q: negative revision %d: %w", prefix, afterRevision, errdefs.ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("watch %q: %w", prefix, err)
	}
	start := afterRevision + 1
	// The hold comes before the read, so that no compaction of this store
	// can fall between the read's check and etcd's start of the watch.
	h := e.hold(start)
	// The key does not matter: etcd checks the revision before the range.
	resp, err := e.client.Get(ctx, e.prefix, clientv3.WithRev(start), clientv3.WithCountOnly())
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		e.release(h)
		return nil, fmt.Errorf("watch %q from revision %d: %w", prefix, afterRevision, ErrCompacted)
	case errors.Is(err, rpctypes.ErrFutureRev):
		// Watching from a revision not yet written is allowed.
	case err != nil:
		e.release(h)
		return nil, fmt.Errorf("watch %q: %w", prefix, etcdError(err))
	default:
		e.seen(resp.Header)
	}

	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		e.release(h)
		return nil, fmt.Errorf("watch %q: store closed: %w", prefix, errdefs.ErrUnavailable)
	}
	e.watches.Add(1)
	e.mu.Unlock()

	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(e.ctx, cancel)
	// WithRequireLeader ends the watch when its member loses the leader,
	// instead of it silently stalling on a partitioned member.
	events := e.client.Watch(clientv3.WithRequireLeader(wctx), e.prefix+prefix,
		clientv3.WithPrefix(), clientv3.WithRev(start), clientv3.WithPrevKV())
	ch := make(chan Event, watchBuffer)
	go func() {
		defer e.watches.Done()
		defer e.release(h)
		defer stop()
		defer cancel()
		defer close(ch)
		if reason := e.forward(events, ch, h); reason != "" {
			e.logger.Info("watch closed", "prefix", prefix, "after", afterRevision, "reason", reason)
		}
	}()
	return ch, nil
}

// forward translates the etcd watch responses into ch until the watch ends
// or ch is full, advancing the watch's hold, and returns why it stopped
// (empty when its context ended).
func (e *Etcd) forward(events clientv3.WatchChan, ch chan<- Event, h *watchHold) string {
	for resp := range events {
		if resp.CompactRevision != 0 {
			return fmt.Sprintf("compacted at revision %d", resp.CompactRevision)
		}
		if err := resp.Err(); err != nil {
			return err.Error()
		}
		if resp.Canceled {
			return "cancelled by etcd"
		}
		for _, ev := range resp.Events {
			out := Event{Revision: ev.Kv.ModRevision}
			switch ev.Type {
			case clientv3.EventTypePut:
				out.Type = EventPut
				out.KV = e.kv(ev.Kv)
			case clientv3.EventTypeDelete:
				out.Type = EventDelete
				if ev.PrevKv == nil {
					// etcd omits it only if the previous revision was
					// compacted under the watch: resuming gives ErrCompacted.
					return fmt.Sprintf("delete at revision %d without its previous value", ev.Kv.ModRevision)
				}
				out.KV = e.kv(ev.PrevKv)
				out.KV.ModRevision = ev.Kv.ModRevision
			}
			h.next.Store(out.Revision + 1)
			select {
			case ch <- out:
			default:
				return "receiver too far behind"
			}
		}
	}
	// The caller's context or Close ended the watch: nothing to report.
	return ""
}
