package engine

import (
	"github.com/pcd-dev/pcd/store"
)

// halter applies a job's halt policy as its results commit.
type halter struct {
	policy    Halt
	total     int64
	succeeded int64
	failed    int64
	reason    string // set once halted
}

func newHalter(job store.Job) *halter {
	h, _ := ParseHalt(job.Halt) // checked at submit
	return &halter{policy: h, total: job.Total, succeeded: job.Succeeded, failed: job.Failed}
}

// count takes a task's final state, and says whether the job halts now,
// for the first time.
func (h *halter) count(state store.State) bool {
	if h == nil || h.policy.Never() || h.reason != "" {
		return false
	}
	switch state {
	case store.Succeeded:
		h.succeeded++
	case store.Failed:
		h.failed++
	default:
		return false
	}
	reason, ok := h.policy.Reached(h.total, h.succeeded, h.failed)
	if ok {
		h.reason = reason
	}
	return ok
}

func pluralTasks(n int64) string {
	if n == 1 {
		return "task"
	}
	return "tasks"
}
