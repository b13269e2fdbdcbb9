package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// progress is the live line of pcd watch on a terminal: done, failed and
// total tasks, the rate and the time left. A nil *progress does nothing.
type progress struct {
	bar          *progressbar.ProgressBar
	done, failed int64
	// total is the bar's total once known (-1 before). Not the bar's own
	// max: a bar with no total yet reports its width (30) as its max.
	total int64
	all   bool // watching every job: totals come from unfinished jobs
	w     io.Writer
}

func newProgress(w io.Writer, all bool) *progress {
	return &progress{all: all, w: w, total: -1, bar: progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("tasks"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100e6), // 100ms
		// No spinner of its own: its goroutine would draw the bar between
		// the lines of events, and outlive the watch.
		progressbar.OptionSetSpinnerChangeInterval(0),
	)}
}

// clear wipes the line so an event can be printed above it.
func (p *progress) clear() {
	if p != nil {
		_ = p.bar.Clear()
	}
}

func (p *progress) event(ev engine.Event) {
	if p == nil || ev.Task == nil {
		return
	}
	p.done++
	if ev.Task.State != store.Succeeded {
		p.failed++
	}
	p.bar.Describe(fmt.Sprintf("failed %d", p.failed))
	_ = p.bar.Set64(p.done)
}

// jobs sets the total: the watched jobs' tasks, or for an all-jobs watch,
// what is done plus what the unfinished jobs have left.
func (p *progress) jobs(jobs []store.Job) {
	if p == nil {
		return
	}
	var total int64
	if p.all {
		total = p.done
	}
	for _, j := range jobs {
		if p.all {
			total += max(j.Total-j.Done(), 0)
		} else {
			total += j.Total
		}
	}
	if total = max(total, 1); total != p.total {
		p.total = total
		p.bar.ChangeMax64(total)
	}
}

// finish replaces the live line with a summary.
func (p *progress) finish() {
	if p == nil {
		return
	}
	_ = p.bar.Exit()
	// The line is a terminal's: erase all of it, however long the bar was.
	fmt.Fprintf(p.w, "\r\033[K%s done, %d failed\n", plural(p.done, "task"), p.failed)
}

// summary replaces the line with pcd run's last word: the job's counts,
// its failures and the time it took.
func (p *progress) summary(j store.Job, took time.Duration) {
	if p == nil {
		return
	}
	_ = p.bar.Exit()
	line := fmt.Sprintf("%s: %d succeeded", plural(j.Total, "task"), j.Succeeded)
	if j.Failed > 0 {
		line += fmt.Sprintf(", %d failed", j.Failed)
	}
	if j.Cancelled > 0 {
		line += fmt.Sprintf(", %d cancelled", j.Cancelled)
	}
	if left := j.Total - j.Done(); left > 0 {
		line += fmt.Sprintf(", %d not run", left)
	}
	if j.Halting != "" {
		halted, _, _ := strings.Cut(j.Halting, ":")
		line += "; " + halted
	}
	fmt.Fprintf(p.w, "\r\033[Kpcd: %s, in %s\n", line, humanDuration(took))
}
