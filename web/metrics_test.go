package web

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pcd-dev/pcd/engine"
)

// TestMetrics: /metrics parses as the Prometheus text format, passes
// promlint, and its counters match what the database holds after a job.
func TestMetrics(t *testing.T) {
	srv, db := newServer(t, "")
	m := NewMetrics(clientOf(db))
	srv.Config.Handler = Handler(clientOf(db), Options{Metrics: m.Handler()})
	r := call(t, srv, "POST", "/api/v1/jobs", jobFile)
	id := r.body["job_id"].(string)
	runner, err := engine.OpenRunner(context.Background(), db, engine.RunnerConfig{Role: engine.RoleRun,
		Config: engine.Config{OnEvent: m.Observe, OnGroupCommit: m.GroupCommit}})
	if err != nil {
		t.Fatal(err)
	}
	job, _ := db.FindJob(context.Background(), id)
	done, err := runner.RunJob(context.Background(), job.ID)
	runner.Close()
	if err != nil {
		t.Fatal(err)
	}

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	problems, err := promlint.New(strings.NewReader(string(raw))).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "pcd_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f := families[name]
		if f == nil {
			t.Fatalf("no %s in /metrics", name)
		}
		for _, mt := range f.Metric {
			if matches(mt, labels) {
				switch {
				case mt.Counter != nil:
					return mt.Counter.GetValue()
				case mt.Gauge != nil:
					return mt.Gauge.GetValue()
				case mt.Histogram != nil:
					return float64(mt.Histogram.GetSampleCount())
				}
			}
		}
		t.Fatalf("no %s%v in /metrics", name, labels)
		return 0
	}
	if got := value("pcd_tasks_completed_total", map[string]string{"kind": "noop", "state": "succeeded"}); got != float64(done.Succeeded) {
		t.Errorf("succeeded noop tasks: %v, the database holds %d", got, done.Succeeded)
	}
	if got := value("pcd_tasks_completed_total", map[string]string{"kind": "fail", "state": "failed"}); got != float64(done.Failed) {
		t.Errorf("failed tasks: %v, the database holds %d", got, done.Failed)
	}
	if got := value("pcd_task_duration_seconds", map[string]string{"kind": "noop"}); got != 2 {
		t.Errorf("noop durations observed: %v, want 2", got)
	}
	if got := value("pcd_jobs", map[string]string{"state": "failed"}); got != 1 {
		t.Errorf("failed jobs: %v", got)
	}
	if got := value("pcd_group_commit_seconds", nil); got < 1 {
		t.Errorf("group commits observed: %v", got)
	}
	for _, name := range []string{"pcd_database_bytes", "pcd_wal_bytes", "pcd_tasks_pending", "pcd_tasks_running", "pcd_database_up", "go_goroutines", "process_resident_memory_bytes"} {
		value(name, nil)
	}
}

func matches(m *dto.Metric, labels map[string]string) bool {
	for k, v := range labels {
		found := false
		for _, l := range m.Label {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// TestGrafanaDashboard: the sample dashboard is JSON whose queries name
// only metrics that /metrics serves.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil || len(dash.Panels) == 0 {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	srv, db := newServer(t, "")
	m := NewMetrics(clientOf(db))
	m.Observe(engine.Event{Task: &engine.TaskEvent{Kind: "noop", State: "succeeded"}})
	m.GroupCommit(1, 0, time.Millisecond)
	srv.Config.Handler = Handler(clientOf(db), Options{Metrics: m.Handler()})
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	served := string(body)
	// Gauges with no sample now (no sink has a backlog) are described
	// all the same.
	descs := make(chan *prometheus.Desc, 32)
	dbCollector{}.Describe(descs)
	close(descs)
	for d := range descs {
		if m := regexp.MustCompile(`fqName: "([^"]+)"`).FindStringSubmatch(d.String()); m != nil {
			served += "\n" + m[1] + " "
		}
	}
	name := regexp.MustCompile(`\b(pcd_[a-z_]+|process_[a-z_]+)\b`)
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			for _, n := range name.FindAllString(target.Expr, -1) {
				if !strings.Contains(served, "\n"+n+" ") && !strings.Contains(served, "\n"+n+"{") {
					t.Errorf("panel %q queries %s, which /metrics does not serve", p.Title, n)
				}
			}
		}
	}
}
