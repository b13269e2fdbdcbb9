package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/pcd-dev/pcd/engine/jobfile"
	"github.com/pcd-dev/pcd/store"
)

// ErrNoTasks is returned when a stream holds no task.
var ErrNoTasks = errors.New("no tasks")

var errDuplicate = errors.New("duplicate key")

// StreamOptions configure a streamed submit (Client.SubmitStream).
type StreamOptions struct {
	// Job holds the job's settings, as a job file gives them: name,
	// workers, queue size, retries (the defaults of every task), sinks,
	// schedule, Dir and Key. Its Tasks are ignored: they come from the
	// stream.
	Job      JobFile
	Registry *Registry
	// MaxBatch caps the tasks committed in one transaction; default 1000.
	MaxBatch int
	// OnCommit runs after each batch commits, with the job so far.
	OnCommit func(store.Job)
}

// streamJob reads NDJSON tasks, one {"kind": ..., "payload": ...} per line,
// and commits them in batches while it reads, so a runner can start on the
// first tasks before the input ends. A batch is committed when it is full
// or when reading on would block, so a slow producer's tasks are not held
// back. The job is created with the first batch and sealed at EOF.
//
// A malformed line stops the stream: its batch and everything after it are
// not committed, the error names the line, and a job that already holds
// earlier batches is sealed with them. With no job created, the returned
// job is zero.
func streamJob(ctx context.Context, db store.Store, r io.Reader, nj store.NewJob, opts StreamOptions) (store.Job, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1000
	}
	sj := &streamedJob{ctx: ctx, db: db, nj: nj, opts: opts}
	// Lines are read on a goroutine of their own, so that a cancelled ctx
	// (Ctrl-C) seals the job at once even while a read blocks. That
	// goroutine ends when its read returns.
	lines := make(chan readLine, 64)
	stop := make(chan struct{})
	defer close(stop)
	maxLine := opts.Registry.MaxPayload() + jobfile.LineSlack
	if opts.Registry.MaxPayload() <= 0 {
		maxLine = math.MaxInt
	}
	go readLines(bufio.NewReaderSize(r, 64<<10), maxLine, lines, stop)
	for {
		var next readLine
		select {
		case next = <-lines:
		case <-time.After(streamIdle):
			// The input has paused: commit what we have, so that its
			// tasks run while the producer thinks.
			if err := sj.commit(); err != nil {
				return sj.fail(err)
			}
			select {
			case next = <-lines:
			case <-ctx.Done():
				return sj.fail(context.Cause(ctx))
			}
		case <-ctx.Done():
			return sj.fail(context.Cause(ctx))
		}
		if len(sj.batch) >= opts.MaxBatch {
			if err := sj.commit(); err != nil {
				return sj.fail(err)
			}
		}
		if err := sj.take(next, maxLine); err != nil {
			return sj.fail(err)
		}
		if errors.Is(next.err, io.EOF) {
			break
		}
		if next.err != nil {
			return sj.fail(fmt.Errorf("read tasks: %w", next.err))
		}
		if err := ctx.Err(); err != nil {
			return sj.fail(context.Cause(ctx))
		}
	}
	if err := sj.commit(); err != nil {
		return sj.fail(err)
	}
	job := sj.job
	if job.ID == 0 {
		return store.Job{}, badJob("%w: the input held no task lines", ErrNoTasks)
	}
	if err := db.SealJob(ctx, job.ID); err != nil {
		return job, err
	}
	job.Sealed = true
	return job, nil
}

// streamIdle is how long the input of a streamed submit may pause before the
// tasks read so far are committed: long enough that input that is all
// there (a file, a here-string) is read whole first, even on a loaded
// machine, so that a bad line in it leaves nothing written.
const streamIdle = 20 * time.Millisecond

// streamedJob is the job a streamed submit writes: created open with its first
// batch, appended to batch by batch, and sealed at the end or on failure.
type streamedJob struct {
	ctx   context.Context
	db    store.Store
	nj    store.NewJob // the job to create with the first batch
	opts  StreamOptions
	job   store.Job
	batch []store.NewTask
	line  int // lines read
}

// take parses one line read into the batch; a bad or oversized line is
// an ErrBadJob error that says what the job keeps.
func (sj *streamedJob) take(next readLine, maxLine int) error {
	if next.tooLong {
		sj.line++
		return sj.badLine(fmt.Errorf("longer than %d bytes: %w (the limit is %d bytes of payload, --max-payload)",
			maxLine, ErrPayloadTooLarge, sj.opts.Registry.MaxPayload()))
	}
	if len(next.raw) == 0 {
		return nil
	}
	sj.line++
	t, ok, err := jobfile.ParseTask(next.raw, sj.opts.Registry, sj.opts.Job.TaskDefaults())
	if err != nil {
		return sj.badLine(err)
	}
	if ok {
		sj.batch = append(sj.batch, t)
	}
	return nil
}

func (sj *streamedJob) badLine(err error) error {
	err = badJob("line %d: %w", sj.line, err)
	if sj.job.ID != 0 {
		err = fmt.Errorf("%w (job %s keeps the %d %s committed before that line's batch, and is sealed)", err, sj.job.UUID, sj.job.Total, pluralTasks(sj.job.Total))
	}
	return err
}

// commit writes the batch: the first creates the job, open; the others
// append to it.
func (sj *streamedJob) commit() error {
	if len(sj.batch) == 0 {
		return nil
	}
	if sj.job.ID == 0 {
		nj := sj.nj
		nj.Open, nj.Tasks = true, sj.batch
		j, err := sj.db.CreateJob(sj.ctx, nj)
		if errors.Is(err, store.ErrDuplicate) {
			sj.job = j
			return errDuplicate
		}
		if err != nil {
			return err
		}
		sj.job = j
	} else {
		if err := sj.db.AppendTasks(sj.ctx, sj.job.ID, sj.batch); err != nil {
			return err
		}
		sj.job.Total += int64(len(sj.batch))
	}
	sj.batch = sj.batch[:0:0]
	if sj.opts.OnCommit != nil {
		sj.opts.OnCommit(sj.job)
	}
	return nil
}

// fail seals what was written and returns err; a keyed job that exists
// already is no failure.
func (sj *streamedJob) fail(err error) (store.Job, error) {
	if errors.Is(err, errDuplicate) {
		return sj.job, nil // idempotent: the keyed job exists; leave it as it is
	}
	if sj.job.ID != 0 {
		if sealErr := sj.db.SealJob(context.WithoutCancel(sj.ctx), sj.job.ID); sealErr != nil {
			return sj.job, errors.Join(err, sealErr)
		}
		sj.job.Sealed = true
	}
	return sj.job, err
}

// readLine is one line read, or the error that ended reading. A line
// longer than the limit is not kept: tooLong says so, and raw is empty.
type readLine struct {
	raw     []byte
	tooLong bool
	err     error
}

// readLines sends each line of in, then the error that ends it (io.EOF at
// the end), until stop is closed. A line longer than max bytes is read
// through to its end and dropped, never held whole.
func readLines(in *bufio.Reader, max int, lines chan<- readLine, stop <-chan struct{}) {
	for {
		var l readLine
		for {
			chunk, err := in.ReadSlice('\n')
			if !l.tooLong {
				if len(l.raw)+len(chunk) > max {
					l.raw, l.tooLong = nil, true
				} else {
					l.raw = append(l.raw, chunk...)
				}
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			l.err = err
			break
		}
		select {
		case lines <- l:
		case <-stop:
			return
		}
		if l.err != nil {
			return
		}
	}
}
