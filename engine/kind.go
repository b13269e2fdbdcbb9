package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// ErrUnknownKind is returned for a task kind no one registered.
var ErrUnknownKind = errors.New("unknown task kind")

// Task is what a kind runs.
type Task struct {
	JobID   string // the job's uuid
	ID      string // the task's uuid
	Number  int64  // 1-based position in the job
	Kind    string
	Payload json.RawMessage
	Attempt int // 1 on the first run
	// Slot is the number of the worker that runs the task, from 1 to the
	// job's workers: GNU parallel's {%}, and $PCD_SLOT of a command.
	Slot int
}

// Kind is a type of task: sleep, noop, or one a library user adds.
type Kind interface {
	// Validate checks a payload when the job is created, so that bad input
	// is refused before anything is written.
	Validate(payload json.RawMessage) error
	// Run executes one task. The result, if any, is JSON. Run must return
	// soon after ctx is cancelled.
	Run(ctx context.Context, t Task) (json.RawMessage, error)
}

// Isolated is implemented by kinds whose tasks can neither take the
// process down nor do anything outside it, so that running one twice is
// harmless (sleep, noop, fail). Their tasks run without waiting for a
// durable start mark; the mark is written with the next group commit
// instead, or not at all when the result commits with it. Other kinds,
// exec and Go functions among them, wait for the mark: if the runner dies
// while one runs (or crashes pcd), it is always counted as interrupted,
// shown as one that may have run twice, and failed after three restarts.
type Isolated interface {
	Isolated() bool
}

func isolated(k Kind) bool {
	i, ok := k.(Isolated)
	return ok && i.Isolated()
}

// Func adapts a Go function to a Kind that accepts any payload.
type Func func(ctx context.Context, t Task) (json.RawMessage, error)

// Validate accepts any payload.
func (Func) Validate(json.RawMessage) error { return nil }

// Run calls f.
func (f Func) Run(ctx context.Context, t Task) (json.RawMessage, error) { return f(ctx, t) }

// DefaultMaxPayload is the largest task payload a registry accepts unless
// told otherwise: 1 MiB of JSON.
const DefaultMaxPayload = 1 << 20

// Registry maps kind names to kinds. It is safe for concurrent use.
type Registry struct {
	mu    sync.RWMutex
	kinds map[string]Kind
	max   int
}

// SetMaxPayload sets the largest payload, in bytes, that Validate accepts.
func (r *Registry) SetMaxPayload(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.max = n
}

// MaxPayload is the largest payload Validate accepts.
func (r *Registry) MaxPayload() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.max
}

// NewRegistry returns a registry holding the built-in kinds.
func NewRegistry() *Registry {
	r := &Registry{kinds: map[string]Kind{}, max: DefaultMaxPayload}
	r.Register("sleep", Sleep{})
	r.Register("noop", Noop{})
	r.Register("fail", Fail{})
	r.Register("exec", Exec{})
	return r
}

// Register adds a kind. It panics if the name is taken (a built-in kind
// included), as http.ServeMux does for a pattern registered twice: two
// kinds of one name is a programming error, and a silent replace would
// run tasks with the wrong code. Replace swaps a kind on purpose.
func (r *Registry) Register(name string, k Kind) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, taken := r.kinds[name]; taken {
		panic(fmt.Sprintf("engine: kind %q registered twice", name))
	}
	if name == "" || k == nil {
		panic("engine: Register needs a name and a kind")
	}
	r.kinds[name] = k
}

// Replace swaps the kind registered under name for k, such as a built-in
// kind for one with other settings. It panics if there is none.
func (r *Registry) Replace(name string, k Kind) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, taken := r.kinds[name]; !taken || k == nil {
		panic(fmt.Sprintf("engine: Replace of kind %q, which is not registered", name))
	}
	r.kinds[name] = k
}

// Lookup finds a kind by name.
func (r *Registry) Lookup(name string) (Kind, error) {
	r.mu.RLock()
	k, ok := r.kinds[name]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownKind, name, strings.Join(r.Names(), ", "))
	}
	return k, nil
}

// Names lists the registered kinds, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.kinds))
	for n := range r.kinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return slices.Clip(names)
}

// Validate checks a task's kind and payload, and the payload's size.
func (r *Registry) Validate(kind string, payload json.RawMessage) error {
	k, err := r.Lookup(kind)
	if err != nil {
		return err
	}
	if max := r.MaxPayload(); max > 0 && len(payload) > max {
		return fmt.Errorf("%w: the payload is %d bytes, over %d (--max-payload)", ErrPayloadTooLarge, len(payload), max)
	}
	if err := k.Validate(payload); err != nil {
		return fmt.Errorf("%s: %w", kind, err)
	}
	return nil
}
