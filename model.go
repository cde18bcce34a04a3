package httpguard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// This file finds the model a request body names, for the Breaker's key,
// and rewrites it, for the Fallback, with the package's one JSON lexer: a
// body is never decoded whole nor encoded again, so a rewritten body is the
// caller's byte for byte, but for the model's value; and the model a
// request's path or query string names, which runs it whatever its body
// names.

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

// QueryModel returns the model that the raw query string q (a URL's
// RawQuery) names as "model=…", which LiteLLM runs instead of the model
// its body names: its chat endpoints take model as a query parameter (for
// Azure clients), and the query's wins. It returns "" when q names none,
// or an empty one (which LiteLLM skips). Keys and values are unescaped as
// url.QueryUnescape does. Model parameters that differ are an error (Go
// reads the first, Python's servers the last), as is one whose value
// cannot be unescaped.
//
// A Budget prices a request whose query names a model, and its path no
// deployment, at the dearer of that model and its body's, as it does an
// Azure deployment; the Limiter and the Breaker key it by that model.
func QueryModel(q string) (string, error) {
	var model string
	found := false
	for pair := range strings.SplitSeq(q, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if key, err := url.QueryUnescape(k); err != nil || key != "model" {
			continue // a key Go cannot unescape keeps a '%' in Python's reading: not model either
		}
		m, err := url.QueryUnescape(v)
		switch {
		case err != nil:
			return "", fmt.Errorf("httpguard: the query string's model %q cannot be read", v)
		case found && m != model:
			return "", fmt.Errorf("httpguard: the query string names the model twice (%q, %q), which servers read differently", model, m)
		}
		model, found = m, true
	}
	return model, nil
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
