package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pcd-dev/pcd/store/sqlite"
)

// sseLoad: a job of n no-ops run by a daemon serving --http, with no
// client on its event stream, with `clients` clients reading every event,
// and with as many reading it sampled (?sample=true, as the dashboard
// does), alternating, run after run. The rate is the job's own: its tasks
// over its elapsed time. A client's lag is how long after the job's
// commit the last client read its job event.
func (b *bench) sseLoad(n, clients int) ([]benchRow, error) {
	alone := benchRow{Workload: fmt.Sprintf("%d no-ops, daemon --http, no event-stream client", n), Unit: "tasks/s"}
	full := benchRow{Workload: fmt.Sprintf("%d no-ops, %d clients reading every event", n, clients), Unit: "tasks/s"}
	sampled := benchRow{Workload: fmt.Sprintf("%d no-ops, %d clients reading sampled events", n, clients), Unit: "tasks/s"}
	fullRatio := benchRow{Workload: fmt.Sprintf("rate with %d clients reading every event / none", clients), Unit: "ratio",
		Note: "every event is about 250 bytes to each client: the bytes, not pcd, fill 2 cores"}
	sampledRatio := benchRow{Workload: fmt.Sprintf("rate with %d clients reading sampled events / none", clients), Unit: "ratio", Target: ">= 0.90"}
	lag := benchRow{Workload: fmt.Sprintf("last of %d clients reads the job's event, after its commit", clients), Unit: "s (max)"}
	file, err := b.jobFile("sse.json", n, `{"kind":"noop"}`)
	if err != nil {
		return nil, err
	}
	for range b.runs {
		base, _, err := b.sseRun(file, 0, "")
		if err != nil {
			return nil, err
		}
		alone.Values = append(alone.Values, base)
		for _, c := range []struct {
			query       string
			rate, ratio *benchRow
		}{{"", &full, &fullRatio}, {"?sample=true", &sampled, &sampledRatio}} {
			rate, behind, err := b.sseRun(file, clients, c.query)
			if err != nil {
				return nil, err
			}
			c.rate.Values = append(c.rate.Values, rate)
			c.ratio.Values = append(c.ratio.Values, rate/base)
			lag.Values = append(lag.Values, behind.Seconds())
		}
	}
	return []benchRow{alone, full, sampled, fullRatio, sampledRatio, lag}, nil
}

// sseRun runs one job of the file with k clients on the event stream,
// asking for it with query.
func (b *bench) sseRun(file string, k int, query string) (rate float64, lag time.Duration, err error) {
	db := b.db()
	defer os.Remove(db)
	d, base, err := b.httpServer(db, "daemon")
	if err != nil {
		return 0, 0, err
	}
	defer stop(d)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// Each client follows every job from now on; it is done when it has
	// read a job event.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last time.Time
	var clientErr error
	connected := make(chan struct{}, k)
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := followEvents(ctx, base+"/api/v1/events"+query, connected)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && clientErr == nil {
				clientErr = err
			}
			if now := time.Now(); now.After(last) {
				last = now
			}
		}()
	}
	for range k {
		select {
		case <-connected:
		case <-ctx.Done():
			return 0, 0, errors.New("the clients did not connect")
		}
	}
	out, _, err := b.pcd(ctx, db, nil, "submit", file)
	if err != nil {
		return 0, 0, err
	}
	id := strings.TrimSpace(out)
	s, err := sqlite.Open(ctx, db, sqlite.Options{MustExist: true})
	if err != nil {
		return 0, 0, err
	}
	defer s.Close()
	for {
		job, err := s.FindJob(ctx, id)
		if err != nil {
			return 0, 0, err
		}
		if job.Finished() {
			wg.Wait()
			if clientErr != nil {
				return 0, 0, clientErr
			}
			if k > 0 {
				lag = max(0, last.Sub(job.FinishedAt))
			}
			return float64(job.Total) / job.Elapsed.Seconds(), lag, nil
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return 0, 0, errors.New("the job did not finish in 10 minutes")
		}
	}
}

// followEvents reads an event stream until its first job event.
func followEvents(ctx context.Context, url string, connected chan<- struct{}) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	connected <- struct{}{}
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("the event stream ended before the job's event: %w", err)
		}
		if string(line) == "event: job\n" {
			return nil
		}
	}
}
