package e2e_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/pcd-dev/pcd/internal/pgtest"
)

// TestPostgresChaos runs three daemons on one PostgreSQL database, one of
// them through a proxy, under every fault at random for PCD_CHAOS (say
// 10m; skipped without it): SIGKILLs, freezes (SIGSTOP, then SIGCONT up to
// two leases later), terminated backends, network cuts, and a silent
// connection (the proxy stops forwarding, then its daemon is killed).
// After each fault the runs so far are checked (checkRuns), and at the end
// every invariant of the crash suite, the watch, and that no command ran
// beside its rerun.
func TestPostgresChaos(t *testing.T) {
	soak, _ := time.ParseDuration(os.Getenv("PCD_CHAOS"))
	if soak <= 0 {
		t.Skip("set PCD_CHAOS=10m to run the PostgreSQL chaos")
	}
	db := pgtest.URL(t)
	proxy := pgtest.NewProxy(t, db)
	dir := t.TempDir()
	const lease = 3 * time.Second
	env := []string{"PCD_LEASE=" + lease.String()}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	load := &killLoad{dir: dir, rng: rng}
	load.submit(t, db)
	urls := []string{db, db, proxy.URL}
	daemons := make([]*proc, 3)
	for i := range daemons {
		daemons[i] = startPGDaemon(t, urls[i], env...)
	}
	watch := startWith(t, db, env, "watch", "--all", "--follow", "--json")
	killed := map[int]bool{}
	check := func() int { return checkRunsOf(t, db, dir, daemons, killed) }
	restart := func(i int) {
		daemons[i].cmd.Process.Signal(syscall.SIGCONT)
		daemons[i].cmd.Process.Kill()
		daemons[i].wait(t, 30*time.Second)
		killed[daemons[i].cmd.Process.Pid] = true
		daemons[i] = startPGDaemon(t, urls[i], env...)
	}
	counts := map[string]int{}
	started := time.Now()
	for time.Since(started) < soak {
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		if queryDB(t, db, "SELECT count(*) FROM jobs WHERE finished_at IS NULL") == 0 {
			load.submit(t, db)
		}
		i := rng.IntN(3)
		switch fault := rng.IntN(5); fault {
		case 0:
			counts["SIGKILL"]++
			restart(i)
		case 1:
			counts["freeze"]++
			daemons[i].cmd.Process.Signal(syscall.SIGSTOP)
			time.Sleep(time.Duration(rng.Int64N(int64(2 * lease))))
			daemons[i].cmd.Process.Signal(syscall.SIGCONT)
		case 2:
			counts["terminated backends"]++
			raw := openRaw(t, db)
			if _, err := raw.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid() AND random() < 0.5`); err != nil {
				t.Logf("terminate backends: %v", err)
			}
			raw.Close()
		case 3:
			counts["network cut"]++
			proxy.Cut()
			time.Sleep(time.Duration(rng.Int64N(int64(3 * lease))))
			proxy.Heal()
		case 4:
			counts["silent connection, then SIGKILL"]++
			proxy.Cut()
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			daemons[2].cmd.Process.Kill()
			daemons[2].wait(t, 30*time.Second)
			killed[daemons[2].cmd.Process.Pid] = true
			// The others go on while the proxy still holds its sessions.
			time.Sleep(2 * lease)
			proxy.Heal()
			daemons[2] = startPGDaemon(t, urls[2], env...)
		}
		check()
	}
	records, doubles := finishLoad(t, db, dir, load, watch, daemons, 5*time.Minute)
	runs := check()
	t.Logf("chaos for %v: faults %v; jobs %d, tasks %d, callbacks %d, command runs logged %d, interrupted tasks %d, commands beside their rerun %d",
		time.Since(started).Round(time.Second), fmt.Sprint(counts), load.jobs, load.tasks, records, runs,
		queryDB(t, db, "SELECT count(*) FROM tasks WHERE interrupts > 0"), doubles)
	for _, d := range daemons {
		d.cmd.Process.Signal(syscall.SIGTERM)
		d.wait(t, time.Minute)
	}
}
