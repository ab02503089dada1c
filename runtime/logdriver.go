package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// logDriverArg is the single argument key of the log driver URI: the shim
// runs `<LogDriver> log-driver <file>` (key, then value).
const logDriverArg = "log-driver"

// maxLogLine is the longest line written as one CRI log entry; longer lines
// are split into partial (P) entries, as containerd's CRI plugin does.
const maxLogLine = 16 << 10

// RunLogDriver is the body of `daemonlet log-driver FILE`: containerd's
// shim starts it with the container's stdout on fd 3 and stderr on fd 4,
// and waits until fd 5 is closed. It appends every line to file in the CRI
// log format (`<RFC3339Nano> <stream> <F|P> <text>`) until both streams end.
func RunLogDriver(file string) error {
	stdout := os.NewFile(3, "stdout")
	stderr := os.NewFile(4, "stderr")
	ready := os.NewFile(5, "ready")
	if stdout == nil || stderr == nil || ready == nil {
		return errors.New("log-driver: must be started by containerd's shim (fds 3, 4 and 5)")
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("log-driver: %w", err)
	}
	defer f.Close()
	if err := ready.Close(); err != nil {
		return fmt.Errorf("log-driver: signal ready: %w", err)
	}
	w := &criWriter{out: f, now: time.Now}
	var wg sync.WaitGroup
	for _, s := range []struct {
		name string
		r    io.Reader
	}{{"stdout", stdout}, {"stderr", stderr}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.copy(s.name, s.r)
		}()
	}
	wg.Wait()
	return nil
}

// criWriter writes entries of several streams to one file, one whole entry
// at a time.
type criWriter struct {
	mu  sync.Mutex
	out io.Writer
	now func() time.Time
}

// copy reads r line by line and writes each line as CRI entries until EOF.
func (w *criWriter) copy(stream string, r io.Reader) {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			w.entry(stream, "F", line[:len(line)-1])
		case errors.Is(err, bufio.ErrBufferFull):
			w.entry(stream, "P", line)
		case len(line) > 0:
			// The stream ended in the middle of a line.
			w.entry(stream, "F", line)
			return
		default:
			return
		}
	}
}

func (w *criWriter) entry(stream, tag string, text []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	buf := make([]byte, 0, len(text)+64)
	buf = w.now().UTC().AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, ' ')
	buf = append(buf, stream...)
	buf = append(buf, ' ')
	buf = append(buf, tag...)
	buf = append(buf, ' ')
	buf = append(buf, text...)
	buf = append(buf, '\n')
	_, _ = w.out.Write(buf)
}
