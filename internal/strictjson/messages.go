package strictjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Excerpt is user input quoted in an error message: whole when short,
// else its start and how long it is, so that an error stays one short
// line whatever the input's size.
func Excerpt(b []byte) string {
	const keep = 64
	if len(b) <= keep {
		return string(b)
	}
	n := keep
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return fmt.Sprintf("%s… (%d bytes)", b[:n], len(b))
}

// Field is a decoding error's field path without the names of
// embedded Go structs (RetrySpec.max_attempts is max_attempts): pcd's JSON
// keys are lower case.
func Field(path string) string {
	var keep []string
	for _, part := range strings.Split(path, ".") {
		if part != "" && !unicode.IsUpper(rune(part[0])) {
			keep = append(keep, part)
		}
	}
	return strings.Join(keep, ".")
}

// FieldError turns encoding/json's errors into short messages.
func FieldError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if field := Field(te.Field); field != "" {
			return fmt.Errorf("%q must be %s, got %s", field, te.Type, te.Value)
		}
		return fmt.Errorf("must be %s, got %s", te.Type, te.Value)
	}
	return err
}
