// Package resultref stores a task callback's message without the copy of
// the task's result it holds: the result is in the results row already,
// and the message refers to it by a byte offset. Every store uses it, so
// a result is stored once, whatever the database.
package resultref

import (
	"bytes"
	"errors"
)

// Member starts a task callback's result in its message.
const Member = `,"result":`

// Split cuts the result member out of a task callback's message when its
// value is byte for byte the result stored in the results row: the message
// without it, and the offset to put it back at (Join). Any other message
// is kept whole (at < 0). In JSON text an unescaped quote only appears
// outside strings, so the first match is the member itself.
func Split(msg, result []byte) (stored []byte, at int) {
	if len(result) == 0 {
		return msg, -1
	}
	at = bytes.Index(msg, []byte(Member))
	if at < 0 {
		return msg, -1
	}
	rest := msg[at+len(Member):]
	if !bytes.HasPrefix(rest, result) || len(rest) == len(result) || (rest[len(result)] != ',' && rest[len(result)] != '}') {
		return msg, -1
	}
	stored = make([]byte, 0, len(msg)-len(Member)-len(result))
	stored = append(append(stored, msg[:at]...), rest[len(result):]...)
	return stored, at
}

// ErrMissing is returned by Join when the result a message refers to is
// gone.
var ErrMissing = errors.New("the result it refers to is missing")

// Join puts a result back into a message that Split cut.
func Join(stored []byte, at int, result []byte) ([]byte, error) {
	if result == nil || at < 0 || at > len(stored) {
		return nil, ErrMissing
	}
	msg := make([]byte, 0, len(stored)+len(Member)+len(result))
	msg = append(append(append(msg, stored[:at]...), Member...), result...)
	return append(msg, stored[at:]...), nil
}
