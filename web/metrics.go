package web

import (
	"context"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pcd-dev/pcd/engine"
	"github.com/pcd-dev/pcd/store"
)

// Metrics are pcd's Prometheus metrics. The counters and histograms count
// what this process's runner did (sum them over daemons in PromQL); the
// gauges are read from the database at each scrape, so they are the
// whole queue's, whichever daemon serves them.
type Metrics struct {
	reg      *prometheus.Registry
	tasks    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	commits  prometheus.Histogram
	latency  prometheus.Histogram
}

// NewMetrics registers pcd's metrics, the Go runtime's and the process's,
// reading the gauges from db.
func NewMetrics(c *engine.Client) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pcd_tasks_completed_total", Help: "Tasks this runner completed, by kind and final state.",
		}, []string{"kind", "state"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pcd_task_duration_seconds", Help: "Run time of the tasks this runner completed, by kind.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10), // 1 ms to 4.4 min
		}, []string{"kind"}),
		commits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pcd_group_commit_results", Help: "Results (and start marks) written by one group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8), // 1 to 16384
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pcd_group_commit_seconds", Help: "How long one group commit took.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9), // 100 µs to 6.5 s
		}),
	}
	m.reg.MustRegister(m.tasks, m.duration, m.commits, m.latency, dbCollector{c: c},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Observe counts a callback of this runner's: engine.Config.OnEvent.
func (m *Metrics) Observe(ev engine.Event) {
	if t := ev.Task; t != nil {
		m.tasks.WithLabelValues(t.Kind, string(t.State)).Inc()
		m.duration.WithLabelValues(t.Kind).Observe(t.TimeSecs)
	}
}

// GroupCommit records one group commit: engine.Config.OnGroupCommit.
func (m *Metrics) GroupCommit(results, starts int, took time.Duration) {
	m.commits.Observe(float64(results + starts))
	m.latency.Observe(took.Seconds())
}

// dbCollector reads the queue's gauges from the database at each scrape.
type dbCollector struct{ c *engine.Client }

var (
	jobsDesc     = prometheus.NewDesc("pcd_jobs", "Jobs in the database, by state.", []string{"state"}, nil)
	pendingDesc  = prometheus.NewDesc("pcd_tasks_pending", "Tasks of unfinished jobs not final yet: the durable queue's depth.", nil, nil)
	runningDesc  = prometheus.NewDesc("pcd_tasks_running", "Tasks running now, in every live runner.", nil, nil)
	runnersDesc  = prometheus.NewDesc("pcd_runners", "Live runners (daemons, pcd run) of the database.", nil, nil)
	callbackDesc = prometheus.NewDesc("pcd_callbacks_pending", "Callbacks a sink has not delivered yet, by sink.", []string{"sink"}, nil)
	deadDesc     = prometheus.NewDesc("pcd_callbacks_dead", "Callbacks a sink gave up on (its attempts ran out), by sink.", []string{"sink"}, nil)
	sizeDesc     = prometheus.NewDesc("pcd_database_bytes", "Size of the database: the SQLite file, or pcd's tables on PostgreSQL.", nil, nil)
	walDesc      = prometheus.NewDesc("pcd_wal_bytes", "Size of the SQLite write-ahead log.", nil, nil)
	upDesc       = prometheus.NewDesc("pcd_database_up", "1 if the database answered this scrape.", nil, nil)
)

func (dbCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{jobsDesc, pendingDesc, runningDesc, runnersDesc, callbackDesc, deadDesc, sizeDesc, walDesc, upDesc} {
		ch <- d
	}
}

func (c dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	counts, err := c.c.Counts(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 1)
	var pending int64
	for _, state := range []store.State{store.Pending, store.Running, store.Succeeded, store.Failed, store.Cancelled} {
		t := counts[state]
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(t.Jobs), string(state))
		if !state.Final() {
			pending += t.Tasks - t.Done
		}
	}
	running, live := 0, 0
	if runners, err := c.c.Runners(ctx); err == nil {
		for _, r := range runners {
			if r.Alive {
				running += r.Running
				live++
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(pending-int64(running)))
	ch <- prometheus.MustNewConstMetric(runningDesc, prometheus.GaugeValue, float64(running))
	ch <- prometheus.MustNewConstMetric(runnersDesc, prometheus.GaugeValue, float64(live))
	if backlog, err := c.c.SinkBacklog(ctx); err == nil {
		for sink, n := range backlog {
			ch <- prometheus.MustNewConstMetric(callbackDesc, prometheus.GaugeValue, float64(n), sink)
		}
	}
	if dead, err := c.c.DeadDeliveries(ctx); err == nil {
		bySink := map[string]int64{}
		for sink, n := range dead {
			bySink[engine.SinkKind(sink)] += n
		}
		for sink, n := range bySink {
			ch <- prometheus.MustNewConstMetric(deadDesc, prometheus.GaugeValue, float64(n), sink)
		}
	}
	ch <- prometheus.MustNewConstMetric(sizeDesc, prometheus.GaugeValue, float64(c.c.Size()))
	if path := c.c.Path(); !strings.Contains(path, "://") {
		if fi, err := os.Stat(path + "-wal"); err == nil {
			ch <- prometheus.MustNewConstMetric(walDesc, prometheus.GaugeValue, float64(fi.Size()))
		}
	}
}
