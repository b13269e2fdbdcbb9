package e2e_test

import (
	"context"
	"os"
	"regexp"
	"testing"

	"github.com/urfave/cli/v2"

	pcdcli "github.com/pcd-dev/pcd/cli"
)

// docs/commands.md documents every command and every flag.
func TestDocsDocumentEveryFlag(t *testing.T) {
	commands, err := os.ReadFile("../docs/commands.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(commands)
	app := pcdcli.App(context.Background(), pcdcli.Env{})
	var check func(prefix string, cmds []*cli.Command)
	check = func(prefix string, cmds []*cli.Command) {
		for _, cmd := range cmds {
			if cmd.Hidden || cmd.Name == "help" {
				continue
			}
			name := prefix + cmd.Name
			if !regexp.MustCompile(`pcd ` + regexp.QuoteMeta(name) + `(?:[^\w-]|$)`).MatchString(doc) {
				t.Errorf("docs/commands.md never shows `pcd %s`", name)
			}
			for _, f := range cmd.Flags {
				flag := "--" + f.Names()[0]
				if flag == "--help" {
					continue
				}
				if !regexp.MustCompile(regexp.QuoteMeta(flag) + `(?:[^\w-]|$)`).MatchString(doc) {
					t.Errorf("pcd %s %s is not in docs/commands.md", name, flag)
				}
			}
			check(name+" ", cmd.Subcommands)
		}
	}
	check("", app.Commands)
}
