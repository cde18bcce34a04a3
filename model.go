package httpguard

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
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
// top-level "model" member of body, in order (decoders take the last), and
// of each member whose key differs from "model" in case only ("Model",
// which encoding/json reads as model) when folded is set. It returns
// errJSONSyntax when body is not exactly one JSON object.
func eachModel(body []byte, folded bool, fn func(start, end int)) error {
	l := jsonLexer{objectOnly: true}
	l.feed(body)
	for {
		switch l.next() {
		case evKey:
			m := matchName(body[l.keyStart+1:l.pos-1], l.keyEscaped, "model")
			l.muteMember = m == noMatch || m == foldMatch && !folded
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
	if eachModel(body, false, func(s, e int) { start, end = s, e }) != nil || end-start < 2 || body[start] != '"' {
		return nil, false
	}
	raw = body[start+1 : end-1]
	return raw, bytes.IndexByte(raw, '\\') >= 0
}

// bodyModel is lastModel for a request body sent with the header h: a
// gzip body that names no model as it is written is read decompressed, up
// to limit decompressed bytes (a longer one names none, as a longer body
// does). The Breaker keys a circuit by it: unread, every gzip body would
// share one circuit with every request that names no model.
func bodyModel(body []byte, h http.Header, limit int64) (raw []byte, escaped bool) {
	if raw, escaped = lastModel(body); raw != nil || len(body) < 2 || body[0] != 0x1f || body[1] != 0x8b {
		return raw, escaped // a model, or no gzip stream's magic number: no header to look up
	}
	if !gzipped(contentEncoding(h)) {
		return nil, false
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, false
	}
	plain, err := readAtMost(zr, nil, limit)
	if err != nil {
		return nil, false
	}
	return lastModel(plain)
}

// ErrModelUnreadable is why a Fallback sends a request to no target with
// Models although its body is short enough to read: its model cannot be
// read, for the body is compressed (a Content-Encoding other than
// identity), or the body or the query string names the model more than
// once with different values (keys that differ in case included), which
// servers read differently. It is used as ErrBodyTooLongToMap is (see
// Target.Models).
var ErrModelUnreadable = errors.New("the request's model cannot be read for the target's Models: the body is compressed, or the body or the query string names the model more than once with different values")

// mapURLModel rewrites, in u, the model its path names (an Azure OpenAI
// deployment, an engine) and the one its query string names (model=…),
// which run the request whatever its body names, as names map them. It
// returns ErrModelUnreadable when the query names two models, or when the
// path names one that LiteLLM reads across segments (see pathModelName)
// and either reading is mapped.
func mapURLModel(u *url.URL, names map[string]string) error {
	if u.RawQuery != "" {
		m, err := QueryModel(u.RawQuery)
		if err != nil {
			return ErrModelUnreadable
		}
		if to, ok := names[m]; ok && m != "" {
			u.RawQuery = withQueryModel(u.RawQuery, to)
		}
	}
	path := u.EscapedPath()
	facts := readPathForm(path, true)
	if facts.deployment == "" {
		return nil
	}
	to, ok := names[unescapedSegment(facts.deployment)]
	if facts.spanned != "" {
		if _, spanned := names[unescapedSegment(facts.spanned)]; ok || spanned {
			return ErrModelUnreadable
		}
		return nil
	}
	if !ok {
		return nil
	}
	segs := strings.Split(path, "/")
	for i := 1; i < len(segs); i++ {
		w := readPathWord(segs[i-1])
		if segs[i] != facts.deployment || w != wordEngines && (w != wordDeployments || i < 2 || readPathWord(segs[i-2]) != wordOpenAI) {
			continue
		}
		segs[i] = url.PathEscape(to)
		escaped := strings.Join(segs, "/")
		p, err := url.PathUnescape(escaped)
		if err != nil {
			return ErrModelUnreadable
		}
		u.Path, u.RawPath = p, escaped
		return nil
	}
	return nil
}

// unescapedSegment returns the path segment seg unescaped, or seg when it
// cannot be.
func unescapedSegment(seg string) string {
	if s, err := url.PathUnescape(seg); err == nil {
		return s
	}
	return seg
}

// withQueryModel returns the raw query q with the value of every model
// parameter replaced by model; every other parameter is kept as it was
// written.
func withQueryModel(q, model string) string {
	pairs := strings.Split(q, "&")
	for i, pair := range pairs {
		k, _, _ := strings.Cut(pair, "=")
		if key, err := url.QueryUnescape(k); err == nil && key == "model" {
			pairs[i] = k + "=" + url.QueryEscape(model)
		}
	}
	return strings.Join(pairs, "&")
}

// mapModel returns body, sent with the Content-Encoding encoding, with
// the value of every top-level "model" member (in any case) replaced by
// what models map it to, a JSON string; every other byte is body's. Only
// the model is read: a field a Budget would refuse does not keep the model
// from being mapped. It returns body itself when it names no model, one
// models does not map, or when it is not one JSON object (a multipart
// upload), and ErrModelUnreadable when the model cannot be read.
func mapModel(body []byte, encoding string, models map[string][]byte) ([]byte, error) {
	if !unencoded(encoding) {
		return nil, ErrModelUnreadable
	}
	var spans [][2]int
	if err := eachModel(body, true, func(s, e int) { spans = append(spans, [2]int{s, e}) }); err != nil || len(spans) == 0 {
		return body, nil
	}
	model, _ := unquote(nil, body[spans[0][0]:spans[0][1]]) // a value that is no string is compared as it is written
	model = bytes.Clone(model)
	for _, s := range spans[1:] {
		if m, _ := unquote(nil, body[s[0]:s[1]]); !bytes.Equal(m, model) {
			return nil, ErrModelUnreadable
		}
	}
	if bytes.HasPrefix(body[spans[0][0]:], []byte{'"'}) {
		if quoted, ok := models[string(model)]; ok {
			return withModel(body, spans, quoted), nil
		}
	}
	return body, nil
}

// withModel returns body with the values at spans replaced by quoted, a
// JSON string; every other byte is body's.
func withModel(body []byte, spans [][2]int, quoted []byte) []byte {
	out := make([]byte, 0, len(body)+len(spans)*len(quoted))
	at := 0
	for _, s := range spans {
		out = append(append(out, body[at:s[0]]...), quoted...)
		at = s[1]
	}
	return append(out, body[at:]...)
}

// quoteJSON returns s as a JSON string.
func quoteJSON(s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return b
}
