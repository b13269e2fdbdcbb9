package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/web"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// ago is a time for a table: how long ago (or, ahead, in how long), as
// "3m ago" or "in 2h"; a date past a month.
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < -time.Second:
		return "in " + shortDuration(-d)
	case d < time.Second:
		return "now"
	case d < 30*24*time.Hour:
		return shortDuration(d) + " ago"
	}
	return t.Local().Format("2006-01-02")
}

// when is a time in full with how long ago it was, for pcd status JOB.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05") + " (" + ago(t) + ")"
}

// shortDuration is a duration to the unit that matters: 45s, 3m, 2h, 5d.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// jsonFlag is a new --json flag: urfave/cli writes into a flag as it
// parses, so flags are never shared between commands or runs.
func jsonFlag() cli.Flag { return &cli.BoolFlag{Name: "json", Usage: "print JSON"} }

func parseState(s string) (store.State, error) {
	switch st := store.State(strings.ToLower(s)); st {
	case "", store.Pending, store.Running, store.Succeeded, store.Failed, store.Cancelled:
		return st, nil
	}
	return "", usageError("unknown state %q (want pending, running, succeeded, failed or cancelled)", s)
}

// withJob opens the database (which must exist), for reading only unless
// write, and finds the job named by the one argument.
func withJob(c *cli.Context, write bool, fn func(*client, store.Job) error) error {
	if c.NArg() != 1 {
		return usageError("give one job id (a unique prefix is enough), got %d arguments", c.NArg())
	}
	open := openReader
	if write {
		open = func(c *cli.Context) (*client, error) { return openDB(c, true) }
	}
	db, err := open(c)
	if err != nil {
		return err
	}
	defer db.Close()
	job, err := db.Job(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	return fn(db, job)
}

func jobsCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:  "jobs",
		Usage: "list recent jobs",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "state", Usage: "only jobs in this `STATE`"},
			&cli.IntFlag{Name: "limit", Aliases: []string{"n"}, Value: 20, Usage: "at most this many jobs"},
			jsonFlag(),
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			state, err := parseState(c.String("state"))
			if err != nil {
				return err
			}
			if c.Int("limit") < 1 {
				return usageError("--limit must be positive, got %d", c.Int("limit"))
			}
			var jobs []store.Job
			db, err := openReader(c)
			switch {
			case errors.Is(err, store.ErrNoDatabase) && commonString(c, "db") == "":
				// The default database is made by the first submit: until
				// then there are no jobs, which is no error.
			case err != nil:
				return err
			default:
				defer db.Close()
				if jobs, err = db.Jobs(c.Context, store.JobFilter{State: state, Limit: c.Int("limit")}); err != nil {
					return err
				}
			}
			if c.Bool("json") {
				views := make([]web.Job, 0, len(jobs))
				for _, j := range jobs {
					views = append(views, web.ViewJob(j))
				}
				return writeJSON(env.Stdout, views)
			}
			rows := make([][]string, 0, len(jobs))
			for _, j := range jobs {
				elapsed := "-"
				if !j.StartedAt.IsZero() {
					elapsed = humanDuration(j.Elapsed)
				}
				rows = append(rows, []string{j.UUID[:8], oneLine(j.Name), jobState(j), fmt.Sprintf("%d/%d", j.Done(), j.Total),
					fmt.Sprint(j.Failed), elapsed, ago(j.CreatedAt)})
			}
			return table(env.Stdout, "ID\tNAME\tSTATE\tDONE\tFAILED\tELAPSED\tCREATED", rows)
		},
	}
}

func statusCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:         "status",
		Usage:        "show one job in detail, or with no job the overview: the daemon, jobs by state, the rate, callbacks waiting",
		ArgsUsage:    "[JOB_ID]",
		Flags:        []cli.Flag{jsonFlag()},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return overview(c, env)
			}
			return withJob(c, false, func(db *client, j store.Job) error {
				v := web.ViewJob(j)
				if c.Bool("json") {
					return writeJSON(env.Stdout, v)
				}
				open := ""
				if !j.Sealed {
					open = " (open: its producer may add tasks)"
				}
				rows := [][]string{
					{"job", v.ID}, {"name", printable(v.Name)}, {"state", string(v.State) + open},
					{"tasks", fmt.Sprintf("%d done of %d: %d succeeded, %d failed, %d cancelled", v.Done, v.Total, v.Succeeded, v.Failed, v.Cancelled)},
					{"workers", fmt.Sprint(v.Workers)}, {"queue size", fmt.Sprint(v.QueueSize)},
					{"round", fmt.Sprint(v.Round)}, {"elapsed", humanDuration(j.Elapsed)},
					{"created", when(j.CreatedAt)}, {"started", when(j.StartedAt)}, {"finished", when(j.FinishedAt)},
				}
				if j.Group != "" {
					rows = append(rows, []string{"group", printable(j.Group)})
				}
				if j.Priority != 0 {
					rows = append(rows, []string{"priority", fmt.Sprint(j.Priority)})
				}
				if !j.StartAt.IsZero() {
					rows = append(rows, []string{"starts at", when(j.StartAt)})
				}
				if j.After != store.AfterNone {
					if deps, err := db.JobDeps(c.Context, j); err == nil {
						var ids []string
						for _, d := range deps {
							ids = append(ids, d.UUID[:8]+" ("+string(d.State)+")")
						}
						mode := map[store.AfterMode]string{store.AfterSuccess: "after", store.AfterAny: "after any end of"}[j.After]
						rows = append(rows, []string{"waits", mode + " " + strings.Join(ids, ", ")})
					}
				}
				if j.Halt != "" {
					rows = append(rows, []string{"halt", printable(j.Halt)})
				}
				if len(j.Kinds) > 0 {
					rows = append(rows, []string{"kinds", printable(strings.Join(j.Kinds, ", "))})
				}
				if v.Waiting != "" {
					rows[2][1] += ": " + printable(v.Waiting)
				}
				if j.Paused && !j.Finished() {
					rows[2][1] = "paused (pcd resume " + j.UUID[:8] + ")"
				}
				tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
				for _, r := range rows {
					fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
				}
				return tw.Flush()
			})
		},
	}
}

// overviewView is pcd status --json with no job.
type overviewView struct {
	Runners      []web.Runner          `json:"runners"`
	Jobs         map[store.State]int64 `json:"jobs"`
	RunningTasks int                   `json:"running_tasks"`
	Rate         float64               `json:"tasks_per_sec"`
	RateWindow   float64               `json:"rate_window_secs"`
	Pending      map[string]int64      `json:"pending_callbacks"`
	Unfinished   int64                 `json:"unfinished_jobs"`
	Total        int64                 `json:"unfinished_tasks_total"`
	Done         int64                 `json:"unfinished_tasks_done"`
	// Waiting are the pending jobs that wait for another runner (a task
	// kind the runners that looked do not know): the newest
	// maxWaitingListed of them, of WaitingJobs.
	Waiting     []web.Job `json:"waiting,omitempty"`
	WaitingJobs int64     `json:"waiting_jobs,omitempty"`
	tallies     map[store.State]store.JobTally
}

// jobPaused counts the paused unfinished jobs in pcd status, beside the
// states.
const jobPaused store.State = "paused"

// maxWaitingShown is how many waiting jobs pcd status lists, and
// maxWaitingListed how many its --json does.
const (
	maxWaitingShown  = 5
	maxWaitingListed = 100
)

// rateWindow is how long pcd status watches the tasks done to tell the
// current rate, when a job runs.
const rateWindow = time.Second

// overview is pcd status with no job: the runners of the database, live
// and lately gone, the jobs by state, the running tasks, the current
// rate and the callbacks that sinks have yet to take.
func overview(c *cli.Context, env Env) error {
	db, err := openReader(c)
	if errors.Is(err, store.ErrNoDatabase) && commonString(c, "db") == "" {
		db = nil // the default database, before the first submit
	} else if err != nil {
		return err
	} else {
		defer db.Close()
	}
	v, err := gatherOverview(c, db)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(env.Stdout, v)
	}
	return printOverview(env.Stdout, v, db == nil)
}

func gatherOverview(c *cli.Context, db *client) (overviewView, error) {
	v := overviewView{Runners: []web.Runner{}, Jobs: map[store.State]int64{}, Pending: map[string]int64{}}
	if db == nil {
		return v, nil
	}
	runners, err := db.Runners(c.Context)
	if err != nil {
		return v, err
	}
	v.Runners, v.RunningTasks = web.ViewRunners(runners)
	if v.tallies, err = db.Counts(c.Context); err != nil {
		return v, err
	}
	for state, t := range v.tallies {
		v.Jobs[state] = t.Jobs
		if !state.Final() && t.Paused > 0 { // a paused job is neither running nor waiting its turn
			v.Jobs[state] -= t.Paused
			v.Jobs[jobPaused] += t.Paused
		}
		if !state.Final() {
			v.Unfinished += t.Jobs
			v.Total += t.Tasks
			v.Done += t.Done
		}
	}
	if v.Pending, err = db.SinkBacklog(c.Context); err != nil {
		return v, err
	}
	if v.WaitingJobs = v.tallies[store.Pending].Waiting; v.WaitingJobs > 0 {
		shown := maxWaitingShown
		if c.Bool("json") {
			shown = maxWaitingListed
		}
		waiting, err := db.Jobs(c.Context, store.JobFilter{State: store.Pending, Waiting: true, Limit: shown})
		if err != nil {
			return v, err
		}
		for _, j := range slices.Backward(waiting) { // oldest first
			v.Waiting = append(v.Waiting, web.ViewJob(j))
		}
	}
	if v.tallies[store.Running].Jobs > 0 {
		// The tasks done in all jobs, twice, a window apart.
		before := doneTasks(v.tallies)
		start := time.Now()
		select {
		case <-c.Context.Done():
			return v, c.Context.Err()
		case <-time.After(rateWindow):
		}
		after, err := db.Counts(c.Context)
		if err != nil {
			return v, err
		}
		v.RateWindow = time.Since(start).Seconds()
		v.Rate = max(float64(doneTasks(after)-before), 0) / v.RateWindow
	}
	return v, nil
}

func doneTasks(t map[store.State]store.JobTally) int64 {
	var n int64
	for _, s := range t {
		n += s.Done
	}
	return n
}

func printOverview(w io.Writer, v overviewView, noDatabase bool) error {
	var b strings.Builder
	if err := printRunners(&b, v.Runners, noDatabase); err != nil {
		return err
	}
	var jobs []string
	for _, state := range []store.State{store.Running, store.Pending, jobPaused, store.Succeeded, store.Failed, store.Cancelled} {
		if n := v.Jobs[state]; n > 0 {
			jobs = append(jobs, fmt.Sprintf("%d %s", n, state))
		}
	}
	if len(jobs) == 0 {
		jobs = []string{"none"}
	}
	fmt.Fprintf(&b, "jobs:           %s\n", strings.Join(jobs, ", "))
	if v.Unfinished > 0 {
		fmt.Fprintf(&b, "unfinished:     %s, %d of %d tasks done\n", plural(v.Unfinished, "job"), v.Done, v.Total)
	}
	for i, j := range v.Waiting {
		if i == maxWaitingShown {
			break
		}
		label := "waiting:"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(&b, "%-16sjob %s (%s) %s\n", label, j.ID[:8], printable(j.Name), printable(j.Waiting))
	}
	if more := v.WaitingJobs - int64(min(len(v.Waiting), maxWaitingShown)); more > 0 {
		fmt.Fprintf(&b, "                and %s more\n", plural(more, "job"))
	}
	fmt.Fprintf(&b, "running tasks:  %d\n", v.RunningTasks)
	if v.RateWindow > 0 {
		fmt.Fprintf(&b, "rate:           %.0f tasks/s (over the last %.1f s)\n", v.Rate, v.RateWindow)
	} else {
		b.WriteString("rate:           idle (no job is running)\n")
	}
	if len(v.Pending) == 0 {
		b.WriteString("callbacks:      none waiting for a sink\n")
	} else {
		names := slices.Sorted(maps.Keys(v.Pending))
		slices.SortStableFunc(names, func(x, y string) int { return cmp.Compare(v.Pending[y], v.Pending[x]) })
		b.WriteString("callbacks waiting for a sink:\n")
		for i, name := range names {
			if i == 10 {
				fmt.Fprintf(&b, "  and %d more sinks\n", len(names)-10)
				break
			}
			fmt.Fprintf(&b, "  %-8d %s\n", v.Pending[name], oneLine(name))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// printRunners is the overview's first lines: the runners.
func printRunners(b *strings.Builder, runners []web.Runner, noDatabase bool) error {
	alive := 0
	for _, r := range runners {
		if r.Alive {
			alive++
		}
	}
	switch {
	case noDatabase:
		b.WriteString("daemon: none, and no database yet: `pcd submit` makes it, `pcd daemon` runs its jobs\n")
	case len(runners) == 0:
		b.WriteString("daemon: none running (start one with `pcd daemon`; jobs wait for it)\n")
	case len(runners) == 1 && alive == 1 && runners[0].Heartbeat == nil:
		r := runners[0]
		fmt.Fprintf(b, "%s: running, pid %d", printable(r.Role), r.PID)
		if r.Started != nil {
			fmt.Fprintf(b, ", up %s (since %s)", humanDuration(time.Since(*r.Started)), r.Started.Local().Format("2006-01-02 15:04:05"))
		}
		if r.Version != "" {
			fmt.Fprintf(b, ", pcd %s", printable(r.Version))
		}
		b.WriteString("\n")
	default:
		rows := make([][]string, len(runners))
		for i, r := range runners {
			state, beat, started := "alive", "-", "-"
			if !r.Alive {
				state = "gone"
			}
			if r.Heartbeat != nil {
				beat = humanDuration(time.Since(*r.Heartbeat)) + " ago"
			}
			if r.Started != nil {
				started = ago(*r.Started)
			}
			rows[i] = []string{printable(r.Role), printable(r.Host), fmt.Sprint(r.PID), state, started, beat, fmt.Sprint(r.Running), printable(r.Version)}
		}
		if err := table(b, "ROLE\tHOST\tPID\tSTATE\tSTARTED\tHEARTBEAT\tRUNNING\tVERSION", rows); err != nil {
			return err
		}
		b.WriteString("\n")
	}
	return nil
}

func tasksCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:      "tasks",
		Usage:     "list a job's tasks",
		ArgsUsage: "JOB_ID",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "state", Usage: "only tasks in this `STATE`"},
			&cli.BoolFlag{Name: "attempts", Usage: "list every recorded attempt of tasks that may retry"},
			jsonFlag(),
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			state, err := parseState(c.String("state"))
			if err != nil {
				return err
			}
			if c.Bool("attempts") {
				return withJob(c, false, func(db *client, j store.Job) error { return listAttempts(c, env, db, j) })
			}
			return withJob(c, false, func(db *client, j store.Job) error { return listTasks(c, env, db, j, state) })
		},
	}
}

// listTasks prints a job's tasks, a page at a time: NDJSON with --json,
// else a table whose COMMAND column is cut to the terminal's width.
func listTasks(c *cli.Context, env Env, db *client, j store.Job, state store.State) error {
	if j.State == store.Pending && j.Waiting != "" {
		fmt.Fprintf(env.Stderr, "pcd: job %s %s\n", j.UUID, printable(j.Waiting))
	}
	var enc *json.Encoder
	if c.Bool("json") {
		enc = json.NewEncoder(env.Stdout) // NDJSON: one task a line, for any size of job
	}
	width := terminalWidth(env.Stdout)
	numWidth := len(fmt.Sprint(max(j.Total, 1)))
	header := true
	var after int64
	for {
		page, err := db.Tasks(c.Context, j.UUID, engine.TaskFilter{State: state, After: after, Limit: 1000})
		if err != nil {
			return err
		}
		var rows [][]string
		for _, t := range page {
			after = t.Seq
			if enc != nil {
				if err := enc.Encode(web.ViewTask(t)); err != nil {
					return err
				}
				continue
			}
			rows = append(rows, taskRow(t, numWidth))
		}
		if enc == nil && (len(rows) > 0 || header) {
			// Each page is its own table: the fixed columns keep their
			// widths, and a million tasks are never held at once.
			if err := taskTable(env.Stdout, header, rows, width); err != nil {
				return err
			}
			header = false
		}
		if len(page) < 1000 {
			return nil
		}
	}
}

// taskRow is a task's row: NUMBER, STATE, EXIT, TIME, CPU, MEM, ATTEMPTS,
// COMMAND, ERROR. CPU and MEM are an exec command's CPU time and peak
// memory.
func taskRow(t store.TaskRow, numWidth int) []string {
	state := string(t.State)
	if t.Interrupts > 0 {
		// Runs cut short by a runner's death: the task may have run twice.
		state += " (" + plural(t.Interrupts, "interrupt") + ": may have run twice)"
	}
	exit, cpu, mem := "-", "-", "-"
	if t.Kind == "exec" && len(t.Result) > 0 {
		var r struct {
			ExitCode  *int    `json:"exit_code"`
			CPUSecs   float64 `json:"cpu_secs"`
			MaxRSSKiB int64   `json:"max_rss_kib"`
		}
		if json.Unmarshal(t.Result, &r) == nil && r.ExitCode != nil {
			exit = fmt.Sprint(*r.ExitCode)
			cpu = humanDuration(time.Duration(r.CPUSecs * float64(time.Second)))
			if r.MaxRSSKiB > 0 {
				mem = humanKiB(r.MaxRSSKiB)
			}
		}
	}
	took := "-"
	switch {
	case t.State.Final() || t.Time > 0:
		took = humanDuration(t.Time)
	case t.State == store.Running && !t.StartedAt.IsZero():
		took = humanDuration(time.Since(t.StartedAt)) + "…"
	}
	return []string{fmt.Sprintf("%*d", numWidth, t.Seq), state, exit, took, cpu, mem, fmt.Sprint(t.Attempts), taskCommand(t), oneLine(t.Error)}
}

// humanKiB is a size given in KiB, in KiB, MiB or GiB.
func humanKiB(kib int64) string {
	switch {
	case kib < 1024:
		return fmt.Sprintf("%d KiB", kib)
	case kib < 1024*1024:
		return fmt.Sprintf("%.1f MiB", float64(kib)/1024)
	default:
		return fmt.Sprintf("%.1f GiB", float64(kib)/(1024*1024))
	}
}

// taskTable writes rows under the tasks header; on a terminal the
// COMMAND and ERROR cells are cut so that a row fits its width.
func taskTable(w io.Writer, header bool, rows [][]string, width int) error {
	if width > 0 {
		fixed := []int{len("NUMBER"), len("STATE"), len("EXIT"), len("TIME"), len("CPU"), len("MEM"), len("ATTEMPTS")}
		longestErr := 0
		for _, r := range rows {
			for i := range fixed {
				fixed[i] = max(fixed[i], utf8.RuneCountInString(r[i]))
			}
			longestErr = max(longestErr, utf8.RuneCountInString(r[8]))
		}
		room := width
		for _, f := range fixed {
			room -= f + 2
		}
		// The errors take what they need, up to half; the commands the rest.
		cmdRoom, errRoom := room, 0
		if longestErr > 0 {
			errRoom = max(min(longestErr, room/2), len("ERROR"))
			cmdRoom = max(room-errRoom-2, 10)
		}
		for _, r := range rows {
			r[7], r[8] = cut(r[7], cmdRoom), cut(r[8], errRoom)
		}
	}
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	if header {
		fmt.Fprintln(tw, "NUMBER\tSTATE\tEXIT\tTIME\tCPU\tMEM\tATTEMPTS\tCOMMAND\tERROR")
	}
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// An empty last cell leaves padding behind.
	for line := range strings.Lines(buf.String()) {
		if _, err := io.WriteString(w, strings.TrimRight(line, " \n")+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// taskCommand is what a task runs, in one line (see commandLine).
func taskCommand(t store.TaskRow) string { return oneLine(commandLine(t.Kind, t.Payload)) }

// commandLine is what a task runs: an exec task's command line (its words
// quoted as a shell would need, so that it can be pasted into one), else
// its kind and payload.
func commandLine(kind string, payload []byte) string {
	if kind == "exec" {
		var p engine.ExecPayload
		if json.Unmarshal(payload, &p) == nil {
			if p.Shell != "" {
				return p.Shell
			}
			words := make([]string, len(p.Argv))
			for i, a := range p.Argv {
				words[i] = shellQuote(a)
			}
			return strings.Join(words, " ")
		}
	}
	if len(payload) == 0 || string(payload) == "null" {
		return kind
	}
	return kind + " " + string(payload)
}

// shellQuote quotes a word for sh when it needs it, as GNU parallel does.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// jobState is a job's state for a table: paused, or waiting for its start
// time, where that is why it does not run.
func jobState(j store.Job) string {
	switch {
	case j.Finished():
	case j.Paused:
		return "paused"
	case j.State == store.Pending && j.StartAt.After(time.Now()):
		return "pending (at " + j.StartAt.Local().Format("15:04:05") + ")"
	}
	return string(j.State)
}

// plural is "1 thing" or "n things".
func plural[N int | int64](n N, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// cut shortens s to n characters, marking the cut with "…"; n < 1 keeps
// it whole.
func cut(s string, n int) string {
	if n < 1 || utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// humanDuration is a duration for a table: 850µs, 12ms, 3.4s, 2m05s,
// 1h02m, 3d04h.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// terminalWidth is w's width in columns if it is a terminal, else 0.
func terminalWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok || !isatty.IsTerminal(f.Fd()) {
		return 0
	}
	if cols, _, err := term.GetSize(int(f.Fd())); err == nil {
		return cols
	}
	return 0
}

// oneLine is user text for a table cell: escaped (see printable), and cut
// to 120 characters.
func oneLine(s string) string {
	s = printable(s)
	if utf8.RuneCountInString(s) > 120 {
		s = string([]rune(s)[:117]) + "..."
	}
	return s
}

type attemptView struct {
	Number     int64       `json:"number"`
	Attempt    int         `json:"attempt"`
	State      store.State `json:"state"`
	TimeSecs   float64     `json:"time_secs"`
	StartedAt  time.Time   `json:"started_at"`
	FinishedAt time.Time   `json:"finished_at"`
	Error      string      `json:"error,omitempty"`
}

func listAttempts(c *cli.Context, env Env, db *client, j store.Job) error {
	attempts, err := db.Attempts(c.Context, j)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		enc := json.NewEncoder(env.Stdout)
		for _, a := range attempts {
			if err := enc.Encode(attemptView{Number: a.Seq, Attempt: a.Attempt, State: a.State, TimeSecs: a.Time.Seconds(),
				StartedAt: a.StartedAt, FinishedAt: a.FinishedAt, Error: a.Error}); err != nil {
				return err
			}
		}
		return nil
	}
	rows := make([][]string, 0, len(attempts))
	for _, a := range attempts {
		rows = append(rows, []string{fmt.Sprint(a.Seq), fmt.Sprint(a.Attempt), string(a.State),
			fmt.Sprintf("%.4f", a.Time.Seconds()), ago(a.StartedAt), oneLine(a.Error)})
	}
	return table(env.Stdout, "NUMBER\tATTEMPT\tSTATE\tTIME_SECS\tSTARTED\tERROR", rows)
}

// cancelJob cancels a job, and waits at most a minute for its runner to
// stop its running tasks, saying so after a second.
func cancelJob(ctx context.Context, env Env, db *client, j store.Job) (store.Job, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	slow := time.AfterFunc(time.Second, func() {
		fmt.Fprintf(env.Stderr, "pcd: waiting for the runner to stop job %s's running tasks\n", j.UUID)
	})
	defer slow.Stop()
	done, err := db.Cancel(ctx, j.UUID)
	if errors.Is(err, engine.ErrStopPending) {
		fmt.Fprintf(env.Stderr, "pcd: note: %s; the job is cancelled and their results will be ignored\n", ErrorLine(err))
		err = nil
	}
	return done, err
}
