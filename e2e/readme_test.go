package e2e_test

import (
	"context"
	"os"
	"regexp"
	"testing"

	"github.com/urfave/cli/v2"

	pcdcli "github.com/pcd-dev/pcd/cli"
)

// The README documents every command and every flag.
func TestReadmeDocumentsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(readme)
	app := pcdcli.App(context.Background(), pcdcli.Env{})
	var check func(prefix string, cmds []*cli.Command)
	check = func(prefix string, cmds []*cli.Command) {
		for _, cmd := range cmds {
			if cmd.Hidden || cmd.Name == "help" {
				continue
			}
			name := prefix + cmd.Name
			if !regexp.MustCompile(`pcd ` + regexp.QuoteMeta(name) + `(?:[^\w-]|$)`).MatchString(doc) {
				t.Errorf("the README never shows `pcd %s`", name)
			}
			for _, f := range cmd.Flags {
				flag := "--" + f.Names()[0]
				if flag == "--help" {
					continue
				}
				if !regexp.MustCompile(regexp.QuoteMeta(flag) + `(?:[^\w-]|$)`).MatchString(doc) {
					t.Errorf("pcd %s %s is not in the README", name, flag)
				}
			}
			check(name+" ", cmd.Subcommands)
		}
	}
	check("", app.Commands)
}
