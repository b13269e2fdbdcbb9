// Command riverbench measures River (github.com/riverqueue/river) on the
// workload pcd bench measures pcd on: n no-op jobs inserted with
// InsertManyFast, then worked by clients of a number of workers each, all
// in this process, until every job is completed in the database. It
// prints one JSON line. pcd bench builds it from the Go module cache (the
// source is embedded in pcd; River's own code is never in pcd's
// repository) when it is given --river.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

type noopArgs struct{}

func (noopArgs) Kind() string { return "noop" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
	worked *atomic.Int64
}

func (w *noopWorker) Work(context.Context, *river.Job[noopArgs]) error {
	w.worked.Add(1)
	return nil
}

func main() {
	url := flag.String("db", "", "PostgreSQL URL")
	schema := flag.String("schema", "", "schema (created already)")
	n := flag.Int("jobs", 1_000_000, "jobs")
	clients := flag.Int("clients", 1, "clients")
	workers := flag.Int("workers", 25, "workers per client")
	// River's default fetch cooldown, 100 ms, caps a client at its
	// MaxWorkers jobs per 100 ms; the bench gives River its fastest
	// setting, as River's own benchmark does.
	cooldown := flag.Duration("fetch-cooldown", river.FetchCooldownMin, "River's FetchCooldown")
	flag.Parse()
	if err := run(*url, *schema, *n, *clients, *workers, *cooldown); err != nil {
		fmt.Fprintln(os.Stderr, "riverbench:", err)
		os.Exit(1)
	}
}

func run(url, schema string, n, clients, workers int, cooldown time.Duration) error {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return err
	}
	cfg.MaxConns = int32(10 * clients)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, &rivermigrate.Config{Schema: schema})
	if err != nil {
		return err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var worked atomic.Int64
	ws := river.NewWorkers()
	river.AddWorker(ws, &noopWorker{worked: &worked})
	inserter, err := river.NewClient(driver, &river.Config{Schema: schema})
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := insertJobs(ctx, inserter, n); err != nil {
		return err
	}
	insertRate := float64(n) / time.Since(t0).Seconds()

	var running []*river.Client[pgx.Tx]
	t1 := time.Now()
	for range clients {
		c, err := river.NewClient(driver, &river.Config{
			Schema:        schema,
			Queues:        map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: workers}},
			Workers:       ws,
			FetchCooldown: cooldown,
		})
		if err != nil {
			return err
		}
		if err := c.Start(ctx); err != nil {
			return err
		}
		running = append(running, c)
	}
	if err := waitCompleted(ctx, pool, schema, n, &worked); err != nil {
		return err
	}
	elapsed := time.Since(t1)
	for _, c := range running {
		stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = c.Stop(stopCtx)
		cancel()
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return json.NewEncoder(os.Stdout).Encode(map[string]float64{
		"insert_per_sec": insertRate,
		"jobs_per_sec":   float64(n) / elapsed.Seconds(),
		"rss_mib":        float64(ru.Maxrss) / 1024,
	})
}

// insertJobs inserts n no-op jobs in batches.
func insertJobs(ctx context.Context, inserter *river.Client[pgx.Tx], n int) error {
	const batch = 50_000
	params := make([]river.InsertManyParams, 0, batch)
	for done := 0; done < n; done += len(params) {
		params = params[:0]
		for range min(batch, n-done) {
			params = append(params, river.InsertManyParams{Args: noopArgs{}})
		}
		if _, err := inserter.InsertManyFast(ctx, params); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
	}
	return nil
}

// waitCompleted waits until every job was worked, then until every one
// is marked completed (River's completer batches those updates).
func waitCompleted(ctx context.Context, pool *pgxpool.Pool, schema string, n int, worked *atomic.Int64) error {
	for worked.Load() < int64(n) {
		time.Sleep(5 * time.Millisecond)
	}
	q := fmt.Sprintf("SELECT count(*) FROM %s.river_job WHERE state = 'completed'", schema)
	for {
		var completed int64
		if err := pool.QueryRow(ctx, q).Scan(&completed); err != nil {
			return err
		}
		if completed >= int64(n) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}
