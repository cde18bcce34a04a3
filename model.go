package httpguard

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// This file finds the model a request body names, for the Breaker's key,
// and rewrites it, for the Fallback, with the package's one JSON lexer: a
// body is never decoded whole nor encoded again, so a rewritten body is the
// caller's byte for byte, but for the model's value.

// runningModel returns the model that runs req, whose body names model:
// the Azure deployment or engine its path names, which runs the request
// whatever its body says, else the model its query string names (see
// QueryModel), else model. A Limiter's buckets and a Breaker's circuits
// are the model's that runs: an Azure resource's deployments have limits
// and outages of their own.
func runningModel(req *http.Request, model string) string {
	if d := readPathForm(sentPath(req.URL), true).deployment; d != "" {
		return d
	}
	if req.URL.RawQuery != "" {
		if m, err := QueryModel(req.URL.RawQuery); err == nil && m != "" {
			return m
		}
	}
	return model
}

// eachModel calls fn with the span body[start:end] of the value of each
// top-level "model" member of body, in order (decoders take the last). It
// returns errJSONSyntax when body is not exactly one JSON object.
func eachModel(body []byte, fn func(start, end int)) error {
	l := jsonLexer{objectOnly: true}
	l.feed(body)
	for {
		switch l.next() {
		case evKey:
			l.muteMember = matchName(body[l.keyStart+1:l.pos-1], l.keyEscaped, "model") != exactMatch
		case evMember:
			fn(l.valStart, l.pos)
		case evMore:
			if !l.end() {
				return errJSONSyntax
			}
			return nil
		case evError:
			return errJSONSyntax
		}
	}
}

// lastModel returns the content of the string the last top-level "model"
// member of body holds, without its quotes (escaped when it holds a
// backslash escape), or nil when there is none.
func lastModel(body []byte) (raw []byte, escaped bool) {
	start, end := 0, 0
	if eachModel(body, func(s, e int) { start, end = s, e }) != nil || end-start < 2 || body[start] != '"' {
		return nil, false
	}
	raw = body[start+1 : end-1]
	return raw, bytes.IndexByte(raw, '\\') >= 0
}

// withModel returns body with the value of every top-level "model" member
// replaced by quoted, a JSON string; every other byte is body's. It
// returns body itself when there is no model member, and errJSONSyntax when
// body is not one JSON object.
func withModel(body []byte, quoted []byte) ([]byte, error) {
	var spans [][2]int
	if err := eachModel(body, func(s, e int) { spans = append(spans, [2]int{s, e}) }); err != nil {
		return nil, err
	}
	if len(spans) == 0 {
		return body, nil
	}
	out := make([]byte, 0, len(body)+len(spans)*len(quoted))
	at := 0
	for _, s := range spans {
		out = append(append(out, body[at:s[0]]...), quoted...)
		at = s[1]
	}
	return append(out, body[at:]...), nil
}

// quoteJSON returns s as a JSON string.
func quoteJSON(s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return b
}
