package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/pcd-dev/pcd/store"
)

// LeaseSink is always true: one runner at a time works a SQLite database.
func (db *DB) LeaseSink(context.Context, string) (bool, error) { return true, nil }

// SinkCursor is the last callback id a sink is done with.
func (db *DB) SinkCursor(ctx context.Context, sink string) (int64, error) {
	var last int64
	err := db.rc.QueryRowContext(ctx, "SELECT last_id FROM sink_cursors WHERE sink = ?", sink).Scan(&last)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cursor of sink %s: %w", sink, err)
	}
	return last, nil
}

// StartSink records where a sink starts delivering: a sink new to the
// database takes the callbacks committed after it first appears, so its
// cursor starts at the last callback now. With from > 0 the sink delivers
// again from callback from on, new or not.
func (db *DB) StartSink(ctx context.Context, sink string, from int64) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if from > 0 {
			_, err := tx.ExecContext(ctx, `INSERT INTO sink_cursors (sink, last_id) VALUES (?1, ?2)
				ON CONFLICT (sink) DO UPDATE SET last_id = ?2`, sink, from-1)
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sink_cursors (sink, last_id)
			VALUES (?, (SELECT coalesce(max(id), 0) FROM callbacks)) ON CONFLICT (sink) DO NOTHING`, sink)
		return err
	})
	if err != nil {
		return fmt.Errorf("start sink %s: %w", sink, err)
	}
	return nil
}

// SinkCursors lists every sink's cursor.
func (db *DB) SinkCursors(ctx context.Context) (map[string]int64, error) {
	rows, err := db.rc.QueryContext(ctx, "SELECT sink, last_id FROM sink_cursors")
	if err != nil {
		return nil, fmt.Errorf("sink cursors: %w", err)
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
	return out, rows.Err()
}

// DeliveryAttempts is how many times a sink has tried a callback.
func (db *DB) DeliveryAttempts(ctx context.Context, sink string, callbackID int64) (int, error) {
	var n int
	err := db.rc.QueryRowContext(ctx, "SELECT attempts FROM deliveries WHERE callback_id = ? AND sink = ?", callbackID, sink).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("delivery attempts of callback %d: %w", callbackID, err)
	}
	return n, nil
}

// RecordDelivery records an attempt. A delivered or dead callback moves
// the sink's cursor past it, in the same transaction.
func (db *DB) RecordDelivery(ctx context.Context, d store.Delivery) error {
	now := time.Now().UnixNano()
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var delivered any
		if d.State == store.DeliveryDelivered {
			delivered = now
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO deliveries (callback_id, sink, state, attempts, last_error, delivered_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (callback_id, sink) DO UPDATE SET state = excluded.state, attempts = excluded.attempts,
				last_error = coalesce(excluded.last_error, deliveries.last_error), delivered_at = excluded.delivered_at, updated_at = excluded.updated_at`,
			d.CallbackID, d.Sink, d.State, d.Attempts, nullString(d.LastError), delivered, now); err != nil {
			return err
		}
		if d.State == store.DeliveryRetrying {
			return nil
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sink_cursors (sink, last_id) VALUES (?, ?)
			ON CONFLICT (sink) DO UPDATE SET last_id = max(last_id, excluded.last_id)`, d.Sink, d.CallbackID)
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
	rows, err := db.rc.QueryContext(ctx, `SELECT `+callbackColumns+`, c.id <= j.released_id,
		coalesce(d.sink, ''), coalesce(d.state, ''), coalesce(d.attempts, 0), coalesce(d.last_error, ''), d.delivered_at
		FROM callbacks c JOIN jobs j ON j.id = c.job_id LEFT JOIN deliveries d ON d.callback_id = c.id
		WHERE c.job_id = ? ORDER BY c.id, d.sink`, jobID)
	if err != nil {
		return nil, fmt.Errorf("deliveries of job %d: %w", jobID, err)
	}
	defer rows.Close()
	var out []store.DeliveryRow
	for rows.Next() {
		var (
			r         store.DeliveryRow
			delivered sql.NullInt64
		)
		cb, err := scanCallback(scanFunc(func(dest ...any) error {
			return rows.Scan(append(dest, &r.Released, &r.Sink, &r.State, &r.Attempts, &r.LastError, &delivered)...)
		}))
		if err != nil {
			return nil, fmt.Errorf("deliveries of job %d: %w", jobID, err)
		}
		r.Callback = cb
		if delivered.Valid {
			r.DeliveredAt = time.Unix(0, delivered.Int64)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// DeadDeliveries counts the callbacks each sink gave up on.
func (db *DB) DeadDeliveries(ctx context.Context) (map[string]int64, error) {
	rows, err := db.rc.QueryContext(ctx, "SELECT sink, count(*) FROM deliveries WHERE state = 'dead' GROUP BY sink")
	if err != nil {
		return nil, fmt.Errorf("dead deliveries: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var sink string
		var n int64
		if err := rows.Scan(&sink, &n); err != nil {
			return nil, fmt.Errorf("dead deliveries: %w", err)
		}
		out[sink] = n
	}
	return out, rows.Err()
}
