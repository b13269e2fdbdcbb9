package bench

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// The workloads of bounded resources: a big submit beside other writers
// and readers, retries waiting in the database, an oversized line, the WAL
// behind a long reader, and pruned history.

// bigSubmit: a submit of n tasks from a file while another process writes
// (this one: a one-task job, again and again, through the store, so that
// its time is the wait for the write lock and its own commit) and others
// read (pcd jobs, each a whole process). The rows are the longest write
// and the longest pcd jobs, per run.
func (b *bench) bigSubmit(n int) ([]benchRow, error) {
	writer := benchRow{Workload: fmt.Sprintf("longest one-task write during a %d-task submit", n), Unit: "ms", Target: "about one chunk (200 ms)"}
	reader := benchRow{Workload: fmt.Sprintf("longest pcd jobs during a %d-task submit", n), Unit: "ms", Target: "report"}
	rows := func() []benchRow { return []benchRow{writer, reader} }
	file, err := b.jobFile("big-submit.json", n, `{"kind":"noop"}`)
	if err != nil {
		return rows(), err
	}
	one, err := b.jobFile("one-submit.json", 1, `{"kind":"noop"}`)
	if err != nil {
		return rows(), err
	}
	ctx := context.Background()
	for range b.runs {
		db := b.db()
		if _, _, err := b.pcd(ctx, db, nil, "submit", one); err != nil {
			return rows(), err
		}
		big := dieWithBench(exec.Command(b.self, "submit", file))
		big.Env = append(os.Environ(), "PCD_DB="+db, "PCD_LOG_LEVEL=warn")
		if err := big.Start(); err != nil {
			return rows(), err
		}
		done := make(chan error, 1)
		go func() { done <- big.Wait() }()
		var longW, longR time.Duration
		l := &loops{stop: make(chan struct{})}
		s, err := sqlite.Open(ctx, db, sqlite.Options{MustExist: true})
		if err != nil {
			big.Process.Kill()
			<-done
			return rows(), err
		}
		nj := store.NewJob{Workers: 1, QueueSize: 1, Tasks: []store.NewTask{{Kind: "noop", Payload: []byte("null")}}}
		l.run(&longW, 5*time.Millisecond, func() error {
			_, err := s.CreateJob(ctx, nj)
			return err
		})
		l.run(&longR, 0, func() error {
			_, _, err := b.pcd(ctx, db, nil, "jobs", "--json")
			return err
		})
		err = <-done
		loopErr := l.end()
		s.Close()
		if err != nil {
			return rows(), fmt.Errorf("the big submit: %w", err)
		}
		if loopErr != nil {
			return rows(), fmt.Errorf("beside the big submit: %w", loopErr)
		}
		writer.Values = append(writer.Values, ms(longW))
		reader.Values = append(reader.Values, ms(longR))
		writer.RSSMiB = max(writer.RSSMiB, maxRSS(big.ProcessState))
		os.Remove(db)
	}
	return rows(), nil
}

// loops run operations again and again beside a workload, each keeping
// its longest time, until end, which returns the first error.
type loops struct {
	mu   sync.Mutex
	wg   sync.WaitGroup
	err  error
	stop chan struct{}
}

// run runs op again and again, rest apart, keeping its longest time.
func (l *loops) run(longest *time.Duration, rest time.Duration, op func() error) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			t0 := time.Now()
			err := op()
			took := time.Since(t0)
			l.mu.Lock()
			*longest = max(*longest, took)
			if err != nil && l.err == nil {
				l.err = err
			}
			l.mu.Unlock()
			time.Sleep(rest)
		}
	}()
}

// end stops the loops, waits for them, and returns the first error.
func (l *loops) end() error {
	close(l.stop)
	l.wg.Wait()
	return l.err
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// waitingRetries: n tasks that fail once and wait an hour to retry; the
// daemon's peak RSS once every one of them waits.
func (b *bench) waitingRetries(n int) (benchRow, error) {
	row := benchRow{Workload: fmt.Sprintf("daemon with %d tasks waiting to retry", n), Unit: "MiB (peak RSS)", Target: "<= 64"}
	path := b.dir + "/retries.json"
	f, err := os.Create(path)
	if err != nil {
		return row, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(`{"max_attempts": 2, "backoff": {"base": "1h", "cap": "1h"}, "tasks": [`)
	for i := range n {
		if i > 0 {
			w.WriteByte(',')
		}
		w.WriteString(`{"kind":"fail","payload":{"error":"x"}}`)
	}
	w.WriteString("]}\n")
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		return row, err
	}
	for range b.runs {
		db := b.db()
		if _, _, err := b.pcd(context.Background(), db, nil, "submit", path); err != nil {
			return row, err
		}
		d, err := b.daemon(db)
		if err != nil {
			return row, err
		}
		err = b.until(db, 10*time.Minute, "SELECT count(*) = ? FROM tasks WHERE not_before IS NOT NULL", n)
		rss := stop(d)
		if err != nil {
			return row, fmt.Errorf("waiting retries: %w", err)
		}
		row.Values = append(row.Values, rss)
		os.Remove(db)
	}
	return row, nil
}

// until polls a read-only query, whose one value is a boolean, until it
// is true.
func (b *bench) until(db string, limit time.Duration, q string, args ...any) error {
	conn, err := sql.Open("sqlite", "file:"+db+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(limit)
	for {
		var ok bool
		if err := conn.QueryRow(q, args...).Scan(&ok); err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not so after %v: %s", limit, q)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// oversizedLine: pcd submit - reads one NDJSON line of size bytes, beside
// a daemon; the submitter's peak RSS (the row) and the daemon's (the note).
func (b *bench) oversizedLine(size int) (benchRow, error) {
	row := benchRow{Workload: fmt.Sprintf("pcd submit - of one %d MB line (refused, exit 2)", size>>20), Unit: "MiB (peak RSS)", Target: "bounded (--max-payload 1 MiB)"}
	var daemonRSS float64
	for range b.runs {
		db := b.db()
		d, err := b.daemon(db)
		if err != nil {
			return row, err
		}
		cmd := dieWithBench(exec.Command(b.self, "submit", "-"))
		cmd.Env = append(os.Environ(), "PCD_DB="+db, "PCD_LOG_LEVEL=warn")
		in, err := cmd.StdinPipe()
		if err != nil {
			stop(d)
			return row, err
		}
		if err := cmd.Start(); err != nil {
			stop(d)
			return row, err
		}
		go func() {
			defer in.Close()
			w := bufio.NewWriterSize(in, 1<<20)
			w.WriteString(`{"kind":"noop","payload":"`)
			chunk := strings.Repeat("a", 1<<20)
			for range size >> 20 {
				if _, err := w.WriteString(chunk); err != nil {
					return // the submit refused the line and exited
				}
			}
			w.WriteString("\"}\n")
			w.Flush()
		}()
		err = cmd.Wait()
		daemonRSS = max(daemonRSS, stop(d))
		if cmd.ProcessState.ExitCode() != 2 {
			return row, fmt.Errorf("pcd submit - of an oversized line: %v, want exit 2", err)
		}
		row.Values = append(row.Values, maxRSS(cmd.ProcessState))
		os.Remove(db)
	}
	row.Note = fmt.Sprintf("daemon peak RSS %.1f MiB", daemonRSS)
	return row, nil
}

// walAfterReader: a reader holds a read transaction open while a daemon
// runs an n-task job, then lets go; the WAL's size a few seconds later.
func (b *bench) walAfterReader(n int) (benchRow, error) {
	row := benchRow{Workload: fmt.Sprintf("WAL after a long reader lets go, %d-task job", n), Unit: "MiB", Target: "bounded (journal_size_limit 64 MiB)"}
	file, err := b.jobFile("wal.json", n, `{"kind":"noop"}`)
	if err != nil {
		return row, err
	}
	var peak float64
	for range b.runs {
		db := b.db()
		if _, _, err := b.pcd(context.Background(), db, nil, "submit", file); err != nil {
			return row, err
		}
		reader, err := sql.Open("sqlite", "file:"+db+"?mode=ro")
		if err != nil {
			return row, err
		}
		tx, err := reader.Begin()
		if err == nil {
			var n int
			err = tx.QueryRow("SELECT count(*) FROM jobs").Scan(&n)
		}
		if err != nil {
			reader.Close()
			return row, err
		}
		d, err := b.daemon(db)
		if err != nil {
			reader.Close()
			return row, err
		}
		err = b.until(db, 10*time.Minute, "SELECT count(*) = 0 FROM jobs WHERE finished_at IS NULL")
		peak = max(peak, fileMiB(db+"-wal"))
		tx.Rollback()
		reader.Close()
		if err != nil {
			stop(d)
			return row, err
		}
		time.Sleep(3 * time.Second) // the daemon's idle checkpoint
		row.Values = append(row.Values, fileMiB(db+"-wal"))
		stop(d)
		os.Remove(db)
	}
	row.Note = fmt.Sprintf("%.0f MiB while the reader held it", peak)
	return row, nil
}

func fileMiB(path string) float64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return float64(fi.Size()) / (1 << 20)
}

// prune: the file's size after pcd prune removed an n-task job, and
// before (the note).
func (b *bench) prune(n int) (benchRow, error) {
	row := benchRow{Workload: fmt.Sprintf("file after pcd prune of a finished %d-task job", n), Unit: "MiB", Target: "report"}
	file, err := b.jobFile("prune.json", n, `{"kind":"noop"}`)
	if err != nil {
		return row, err
	}
	var before []float64
	for range b.runs {
		db := b.db()
		if _, _, err := b.pcd(context.Background(), db, nil, "run", "--quiet", file); err != nil {
			return row, err
		}
		before = append(before, fileMiB(db)+fileMiB(db+"-wal"))
		if _, _, err := b.pcd(context.Background(), db, nil, "prune", "--older-than", "0s"); err != nil {
			return row, err
		}
		row.Values = append(row.Values, fileMiB(db)+fileMiB(db+"-wal"))
		os.Remove(db)
	}
	slices.Sort(before)
	row.Note = fmt.Sprintf("%.1f MiB before (database and WAL)", before[len(before)/2])
	return row, nil
}
