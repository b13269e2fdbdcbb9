package cli

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// printer writes events as text lines, short or long, or as NDJSON.
//
// An exec task's captured output is printed when the task completes, one
// task at a time and never interleaved (like parallel --group): its
// stdout to w, its stderr to errw. Its callback line then goes to errw,
// and only with verbose; a task that did not succeed gets a note there
// instead. So does the job line of a job whose output was shown, so that
// w holds nothing but the commands' output.
type printer struct {
	w       io.Writer
	errw    io.Writer // nil: errors and notes go to w
	json    bool
	quiet   bool // only the job events
	output  bool // print exec tasks' output
	verbose bool // with output, the exec tasks' callback lines too, on errw
	short   bool // short event lines (a terminal), not the long ones
	// order holds back tasks that complete before those numbered before
	// them (--keep-order); nil prints tasks as they complete.
	order *taskOrder
	shown map[string]bool // jobs whose exec output was printed
	spool string          // the exec tasks' spool directory of this host
	cut   int             // streams printed cut: their whole was lost
	log   *joblog         // --joblog, or nil
	bar   *progress       // pcd run's progress line on stderr, or nil
	began time.Time       // when the job started, for the summary
	ends  bool            // pcd run: its last line tells the job's end
	err   error           // the first write error on w; later writes are skipped
	buf   []byte
}

// outputFlags are run's and watch's choices of what to print.
func outputFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "no-output", Usage: "do not print exec tasks' output; print their callback lines instead"},
		&cli.BoolFlag{Name: "keep-order", Aliases: []string{"k"}, Usage: "print tasks in task order, not as they complete (like parallel -k)"},
		&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "with exec tasks' output, print their callback lines too, on stderr"},
		&cli.StringFlag{Name: "format", Usage: "event lines: short (3f2a9c1e #17 sleep succeeded 520ms), or long (every field of the callback)", DefaultText: "short on a terminal, else long; long for --demo"},
	}
}

// newPrinter makes the printer the flags of run or watch ask for; db
// reads back the output of tasks held for --keep-order.
func newPrinter(c *cli.Context, env Env, db *client) (*printer, error) {
	p := &printer{w: env.Stdout, errw: env.Stderr, json: c.Bool("json"), quiet: c.Bool("quiet"),
		output: !c.Bool("no-output") && !c.Bool("json"), verbose: c.Bool("verbose"), shown: map[string]bool{},
		spool: db.SpoolDir()}
	switch c.String("format") {
	case "short":
		p.short = true
	case "long", "seed": // seed: the long format's first name
	case "":
		p.short = isTerminal(env.Stdout) && !c.Bool("demo")
	default:
		return nil, usageError("--format must be short or long, got %q", c.String("format"))
	}
	if c.Bool("keep-order") && !c.Bool("json") {
		p.order = &taskOrder{ctx: c.Context, db: db, jobs: map[string]*jobOrder{}}
	}
	return p, nil
}

// checkFormat refuses an unknown --format before anything is opened.
func checkFormat(c *cli.Context) error {
	switch c.String("format") {
	case "", "short", "long", "seed":
		return nil
	}
	return usageError("--format must be short or long, got %q", c.String("format"))
}

// outputShown says whether the job's tasks print their output rather
// than callback lines: for the start line of a job about to run.
func (p *printer) outputShown(jf engine.JobFile) bool {
	if !p.output || len(jf.Tasks) == 0 {
		return false
	}
	for _, t := range jf.Tasks {
		if t.Kind != "exec" {
			return false
		}
	}
	return true
}

func (p *printer) start(job store.Job, outputShown bool) {
	p.bar.jobs([]store.Job{job})
	p.began = time.Now()
	switch {
	case p.quiet:
	case p.json:
		p.writeJSON(map[string]any{"event": "start", "job_id": job.UUID, "name": job.Name, "total": job.Total})
	case outputShown:
		if p.verbose {
			p.note("Starting Job %s\n", job.UUID)
		}
	case p.short:
		p.printf("job %s started: %s\n", job.UUID, plural(job.Total, "task"))
	default:
		p.printf("Starting Job %s\n", job.UUID)
	}
}

// line is an event's text line, short or long.
func (p *printer) line(ev engine.Event) string {
	if p.short {
		return shortEvent(ev)
	}
	return formatEvent(ev)
}

// shortEvent is an event in a line that fits a terminal:
//
//	3f2a9c1e #17 sleep succeeded 0.52s
//	3f2a9c1e #18 fail failed 0.01s: no luck
//	3f2a9c1e job failed in 5.2s: 1 of 10 tasks failed, 0 cancelled
func shortEvent(ev engine.Event) string {
	switch {
	case ev.Task != nil:
		t := ev.Task
		s := fmt.Sprintf("%s #%d %s %s %s", shortID(ev.JobID), t.Number, printable(t.Kind), t.State, humanDuration(time.Duration(t.TimeSecs*float64(time.Second))))
		if t.Error != "" {
			s += ": " + oneLine(t.Error)
		}
		return s
	case ev.Job != nil:
		j := ev.Job
		s := fmt.Sprintf("%s job %s in %s: ", shortID(ev.JobID), j.Outcome, humanDuration(time.Duration(j.ElapsedSecs*float64(time.Second))))
		if j.Outcome == store.Succeeded {
			s += plural(j.Total, "task")
		} else {
			s += fmt.Sprintf("%d of %s failed, %d cancelled", j.Failed, plural(j.Total, "task"), j.Cancelled)
		}
		if j.Reason != "" {
			s += " (" + oneLine(j.Reason) + ")"
		}
		return s
	}
	return fmt.Sprintf("event %s for job %s", ev.Type, ev.JobID)
}

func (p *printer) event(ev engine.Event) {
	if p.json {
		if !p.quiet || ev.Job != nil {
			p.writeJSON(ev)
		}
		return
	}
	if ev.Task != nil {
		p.log.task(ev) // in the order tasks finish, as parallel writes it
	}
	if p.bar != nil {
		p.bar.clear()
		defer p.bar.event(ev)
	}
	switch {
	case ev.Task != nil && p.order != nil:
		p.order.done(ev, p.task)
	case ev.Task != nil:
		p.task(ev)
	case ev.Job != nil:
		if p.order != nil {
			p.order.finish(ev.JobID, p.task)
		}
		if p.shown[ev.JobID] {
			// stdout holds the commands' output alone; a failed job's
			// tasks had their notes, and the command's error says it.
			delete(p.shown, ev.JobID)
			switch {
			case p.verbose:
				p.note("%s\n", p.line(ev))
			case ev.Job.Reason != "" && !p.ends:
				p.note("pcd: job %s %s: %s\n", shortID(ev.JobID), ev.Job.Outcome, printable(ev.Job.Reason))
			}
			return
		}
		p.printf("%s\n", p.line(ev))
	}
}

// task prints a task's output, or its callback line.
func (p *printer) task(ev engine.Event) {
	t := ev.Task
	if !p.output || t.Kind != "exec" {
		if !p.quiet {
			p.printf("%s\n", p.line(ev))
		}
		return
	}
	p.shown[ev.JobID] = true
	if p.verbose && !p.quiet {
		p.note("%s\n", p.line(ev))
	}
	var res engine.ExecResult
	if len(t.Result) > 0 {
		if err := json.Unmarshal(t.Result, &res); err != nil {
			p.note("pcd: task %d of job %s: its result is not an exec result: %v\n", t.Number, shortID(ev.JobID), err)
		}
	}
	var cuts []string
	if p.err == nil {
		var cut string
		cut, p.err = p.stream(tagged(p.w, res.Tag), ev, "stdout", res.Stdout, res.StdoutSpooled)
		cuts = append(cuts, cut)
	}
	if cut, err := p.stream(tagged(noteWriter{p}, res.Tag), ev, "stderr", res.Stderr, res.StderrSpooled); err == nil {
		cuts = append(cuts, cut)
	}
	for _, cut := range append(cuts, res.Cuts()...) {
		if cut != "" {
			p.cut++
			p.note("pcd: task %d of job %s: its %s\n", t.Number, shortID(ev.JobID), cut)
		}
	}
	// A cancelled task's note would repeat the job's: the job's error
	// counts them, and a reason comes once with the job.
	if t.State == store.Failed && !p.verbose {
		why := t.Error
		if why == "" {
			why = string(t.State)
		}
		p.note("pcd: task %d of job %s %s: %s\n", t.Number, shortID(ev.JobID), t.State, printable(why))
	}
}

// stream writes one stream of an exec task's output to w (see
// writeStream).
func (p *printer) stream(w io.Writer, ev engine.Event, name, text string, spooled bool) (string, error) {
	return writeStream(w, p.spool, ev.JobID, ev.Task.ID, name, text, spooled)
}

// writeStream writes one stream ("stdout" or "stderr") of an exec task's
// output to w: the whole, from its spool file in spool, when the result
// says it is there, else text, what the result keeps. It returns a note
// when the spool file is gone and only text is printed, and w's error.
func writeStream(w io.Writer, spool, jobID, taskID, name, text string, spooled bool) (string, error) {
	if spooled {
		f, err := engine.OpenSpool(spool, jobID, taskID, name)
		if err == nil {
			defer f.Close()
			r := &readErr{r: f}
			_, err := io.Copy(w, r)
			if r.err != nil {
				return fmt.Sprintf("%s could not be read whole from its spool file: %v", name, r.err), nil
			}
			return "", err
		}
		_, werr := io.WriteString(w, text)
		return fmt.Sprintf("%s is printed from its last %d bytes: its spool file is not on this host (%v)", name, len(text), err), werr
	}
	if text == "" {
		return "", nil
	}
	_, err := io.WriteString(w, text)
	return "", err
}

// tagged is w with tag and a tab before each line (pcd run --tag), or w
// itself for no tag.
func tagged(w io.Writer, tag string) io.Writer {
	if tag == "" {
		return w
	}
	return &tagWriter{w: w, tag: []byte(tag + "\t"), start: true}
}

// tagWriter puts a tag before each line written through it, a partial
// last line too, as GNU parallel --tag does.
type tagWriter struct {
	w     io.Writer
	tag   []byte
	start bool // the next byte starts a line
	buf   []byte
}

func (t *tagWriter) Write(p []byte) (int, error) {
	n := len(p)
	t.buf = t.buf[:0]
	for len(p) > 0 {
		if t.start {
			t.buf = append(t.buf, t.tag...)
			t.start = false
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.buf = append(t.buf, p...)
			break
		}
		t.buf = append(t.buf, p[:i+1]...)
		p = p[i+1:]
		t.start = true
	}
	if _, err := t.w.Write(t.buf); err != nil {
		return 0, err
	}
	return n, nil
}

// readErr is a reader that keeps its error apart from its writer's.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// noteWriter writes to the printer's errw, in order with its w.
type noteWriter struct{ p *printer }

func (n noteWriter) Write(b []byte) (int, error) {
	n.p.note("%s", b)
	return len(b), nil
}

// note writes to errw, after what w holds so far, so that the two stay
// in order when they go to the same place.
func (p *printer) note(format string, a ...any) {
	p.bar.clear()
	if p.errw == nil {
		p.printf(format, a...)
		return
	}
	if f, ok := p.w.(interface{ Flush() error }); ok && p.err == nil {
		p.err = f.Flush()
	}
	fmt.Fprintf(p.errw, format, a...)
}

// shortID is the first 8 characters of an id, which the commands accept.
func shortID(id string) string { return id[:min(len(id), 8)] }

// taskOrder holds back the tasks that complete before the ones numbered
// before them, for --keep-order. It keeps only their numbers (8 bytes a
// task): their output is read back from the database when their turn
// comes, so a slow first task does not make the printer hold everything
// the others printed.
type taskOrder struct {
	ctx  context.Context
	db   *client
	jobs map[string]*jobOrder // by job uuid
}

type jobOrder struct {
	job  store.Job // the job's row, once needed
	next int64     // the number of the task to print next
	held numbers
}

// done takes a completed task and prints it, and the held tasks after
// it, if its turn has come.
func (o *taskOrder) done(ev engine.Event, print func(engine.Event)) {
	j := o.jobs[ev.JobID]
	if j == nil {
		j = &jobOrder{next: 1}
		o.jobs[ev.JobID] = j
	}
	n := ev.Task.Number
	if n > j.next {
		heap.Push(&j.held, n)
		return
	}
	print(ev)
	if n == j.next {
		j.next++
		o.release(ev.JobID, j, false, print)
	}
}

// finish prints what is held of a job that completed (a retried round's
// tasks start past 1), in order, and forgets the job.
func (o *taskOrder) finish(jobID string, print func(engine.Event)) {
	if j := o.jobs[jobID]; j != nil {
		o.release(jobID, j, true, print)
		delete(o.jobs, jobID)
	}
}

// flush prints everything held, as a command stops.
func (o *taskOrder) flush(print func(engine.Event)) {
	for id := range o.jobs {
		o.finish(id, print)
	}
}

func (o *taskOrder) release(jobID string, j *jobOrder, all bool, print func(engine.Event)) {
	for j.held.Len() > 0 && (all || j.held[0] <= j.next) {
		n := heap.Pop(&j.held).(int64)
		if n < j.next && !all {
			continue
		}
		ev, err := o.read(jobID, j, n)
		if err != nil {
			ev = engine.Event{Type: store.EventTask, JobID: jobID, Task: &engine.TaskEvent{Number: n, Kind: "exec", State: store.Failed,
				Error: fmt.Sprintf("cannot read its output back (%v): see pcd logs %s %d", err, shortID(jobID), n)}}
		}
		print(ev)
		j.next = max(j.next, n+1)
	}
}

// read reads a held task back from the database.
func (o *taskOrder) read(jobID string, j *jobOrder, n int64) (engine.Event, error) {
	t, err := o.db.TaskNumber(o.ctx, jobID, n)
	if err != nil {
		return engine.Event{}, err
	}
	return rowEvent(jobID, t), nil
}

// rowEvent is the event of a final task read from the database.
func rowEvent(jobID string, t store.TaskRow) engine.Event {
	return engine.Event{Type: store.EventTask, JobID: jobID, Task: &engine.TaskEvent{
		ID: t.UUID, Number: t.Seq, Kind: t.Kind, State: t.State, TimeSecs: t.Time.Seconds(),
		Attempts: t.Attempts, Result: t.Result, Error: t.Error}}
}

// numbers is a min-heap of task numbers.
type numbers []int64

func (h numbers) Len() int           { return len(h) }
func (h numbers) Less(i, j int) bool { return h[i] < h[j] }
func (h numbers) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *numbers) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *numbers) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
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
		reason := ""
		if j.Reason != "" {
			reason = ", 'reason': " + pyQuote(j.Reason)
		}
		return fmt.Sprintf("Job %s completed: {'elapsed_secs': %.4f, 'outcome': '%s', 'total': %d, 'succeeded': %d, 'failed': %d, 'cancelled': %d%s}",
			ev.JobID, j.ElapsedSecs, j.Outcome, j.Total, j.Succeeded, j.Failed, j.Cancelled, reason)
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
