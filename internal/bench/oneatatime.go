package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// oneAtATime measures what a user who queues commands one at a time from
// a shell loop pays, against task-spooler (tsp) in the same run, the runs
// alternating: the start of the binary (pcd --version against tsp -h),
// and n submits of `true` to a running daemon (pcd submit -- true, each
// committed with its fsync, against tsp true). Without tsp the rows say
// so and measure pcd alone.
func (b *bench) oneAtATime() ([]benchRow, error) {
	n := 300
	if b.quick {
		n = 30
	}
	start := benchRow{Workload: "start the binary: pcd --version / tsp -h", Unit: "ratio", Target: "<= 2"}
	submit := benchRow{Workload: fmt.Sprintf("a shell loop of %d submits to a running daemon: pcd submit -- true / tsp true", n),
		Unit: "ratio", Target: "<= 1.0"}
	tsp, err := exec.LookPath("tsp")
	if err != nil {
		start.Unit, start.Target, start.Note = "ms each", "report", "tsp is not installed (Debian's task-spooler): pcd alone"
		submit.Unit, submit.Target, submit.Note = "ms each", "report", start.Note
	}
	for range b.runs {
		p, err := b.shellLoop(n, nil, b.self, "--version")
		if err != nil {
			return nil, err
		}
		if tsp == "" {
			start.Values = append(start.Values, p.Seconds()*1000/float64(n))
		} else {
			t, err := b.shellLoop(n, nil, tsp, "-h")
			if err != nil {
				return nil, err
			}
			start.Values = append(start.Values, p.Seconds()/t.Seconds())
		}

		db := b.db()
		d, err := b.daemon(db)
		if err != nil {
			return nil, err
		}
		p, err = b.shellLoop(n, []string{"PCD_DB=" + db}, b.self, "submit", "--", "true")
		stop(d)
		if err != nil {
			return nil, err
		}
		if tsp == "" {
			submit.Values = append(submit.Values, p.Seconds()*1000/float64(n))
			continue
		}
		t, err := b.tspLoop(tsp, n)
		if err != nil {
			return nil, err
		}
		submit.Values = append(submit.Values, p.Seconds()/t.Seconds())
	}
	return []benchRow{start, submit}, nil
}

// shellLoop runs argv n times from a shell loop, with extra environment,
// and returns the time the loop took. tsp -h exits 0 on some versions and
// not on others: a loop of "--version" or "-h" ignores the exit code.
func (b *bench) shellLoop(n int, env []string, argv ...string) (time.Duration, error) {
	script := `i=0; while [ $i -lt "$N" ]; do "$@" >/dev/null 2>&1 || [ "$IGNORE" = 1 ] || exit 1; i=$((i+1)); done`
	ignore := "0"
	if last := argv[len(argv)-1]; last == "-h" || last == "--version" {
		ignore = "1"
	}
	cmd := dieWithBench(exec.Command("sh", append([]string{"-c", script, "loop"}, argv...)...))
	cmd.Env = append(append(os.Environ(), "N="+strconv.Itoa(n), "IGNORE="+ignore, "PCD_LOG_LEVEL=warn"), env...)
	t0 := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("a loop of %s: %w: %s", argv[0], err, lastLine(string(out)))
	}
	return time.Since(t0), nil
}

// tspLoop queues n `true` with tsp, its server of its own in b.dir, and
// returns the time the loop took; the server is killed after.
func (b *bench) tspLoop(tsp string, n int) (time.Duration, error) {
	dir, err := os.MkdirTemp(b.dir, "tsp-")
	if err != nil {
		return 0, err
	}
	env := []string{"TS_SOCKET=" + filepath.Join(dir, "socket"), "TMPDIR=" + dir}
	defer func() {
		kill := exec.Command(tsp, "-K")
		kill.Env = append(os.Environ(), env...)
		kill.Run()
		os.RemoveAll(dir)
	}()
	// The server starts with the first tsp: start it before the clock.
	first := exec.Command(tsp, "true")
	first.Env = append(os.Environ(), env...)
	if out, err := first.CombinedOutput(); err != nil {
		return 0, errors.Join(fmt.Errorf("tsp true: %w", err), errors.New(lastLine(string(out))))
	}
	return b.shellLoop(n, env, tsp, "true")
}
