package sqlite

import (
	"context"
	"database/sql"
	"sync"
	"time"
)

// checkpointEvery is how often, at most, the checkpointer copies the WAL
// into the database file while commits keep coming.
const checkpointEvery = 100 * time.Millisecond

// walBackstop is the WAL size, in pages, at which the writer checkpoints
// by itself: only when the checkpointer cannot keep up or fails.
const walBackstop = 4096 // 16 MiB of 4 KiB pages

// walSizeLimit is SQLite's journal_size_limit: when the WAL starts over,
// a longer file is cut back to this. Without it a WAL that a long reader
// let grow kept its size on disk until the last connection closed.
const walSizeLimit = 64 << 20

// DefaultWALWarn is the WAL size past which the checkpointer reports a
// reader that keeps it from being checkpointed.
const DefaultWALWarn = 256 << 20

// idleTruncate is how long after the last commit the checkpointer empties
// the WAL (a TRUNCATE checkpoint), and how often it tries again while a
// reader prevents it.
const idleTruncate = time.Second

// checkpointer copies the write-ahead log back into the database file from
// a connection and a goroutine of its own. Left to SQLite, the writer does
// it every 1000 pages, inside a commit, and the group commit that happens
// to cross the line waits for it (about a tenth of a 1M-task run). A
// PASSIVE checkpoint takes no lock that the writer or a reader waits for.
//
// A reader that holds a snapshot open (an sqlite3 shell inside BEGIN, a
// long query) stops checkpoints from getting past it, and the WAL grows
// meanwhile. The checkpointer reports that once per episode, past
// walWarn bytes, and once the commits stop it empties the WAL with a
// TRUNCATE checkpoint, retried each idleTruncate until readers let go.
// Its connection never waits on a lock (busy_timeout 0): a TRUNCATE that
// cannot proceed gives up at once rather than hold up the writer.
type checkpointer struct {
	conn    *sql.DB
	poke    chan struct{} // capacity 1: a commit happened
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	walWarn int64
	onWarn  func(walBytes int64)
}

func startCheckpointer(dsn string, walWarn int64, onWarn func(int64)) (*checkpointer, error) {
	conn, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	conn.SetMaxOpenConns(1)
	conn.SetMaxIdleConns(1)
	conn.SetConnMaxLifetime(0)
	conn.SetConnMaxIdleTime(0)
	if _, err := conn.Exec("PRAGMA busy_timeout = 0"); err != nil {
		conn.Close()
		return nil, err
	}
	if walWarn <= 0 {
		walWarn = DefaultWALWarn
	}
	c := &checkpointer{conn: conn, poke: make(chan struct{}, 1), stop: make(chan struct{}), walWarn: walWarn, onWarn: onWarn}
	c.wg.Add(1)
	go c.run()
	return c, nil
}

func (c *checkpointer) run() {
	defer c.wg.Done()
	ctx := context.Background()
	pause := time.NewTimer(0)
	defer pause.Stop()
	idle := time.NewTimer(time.Hour)
	defer idle.Stop()
	warned := false
	for {
		select {
		case <-c.stop:
			return
		case <-c.poke:
			// An error (the disk is full, say) leaves the pages in the
			// WAL, where they are safe; the next commit pokes again, and
			// the writer's own backstop bounds the WAL meanwhile.
			var busy, logPages, done int64
			if c.conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logPages, &done) == nil && logPages >= 0 {
				size := logPages * c.pageSize(ctx)
				switch {
				case size > c.walWarn && done < logPages && !warned:
					warned = true
					if c.onWarn != nil {
						c.onWarn(size)
					}
				case size <= c.walWarn:
					warned = false
				}
			}
			idle.Reset(idleTruncate)
			pause.Reset(checkpointEvery)
			select {
			case <-c.stop:
				return
			case <-pause.C:
			}
		case <-idle.C:
			var busy, logPages, done int64
			err := c.conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &done)
			if err != nil || busy != 0 {
				idle.Reset(idleTruncate) // a reader or a writer is there: later
				continue
			}
			warned = false
		}
	}
}

// pageSize is the database's page size in bytes.
func (c *checkpointer) pageSize(ctx context.Context) int64 {
	var n int64
	if c.conn.QueryRowContext(ctx, "PRAGMA page_size").Scan(&n) != nil || n <= 0 {
		return 4096
	}
	return n
}

// committed tells the checkpointer that the WAL has grown. Commits made
// while Open migrates, before it starts, need none.
func (c *checkpointer) committed() {
	if c == nil {
		return
	}
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

func (c *checkpointer) close() error {
	if c == nil {
		return nil
	}
	c.once.Do(func() { close(c.stop) })
	c.wg.Wait()
	return c.conn.Close()
}
