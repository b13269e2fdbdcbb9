package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/internal/rundir"
	"github.com/pcd-dev/pcd/store/postgres"
)

// sourceFlags choose where run and submit take their job from, besides a
// FILE argument, - for NDJSON and -- CMD ARGS.
func sourceFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "sleep", Usage: "the job is `N` random sleeps of 0-1 s"},
		&cli.StringFlag{Name: "lines", Usage: "the job is one shell command per line of `FILE` (- for stdin), like xargs or parallel"},
		&cli.IntFlag{Name: "max-payload", EnvVars: []string{"PCD_MAX_PAYLOAD"}, Value: engine.DefaultMaxPayload, Usage: "the largest task payload, in `BYTES` of JSON; a bigger one is refused with nothing written"},
		&cli.StringFlag{Name: "args", Usage: "with -- CMD, one task per line of `FILE` (- for stdin), the line in CMD's {} (like parallel)"},
		&cli.BoolFlag{Name: "shell", Usage: "with -- CMD, run CMD with sh -c, each argument quoted for it (else each argument is one argv word)"},
	}
}

// configurePayload applies --max-payload to the registry, before any task
// is read.
func configurePayload(c *cli.Context, env Env) error {
	n := c.Int("max-payload")
	if n < 1 || n > 1<<30 {
		return usageError("--max-payload must be between 1 and %d bytes, got %d", 1<<30, n)
	}
	env.Registry.SetMaxPayload(n)
	return nil
}

// jobSource reads the job the arguments name. stream is true for -, NDJSON
// on stdin, which the caller streams; demo is --demo's job.
func jobSource(c *cli.Context, env Env, demo bool) (jf engine.JobFile, stream bool, err error) {
	if err := configurePayload(c, env); err != nil {
		return jf, false, err
	}
	var sources []string
	if demo {
		sources = append(sources, "--demo")
	}
	if c.IsSet("sleep") {
		sources = append(sources, "--sleep")
	}
	if c.IsSet("lines") {
		sources = append(sources, "--lines")
	}
	if env.command != nil {
		sources = append(sources, "-- CMD")
	}
	if c.NArg() > 0 {
		sources = append(sources, "a job file")
	}
	if (c.IsSet("args") || c.Bool("shell")) && env.command == nil {
		return jf, false, usageError("--args and --shell go with -- CMD")
	}
	switch {
	case len(sources) == 0:
		return jf, false, usageError("no job: give a job FILE, - for NDJSON tasks on stdin, --sleep N, --lines FILE or -- CMD ARGS")
	case len(sources) > 1:
		return jf, false, usageError("one job source at a time, got %s", strings.Join(sources, " and "))
	case c.NArg() > 1:
		return jf, false, usageError("one job file at a time, got %d", c.NArg())
	}
	switch sources[0] {
	case "--demo":
		return sleepJob(10), false, nil
	case "--sleep":
		n := c.Int("sleep")
		if n < 1 || n > 10_000_000 {
			return jf, false, usageError("--sleep must be between 1 and 10000000, got %d", n)
		}
		return sleepJob(n), false, nil
	case "-- CMD":
		if len(env.command) == 0 || env.command[0] == "" {
			return jf, false, usageError("-- needs a command after it")
		}
		if hasArgSources(env.command) || c.IsSet("args") {
			plan, err := parseArgPlan(env.command, c.String("args"), env.Stdin, c.Bool("shell"))
			if err != nil {
				return jf, false, err
			}
			plan.tag = c.Bool("tag")
			jf, err := plan.job(env)
			return jf, false, err
		}
		if c.Bool("shell") {
			jf, err := execJob(commandName(env.command, true), nil, []string{strings.Join(env.command, " ")}, env)
			return jf, false, err
		}
		jf, err := execJob(commandName(env.command, false), [][]string{env.command}, nil, env)
		return jf, false, err
	case "--lines":
		return linesJob(c.String("lines"), env)
	}
	if c.Args().First() == "-" {
		return jf, true, nil
	}
	jf, err = readJobFile(c.Args().First(), env)
	return jf, false, err
}

// maxNameLen bounds a job name made from a command line.
const maxNameLen = 60

// commandName is the name of a job made from a command line: the line, as
// a shell would read it, cut to maxNameLen characters. Five jobs of sh -c
// are not all called sh.
func commandName(words []string, shell bool) string {
	line := strings.Join(words, " ")
	if !shell {
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = w
			if w == "" || strings.ContainsAny(w, " \t\n'\"") {
				quoted[i] = shellQuote(w)
			}
		}
		line = strings.Join(quoted, " ")
	}
	line = oneLine(line)
	if r := []rune(line); len(r) > maxNameLen {
		line = string(r[:maxNameLen-1]) + "…"
	}
	return line
}

// execJob is a job of exec tasks, one per argv or per shell line.
func execJob(name string, argvs [][]string, lines []string, env Env) (engine.JobFile, error) {
	jf := engine.JobFile{Name: name}
	add := func(p engine.ExecPayload) error {
		payload, err := json.Marshal(p)
		if err != nil {
			return err
		}
		jf.Tasks = append(jf.Tasks, engine.TaskSpec{Kind: "exec", Payload: payload})
		return nil
	}
	for _, argv := range argvs {
		if err := add(engine.ExecPayload{Argv: argv}); err != nil {
			return jf, err
		}
	}
	for _, line := range lines {
		if err := add(engine.ExecPayload{Shell: line}); err != nil {
			return jf, err
		}
	}
	if err := jf.Validate(env.Registry); err != nil {
		return jf, usageError("%w", err)
	}
	return jf, nil
}

// linesJob reads one shell command per non-blank line.
func linesJob(path string, env Env) (engine.JobFile, bool, error) {
	var r io.Reader = env.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return engine.JobFile{}, false, usageError("--lines: %w", err)
		}
		defer f.Close()
		r = f
	}
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		return engine.JobFile{}, false, usageError("--lines %s: %w", path, err)
	}
	if len(lines) == 0 {
		return engine.JobFile{}, false, usageError("--lines %s: no commands", path)
	}
	jf, err := execJob("lines", nil, lines, env)
	return jf, false, err
}

// applyJobFlags applies --name and the size, retry and sink flags to the
// job read from its source.
func applyJobFlags(c *cli.Context, jf *engine.JobFile) error {
	if c.IsSet("name") {
		jf.Name = c.String("name")
	}
	// Commands run where they were submitted, wherever the runner is.
	cwd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("find the working directory: %w", err)
	}
	jf.Dir = cwd
	for _, apply := range []func(*cli.Context, *engine.JobFile) error{applySizeFlags, applyRetryFlags, applyLimitFlags, applySinkFlags, applyScheduleFlags} {
		if err := apply(c, jf); err != nil {
			return err
		}
	}
	return nil
}

// haltFlag is --halt, for run and submit.
func haltFlag() cli.Flag {
	return &cli.StringFlag{Name: "halt", Usage: "stop the job early, as GNU parallel: `WHEN,WHY=N` (now,fail=1 cancels it at the first failure; soon,fail=3 lets running tasks finish; success=N, done=N, N%)"}
}

// scheduleFlags say when a submitted job runs.
func scheduleFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "priority", Usage: "a job of higher `N` starts first, and takes the daemon's free slots first"},
		&cli.StringFlag{Name: "at", Usage: "start no earlier than `TIME`: 15:04, 2026-12-01 15:04, or RFC 3339"},
		&cli.DurationFlag{Name: "in", Usage: "start no earlier than `DURATION` from now (say 2h30m)"},
		&cli.StringFlag{Name: "group", Aliases: []string{"g"}, Usage: "run in the group `G`, with its limits (pcd group set)"},
		&cli.StringSliceFlag{Name: "after", Usage: "start once the jobs `JOB[,JOB...]` have succeeded; if one fails or is cancelled, this job is cancelled"},
		&cli.StringSliceFlag{Name: "after-any", Usage: "start once the jobs `JOB[,JOB...]` have ended, however they ended"},
	}
}

// applyScheduleFlags puts --halt and the schedule flags into the job.
func applyScheduleFlags(c *cli.Context, jf *engine.JobFile) error {
	if c.IsSet("halt") {
		jf.Halt = c.String("halt")
	}
	if _, err := engine.ParseHalt(jf.Halt); err != nil {
		return usageError("%w", err)
	}
	if c.IsSet("priority") {
		jf.Priority = c.Int("priority")
	}
	if c.IsSet("group") {
		jf.Group = c.String("group")
	}
	switch {
	case c.IsSet("at") && c.IsSet("in"):
		return usageError("give --at or --in, not both")
	case c.IsSet("at"):
		at, err := parseAt(c.String("at"), time.Now())
		if err != nil {
			return err
		}
		jf.StartAt = at
	case c.IsSet("in"):
		if c.Duration("in") < 0 {
			return usageError("--in must not be negative, got %v", c.Duration("in"))
		}
		jf.StartAt = time.Now().Add(c.Duration("in"))
	}
	after, afterAny := splitRefs(c.StringSlice("after")), splitRefs(c.StringSlice("after-any"))
	switch {
	case len(after) > 0 && len(afterAny) > 0:
		return usageError("give --after or --after-any, not both")
	case len(after) > 0:
		jf.After, jf.AfterAny = after, false
	case len(afterAny) > 0:
		jf.After, jf.AfterAny = afterAny, true
	}
	return nil
}

// splitRefs takes job ids given as repeated flags, comma-separated, or
// both.
func splitRefs(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, ref := range strings.Split(v, ",") {
			if ref = strings.TrimSpace(ref); ref != "" {
				out = append(out, ref)
			}
		}
	}
	return out
}

// parseAt reads --at: a clock time today (tomorrow if it has passed), a
// date and time in local time, or RFC 3339.
func parseAt(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			return t, nil
		}
	}
	for _, layout := range []string{"15:04:05", "15:04"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			at := time.Date(now.Year(), now.Month(), now.Day(), t.Hour(), t.Minute(), t.Second(), 0, now.Location())
			if !at.After(now) {
				at = at.AddDate(0, 0, 1)
			}
			return at, nil
		}
	}
	return time.Time{}, usageError("--at %q: want 15:04, 2026-12-01 15:04 or RFC 3339 (2026-12-01T15:04:00Z)", s)
}

// retryFlags set the job's retry defaults, over the job file's.
func retryFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "max-attempts", Usage: "attempts per task before it fails", DefaultText: "1: no retry"},
		&cli.DurationFlag{Name: "backoff-base", Usage: "the first wait before a retry; it doubles each time, with jitter", DefaultText: "1s"},
		&cli.DurationFlag{Name: "backoff-cap", Usage: "the longest wait before a retry", DefaultText: "5m"},
		&cli.DurationFlag{Name: "timeout", Usage: "how long one attempt of a task may run", DefaultText: "no limit"},
	}
}

// applyRetryFlags puts the retry flags into the job's defaults.
func applyRetryFlags(c *cli.Context, jf *engine.JobFile) error {
	if c.IsSet("max-attempts") {
		if c.Int("max-attempts") < 1 {
			return usageError("--max-attempts must be at least 1, got %d", c.Int("max-attempts"))
		}
		jf.MaxAttempts = c.Int("max-attempts")
	}
	if c.IsSet("backoff-base") || c.IsSet("backoff-cap") {
		if jf.Backoff == nil {
			jf.Backoff = &engine.BackoffSpec{}
		}
		if c.IsSet("backoff-base") {
			jf.Backoff.Base = engine.Duration(c.Duration("backoff-base"))
		}
		if c.IsSet("backoff-cap") {
			jf.Backoff.Cap = engine.Duration(c.Duration("backoff-cap"))
		}
	}
	if c.IsSet("timeout") {
		if c.Duration("timeout") < 0 {
			return usageError("--timeout must not be negative")
		}
		jf.Timeout = engine.Duration(c.Duration("timeout"))
	}
	if err := jf.RetrySpec.Validate(); err != nil {
		return usageError("%w", err)
	}
	return nil
}

// limitFlags cap what each command of the job may use.
func limitFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "memory", Usage: "the most memory each command, with all it starts, may use: `SIZE` such as 512MiB or 2G (powers of 1024); over it, the task fails (Linux cgroups, as root)"},
		&cli.Float64Flag{Name: "cpus", Usage: "the most CPU time each command may use, in `CPUS` (1.5: one and a half CPUs) (Linux cgroups, as root)"},
	}
}

// applyLimitFlags puts --memory and --cpus into the job's limits, over
// the job file's, and refuses them where they cannot be enforced.
func applyLimitFlags(c *cli.Context, jf *engine.JobFile) error {
	if c.IsSet("memory") {
		size, err := engine.ParseByteSize(c.String("memory"))
		if err != nil {
			return usageError("--memory: %w", err)
		}
		jf.Memory = size
	}
	if c.IsSet("cpus") {
		jf.CPUs = c.Float64("cpus")
	}
	if err := jf.Limits.Validate(); err != nil {
		return usageError("%w", err)
	}
	if c.IsSet("memory") || c.IsSet("cpus") {
		if err := engine.CheckLimits(jf.Limits); err != nil {
			return usageError("--memory and --cpus: %w", err)
		}
	}
	return nil
}

// sinkFlags name callback destinations: the job's own for run and submit,
// every job's for the daemon.
func sinkFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "on-task", EnvVars: []string{"PCD_ON_TASK"}, Usage: "run `CMD` (with sh -c) for each task callback: the event is JSON on stdin and in PCD_* variables"},
		&cli.StringFlag{Name: "on-job", EnvVars: []string{"PCD_ON_JOB"}, Usage: "run `CMD` for each job callback"},
		&cli.StringSliceFlag{Name: "webhook", EnvVars: []string{"PCD_WEBHOOK"}, Usage: "POST each callback as JSON to `URL`, with an Idempotency-Key header (repeatable)"},
	}
}

// deliveryFlags tune delivery, in the processes that deliver.
func deliveryFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "delivery-attempts", EnvVars: []string{"PCD_DELIVERY_ATTEMPTS"}, Value: 8, Usage: "attempts to deliver a callback to a hook or webhook before it is marked dead"},
		&cli.DurationFlag{Name: "delivery-backoff", EnvVars: []string{"PCD_DELIVERY_BACKOFF"}, Value: time.Second, Usage: "the first wait before a delivery is retried; it doubles, with jitter"},
		&cli.DurationFlag{Name: "delivery-backoff-cap", EnvVars: []string{"PCD_DELIVERY_BACKOFF_CAP"}, Value: time.Minute, Usage: "the longest wait before a delivery is retried"},
		&cli.DurationFlag{Name: "webhook-timeout", EnvVars: []string{"PCD_WEBHOOK_TIMEOUT"}, Value: 10 * time.Second, Usage: "timeout of one webhook request"},
		&cli.DurationFlag{Name: "hook-timeout", EnvVars: []string{"PCD_HOOK_TIMEOUT"}, Value: 30 * time.Second, Usage: "timeout of one hook command"},
	}
}

// sinksFromFlags reads sinkFlags.
func sinksFromFlags(c *cli.Context) (engine.Sinks, error) {
	s := engine.Sinks{OnTask: c.String("on-task"), OnJob: c.String("on-job"), Webhooks: c.StringSlice("webhook")}
	if err := s.Validate(); err != nil {
		return s, usageError("%w", err)
	}
	return s, nil
}

// applySinkFlags adds the flags' sinks to the job's.
func applySinkFlags(c *cli.Context, jf *engine.JobFile) error {
	s, err := sinksFromFlags(c)
	if err != nil {
		return err
	}
	if s.OnTask != "" {
		jf.OnTask = s.OnTask
	}
	if s.OnJob != "" {
		jf.OnJob = s.OnJob
	}
	jf.Webhooks = append(jf.Webhooks, s.Webhooks...)
	return nil
}

// deliveryConfig reads deliveryFlags.
func deliveryConfig(c *cli.Context, log *slog.Logger) (engine.DeliveryConfig, error) {
	n := c.Int("delivery-attempts")
	if n < 1 || n > 1000 {
		return engine.DeliveryConfig{}, usageError("--delivery-attempts must be between 1 and 1000, got %d", n)
	}
	for _, f := range []string{"webhook-timeout", "hook-timeout", "delivery-backoff", "delivery-backoff-cap"} {
		if c.Duration(f) <= 0 {
			return engine.DeliveryConfig{}, usageError("--%s must be positive, got %v", f, c.Duration(f))
		}
	}
	return engine.DeliveryConfig{
		Policy: engine.DeliveryPolicy{MaxAttempts: n, BackoffBase: c.Duration("delivery-backoff"),
			BackoffCap: max(c.Duration("delivery-backoff-cap"), c.Duration("delivery-backoff"))},
		Options: engine.SinkOptions{HookTimeout: c.Duration("hook-timeout"), WebhookTimeout: c.Duration("webhook-timeout")},
		Logger:  log,
	}, nil
}

// execFlags configure the exec kind in the process that runs tasks.
func execFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "output-cap", EnvVars: []string{"PCD_OUTPUT_CAP"}, Value: engine.DefaultOutputCap, Usage: "bytes of each of an exec task's stdout and stderr that the database keeps (the last ones); longer output is spooled to disk whole, and printed whole"},
	}
}

// configureExec applies execFlags to the registry. done removes the
// database's directory of live output once the runner is over, if it is
// empty and the database is a SQLite file, which one runner uses at a
// time (runners of a PostgreSQL database on this host share it).
func configureExec(c *cli.Context, env Env) (done func(), err error) {
	done = func() {}
	n := c.Int("output-cap")
	if n < 1 || n > 64<<20 {
		return done, usageError("--output-cap must be between 1 and %d bytes, got %d", 64<<20, n)
	}
	ex := engine.Exec{OutputCap: n}
	path, err := dbPath(c)
	if err != nil {
		return done, err
	}
	if ex.LiveDir, err = liveDir(path); err != nil {
		fmt.Fprintf(env.Stderr, "pcd: note: running tasks' output cannot be followed (pcd logs --follow): %v\n", err)
	} else {
		engine.CleanLive(ex.LiveDir)
		if !postgres.IsURL(path) {
			done = func() { _ = os.Remove(ex.LiveDir) } // fails, harmlessly, unless empty
		}
	}
	if ex.SpoolDir, err = spoolDir(path); err != nil {
		fmt.Fprintf(env.Stderr, "pcd: note: exec tasks' output past --output-cap bytes is cut: %v\n", err)
	}
	env.Registry.Replace("exec", ex)
	return done, nil
}

// spoolDir is where the runners of the database at path keep the whole
// output of exec tasks whose output the database does not hold whole: a
// directory beside a SQLite file (<file>.spool), or, for PostgreSQL,
// one per database in pcd's state directory on this host. It is made
// 0700 when a first output spills (nothing is made before: a refused
// database stays as it was); one that exists must be this user's, and no
// one else's to write in.
func spoolDir(path string) (string, error) {
	var dir string
	if postgres.IsURL(path) {
		state, err := stateDir()
		if err != nil {
			return "", fmt.Errorf("spool directory: %w", err)
		}
		dir = filepath.Join(state, "spool", rundir.Key(path))
	} else {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", fmt.Errorf("spool directory: %w", err)
		}
		dir = abs + ".spool"
	}
	if _, err := os.Lstat(dir); err == nil && !rundir.Private(dir) {
		return "", fmt.Errorf("spool directory %s is not a directory of yours that only you can write in", dir)
	}
	return dir, nil
}

// liveDir is where the runners of the database at path put running exec
// tasks' output on this host, for pcd logs --follow: a directory of the
// user's runtime directory that no other user can write in.
func liveDir(path string) (string, error) {
	if !postgres.IsURL(path) {
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
	}
	return rundir.Sub(rundir.Key(path) + ".live")
}
