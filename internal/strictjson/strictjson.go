// Package strictjson checks JSON as strictly as pcd reads job files:
// UTF-8 only, no key given twice, and no key that is not a field of the
// struct the JSON decodes into, with case folding refused. encoding/json
// lets each of these pass.
package strictjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"
)

// Check refuses what encoding/json lets pass in a job file: text
// that is not UTF-8 (json replaces it with U+FFFD), and a key given twice
// in one object (json keeps the last). Where shape describes an object
// (a struct's fields, see ShapeOf), it also refuses a key that is not
// one of its names, or names one only with its case folded (json matches
// {"KIND": ...} to "kind"); a nil shape checks no names. raw is valid
// JSON. So json.Unmarshal after it decodes as strictly as a Decoder with
// DisallowUnknownFields, without one's buffer per value.
func Check(raw []byte, shape *Shape) error {
	if !utf8.Valid(raw) {
		return Error{fmt.Sprintf("the JSON is not valid UTF-8 (at byte %d of the value)", invalidUTF8At(raw))}
	}
	// The keys of the open objects, in one slice: an object's are those
	// from its level's first on. A few keys are compared one by one (no
	// map per object: a big job file has two objects per task); an object
	// with many keys gets a map, so that a line of 100,000 keys is not
	// quadratic.
	type level struct {
		object, wantKey bool
		first           int
		many            map[string]bool
		shape           *Shape
	}
	var stackArr [8]level
	var keysArr [32][]byte
	stack, keys := stackArr[:0], keysArr[:0]
	next := shape // the shape of the value that comes next
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '{':
			stack = append(stack, level{object: true, wantKey: true, first: len(keys), shape: next})
			next = nil
		case '[':
			stack = append(stack, level{first: len(keys)})
			next = nil
		case '}', ']':
			keys = keys[:stack[len(stack)-1].first]
			stack = stack[:len(stack)-1]
			next = nil
		case ',':
			if top := &stack[len(stack)-1]; top.object {
				top.wantKey = true
			}
			next = nil
		case ':':
			stack[len(stack)-1].wantKey = false
		case '"':
			end := stringEnd(raw, i)
			if len(stack) > 0 && stack[len(stack)-1].object && stack[len(stack)-1].wantKey {
				top := &stack[len(stack)-1]
				key, err := unquoteKey(raw[i : end+1])
				if err != nil {
					return err
				}
				if seenKey(key, keys[top.first:], &top.many) {
					return Error{fmt.Sprintf("key %q is given twice in one object", key)}
				}
				keys = append(keys, key)
				if top.shape != nil {
					if err := fieldName(key, top.shape.fields); err != nil {
						return err
					}
					next = top.shape.fields[string(key)]
				}
			} else {
				next = nil
			}
			i = end
		}
	}
	return nil
}

// manyKeys is the number of keys past which an object's are kept in a
// map.
const manyKeys = 16

// seenKey says whether key is among an object's keys so far, and keeps
// them in *many once there are more than manyKeys.
func seenKey(key []byte, keys [][]byte, many *map[string]bool) bool {
	if *many == nil && len(keys) < manyKeys {
		for _, k := range keys {
			if bytes.Equal(k, key) {
				return true
			}
		}
		return false
	}
	if *many == nil {
		*many = make(map[string]bool, 2*len(keys))
		for _, k := range keys {
			(*many)[string(k)] = true
		}
	}
	if (*many)[string(key)] {
		return true
	}
	(*many)[string(key)] = true
	return false
}

// Error is what Check refuses.
type Error struct{ msg string }

func (e Error) Error() string { return e.msg }

// fieldName refuses a key that is not one of fields, saying so when it
// names one only with its case folded.
func fieldName[S any](key []byte, fields map[string]S) error {
	if _, ok := fields[string(key)]; ok {
		return nil
	}
	for f := range fields {
		if strings.EqualFold(f, string(key)) {
			return Error{fmt.Sprintf("unknown field %q (names are case-sensitive: %q)", key, f)}
		}
	}
	return Error{fmt.Sprintf("unknown field %q", key)}
}

// stringEnd is the index of the quote that ends the JSON string starting
// at raw[start].
func stringEnd(raw []byte, start int) int {
	for i := start + 1; i < len(raw); i++ {
		switch raw[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return len(raw) - 1
}

// unquoteKey is a key's text: raw's own bytes unless it has escapes.
func unquoteKey(quoted []byte) ([]byte, error) {
	if bytes.IndexByte(quoted, '\\') < 0 {
		return quoted[1 : len(quoted)-1], nil
	}
	var s string
	if err := json.Unmarshal(quoted, &s); err != nil {
		return nil, err
	}
	return []byte(s), nil
}

func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// Shape is the shape of a JSON object that decodes into a struct: its
// names, each with the shape of its value (nil where it is not such an
// object).
type Shape struct {
	fields map[string]*Shape
}

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

// ShapeOf is the shape of t's JSON, or nil when t is not a struct (or a
// pointer to one) that encoding/json decodes field by field.
func ShapeOf(t reflect.Type) *Shape {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.Implements(unmarshaler) || reflect.PointerTo(t).Implements(unmarshaler) {
		return nil
	}
	s := &Shape{fields: map[string]*Shape{}}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
		case f.Anonymous && name == "":
			if inner := ShapeOf(f.Type); inner != nil {
				for n, v := range inner.fields {
					s.fields[n] = v
				}
			}
		case name != "":
			s.fields[name] = ShapeOf(f.Type)
		case f.IsExported():
			s.fields[f.Name] = ShapeOf(f.Type)
		}
	}
	return s
}

// shapes caches ShapeOf, per type.
var shapes sync.Map // reflect.Type → *Shape

// For is ShapeOf(T), computed once per type.
func For[T any]() *Shape {
	t := reflect.TypeFor[T]()
	if s, ok := shapes.Load(t); ok {
		return s.(*Shape)
	}
	s, _ := shapes.LoadOrStore(t, ShapeOf(t))
	return s.(*Shape)
}

// Field refuses a key that is not one of the object's names, saying so
// when it names one only with its case folded. A nil shape takes any key.
func (s *Shape) Field(key []byte) error {
	if s == nil {
		return nil
	}
	return fieldName(key, s.fields)
}
