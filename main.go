// Command pcd is a durable producer-consumer job runner.
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/pcd-dev/pcd/cli"
	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/engine/process"
	"github.com/pcd-dev/pcd/store"
)

// Exit codes. main is the only place that chooses one.
const (
	exitOK        = 0
	exitJobFailed = 1  // the job finished, and some task failed or was cancelled
	exitUsage     = 2  // bad flags, arguments or input file; nothing was changed
	exitDatabase  = 3  // the database is not usable: not SQLite, corrupt, newer schema, missing
	exitLocked    = 4  // another process is the runner of this database
	exitNotFound  = 5  // no such job
	exitAmbiguous = 6  // a job id prefix matches more than one job
	exitConflict  = 7  // the job's state does not allow it, such as cancelling a finished job
	exitNoDB      = 8  // the database file does not exist
	exitListen    = 9  // --http cannot listen on its address: in use, or not allowed
	exitSoftware  = 70 // anything else (EX_SOFTWARE)
	exitTempFail  = 75 // the disk is full or the database stayed locked: try again (EX_TEMPFAIL)
	exitStopped   = 130
	exitPipe      = 141 // pcd run's stdout was closed: 128 + SIGPIPE, as the shell says
)

// softMemoryLimit is the Go runtime's soft memory limit that pcd sets
// unless GOMEMLIMIT does: a daemon of 25 workers on a 1M-task job holds
// about 21 MiB live, and with the default GOGC its heap grew to twice that
// (peak RSS 65 MiB on PostgreSQL, over the 64 MiB budget); at 40 MiB the
// collector runs a little more often as the heap nears it (peak RSS 53
// MiB, no measurable change in rate). The limit is soft: a heap that needs
// more gets it, and the collector's CPU is capped.
const softMemoryLimit = 40 << 20

// memoryLimit is the limit to set for the GOMEMLIMIT value env, or -1 to
// leave the runtime's own.
func memoryLimit(env string) int64 {
	if env != "" {
		return -1
	}
	return softMemoryLimit
}

func main() {
	// A runner on PostgreSQL starts this binary again as its fence.
	if process.RunFence() {
		return
	}
	if limit := memoryLimit(os.Getenv("GOMEMLIMIT")); limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	stop := profile(os.Getenv("PCD_CPUPROFILE"))
	err := cli.Run(context.Background(), os.Args, cli.Env{
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		// A runner that may not make a PID namespace runs in a user
		// namespace of its own, where it may.
		Reexec: process.RunInUserNamespace,
	})
	if line := ""; err != nil {
		if line = cli.ErrorLine(err); line != "" {
			fmt.Fprintln(os.Stderr, "pcd:", line)
		}
	}
	stop()
	os.Exit(exitCode(err))
}

// profile writes a CPU profile of the whole process to path, if set, for
// go tool pprof; %p in path is the pid. The returned func ends it.
func profile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	// %p is the pid: each process of a benchmark gets its own file.
	f, err := os.Create(strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid())))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pcd: PCD_CPUPROFILE:", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

func exitCode(err error) int {
	var child cli.ExitStatus
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &child):
		return int(child)
	case errors.Is(err, cli.ErrJobFailed), errors.Is(err, cli.ErrOutputCut):
		return exitJobFailed
	case errors.Is(err, cli.ErrUsage), errors.Is(err, engine.ErrBadJob):
		return exitUsage
	case errors.Is(err, store.ErrNoDatabase):
		return exitNoDB
	case errors.Is(err, store.ErrNotDatabase), errors.Is(err, store.ErrNotPCD), errors.Is(err, store.ErrCorrupt),
		errors.Is(err, store.ErrTooNew), errors.Is(err, store.ErrUnsafe), errors.Is(err, store.ErrBadPath),
		errors.Is(err, store.ErrReadOnly), errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS),
		errors.Is(err, store.ErrNeedsMigration):
		return exitDatabase
	case errors.Is(err, store.ErrLocked):
		return exitLocked
	case errors.Is(err, store.ErrNotFound):
		return exitNotFound
	case errors.Is(err, store.ErrAmbiguous):
		return exitAmbiguous
	case errors.Is(err, store.ErrConflict), errors.Is(err, engine.ErrUnknownKind):
		return exitConflict
	case errors.Is(err, store.ErrDiskFull), store.Temporary(err):
		return exitTempFail
	case errors.Is(err, cli.ErrListen):
		return exitListen
	case errors.Is(err, cli.ErrOutputClosed):
		return exitPipe
	case errors.Is(err, engine.ErrStopped), errors.Is(err, cli.ErrInterrupted):
		return exitStopped
	}
	return exitSoftware
}
