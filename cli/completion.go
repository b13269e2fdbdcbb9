package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pcd-dev/pcd/store"
	"github.com/urfave/cli/v2"
)

// completionFlag is how a shell asks pcd for candidates: urfave/cli's
// dynamic completion. pcd ARGS... --generate-bash-completion prints the
// commands, or with a last argument that starts with -, the flags.
const completionFlag = "--generate-bash-completion"

// bashCompletion completes commands and flags by asking pcd itself, and
// files after -- (a command line) or where pcd has nothing to say.
const bashCompletion = `# pcd completion for bash: source it, or put it in
# ~/.local/share/bash-completion/completions/pcd
_pcd_complete() {
  local cur="${COMP_WORDS[COMP_CWORD]}" i
  COMPREPLY=()
  for ((i = 1; i < COMP_CWORD; i++)); do
    [[ "${COMP_WORDS[i]}" == "--" ]] && return 0  # a command line: files
  done
  local args=("${COMP_WORDS[@]:1:COMP_CWORD-1}")
  [[ "$cur" == -* ]] && args+=("$cur")
  local IFS=$'\n'
  COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" "${args[@]}" ` + completionFlag + ` 2>/dev/null)" -- "$cur"))
}
complete -o default -o bashdefault -F _pcd_complete pcd
`

// zshCompletion is the bash completion under zsh's bashcompinit.
const zshCompletion = `#compdef pcd
# pcd completion for zsh: source it, or put it in a directory of $fpath
# as _pcd
autoload -U +X bashcompinit && bashcompinit
` + bashCompletion

func completionCommand(env Env) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script: bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: `Prints a script that completes pcd's commands and flags:

  source <(pcd completion bash)          # bash, this shell
  pcd completion bash > ~/.local/share/bash-completion/completions/pcd
  source <(pcd completion zsh)           # zsh
  pcd completion fish > ~/.config/fish/completions/pcd.fish`,
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError("give one shell: bash, zsh or fish")
			}
			var script string
			switch c.Args().First() {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = zshCompletion
			case "fish":
				fish, err := c.App.ToFishCompletion()
				if err != nil {
					return fmt.Errorf("fish completion: %w", err)
				}
				script = fish
			default:
				return usageError("unknown shell %q: want bash, zsh or fish", c.Args().First())
			}
			_, err := io.WriteString(env.Stdout, script)
			return err
		},
	}
}

// maxCompleted is how many jobs a completion offers: the newest.
const maxCompleted = 200

// withJobCompletion makes the commands that take a job complete job ids:
// the first 8 characters of the newest jobs' ids, those whose state the
// command can act on. Flags complete as before.
func withJobCompletion(cmds []*cli.Command) []*cli.Command {
	wants := map[string]func(store.Job) bool{
		"cancel": func(j store.Job) bool { return !j.Finished() },
		"pause":  func(j store.Job) bool { return !j.Finished() && !j.Paused },
		"resume": func(j store.Job) bool { return !j.Finished() && j.Paused },
		"kill":   func(j store.Job) bool { return j.State == store.Running },
		"retry":  func(j store.Job) bool { return j.Finished() && j.Failed+j.Cancelled > 0 },
	}
	for _, cmd := range cmds {
		if !strings.Contains(cmd.ArgsUsage, "JOB") {
			continue
		}
		want := wants[cmd.Name]
		if want == nil {
			want = func(store.Job) bool { return true }
		}
		cmd.BashComplete = func(c *cli.Context) {
			if args := os.Args; len(args) > 2 && strings.HasPrefix(args[len(args)-2], "-") {
				cli.DefaultCompleteWithFlags(c.Command)(c) // a flag is being typed
				return
			}
			completeJobs(c, want)
		}
	}
	return cmds
}

// completeJobs prints the short ids of the newest jobs that want takes,
// one a line; a database that cannot be read completes nothing.
func completeJobs(c *cli.Context, want func(store.Job) bool) {
	db, err := openReader(c)
	if err != nil {
		return
	}
	defer db.Close()
	jobs, err := db.Jobs(c.Context, store.JobFilter{Limit: maxCompleted})
	if err != nil {
		return
	}
	for _, j := range jobs {
		if want(j) {
			fmt.Fprintln(c.App.Writer, j.UUID[:8])
		}
	}
}
