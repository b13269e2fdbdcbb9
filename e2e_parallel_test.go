package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// GNU parallel's arguments, side by side: the same command line through
// pcd run and through parallel prints the same (issue 14, point 3). pcd's
// default is argv words, parallel -q's; pcd --shell is parallel's own.
func TestArgsLikeParallel(t *testing.T) {
	gnu, err := exec.LookPath("parallel")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("GNU parallel is not installed (.ci/run installs it): %v", err)
		}
		t.Skip("GNU parallel is not installed")
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "pcd.db")
	tricky := []string{"dir/sub/file.tar.gz", "a b.txt", "noext", "/abs/path.x", ".hidden", "dir.d/file", "quote's",
		"/", "a/", "..", "x.", "x/.y", "", `$HOME`, "*", "two  spaces", "tab\there", `back\slash`, "-n", "é.ü"}
	list := filepath.Join(dir, "list")
	os.WriteFile(list, []byte(strings.Join(tricky, "\n")+"\n"), 0o600)
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("1\n2 two\n3"), 0o600) // no newline at the end
	all := append([]string{":::"}, tricky...)
	cases := []struct {
		name  string
		pcd   []string // after pcd run -k
		gnu   []string // after parallel -k
		stdin string
	}{
		{"replacement strings", append([]string{"--", "printf", `%s|%s|%s|%s|%s|%s\n`, "{}", "{.}", "{/}", "{//}", "{/.}", "{#}"}, all...),
			append([]string{"-q", "printf", `%s|%s|%s|%s|%s|%s\n`, "{}", "{.}", "{/}", "{//}", "{/.}", "{#}"}, all...), ""},
		{"cross product", []string{"--", "printf", `%s-%s<%s>\n`, "{1}", "{2/.}", "{#}", ":::", "a", "b", "c", ":::", "x/y.z", "w"},
			[]string{"-q", "printf", `%s-%s<%s>\n`, "{1}", "{2/.}", "{#}", ":::", "a", "b", "c", ":::", "x/y.z", "w"}, ""},
		{"no replacement string", []string{"--", "echo", ":::", "a", "b", ":::", "c d", "e"},
			[]string{"-q", "echo", ":::", "a", "b", ":::", "c d", "e"}, ""},
		{"{} of two sources", []string{"--", "printf", `<%s>\n`, "{}", ":::", "a", "b", ":::", "c d"},
			[]string{"-q", "printf", `<%s>\n`, "{}", ":::", "a", "b", ":::", "c d"}, ""},
		{"linked sources", []string{"--", "printf", `%s=%s\n`, "{1}", "{2}", ":::", "a", "b", "c", ":::+", "1", "2"},
			[]string{"-q", "printf", `%s=%s\n`, "{1}", "{2}", ":::", "a", "b", "c", ":::+", "1", "2"}, ""},
		{":::: files", []string{"--", "printf", `[%s][%s]\n`, "{1}", "{2}", "::::", list, other},
			[]string{"-q", "printf", `[%s][%s]\n`, "{1}", "{2}", "::::", list, other}, ""},
		{"stdin", []string{"--args", "-", "--", "printf", `<%s>\n`},
			[]string{"-q", "printf", `<%s>\n`}, strings.Join(tricky, "\n")},
		// The shells differ (parallel runs $SHELL, pcd /bin/sh): no echo.
		{"--shell", append([]string{"--shell", "--", `printf "%s|%s\n" {} {/.} | tr a-z A-Z`}, all...),
			append([]string{`printf "%s|%s\n" {} {/.} | tr a-z A-Z`}, all...), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := exec.Command(gnu, append([]string{"--will-cite", "-k"}, c.gnu...)...)
			want.Stdin = strings.NewReader(c.stdin)
			want.Env = append(os.Environ(), "HOME=/home/nobody")
			wantOut, err := want.Output()
			if err != nil {
				t.Fatalf("parallel: %v", err)
			}
			t.Setenv("HOME", "/home/nobody")
			r := pcdIn(t, dir, db, c.stdin, append([]string{"run", "-k"}, c.pcd...)...)
			if r.code != 0 {
				t.Fatalf("pcd run: exit %d: %s", r.code, r.stderr)
			}
			if r.stdout != string(wantOut) {
				t.Errorf("pcd and parallel differ:\npcd:\n%s\nparallel:\n%s", r.stdout, wantOut)
			}
		})
	}
}
