package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/pcd-dev/pcd/engine"
)

// joblog writes pcd run --joblog FILE: a line for each finished task, in
// the order they finish, in GNU parallel's --joblog format, so that the
// tools that read parallel's logs read pcd's:
//
//	Seq Host Starttime JobRuntime Send Receive Exitval Signal Command
//
// separated by tabs. Host is ":" (this host), Send 0, Receive the bytes
// of stdout, and Command the task's command line.
type joblog struct {
	ctx context.Context
	db  *client
	f   *os.File
	w   *bufio.Writer
	err error
}

func openJoblog(ctx context.Context, path string, db *client) (*joblog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, usageError("--joblog: %w", err)
	}
	l := &joblog{ctx: ctx, db: db, f: f, w: bufio.NewWriter(f)}
	_, l.err = l.w.WriteString("Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n")
	return l, nil
}

// task writes the line of a finished task, and flushes it: a reader may
// follow the file as the job runs, as with parallel.
func (l *joblog) task(ev engine.Event) {
	t := ev.Task
	if l == nil || t == nil || l.err != nil {
		return
	}
	command := t.Kind
	if row, err := l.db.TaskNumber(l.ctx, ev.JobID, t.Number); err == nil {
		command = oneLine(commandLine(row.Kind, row.Payload))
	}
	exit, signal, received := 0, 0, int64(0)
	if t.State != "succeeded" {
		exit = 1
	}
	var res engine.ExecResult
	if t.Kind == "exec" && json.Unmarshal(t.Result, &res) == nil {
		exit, signal, received = res.ExitCode, res.Signal, int64(len(res.Stdout))
		if res.StdoutSpooled {
			if f, err := engine.OpenSpool(l.db.SpoolDir(), ev.JobID, t.ID, "stdout"); err == nil {
				if fi, err := f.Stat(); err == nil {
					received = fi.Size()
				}
				f.Close()
			}
		}
	}
	runtime := t.TimeSecs
	start := float64(time.Now().UnixNano())/1e9 - runtime
	_, l.err = fmt.Fprintf(l.w, "%d\t:\t%.3f\t%10.3f\t0\t%d\t%d\t%d\t%s\n", t.Number, start, runtime, received, exit, signal, command)
	if l.err == nil {
		l.err = l.w.Flush()
	}
}

// close closes the file, with the first error it met.
func (l *joblog) close() error {
	if l == nil {
		return nil
	}
	if err := l.w.Flush(); l.err == nil {
		l.err = err
	}
	if err := l.f.Close(); l.err == nil {
		l.err = err
	}
	if l.err != nil {
		return fmt.Errorf("--joblog: %w", l.err)
	}
	return nil
}
