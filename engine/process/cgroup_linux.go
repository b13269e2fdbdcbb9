package process

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Limits per task, with the memory and cpu controllers of cgroup v1 or,
// where v1 does not have them, of cgroup v2.
//
// The runner makes a cgroup of its own in each controller, under the one
// it was started in: <mount>/<its cgroup>/pcd-<pid>. A task with limits
// gets a cgroup below it (below its group's, if the group has limits),
// which holds everything the command starts, and goes when the task
// ends.
//
// A command is placed in its cgroup as it is forked, without a race:
//
//   - In cgroup v1, membership is per thread, and a child starts in its
//     forking thread's cgroup. So the forking thread (the namespace's
//     spawner, or the caller's locked thread) moves itself into the
//     task's cgroups, forks, and moves back. Memory a thread touches
//     meanwhile is charged to its process's owner, the runner's main
//     thread, which stays where it was.
//   - In cgroup v2, clone3 starts the child in the cgroup it is given
//     (CLONE_INTO_CGROUP, Linux 5.7). A cgroup whose controllers are
//     enabled for its children may hold no process, so the runner first
//     moves itself, and what it started, into a leaf of its own:
//     pcd-<pid>/runner.

// cfsPeriod is the CFS period of a cgroup with a cpus limit, in µs: the
// quota is cpus × cfsPeriod of CPU time in each period.
const cfsPeriod = 100_000

// The controllers a task's cgroup is made in.
const (
	memoryController = "memory"
	cpuController    = "cpu"
)

// cgroupRoot is where the runner's cgroups are, by controller. On cgroup
// v2 every controller has the same ones.
type cgroupRoot struct {
	v2   bool
	own  map[string]string // the cgroup the runner was started in
	base map[string]string // own/pcd-<pid>, the runner's
	why  map[string]error  // why a controller cannot be used
	// On v2, the controllers the runner enabled in own, to disable
	// when it leaves.
	enabled []string
}

var cgroups struct {
	mu   sync.Mutex
	root *cgroupRoot
	live int // cgroups made and not removed
}

// CheckLimits says whether this process can enforce l here, and if not,
// why, in one line.
func CheckLimits(l Limits) error {
	_, err := limitRoot(l)
	return err
}

// limitRoot readies the runner's cgroups for the controllers that l
// needs, and says why it cannot.
func limitRoot(l Limits) (*cgroupRoot, error) {
	cgroups.mu.Lock()
	defer cgroups.mu.Unlock()
	if cgroups.root == nil {
		cgroups.root = findCgroups()
		for _, own := range cgroups.root.own {
			removeStale(own)
		}
	}
	r := cgroups.root
	if l.Memory > 0 {
		if err := r.ready(memoryController); err != nil {
			return nil, err
		}
	}
	if l.CPUs > 0 {
		if err := r.ready(cpuController); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// ready makes the runner's cgroup in a controller, once.
func (r *cgroupRoot) ready(controller string) error {
	if err := r.why[controller]; err != nil {
		return err
	}
	if r.base[controller] != "" {
		return nil
	}
	base := filepath.Join(r.own[controller], "pcd-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(base, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		err = fmt.Errorf("cannot make a cgroup for the tasks' limits: %w%s", err, rootHint(err))
		r.why[controller] = err
		return err
	}
	if r.v2 {
		if err := r.enableV2(r.own[controller], base, controller); err != nil {
			r.why[controller] = err
			return err
		}
	} else if controller == memoryController {
		// A group's limit holds for its tasks together.
		_ = writeCgroup(base, "memory.use_hierarchy", "1")
	}
	r.base[controller] = base
	return nil
}

func rootHint(err error) string {
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		return " (limits need root, or a cgroup delegated to this user)"
	}
	return ""
}

// findCgroups finds the cgroup v1 memory and cpu controllers, and the
// cgroups this process is in.
func findCgroups() *cgroupRoot {
	r := &cgroupRoot{own: map[string]string{}, base: map[string]string{}, why: map[string]error{}}
	mounts := map[string]string{} // controller → mount point
	mountRoots := map[string]string{}
	v2Mount, v2Root := "", ""
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// id parent dev root mountpoint opts [optional...] - fstype source superopts
			pre, post, ok := strings.Cut(sc.Text(), " - ")
			fields, tail := strings.Fields(pre), strings.Fields(post)
			if !ok || len(fields) < 5 || len(tail) < 3 {
				continue
			}
			switch tail[0] {
			case "cgroup2":
				if v2Mount == "" || fields[4] == "/sys/fs/cgroup" {
					v2Mount, v2Root = unescapeMount(fields[4]), fields[3]
				}
			case "cgroup":
				for _, opt := range strings.Split(tail[2], ",") {
					if opt == memoryController || opt == cpuController {
						mounts[opt], mountRoots[opt] = unescapeMount(fields[4]), fields[3]
					}
				}
			}
		}
		f.Close()
	}
	paths := map[string]string{} // controller → this process's cgroup
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) != 3 {
				continue
			}
			if parts[0] == "0" && parts[1] == "" {
				paths[""] = parts[2] // the v2 hierarchy
			}
			for _, c := range strings.Split(parts[1], ",") {
				paths[c] = parts[2]
			}
		}
	}
	if mounts[memoryController] == "" && mounts[cpuController] == "" && v2Mount != "" {
		findV2(r, v2Mount, v2Root, paths[""])
		return r
	}
	for _, c := range []string{memoryController, cpuController} {
		mnt, path := mounts[c], paths[c]
		switch {
		case mnt == "":
			r.why[c] = fmt.Errorf("limits need a cgroup %s controller, and none is mounted", c)
			continue
		case path == "":
			r.why[c] = fmt.Errorf("limits need this process's %s cgroup, and /proc/self/cgroup does not name it", c)
			continue
		}
		rel, err := filepath.Rel(mountRoots[c], path)
		if err != nil || strings.HasPrefix(rel, "..") {
			r.why[c] = fmt.Errorf("this process's %s cgroup %s is outside the one mounted at %s", c, path, mnt)
			continue
		}
		r.own[c] = filepath.Join(mnt, rel)
	}
	return r
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeStale removes the cgroups of runners that are gone: a SIGKILLed
// runner cannot. A cgroup that still holds a process is left.
func removeStale(own string) {
	entries, _ := os.ReadDir(own)
	for _, e := range entries {
		pidText, ok := strings.CutPrefix(e.Name(), "pcd-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || !e.IsDir() || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = removeTree(filepath.Join(own, e.Name()))
		}
	}
}

// removeTree removes a cgroup and the cgroups below it, deepest first.
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			_ = removeTree(filepath.Join(dir, e.Name()))
		}
	}
	return syscall.Rmdir(dir)
}

// RemoveCgroups removes the runner's cgroups when it stops, unless a
// task's is still there (another runner in this process runs it).
func RemoveCgroups() {
	cgroups.mu.Lock()
	defer cgroups.mu.Unlock()
	if cgroups.root == nil || cgroups.live > 0 {
		return
	}
	r := cgroups.root
	if r.v2 {
		// One cgroup for every controller.
		for c, base := range r.base {
			r.leaveV2(r.own[c], base)
			_ = removeTree(base)
			break
		}
		clear(r.base)
		return
	}
	for c, base := range r.base {
		if removeTree(base) == nil {
			delete(r.base, c)
		}
	}
}

// Cgroup is a task's cgroups, or a group's, with its limits.
type Cgroup struct {
	v2     bool
	dirs   map[string]string // by controller; on v2, one cgroup for all
	limits Limits
	parent *Cgroup
}

// NewCgroup makes a task's cgroup, name, below its group's (nil: the
// runner's), with limits l. It gets a memory cgroup even without a memory
// limit, for its exact peak and to tell an out-of-memory kill.
func NewCgroup(group *Cgroup, name string, l Limits) (*Cgroup, error) {
	return newCgroup(group, name, l, false)
}

// NewGroupCgroup makes the cgroup of a group with limits, name, which
// holds task cgroups (NewCgroup) for the group's commands.
func NewGroupCgroup(name string, l Limits) (*Cgroup, error) {
	return newCgroup(nil, name, l, true)
}

func newCgroup(parent *Cgroup, name string, l Limits, group bool) (*Cgroup, error) {
	r, err := limitRoot(l)
	if err != nil {
		return nil, err
	}
	cgroups.mu.Lock()
	_ = r.ready(memoryController) // for the peak, where it can
	cgroups.live++
	cgroups.mu.Unlock()
	c := &Cgroup{v2: r.v2, dirs: map[string]string{}, limits: l, parent: parent}
	for _, ctl := range []string{memoryController, cpuController} {
		under := r.base[ctl]
		if parent != nil {
			under = parent.dirs[ctl]
		}
		if under == "" {
			continue // not needed, and not there
		}
		dir := filepath.Join(under, name)
		if c.v2 && c.dirs[memoryController] == dir {
			c.dirs[ctl] = dir // the one cgroup of v2
			continue
		}
		err := os.Mkdir(dir, 0o755)
		if errors.Is(err, fs.ErrExist) { // an earlier runner's, by the same name
			err = removeTree(dir)
			if err == nil {
				err = os.Mkdir(dir, 0o755)
			}
		}
		if err != nil {
			c.Remove()
			return nil, fmt.Errorf("make the cgroup %s: %w", dir, err)
		}
		c.dirs[ctl] = dir
	}
	if c.v2 && group {
		// The tasks' cgroups below a group's have its controllers.
		for ctl, dir := range c.dirs {
			if err := writeCgroup(dir, "cgroup.subtree_control", "+"+ctl); err != nil {
				c.Remove()
				return nil, fmt.Errorf("enable the %s controller in %s: %w", ctl, dir, err)
			}
		}
	}
	if err := c.SetLimits(l); err != nil {
		c.Remove()
		return nil, err
	}
	return c, nil
}

// SetLimits sets the cgroup's limits (0: none).
func (c *Cgroup) SetLimits(l Limits) error {
	if c.v2 {
		return c.setLimitsV2(l)
	}
	if dir := c.dirs[memoryController]; dir != "" {
		v := "-1"
		if l.Memory > 0 {
			v = strconv.FormatInt(l.Memory, 10)
		}
		// memsw (memory and swap) may not be below memory: lift it, set
		// memory, then hold swap to the same bound. Without swap
		// accounting it is not there.
		_ = writeCgroup(dir, "memory.memsw.limit_in_bytes", "-1")
		if err := writeCgroup(dir, "memory.limit_in_bytes", v); err != nil {
			return fmt.Errorf("set the memory limit: %w", err)
		}
		_ = writeCgroup(dir, "memory.memsw.limit_in_bytes", v)
	}
	if dir := c.dirs[cpuController]; dir != "" {
		quota := "-1"
		if q := c.quota(l); q > 0 {
			quota = strconv.FormatInt(q, 10)
		}
		if err := writeCgroup(dir, "cpu.cfs_period_us", strconv.Itoa(cfsPeriod)); err != nil {
			return fmt.Errorf("set the cpus limit: %w", err)
		}
		if err := writeCgroup(dir, "cpu.cfs_quota_us", quota); err != nil {
			return fmt.Errorf("set the cpus limit: %w", err)
		}
	}
	c.limits = l
	return nil
}

// quota is the CFS quota of l's cpus, in µs per cfsPeriod; 0 for none.
// A cgroup's quota cannot be above its parent's (v1 refuses it): the
// lower one holds anyway.
func (c *Cgroup) quota(l Limits) int64 {
	if l.CPUs <= 0 {
		return 0
	}
	q := int64(math.Round(l.CPUs * cfsPeriod))
	for p := c.parent; p != nil; p = p.parent {
		if p.limits.CPUs > 0 {
			q = min(q, int64(math.Round(p.limits.CPUs*cfsPeriod)))
		}
	}
	return q
}

// Limits are the cgroup's own limits.
func (c *Cgroup) Limits() Limits { return c.limits }

func writeCgroup(dir, file, value string) error {
	return os.WriteFile(filepath.Join(dir, file), []byte(value), 0)
}

// enter moves the calling thread into the cgroup; leave moves it back to
// the runner's. A child forked in between starts in the cgroup. The
// caller's goroutine is locked to its thread.
func (c *Cgroup) enter() error {
	for _, dir := range c.dirs {
		if err := writeCgroup(dir, "tasks", "0"); err != nil {
			c.leave()
			return fmt.Errorf("enter the task's cgroup: %w", err)
		}
	}
	return nil
}

func (c *Cgroup) leave() {
	cgroups.mu.Lock()
	own := cgroups.root.own
	cgroups.mu.Unlock()
	for ctl := range c.dirs {
		_ = writeCgroup(own[ctl], "tasks", "0")
	}
}

// start starts cmd in the cgroup c, from the calling thread.
func (c *Cgroup) start(cmd *exec.Cmd) error {
	if c == nil {
		return cmd.Start()
	}
	if c.v2 {
		return c.startV2(cmd)
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.leave()
	return cmd.Start()
}

// Usage reads what the cgroup's processes used.
func (c *Cgroup) Usage() CgroupUsage {
	var u CgroupUsage
	dir := c.dirs[memoryController]
	if dir == "" {
		return u
	}
	if c.v2 {
		return c.usageV2(dir)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "memory.max_usage_in_bytes")); err == nil {
		u.Peak, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	counted := false
	if b, err := os.ReadFile(filepath.Join(dir, "memory.oom_control")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				u.OOMKilled, counted = n > 0, true
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "memory.failcnt")); err == nil && !counted {
		// A kernel before 4.13 does not count the kills: the limit
		// was hit.
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		u.OOMKilled = n > 0
	}
	u.OverOwn = c.limits.Memory > 0 && u.Peak >= c.limits.Memory-int64(os.Getpagesize())
	return u
}

// Remove kills what is left in the cgroup, and removes it.
func (c *Cgroup) Remove() {
	defer func() {
		cgroups.mu.Lock()
		cgroups.live--
		cgroups.mu.Unlock()
	}()
	removed := map[string]bool{}
	for _, dir := range c.dirs {
		if removed[dir] {
			continue
		}
		removed[dir] = true
		if c.v2 {
			_ = writeCgroup(dir, "cgroup.kill", "1") // Linux 5.14
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			pids := cgroupProcs(dir)
			if len(pids) == 0 || time.Now().After(deadline) {
				break
			}
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			WaitGone(pids, time.Until(deadline))
		}
		_ = syscall.Rmdir(dir)
	}
}

// cgroupProcs lists the processes in a cgroup.
func cgroupProcs(dir string) []int {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}
