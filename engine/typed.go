package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/pcd-dev/pcd/internal/strictjson"
)

// Args is a payload type of a typed kind (KindOf). Its Validate, if it
// has one, runs at submit, after the payload decodes, so that a task it
// refuses is refused before anything is written.
type Args interface{ Validate() error }

// KindOf makes a Kind whose payload is a T and whose result is an R, in
// the way River's Worker[T] does: a payload is decoded strictly (a field
// T does not have is an error) at submit and again before run is called,
// and run's R is encoded as the task's JSON result. When T implements
// Args, its Validate runs at submit too.
func KindOf[T, R any](run func(ctx context.Context, args T) (R, error)) Kind {
	return typedKind[T, R]{run: run}
}

type typedKind[T, R any] struct {
	run func(ctx context.Context, args T) (R, error)
}

func (k typedKind[T, R]) decode(payload json.RawMessage) (T, error) {
	var args T
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	if json.Valid(payload) {
		if err := strictjson.Check(payload, strictjson.For[T]()); err != nil {
			return args, fmt.Errorf("payload does not decode as %T: %w", args, err)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&args); err != nil {
		return args, fmt.Errorf("payload does not decode as %T: %w", args, err)
	}
	if dec.More() {
		return args, fmt.Errorf("payload does not decode as %T: more than one JSON value", args)
	}
	return args, nil
}

// Validate decodes the payload and runs its Validate method, if any.
func (k typedKind[T, R]) Validate(payload json.RawMessage) error {
	args, err := k.decode(payload)
	if err != nil {
		return err
	}
	if v, ok := any(args).(Args); ok {
		return v.Validate()
	}
	if v, ok := any(&args).(Args); ok {
		return v.Validate()
	}
	return nil
}

// Run decodes the payload, calls run and encodes its result.
func (k typedKind[T, R]) Run(ctx context.Context, t Task) (json.RawMessage, error) {
	args, err := k.decode(t.Payload)
	if err != nil {
		return nil, err
	}
	res, err := k.run(ctx, args)
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("encode the result: %w", err)
	}
	return out, nil
}

// TaskOf makes a task of kind whose payload is args, encoded as JSON, for
// a JobFile: the other half of KindOf.
func TaskOf[T any](kind string, args T) (TaskSpec, error) {
	payload, err := json.Marshal(args)
	if err != nil {
		return TaskSpec{}, fmt.Errorf("task of kind %s: %w", kind, err)
	}
	return TaskSpec{Kind: kind, Payload: payload}, nil
}
