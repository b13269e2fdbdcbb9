package process

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Limits on cgroup v2: where v1 has neither the memory nor the cpu
// controller. See cgroup_linux.go for the layout.

// findV2 sets r up for the v2 hierarchy mounted at mnt (its root
// mounted there), where this process is in path.
func findV2(r *cgroupRoot, mnt, mountRoot, path string) {
	r.v2 = true
	var own string
	rel, err := filepath.Rel(mountRoot, path)
	if path != "" && err == nil && !strings.HasPrefix(rel, "..") {
		own = filepath.Join(mnt, rel)
	}
	available, _ := os.ReadFile(filepath.Join(own, "cgroup.controllers"))
	for _, c := range []string{memoryController, cpuController} {
		switch {
		case own == "":
			r.why[c] = fmt.Errorf("limits need this process's cgroup v2, and /proc/self/cgroup does not name one below %s", mnt)
		case !hasWord(string(available), c):
			r.why[c] = fmt.Errorf("limits need the cgroup v2 %s controller, and %s does not have it (cgroup.controllers: %q)", c, own, strings.TrimSpace(string(available)))
		default:
			r.own[c] = own
		}
	}
}

func hasWord(list, w string) bool {
	for _, f := range strings.Fields(list) {
		if f == w {
			return true
		}
	}
	return false
}

// enableV2 enables controller for the runner's cgroups, below base. A
// cgroup that enables a controller for its children may hold no process
// (but the root), so the runner first moves itself, and the processes it
// started, from own into base/runner. If own holds processes of others,
// it cannot: pcd must be started in a cgroup of its own. Where enabling
// fails, the runner goes back to own.
func (r *cgroupRoot) enableV2(own, base, controller string) error {
	runner := filepath.Join(base, "runner")
	if err := os.Mkdir(runner, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("make the cgroup %s: %w", runner, err)
	}
	self := os.Getpid()
	for _, pid := range cgroupProcs(own) {
		if pid == self || descendsFrom(pid, self) {
			_ = writeCgroup(runner, "cgroup.procs", strconv.Itoa(pid))
		}
	}
	had, _ := os.ReadFile(filepath.Join(own, "cgroup.subtree_control"))
	err := writeCgroup(own, "cgroup.subtree_control", "+"+controller)
	if err == nil {
		if !hasWord(string(had), controller) {
			r.enabled = append(r.enabled, controller)
		}
		err = writeCgroup(base, "cgroup.subtree_control", "+"+controller)
	}
	if err != nil {
		if errors.Is(err, syscall.EBUSY) {
			err = fmt.Errorf("the cgroup %s that pcd was started in holds other processes: start pcd in a cgroup of its own (systemd-run --scope -p Delegate=yes pcd ..., or a service with Delegate=yes)", own)
		}
		if len(r.base) == 0 { // no other controller in use: undo it all
			r.leaveV2(own, base)
			_ = removeTree(base)
		}
		return fmt.Errorf("enable the cgroup v2 %s controller for the tasks: %w", controller, err)
	}
	return nil
}

// descendsFrom reports whether pid is a descendant of ancestor.
func descendsFrom(pid, ancestor int) bool {
	for i := 0; i < 64 && pid > 1; i++ {
		st, err := readStat(pid)
		if err != nil {
			return false
		}
		if st.ppid == ancestor {
			return true
		}
		pid = st.ppid
	}
	return false
}

// leaveV2 moves the runner's processes back from base/runner to own,
// once the controllers that the runner enabled are disabled again (a
// cgroup with controllers for its children may hold no process), so that
// base can be removed.
func (r *cgroupRoot) leaveV2(own, base string) {
	for _, c := range []string{memoryController, cpuController} {
		_ = writeCgroup(base, "cgroup.subtree_control", "-"+c)
	}
	for _, c := range r.enabled {
		_ = writeCgroup(own, "cgroup.subtree_control", "-"+c)
	}
	r.enabled = nil
	for _, pid := range cgroupProcs(filepath.Join(base, "runner")) {
		_ = writeCgroup(own, "cgroup.procs", strconv.Itoa(pid))
	}
}

// setLimitsV2 writes memory.max (with no swap beyond it) and cpu.max.
func (c *Cgroup) setLimitsV2(l Limits) error {
	if dir := c.dirs[memoryController]; dir != "" {
		max, swap := "max", "max"
		if l.Memory > 0 {
			max, swap = strconv.FormatInt(l.Memory, 10), "0"
		}
		if err := writeCgroup(dir, "memory.max", max); err != nil {
			return fmt.Errorf("set the memory limit: %w", err)
		}
		_ = writeCgroup(dir, "memory.swap.max", swap) // absent without swap accounting
	}
	if dir := c.dirs[cpuController]; dir != "" {
		quota := "max"
		if q := c.quota(l); q > 0 {
			quota = strconv.FormatInt(q, 10)
		}
		if err := writeCgroup(dir, "cpu.max", quota+" "+strconv.Itoa(cfsPeriod)); err != nil {
			return fmt.Errorf("set the cpus limit: %w", err)
		}
	}
	c.limits = l
	return nil
}

// startV2 has clone3 start cmd in the cgroup.
func (c *Cgroup) startV2(cmd *exec.Cmd) error {
	var dir string
	for _, d := range c.dirs {
		dir = d
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open the task's cgroup: %w", err)
	}
	defer f.Close()
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(f.Fd())
	return cmd.Start()
}

// usageV2 reads memory.peak (Linux 5.19) and memory.events: oom_kill
// counts the kills in the cgroup, and oom the times its own limit was
// reached (an enclosing cgroup counts its own).
func (c *Cgroup) usageV2(dir string) CgroupUsage {
	var u CgroupUsage
	if b, err := os.ReadFile(filepath.Join(dir, "memory.peak")); err == nil {
		u.Peak, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "memory.events"))
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, " ")
		n, _ := strconv.Atoi(strings.TrimSpace(v))
		switch k {
		case "oom_kill":
			u.OOMKilled = n > 0
		case "oom", "max":
			u.OverOwn = u.OverOwn || (n > 0 && c.limits.Memory > 0)
		}
	}
	return u
}
