package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pcd-dev/pcd/store"
)

// LeaseSink takes or renews the lease on delivering a sink, for one lease
// period: false while another runner's lease on it runs. A process that
// is not a runner (id 0) always gets it.
func (db *DB) LeaseSink(ctx context.Context, sink string) (bool, error) {
	me := db.runners.id()
	if me == 0 {
		return true, nil
	}
	now := time.Now()
	var holder int64
	err := db.pool.QueryRow(ctx, `INSERT INTO sink_leases (sink, runner_id, until) VALUES ($1, $2, $3)
		ON CONFLICT (sink) DO UPDATE SET runner_id = EXCLUDED.runner_id, until = EXCLUDED.until
		WHERE sink_leases.runner_id = EXCLUDED.runner_id OR sink_leases.until < $4
		RETURNING runner_id`, sink, me, now.Add(db.opts.Lease).UnixNano(), now.UnixNano()).Scan(&holder)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lease sink %s: %w", sink, classify(err))
	}
	return holder == me, nil
}

// SinkCursor is the last callback id a sink is done with.
func (db *DB) SinkCursor(ctx context.Context, sink string) (int64, error) {
	var last int64
	err := db.pool.QueryRow(ctx, "SELECT last_id FROM sink_cursors WHERE sink = $1", sink).Scan(&last)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cursor of sink %s: %w", sink, classify(err))
	}
	return last, nil
}

// StartSink records where a sink starts delivering: a sink new to the
// database starts after the last callback now; with from > 0 it delivers
// again from callback from on.
func (db *DB) StartSink(ctx context.Context, sink string, from int64) error {
	var err error
	if from > 0 {
		_, err = db.pool.Exec(ctx, `INSERT INTO sink_cursors (sink, last_id) VALUES ($1, $2)
			ON CONFLICT (sink) DO UPDATE SET last_id = $2`, sink, from-1)
	} else {
		_, err = db.pool.Exec(ctx, `INSERT INTO sink_cursors (sink, last_id)
			VALUES ($1, (SELECT coalesce(max(id), 0) FROM callbacks)) ON CONFLICT (sink) DO NOTHING`, sink)
	}
	if err != nil {
		return fmt.Errorf("start sink %s: %w", sink, classify(err))
	}
	return nil
}

// SinkCursors lists every sink's cursor.
func (db *DB) SinkCursors(ctx context.Context) (map[string]int64, error) {
	rows, err := db.pool.Query(ctx, "SELECT sink, last_id FROM sink_cursors")
	if err != nil {
		return nil, fmt.Errorf("sink cursors: %w", classify(err))
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var last int64
		if err := rows.Scan(&name, &last); err != nil {
			return nil, fmt.Errorf("sink cursors: %w", err)
		}
		out[name] = last
	}
	return out, classify(rows.Err())
}

// DeliveryAttempts is how many times a sink has tried a callback.
func (db *DB) DeliveryAttempts(ctx context.Context, sink string, callbackID int64) (int, error) {
	var n int
	err := db.pool.QueryRow(ctx, "SELECT attempts FROM deliveries WHERE callback_id = $1 AND sink = $2", callbackID, sink).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("delivery attempts of callback %d: %w", callbackID, classify(err))
	}
	return n, nil
}

// RecordDelivery records an attempt. A delivered or dead callback moves
// the sink's cursor past it, in the same transaction.
func (db *DB) RecordDelivery(ctx context.Context, d store.Delivery) error {
	now := time.Now().UnixNano()
	err := db.tx(ctx, func(tx pgx.Tx) error {
		var delivered any
		if d.State == store.DeliveryDelivered {
			delivered = now
		}
		if _, err := tx.Exec(ctx, `INSERT INTO deliveries (callback_id, sink, state, attempts, last_error, delivered_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (callback_id, sink) DO UPDATE SET state = EXCLUDED.state, attempts = EXCLUDED.attempts,
				last_error = coalesce(EXCLUDED.last_error, deliveries.last_error), delivered_at = EXCLUDED.delivered_at,
				updated_at = EXCLUDED.updated_at`,
			d.CallbackID, d.Sink, string(d.State), d.Attempts, nullString(d.LastError), delivered, now); err != nil {
			return err
		}
		if d.State == store.DeliveryRetrying {
			return nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO sink_cursors (sink, last_id) VALUES ($1, $2)
			ON CONFLICT (sink) DO UPDATE SET last_id = greatest(sink_cursors.last_id, EXCLUDED.last_id)`, d.Sink, d.CallbackID)
		return err
	})
	if err != nil {
		return fmt.Errorf("record delivery of callback %d to %s: %w", d.CallbackID, d.Sink, err)
	}
	return nil
}

// Deliveries lists a job's callbacks with their delivery state at each
// sink that has tried them.
func (db *DB) Deliveries(ctx context.Context, jobID int64) ([]store.DeliveryRow, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+callbackColumns+`, c.id <= coalesce(r.released_id, 0),
		coalesce(d.sink, ''), coalesce(d.state, ''), coalesce(d.attempts, 0), coalesce(d.last_error, ''), d.delivered_at
		FROM callbacks c LEFT JOIN releases r ON r.job_id = c.job_id AND r.runner_id = c.runner_id
		LEFT JOIN deliveries d ON d.callback_id = c.id
		WHERE c.job_id = $1 ORDER BY c.id, d.sink`, jobID)
	if err != nil {
		return nil, fmt.Errorf("deliveries of job %d: %w", jobID, classify(err))
	}
	defer rows.Close()
	var out []store.DeliveryRow
	for rows.Next() {
		var (
			r         store.DeliveryRow
			state     string
			delivered *int64
		)
		cb, err := scanCallback(scanFunc(func(dest ...any) error {
			return rows.Scan(append(dest, &r.Released, &r.Sink, &state, &r.Attempts, &r.LastError, &delivered)...)
		}))
		if err != nil {
			return nil, fmt.Errorf("deliveries of job %d: %w", jobID, err)
		}
		r.Callback = cb
		r.State = store.DeliveryState(state)
		if delivered != nil {
			r.DeliveredAt = time.Unix(0, *delivered)
		}
		out = append(out, r)
	}
	return out, classify(rows.Err())
}

// scanFunc is a pgx.Row made of a function: a row with more columns than
// a scan function reads.
type scanFunc func(...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }

// DeadDeliveries counts the callbacks each sink gave up on.
func (db *DB) DeadDeliveries(ctx context.Context) (map[string]int64, error) {
	rows, err := db.pool.Query(ctx, "SELECT sink, count(*) FROM deliveries WHERE state = 'dead' GROUP BY sink")
	if err != nil {
		return nil, fmt.Errorf("dead deliveries: %w", classify(err))
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var sink string
		var n int64
		if err := rows.Scan(&sink, &n); err != nil {
			return nil, fmt.Errorf("dead deliveries: %w", classify(err))
		}
		out[sink] = n
	}
	return out, classify(rows.Err())
}
