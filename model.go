package httpguard

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
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
	for v := range queryValues(q, func(key string) bool { return key == "model" }) {
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

// queryValues yields, in order, the values, as written, of the pairs of
// the raw query string q whose key, unescaped as url.QueryUnescape does,
// is; a key Go cannot unescape keeps a '%' in Python's reading, and is
// none a server reads.
func queryValues(q string, is func(key string) bool) iter.Seq[string] {
	return func(yield func(string) bool) {
		for pair := range strings.SplitSeq(q, "&") {
			k, v, _ := strings.Cut(pair, "=")
			if key, err := url.QueryUnescape(k); err == nil && is(key) && !yield(v) {
				return
			}
		}
	}
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
// does), and a form (an upload to /audio/transcriptions) is read for its
// model field (see formModel; one that servers may read differently names
// none). The Breaker keys a circuit by it: unread, every gzip body and
// every upload would share one circuit with every request that names no
// model.
func bodyModel(body []byte, h http.Header, limit int64) (raw []byte, escaped bool) {
	if raw, escaped = lastModel(body); raw != nil || len(body) < 2 {
		return raw, escaped // a model (a JSON chat's), or none: no header to look up
	}
	if body[0] != 0x1f || body[1] != 0x8b { // no gzip stream's magic number
		return formModelOf(body, h), false
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
	if raw, escaped = lastModel(plain); raw != nil {
		return raw, escaped
	}
	return formModelOf(plain, h), false
}

// formModelOf returns the model the form body, sent with the header h,
// names in its model field, or nil when it is no form, names none, or may
// be read differently (see formModel).
func formModelOf(body []byte, h http.Header) []byte {
	form, boundary := formOf(h)
	if form != multipartForm && form != urlencodedForm {
		return nil
	}
	spans, model, err := formModel(body, form, boundary)
	if err != nil || len(spans) == 0 {
		return nil
	}
	return []byte(model)
}

// ErrModelUnreadable is why a Fallback sends a request to no target with
// Models although its body is short enough to read: its model cannot be
// read, for the body is compressed (a Content-Encoding other than
// identity), or the body or the query string names the model more than
// once with different values (keys that differ in case included), which
// servers read differently, or the body is not one JSON object but begins
// with one naming a model (Go's json.Decoder reads that one and leaves
// what follows), or the body is a form that servers may read
// differently: a multipart body not cut one way only (a preamble, bare
// line feeds, padding after a boundary, a folded header, the boundary
// inside a part), a model part with a Content-Transfer-Encoding, a
// filename, a charset other than UTF-8 or a type other than form-data, a
// form's Content-Type that does not parse, a urlencoded model that does
// not unescape, or a urlencoded body that is also a JSON object naming a
// model. It is used as ErrBodyTooLongToMap is (see Target.Models).
var ErrModelUnreadable = errors.New("the request's model cannot be read for the target's Models: the body is compressed, or the body or the query string names the model more than once with different values, or the body is a form that servers may read differently")

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
// what models map it to, a JSON string; every other byte is body's, a
// leading byte order mark included. Only the model is read: a field a
// Budget would refuse does not keep the model from being mapped. It
// returns body itself when it names no model, one models does not map, or
// when it is not one JSON object (forms are mapBodyModel's), and
// ErrModelUnreadable when the model cannot be read: compressed, or a body
// that is not one JSON object but starts with one naming a model, which
// Go's json.Decoder reads.
func mapModel(body []byte, encoding string, models map[string][]byte) ([]byte, error) {
	if !unencoded(encoding) {
		return nil, ErrModelUnreadable
	}
	// Python's json.loads skips a byte order mark before a body given as
	// bytes (so FastAPI's servers read one), as RFC 8259 lets a parser do:
	// the model after it is mapped, the mark kept.
	at := 0
	if bytes.HasPrefix(body, []byte(utf8BOM)) {
		at = len(utf8BOM)
	}
	var spans [][2]int
	if err := eachModel(body[at:], true, func(s, e int) { spans = append(spans, [2]int{at + s, at + e}) }); err != nil {
		if firstObjectNamesModel(body[at:]) {
			return nil, ErrModelUnreadable
		}
		return body, nil
	}
	if len(spans) == 0 {
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

// firstObjectNamesModel reports whether the first JSON value of body, which
// is not one JSON object, is an object with a top-level member named model
// in any case: Go's json.Decoder reads a body so (gin's binding, and the Go
// servers that decode a request body with it), leaving what follows the
// first value unread, so that such a server runs that model.
func firstObjectNamesModel(body []byte) bool {
	var v map[string]json.RawMessage
	if json.NewDecoder(bytes.NewReader(body)).Decode(&v) != nil {
		return false
	}
	for k := range v {
		if strings.EqualFold(k, "model") {
			return true
		}
	}
	return false
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

// mapBodyModel is mapModel for a request body sent with the header h,
// which may be a form: the value of a multipart/form-data or
// application/x-www-form-urlencoded body's model field is replaced by what
// names maps it to, every other byte kept (see formModel). A form whose
// model cannot be read safely, and a Content-Type that says form but does
// not parse, are ErrModelUnreadable. A urlencoded body that is also a JSON
// object naming a model (curl -d sends JSON so) is read both ways, for
// servers read it either way: it names a model in one of them at most.
func mapBodyModel(body []byte, h http.Header, models map[string][]byte, names map[string]string) ([]byte, error) {
	enc := contentEncoding(h)
	if !unencoded(enc) {
		return nil, ErrModelUnreadable
	}
	form, boundary := formOf(h)
	switch form {
	case notForm:
		return mapModel(body, enc, models)
	case unreadableForm:
		return nil, ErrModelUnreadable
	}
	spans, model, err := formModel(body, form, boundary)
	if err != nil {
		return nil, err
	}
	if form == urlencodedForm {
		inJSON := false
		if eachModel(body, true, func(int, int) { inJSON = true }) == nil && inJSON {
			if len(spans) > 0 {
				return nil, ErrModelUnreadable
			}
			return mapModel(body, enc, models)
		}
	}
	to, ok := names[model]
	if len(spans) == 0 || !ok {
		return body, nil
	}
	if form == urlencodedForm {
		return withModel(body, spans, []byte(url.QueryEscape(to))), nil
	}
	out := withModel(body, spans, []byte(to))
	before, _ := splitMultipart(body, boundary)
	if after, ok := splitMultipart(out, boundary); !ok || len(after) != len(before) { // a model holding the boundary
		return nil, ErrModelUnreadable
	}
	return out, nil
}

// formModel returns the spans of the values of the model fields of body,
// a form of the kind form (multipartForm, its parts cut at boundary, or
// urlencodedForm), and the model they name, or no spans when it names
// none. It returns ErrModelUnreadable when servers may read the model
// differently, or when it cannot be read: fields naming the model with
// different values, a multipart body that parsers may cut differently
// (see splitMultipart), a model part with a Content-Transfer-Encoding, a
// filename, a charset other than UTF-8, or a disposition other than
// form-data (which Go's servers skip and Python's read), or a urlencoded
// model that does not unescape or holds raw bytes past ASCII (which
// Starlette reads as Latin-1).
func formModel(body []byte, form formKind, boundary string) (spans [][2]int, model string, err error) {
	add := func(s, e int, m string) error {
		if len(spans) > 0 && m != model {
			return ErrModelUnreadable
		}
		spans, model = append(spans, [2]int{s, e}), m
		return nil
	}
	if form == multipartForm {
		err = multipartFields(body, boundary, add)
	} else {
		err = urlencodedFields(body, add)
	}
	if err != nil {
		return nil, "", err
	}
	return spans, model, nil
}

// urlencodedFields calls model with the span of the value of each field
// of the application/x-www-form-urlencoded body named model, and the value
// unescaped. Fields are cut at '&' and ';', as python-multipart cuts them
// (see urlencodedHoldsCredentials); names and values are unescaped as
// url.QueryUnescape does (a name that does not unescape keeps a '%' in
// Python's reading, so is no model either). A model field without '='
// names "". It stops at model's first error.
func urlencodedFields(body []byte, model func(start, end int, value string) error) error {
	for start := 0; start <= len(body); {
		end := bytes.IndexAny(body[start:], "&;")
		if end < 0 {
			end = len(body)
		} else {
			end += start
		}
		name, value, eq := bytes.Cut(body[start:end], []byte("="))
		if isModelName(name) {
			at, m := end, ""
			if eq {
				at = start + len(name) + 1
				var err error
				if m, err = url.QueryUnescape(string(value)); err != nil || !isASCII(value) {
					return ErrModelUnreadable
				}
			}
			if err := model(at, end, m); err != nil {
				return err
			}
		}
		start = end + 1
	}
	return nil
}

// isModelName reports whether the urlencoded field name, unescaped, is
// model; only a name with escapes is unescaped, so that a long form of
// short fields costs no allocation per field.
func isModelName(name []byte) bool {
	if bytes.IndexByte(name, '%') < 0 && bytes.IndexByte(name, '+') < 0 {
		return string(name) == "model"
	}
	key, err := url.QueryUnescape(string(name))
	return err == nil && key == "model"
}

// multipartFields reads the multipart/form-data body, its parts cut at
// boundary, and calls model with the span of the content of each part
// that names the model field, and that content. The body must be cut the same by every
// parser (splitMultipart), and mime/multipart must read it so: the same
// parts, with the same contents. A part whose Content-Disposition does not
// parse may be the model's: ErrModelUnreadable, as for a model part that
// servers may read differently (see formModel).
func multipartFields(body []byte, boundary string, model func(start, end int, value string) error) error {
	parts, ok := splitMultipart(body, boundary)
	if !ok {
		return ErrModelUnreadable
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for _, p := range parts {
		rp, err := mr.NextRawPart()
		if err != nil || !readsAs(rp, body[p[0]:p[1]]) {
			return ErrModelUnreadable
		}
		named, err := modelPart(rp.Header)
		if err != nil {
			return err
		}
		if named {
			if err := model(p[0], p[1], string(body[p[0]:p[1]])); err != nil {
				return err
			}
		}
	}
	if _, err := mr.NextRawPart(); err != io.EOF {
		return ErrModelUnreadable
	}
	return nil
}

// readsAs reports whether r reads exactly want.
func readsAs(r io.Reader, want []byte) bool {
	var buf [4 << 10]byte
	for {
		n, err := r.Read(buf[:])
		if n > len(want) || !bytes.Equal(buf[:n], want[:n]) {
			return false
		}
		want = want[n:]
		switch {
		case err == io.EOF:
			return len(want) == 0
		case err != nil:
			return false
		}
	}
}

// modelPart reports whether a multipart part with the header h is the
// model field, as its Content-Disposition names it (whatever its type, as
// Python's parsers read it); ErrModelUnreadable when that does not parse,
// or when it is the model's and servers may read it differently.
func modelPart(h textproto.MIMEHeader) (bool, error) {
	dispositions := h.Values("Content-Disposition")
	named := false
	for _, d := range dispositions {
		typ, params, err := mime.ParseMediaType(d)
		if err != nil {
			return false, ErrModelUnreadable
		}
		if params["name"] != "model" {
			continue
		}
		_, file := params["filename"]
		if named = true; typ != "form-data" || file || len(dispositions) != 1 {
			return false, ErrModelUnreadable
		}
	}
	if !named {
		return false, nil
	}
	if len(h.Values("Content-Transfer-Encoding")) > 0 {
		return false, ErrModelUnreadable
	}
	switch types := h.Values("Content-Type"); len(types) {
	case 0:
	case 1:
		typ, params, err := mime.ParseMediaType(types[0])
		cs := strings.ToLower(params["charset"])
		if err != nil || typ != "text/plain" || cs != "" && cs != "utf-8" && cs != "us-ascii" {
			return false, ErrModelUnreadable
		}
	default:
		return false, ErrModelUnreadable
	}
	return true, nil
}

// splitMultipart returns the span of the content of each part of the
// multipart body whose parts are cut at boundary, or false when parsers may
// cut it differently. So that they cannot, it takes only a body cut one
// way: it starts with the first delimiter line; each delimiter line is
// "--boundary" and CRLF, without the padding RFC 2046 allows; the close
// delimiter ends the body or its line (an epilogue follows, which parsers
// skip: form-data-encoder, openai-node's, writes a second CRLF);
// "--boundary" appears nowhere else; each part's header block ends at its first empty line, its lines
// end in CRLF and none is folded. Every SDK writes such bodies.
func splitMultipart(body []byte, boundary string) ([][2]int, bool) {
	delim := "--" + boundary
	if !bytes.HasPrefix(body, []byte(delim)) {
		return nil, false
	}
	var parts [][2]int
	for at := 0; ; {
		rest := body[at+len(delim):]
		switch {
		case bytes.HasPrefix(rest, []byte("--")):
			if tail := rest[2:]; len(tail) > 0 && !bytes.HasPrefix(tail, []byte("\r\n")) {
				return nil, false // "--boundary--x" is no close delimiter to Go's reader
			}
			return parts, bytes.Count(body, []byte(delim)) == len(parts)+1
		case !bytes.HasPrefix(rest, []byte("\r\n")):
			return nil, false
		}
		start := at + len(delim) + 2
		n := bytes.Index(body[start:], []byte("\r\n"+delim))
		if n < 0 {
			return nil, false
		}
		part, content := body[start:start+n], start+2 // a part without headers starts with its empty line
		if !bytes.HasPrefix(part, []byte("\r\n")) {
			end := bytes.Index(part, []byte("\r\n\r\n"))
			if end < 0 || !plainHeader(part[:end+2]) {
				return nil, false
			}
			content = start + end + 4
		}
		parts = append(parts, [2]int{content, start + n})
		at = start + n + 2
	}
}

// plainHeader reports whether the header block h, its lines and their
// CRLFs, has every line end in CRLF, no other CR or LF, and no folded line.
func plainHeader(h []byte) bool {
	lines := bytes.Count(h, []byte("\r\n"))
	return h[0] != ' ' && h[0] != '\t' && bytes.Count(h, []byte("\n")) == lines && bytes.Count(h, []byte("\r")) == lines &&
		!bytes.Contains(h, []byte("\r\n ")) && !bytes.Contains(h, []byte("\r\n\t"))
}
