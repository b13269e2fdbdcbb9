// Package storetest is the conformance suite of store.Store: the
// invariants every store keeps, checked through the interface alone, with
// no SQL. Each store's tests call Run with a function that opens a fresh,
// empty store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// Run runs every conformance test, each on a store of its own from open.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"CreateJobWritesEveryTask", createJobWritesEveryTask},
		{"FailedCreateWritesNothing", failedCreateWritesNothing},
		{"KeyMakesSubmitIdempotent", keyMakesSubmitIdempotent},
		{"PendingTasksPageBySeq", pendingTasksPageBySeq},
		{"OneResultPerTask", oneResultPerTask},
		{"LastResultFinishesTheJobOnce", lastResultFinishesTheJobOnce},
		{"FinishJobWaitsForEveryTask", finishJobWaitsForEveryTask},
		{"CallbacksComeInIDOrder", callbacksComeInIDOrder},
		{"MessagesReadBackAsWritten", messagesReadBackAsWritten},
		{"CancelFinishesEveryTask", cancelFinishesEveryTask},
		{"AFailureOutranksACancel", aFailureOutranksACancel}, // a failure and cancels; a halt after a failure
		{"HaltKeepsTheFirstReason", haltKeepsTheFirstReason},
		{"RetryOpensARound", retryOpensARound},
		{"RecoverCountsInterruptions", recoverCountsInterruptions},
		{"WaitingTasksAreDueLater", waitingTasksAreDueLater},
		{"ReleasedCursor", releasedCursor},
		{"OpenJobsAndSealing", openJobsAndSealing},
		{"CountsOfJobsAndCallbacks", countsOfJobsAndCallbacks},
		{"RunnableJobsFollowControl", runnableJobsFollowControl},
		{"ThroughputAddsUp", throughputAddsUp},
		{"ListJobsFilters", listJobsFilters},
		{"TasksInStatePages", tasksInStatePages},
		{"KindsWaitForARunnerThatKnowsThem", kindsWaitForARunnerThatKnowsThem},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			tc.fn(t, s)
		})
	}
}

var ctx = context.Background()

func newJob(t *testing.T, s store.Store, n int) store.Job {
	t.Helper()
	nj := store.NewJob{Name: "conformance", Workers: 2, QueueSize: 4}
	for range n {
		nj.Tasks = append(nj.Tasks, store.NewTask{Kind: "noop", Payload: []byte("null")})
	}
	job, err := s.CreateJob(ctx, nj)
	if err != nil {
		t.Fatalf("create job: %v", err)
	}
	return job
}

func result(seq int64, state store.State) store.Result {
	now := time.Now()
	return store.Result{Seq: seq, State: state, Attempt: 1, Time: time.Millisecond, StartedAt: now, FinishedAt: now,
		Message: fmt.Appendf(nil, `{"event":"task","number":%d,"state":%q}`, seq, state)}
}

func jobMessage(j store.Job) ([]byte, error) {
	return fmt.Appendf(nil, `{"event":"job","outcome":%q}`, j.State), nil
}

func taskMessage(t store.Task) ([]byte, error) {
	return fmt.Appendf(nil, `{"event":"task","number":%d,"state":"cancelled"}`, t.Seq), nil
}

func tasks(t *testing.T, s store.Store, jobID int64) []store.TaskRow {
	t.Helper()
	rows, err := s.Tasks(ctx, jobID)
	if err != nil {
		t.Fatalf("tasks: %v", err)
	}
	return rows
}

func job(t *testing.T, s store.Store, id int64) store.Job {
	t.Helper()
	j, err := s.Job(ctx, id)
	if err != nil {
		t.Fatalf("job: %v", err)
	}
	return j
}

func complete(t *testing.T, s store.Store, b store.Batch) store.Committed {
	t.Helper()
	c, err := s.CompleteTasks(ctx, b)
	if err != nil {
		t.Fatalf("complete tasks: %v", err)
	}
	return c
}

func createJobWritesEveryTask(t *testing.T, s store.Store) {
	j := newJob(t, s, 300)
	if j.Total != 300 || !j.Sealed || j.State != store.Pending || j.UUID == "" {
		t.Fatalf("job %+v: want 300 tasks, sealed, pending, with an id", j)
	}
	rows := tasks(t, s, j.ID)
	if len(rows) != 300 {
		t.Fatalf("%d tasks, want 300", len(rows))
	}
	ids := map[string]bool{}
	for i, r := range rows {
		if r.Seq != int64(i+1) || r.State != store.Pending || r.Kind != "noop" || ids[r.UUID] {
			t.Fatalf("task %d: seq %d, %s, %q, id %q (seen: %v)", i+1, r.Seq, r.State, r.Kind, r.UUID, ids[r.UUID])
		}
		ids[r.UUID] = true
	}
	found, err := s.FindJob(ctx, j.UUID[:8])
	if err != nil || found.ID != j.ID {
		t.Fatalf("find job by prefix: %v, %v", found.ID, err)
	}
	if _, err := s.FindJob(ctx, "ffffffff-0000"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("find a missing job: %v, want ErrNotFound", err)
	}
}

func failedCreateWritesNothing(t *testing.T, s store.Store) {
	broken := errors.New("the source broke")
	nj := store.NewJob{Workers: 1, QueueSize: 1, Tasks: []store.NewTask{{Kind: "noop", Payload: []byte("null")}},
		More: func(yield func([]store.NewTask, error) bool) {
			if !yield([]store.NewTask{{Kind: "noop", Payload: []byte("null")}}, nil) {
				return
			}
			yield(nil, broken)
		}}
	if _, err := s.CreateJob(ctx, nj); !errors.Is(err, broken) {
		t.Fatalf("create: %v, want the source's error", err)
	}
	jobs, err := s.ListJobs(ctx, store.JobFilter{Limit: 10})
	if err != nil || len(jobs) != 0 {
		t.Fatalf("jobs after a failed create: %d, %v", len(jobs), err)
	}
}

func keyMakesSubmitIdempotent(t *testing.T, s store.Store) {
	nj := store.NewJob{Workers: 1, QueueSize: 1, Key: "nightly", Tasks: []store.NewTask{{Kind: "noop", Payload: []byte("null")}}}
	first, err := s.CreateJob(ctx, nj)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.CreateJob(ctx, nj)
	if !errors.Is(err, store.ErrDuplicate) || again.ID != first.ID {
		t.Fatalf("second create with the key: job %d, %v; want job %d, ErrDuplicate", again.ID, err, first.ID)
	}
	if jobs, _ := s.ListJobs(ctx, store.JobFilter{Limit: 10}); len(jobs) != 1 {
		t.Fatalf("%d jobs, want 1", len(jobs))
	}
}

func pendingTasksPageBySeq(t *testing.T, s store.Store) {
	j := newJob(t, s, 25)
	complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{result(3, store.Succeeded)}})
	var got []int64
	after := int64(0)
	for {
		page, err := s.PendingTasks(ctx, j.ID, after, 10, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, task := range page {
			got = append(got, task.Seq)
		}
		after = page[len(page)-1].Seq
	}
	if len(got) != 24 || got[0] != 1 || got[2] != 4 || got[23] != 25 {
		t.Fatalf("pending seqs %v, want 1..25 without 3", got)
	}
}

func oneResultPerTask(t *testing.T, s store.Store) {
	j := newJob(t, s, 3)
	first := complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{result(2, store.Succeeded)}})
	if len(first.Callbacks) != 1 || first.Callbacks[0].ID == 0 {
		t.Fatalf("first result: callbacks %+v, want one with an id", first.Callbacks)
	}
	second := result(2, store.Failed)
	second.Error = "a second result"
	retry := result(3, store.Failed)
	retry.Message, retry.RetryAt, retry.Error = nil, time.Now().Add(time.Hour), "try again"
	again := complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{second, retry, result(1, store.Succeeded)}})
	if len(again.Callbacks) != 1 || again.Callbacks[0].TaskSeq != 1 {
		t.Fatalf("callbacks %+v: want one, for task 1 only", again.Callbacks)
	}
	if len(again.ResultIndex) != 1 || again.ResultIndex[0] != 2 {
		t.Fatalf("ResultIndex %v, want [2]: task 1's result is the batch's third", again.ResultIndex)
	}
	rows := tasks(t, s, j.ID)
	if rows[1].State != store.Succeeded || rows[1].Error != "" {
		t.Fatalf("task 2: %s %q, want its first result", rows[1].State, rows[1].Error)
	}
	if got := job(t, s, j.ID); got.Succeeded != 2 || got.Failed != 0 {
		t.Fatalf("counts %d succeeded, %d failed; want 2, 0", got.Succeeded, got.Failed)
	}
}

func lastResultFinishesTheJobOnce(t *testing.T, s store.Store) {
	j := newJob(t, s, 2)
	c := complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{result(1, store.Succeeded)}, Finish: jobMessage})
	if c.JobCallback != nil {
		t.Fatalf("the job finished with a task left")
	}
	c = complete(t, s, store.Batch{JobID: j.ID, Elapsed: 3 * time.Second, Results: []store.Result{result(2, store.Failed)}, Finish: jobMessage})
	if c.JobCallback == nil || c.Job.State != store.Failed || !c.Job.Finished() || c.Job.Elapsed != 3*time.Second {
		t.Fatalf("last result: job %+v, callback %v; want failed, finished, 3s, with its callback", c.Job, c.JobCallback)
	}
	if c.JobCallback.ID <= c.Callbacks[0].ID {
		t.Fatalf("job callback %d before the task's %d", c.JobCallback.ID, c.Callbacks[0].ID)
	}
	_, cb, err := s.FinishJob(ctx, j.ID, time.Second, store.Span{}, jobMessage)
	if err != nil || cb != nil {
		t.Fatalf("finish again: callback %v, %v; want none", cb, err)
	}
}

func finishJobWaitsForEveryTask(t *testing.T, s store.Store) {
	j := newJob(t, s, 2)
	complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{result(1, store.Succeeded)}})
	if _, _, err := s.FinishJob(ctx, j.ID, time.Second, store.Span{}, jobMessage); !errors.Is(err, store.ErrNotDone) {
		t.Fatalf("finish with a task left: %v, want ErrNotDone", err)
	}
	complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{result(2, store.Succeeded)}})
	done, cb, err := s.FinishJob(ctx, j.ID, time.Second, store.Span{}, jobMessage)
	if err != nil || cb == nil || done.State != store.Succeeded {
		t.Fatalf("finish: %v, callback %v, state %s", err, cb, done.State)
	}
	if _, cb, _ := s.FinishJob(ctx, j.ID, time.Second, store.Span{}, jobMessage); cb != nil {
		t.Fatalf("a second job callback")
	}
}

func callbacksComeInIDOrder(t *testing.T, s store.Store) {
	a, b := newJob(t, s, 2), newJob(t, s, 2)
	complete(t, s, store.Batch{JobID: b.ID, Results: []store.Result{result(2, store.Succeeded)}})
	complete(t, s, store.Batch{JobID: a.ID, Results: []store.Result{result(1, store.Succeeded), result(2, store.Succeeded)}, Finish: jobMessage})
	all, err := s.CallbacksAfter(ctx, 0, nil, 100)
	if err != nil || len(all) != 4 {
		t.Fatalf("callbacks after 0: %d, %v; want 4", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID <= all[i-1].ID {
			t.Fatalf("callback ids out of order: %d then %d", all[i-1].ID, all[i].ID)
		}
	}
	if all[3].Event != store.EventJob || all[3].JobID != a.ID {
		t.Fatalf("the last callback is %s of job %d, want job %d's job callback", all[3].Event, all[3].JobID, a.ID)
	}
	rest, err := s.CallbacksAfter(ctx, all[1].ID, []int64{a.ID}, 100)
	if err != nil || len(rest) != 2 || rest[0].ID != all[2].ID {
		t.Fatalf("job a's callbacks after %d: %+v, %v", all[1].ID, rest, err)
	}
	last, err := s.LastCallbackID(ctx)
	if err != nil || last != all[3].ID {
		t.Fatalf("last callback id %d, %v; want %d", last, err, all[3].ID)
	}
}

func messagesReadBackAsWritten(t *testing.T, s store.Store) {
	j := newJob(t, s, 2)
	big := `{"stdout":"héllo <world> \\u0000 ","exit_code":0}`
	r1 := result(1, store.Succeeded)
	r1.Result = []byte(big)
	r1.Message = []byte(`{"event":"task","number":1,"result":` + big + `,"error":""}`)
	r2 := result(2, store.Succeeded)
	r2.Result = []byte(`{"n": 2}`) // the message holds another encoding
	r2.Message = []byte(`{"event":"task","number":2,"result":{"n":2}}`)
	complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{r1, r2}})
	cbs, err := s.Callbacks(ctx, j.ID, 0, false)
	if err != nil || len(cbs) != 2 {
		t.Fatalf("callbacks: %d, %v", len(cbs), err)
	}
	for i, want := range []store.Result{r1, r2} {
		if string(cbs[i].Message) != string(want.Message) {
			t.Errorf("task %d's message reads back as %s, want %s", i+1, cbs[i].Message, want.Message)
		}
	}
	rows := tasks(t, s, j.ID)
	if string(rows[0].Result) != big {
		t.Errorf("task 1's result reads back as %s", rows[0].Result)
	}
}

func cancelFinishesEveryTask(t *testing.T, s store.Store) {
	j := newJob(t, s, 3)
	complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{result(1, store.Succeeded)}})
	done, err := s.CancelJob(ctx, j.ID, taskMessage, jobMessage)
	if err != nil || done.State != store.Cancelled || done.Cancelled != 2 || done.Succeeded != 1 {
		t.Fatalf("cancel: %+v, %v; want cancelled, 2 cancelled, 1 succeeded", done, err)
	}
	if _, err := s.CancelJob(ctx, j.ID, taskMessage, jobMessage); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("cancel again: %v, want ErrConflict", err)
	}
	cbs, _ := s.Callbacks(ctx, j.ID, 0, false)
	if len(cbs) != 4 || cbs[3].Event != store.EventJob {
		t.Fatalf("%d callbacks after cancel, want 3 task callbacks and then the job's", len(cbs))
	}
	// A result that comes after the cancel is ignored.
	late := complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{result(2, store.Succeeded)}})
	if len(late.Callbacks) != 0 {
		t.Fatalf("a result after the cancel got a callback")
	}
}

// aFailureOutranksACancel: a job with a failed task and cancelled ones
// ends failed (store.FinalState), whether the cancel finishes it or the
// last result does.
func aFailureOutranksACancel(t *testing.T, s store.Store) {
	j := newJob(t, s, 3)
	complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{result(1, store.Failed)}})
	done, err := s.CancelJob(ctx, j.ID, taskMessage, jobMessage)
	if err != nil || done.State != store.Failed || done.Failed != 1 || done.Cancelled != 2 {
		t.Fatalf("cancel after a failure: %+v, %v; want failed, 1 failed, 2 cancelled", done, err)
	}
	if got := job(t, s, j.ID).State; got != store.Failed {
		t.Fatalf("the job reads back %s, want failed", got)
	}
	k := newJob(t, s, 2)
	c := complete(t, s, store.Batch{JobID: k.ID, Results: []store.Result{result(1, store.Cancelled), result(2, store.Failed)}, Finish: jobMessage})
	if c.JobCallback == nil || c.Job.State != store.Failed {
		t.Fatalf("a job with a cancelled and a failed task finished %s, want failed", c.Job.State)
	}
	if st := store.FinalState(1, 0, 1); st != store.Cancelled {
		t.Fatalf("FinalState with a cancel and no failure: %s", st)
	}
	// --halt now,fail=1: the failure halts the job, its running task is
	// recorded cancelled, and the runner cancels the rest with the halt's
	// reason: the job failed.
	h := newJob(t, s, 4)
	complete(t, s, store.Batch{JobID: h.ID, Results: []store.Result{result(1, store.Succeeded), result(2, store.Failed)}})
	if err := s.HaltJob(ctx, h.ID, "halted (--halt now,fail=1): 1 task failed"); err != nil {
		t.Fatal(err)
	}
	complete(t, s, store.Batch{JobID: h.ID, Results: []store.Result{result(3, store.Cancelled)}})
	done, err = s.CancelJob(ctx, h.ID, taskMessage, jobMessage)
	if err != nil || done.State != store.Failed || done.Succeeded != 1 || done.Failed != 1 || done.Cancelled != 2 {
		t.Fatalf("a job halted after a failure: %+v, %v; want failed: 1 succeeded, 1 failed, 2 cancelled", done, err)
	}
	if got := job(t, s, h.ID); got.State != store.Failed || got.Halting == "" {
		t.Fatalf("the halted job reads back %s, halting %q; want failed, with the reason", got.State, got.Halting)
	}
}

func haltKeepsTheFirstReason(t *testing.T, s store.Store) {
	j := newJob(t, s, 2)
	if job(t, s, j.ID).Halting != "" {
		t.Fatalf("a new job is halting")
	}
	for _, reason := range []string{"first", "second"} {
		if err := s.HaltJob(ctx, j.ID, reason); err != nil {
			t.Fatalf("halt: %v", err)
		}
	}
	if got := job(t, s, j.ID).Halting; got != "first" {
		t.Fatalf("halting %q, want the first reason", got)
	}
}

func retryOpensARound(t *testing.T, s store.Store) {
	j := newJob(t, s, 2)
	// The job halted at its failure, and was paused: a retry runs it
	// again, not halted and not paused.
	if err := s.HaltJob(ctx, j.ID, "halted (--halt now,fail=1): 1 task failed"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PauseJobs(ctx, []int64{j.ID}, true); err != nil {
		t.Fatal(err)
	}
	if tally, err := s.CountJobs(ctx); err != nil || tally[store.Pending].Paused != 1 {
		t.Errorf("CountJobs: %d pending jobs paused (%v), want 1", tally[store.Pending].Paused, err)
	}
	complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{result(1, store.Succeeded), result(2, store.Failed)}, Finish: jobMessage})
	again, err := s.RetryJob(ctx, j.ID)
	if err != nil || again.Round != j.Round+1 || again.Finished() || again.Failed != 0 || again.Halting != "" || again.Paused {
		t.Fatalf("retry: %+v, %v; want the next round, unfinished, no failure, not halting, not paused", again, err)
	}
	if got := job(t, s, j.ID); got.Halting != "" || got.Paused {
		t.Fatalf("a retried job reads back halting %q, paused %v; want neither", got.Halting, got.Paused)
	}
	rows := tasks(t, s, j.ID)
	if rows[0].State != store.Succeeded || rows[1].State != store.Pending {
		t.Fatalf("after retry: %s, %s; want succeeded, pending", rows[0].State, rows[1].State)
	}
	if _, err := s.RetryJob(ctx, j.ID); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("retry of an unfinished job: %v, want ErrConflict", err)
	}
	c := complete(t, s, store.Batch{JobID: j.ID, Round: again.Round, Results: []store.Result{result(2, store.Succeeded)}, Finish: jobMessage})
	if c.JobCallback == nil || c.Job.State != store.Succeeded {
		t.Fatalf("the retried job did not finish: %+v", c.Job)
	}
}

func recoverCountsInterruptions(t *testing.T, s store.Store) {
	j := newJob(t, s, 2)
	fail := func(jobUUID string, task store.Task, reason string) ([]byte, error) {
		return fmt.Appendf(nil, `{"event":"task","number":%d,"error":%q}`, task.Seq, reason), nil
	}
	for round := 1; round <= 3; round++ {
		c := complete(t, s, store.Batch{JobID: j.ID, Starts: []store.Start{{Seq: 1, At: time.Now()}}})
		if !c.Started[0] {
			t.Fatalf("round %d: task 1 may not start", round)
		}
		if rows := tasks(t, s, j.ID); rows[0].State != store.Running {
			t.Fatalf("round %d: task 1 is %s after its start mark, want running", round, rows[0].State)
		}
		rec, err := s.Recover(ctx, 3, fail)
		if err != nil {
			t.Fatal(err)
		}
		requeued, failed := rec.Requeued, rec.Failed
		rows := tasks(t, s, j.ID)
		if round < 3 && (requeued != 1 || failed != 0 || rows[0].State != store.Pending || rows[0].Interrupts != round) {
			t.Fatalf("round %d: requeued %d, failed %d, task %s with %d interrupts", round, requeued, failed, rows[0].State, rows[0].Interrupts)
		}
		if round == 3 && (failed != 1 || rows[0].State != store.Failed) {
			t.Fatalf("after 3 interruptions: failed %d, task %s; want it failed", failed, rows[0].State)
		}
	}
	cbs, _ := s.Callbacks(ctx, j.ID, 0, false)
	if len(cbs) != 1 || cbs[0].TaskSeq != 1 {
		t.Fatalf("callbacks %+v, want the failed task's", cbs)
	}
	if c := complete(t, s, store.Batch{JobID: j.ID, Starts: []store.Start{{Seq: 1, At: time.Now()}}}); c.Started[0] {
		t.Fatalf("a final task may start again")
	}
	// A retry starts a new round: the limit counts from it, and the
	// history stays for display.
	complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{result(2, store.Succeeded)}, Finish: jobMessage})
	again, err := s.RetryJob(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	complete(t, s, store.Batch{JobID: j.ID, Round: again.Round, Starts: []store.Start{{Seq: 1, At: time.Now()}}})
	rec, err := s.Recover(ctx, 3, fail)
	requeued, failed := rec.Requeued, rec.Failed
	if rows := tasks(t, s, j.ID); err != nil || requeued != 1 || failed != 0 || rows[0].State != store.Pending || rows[0].Interrupts != 4 {
		t.Fatalf("an interruption after a retry: requeued %d, failed %d (%v), task %s with %d interrupts; want it pending, with 4",
			requeued, failed, err, rows[0].State, rows[0].Interrupts)
	}
}

func waitingTasksAreDueLater(t *testing.T, s store.Store) {
	j := newJob(t, s, 3)
	due := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	wait := result(2, store.Failed)
	wait.Message, wait.RetryAt, wait.Error = nil, due, "try again"
	c := complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{wait}})
	if len(c.Callbacks) != 0 {
		t.Fatalf("a task waiting to retry got a callback")
	}
	if seq, err := s.MinWaitingSeq(ctx, j.ID); err != nil || seq != 2 {
		t.Fatalf("lowest waiting: %d, %v; want 2", seq, err)
	}
	if now, err := s.DueTasks(ctx, j.ID, time.Now(), 10); err != nil || len(now) != 0 {
		t.Fatalf("due now: %d, %v; want none", len(now), err)
	}
	next, ok, err := s.NextDue(ctx, j.ID)
	if err != nil || !ok || !next.Equal(due) {
		t.Fatalf("next due %v (%v), %v; want %v", next, ok, err, due)
	}
	later, err := s.DueTasks(ctx, j.ID, due.Add(time.Second), 10)
	if err != nil || len(later) != 1 || later[0].Seq != 2 || later[0].Attempts != 1 {
		t.Fatalf("due later: %+v, %v; want task 2 with 1 attempt", later, err)
	}
	pending, _ := s.PendingTasks(ctx, j.ID, 0, 10, time.Now())
	if len(pending) != 2 {
		t.Fatalf("%d pending for the first pass, want 2 (the waiting one is left out)", len(pending))
	}
	final := result(2, store.Succeeded)
	final.Attempt = 2
	complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{final}})
	if seq, _ := s.MinWaitingSeq(ctx, j.ID); seq != 0 {
		t.Fatalf("a final task still waits")
	}
}

func releasedCursor(t *testing.T, s store.Store) {
	j := newJob(t, s, 2)
	c := complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{result(1, store.Succeeded), result(2, store.Succeeded)}, Finish: jobMessage})
	if ids, _ := s.UnreleasedJobs(ctx); len(ids) != 1 || ids[0] != j.ID {
		t.Fatalf("undelivered jobs %v, want [%d]", ids, j.ID)
	}
	if ok, _ := s.JobReleased(ctx, j.ID); ok {
		t.Fatalf("released before any mark")
	}
	if err := s.MarkReleased(ctx, j.ID, store.Span{From: c.Callbacks[0].ID, To: c.Callbacks[1].ID}); err != nil {
		t.Fatal(err)
	}
	if left, _ := s.Callbacks(ctx, j.ID, 0, true); len(left) != 1 || left[0].Event != store.EventJob {
		t.Fatalf("undelivered after the task marks: %+v, want the job callback", left)
	}
	if err := s.MarkAllReleased(ctx, []store.Mark{{JobID: j.ID, To: c.JobCallback.ID}}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.JobReleased(ctx, j.ID); !ok {
		t.Fatalf("not released after every mark")
	}
	if ids, _ := s.UnreleasedJobs(ctx); len(ids) != 0 {
		t.Fatalf("undelivered jobs %v, want none", ids)
	}
}

func openJobsAndSealing(t *testing.T, s store.Store) {
	nj := store.NewJob{Workers: 1, QueueSize: 1, Open: true, Tasks: []store.NewTask{{Kind: "noop", Payload: []byte("null")}}}
	j, err := s.CreateJob(ctx, nj)
	if err != nil {
		t.Fatal(err)
	}
	if j.Sealed {
		t.Fatalf("an open job is sealed")
	}
	if err := s.AppendTasks(ctx, j.ID, []store.NewTask{{Kind: "noop", Payload: []byte("null")}}); err != nil {
		t.Fatal(err)
	}
	open, err := s.OpenJobs(ctx)
	if err != nil || len(open) != 1 || open[0].ID != j.ID || open[0].Total != 2 {
		t.Fatalf("open jobs %+v, %v; want job %d with 2 tasks", open, err, j.ID)
	}
	if sealed, err := s.SealOrphan(ctx, j.ID); err != nil || sealed {
		t.Fatalf("sealed an open job whose submitter (this process) lives: %v, %v", sealed, err)
	}
	if err := s.SealJob(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendTasks(ctx, j.ID, []store.NewTask{{Kind: "noop", Payload: []byte("null")}}); !errors.Is(err, store.ErrSealed) {
		t.Fatalf("append to a sealed job: %v, want ErrSealed", err)
	}
	if open, _ := s.OpenJobs(ctx); len(open) != 0 {
		t.Fatalf("open jobs after sealing: %d", len(open))
	}
	runnable, err := s.RunnableJobs(ctx, store.RunnableQuery{Limit: 5, Now: time.Now()})
	if err != nil || len(runnable) != 1 {
		t.Fatalf("runnable: %d, %v; want 1", len(runnable), err)
	}
}

// A compile-time check that NewJob.More takes an iterator.
var _ iter.Seq2[[]store.NewTask, error] = store.NewJob{}.More

func countsOfJobsAndCallbacks(t *testing.T, s store.Store) {
	a, b := newJob(t, s, 3), newJob(t, s, 2)
	newJob(t, s, 4)
	complete(t, s, store.Batch{JobID: a.ID, Results: []store.Result{result(1, store.Succeeded), result(2, store.Failed), result(3, store.Succeeded)}, Finish: jobMessage})
	complete(t, s, store.Batch{JobID: b.ID, Results: []store.Result{result(1, store.Succeeded)}})
	counts, err := s.CountJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[store.State]store.JobTally{
		store.Failed:  {Jobs: 1, Tasks: 3, Done: 3},
		store.Running: {Jobs: 1, Tasks: 2, Done: 1},
		store.Pending: {Jobs: 1, Tasks: 4, Done: 0},
	}
	if len(counts) != len(want) {
		t.Errorf("counts %+v, want %+v", counts, want)
	}
	for state, w := range want {
		if counts[state] != w {
			t.Errorf("%s jobs: %+v, want %+v", state, counts[state], w)
		}
	}
	all, err := s.CallbacksAfter(ctx, 0, nil, 100)
	if err != nil || len(all) != 5 {
		t.Fatalf("callbacks: %d, %v; want 5", len(all), err)
	}
	// Deliveries given up on, by sink.
	for i, d := range []store.Delivery{
		{Sink: "job x webhook http://a", CallbackID: all[0].ID, State: store.DeliveryDead, Attempts: 8, LastError: "503"},
		{Sink: "job x webhook http://a", CallbackID: all[1].ID, State: store.DeliveryDelivered, Attempts: 1},
		{Sink: "daemon on-task", CallbackID: all[1].ID, State: store.DeliveryDead, Attempts: 8},
	} {
		if err := s.RecordDelivery(ctx, d); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
	}
	if dead, err := s.DeadDeliveries(ctx); err != nil || len(dead) != 2 || dead["job x webhook http://a"] != 1 || dead["daemon on-task"] != 1 {
		t.Errorf("dead deliveries: %v, %v", dead, err)
	}
	for _, c := range []struct {
		job, after int64
		event      string
		want       int64
	}{
		{0, 0, "", 5}, {0, 0, store.EventTask, 4}, {0, 0, store.EventJob, 1},
		{a.ID, 0, "", 4}, {a.ID, all[1].ID, "", 2}, {a.ID, all[1].ID, store.EventTask, 1},
		{b.ID, 0, store.EventJob, 0}, {0, all[4].ID, "", 0},
	} {
		if n, err := s.CountCallbacks(ctx, c.job, c.after, c.event); err != nil || n != c.want {
			t.Errorf("CountCallbacks(job %d, after %d, %q) = %d, %v; want %d", c.job, c.after, c.event, n, err, c.want)
		}
	}
}

func runnableJobsFollowControl(t *testing.T, s store.Store) {
	create := func(name string, c store.Control, after []int64, any bool) store.Job {
		t.Helper()
		j, err := s.CreateJob(ctx, store.NewJob{Name: name, Workers: 1, QueueSize: 1, Control: c, After: after, AfterAny: any,
			Tasks: []store.NewTask{{Kind: "noop", Payload: []byte("null")}}})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		return j
	}
	now := time.Now()
	old := create("old", store.Control{}, nil, false)
	urgent := create("urgent", store.Control{Priority: 5, Group: "gpu"}, nil, false)
	later := create("later", store.Control{StartAt: now.Add(time.Hour)}, nil, false)
	after := create("after", store.Control{}, []int64{old.ID}, false)
	anyEnd := create("after-any", store.Control{}, []int64{old.ID, urgent.ID}, true)
	if later.StartAt.IsZero() || after.After != store.AfterSuccess || anyEnd.After != store.AfterAny || urgent.Group != "gpu" {
		t.Fatalf("the new jobs do not carry their control: %+v %+v %+v", later, after, anyEnd)
	}
	names := func(q store.RunnableQuery) string {
		t.Helper()
		jobs, err := s.RunnableJobs(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return jobNames(jobs)
	}
	if got := names(store.RunnableQuery{Limit: 10, Now: now}); got != "urgent old" {
		t.Errorf("runnable: %q, want the urgent job first, the later one and the waiting ones left out", got)
	}
	if got := names(store.RunnableQuery{Limit: 10, Now: now.Add(2 * time.Hour), FullGroups: []string{"gpu"}}); got != "old later" {
		t.Errorf("runnable in two hours with gpu full: %q, want old later", got)
	}
	if n, err := s.PauseJobs(ctx, []int64{old.ID}, true); err != nil || n != 1 {
		t.Fatalf("pause: %d, %v", n, err)
	}
	if got := names(store.RunnableQuery{Limit: 10, Now: now}); got != "urgent" || !job(t, s, old.ID).Paused {
		t.Errorf("runnable with old paused: %q", got)
	}
	if n, err := s.PauseJobs(ctx, nil, false); err != nil || n != 1 {
		t.Fatalf("resume all: %d, %v; want the one paused job", n, err)
	}
	// The dependencies end: after waits for old to succeed, after-any
	// for both to end.
	complete(t, s, store.Batch{JobID: old.ID, Results: []store.Result{result(1, store.Failed)}, Finish: jobMessage})
	if got := names(store.RunnableQuery{Limit: 10, Now: now}); got != "urgent after" {
		t.Errorf("runnable once old failed: %q, want urgent after (the runner cancels after)", got)
	}
	complete(t, s, store.Batch{JobID: urgent.ID, Results: []store.Result{result(1, store.Succeeded)}, Finish: jobMessage})
	if got := names(store.RunnableQuery{Limit: 10, Now: now}); got != "after after-any" {
		t.Errorf("runnable once both ended: %q", got)
	}
	deps, err := s.JobDeps(ctx, anyEnd.ID)
	if err != nil || len(deps) != 2 || deps[0].ID != old.ID || deps[1].State != store.Succeeded {
		t.Errorf("deps of after-any: %+v, %v", deps, err)
	}
	if _, err := s.CreateJob(ctx, store.NewJob{Name: "orphan", Workers: 1, QueueSize: 1, After: []int64{1 << 40},
		Tasks: []store.NewTask{{Kind: "noop", Payload: []byte("null")}}}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a job after a job that does not exist: %v, want ErrNotFound", err)
	}
	if _, err := s.FindJob(ctx, "orphan"); err == nil {
		t.Errorf("the refused job was written")
	}
	if err := s.SetGroup(ctx, store.Group{Name: "gpu", MaxJobs: 1, Workers: 2}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetGroup(ctx, store.Group{Name: "gpu", MaxJobs: 2, Workers: 4}); err != nil {
		t.Fatal(err)
	}
	groups, err := s.Groups(ctx)
	if err != nil || len(groups) != 1 || groups[0] != (store.Group{Name: "gpu", MaxJobs: 2, Workers: 4}) {
		t.Errorf("groups: %+v, %v; want gpu with its last limits", groups, err)
	}
}

// throughputAddsUp: counts added to a span add to what it held, spans
// read back oldest first from a time on, and counts older than
// store.ThroughputKept are deleted.
func throughputAddsUp(t *testing.T, s store.Store) {
	span := func(ago time.Duration, ok, bad int64) store.Throughput {
		at := time.Now().Add(-ago).Truncate(store.ThroughputSpan)
		return store.Throughput{At: at, Succeeded: ok, Failed: bad}
	}
	old := span(store.ThroughputKept+time.Hour, 5, 0)
	a, b := span(30*time.Minute, 3, 1), span(20*time.Second, 10, 0)
	if err := s.AddThroughput(ctx, []store.Throughput{old, a, b}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddThroughput(ctx, []store.Throughput{{At: a.At, Succeeded: 2, Failed: 4}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Throughput(ctx, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Throughput{{At: a.At, Succeeded: 5, Failed: 5}, b}
	if len(got) != len(want) {
		t.Fatalf("throughput of the last hour: %+v, want %+v", got, want)
	}
	for i := range want {
		if !got[i].At.Equal(want[i].At) || got[i].Succeeded != want[i].Succeeded || got[i].Failed != want[i].Failed {
			t.Errorf("span %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	all, err := s.Throughput(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Errorf("a count older than %v was kept: %+v", store.ThroughputKept, all)
	}
}

// listJobsFilters: ListJobs pages newest first, by name (case folded, a
// LIKE pattern's characters meaning themselves) and by state.
func listJobsFilters(t *testing.T, s store.Store) {
	names := []string{"alpha", "Beta_1", "beta%2", "gamma", "BETA_3"}
	ids := map[string]int64{}
	for _, name := range names {
		j, err := s.CreateJob(ctx, store.NewJob{Name: name, Workers: 1, QueueSize: 1,
			Tasks: []store.NewTask{{Kind: "noop", Payload: []byte("null")}}})
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = j.ID
	}
	if _, err := s.CancelJob(ctx, ids["gamma"], taskMessage, jobMessage); err != nil {
		t.Fatal(err)
	}
	list := func(f store.JobFilter) string {
		t.Helper()
		jobs, err := s.ListJobs(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return jobNames(jobs)
	}
	for _, c := range []struct {
		f    store.JobFilter
		want string
	}{
		{store.JobFilter{Limit: 2}, "BETA_3 gamma"},
		{store.JobFilter{Limit: 2, Before: ids["gamma"]}, "beta%2 Beta_1"},
		{store.JobFilter{Limit: 10, Name: "beta"}, "BETA_3 beta%2 Beta_1"},
		{store.JobFilter{Limit: 10, Name: "a_"}, "BETA_3 Beta_1"},
		{store.JobFilter{Limit: 10, Name: "%"}, "beta%2"},
		{store.JobFilter{Limit: 10, State: store.Cancelled}, "gamma"},
		{store.JobFilter{Limit: 10, State: store.Pending, Name: "A", Before: ids["BETA_3"]}, "beta%2 Beta_1 alpha"},
	} {
		if got := list(c.f); got != c.want {
			t.Errorf("ListJobs(%+v) = %q, want %q", c.f, got, c.want)
		}
	}
}

// tasksInStatePages: a job's tasks in one state, a page at a time, with
// the state and error of each, the same whether the state is final (read
// from the results) or not.
func tasksInStatePages(t *testing.T, s store.Store) {
	j := newJob(t, s, 7)
	other := newJob(t, s, 3)
	fail := func(seq int64) store.Result {
		r := result(seq, store.Failed)
		r.Error = fmt.Sprintf("task %d broke", seq)
		return r
	}
	complete(t, s, store.Batch{JobID: j.ID, Results: []store.Result{result(1, store.Succeeded), fail(2), result(3, store.Succeeded), fail(5), fail(6)}})
	complete(t, s, store.Batch{JobID: other.ID, Results: []store.Result{fail(1)}})
	seqs := func(state store.State, after int64, limit int) string {
		t.Helper()
		rows, err := s.TasksInState(ctx, j.ID, state, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rows {
			if state != "" && r.State != state {
				t.Errorf("TasksInState(%q): task %d is %s", state, r.Seq, r.State)
			}
			if r.State == store.Failed && r.Error != fmt.Sprintf("task %d broke", r.Seq) {
				t.Errorf("task %d: error %q", r.Seq, r.Error)
			}
			out = append(out, fmt.Sprint(r.Seq))
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct {
		state store.State
		after int64
		limit int
		want  string
	}{
		{store.Failed, 0, 10, "2 5 6"},
		{store.Failed, 2, 1, "5"},
		{store.Failed, 6, 10, ""},
		{store.Succeeded, 0, 10, "1 3"},
		{store.Pending, 0, 10, "4 7"},
		{"", 4, 2, "5 6"},
		{store.Cancelled, 0, 10, ""},
	} {
		if got := seqs(c.state, c.after, c.limit); got != c.want {
			t.Errorf("TasksInState(%q, after %d, limit %d) = %q, want %q", c.state, c.after, c.limit, got, c.want)
		}
	}
}

// jobNames is the jobs' names, in order, joined by spaces.
func jobNames(jobs []store.Job) string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.Name
	}
	return strings.Join(out, " ")
}

// kindsWaitForARunnerThatKnowsThem: a job records its tasks' kinds, from
// its first tasks, its streamed batches and its appended ones; a runner
// takes only the jobs whose every kind it knows, and MarkWaiting says why
// the others wait.
func kindsWaitForARunnerThatKnowsThem(t *testing.T, s store.Store) {
	batches := func(yield func([]store.NewTask, error) bool) {
		yield([]store.NewTask{{Kind: "resize", Payload: []byte("null")}, {Kind: "noop", Payload: []byte("null")}}, nil)
	}
	mixed, err := s.CreateJob(ctx, store.NewJob{Name: "mixed", Workers: 1, QueueSize: 1,
		Tasks: []store.NewTask{{Kind: "exec", Payload: []byte("null")}}, More: batches})
	if err != nil {
		t.Fatal(err)
	}
	plain := newJob(t, s, 2)
	open, err := s.CreateJob(ctx, store.NewJob{Name: "open", Workers: 1, QueueSize: 1, Open: true,
		Tasks: []store.NewTask{{Kind: "noop", Payload: []byte("null")}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   int64
		want string
	}{{mixed.ID, "exec,noop,resize"}, {plain.ID, "noop"}, {open.ID, "noop"}} {
		if got := strings.Join(job(t, s, tc.id).Kinds, ","); got != tc.want {
			t.Errorf("job %d's kinds: %q, want %q", tc.id, got, tc.want)
		}
	}
	if got := strings.Join(mixed.Kinds, ","); got != "exec,noop,resize" {
		t.Errorf("the kinds CreateJob returned: %q", got)
	}
	if err := s.AppendTasks(ctx, open.ID, []store.NewTask{{Kind: "resize", Payload: []byte("null")}}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(job(t, s, open.ID).Kinds, ","); got != "noop,resize" {
		t.Errorf("the open job's kinds after an append: %q, want noop,resize", got)
	}

	runnable := func(known []string) string {
		jobs, err := s.RunnableJobs(ctx, store.RunnableQuery{Limit: 10, Now: time.Now(), Kinds: known})
		if err != nil {
			t.Fatal(err)
		}
		return jobNames(jobs)
	}
	if got := runnable(nil); got != "mixed conformance open" {
		t.Errorf("runnable for any kind: %s", got)
	}
	if got := runnable([]string{"exec", "noop", "sleep"}); got != "conformance" {
		t.Errorf("runnable without resize: %s, want conformance", got)
	}
	if got := runnable([]string{"exec", "noop", "resize"}); got != "mixed conformance open" {
		t.Errorf("runnable with resize: %s", got)
	}

	reason := func(missing []string) string { return "needs " + strings.Join(missing, "+") }
	n, err := s.MarkWaiting(ctx, []string{"noop"}, reason)
	if err != nil || n != 2 {
		t.Fatalf("MarkWaiting: %d, %v; want 2 jobs marked", n, err)
	}
	if n, err := s.MarkWaiting(ctx, []string{"noop"}, reason); err != nil || n != 0 {
		t.Fatalf("MarkWaiting again: %d, %v; want nothing changed", n, err)
	}
	for _, tc := range []struct {
		id   int64
		want string
	}{{mixed.ID, "needs exec+resize"}, {plain.ID, ""}, {open.ID, "needs resize"}} {
		if got := job(t, s, tc.id).Waiting; got != tc.want {
			t.Errorf("job %d waits: %q, want %q", tc.id, got, tc.want)
		}
	}
	// pcd status counts and lists the waiting jobs without reading every
	// unfinished one.
	tally, err := s.CountJobs(ctx)
	if err != nil || tally[store.Pending].Waiting != 2 {
		t.Errorf("CountJobs: %d pending jobs waiting (%v), want 2", tally[store.Pending].Waiting, err)
	}
	waiting, err := s.ListJobs(ctx, store.JobFilter{State: store.Pending, Waiting: true, Limit: 10})
	if err != nil || len(waiting) != 2 || waiting[0].ID != open.ID || waiting[1].ID != mixed.ID {
		t.Errorf("ListJobs of the waiting jobs: %d jobs (%v), want open's and mixed's, newest first", len(waiting), err)
	}
}
