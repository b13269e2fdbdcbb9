package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/pcd-dev/pcd/engine/jobfile"
	"github.com/pcd-dev/pcd/internal/strictjson"
)

// Sleep is the sleep kind: {"secs": 0.25}, or {"secs": "250ms"} with a Go
// duration string.
type Sleep struct{}

type sleepPayload struct {
	Secs json.RawMessage `json:"secs"`
}

// ParseSleep reads a sleep payload.
func parseSleep(payload json.RawMessage) (time.Duration, error) {
	var p sleepPayload
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if len(bytes.TrimSpace(payload)) == 0 || bytes.Equal(bytes.TrimSpace(payload), []byte("null")) {
		return 0, errors.New(`missing payload {"secs": N}`)
	}
	if json.Valid(payload) {
		if err := strictjson.Check(payload, strictjson.For[sleepPayload]()); err != nil {
			return 0, fmt.Errorf("payload: %w", err)
		}
	}
	if err := dec.Decode(&p); err != nil {
		return 0, fmt.Errorf("payload: %w", strictjson.FieldError(err))
	}
	if len(p.Secs) == 0 {
		return 0, errors.New(`missing "secs"`)
	}
	var d time.Duration
	var secs float64
	var s string
	switch {
	case json.Unmarshal(p.Secs, &secs) == nil:
		if math.IsNaN(secs) || secs < 0 {
			return 0, fmt.Errorf("secs must not be negative, got %v", secs)
		}
		if secs > jobfile.MaxDuration.Seconds() {
			return 0, fmt.Errorf("secs must be at most %v, got %v", jobfile.MaxDuration.Seconds(), secs)
		}
		d = time.Duration(secs * float64(time.Second))
	case json.Unmarshal(p.Secs, &s) == nil:
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("secs: not a duration such as \"250ms\": %s", strictjson.Excerpt([]byte(strconv.Quote(s))))
		}
		if d < 0 {
			return 0, fmt.Errorf("secs must not be negative, got %v", d)
		}
		if d > jobfile.MaxDuration {
			return 0, fmt.Errorf("secs must be at most %v, got %v", jobfile.MaxDuration, d)
		}
	default:
		return 0, fmt.Errorf("secs must be a number of seconds or a duration such as \"250ms\", got %s", strictjson.Excerpt(p.Secs))
	}
	return d, nil
}

// Isolated: a sleep cannot crash pcd.
func (Sleep) Isolated() bool { return true }

// Validate checks the payload.
func (Sleep) Validate(payload json.RawMessage) error {
	_, err := parseSleep(payload)
	return err
}

// Run sleeps, or returns early when ctx is cancelled.
func (Sleep) Run(ctx context.Context, t Task) (json.RawMessage, error) {
	d, err := parseSleep(t.Payload)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// Noop is the noop kind: it does nothing, for benchmarks.
type Noop struct{}

// Isolated: a noop cannot crash pcd.
func (Noop) Isolated() bool { return true }

// Validate accepts no payload or an empty object.
func (Noop) Validate(payload json.RawMessage) error {
	switch string(bytes.TrimSpace(payload)) {
	case "", "null", "{}":
		return nil
	}
	return fmt.Errorf("takes no payload, got %s", strictjson.Excerpt(payload))
}

// Run returns at once.
func (Noop) Run(context.Context, Task) (json.RawMessage, error) { return nil, nil }

// Fail is the fail kind: {"error": "why"} fails with that message. It is
// for trying out failure handling, hooks and exit codes.
type Fail struct{}

type failPayload struct {
	Error string `json:"error"`
}

func parseFail(payload json.RawMessage) (string, error) {
	var p failPayload
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return "", fmt.Errorf(`payload: want {"error": "why"}: %w`, strictjson.FieldError(err))
	}
	if p.Error == "" {
		return "", errors.New(`missing "error"`)
	}
	return p.Error, nil
}

// Isolated: a fail task cannot crash pcd.
func (Fail) Isolated() bool { return true }

// Validate checks the payload.
func (Fail) Validate(payload json.RawMessage) error {
	_, err := parseFail(payload)
	return err
}

// Run fails with the payload's message.
func (Fail) Run(_ context.Context, t Task) (json.RawMessage, error) {
	msg, err := parseFail(t.Payload)
	if err != nil {
		return nil, err
	}
	return nil, errors.New(msg)
}
