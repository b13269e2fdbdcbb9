package web

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// keepAlive is how often an idle event stream gets a comment, so that
// proxies and clients see it alive.
const keepAlive = 15 * time.Second

// events streams committed callbacks as Server-Sent Events: pcd watch
// over HTTP. Each event's id is its callback_id, its type "task" or
// "job", its data the callback's JSON. A client that reconnects with
// Last-Event-ID (or ?after=ID) goes on after that event, with none lost
// or repeated. ?job=ID,ID follows those jobs; with none, every job.
// ?follow=false ends the stream once the jobs are complete.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	after, err := lastEventID(r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	var ids []int64
	if refs := r.URL.Query().Get("job"); refs != "" {
		for _, ref := range strings.Split(refs, ",") {
			j, err := s.db.FindJob(r.Context(), strings.TrimSpace(ref))
			if err != nil {
				s.failErr(w, r, err)
				return
			}
			ids = append(ids, j.ID)
		}
	}
	follow := r.URL.Query().Get("follow") != "false"
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	out := bufio.NewWriterSize(w, 32<<10)
	flush := func() error {
		if err := out.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := flush(); err != nil {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	// mu keeps the keep-alive comments between whole events.
	var mu sync.Mutex
	go func() {
		tick := time.NewTicker(keepAlive)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			mu.Lock()
			_, _ = out.WriteString(": keep-alive\n\n")
			err := flush()
			mu.Unlock()
			if err != nil {
				cancel()
				return
			}
		}
	}()
	var buf []byte
	err = engine.Watch(ctx, s.db, engine.WatchOptions{
		JobIDs: ids, Follow: follow, After: after,
		OnCallback: func(cb store.Callback) error {
			var err error
			if buf, err = engine.CallbackJSON(buf[:0], cb); err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(out, "id: %d\nevent: %s\ndata: ", cb.ID, cb.Event)
			_, _ = out.Write(buf)
			_, err = out.WriteString("\n\n")
			return err
		},
		Flush: func() error {
			mu.Lock()
			defer mu.Unlock()
			return flush()
		},
		OnTrouble: func(err error) {
			if err != nil {
				mu.Lock()
				fmt.Fprintf(out, ": the database cannot be read (%s); waiting\n\n", strings.ReplaceAll(err.Error(), "\n", " "))
				_ = flush()
				mu.Unlock()
			}
		},
	})
	cancel()
	mu.Lock()
	defer mu.Unlock()
	if err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
		fmt.Fprintf(out, "event: error\ndata: %q\n\n", err.Error())
		_ = flush()
	}
}

// lastEventID is where a stream resumes: Last-Event-ID, or ?after.
func lastEventID(r *http.Request) (int64, error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("after")
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest("Last-Event-ID (or after) must be a callback id, got %q", v)
	}
	return n, nil
}
