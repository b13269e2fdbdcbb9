package engine

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"
)

// strictJSON refuses what encoding/json lets pass in a job file: text
// that is not UTF-8 (json replaces it with U+FFFD), a key given twice in
// one object (json keeps the last), and a key of the outermost object
// that names one of fields only with its case folded (json matches
// {"KIND": ...} to "kind"). raw is valid JSON; fields nil checks no
// names.
func strictJSON(raw []byte, fields map[string]bool) error {
	if !utf8.Valid(raw) {
		return strictError{fmt.Sprintf("the JSON is not valid UTF-8 (at byte %d of the value)", invalidUTF8At(raw))}
	}
	type level struct {
		object, wantKey bool
		keys            map[string]bool
	}
	var stack []level
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '{':
			stack = append(stack, level{object: true, wantKey: true})
		case '[':
			stack = append(stack, level{})
		case '}', ']':
			stack = stack[:len(stack)-1]
		case ',':
			if top := &stack[len(stack)-1]; top.object {
				top.wantKey = true
			}
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
				if top.keys == nil {
					top.keys = map[string]bool{}
				}
				if top.keys[key] {
					return strictError{fmt.Sprintf("key %q is given twice in one object", key)}
				}
				top.keys[key] = true
				if len(stack) == 1 {
					if err := fieldName(key, fields); err != nil {
						return err
					}
				}
			}
			i = end
		}
	}
	return nil
}

// strictError is what strictJSON refuses.
type strictError struct{ msg string }

func (e strictError) Error() string { return e.msg }

// fieldName refuses key when it names one of fields only with its case
// folded; an unknown key is left to the decoder's own error.
func fieldName(key string, fields map[string]bool) error {
	if fields == nil || fields[key] {
		return nil
	}
	for f := range fields {
		if strings.EqualFold(f, key) {
			return strictError{fmt.Sprintf("unknown field %q (names are case-sensitive: %q)", key, f)}
		}
	}
	return nil
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

func unquoteKey(quoted []byte) (string, error) {
	if !strings.ContainsRune(string(quoted), '\\') {
		return string(quoted[1 : len(quoted)-1]), nil
	}
	var s string
	if err := json.Unmarshal(quoted, &s); err != nil {
		return "", err
	}
	return s, nil
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

// jsonFields are the JSON names of a struct type's fields, those of its
// embedded structs included.
func jsonFields(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
		case f.Anonymous && name == "":
			for n := range jsonFields(f.Type) {
				out[n] = true
			}
		case name != "":
			out[name] = true
		case f.IsExported():
			out[f.Name] = true
		}
	}
	return out
}

var (
	jobFileFields = sync.OnceValue(func() map[string]bool { return jsonFields(reflect.TypeFor[JobFile]()) })
	taskFields    = sync.OnceValue(func() map[string]bool { return jsonFields(reflect.TypeFor[TaskSpec]()) })
	execFields    = sync.OnceValue(func() map[string]bool { return jsonFields(reflect.TypeFor[ExecPayload]()) })
	sleepFields   = sync.OnceValue(func() map[string]bool { return jsonFields(reflect.TypeFor[sleepPayload]()) })
)
