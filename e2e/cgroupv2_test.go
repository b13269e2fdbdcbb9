package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// v2Init is the init of the cgroup v2 machine: it runs pcd there and
// prints each check's result as "@@ name value" lines.
const v2Init = `#!/busybox sh
/busybox mkdir -p /bin /proc /sys /tmp /dev
/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
mount -t devtmpfs dev /dev
mount -t cgroup2 none /sys/fs/cgroup
cd /tmp
export HOME=/tmp PCD_DB=/tmp/a.db
say() { printf '@@ %s %s\n' "$1" "$(printf '%s' "$2" | tr '\n' ' ')"; }
last() { say "$1" "$(/pcd tasks --json $(/pcd jobs --json -n 1 | grep -m1 '"job_id"' | cut -d'"' -f4) | tr -d '\n')"; }
spin='timeout 2 sh -c "while :; do :; done" & timeout 2 sh -c "while :; do :; done"; wait'
say controllers "$(cat /sys/fs/cgroup/cgroup.controllers)"

# In the root cgroup.
/pcd run --memory 64MiB -- dd if=/dev/zero of=/dev/null bs=200M count=1 2>/tmp/err; say over.rc $?; last over.tasks
/pcd run --memory 256MiB -- dd if=/dev/zero of=/dev/null bs=100M count=1 2>/tmp/err; say under.rc $?; last under.tasks
/pcd run --cpus 0.5 -- sh -c "$spin" 2>/tmp/err; say cpus.rc $?; last cpus.tasks
/pcd run -- sh -c "$spin" 2>/tmp/err; say nocpus.rc $?; last nocpus.tasks
say root.after "$(ls /sys/fs/cgroup | grep pcd-) [$(cat /sys/fs/cgroup/cgroup.subtree_control)]"

# Below the root, as under systemd.
echo "+memory +cpu" > /sys/fs/cgroup/cgroup.subtree_control
mkdir /sys/fs/cgroup/shared /sys/fs/cgroup/own /sys/fs/cgroup/d
sh -c 'echo $$ > /sys/fs/cgroup/shared/cgroup.procs; sleep 60 & PCD_DB=/tmp/b.db /pcd run --memory 64MiB -- true 2>/tmp/err; echo $? >/tmp/rc; kill $!'
say shared.rc "$(cat /tmp/rc)"; say shared.err "$(cat /tmp/err)"
say shared.after "$(find /sys/fs/cgroup/shared -mindepth 1 -type d) [$(cat /sys/fs/cgroup/shared/cgroup.subtree_control)]"
export PCD_DB=/tmp/c.db
sh -c 'echo $$ > /sys/fs/cgroup/own/cgroup.procs && exec /pcd run --memory 64MiB -- dd if=/dev/zero of=/dev/null bs=200M count=1' 2>/tmp/err; say own.rc $?; last own.tasks
say own.after "$(find /sys/fs/cgroup/own -mindepth 1 -type d) [$(cat /sys/fs/cgroup/own/cgroup.subtree_control)]"
sh -c 'echo $$ > /sys/fs/cgroup/own/cgroup.procs && exec /pcd run --memory 64MiB -- true' 2>/tmp/err; say own.again.rc $?

# A group's limit, in a daemon.
export PCD_DB=/tmp/d.db
/pcd group set lim --memory 80MiB >/dev/null
J1=$(/pcd submit --group lim -- dd if=/dev/zero of=/dev/null bs=60M count=50 2>/dev/null)
J2=$(/pcd submit --group lim -- dd if=/dev/zero of=/dev/null bs=60M count=50 2>/dev/null)
sh -c 'echo $$ > /sys/fs/cgroup/d/cgroup.procs; exec /pcd daemon --max-jobs 2 2>/tmp/d.log' &
D=$!
/pcd watch $J1 >/dev/null 2>&1; /pcd watch $J2 >/dev/null 2>&1
say group.tasks "$(/pcd tasks --json $J1 | tr -d '\n')$(/pcd tasks --json $J2 | tr -d '\n')"
kill $D; wait $D; say daemon.rc $?
say d.after "$(find /sys/fs/cgroup/d -mindepth 1 -type d) [$(cat /sys/fs/cgroup/d/cgroup.subtree_control)]"
say done 1
poweroff -f
`

// TestLimitsOnCgroupV2 boots a Linux kernel whose only cgroups are v2 in
// a virtual machine, with pcd and busybox for all its programs, and
// checks pcd's limits there: this machine mounts cgroup v1. It needs
// qemu-system-x86_64, a kernel in /boot and a static busybox (Debian's
// qemu-system-x86, linux-image-amd64 and busybox-static).
func TestLimitsOnCgroupV2(t *testing.T) {
	skip := t.Skip
	if os.Getenv("CI") != "" {
		skip = t.Fatal // CI installs what it needs
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		skip("needs qemu-system-x86_64 (Debian's qemu-system-x86) to boot a machine with cgroup v2")
	}
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Strings(kernels)
	if len(kernels) == 0 {
		skip("needs a Linux kernel in /boot (Debian's linux-image-amd64) to boot a machine with cgroup v2")
	}
	kernel := kernels[len(kernels)-1]
	busybox, err := exec.LookPath("busybox")
	if err != nil || !static(busybox) {
		skip("needs a static busybox (Debian's busybox-static) for the machine's programs")
	}
	dir := t.TempDir()
	pcdBin := filepath.Join(dir, "pcd")
	build := exec.Command("go", "build", "-o", pcdBin, "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a static pcd: %v: %s", err, out)
	}
	initrd := filepath.Join(dir, "initrd")
	if err := writeInitrd(initrd, map[string]string{"busybox": busybox, "pcd": pcdBin}, v2Init); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-m", "1024", "-smp", "2", "-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 quiet rdinit=/init")
	var console bytes.Buffer
	cmd.Stdout, cmd.Stderr = &console, &console
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("qemu: %v:\n%s", err, console.String())
	}
	t.Logf("the machine ran for %v", time.Since(start).Round(time.Second))
	got := map[string]string{}
	sc := bufio.NewScanner(&console)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// A line may start with the console's escape codes.
		if i := strings.Index(sc.Text(), "@@ "); i >= 0 {
			k, v, _ := strings.Cut(sc.Text()[i+3:], " ")
			got[k] = strings.TrimSpace(v)
		}
	}
	if got["done"] != "1" {
		t.Fatalf("the machine did not finish its checks:\n%s", console.String())
	}
	if !strings.Contains(got["controllers"], "memory") || !strings.Contains(got["controllers"], "cpu") {
		t.Skipf("the kernel's cgroup v2 has no memory and cpu controllers: %q", got["controllers"])
	}
	tasks := func(key string) []taskResult {
		var ts []taskResult
		dec := json.NewDecoder(strings.NewReader(got[key]))
		for dec.More() {
			var task taskResult
			if err := dec.Decode(&task); err != nil {
				t.Fatalf("%s: %v: %q", key, err, got[key])
			}
			ts = append(ts, task)
		}
		return ts
	}
	checkRC := func(key, want string) {
		t.Helper()
		if got[key] != want {
			t.Errorf("%s = %q, want %q", key, got[key], want)
		}
	}

	checkRC("over.rc", "1")
	if ts := tasks("over.tasks"); len(ts) != 1 || ts[0].Error != "killed: over its memory limit of 64 MiB" || !ts[0].Result.OOMKilled {
		t.Errorf("a command over its memory limit: %+v", ts)
	}
	checkRC("under.rc", "0")
	if ts := tasks("under.tasks"); len(ts) != 1 || ts[0].State != "succeeded" || ts[0].Result.MaxRSSKiB < 100<<10 || ts[0].Result.MaxRSSKiB > 256<<10 {
		t.Errorf("a command of 100 MiB under a limit of 256 MiB: %+v", ts)
	}
	// The quota caps the share; a busy machine can only lower it. Two
	// busy loops without it show that the check can fail.
	checkRC("cpus.rc", "0")
	checkRC("nocpus.rc", "0")
	limited, free := tasks("cpus.tasks"), tasks("nocpus.tasks")
	if len(limited) != 1 || len(free) != 1 {
		t.Fatalf("the cpus runs: %+v %+v", limited, free)
	}
	share, freeShare := limited[0].Result.CPUSecs/limited[0].Time, free[0].Result.CPUSecs/free[0].Time
	t.Logf("two busy loops used %.2f of a CPU under --cpus 0.5, %.2f without", share, freeShare)
	if limited[0].Result.CPUSecs <= 0 || share > 0.65 {
		t.Errorf("two busy loops used %.2f of a CPU under --cpus 0.5, want at most 0.65", share)
	}
	if got["root.after"] != "[]" {
		t.Errorf("after the runs in the root cgroup, its pcd cgroups and controllers: %q, want none", got["root.after"])
	}

	checkRC("shared.rc", "2")
	if !strings.Contains(got["shared.err"], "holds other processes: start pcd in a cgroup of its own") {
		t.Errorf("in a cgroup shared with another process: %q", got["shared.err"])
	}
	if got["shared.after"] != "[]" {
		t.Errorf("the shared cgroup after the refusal: %q, want as it was", got["shared.after"])
	}
	checkRC("own.rc", "1")
	if ts := tasks("own.tasks"); len(ts) != 1 || ts[0].Error != "killed: over its memory limit of 64 MiB" {
		t.Errorf("in a cgroup of its own, a command over its memory limit: %+v", ts)
	}
	if got["own.after"] != "[]" {
		t.Errorf("pcd's own cgroup after it: %q, want as it was", got["own.after"])
	}
	checkRC("own.again.rc", "0")

	var failed, succeeded int
	for _, ts := range tasks("group.tasks") {
		switch {
		case ts.State == "succeeded":
			succeeded++
		case ts.Error == `killed: its group "lim" is over its memory limit of 80 MiB`:
			failed++
		}
	}
	if failed+succeeded != 2 || failed < 1 {
		t.Errorf("two commands of 60 MiB in a group of 80 MiB: %s", got["group.tasks"])
	}
	checkRC("daemon.rc", "0")
	if got["d.after"] != "[]" {
		t.Errorf("the daemon's cgroup after it stopped: %q, want as it was", got["d.after"])
	}
}

// static reports whether the ELF file at path has no interpreter.
func static(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// writeInitrd writes an initramfs (cpio, newc) of the files, by name at
// its root, and init.
func writeInitrd(path string, files map[string]string, init string) error {
	var buf bytes.Buffer
	ino := 0
	add := func(name string, mode int, data []byte) {
		ino++
		fmt.Fprintf(&buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		buf.WriteString(name + "\x00")
		pad := func() {
			for buf.Len()%4 != 0 {
				buf.WriteByte(0)
			}
		}
		pad()
		buf.Write(data)
		pad()
	}
	add("init", 0o100755, []byte(init))
	for name, src := range files {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return err
		}
		add(name, 0o100755, data)
	}
	add("TRAILER!!!", 0, nil)
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
