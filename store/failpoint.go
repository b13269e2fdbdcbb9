package store

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

// The failpoints.
const (
	FailSubmitBeforeCommit   = "submit-before-commit"
	FailSubmitAfterCommit    = "submit-after-commit"
	FailAfterTaskStart       = "after-task-start"
	FailCompleteBeforeCommit = "complete-before-commit"
	FailCompleteAfterCommit  = "complete-after-commit"
	FailBeforeDeliver        = "before-deliver"
	FailAfterDeliver         = "after-deliver"
	FailFinishBeforeCommit   = "finish-before-commit"
	FailFinishAfterCommit    = "finish-after-commit"
	FailDuringMigration      = "during-migration"
	// A big submit's chunks before its last (see SubmitChunk).
	FailSubmitChunkAfterCommit = "submit-chunk-after-commit"
)

// Failpoints lists every failpoint, for tests.
var Failpoints = []string{
	FailSubmitBeforeCommit, FailSubmitAfterCommit, FailAfterTaskStart,
	FailCompleteBeforeCommit, FailCompleteAfterCommit, FailBeforeDeliver, FailAfterDeliver,
	FailFinishBeforeCommit, FailFinishAfterCommit, FailDuringMigration,
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

// Failpoint kills the process with SIGKILL if PCD_FAILPOINT names this
// stage and its count is reached.
func Failpoint(name string) {
	if failpointName == "" || failpointName != name {
		return
	}
	if failpointHits.Add(1) == failpointAfter {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not instant; never go on past the failpoint
	}
}
