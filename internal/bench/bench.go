// Package bench is pcd bench: it measures the workloads of the
// performance budget (BENCHMARKS.md) by running the pcd binary as a user
// would, on temporary databases, and, where a peer does the same work
// (xargs, GNU parallel, River), the peer in the same run.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// benchRow is one line of the table.
type benchRow struct {
	Workload string    `json:"workload"`
	Unit     string    `json:"unit"`
	Target   string    `json:"target"`
	Values   []float64 `json:"values"`
	RSSMiB   float64   `json:"peak_rss_mib,omitempty"`
	Note     string    `json:"note,omitempty"`
}

// targetRE reads a target that is a bound: "<= 10", ">= 150000 ...".
var targetRE = regexp.MustCompile(`^(<=|<|>=|>) ([0-9]+(?:\.[0-9]+)?)(?:[ ,]|$)`)

// met says whether the row's median meets its target: yes, no, or - for
// a target that is no plain bound (a ratio to another tool, "report").
func (r benchRow) met() string {
	m := targetRE.FindStringSubmatch(r.Target)
	if m == nil || len(r.Values) == 0 {
		return "-"
	}
	bound, _ := strconv.ParseFloat(m[2], 64)
	v := r.median()
	ok := map[string]bool{"<=": v <= bound, "<": v < bound, ">=": v >= bound, ">": v > bound}[m[1]]
	if ok {
		return "yes"
	}
	return "no"
}

func (r benchRow) median() float64 {
	v := slices.Clone(r.Values)
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}

type bench struct {
	self  string
	dir   string
	runs  int
	quick bool
	out   io.Writer
	log   io.Writer
	seq   int
}

// Options are what pcd bench measures, and where it writes.
type Options struct {
	Quick    bool   // small sizes, one run each: a smoke test
	Runs     int    // runs per workload
	Tasks    int    // tasks in the large no-op job
	Dir      string // where the temporary databases go; "" for a new temp dir
	Only     string // only the workloads whose names contain it
	Postgres string // also measure on this PostgreSQL server, a schema per run
	River    bool   // with Postgres, measure River on the same server, alternating
	JSON     bool   // the rows as JSON instead of a table
	Stdout   io.Writer
	Stderr   io.Writer // progress
}

// ErrUsage marks options that cannot run.
var ErrUsage = errors.New("bad bench options")

// workload is one workload of the table: one row, or several.
type workload struct {
	name string
	run  func() (benchRow, error)
	rows func() ([]benchRow, error)
}

// Run measures the workloads of the performance budget (BENCHMARKS.md) by
// running this binary as a user would, each run in its own process, on
// temporary databases, and prints the table.
func Run(o Options) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "pcd-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	b := &bench{self: self, dir: dir, runs: o.Runs, quick: o.Quick, out: o.Stdout, log: o.Stderr}
	big := o.Tasks
	if b.quick {
		b.runs, big = 1, 20_000
	}
	if b.runs < 1 || big < 10 {
		return fmt.Errorf("--runs must be at least 1 and --tasks at least 10: %w", ErrUsage)
	}
	workloads, err := b.workloads(big, o)
	if err != nil {
		return err
	}
	var rows []benchRow
	for _, w := range workloads {
		if o.Only != "" && !strings.Contains(w.name, o.Only) {
			continue
		}
		fmt.Fprintf(b.log, "pcd bench: %s...\n", w.name)
		more, err := w.measure()
		if err != nil {
			return fmt.Errorf("bench %s: %w", w.name, err)
		}
		rows = append(rows, more...)
	}
	rows = rssRow(rows)
	if o.JSON {
		enc := json.NewEncoder(o.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	return printTable(o.Stdout, rows, o.Quick)
}

// measure runs a workload.
func (w workload) measure() ([]benchRow, error) {
	if w.rows != nil {
		return w.rows()
	}
	row, err := w.run()
	return []benchRow{row}, err
}

// workloads are the workloads to measure, big the large job's size.
func (b *bench) workloads(big int, o Options) ([]workload, error) {
	small := big / 10
	workloads := []workload{
		{"noop", func() (benchRow, error) { return b.noop(big, "full", false) }, nil},
		{"noop-sync-normal", func() (benchRow, error) { return b.noop(big, "normal", false) }, nil},
		{"noop-small", func() (benchRow, error) { return b.noop(small, "full", true) }, nil},
		{"submit", func() (benchRow, error) { return b.submit(big) }, nil},
		{"demo", b.demo, nil},
		{"exec-vs-xargs", b.execVsXargs, nil},
		{"latency", b.latency, nil},
		{"one-at-a-time", nil, b.oneAtATime},
		{"idle", b.idle, nil},
		{"restart", func() (benchRow, error) { return b.restart(max(big, 100_000)) }, nil},
		{"watch-lag", func() (benchRow, error) { return b.watchLag(max(big, 100_000)) }, nil},
		{"small-jobs", func() (benchRow, error) { return b.smallJobs(max(big/100, 1000)) }, nil},
		{"small-command-jobs", func() (benchRow, error) { return b.smallCommandJobs(max(big/1000, 100), 1, "<= 1.3") }, nil},
		{"small-command-jobs-25", func() (benchRow, error) { return b.smallCommandJobs(max(big/1000, 100), 25, "<= 1.2") }, nil},
		{"big-submit", nil, func() ([]benchRow, error) { return b.bigSubmit(2 * big) }},
		{"waiting-retries", func() (benchRow, error) { return b.waitingRetries(big) }, nil},
		{"oversized-line", func() (benchRow, error) { return b.oversizedLine(max(big/10_000, 2) << 20) }, nil},
		{"wal", func() (benchRow, error) { return b.walAfterReader(big / 2) }, nil},
		{"prune", func() (benchRow, error) { return b.prune(big / 2) }, nil},
		{"sse-load", nil, func() ([]benchRow, error) { return b.sseLoad(big, 50) }},
		{"dashboard", nil, func() ([]benchRow, error) { return b.dashboard(big, max(big/100, 1000)) }},
	}
	if o.Postgres == "" {
		if o.River {
			return nil, fmt.Errorf("--river needs --postgres URL: %w", ErrUsage)
		}
		return workloads, nil
	}
	p := &pgBench{bench: b, server: o.Postgres}
	if o.River {
		fmt.Fprintln(b.log, "pcd bench: building River "+RiverVersion+" from the Go module cache...")
		var err error
		if p.river, err = buildRiver(b.dir); err != nil {
			return nil, fmt.Errorf("build River: %w", err)
		}
	}
	return append(workloads,
		workload{"pg-noop", nil, func() ([]benchRow, error) { return p.pgRuns(big) }},
		workload{"pg-restart", func() (benchRow, error) { return p.pgRestart(max(big, 100_000)) }, nil},
		workload{"pg-commit-latency", nil, func() ([]benchRow, error) { return p.pgCommitLatency(max(big/500, 300)) }},
		workload{"pg-takeover", p.pgTakeover, nil},
		workload{"pg-spread", p.pgSpread, nil}), nil
}

// printTable prints the rows as a table, then the rows that missed their
// target and the rows' notes.
func printTable(w io.Writer, rows []benchRow, quick bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKLOAD\tMEDIAN\tMIN\tMAX\tUNIT\tPEAK RSS\tTARGET\tMET\tRUNS")
	var missed []string
	for _, r := range rows {
		met := r.met()
		if met == "no" {
			missed = append(missed, r.Workload)
		}
		if len(r.Values) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\t-\t%s\t%s\t0\n", r.Workload, r.Unit, r.Target, met)
			continue
		}
		lo, hi := slices.Min(r.Values), slices.Max(r.Values)
		rss := "-"
		if r.RSSMiB > 0 {
			rss = fmt.Sprintf("%.1f MiB", r.RSSMiB)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", r.Workload, num(r.median()), num(lo), num(hi), r.Unit, rss, r.Target, met, len(r.Values))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(missed) > 0 {
		fmt.Fprintf(w, "missed their target: %s", strings.Join(missed, "; "))
		if quick {
			fmt.Fprint(w, " (--quick runs small sizes once: a smoke test, not a measurement)")
		}
		fmt.Fprintln(w)
	}
	for _, r := range rows {
		if r.Note != "" {
			fmt.Fprintf(w, "  %s: %s\n", r.Workload, r.Note)
		}
	}
	return nil
}

func num(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// rssRow adds the memory row: the big job's peak RSS against the small's.
func rssRow(rows []benchRow) []benchRow {
	var big, small *benchRow
	for i := range rows {
		if strings.HasPrefix(rows[i].Workload, "no-op run, sync full") {
			big = &rows[i]
		}
		if strings.HasPrefix(rows[i].Workload, "no-op run (small)") {
			small = &rows[i]
		}
	}
	if big == nil || small == nil || small.RSSMiB == 0 {
		return rows
	}
	return append(rows, benchRow{Workload: "peak RSS, big job / small job", Unit: "ratio", Target: "<= 1.10, big <= 64 MiB",
		Values: []float64{big.RSSMiB / small.RSSMiB}})
}

// db returns a fresh database path.
func (b *bench) db() string {
	b.seq++
	return filepath.Join(b.dir, fmt.Sprintf("bench-%d.db", b.seq))
}

// pcd runs this binary and returns its stdout and peak RSS in MiB.
func (b *bench) pcd(ctx context.Context, db string, extraEnv []string, args ...string) (string, float64, error) {
	cmd := dieWithBench(exec.CommandContext(ctx, b.self, args...))
	cmd.Env = append(append(os.Environ(), "PCD_DB="+db, "PCD_LOG_LEVEL=warn"), extraEnv...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), 0, fmt.Errorf("pcd %s: %w: %s", strings.Join(args, " "), err, lastLine(stderr.String()))
	}
	return string(out), maxRSS(cmd.ProcessState), nil
}

func maxRSS(ps *os.ProcessState) float64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return float64(ru.Maxrss) / 1024 // KiB on Linux
	}
	return 0
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// jobFile writes a job file of n tasks of one kind and payload.
func (b *bench) jobFile(name string, n int, task string) (string, error) {
	path := filepath.Join(b.dir, name)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(`{"workers": 25, "queue_size": 100, "tasks": [`)
	for i := range n {
		if i > 0 {
			w.WriteByte(',')
		}
		w.WriteString(task)
	}
	w.WriteString("]}\n")
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}

// noop: n no-op tasks, submitted first, then run to the job callback.
func (b *bench) noop(n int, sync string, small bool) (benchRow, error) {
	name := fmt.Sprintf("no-op run, sync %s, %d tasks", sync, n)
	target := ">= 100000"
	if sync == "normal" {
		target = "report"
	}
	row := benchRow{Workload: name, Unit: "tasks/s", Target: target}
	if small {
		row.Workload = fmt.Sprintf("no-op run (small), %d tasks", n)
		row.Target = "(RSS baseline)"
	}
	file, err := b.jobFile("noop.json", n, `{"kind":"noop"}`)
	if err != nil {
		return row, err
	}
	ctx := context.Background()
	for range b.runs {
		db := b.db()
		out, _, err := b.pcd(ctx, db, nil, "submit", file)
		if err != nil {
			return row, err
		}
		id := strings.TrimSpace(out)
		out, rss, err := b.pcd(ctx, db, nil, "--sync", sync, "run", "--quiet", "--json", "--resume", id)
		if err != nil {
			return row, err
		}
		var ev engine.JobEvent
		if err := json.Unmarshal([]byte(lastLine(out)), &ev); err != nil || ev.ElapsedSecs <= 0 {
			return row, fmt.Errorf("no job event in %q", out)
		}
		row.Values = append(row.Values, float64(n)/ev.ElapsedSecs)
		row.RSSMiB = max(row.RSSMiB, rss)
		os.Remove(db)
	}
	return row, nil
}

// submit: n tasks from a file, the whole pcd submit process.
func (b *bench) submit(n int) (benchRow, error) {
	row := benchRow{Workload: fmt.Sprintf("submit %d tasks from a file", n), Unit: "tasks/s", Target: ">= 150000"}
	file, err := b.jobFile("submit.json", n, `{"kind":"noop"}`)
	if err != nil {
		return row, err
	}
	for range b.runs {
		db := b.db()
		t0 := time.Now()
		_, rss, err := b.pcd(context.Background(), db, nil, "submit", file)
		if err != nil {
			return row, err
		}
		row.Values = append(row.Values, float64(n)/time.Since(t0).Seconds())
		row.RSSMiB = max(row.RSSMiB, rss)
		os.Remove(db)
	}
	return row, nil
}

// demo: how long after its longest sleep pcd run --demo completes.
func (b *bench) demo() (benchRow, error) {
	row := benchRow{Workload: "pcd run --demo: completion after the longest sleep", Unit: "ms", Target: "<= 10"}
	db := b.db()
	for range max(b.runs, 5) {
		out, rss, err := b.pcd(context.Background(), db, nil, "run", "--demo", "--json")
		if err != nil {
			return row, err
		}
		var longest, elapsed float64
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var ev struct {
				Event       string  `json:"event"`
				TimeSecs    float64 `json:"time_secs"`
				ElapsedSecs float64 `json:"elapsed_secs"`
			}
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				return row, err
			}
			longest = max(longest, ev.TimeSecs)
			if ev.Event == "job" {
				elapsed = ev.ElapsedSecs
			}
		}
		row.Values = append(row.Values, (elapsed-longest)*1000)
		row.RSSMiB = max(row.RSSMiB, rss)
	}
	return row, nil
}

// execVsXargs: 2,000 `true` commands, 25 at a time, pcd against xargs.
func (b *bench) execVsXargs() (benchRow, error) {
	n := 2000
	if b.quick {
		n = 200
	}
	row := benchRow{Workload: fmt.Sprintf("%d `true` exec tasks / xargs -P 25 -n 1", n), Unit: "ratio", Target: "<= 1.2"}
	file, err := b.jobFile("true.json", n, `{"kind":"exec","payload":{"argv":["true"]}}`)
	if err != nil {
		return row, err
	}
	input := filepath.Join(b.dir, "xargs-input")
	if err := os.WriteFile(input, []byte(strings.Repeat("x\n", n)), 0o600); err != nil {
		return row, err
	}
	for range b.runs {
		db := b.db()
		t0 := time.Now()
		_, rss, err := b.pcd(context.Background(), db, nil, "run", "--quiet", file)
		if err != nil {
			return row, err
		}
		p := time.Since(t0)
		t0 = time.Now()
		if out, err := exec.Command("sh", "-c", "xargs -P 25 -n 1 true < "+input).CombinedOutput(); err != nil {
			return row, fmt.Errorf("xargs: %w: %s", err, out)
		}
		x := time.Since(t0)
		row.Values = append(row.Values, p.Seconds()/x.Seconds())
		row.RSSMiB = max(row.RSSMiB, rss)
		os.Remove(db)
	}
	return row, nil
}

// daemon starts pcd daemon on db, with args, and waits until it listens.
func (b *bench) daemon(db string, args ...string) (*exec.Cmd, error) {
	cmd := dieWithBench(exec.Command(b.self, append([]string{"daemon", "--log-level", "warn"}, args...)...))
	cmd.Env = append(os.Environ(), "PCD_DB="+db)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for !sqlite.RunnerListening(db) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, errors.New("the daemon did not start")
		}
		time.Sleep(2 * time.Millisecond)
	}
	return cmd, nil
}

func stop(cmd *exec.Cmd) float64 {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	return maxRSS(cmd.ProcessState)
}

// smallJobs: n pending one-task noop jobs; how long a daemon with the
// default --max-jobs takes to run them all. The jobs are written first,
// straight to the store (n pcd submit processes would measure process
// starts), with synchronous=NORMAL to make that quick.
func (b *bench) smallJobs(n int) (benchRow, error) {
	row := benchRow{Workload: fmt.Sprintf("drain %d pending one-task no-op jobs (default --max-jobs)", n), Unit: "jobs/s", Target: ">= 2000"}
	for range b.runs {
		secs, rss, err := b.drainJobs(n, `{"kind":"noop"}`)
		if err != nil {
			return row, err
		}
		row.Values = append(row.Values, float64(n)/secs)
		row.RSSMiB = max(row.RSSMiB, rss)
	}
	return row, nil
}

// drainJobs writes n pending jobs of one task each, straight to the store
// (n pcd submit processes would measure process starts), then times a
// daemon started with args until it has run them all.
func (b *bench) drainJobs(n int, task string, args ...string) (secs, rss float64, err error) {
	var spec struct {
		Kind    string          `json:"kind"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal([]byte(task), &spec); err != nil {
		return 0, 0, err
	}
	t := store.NewTask{Kind: spec.Kind, Payload: []byte(spec.Payload)}
	if t.Payload == nil {
		t.Payload = []byte("null")
	}
	db := b.db()
	defer os.Remove(db)
	s, err := sqlite.Open(context.Background(), db, sqlite.Options{Sync: sqlite.SyncNormal})
	if err != nil {
		return 0, 0, err
	}
	defer s.Close()
	for range n {
		nj := store.NewJob{Workers: engine.DefaultWorkers, QueueSize: engine.DefaultQueueSize, Tasks: []store.NewTask{t}}
		if _, err := s.CreateJob(context.Background(), nj); err != nil {
			return 0, 0, err
		}
	}
	t0 := time.Now()
	d, err := b.daemon(db, args...)
	if err != nil {
		return 0, 0, err
	}
	for {
		left, _, err := s.UnfinishedSummary(context.Background())
		if err == nil && left > 0 && time.Since(t0) > 10*time.Minute {
			err = errors.New("not drained after 10 minutes")
		}
		if err != nil {
			d.Process.Kill()
			d.Wait()
			return 0, 0, err
		}
		if left == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	secs = time.Since(t0).Seconds()
	return secs, stop(d), nil
}

// smallCommandJobs: n pending jobs of one `true` each, drained by a daemon
// with --max-jobs maxJobs, against xargs -P maxJobs running the same
// commands, alternating.
func (b *bench) smallCommandJobs(n, maxJobs int, target string) (benchRow, error) {
	what := "default --max-jobs"
	var args []string
	if maxJobs != 1 {
		what = fmt.Sprintf("--max-jobs %d", maxJobs)
		args = []string{"--max-jobs", strconv.Itoa(maxJobs)}
	}
	row := benchRow{Workload: fmt.Sprintf("drain %d one-command jobs (`true`), %s / xargs -P %d", n, what, maxJobs), Unit: "ratio", Target: target}
	input := filepath.Join(b.dir, "xargs-jobs-input")
	if err := os.WriteFile(input, []byte(strings.Repeat("x\n", n)), 0o600); err != nil {
		return row, err
	}
	for range b.runs {
		p, rss, err := b.drainJobs(n, `{"kind":"exec","payload":{"argv":["true"]}}`, args...)
		if err != nil {
			return row, err
		}
		t0 := time.Now()
		if out, err := exec.Command("sh", "-c", fmt.Sprintf("xargs -P %d -n 1 true < %s", maxJobs, input)).CombinedOutput(); err != nil {
			return row, fmt.Errorf("xargs: %w: %s", err, out)
		}
		row.Values = append(row.Values, p/time.Since(t0).Seconds())
		row.RSSMiB = max(row.RSSMiB, rss)
	}
	return row, nil
}

// latency: pcd submit returns -> the daemon starts the job's first task.
func (b *bench) latency() (row benchRow, err error) {
	row = benchRow{Workload: "submit returns -> first task starts (daemon)", Unit: "ms", Target: "<= 20 (p50)"}
	db := b.db()
	d, err := b.daemon(db)
	if err != nil {
		return row, err
	}
	defer func() { row.RSSMiB = stop(d) }()
	file, err := b.jobFile("one.json", 1, `{"kind":"noop"}`)
	if err != nil {
		return row, err
	}
	s, err := sqlite.Open(context.Background(), db, sqlite.Options{MustExist: true})
	if err != nil {
		return row, err
	}
	defer s.Close()
	for range max(b.runs*5, 5) {
		out, _, err := b.pcd(context.Background(), db, nil, "submit", file)
		returned := time.Now()
		if err != nil {
			return row, err
		}
		job, err := s.FindJob(context.Background(), strings.TrimSpace(out))
		if err != nil {
			return row, err
		}
		var started time.Time
		for deadline := time.Now().Add(10 * time.Second); started.IsZero(); {
			tasks, err := s.Tasks(context.Background(), job.ID)
			if err != nil {
				return row, err
			}
			if len(tasks) == 1 && !tasks[0].StartedAt.IsZero() {
				started = tasks[0].StartedAt
			} else if time.Now().After(deadline) {
				return row, errors.New("the task never started")
			} else {
				time.Sleep(time.Millisecond)
			}
		}
		row.Values = append(row.Values, float64(started.Sub(returned))/1e6)
	}
	return row, nil
}

// idle: an idle daemon's CPU use.
func (b *bench) idle() (row benchRow, err error) {
	span := 10 * time.Second
	if b.quick {
		span = time.Second
	}
	row = benchRow{Workload: fmt.Sprintf("idle daemon CPU over %v", span), Unit: "% core", Target: "< 1"}
	d, err := b.daemon(b.db())
	if err != nil {
		return row, err
	}
	defer func() { row.RSSMiB = stop(d) }()
	time.Sleep(500 * time.Millisecond)
	for range b.runs {
		before, err := cpuTicks(d.Process.Pid)
		if err != nil {
			return row, err
		}
		t0 := time.Now()
		time.Sleep(span)
		after, err := cpuTicks(d.Process.Pid)
		if err != nil {
			return row, err
		}
		row.Values = append(row.Values, float64(after-before)/100/time.Since(t0).Seconds()*100)
	}
	return row, nil
}

// cpuTicks reads a process's utime+stime in clock ticks (100 Hz).
func cpuTicks(pid int) (int64, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return utime + stime, nil
}

// restart: a daemon SIGKILLed with a big job half done; how long the next
// daemon takes to complete a task again.
func (b *bench) restart(n int) (benchRow, error) {
	row := benchRow{Workload: fmt.Sprintf("restart with a %d-task job half done -> running again", n), Unit: "s", Target: "<= 1"}
	file, err := b.jobFile("restart.json", n, `{"kind":"noop"}`)
	if err != nil {
		return row, err
	}
	// A run whose daemon finished the job before it was caught half done
	// measures nothing: try again, a few times.
	for try := 0; len(row.Values) < b.runs && try < 4*b.runs; try++ {
		db := b.db()
		if _, _, err := b.pcd(context.Background(), db, nil, "submit", file); err != nil {
			return row, err
		}
		d, err := b.daemon(db)
		if err != nil {
			return row, err
		}
		s, err := sqlite.Open(context.Background(), db, sqlite.Options{MustExist: true})
		if err != nil {
			d.Process.Kill()
			d.Wait()
			return row, err
		}
		done := func() (int64, bool) {
			jobs, _ := s.ListJobs(context.Background(), store.JobFilter{Limit: 1})
			if len(jobs) == 0 {
				return 0, false
			}
			return jobs[0].Done(), jobs[0].Finished()
		}
		for got, _ := done(); got < int64(n/2); got, _ = done() {
			time.Sleep(time.Millisecond)
		}
		d.Process.Kill()
		d.Wait()
		before, finished := done()
		if finished {
			s.Close()
			os.Remove(db)
			continue // too fast to catch half done; try again
		}
		t0 := time.Now()
		cmd := dieWithBench(exec.Command(b.self, "daemon", "--log-level", "warn"))
		cmd.Env = append(os.Environ(), "PCD_DB="+db)
		if err := cmd.Start(); err != nil {
			s.Close()
			return row, err
		}
		for now, _ := done(); now <= before && time.Since(t0) < time.Minute; now, _ = done() {
			time.Sleep(time.Millisecond)
		}
		row.Values = append(row.Values, time.Since(t0).Seconds())
		row.RSSMiB = max(row.RSSMiB, stop(cmd))
		s.Close()
		os.Remove(db)
	}
	return row, nil
}

// watchLag: pcd watch --json on a running job; how far its output falls
// behind the commits. Every 50 ms the bench reads the newest committed
// callback id; the lag of a sample is how long until watch prints it.
func (b *bench) watchLag(n int) (row benchRow, err error) {
	row = benchRow{Workload: fmt.Sprintf("pcd watch lag behind the commits, %d-task job", n), Unit: "s (max)", Target: "< 1"}
	file, err := b.jobFile("watch.json", n, `{"kind":"noop"}`)
	if err != nil {
		return row, err
	}
	for range b.runs {
		lag, rss, err := b.watchLagRun(file)
		if err != nil {
			return row, err
		}
		row.RSSMiB = max(row.RSSMiB, rss)
		row.Values = append(row.Values, lag.Seconds())
	}
	return row, nil
}

// printedAt is when pcd watch printed a callback.
type printedAt struct {
	id int64
	at time.Time
}

// watchLagRun is one run of watchLag: the largest lag, and the watch's
// peak RSS.
func (b *bench) watchLagRun(file string) (time.Duration, float64, error) {
	db := b.db()
	defer os.Remove(db)
	out, _, err := b.pcd(context.Background(), db, nil, "submit", file)
	if err != nil {
		return 0, 0, err
	}
	id := strings.TrimSpace(out)
	d, err := b.daemon(db)
	if err != nil {
		return 0, 0, err
	}
	defer stop(d)
	s, err := sqlite.Open(context.Background(), db, sqlite.Options{MustExist: true})
	if err != nil {
		return 0, 0, err
	}
	defer s.Close()
	w := dieWithBench(exec.Command(b.self, "watch", "--json", id))
	w.Env = append(os.Environ(), "PCD_DB="+db)
	pipe, err := w.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	if err := w.Start(); err != nil {
		return 0, 0, err
	}
	printed := make(chan printedAt, 1024)
	go func() {
		defer close(printed)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev struct {
				CallbackID int64 `json:"callback_id"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				printed <- printedAt{ev.CallbackID, time.Now()}
			}
		}
	}()
	lag := lagOf(printed, func() (int64, error) { return s.LastCallbackID(context.Background()) })
	w.Wait()
	return lag, maxRSS(w.ProcessState), nil
}

// lagOf samples the newest committed callback id (last) every 50 ms until
// printed closes; the lag of a sample is how long until it is printed.
func lagOf(printed <-chan printedAt, last func() (int64, error)) time.Duration {
	var samples []printedAt
	var maxLag time.Duration
	var lastPrinted int64
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case p, ok := <-printed:
			if !ok {
				return maxLag
			}
			lastPrinted = p.id
			for len(samples) > 0 && samples[0].id <= p.id {
				maxLag = max(maxLag, p.at.Sub(samples[0].at))
				samples = samples[1:]
			}
		case now := <-ticker.C:
			if id, err := last(); err == nil && id > lastPrinted {
				samples = append(samples, printedAt{id, now})
			}
			if len(samples) > 0 {
				maxLag = max(maxLag, now.Sub(samples[0].at))
			}
		}
	}
}
