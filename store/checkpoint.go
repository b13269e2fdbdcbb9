package store

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

// checkpointer copies the write-ahead log back into the database file from
// a connection and a goroutine of its own. Left to SQLite, the writer does
// it every 1000 pages, inside a commit, and the group commit that happens
// to cross the line waits for it (about a tenth of a 1M-task run). A
// PASSIVE checkpoint takes no lock that the writer or a reader waits for.
type checkpointer struct {
	conn *sql.DB
	poke chan struct{} // capacity 1: a commit happened
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func startCheckpointer(dsn string) (*checkpointer, error) {
	conn, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	conn.SetMaxOpenConns(1)
	c := &checkpointer{conn: conn, poke: make(chan struct{}, 1), stop: make(chan struct{})}
	c.wg.Add(1)
	go c.run()
	return c, nil
}

func (c *checkpointer) run() {
	defer c.wg.Done()
	ctx := context.Background()
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.poke:
		}
		// An error (the disk is full, say) leaves the pages in the WAL,
		// where they are safe; the next commit pokes again, and the
		// writer's own backstop bounds the WAL meanwhile.
		_, _ = c.conn.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
		pause.Reset(checkpointEvery)
		select {
		case <-c.stop:
			return
		case <-pause.C:
		}
	}
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
	c.once.Do(func() { close(c.stop) })
	c.wg.Wait()
	return c.conn.Close()
}
