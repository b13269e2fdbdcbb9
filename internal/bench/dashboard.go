package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
	"github.com/pcd-dev/pcd/store/sqlite"
)

// dashboard: a database with a finished job of big tasks (one in a
// thousand failed) and `jobs` pending one-task jobs, served by pcd serve;
// how long the API takes to answer each page of the dashboard: every
// request the page makes when it opens, the slowest of 5 tries each.
func (b *bench) dashboard(big, jobs int) ([]benchRow, error) {
	db := b.db()
	defer os.Remove(db)
	file, err := b.bigFailingJob(big)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(b.log, "pcd bench: dashboard: running a %d-task job...\n", big)
	if _, _, err := b.pcd(context.Background(), db, nil, "run", "--quiet", file); err != nil && !strings.Contains(err.Error(), "exit status 1") {
		return nil, err
	}
	fmt.Fprintf(b.log, "pcd bench: dashboard: writing %d pending jobs...\n", jobs)
	s, err := sqlite.Open(context.Background(), db, sqlite.Options{Sync: sqlite.SyncNormal})
	if err != nil {
		return nil, err
	}
	for i := range jobs {
		nj := store.NewJob{Name: fmt.Sprintf("nightly-%05d", i), Workers: engine.DefaultWorkers, QueueSize: engine.DefaultQueueSize,
			Tasks: []store.NewTask{{Kind: "noop", Payload: []byte("null")}}}
		if _, err := s.CreateJob(context.Background(), nj); err != nil {
			s.Close()
			return nil, err
		}
	}
	bigJob, err := s.ListJobs(context.Background(), store.JobFilter{Name: "big", Limit: 1})
	s.Close()
	if err != nil || len(bigJob) != 1 {
		return nil, fmt.Errorf("the big job: %v", err)
	}
	id := bigJob[0].UUID

	srv, base, err := b.httpServer(db, "serve")
	if err != nil {
		return nil, err
	}
	defer stop(srv)
	pages := []struct {
		name  string
		paths []string
	}{
		{"overview", []string{"/api/v1/status", "/api/v1/throughput?minutes=60"}},
		{"jobs, newest 100", []string{"/api/v1/jobs?limit=100"}},
		{"jobs, a page half way down", []string{fmt.Sprintf("/api/v1/jobs?limit=100&before=%d", jobs/2)}},
		{"jobs by name", []string{"/api/v1/jobs?limit=100&name=nightly-0999"}},
		{"jobs by state (failed)", []string{"/api/v1/jobs?limit=100&state=failed"}},
		{"the big job: failed tasks, first 200", []string{"/api/v1/jobs/" + id, "/api/v1/jobs/" + id + "/tasks?state=failed&limit=1000", "/api/v1/jobs/" + id + "/tasks?limit=200&after=0"}},
		{"the big job: 200 tasks 90 % in", []string{fmt.Sprintf("/api/v1/jobs/%s/tasks?limit=200&after=%d", id, big*9/10)}},
		{"the big job: a task's output", []string{fmt.Sprintf("/api/v1/jobs/%s/tasks/%d", id, big-1)}},
	}
	var rows []benchRow
	for _, p := range pages {
		row := benchRow{Workload: fmt.Sprintf("dashboard %s (%d jobs, a %d-task job)", p.name, jobs+1, big), Unit: "ms", Target: "< 500"}
		for range max(b.runs, 5) {
			t0 := time.Now()
			for _, path := range p.paths {
				if err := get(base + path); err != nil {
					return nil, err
				}
			}
			row.Values = append(row.Values, float64(time.Since(t0).Microseconds())/1000)
		}
		// The slowest try, as the one a user waits for.
		row.Values = []float64{slices.Max(row.Values)}
		rows = append(rows, row)
	}
	return rows, nil
}

// bigFailingJob writes a job file of n tasks, one in a thousand failing.
func (b *bench) bigFailingJob(n int) (string, error) {
	file := filepath.Join(b.dir, "dashboard.json")
	f, err := os.Create(file)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(`{"name": "big", "workers": 25, "tasks": [`)
	for i := range n {
		if i > 0 {
			w.WriteByte(',')
		}
		if i%1000 == 999 {
			w.WriteString(`{"kind":"fail","payload":{"error":"one in a thousand"}}`)
		} else {
			w.WriteString(`{"kind":"noop"}`)
		}
	}
	w.WriteString("]}\n")
	return file, errors.Join(w.Flush(), f.Close())
}

func get(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// httpServer starts this binary's command (daemon or serve) on db with
// --http on a free loopback port, and returns it once /readyz answers,
// with the server's base URL.
func (b *bench) httpServer(db, command string) (*exec.Cmd, string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	addr := l.Addr().String()
	l.Close()
	cmd := dieWithBench(exec.Command(b.self, command, "--log-level", "warn", "--http", addr))
	cmd.Env = append(os.Environ(), "PCD_DB="+db)
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	base := "http://" + addr
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return cmd, base, nil
			}
		}
		if time.Now().After(deadline) {
			stop(cmd)
			return nil, "", fmt.Errorf("pcd %s --http %s did not answer in 30 s", command, addr)
		}
	}
}
