package main_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// pcd help, pcd help CMD, an unknown command (issue 14, point 5).
func TestHelpAndUnknownCommands(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	r := pcd(t, db, "help")
	if r.code != 0 || !strings.Contains(r.stdout, "COMMANDS:") || !strings.Contains(r.stdout, "submit") {
		t.Fatalf("pcd help: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = pcd(t, db, "help", "tasks")
	if r.code != 0 || !strings.Contains(r.stdout, "pcd tasks") {
		t.Fatalf("pcd help tasks: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, args := range [][]string{{"frobnicate"}, {"help", "frobnicate"}, {"--db", db, "frobnicate", "x"}} {
		r = pcd(t, db, args...)
		want := "pcd: unknown command \"frobnicate\": see pcd help\n"
		if r.code != 2 || r.stderr != want || r.stdout != "" {
			t.Fatalf("pcd %v: exit %d, stdout %q, stderr %q; want exit 2 and %q", args, r.code, r.stdout, r.stderr, want)
		}
	}
	// A flag's value before the command is not taken for a command.
	r = pcd(t, db, "--log-level", "warn", "jobs")
	if r.code != 8 {
		t.Fatalf("pcd --log-level warn jobs (no database yet): exit %d, want 8\n%s", r.code, r.stderr)
	}
}

// pcd --version prints the module version and the VCS revision it was
// built from.
func TestVersion(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not in a git checkout: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "pcd")
	if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("pcd --version: %v", err)
	}
	rev := strings.TrimSpace(string(head))[:12]
	if !strings.HasPrefix(string(out), "pcd version ") || !strings.Contains(string(out), rev) {
		t.Fatalf("pcd --version: %q, want the revision %s", out, rev)
	}
}
