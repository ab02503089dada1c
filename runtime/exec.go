package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
)

// maxExecOutput bounds what Exec keeps of a command's output, as kubelet
// bounds probe output (10 KiB).
const maxExecOutput = 10 << 10

// Exec runs cmd in the running container, with the container's process
// settings (user, env, cwd), and returns its exit code and its combined
// output (the first 10 KiB). ctx bounds the command: when it ends, the
// process is killed.
func (r *Runtime) Exec(ctx context.Context, id string, cmd []string) (int, []byte, error) {
	ctx = r.ctx(ctx)
	cont, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return -1, nil, fmt.Errorf("container %s: %w", id, err)
	}
	spec, err := cont.Spec(ctx)
	if err != nil {
		return -1, nil, fmt.Errorf("container %s: spec: %w", id, err)
	}
	task, err := cont.Task(ctx, nil)
	if err != nil {
		return -1, nil, fmt.Errorf("container %s: %w", id, err)
	}
	pspec := *spec.Process
	pspec.Args = cmd
	pspec.Terminal = false

	var out limitedBuffer
	execID := "exec-" + randomHex(6)
	// The exec outlives ctx long enough to be killed and deleted.
	bg := context.WithoutCancel(ctx)
	proc, err := task.Exec(bg, execID, &pspec, cio.NewCreator(
		cio.WithStreams(nil, &out, &out),
		cio.WithFIFODir(filepath.Join(r.cfg.RootDir, "fifo")),
	))
	if err != nil {
		return -1, nil, fmt.Errorf("container %s: exec: %w", id, err)
	}
	defer proc.Delete(bg, client.WithProcessKill) //nolint:errcheck // best-effort cleanup of a finished exec
	exited, err := proc.Wait(bg)
	if err != nil {
		return -1, nil, fmt.Errorf("container %s: exec wait: %w", id, err)
	}
	if err := proc.Start(bg); err != nil {
		return -1, nil, fmt.Errorf("container %s: exec start: %w", id, err)
	}
	select {
	case st := <-exited:
		code, _, err := st.Result()
		if io := proc.IO(); io != nil {
			io.Wait()
		}
		return int(code), out.Bytes(), err
	case <-ctx.Done():
		_ = proc.Kill(bg, 9)
		<-exited
		return -1, out.Bytes(), fmt.Errorf("container %s: exec %v: %w", id, cmd, ctx.Err())
	}
}

// limitedBuffer keeps the first maxExecOutput bytes written to it; the
// stdout and stderr copiers write concurrently.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := maxExecOutput - b.buf.Len(); room > 0 {
		if len(p) > room {
			b.buf.Write(p[:room])
		} else {
			b.buf.Write(p)
		}
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
