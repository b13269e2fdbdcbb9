package engine

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// An outage is told once, however many parts of the runner notice it,
// once more when it is over, and not again for its tail: errors of the
// same kind right after (a pooled connection that died with the server,
// used for the first time). A problem of another kind is told at once.
func TestTroubleIsToldOnce(t *testing.T) {
	var out bytes.Buffer
	cfg := Config{Logger: slog.New(slog.NewTextHandler(&out, nil))}.withDefaults()
	log, trouble := cfg.Logger, cfg.trouble
	down := fmt.Errorf("claim: %w: broken pipe", store.ErrUnavailable)
	count := func(s string) int { return strings.Count(out.String(), s) }

	log.Warn("take over the tasks of runners that are gone", "err", down)
	log.Error("list jobs with sinks", "err", down)
	log.Warn("a group commit waits for the database", "err", down)
	if n := count("lost the connection to the database server"); n != 1 || count("level=WARN") != 1 {
		t.Fatalf("three reports of one outage told %d times:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), `during="take over the tasks of runners that are gone"`) {
		t.Errorf("the line does not say what noticed the outage:\n%s", out.String())
	}
	trouble.over(log)
	trouble.over(log)
	if n := count("resumed"); n != 1 {
		t.Fatalf("the end of the outage told %d times:\n%s", n, out.String())
	}
	log.Warn("running process groups", "err", down) // the outage's tail
	trouble.over(log)
	if n, m := count("lost the connection"), count("resumed"); n != 1 || m != 1 {
		t.Fatalf("the tail of the outage was told again (%d, %d):\n%s", n, m, out.String())
	}
	// After the tail, the same kind is a new outage.
	trouble.overAt.Store(time.Now().Add(-troubleTail).UnixNano())
	log.Warn("claim", "err", down)
	if n := count("lost the connection"); n != 2 {
		t.Fatalf("an outage after the last one's tail was told %d times in all, want 2:\n%s", n, out.String())
	}
	trouble.over(log)
	log.Warn("a group commit waits for the database", "err", fmt.Errorf("commit: %w", store.ErrDiskFull))
	if count("the disk is full") != 1 {
		t.Fatalf("a new kind of problem, within the last one's tail, was not told:\n%s", out.String())
	}
	log.Error("task panicked", "err", fmt.Errorf("boom"))
	if count("task panicked") != 1 {
		t.Fatalf("an error of no environment problem was not logged as it is:\n%s", out.String())
	}
}
