package httpguard

import (
	"bytes"
	"encoding/json"
	"errors"
)

// This file is a small JSON scanner for the hot path: it walks the members
// of an object without allocating, validating the syntax as encoding/json
// does (json.Valid), so that usage.go can read a few fields of a request or
// a usage object without json.Unmarshal's allocations. It reads untrusted
// input: it never panics and bounds nesting like encoding/json.

var errJSONSyntax = errors.New("httpguard: invalid JSON")

// maxJSONDepth is encoding/json's nesting limit.
const maxJSONDepth = 10000

// jsonMembers calls fn for each member of the JSON object that is data
// (whitespace around it allowed), in order, with the key's raw bytes
// (without quotes; escaped says they hold a backslash escape) and the
// value's raw bytes. It returns errJSONSyntax when data is not exactly one
// valid JSON object, or the first error fn returns.
func jsonMembers(data []byte, fn func(key []byte, escaped bool, value []byte) error) error {
	i := skipJSONSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return errJSONSyntax
	}
	end, err := scanJSONObject(data, i, 0, fn)
	if err != nil {
		return err
	}
	if skipJSONSpace(data, end) != len(data) {
		return errJSONSyntax
	}
	return nil
}

// unescape returns a member's key without escapes. Callers compare
// string(unescape(k, escaped)) with constants, which does not allocate.
func unescape(key []byte, escaped bool) []byte {
	if !escaped {
		return key
	}
	var s string
	q := make([]byte, 0, len(key)+2)
	q = append(append(append(q, '"'), key...), '"')
	if json.Unmarshal(q, &s) != nil {
		return nil
	}
	return []byte(s)
}

// jsonString returns the string a raw JSON string value holds; ok is false
// when value is not a string.
func jsonString(value []byte) (string, bool) {
	if len(value) < 2 || value[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(value, '\\') < 0 {
		return string(value[1 : len(value)-1]), true
	}
	var s string // declared here: Unmarshal moves it to the heap
	if json.Unmarshal(value, &s) != nil {
		return "", false
	}
	return s, true
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipJSONSpace(d []byte, i int) int {
	for i < len(d) && isJSONSpace(d[i]) {
		i++
	}
	return i
}

// scanJSONObject scans the object starting at d[i] == '{' and returns the
// index after its '}'. fn, when not nil, sees each member.
func scanJSONObject(d []byte, i, depth int, fn func(key []byte, escaped bool, value []byte) error) (int, error) {
	if depth >= maxJSONDepth {
		return 0, errJSONSyntax
	}
	i = skipJSONSpace(d, i+1)
	if i < len(d) && d[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(d) || d[i] != '"' {
			return 0, errJSONSyntax
		}
		keyEnd, escaped, err := scanJSONString(d, i)
		if err != nil {
			return 0, err
		}
		key := d[i+1 : keyEnd-1]
		i = skipJSONSpace(d, keyEnd)
		if i >= len(d) || d[i] != ':' {
			return 0, errJSONSyntax
		}
		start := skipJSONSpace(d, i+1)
		if i, err = skipJSONValue(d, start, depth+1); err != nil {
			return 0, err
		}
		if fn != nil {
			if err := fn(key, escaped, d[start:i]); err != nil {
				return 0, err
			}
		}
		i = skipJSONSpace(d, i)
		switch {
		case i >= len(d):
			return 0, errJSONSyntax
		case d[i] == ',':
			i = skipJSONSpace(d, i+1)
		case d[i] == '}':
			return i + 1, nil
		default:
			return 0, errJSONSyntax
		}
	}
}

func scanJSONArray(d []byte, i, depth int) (int, error) {
	if depth >= maxJSONDepth {
		return 0, errJSONSyntax
	}
	i = skipJSONSpace(d, i+1)
	if i < len(d) && d[i] == ']' {
		return i + 1, nil
	}
	for {
		var err error
		if i, err = skipJSONValue(d, i, depth+1); err != nil {
			return 0, err
		}
		i = skipJSONSpace(d, i)
		switch {
		case i >= len(d):
			return 0, errJSONSyntax
		case d[i] == ',':
			i = skipJSONSpace(d, i+1)
		case d[i] == ']':
			return i + 1, nil
		default:
			return 0, errJSONSyntax
		}
	}
}

// skipJSONValue scans the value starting at d[i] and returns the index
// after it.
func skipJSONValue(d []byte, i, depth int) (int, error) {
	if i >= len(d) {
		return 0, errJSONSyntax
	}
	switch c := d[i]; {
	case c == '{':
		return scanJSONObject(d, i, depth, nil)
	case c == '[':
		return scanJSONArray(d, i, depth)
	case c == '"':
		end, _, err := scanJSONString(d, i)
		return end, err
	case c == 't':
		return scanJSONLiteral(d, i, "true")
	case c == 'f':
		return scanJSONLiteral(d, i, "false")
	case c == 'n':
		return scanJSONLiteral(d, i, "null")
	case c == '-' || c >= '0' && c <= '9':
		return scanJSONNumber(d, i)
	}
	return 0, errJSONSyntax
}

func scanJSONLiteral(d []byte, i int, lit string) (int, error) {
	if len(d)-i < len(lit) || string(d[i:i+len(lit)]) != lit {
		return 0, errJSONSyntax
	}
	return i + len(lit), nil
}

// scanJSONString scans the string starting at d[i] == '"' and returns the
// index after its closing quote, and whether it holds escapes.
func scanJSONString(d []byte, i int) (end int, escaped bool, err error) {
	for j := i + 1; j < len(d); {
		switch c := d[j]; {
		case c == '"':
			return j + 1, escaped, nil
		case c == '\\':
			escaped = true
			if j+1 >= len(d) {
				return 0, false, errJSONSyntax
			}
			switch d[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if len(d)-j < 6 || !isHex(d[j+2]) || !isHex(d[j+3]) || !isHex(d[j+4]) || !isHex(d[j+5]) {
					return 0, false, errJSONSyntax
				}
				j += 6
			default:
				return 0, false, errJSONSyntax
			}
		case c < 0x20:
			return 0, false, errJSONSyntax
		default:
			j++
		}
	}
	return 0, false, errJSONSyntax
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// scanJSONNumber scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func scanJSONNumber(d []byte, i int) (int, error) {
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		i = skipDigits(d, i)
	default:
		return 0, errJSONSyntax
	}
	if i < len(d) && d[i] == '.' {
		j := skipDigits(d, i+1)
		if j == i+1 {
			return 0, errJSONSyntax
		}
		i = j
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := skipDigits(d, i)
		if j == i {
			return 0, errJSONSyntax
		}
		i = j
	}
	return i, nil
}

func skipDigits(d []byte, i int) int {
	for i < len(d) && d[i] >= '0' && d[i] <= '9' {
		i++
	}
	return i
}
