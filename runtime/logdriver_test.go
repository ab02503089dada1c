package runtime

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestCRIWriterSplitsLongLinesAndTagsStreams(t *testing.T) {
	var out bytes.Buffer
	at := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	w := &criWriter{out: &out, now: func() time.Time { return at }}
	long := strings.Repeat("x", maxLogLine+10)
	w.copy("stdout", strings.NewReader("one\n"+long+"\nlast-without-newline"))
	w.copy("stderr", strings.NewReader("err\n"))
	want := "2026-01-02T03:04:05.0000006Z stdout F one\n" +
		"2026-01-02T03:04:05.0000006Z stdout P " + long[:maxLogLine] + "\n" +
		"2026-01-02T03:04:05.0000006Z stdout F " + long[maxLogLine:] + "\n" +
		"2026-01-02T03:04:05.0000006Z stdout F last-without-newline\n" +
		"2026-01-02T03:04:05.0000006Z stderr F err\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}
