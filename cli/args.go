package cli

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/pcd-dev/pcd/engine"
)

// Arguments as in GNU parallel: pcd run -- CMD {} ::: a b c runs CMD once
// per argument. The words after -- are a command template, then input
// sources:
//
//	::: A B C     the arguments A, B and C
//	:::: FILE     one argument per line of FILE (- for stdin)
//	:::+ / ::::+  linked to the source before: the nth arguments go
//	              together, and the shorter source sets the length
//
// Several sources make the cross product, the first varying slowest.
// --args FILE (- for stdin) is one more source, first, as parallel reads
// stdin. In each word of the template the replacement strings take the
// task's arguments; a template with none gets them appended.
//
// Each argument is one argv word: no shell reads it, so spaces, quotes
// and $ need no quoting. With --shell the template is a shell command
// line, and each replacement is quoted for sh.

// maxArgTasks bounds the tasks a parallel-style command line may make:
// a job file or an NDJSON stream takes more.
const maxArgTasks = 1_000_000

// argSource is one input source.
type argSource struct {
	values []string
	linked bool // :::+ or ::::+: goes with the source before it
}

// argPlan is a parsed parallel-style command line.
type argPlan struct {
	template []string
	sources  []argSource
	groups   [][]int // the sources of each group of linked sources
	lens     []int   // the length of each group
	total    int64
	shell    bool
	tag      bool   // pcd run --tag: each task's arguments tag its output
	slot     string // what stands for {%} in a payload until a worker runs it
}

// hasArgSources says whether the words after -- hold an input source.
func hasArgSources(words []string) bool {
	for _, w := range words {
		if isSeparator(w) {
			return true
		}
	}
	return false
}

func isSeparator(w string) bool {
	return w == ":::" || w == "::::" || w == ":::+" || w == "::::+"
}

// parseArgPlan reads the template and the sources; stdinArgs is --args,
// read before the ::: sources.
func parseArgPlan(words []string, argsFile string, stdin io.Reader, shell bool) (*argPlan, error) {
	p := &argPlan{shell: shell, slot: slotToken()}
	i := 0
	for i < len(words) && !isSeparator(words[i]) {
		i++
	}
	p.template = words[:i]
	if len(p.template) == 0 || p.template[0] == "" {
		return nil, usageError("-- needs a command before its ::: arguments")
	}
	stdinUsed := false
	readLines := func(path string) ([]string, error) {
		if path == "-" {
			if stdinUsed {
				return nil, usageError("stdin can give arguments once (--args - or :::: -)")
			}
			stdinUsed = true
			return argLines(stdin, "stdin")
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, usageError("arguments: %w", err)
		}
		defer f.Close()
		return argLines(f, path)
	}
	if argsFile != "" {
		values, err := readLines(argsFile)
		if err != nil {
			return nil, err
		}
		p.sources = append(p.sources, argSource{values: values})
	}
	for i < len(words) {
		sep := words[i]
		i++
		j := i
		for j < len(words) && !isSeparator(words[j]) {
			j++
		}
		src := argSource{linked: strings.HasSuffix(sep, "+")}
		if src.linked && len(p.sources) == 0 {
			return nil, usageError("%s links to the input source before it, and there is none", sep)
		}
		if strings.HasPrefix(sep, "::::") {
			if j == i {
				return nil, usageError("%s needs a FILE", sep)
			}
			for _, path := range words[i:j] {
				values, err := readLines(path)
				if err != nil {
					return nil, err
				}
				// Each file is a source of its own, as in parallel.
				p.sources = append(p.sources, argSource{values: values, linked: src.linked})
			}
		} else {
			src.values = words[i:j]
			p.sources = append(p.sources, src)
		}
		i = j
	}
	if err := p.size(); err != nil {
		return nil, err
	}
	return p, p.checkTemplate()
}

// argLines reads one argument per line; the line's end is not part of it.
func argLines(r io.Reader, name string) ([]string, error) {
	var out []string
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if len(line) > 0 {
			if len(out) >= maxArgTasks {
				return nil, usageError("arguments from %s: more than %d lines; submit a job file or NDJSON (pcd submit -) instead", name, maxArgTasks)
			}
			line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
			if len(line) > 1<<20 {
				return nil, usageError("arguments from %s: line %d is over 1 MiB", name, len(out)+1)
			}
			out = append(out, line)
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("arguments from %s: %w", name, err)
		}
	}
}

// size groups linked sources and counts the tasks.
func (p *argPlan) size() error {
	for i, s := range p.sources {
		if s.linked {
			g := len(p.groups) - 1
			p.groups[g] = append(p.groups[g], i)
			p.lens[g] = min(p.lens[g], len(s.values))
			continue
		}
		p.groups = append(p.groups, []int{i})
		p.lens = append(p.lens, len(s.values))
	}
	p.total = 1
	for _, n := range p.lens {
		if n == 0 {
			return usageError("an input source (::: or ::::) gives no arguments: there is no task to run")
		}
		if p.total > maxArgTasks/int64(n) {
			return usageError("the input sources make over %d tasks; submit a job file or NDJSON (pcd submit -) instead", maxArgTasks)
		}
		p.total *= int64(n)
	}
	return nil
}

// checkTemplate refuses a positional replacement string past the last
// source, which parallel would leave empty.
func (p *argPlan) checkTemplate() error {
	for _, w := range p.template {
		var bad error
		scanReplacements(w, func(r replacement) string {
			if r.source > len(p.sources) && bad == nil {
				bad = usageError("%s: there are only %d input sources", r.text, len(p.sources))
			}
			return ""
		})
		if bad != nil {
			return bad
		}
	}
	return nil
}

// each calls fn with the arguments of each task, in order: the first
// group varies slowest.
func (p *argPlan) each(fn func(seq int64, args []string) error) error {
	args := make([]string, len(p.sources))
	idx := make([]int, len(p.groups))
	for seq := int64(1); seq <= p.total; seq++ {
		for g, sources := range p.groups {
			for _, s := range sources {
				args[s] = p.sources[s].values[idx[g]]
			}
		}
		if err := fn(seq, args); err != nil {
			return err
		}
		for g := len(idx) - 1; g >= 0; g-- {
			idx[g]++
			if idx[g] < p.lens[g] {
				break
			}
			idx[g] = 0
		}
	}
	return nil
}

// payload is the exec payload of the task with these arguments. {} (and
// {.}, {/}...) of several sources is each source's argument: as a whole
// word it becomes one word per source, as in parallel -q; inside a word,
// they are joined by spaces.
func (p *argPlan) payload(seq int64, args []string) engine.ExecPayload {
	quote := func(s string) string { return s }
	if p.shell {
		quote = shellQuote
	}
	used, slotUsed := false, false
	words := make([]string, 0, len(p.template)+len(args))
	for _, w := range p.template {
		if r, ok := wholeReplacement(w); ok && r.source == 0 && r.op != "#" && r.op != "%" && !p.shell {
			used = true
			for _, a := range args {
				words = append(words, r.transform(a))
			}
			continue
		}
		words = append(words, scanReplacements(w, func(r replacement) string {
			if r.op == "%" { // the worker's number, known when it runs
				slotUsed = true
				return p.slot
			}
			used = true
			if !p.shell || r.op == "#" {
				return r.apply(seq, args)
			}
			if r.source > 0 {
				return quote(r.transform(args[r.source-1]))
			}
			each := make([]string, len(args))
			for i, a := range args {
				each[i] = quote(r.transform(a))
			}
			return strings.Join(each, " ")
		}))
	}
	if !used {
		for _, a := range args {
			words = append(words, quote(a))
		}
	}
	var out engine.ExecPayload
	if p.shell {
		out.Shell = strings.Join(words, " ")
	} else {
		out.Argv = words
	}
	if slotUsed {
		out.Slot = p.slot
	}
	if p.tag {
		out.Tag = strings.Join(args, " ")
	}
	return out
}

// slotToken is what stands for {%} in the payloads of one command line:
// a word no argument holds by chance.
func slotToken() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "{%" + hex.EncodeToString(b[:]) + "}"
}

// wholeReplacement says whether the word is one replacement string.
func wholeReplacement(w string) (replacement, bool) {
	if len(w) < 2 || w[0] != '{' || w[len(w)-1] != '}' || strings.Count(w, "}") != 1 {
		return replacement{}, false
	}
	return parseReplacement(w)
}

// job is the plan's tasks as a job file.
func (p *argPlan) job(env Env) (engine.JobFile, error) {
	jf := engine.JobFile{Name: commandName(p.template, p.shell)}
	err := p.each(func(seq int64, args []string) error {
		payload, err := json.Marshal(p.payload(seq, args))
		if err != nil {
			return err
		}
		jf.Tasks = append(jf.Tasks, engine.TaskSpec{Kind: "exec", Payload: payload})
		return nil
	})
	if err != nil {
		return jf, err
	}
	if err := jf.Validate(env.Registry); err != nil {
		return jf, usageError("%w", err)
	}
	return jf, nil
}

// replacement is one replacement string in a template word: {} {.} {/}
// {//} {/.} {#} {%}, or the same of one source, {2} {2.} {2/} {2//} {2/.}.
type replacement struct {
	text   string
	source int    // 1-based; 0 is every source, joined by spaces
	op     string // "", ".", "/", "//", "/." or "#"
}

// apply is the replacement's text for a task's arguments, with several
// sources' joined by spaces.
func (r replacement) apply(seq int64, args []string) string {
	switch {
	case r.op == "#":
		return strconv.FormatInt(seq, 10)
	case r.source > 0:
		return r.transform(args[r.source-1])
	}
	each := make([]string, len(args))
	for i, a := range args {
		each[i] = r.transform(a)
	}
	return strings.Join(each, " ")
}

// transform applies the replacement's operation to one argument.
func (r replacement) transform(s string) string {
	switch r.op {
	case ".":
		return noExt(s)
	case "/":
		return s[strings.LastIndexByte(s, '/')+1:]
	case "//":
		return dirname(s)
	case "/.":
		return noExt(s[strings.LastIndexByte(s, '/')+1:])
	}
	return s
}

// noExt drops the extension: from the last dot, when no slash follows it.
func noExt(s string) string {
	i := strings.LastIndexByte(s, '.')
	if i < 0 || strings.IndexByte(s[i:], '/') >= 0 {
		return s
	}
	return s[:i]
}

// dirname is POSIX dirname(1), as parallel's {//}: "a/" is ".", "/" is
// "/", "a//b" is "a".
func dirname(s string) string {
	t := strings.TrimRight(s, "/")
	if t == "" {
		if s == "" {
			return "."
		}
		return "/"
	}
	i := strings.LastIndexByte(t, '/')
	if i < 0 {
		return "."
	}
	if d := strings.TrimRight(t[:i], "/"); d != "" {
		return d
	}
	return "/"
}

// scanReplacements rewrites each replacement string in w with f; other
// braces are left as they are.
func scanReplacements(w string, f func(replacement) string) string {
	var b strings.Builder
	for {
		open := strings.IndexByte(w, '{')
		if open < 0 {
			b.WriteString(w)
			return b.String()
		}
		end := strings.IndexByte(w[open:], '}')
		if end < 0 {
			b.WriteString(w)
			return b.String()
		}
		text := w[open : open+end+1]
		r, ok := parseReplacement(text)
		b.WriteString(w[:open])
		if ok {
			b.WriteString(f(r))
			w = w[open+end+1:]
			continue
		}
		b.WriteByte('{')
		w = w[open+1:]
	}
}

func parseReplacement(text string) (replacement, bool) {
	inner := text[1 : len(text)-1]
	r := replacement{text: text}
	if inner == "#" || inner == "%" {
		r.op = inner
		return r, true
	}
	digits := 0
	for digits < len(inner) && inner[digits] >= '0' && inner[digits] <= '9' {
		digits++
	}
	if digits > 0 {
		n, err := strconv.Atoi(inner[:digits])
		if err != nil || n < 1 {
			return r, false
		}
		r.source = n
	}
	switch op := inner[digits:]; op {
	case "", ".", "/", "//", "/.":
		r.op = op
		return r, true
	}
	return r, false
}
