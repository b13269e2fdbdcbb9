// Package failpoint lets the crash-recovery tests kill pcd at an exact
// stage. The stages are named where they happen: the store's commits, and
// the engine's marks and releases.
package failpoint

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Failpoints let the crash-recovery tests kill the process at an exact
// stage: PCD_FAILPOINT=NAME SIGKILLs the process the first time it reaches
// NAME, and PCD_FAILPOINT=NAME:N the Nth time. Unset, a failpoint costs one
// comparison with an empty string.
var (
	failpointName  string
	failpointAfter int64 = 1
	failpointHits  atomic.Int64
)

// The failpoints. A transaction's are its name, "-before-commit" and
// "-after-commit" (store.txAt).
const (
	SubmitBeforeCommit   = "submit-before-commit"
	SubmitAfterCommit    = "submit-after-commit"
	AfterTaskStart       = "after-task-start" // engine: a commit marked tasks running
	CompleteBeforeCommit = "complete-before-commit"
	CompleteAfterCommit  = "complete-after-commit"
	BeforeDeliver        = "before-deliver" // engine: a callback's release
	AfterDeliver         = "after-deliver"
	FinishBeforeCommit   = "finish-before-commit"
	FinishAfterCommit    = "finish-after-commit"
	DuringMigration      = "during-migration"
	// A big submit's chunks before its last (store.SubmitChunk).
	SubmitChunkAfterCommit = "submit-chunk-after-commit"
)

// All lists the failpoints that TestCrashAtEveryFailpoint runs; a chunked
// submit and a prune have tests of their own.
var All = []string{
	SubmitBeforeCommit, SubmitAfterCommit, AfterTaskStart,
	CompleteBeforeCommit, CompleteAfterCommit, BeforeDeliver, AfterDeliver,
	FinishBeforeCommit, FinishAfterCommit, DuringMigration,
}

func init() {
	spec := os.Getenv("PCD_FAILPOINT")
	name, count, ok := strings.Cut(spec, ":")
	if ok {
		if n, err := strconv.ParseInt(count, 10, 64); err == nil && n > 0 {
			failpointAfter = n
		}
	}
	failpointName = name
}

// Hit kills the process with SIGKILL if PCD_FAILPOINT names this stage
// and its count is reached.
func Hit(name string) {
	if failpointName == "" || failpointName != name {
		return
	}
	if failpointHits.Add(1) == failpointAfter {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not instant; never go on past the failpoint
	}
}
