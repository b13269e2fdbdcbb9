package process

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Process control for exec tasks and hooks, on Linux.
//
// Every command runs in a process group of its own, with PCD_RUN_ID in
// its environment: a cookie its descendants inherit, as Jenkins'
// ProcessTreeKiller uses BUILD_ID. Three mechanisms make sure nothing a
// task started outlives it:
//
//   - The runner is a child subreaper (Subreaper), so a descendant that
//     leaves the task's group (setsid, a double fork) is re-parented to pcd
//     instead of init, and the sweep at the task's end finds it among pcd's
//     children by its cookie.
//   - The command gets SIGKILL when its parent dies (Pdeathsig). The parent
//     is the thread that forked it, so the goroutine that runs a command
//     is locked to its thread until the command has exited: no other
//     goroutine can run there and end the thread under a running command.
//   - A runner that was SIGKILLed cannot sweep; the next one does, in
//     KillLeftovers, from the process group and start time recorded with
//     each running task, and from the cookie.

// procs is the set of pids that os/exec started and has not reaped yet.
// The reaper takes only exited children that are not in live, and none
// while a start is under way, so it never takes a child that os/exec is
// about to wait for.
var procs struct {
	mu      sync.Mutex
	live    map[int]bool
	forking int // starts under way, whose pid is not in live yet
	// subreaper is set once this process is a child subreaper.
	subreaper bool
}

// Start starts cmd in a process group of its own: in the runner's PID
// namespace if it has one (Contain), else with a death signal. The death
// signal comes when the forking thread exits, so then Start locks the
// calling goroutine to its thread, and release unlocks it: call it once
// the process has been reaped (a locked thread cannot exit under a
// goroutine that is still running). In the namespace the keeper's death
// kills the command instead; os/exec's child would take its parent, which
// it cannot see from there, for dead, and kill itself at once.
//
// With a cgroup (NewCgroup), the command starts in it, and so does
// everything it starts.
func Start(cmd *exec.Cmd, cg *Cgroup) (release func(), err error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	procs.mu.Lock()
	procs.forking++
	if procs.live == nil {
		procs.live = map[int]bool{}
	}
	procs.mu.Unlock()
	release = func() {}
	started, err := startContained(cmd, cg)
	if !started {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		runtime.LockOSThread()
		if err = cg.start(cmd); err != nil {
			runtime.UnlockOSThread()
		} else {
			release = runtime.UnlockOSThread
		}
	}
	procs.mu.Lock()
	procs.forking--
	if err == nil {
		procs.live[cmd.Process.Pid] = true
	}
	procs.mu.Unlock()
	return release, err
}

// Done records that os/exec has reaped pid.
func Done(pid int) {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	delete(procs.live, pid)
}

// Subreaper makes this process a child subreaper, so that descendants of
// exec tasks that leave their process group are re-parented here and can
// be found and killed. A runner calls it once, and calls the returned
// func when it stops: that kills every adopted process still alive, even
// one that hid its run id, so nothing a task started outlives its runner,
// and makes the process an ordinary one again. Until then the exec kind
// also reaps any exited child that it did not
// start itself: a program that embeds a runner should not start children
// of its own outside it.
func BecomeSubreaper() (stop func(), err error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return func() {}, fmt.Errorf("become a child subreaper: %w", err)
	}
	procs.mu.Lock()
	procs.subreaper = true
	procs.mu.Unlock()
	return func() {
		KillAdopted()
		procs.mu.Lock()
		procs.subreaper = false
		procs.mu.Unlock()
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	}, nil
}

// KillAdopted kills and reaps every child os/exec did not start, with its
// descendants.
func KillAdopted() {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	var all []int
	for _, pid := range childrenOf(os.Getpid()) {
		if !procs.live[pid] {
			all = append(all, descendantsWith(pid, "")...)
		}
	}
	for _, pid := range all {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	WaitGone(all, 2*time.Second)
}

// WaitGone waits, at most wait, until each pid has exited, and reaps those
// that are this process's children.
func WaitGone(pids []int, wait time.Duration) {
	self := os.Getpid()
	deadline := time.Now().Add(wait)
	for _, pid := range pids {
		for time.Now().Before(deadline) {
			st, err := readStat(pid)
			if err != nil {
				break // gone
			}
			if st.state == 'Z' {
				if st.ppid == self {
					reap(pid)
				}
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// procStat is what /proc/PID/stat says of a process.
type procStat struct {
	pid, ppid, pgrp int
	state           byte
	start           uint64 // clock ticks after boot
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name is in parentheses and may hold anything: the
	// fields after it start at the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return procStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+2:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	s := procStat{pid: pid, state: f[0][0]}
	s.ppid, _ = strconv.Atoi(f[1])
	s.pgrp, _ = strconv.Atoi(f[2])
	s.start, err = strconv.ParseUint(f[19], 10, 64)
	return s, err
}

// StartTime is the start time of pid, in clock ticks after boot, or 0
// if it cannot be read.
func StartTime(pid int) uint64 {
	s, err := readStat(pid)
	if err != nil {
		return 0
	}
	return s.start
}

// CookieOf returns the PCD_RUN_ID in pid's environment, if any. A process
// of another user, or one gone, has none that we can read.
func CookieOf(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return ""
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(RunIDVar+"=")); ok {
			return string(v)
		}
	}
	return ""
}

// childrenOf lists pid's children, from every thread's list.
func childrenOf(pid int) []int {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// SweepAdopted kills what a command with the given cookie left behind
// outside its process group: the subreaper adopted such processes, so they
// are among our children that os/exec did not start, or below them. It
// also reaps adopted children that have exited, whoever's they were.
//
// The kernel gives orphans to the first live thread of the subreaper,
// the main one, so its list is read at each task's end (one small read);
// KillAdopted, at the runner's stop, reads every thread's.
//
// In the runner's namespace (Contain) orphans go to its init, the keeper,
// which reaps them: the sweep looks among its children too.
func SweepAdopted(cookie string) {
	var adopted []int
	if keeper := keeperPid(); keeper > 0 {
		adopted = mainChildren(keeper, adopted)
	}
	if IsSubreaper() {
		adopted = mainChildren(os.Getpid(), adopted)
	}
	if len(adopted) == 0 {
		return
	}
	var mine, zombies []int
	for _, pid := range adopted {
		st, err := readStat(pid)
		switch {
		case err != nil:
		case st.state == 'Z':
			zombies = append(zombies, pid)
		default:
			mine = append(mine, descendantsWith(pid, cookie)...)
		}
	}
	procs.mu.Lock()
	for _, pid := range zombies {
		if !procs.live[pid] && procs.forking == 0 {
			reap(pid)
		}
	}
	procs.mu.Unlock()
	if len(mine) == 0 {
		return
	}
	for _, pid := range mine {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// The task's end means its processes are gone.
	WaitGone(mine, 2*time.Second)
}

// mainChildren appends the children of pid's main thread, to which the
// kernel gives the orphans a reaper adopts.
func mainChildren(pid int, out []int) []int {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

func IsSubreaper() bool {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	return procs.subreaper
}

// descendantsWith lists pid and its descendants whose cookie is cookie, or
// all of them for "". A process without the cookie is not listed, but its
// children are looked at: a cookie is inherited, and an intermediate
// process may have cleared its own environment after forking.
func descendantsWith(pid int, cookie string) []int {
	var out []int
	seen := map[int]bool{}
	queue := []int{pid}
	for len(queue) > 0 && len(seen) < 10000 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		if cookie == "" || CookieOf(p) == cookie {
			out = append(out, p)
		}
		queue = append(queue, childrenOf(p)...)
	}
	return out
}

func reap(pid int) {
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
}

// Proc is a running task's process group as recorded in the database: the
// group's id (its leader's pid) and the leader's start time.
type Group struct {
	Pgid  int
	Start uint64
}

// leftover is a live process of this user that carries a run id.
type leftover struct {
	procStat
	cookie string
}

// userProcesses lists this user's live processes other than this one.
func userProcesses() []leftover {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	uid := uint32(os.Getuid())
	self := os.Getpid()
	var out []leftover
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		fi, err := e.Info()
		if err != nil || fi.Sys().(*syscall.Stat_t).Uid != uid {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.state == 'Z' {
			continue
		}
		out = append(out, leftover{procStat: st, cookie: CookieOf(pid)})
	}
	return out
}

// KillLeftovers kills what a dead runner's tasks left running, before any
// of them runs again:
//   - every process whose run id names a task that ours(taskIDs) says is
//     this database's (the caller holds the runner lock, so no live runner
//     runs them);
//   - every process without a run id in a recorded process group, if the
//     group's leader is the recorded one (same start time), or the leader
//     is gone and the process started after it (a group id is not reused
//     while a member lives).
//
// It waits until they are gone, at most wait, and returns how many it
// killed.
func KillLeftovers(groups []Group, ours func(taskIDs []string) (map[string]bool, error), wait time.Duration) (int, error) {
	all := userProcesses()
	var ids []string
	for _, p := range all {
		if id := TaskOfCookie(p.cookie); id != "" {
			ids = append(ids, id)
		}
	}
	known := map[string]bool{}
	if len(ids) > 0 {
		var err error
		if known, err = ours(ids); err != nil {
			return 0, err
		}
	}
	byGroup := map[int]Group{}
	for _, g := range groups {
		if g.Pgid > 1 {
			byGroup[g.Pgid] = g
		}
	}
	var victims []procStat
	for _, p := range all {
		kill := known[TaskOfCookie(p.cookie)]
		if g, ok := byGroup[p.pgrp]; ok && p.cookie == "" {
			leader, err := readStat(g.Pgid)
			switch {
			case err == nil && leader.start == g.Start:
				kill = true
			case err != nil && p.start >= g.Start:
				kill = true
			}
		}
		if kill {
			victims = append(victims, p.procStat)
		}
	}
	// A task may have finished since the listing (on a shared database,
	// a live runner's task that is final now is "known"): only a process
	// that still lives, the same one (same start), is killed and counted.
	var killed []int
	for _, v := range victims {
		if now, err := readStat(v.pid); err != nil || now.start != v.start || now.state == 'Z' {
			continue
		}
		if syscall.Kill(v.pid, syscall.SIGKILL) == nil {
			killed = append(killed, v.pid)
		}
	}
	WaitGone(killed, wait)
	return len(killed), nil
}

// Usage is what a command that has been waited for used: its peak
// resident memory in KiB, and its CPU time, user and system, each its own
// and that of the descendants it waited for. (A descendant no one waited
// for, such as one killed with its group, is not counted.)
//
// The peak is 0 when it is not above this process's own: Linux starts a
// vforked child's peak at its parent's (exec records the shared memory's
// high-water mark), and os/exec forks so. A command's peak shows only
// above the runner's.
func Usage(state *os.ProcessState) (peakKiB int64, cpu time.Duration) {
	ru, ok := state.SysUsage().(*syscall.Rusage)
	if !ok || ru == nil {
		return 0, 0
	}
	cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	var self syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &self) != nil || ru.Maxrss <= self.Maxrss {
		return 0, cpu
	}
	return ru.Maxrss, cpu // Linux counts ru_maxrss in KiB
}
