package cli

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// printable escapes what a terminal would act on instead of show: control
// characters (C0, DEL, C1), the Unicode controls that reorder text
// (bidi overrides and isolates), and bytes that are not UTF-8. A job name
// or a command's error is user text; printed raw, it could move the
// cursor, retitle the terminal or hide what follows.
func printable(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case (r >= 0x80 && r < 0xa0) || isBidi(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func needsEscape(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || isBidi(r) || r == utf8.RuneError {
			return true
		}
	}
	return false
}

func isBidi(r rune) bool {
	return (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f || r == 0x061c
}

// maxErrorLine bounds an error line: an error may quote user input (a
// payload, a line of a file), and one line must stay one line.
const maxErrorLine = 2048

// ErrorLine is err as the one line main prints: escaped as printable
// does, and cut in the middle past maxErrorLine bytes, keeping the start
// (what failed) and the end (why).
func ErrorLine(err error) string {
	if errors.As(err, new(saidError)) || errors.As(err, new(ExitStatus)) {
		return "" // the command said it already
	}
	s := printable(err.Error())
	if len(s) <= maxErrorLine {
		return s
	}
	head, tail := runeCut(s, maxErrorLine*3/4), s[len(s)-maxErrorLine/4:]
	for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
		tail = tail[1:]
	}
	return fmt.Sprintf("%s … (%d bytes cut) … %s", head, len(s)-len(head)-len(tail), tail)
}

// runeCut is the longest prefix of s of at most n bytes that ends on a
// rune boundary.
func runeCut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// saidError is an error that the command has told the user already (pcd
// run's summary line): it sets the exit code, and is not printed again.
type saidError struct{ err error }

func (e saidError) Error() string { return e.err.Error() }
func (e saidError) Unwrap() error { return e.err }

// ExitStatus is the exit code of a command that ran again in a child
// (Env.Reexec), which said what it had to say.
type ExitStatus int

func (e ExitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
