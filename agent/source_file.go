package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// fileDebounce lets an editor's burst of writes (truncate, write, rename)
// settle into one read: a change that may be a write in progress (a file
// created, truncated, written to, moved away) is read fileDebounce after
// it, and the changes within fileDebounce after a set are gathered into
// the next set.
const fileDebounce = 100 * time.Millisecond

// FileSourceConfig configures a FileSource.
type FileSourceConfig struct {
	// Path is --pod-manifest-path: a directory of manifests or one file.
	Path string
	// CheckFrequency is the poll period; zero means DefaultCheckFrequency.
	CheckFrequency time.Duration
	// Logger receives read errors; nil means slog.Default().
	Logger *slog.Logger
}

// FileSource reads DaemonSet and static Pod manifests, and the ConfigMaps
// and Secrets their pods use, from a directory (or
// one file), as kubelet's static pod path: files whose names start with '.'
// are skipped, subdirectories are not entered, files are read in name order.
// It reads at start, on inotify events, and every CheckFrequency as the
// fallback for missed events. A rejected file keeps the objects of its last
// good content; a removed file takes its objects with it.
type FileSource struct {
	path   string
	period time.Duration
	log    *slog.Logger
	// debounce is fileDebounce; tests lengthen it to tell a read at once
	// from a debounced one.
	debounce time.Duration

	mu      sync.Mutex            // guards the fields below
	files   map[string]*fileEntry // by path, the files of the last scan
	report  SourceReport
	sent    bool   // a set was sent since Run started
	listErr string // text of the list error last sent, empty after a good list
}

// fileEntry is what the source remembers of one manifest file.
type fileEntry struct {
	sum  [sha256.Size]byte // of the content last read
	good manifest          // the objects of the last good content
	err  error             // why the content last read was rejected
}

var _ Source = (*FileSource)(nil)

// NewFileSource returns a file source; Run starts it.
func NewFileSource(cfg FileSourceConfig) *FileSource {
	s := &FileSource{
		path:     cfg.Path,
		period:   cfg.CheckFrequency,
		log:      cfg.Logger,
		debounce: fileDebounce,
		files:    map[string]*fileEntry{},
	}
	if s.period <= 0 {
		s.period = DefaultCheckFrequency
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("source", SourceFile)
	s.report = SourceReport{Name: SourceFile, Location: cfg.Path}
	return s
}

// Name returns SourceFile.
func (s *FileSource) Name() string { return SourceFile }

// Report returns the last scan's outcome.
func (s *FileSource) Report() SourceReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.report
	r.FileErrors = slices.Clone(r.FileErrors)
	return r
}

// Run scans at once, then on every watch event and poll tick, sending the
// full set whenever a file was added, changed or removed.
//
// A write that is complete (a file closed after writing, or renamed into
// the folder) is read at once, unless a set went out less than the
// debounce ago; any other change may be a write in progress and is read
// the debounce later, or at once when a write completes meanwhile.
// So a file is read when its writer is done with it, and an editor's
// truncate, write and rename is one change.
func (s *FileSource) Run(ctx context.Context, updates chan<- SourceUpdate) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	events := make(chan struct{}, 1)
	written := make(chan struct{}, 1)
	// The first scan waits for the watch to be set up (or to fail), so
	// that every change after the scan is seen.
	watching := make(chan struct{})
	var once sync.Once
	wg.Go(func() { s.watch(ctx, events, written, func() { once.Do(func() { close(watching) }) }) })
	select {
	case <-watching:
	case <-ctx.Done():
		return
	}
	ticker := time.NewTicker(s.period)
	defer ticker.Stop()
	// lastSent opens the window that gathers a burst; the set read at
	// start opens none, as no change led to it.
	var lastSent time.Time
	for first := true; ; first = false {
		if u, changed := s.scan(); changed {
			if !sendUpdate(ctx, updates, u) {
				return
			}
			if !first {
				lastSent = time.Now()
			}
		}
		var wait time.Duration
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-written:
			wait = s.debounce - time.Since(lastSent)
		case <-events:
			t := time.NewTimer(s.debounce)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			case <-written:
				t.Stop()
				wait = s.debounce - time.Since(lastSent)
			}
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// scan reads the manifests and returns the full set, and whether it differs
// from the last one sent.
func (s *FileSource) scan() (SourceUpdate, bool) {
	now := time.Now()
	paths, listErr := s.list()

	s.mu.Lock()
	defer s.mu.Unlock()
	s.report.LastAttempt = now
	if listErr != nil {
		// The set cannot be known: report it once, and leave the files'
		// state alone so that nothing is forgotten.
		s.report.Error = listErr.Error()
		if listErr.Error() == s.listErr {
			return SourceUpdate{}, false
		}
		s.listErr = listErr.Error()
		s.log.Error("cannot list manifests; keeping the previous set", "path", s.path, "err", listErr)
		return SourceUpdate{Source: SourceFile, Err: listErr}, true
	}
	// After a list error the set is sent again, to clear the agent's error.
	changed := !s.sent || s.listErr != ""
	s.listErr = ""
	present := map[string]bool{}
	for _, p := range paths {
		present[p] = true
		data, err := os.ReadFile(p)
		if err != nil {
			// Vanished between listing and reading: gone, as if removed.
			if errors.Is(err, fs.ErrNotExist) {
				delete(present, p)
				continue
			}
			s.reject(p, err)
			continue
		}
		sum := sha256.Sum256(data)
		e, ok := s.files[p]
		if ok && e.sum == sum {
			continue
		}
		changed = true
		if !ok {
			e = &fileEntry{}
			s.files[p] = e
		}
		e.sum = sum
		if len(bytes.TrimSpace(data)) == 0 {
			// A file being rewritten is often empty for a moment: keep
			// its objects rather than restart them; removing the file
			// is how to remove them.
			e.err = nil
			if n := e.good.count(); n > 0 {
				e.err = fmt.Errorf("%s: empty file; its %d previous objects are kept until it has content or is removed: %w", p, n, errdefs.ErrInvalidArgument)
			}
			continue
		}
		m, err := decodeManifest(p, data)
		if err != nil {
			e.err = err
			s.log.Error("manifest rejected; keeping its previous objects", "file", p, "kept", e.good.count(), "err", err)
			continue
		}
		e.good, e.err = m, nil
	}
	for p := range s.files {
		if !present[p] {
			delete(s.files, p)
			changed = true
			s.log.Info("manifest removed", "file", p)
		}
	}

	s.report.Error = ""
	s.report.LastSync = now

	var set manifest
	var fileErrs []FileError
	owner := map[string]string{}
	// claim records that file p defines kind key, unless an earlier file
	// (in name order) does.
	claim := func(p, kind, key string) bool {
		if first, dup := owner[kind+" "+key]; dup {
			fileErrs = append(fileErrs, FileError{File: p, Error: fmt.Sprintf("%s %s ignored: file %s already defines it", kind, key, first)})
			return false
		}
		owner[kind+" "+key] = p
		return true
	}
	for _, p := range slices.Sorted(maps.Keys(s.files)) {
		e := s.files[p]
		if e.err != nil {
			fileErrs = append(fileErrs, FileError{File: p, Error: e.err.Error()})
		}
		for _, ds := range e.good.daemonSets {
			if claim(p, "DaemonSet", objectKey(ds)) {
				set.daemonSets = append(set.daemonSets, ds)
			}
		}
		for _, cm := range e.good.configMaps {
			if claim(p, "ConfigMap", metaKey(cm.ObjectMeta)) {
				set.configMaps = append(set.configMaps, cm)
			}
		}
		for _, sec := range e.good.secrets {
			if claim(p, "Secret", metaKey(sec.ObjectMeta)) {
				set.secrets = append(set.secrets, sec)
			}
		}
	}
	s.report.FileErrors = fileErrs
	if changed {
		s.sent = true
	}
	return SourceUpdate{Source: SourceFile, DaemonSets: set.daemonSets, ConfigMaps: set.configMaps, Secrets: set.secrets}, changed
}

// reject records a file that could not be read; its previous objects stay.
func (s *FileSource) reject(p string, err error) {
	e, ok := s.files[p]
	if !ok {
		e = &fileEntry{}
		s.files[p] = e
	}
	if e.err == nil || e.err.Error() != err.Error() {
		s.log.Error("cannot read manifest; keeping its previous objects", "file", p, "err", err)
	}
	// Forget the content's sum, so that the next good read is decoded
	// again and clears this error even if the content did not change.
	e.sum = [sha256.Size]byte{}
	e.err = err
}

// list returns the manifest files in name order. A missing path is an empty
// set, as in kubelet: removing the folder removes its pods.
func (s *FileSource) list() ([]string, error) {
	fi, err := os.Stat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{s.path}, nil
	}
	entries, err := os.ReadDir(s.path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(s.path, e.Name())
		// Stat follows symlinks, so a link to a manifest counts as a file.
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// watchMask is every inotify event that can change the set: files created,
// written, renamed in or out, removed, or their mode changed, and the
// watched directory itself going away.
const watchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MODIFY | unix.IN_CLOSE_WRITE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

// watch rings events whenever inotify reports a change under the manifest
// path, and written too when the change completes a write. A path that
// cannot be watched (not there yet, say) is retried with a back-off from
// 1s up to the poll period, as kubelet does; meanwhile the poll is what
// notices changes. It calls tried once the first watch is set up or has
// failed.
func (s *FileSource) watch(ctx context.Context, events, written chan<- struct{}, tried func()) {
	backoff := time.Second
	var lastErr string
	for {
		err := s.watchOnce(ctx, events, written, tried)
		tried()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			// The watched directory went away or was replaced: rewatch now.
			backoff = time.Second
			continue
		}
		if err.Error() != lastErr {
			s.log.Warn("cannot watch manifests; polling only until the watch works", "path", s.path, "every", s.period, "err", err)
			lastErr = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.period)
	}
}

// watchOnce watches the manifest directory (or a single manifest's parent
// directory, so that an editor's rename-over is seen) until the watch ends:
// nil when the directory itself went away, an error when it could not be
// set up or read. Events that complete a write (IN_CLOSE_WRITE,
// IN_MOVED_TO) ring written as well as events. It calls setUp once the
// watch is in place.
func (s *FileSource) watchOnce(ctx context.Context, events, written chan<- struct{}, setUp func()) error {
	target := s.path
	fi, err := os.Stat(target)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		target = filepath.Dir(target)
	}
	// Non-blocking, so that os.File puts it in the runtime's poller and
	// Close interrupts a pending Read.
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("inotify_init1: %w", err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	defer f.Close()
	if _, err := unix.InotifyAddWatch(fd, target, watchMask); err != nil {
		return fmt.Errorf("inotify_add_watch %s: %w", target, err)
	}
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	setUp()
	// Changes made before the watch existed (a rewatch) would otherwise
	// wait for the poll.
	ringBell(events)

	buf := make([]byte, 64*1024)
	for {
		n, err := f.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read inotify events: %w", err)
		}
		gone, complete := false, false
		// struct inotify_event: wd int32, mask uint32, cookie uint32,
		// len uint32, then len bytes of name.
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := binary.NativeEndian.Uint32(buf[off+12:])
			if mask&(unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0 {
				gone = true
			}
			if mask&(unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO) != 0 {
				complete = true
			}
			off += unix.SizeofInotifyEvent + int(nameLen)
		}
		ringBell(events)
		if complete {
			ringBell(written)
		}
		if gone {
			return nil
		}
	}
}

// ringBell writes to a doorbell channel of capacity 1 without blocking: one
// pending ring stands for any number of events.
func ringBell(bell chan<- struct{}) {
	select {
	case bell <- struct{}{}:
	default:
	}
}
