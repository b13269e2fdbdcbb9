package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
)

type pointArgs struct{ X, Y int }

// Validate has a pointer receiver: KindOf finds it all the same.
func (p *pointArgs) Validate() error {
	if p.X < 0 {
		return errors.New("x must not be negative")
	}
	return nil
}

func TestKindOfDecodesStrictlyAndValidates(t *testing.T) {
	t.Parallel()
	k := KindOf(func(ctx context.Context, p pointArgs) (int, error) {
		if p.Y == 13 {
			return 0, errors.New("unlucky")
		}
		return p.X + p.Y, nil
	})
	for _, tc := range []struct {
		payload, wantErr string
	}{
		{`{"X": 1, "Y": 2}`, ""},
		{`{"X": -1}`, "x must not be negative"},
		{`{"X": 1, "Z": 2}`, `unknown field "Z"`},
		{`{"X": 1} {"X": 2}`, "more than one JSON value"},
		{`"text"`, "cannot unmarshal string"},
	} {
		err := k.Validate(json.RawMessage(tc.payload))
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("Validate(%s) = %v, want an error containing %q", tc.payload, err, tc.wantErr)
		}
	}
	out, err := k.Run(context.Background(), Task{Payload: json.RawMessage(`{"X": 1, "Y": 2}`)})
	if err != nil || string(out) != "3" {
		t.Errorf("Run = %s, %v; want 3", out, err)
	}
	if _, err := k.Run(context.Background(), Task{Payload: json.RawMessage(`{"Y": 13}`)}); err == nil || err.Error() != "unlucky" {
		t.Errorf("Run's own error = %v, want unlucky", err)
	}
}

// SubmitTx writes in the caller's transaction: nothing when the job is
// bad (and the caller's transaction goes on), nothing after a rollback,
// the job after a commit; and it refuses a transaction on another file.
func TestSubmitTxCommitsWithTheCaller(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := openDB(t)
	app, err := sql.Open("sqlite", db.Path()+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	count := func() int {
		var n int
		if err := app.QueryRowContext(ctx, "SELECT count(*) FROM jobs").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	good := JobFile{Name: "good", Key: "k1", Tasks: []TaskSpec{{Kind: "noop"}}}

	tx, err := app.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewClient(db, RunnerConfig{}).SubmitTx(ctx, tx, JobFile{Tasks: []TaskSpec{{Kind: "nope"}}})
	if !errors.Is(err, ErrBadJob) {
		t.Fatalf("a bad job in a transaction: %v, want ErrBadJob", err)
	}
	if _, err := NewClient(db, RunnerConfig{}).SubmitTx(ctx, tx, good); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d jobs after a rollback, want 0", n)
	}

	tx, _ = app.BeginTx(ctx, nil)
	job, err := NewClient(db, RunnerConfig{}).SubmitTx(ctx, tx, good)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	got, err := db.Job(ctx, job.ID)
	if err != nil || got.Total != 1 || got.State != store.Pending || !got.Sealed {
		t.Fatalf("after commit: %+v, %v; want a sealed pending job of 1 task", got, err)
	}
	tx, _ = app.BeginTx(ctx, nil)
	again, err := NewClient(db, RunnerConfig{}).SubmitTx(ctx, tx, good)
	tx.Rollback()
	if !errors.Is(err, store.ErrDuplicate) || again.ID != job.ID {
		t.Fatalf("the same key again: %+v, %v; want job %d with ErrDuplicate", again, err, job.ID)
	}

	other, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "other.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tx, _ = app.BeginTx(ctx, nil)
	defer tx.Rollback()
	if _, err := NewClient(other, RunnerConfig{}).SubmitTx(ctx, tx, good); err == nil || !strings.Contains(err.Error(), "not on") {
		t.Fatalf("a transaction on another file: %v, want it refused", err)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d jobs, want 1", n)
	}
}
