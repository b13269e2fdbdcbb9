package e2e_test

// Benchmarks that drive a normal (not race-enabled) pcd binary:
//
//	go test -run '^$' -bench 'Demo|SubmitToFirstTask' -benchtime 20x .
//	go test -run '^$' -bench IdleDaemon -benchtime 1x .

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fastPCD is pcd built without the race detector, for timing.
func fastPCD(b *testing.B) string { return buildPlain(b) }

func startFastDaemon(b *testing.B, db string) *exec.Cmd {
	b.Helper()
	cmd := exec.Command(fastPCD(b), "daemon", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "PCD_DB="+db)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(db + ".sock"); err == nil {
			return cmd
		}
		if time.Now().After(deadline) {
			b.Fatal("daemon did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkSubmitToFirstTask measures the time from `pcd submit` returning
// to the daemon starting the job's first task (the task's recorded start).
func BenchmarkSubmitToFirstTask(b *testing.B) {
	dir := b.TempDir()
	db := filepath.Join(dir, "pcd.db")
	job := filepath.Join(dir, "one.json")
	os.WriteFile(job, []byte(`{"tasks":[{"kind":"noop"}]}`), 0o600)
	startFastDaemon(b, db)
	var lat []float64
	for b.Loop() {
		cmd := exec.Command(fastPCD(b), "submit", job)
		cmd.Env = append(os.Environ(), "PCD_DB="+db)
		out, err := cmd.Output()
		returned := time.Now()
		if err != nil {
			b.Fatal(err)
		}
		id := strings.TrimSpace(string(out))
		var started int64
		for deadline := time.Now().Add(10 * time.Second); started == 0; {
			started = int64(queryDBAny(b, db, "SELECT max(coalesce((SELECT max(u.started_at) FROM running u JOIN jobs j ON j.id = u.job_id WHERE j.uuid = '"+id+"'), 0), coalesce((SELECT max(r.started_at) FROM results r JOIN jobs j ON j.id = r.job_id WHERE j.uuid = '"+id+"'), 0))"))
			if time.Now().After(deadline) {
				b.Fatal("task never started")
			}
			if started == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		lat = append(lat, float64(time.Unix(0, started).Sub(returned))/1e6)
	}
	slices.Sort(lat)
	b.ReportMetric(lat[len(lat)/2], "p50-ms")
	b.ReportMetric(lat[len(lat)-1], "max-ms")
}

// BenchmarkIdleDaemonCPU measures the CPU an idle daemon uses over 10 s, as
// a percentage of one core.
func BenchmarkIdleDaemonCPU(b *testing.B) {
	db := filepath.Join(b.TempDir(), "pcd.db")
	d := startFastDaemon(b, db)
	time.Sleep(time.Second)
	for b.Loop() {
		before := cpuTicks(b, d.Process.Pid)
		t0 := time.Now()
		time.Sleep(10 * time.Second)
		ticks := cpuTicks(b, d.Process.Pid) - before
		b.ReportMetric(float64(ticks)/100/time.Since(t0).Seconds()*100, "%cpu")
	}
}

// cpuTicks reads utime+stime of a process, in clock ticks (100 Hz).
func cpuTicks(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return utime + stime
}

// BenchmarkDemo runs `pcd run --demo` and reports how long after its
// longest sleep each job completed: elapsed_secs minus the longest task's
// time_secs.
func BenchmarkDemo(b *testing.B) {
	db := filepath.Join(b.TempDir(), "pcd.db")
	var gaps []float64
	for b.Loop() {
		cmd := exec.Command(fastPCD(b), "run", "--demo", "--json")
		cmd.Env = append(os.Environ(), "PCD_DB="+db)
		out, err := cmd.Output()
		if err != nil {
			b.Fatal(err)
		}
		var longest, elapsed float64
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var ev struct {
				Event       string  `json:"event"`
				TimeSecs    float64 `json:"time_secs"`
				ElapsedSecs float64 `json:"elapsed_secs"`
			}
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				b.Fatal(err)
			}
			longest = max(longest, ev.TimeSecs)
			if ev.Event == "job" {
				elapsed = ev.ElapsedSecs
			}
		}
		gaps = append(gaps, (elapsed-longest)*1000)
	}
	slices.Sort(gaps)
	b.ReportMetric(gaps[len(gaps)/2], "p50-gap-ms")
	b.ReportMetric(gaps[len(gaps)-1], "max-gap-ms")
}

// BenchmarkExecVsXargs runs 2,000 `true` commands with 25 at a time, by
// pcd run and by xargs -P 25 -n 1 on the same input, in the same run, and
// reports the ratio of their medians.
func BenchmarkExecVsXargs(b *testing.B) {
	dir := b.TempDir()
	var tasks []string
	for range 2000 {
		tasks = append(tasks, `{"kind":"exec","payload":{"argv":["true"]}}`)
	}
	job := filepath.Join(dir, "true.json")
	os.WriteFile(job, []byte(`{"workers":25,"tasks":[`+strings.Join(tasks, ",")+`]}`), 0o600)
	input := filepath.Join(dir, "input")
	os.WriteFile(input, []byte(strings.Repeat("x\n", 2000)), 0o600)
	var pcdTimes, xargsTimes []float64
	for b.Loop() {
		db := filepath.Join(dir, "pcd.db")
		os.Remove(db)
		cmd := exec.Command(fastPCD(b), "run", "--json", job)
		cmd.Env = append(os.Environ(), "PCD_DB="+db)
		t0 := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("pcd: %v\n%s", err, out[max(len(out)-500, 0):])
		}
		pcdTimes = append(pcdTimes, time.Since(t0).Seconds())

		x := exec.Command("sh", "-c", "xargs -P 25 -n 1 true < "+input)
		t0 = time.Now()
		if out, err := x.CombinedOutput(); err != nil {
			b.Fatalf("xargs: %v\n%s", err, out)
		}
		xargsTimes = append(xargsTimes, time.Since(t0).Seconds())
	}
	slices.Sort(pcdTimes)
	slices.Sort(xargsTimes)
	p, x := pcdTimes[len(pcdTimes)/2], xargsTimes[len(xargsTimes)/2]
	b.ReportMetric(p, "pcd-s")
	b.ReportMetric(x, "xargs-s")
	b.ReportMetric(p/x, "ratio")
}
