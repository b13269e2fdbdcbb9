package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// printer writes events as text lines, in the classic lesson's shape, or
// as NDJSON.
type printer struct {
	w     io.Writer
	json  bool
	quiet bool  // only the job events
	err   error // the first write error; later writes are skipped
	buf   []byte
}

func (p *printer) start(job store.Job) {
	if p.quiet {
		return
	}
	if p.json {
		p.writeJSON(map[string]any{"event": "start", "job_id": job.UUID, "name": job.Name, "total": job.Total})
		return
	}
	p.printf("Starting Job %s\n", job.UUID)
}

func (p *printer) event(ev engine.Event) {
	if p.quiet && ev.Job == nil {
		return
	}
	if p.json {
		p.writeJSON(ev)
		return
	}
	p.printf("%s\n", formatEvent(ev))
}

// formatEvent renders one callback as a text line.
func formatEvent(ev engine.Event) string {
	switch {
	case ev.Task != nil:
		t := ev.Task
		var b strings.Builder
		fmt.Fprintf(&b, "Task job id=%s: WorkTaskResult(id=%s, number=%d, kind=%s, time_secs=%.4f",
			ev.JobID, t.ID, t.Number, t.Kind, t.TimeSecs)
		if t.State != store.Succeeded {
			fmt.Fprintf(&b, ", state=%s", t.State)
		}
		if t.Error != "" {
			fmt.Fprintf(&b, ", error=%s", pyQuote(t.Error))
		}
		b.WriteString(")")
		return b.String()
	case ev.Job != nil:
		j := ev.Job
		if j.Outcome == store.Succeeded {
			return fmt.Sprintf("Job %s completed: {'elapsed_secs': %.4f}", ev.JobID, j.ElapsedSecs)
		}
		return fmt.Sprintf("Job %s completed: {'elapsed_secs': %.4f, 'outcome': '%s', 'total': %d, 'succeeded': %d, 'failed': %d, 'cancelled': %d}",
			ev.JobID, j.ElapsedSecs, j.Outcome, j.Total, j.Succeeded, j.Failed, j.Cancelled)
	}
	return fmt.Sprintf("event %s for job %s", ev.Type, ev.JobID)
}

// pyQuote quotes s the way the classic lesson's Python repr would.
func pyQuote(s string) string {
	s = strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)
	return "'" + printable(s) + "'"
}

// callback prints a record's event as JSON without decoding it.
func (p *printer) callback(cb store.Callback) {
	if p.err != nil {
		return
	}
	var err error
	if p.buf, err = engine.CallbackJSON(p.buf[:0], cb); err != nil {
		p.err = err
		return
	}
	_, p.err = p.w.Write(append(p.buf, '\n'))
}

func (p *printer) writeJSON(v any) {
	if p.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		p.err = err
		return
	}
	_, p.err = p.w.Write(append(b, '\n'))
}

func (p *printer) printf(format string, a ...any) {
	if p.err != nil {
		return
	}
	_, p.err = fmt.Fprintf(p.w, format, a...)
}
