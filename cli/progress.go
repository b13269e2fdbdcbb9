package cli

import (
	"fmt"
	"io"

	"github.com/schollz/progressbar/v3"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// progress is the live line of pcd watch on a terminal: done, failed and
// total tasks, the rate and the time left. A nil *progress does nothing.
type progress struct {
	bar          *progressbar.ProgressBar
	done, failed int64
}

func newProgress(w io.Writer) *progress {
	return &progress{bar: progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("tasks"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100e6), // 100ms
		progressbar.OptionClearOnFinish(),
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

// jobs sets the total: what is done plus what the watched jobs have left.
func (p *progress) jobs(jobs []store.Job) {
	if p == nil {
		return
	}
	total := p.done
	for _, j := range jobs {
		if !j.Finished() {
			total += max(j.Total-j.Done(), 0)
		}
	}
	if total != p.bar.GetMax64() {
		p.bar.ChangeMax64(max(total, 1))
	}
}

func (p *progress) finish() {
	if p != nil {
		_ = p.bar.Exit()
	}
}
