package cli

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestReplacementStrings(t *testing.T) {
	t.Parallel()
	// As GNU parallel 20221122 prints them (TestArgsLikeParallel compares
	// the two on a machine that has it).
	for in, want := range map[string]string{
		"dir/sub/file.tar.gz": "dir/sub/file.tar.gz|dir/sub/file.tar|file.tar.gz|dir/sub|file.tar",
		"a b.txt":             "a b.txt|a b|a b.txt|.|a b",
		".hidden":             ".hidden||.hidden|.|",
		"dir.d/file":          "dir.d/file|dir.d/file|file|dir.d|file",
		"/":                   "/|/||/|",
		"a/":                  "a/|a/||.|",
		"..":                  "..|.|..|.|.",
		"x/.y":                "x/.y|x/|.y|x|",
		"a//b":                "a//b|a//b|b|a|b",
		"":                    "|||.|",
	} {
		got := scanReplacements("{}|{.}|{/}|{//}|{/.}", func(r replacement) string { return r.apply(1, []string{in}) })
		if got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
	got := scanReplacements("{#}:{2/}:{1.}:{x}:{3:{", func(r replacement) string { return r.apply(7, []string{"x.y", "d/e.f"}) })
	if got != "7:e.f:x:{x}:{3:{" {
		t.Errorf("positional and unknown: %q", got)
	}
}

func plan(t *testing.T, shell bool, words ...string) *argPlan {
	t.Helper()
	p, err := parseArgPlan(words, "", strings.NewReader(""), shell)
	if err != nil {
		t.Fatalf("%q: %v", words, err)
	}
	return p
}

func commands(p *argPlan) []string {
	var out []string
	p.each(func(seq int64, args []string) error {
		pl := p.payload(seq, args)
		if pl.Shell != "" {
			out = append(out, pl.Shell)
		} else {
			out = append(out, strings.Join(pl.Argv, ","))
		}
		return nil
	})
	return out
}

func TestArgPlans(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		shell bool
		words []string
		want  []string
	}{
		{false, []string{"echo", "{}", ":::", "a b", "c"}, []string{"echo,a b", "echo,c"}},
		{false, []string{"echo", ":::", "a", "b", ":::", "1", "2"}, []string{"echo,a,1", "echo,a,2", "echo,b,1", "echo,b,2"}},
		{false, []string{"cp", "{1}", "{2}/{1/}", ":::", "x", "y", "z", ":::+", "d1", "d2"}, []string{"cp,x,d1/x", "cp,y,d2/y"}},
		{false, []string{"mv", "{}", "{.}.bak", ":::", "f.txt"}, []string{"mv,f.txt,f.bak"}},
		{true, []string{"echo {} | wc -c", ":::", "it's", "$HOME"}, []string{`echo 'it'"'"'s' | wc -c`, `echo '$HOME' | wc -c`}},
		{true, []string{"echo", ":::", "a b"}, []string{"echo 'a b'"}},
	} {
		if got := commands(plan(t, c.shell, c.words...)); !slices.Equal(got, c.want) {
			t.Errorf("%q (shell %v): %q, want %q", c.words, c.shell, got, c.want)
		}
	}
}

// TestArgPlanErrors: a command line that cannot make tasks is a usage
// error, and writes nothing.
func TestArgPlanErrors(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pcd.db")
	big := make([]string, 0, 1002)
	big = append(big, ":::")
	for range 1001 {
		big = append(big, "x")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--", "echo", ":::"}, "gives no arguments"},
		{[]string{"--", ":::", "a"}, "needs a command"},
		{[]string{"--", "echo", "{3}", ":::", "a", ":::", "b"}, "only 2 input sources"},
		{[]string{"--", "echo", ":::+", "a"}, "there is none"},
		{[]string{"--", "echo", "::::"}, "needs a FILE"},
		{[]string{"--", "echo", "::::", "/no/such/file"}, "no such file"},
		{[]string{"--args", "-"}, "go with -- CMD"},
		{append(append([]string{"--", "echo"}, big...), big...), "over 1000000 tasks"},
	} {
		_, _, err := pcd(t, "", append([]string{"--db", db, "submit"}, c.args...)...)
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("submit %q: %v, want a usage error saying %q", c.args, err, c.want)
		}
	}
	if _, _, err := pcd(t, "", "--db", db, "jobs"); err == nil {
		t.Errorf("a refused command line made the database")
	}
}
