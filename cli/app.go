// Package cli is pcd's command line: flags, input files and output. Each
// command is a function that returns an error; only main.go turns an error
// into an exit code.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/internal/buildinfo"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/postgres"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// Errors that main.go maps to exit codes.
var (
	// ErrUsage marks a bad command line or bad input file.
	ErrUsage = errors.New("usage")
	// ErrJobFailed means the job finished with failed or cancelled tasks.
	ErrJobFailed = errors.New("job failed")
	// ErrOutputCut means the job succeeded, but some of its tasks' output
	// could not be printed whole (no spool could be written): pcd run
	// exits 1, as for a failed job.
	ErrOutputCut = errors.New("output cut")
	// ErrOutputClosed means pcd run stopped because its stdout was closed
	// (pcd run | head): exit 141, as for SIGPIPE.
	ErrOutputClosed = errors.New("stdout closed")
	// ErrListen means --http cannot listen on its address: in use, not
	// allowed, or not an address of this host.
	ErrListen = errors.New("cannot listen")
)

// jobFailed reports a finished job that did not succeed.
type jobFailed struct{ job store.Job }

func (e jobFailed) Error() string {
	j := e.job
	how := string(j.State)
	if j.Halting != "" {
		how, _, _ = strings.Cut(j.Halting, ":") // halted (--halt now,fail=1)
	}
	return fmt.Sprintf("job %s %s: %d of %s failed, %d cancelled", j.UUID, how, j.Failed, plural(j.Total, "task"), j.Cancelled)
}
func (e jobFailed) Is(target error) bool { return target == ErrJobFailed }

// Env is what a command reads and writes besides its flags.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Registry holds the task kinds; library users add their own.
	Registry *engine.Registry
	// Reexec, if set, is called first by the commands that run tasks
	// (daemon, run). It may run the command again in a child where its
	// commands can be contained (process.RunInUserNamespace): with ran
	// true, the child has ended, and the command exits with its code.
	// pcd's main sets it.
	Reexec func() (code int, ran bool)

	command []string // the arguments after --, for run and submit
}

func init() {
	// -v is --verbose on the commands that print output; the version is
	// -V, as in parallel and pueue.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Aliases: []string{"V"}, Usage: "print the version"}
}

// Run runs the pcd command line.
func Run(ctx context.Context, args []string, env Env) error {
	// pcd submit -- CMD ARGS: everything after the first -- is the command.
	for i, a := range args {
		if a == "--" && i > 1 {
			env.command = append([]string{}, args[i+1:]...)
			args = args[:i]
			break
		}
	}
	args = joinedShortFlags(args)
	app := App(ctx, env)
	if len(args) > 1 && args[len(args)-1] == completionFlag {
		return app.RunContext(ctx, args) // a shell asks what to complete
	}
	// An unknown command, or help for one, is the user's mistake (exit
	// 2), said in one line; urfave/cli returns it with no code of ours.
	if name, ok := unknownCommand(app, args); ok {
		return usageError("unknown command %q: see pcd help", name)
	}
	return app.RunContext(ctx, flagsFirst(app, args))
}

// App is pcd's command line as urfave/cli's App: its commands and flags,
// for Run, and for the test that docs/commands.md documents every one.
func App(_ context.Context, env Env) *cli.App {
	if env.Registry == nil {
		env.Registry = engine.NewRegistry()
	}
	return &cli.App{
		Metadata:             map[string]any{registryKey: env.Registry},
		Name:                 "pcd",
		Usage:                "a durable producer-consumer job runner",
		Writer:               env.Stdout,
		ErrWriter:            env.Stderr,
		Version:              Version(),
		EnableBashCompletion: true,
		Flags:                commonFlags(),
		Commands: withJobCompletion(withCommonFlags(
			runCommand(env),
			daemonCommand(env),
			submitCommand(env),
			watchCommand(env),
			jobsCommand(env),
			statusCommand(env),
			tasksCommand(env),
			cancelCommand(env),
			retryCommand(env),
			killCommand(env),
			pauseCommand(env),
			resumeCommand(env),
			groupCommand(env),
			logsCommand(env),
			callbacksCommand(env),
			pruneCommand(env),
			serveCommand(env),
			benchCommand(env),
			completionCommand(env),
		)),
		// Errors are returned to main.go, which prints them once.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   onUsageError,
	}
}

// unknownCommand finds the first argument that names a command, and for
// "help NAME" the command asked about, and says whether it is unknown.
// Flags before the command (pcd --db x jobs) are skipped.
func unknownCommand(app *cli.App, args []string) (string, bool) {
	rest := args[1:]
	for len(rest) > 0 && strings.HasPrefix(rest[0], "-") {
		if !strings.Contains(rest[0], "=") && takesValue(app.Flags, rest[0]) {
			rest = rest[1:]
		}
		rest = rest[1:]
	}
	if len(rest) == 0 {
		return "", false
	}
	name := rest[0]
	if (name == "help" || name == "h") && len(rest) > 1 {
		name = rest[1]
	}
	if name == "help" || name == "h" || app.Command(name) != nil {
		return "", false
	}
	return name, true
}

// flagsFirst moves a command's flags ahead of its positional arguments,
// so that `pcd status ID --json` means `pcd status --json ID`: urfave/cli
// stops reading flags at the first argument. A lone "-" (stdin) is an
// argument, and the arguments after -- were taken off before.
func flagsFirst(app *cli.App, args []string) []string {
	i := 1
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-" {
		if !strings.Contains(args[i], "=") && takesValue(app.Flags, args[i]) {
			i++
		}
		i++
	}
	if i >= len(args) {
		return args
	}
	cmd := app.Command(args[i])
	for cmd != nil && len(cmd.Subcommands) > 0 && i+1 < len(args) {
		sub := cmd.Command(args[i+1])
		if sub == nil {
			break
		}
		cmd, i = sub, i+1
	}
	if cmd == nil || len(cmd.Subcommands) > 0 {
		return args
	}
	out := append([]string{}, args[:i+1]...)
	var positional []string
	for rest := args[i+1:]; len(rest) > 0; rest = rest[1:] {
		a := rest[0]
		if !strings.HasPrefix(a, "-") || a == "-" {
			positional = append(positional, a)
			continue
		}
		out = append(out, a)
		if !strings.Contains(a, "=") && takesValue(cmd.Flags, a) && len(rest) > 1 {
			out = append(out, rest[1])
			rest = rest[1:]
		}
	}
	return append(out, positional...)
}

// takesValue says whether arg (-x or --x) names one of flags that takes a
// value in the next argument.
func takesValue(flags []cli.Flag, arg string) bool {
	name := strings.TrimLeft(arg, "-")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if bf, ok := f.(*cli.BoolFlag); ok && bf != nil {
				return false
			}
			return true
		}
	}
	return false
}

// Version is pcd's module version and VCS revision, from the build info.
func Version() string { return buildinfo.Version() }

// usageErr marks an error as the user's mistake without changing its text.
type usageErr struct{ err error }

func (e usageErr) Error() string        { return e.err.Error() }
func (e usageErr) Unwrap() error        { return e.err }
func (e usageErr) Is(target error) bool { return target == ErrUsage }

// commonFlags are accepted before the command and after it:
// `pcd --db x jobs` and `pcd jobs --db x` mean the same.
func commonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "db", EnvVars: []string{"PCD_DB"}, Usage: "database: a SQLite `FILE` (default: $XDG_STATE_HOME/pcd/pcd.db) or a postgres:// URL"},
		&cli.StringFlag{Name: "sync", EnvVars: []string{"PCD_SYNC"}, Value: "full", Usage: "SQLite synchronous `MODE`: full survives power loss, normal survives a process crash"},
		&cli.StringFlag{Name: "busy-timeout", EnvVars: []string{"PCD_BUSY_TIMEOUT"}, Value: "5s", Usage: "how long a write waits for another process's write lock"},
		&cli.StringFlag{Name: "lease", EnvVars: []string{"PCD_LEASE"}, Value: postgres.DefaultLease.String(), Usage: "PostgreSQL: how long a runner may go without a heartbeat before the others take its tasks over"},
		&cli.StringFlag{Name: "log-level", EnvVars: []string{"PCD_LOG_LEVEL"}, Value: "info", Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", EnvVars: []string{"PCD_LOG_FORMAT"}, Value: "text", Usage: "text or json"},
	}
}

// walWarnFlag is for the runners: when to report a WAL a reader keeps
// from being checkpointed.
func walWarnFlag() cli.Flag {
	return &cli.Int64Flag{Name: "wal-warn", EnvVars: []string{"PCD_WAL_WARN"}, Value: sqlite.DefaultWALWarn >> 20,
		Usage: "warn once when a reader keeps the WAL from being checkpointed past this many `MiB`"}
}

func withCommonFlags(cmds ...*cli.Command) []*cli.Command {
	for _, cmd := range cmds {
		cmd.Flags = append(cmd.Flags, commonFlags()...)
	}
	return cmds
}

// commonString reads a common flag from wherever the user set it: after
// the command, before it, or in the environment.
func commonString(c *cli.Context, name string) string {
	for _, ctx := range c.Lineage() {
		if ctx.Command != nil || ctx.App != nil {
			if ctx.IsSet(name) {
				return ctx.String(name)
			}
		}
	}
	return c.String(name)
}

// onUsageError returns flag errors to main.go, without a page of help.
func onUsageError(c *cli.Context, err error, _ bool) error {
	if m := invalidValue.FindStringSubmatch(err.Error()); m != nil {
		return usageErr{fmt.Errorf("%s %q: want %s", flagText(m[2]), m[1], flagFormat(c, m[2]))}
	}
	name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -")
	if !ok {
		return usageErr{err}
	}
	name = strings.TrimPrefix(name, "-")
	msg := fmt.Sprintf("unknown flag %s", flagText(name))
	if near := nearestFlag(c, name); near != "" {
		msg += "; did you mean " + flagText(near) + "?"
	}
	if c.Command != nil && c.Command.Name != "" {
		msg += fmt.Sprintf(" (pcd %s --help lists the flags)", c.Command.Name)
	}
	return usageErr{errors.New(msg)}
}

// invalidValue is Go's flag package's error for a value that does not
// parse: the value and the flag's name.
var invalidValue = regexp.MustCompile(`^invalid value "(.*)" for flag -([\w-]+): `)

// flagFormat says what a flag's value must look like, by its type.
func flagFormat(c *cli.Context, name string) string {
	var flags []cli.Flag
	if c.Command != nil {
		flags = append(flags, c.Command.Flags...)
	}
	for _, f := range append(flags, c.App.Flags...) {
		if !slices.Contains(f.Names(), name) {
			continue
		}
		switch f.(type) {
		case *cli.DurationFlag:
			return "a duration such as 90s, 5m or 1h30m"
		case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag, *cli.Uint64Flag:
			return "a whole number"
		case *cli.Float64Flag:
			return "a number"
		case *cli.BoolFlag:
			return "true or false"
		}
	}
	return "another value (pcd " + c.Command.Name + " --help says which)"
}

// flagText is a flag as it is typed: -j, --keep-order.
func flagText(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// nearestFlag is the flag of the command, or a global one, whose name is
// nearest to name, if one is near enough to be what was meant.
func nearestFlag(c *cli.Context, name string) string {
	var flags []cli.Flag
	if c.Command != nil {
		flags = append(flags, c.Command.Flags...)
	}
	flags = append(flags, c.App.Flags...)
	best, bestD := "", len(name)/2+1 // a typo, not another word
	for _, f := range flags {
		for _, n := range f.Names() {
			d := editDistance(strings.ToLower(name), strings.ToLower(n))
			if strings.HasPrefix(n, name) && len(name) >= 3 {
				d = min(d, 1) // the start of a flag's name
			}
			if d < bestD || (d == bestD && len(n) > len(best) && best != "") {
				best, bestD = n, d
			}
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// conflictErr is a request that the job's or task's state does not allow
// (exit 7), said in its own words.
type conflictErr struct{ msg string }

func (e conflictErr) Error() string        { return e.msg }
func (e conflictErr) Is(target error) bool { return target == store.ErrConflict }

// conflict formats a conflictErr.
func conflict(format string, a ...any) error { return conflictErr{fmt.Sprintf(format, a...)} }

// usageError formats an error that is the user's mistake.
func usageError(format string, a ...any) error { return usageErr{fmt.Errorf(format, a...)} }

// dbPath resolves the database file: --db or $PCD_DB, else the XDG state
// directory.
func dbPath(c *cli.Context) (string, error) {
	if p := commonString(c, "db"); p != "" {
		return p, nil
	}
	dir, err := stateDir()
	if err != nil {
		return "", fmt.Errorf("find the default database: %w; set --db or PCD_DB", err)
	}
	return filepath.Join(dir, "pcd.db"), nil
}

// stateDir is pcd's directory of state: $XDG_STATE_HOME/pcd, by default
// ~/.local/state/pcd.
func stateDir() (string, error) {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "pcd"), nil
}

// client is a command's handle on its database: the engine's Client,
// which is all a command uses, and the store under it, which Close
// closes.
type client struct {
	*engine.Client
	st store.Store
}

// Close stops the client's runner, if it has one, and closes the store.
func (c *client) Close() error { return errors.Join(c.Client.Close(), c.st.Close()) }

// joinedShortFlags splits parallel's -j8 into -j 8 (and -w8, -q100):
// Go's flags take a short flag's value as the next word only.
func joinedShortFlags(args []string) []string {
	out := args[:0:0]
	for _, a := range args {
		if len(a) > 2 && a[0] == '-' && strings.ContainsRune("jwq", rune(a[1])) && strings.Trim(a[2:], "0123456789") == "" {
			out = append(out, a[:2], a[2:])
			continue
		}
		out = append(out, a)
	}
	return out
}

// registryKey is where the app keeps Env.Registry, for the clients.
const registryKey = "registry"

// newClient makes the client of a command over st.
func newClient(c *cli.Context, st store.Store, cfg engine.RunnerConfig) *client {
	if cfg.Registry == nil {
		cfg.Registry, _ = c.App.Metadata[registryKey].(*engine.Registry)
	}
	if path, err := dbPath(c); err == nil && cfg.SpoolDir == "" {
		cfg.SpoolDir, _ = spoolDir(path)
	}
	return &client{Client: engine.NewClient(st, cfg), st: st}
}

// openReader opens the database named by the global flags for a command
// that only reads: it never takes the write lock, so it works while a
// long write (a big submit) runs.
func openReader(c *cli.Context) (*client, error) {
	st, err := open(c, sqlite.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	return newClient(c, st, engine.RunnerConfig{}), nil
}

// openDB opens the database named by the global flags.
func openDB(c *cli.Context, mustExist bool) (*client, error) {
	st, err := open(c, sqlite.Options{MustExist: mustExist})
	if err != nil {
		return nil, err
	}
	return newClient(c, st, engine.RunnerConfig{}), nil
}

// openBrief opens the database for a short command that writes little,
// such as the submit of a small job (sqlite.Options.Brief).
func openBrief(c *cli.Context) (*client, error) {
	st, err := open(c, sqlite.Options{Brief: true})
	if err != nil {
		return nil, err
	}
	return newClient(c, st, engine.RunnerConfig{}), nil
}

// openRunner opens the database for a runner, which reports a reader that
// keeps the WAL growing.
func openRunner(c *cli.Context, log *slog.Logger) (store.Store, error) {
	warn := c.Int64("wal-warn")
	if warn < 1 {
		return nil, usageError("--wal-warn must be at least 1 MiB, got %d", warn)
	}
	return open(c, sqlite.Options{WALWarn: warn << 20, OnWALWarn: func(walBytes int64) {
		log.Warn("a reader keeps the WAL from being checkpointed: it grows until the reader lets go (an open transaction in another process?)",
			"wal_mib", walBytes>>20)
	}})
}

func open(c *cli.Context, opts sqlite.Options) (store.Store, error) {
	sync, err := sqlite.ParseSync(commonString(c, "sync"))
	if err != nil {
		return nil, usageError("%w", err)
	}
	busy, err := time.ParseDuration(commonString(c, "busy-timeout"))
	if err != nil || busy <= 0 {
		return nil, usageError("--busy-timeout must be a positive duration such as 5s, got %q", commonString(c, "busy-timeout"))
	}
	path, err := dbPath(c)
	if err != nil {
		return nil, err
	}
	if postgres.IsURL(path) {
		lease, err := time.ParseDuration(commonString(c, "lease"))
		if err != nil || lease < time.Second {
			return nil, usageError("--lease must be a duration of at least 1s, such as 30s, got %q", commonString(c, "lease"))
		}
		return postgres.Open(c.Context, path, postgres.Options{MustExist: opts.MustExist || opts.ReadOnly, Lease: lease})
	}
	opts.Sync, opts.BusyTimeout = sync, busy
	return sqlite.Open(c.Context, path, opts)
}

// newLogger builds the logger from --log-level and --log-format: tint on a
// terminal, JSON for machines.
func newLogger(c *cli.Context, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(commonString(c, "log-level"))); err != nil {
		return nil, usageError("--log-level: %w", err)
	}
	switch strings.ToLower(commonString(c, "log-format")) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), nil
	case "text", "":
		return slog.New(tint.NewHandler(w, &tint.Options{Level: level, NoColor: !isTerminal(w)})), nil
	}
	return nil, usageError("--log-format must be text or json, got %q", commonString(c, "log-format"))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

// reexec runs the command again where its commands can be contained,
// if env says how: ran true means the child has ended, with err its
// exit status.
func reexec(env Env) (ran bool, err error) {
	if env.Reexec == nil {
		return false, nil
	}
	code, ran := env.Reexec()
	if !ran {
		return false, nil
	}
	if code == 0 {
		return true, nil
	}
	return true, ExitStatus(code)
}
