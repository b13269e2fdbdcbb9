package jobfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pcd-dev/pcd/internal/strictjson"
)

// MaxDuration bounds a duration in a job file (a timeout, a sleep), so
// that a typo cannot park a worker for years.
const MaxDuration = 7 * 24 * time.Hour

// ExecPayload is the payload of the built-in exec kind: a command and
// where it runs. It is part of the job file format, as a job's Dir
// becomes its exec tasks' own.
type ExecPayload struct {
	Argv    []string          `json:"argv,omitempty"`
	Shell   string            `json:"shell,omitempty"`
	Dir     string            `json:"dir,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Stdin   string            `json:"stdin,omitempty"`
	Timeout Duration          `json:"timeout,omitempty"`
	// Slot, if set, is replaced in argv and shell by the number of the
	// worker that runs the task, from 1: GNU parallel's {%}.
	Slot string `json:"slot,omitempty"`
	// Tag is what pcd run --tag puts before each line of the task's
	// output (GNU parallel's --tag): its arguments.
	Tag string `json:"tag,omitempty"`
	// Limits are what the command may use (a job's, unless the task sets
	// its own).
	Limits
}

// Duration reads seconds (a JSON number) or a Go duration string.
type Duration time.Duration

// UnmarshalJSON reads 1.5 or "1500ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var secs float64
	if err := json.Unmarshal(b, &secs); err == nil {
		if secs < 0 || secs > MaxDuration.Seconds() {
			return fmt.Errorf("duration must be between 0 and %v seconds, got %v", MaxDuration.Seconds(), secs)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be seconds or a string such as \"30s\", got %s", strictjson.Excerpt(b))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("not a duration such as \"30s\": %s", strictjson.Excerpt([]byte(strconv.Quote(s))))
	}
	if v < 0 {
		return fmt.Errorf("duration must not be negative, got %v", v)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// ParseExec reads and checks an exec payload.
func ParseExec(payload json.RawMessage) (ExecPayload, error) {
	var p ExecPayload
	if json.Valid(payload) {
		if err := strictjson.Check(payload, strictjson.For[ExecPayload]()); err != nil {
			return p, fmt.Errorf("payload: %w", err)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf(`payload: want {"argv": [...]} or {"shell": "..."}: %w`, strictjson.FieldError(err))
	}
	switch {
	case p.Shell != "" && len(p.Argv) > 0:
		return p, errors.New(`give "argv" or "shell", not both`)
	case p.Shell == "" && p.Argv == nil:
		return p, errors.New(`missing "argv" or "shell"`)
	case p.Shell == "" && (len(p.Argv) == 0 || p.Argv[0] == ""):
		return p, errors.New(`"argv" is empty: it needs a command`)
	}
	for k, v := range p.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return p, fmt.Errorf("env: bad variable name %q", k)
		}
		if strings.ContainsRune(v, 0) {
			return p, fmt.Errorf("env: %s holds a NUL byte, which no program can receive", k)
		}
	}
	// The kernel takes arguments as NUL-terminated strings: a NUL would
	// cut one short, silently.
	for i, a := range p.Argv {
		if strings.ContainsRune(a, 0) {
			return p, fmt.Errorf("argv[%d] holds a NUL byte, which no program can receive", i)
		}
	}
	if err := p.Limits.Validate(); err != nil {
		return p, err
	}
	for _, f := range []struct{ name, v string }{{"shell", p.Shell}, {"dir", p.Dir}} {
		if strings.ContainsRune(f.v, 0) {
			return p, fmt.Errorf("%s holds a NUL byte", f.name)
		}
	}
	return p, nil
}
