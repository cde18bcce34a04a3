package proxy

import (
	"bytes"
	"cmp"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// A redactor masks the proxy's real keys (its upstreams' and fallbacks',
// and the gateway keys their headers carry: see addHeaderSecrets) in what
// an upstream answers a tenant: a provider or relay that echoes
// the key it was sent (in an error's message, a Location header, a debug
// header) would otherwise hand the account's key to every tenant. A key
// becomes as many asterisks, so that a Content-Length still holds.
type redactor struct {
	keys [][]byte // the real keys (none without tenants) and the headers' credentials
}

// minMaskedKey is the shortest key masked. A provider's key is longer
// (OpenAI's and Anthropic's, 40 to 100 characters); a shorter one is a
// local server's placeholder ("EMPTY" for vLLM, "ollama"), no secret, and
// masking it would garble every answer holding the word.
const minMaskedKey = 16

// newRedactor masks keys, the longest first (one may hold another).
func newRedactor(keys []string) redactor {
	keys = slices.Clone(keys)
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(len(b)-len(a), strings.Compare(a, b)) })
	var r redactor
	for _, k := range slices.Compact(keys) {
		if len(k) >= minMaskedKey {
			r.keys = append(r.keys, []byte(k))
		}
	}
	return r
}

// header masks the keys in h's values, in place.
func (r redactor) header(h http.Header) {
	for _, vs := range h {
		for i, v := range vs {
			vs[i] = r.text(v)
		}
	}
}

// text is s with its keys masked.
func (r redactor) text(s string) string {
	for _, k := range r.keys {
		if strings.Contains(s, string(k)) {
			s = strings.ReplaceAll(s, string(k), strings.Repeat("*", len(k)))
		}
	}
	return s
}

// body masks the keys in b, in place, and returns how many bytes at its
// end must wait for the next write: the longest end that begins a key. A
// key has no space or control character (isKey), so an event of a stream,
// which ends with a newline, is never held back.
func (r redactor) body(b []byte) (held int) {
	for _, k := range r.keys {
		for i := 0; ; {
			j := bytes.Index(b[i:], k)
			if j < 0 {
				break
			}
			i += j
			for end := i + len(k); i < end; i++ {
				b[i] = '*'
			}
		}
	}
	for _, k := range r.keys {
		for n := min(len(k)-1, len(b)); n > held; n-- {
			if bytes.HasSuffix(b, k[:n]) {
				held = n
				break
			}
		}
	}
	return held
}

// line masks what a line of net/http's own log may hold of a secret: the
// real keys; a URL's query, fragment and user info (a ?key= is a client's
// Gemini key), cut as operatorDetail cuts a transport error's URL; the
// credential of an Authorization value ("Bearer sk-…"); and the value of
// a field named as credentials are (api_key=…, "api_key": "…", a dumped
// header's X-Api-Key:[…]), such as an x-portkey-config's inline keys.
// ReverseProxy and http.Server write such lines with an error as it came,
// from a transport or an upstream: the access log never holds them.
func (r redactor) line(s string) string {
	s = r.text(s)
	s = urlInText.ReplaceAllStringFunc(s, bareURL)
	s = schemeCredential.ReplaceAllString(s, "$1 ****")
	return namedCredential.ReplaceAllStringFunc(s, func(m string) string {
		i := namedCredential.FindStringSubmatchIndex(m)[3] // the value's start
		if scheme := m[i:]; strings.EqualFold(scheme, "bearer") || strings.EqualFold(scheme, "basic") {
			return m // its credential follows, masked already
		}
		return m[:i] + "****"
	})
}

var (
	urlInText        = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>\x60\\]+`)
	schemeCredential = regexp.MustCompile(`(?i)\b(bearer|basic)\s+[^\s"'\\,;\]]+`)
	namedCredential  = regexp.MustCompile(`(?i)([A-Za-z0-9_.-]*(?:auth|key|token|secret|password|signature|credential|cookie)[A-Za-z0-9_.-]*\\?"?\s*[:=]\s*\[?\\?"?)[^\s"'\\,;&{}\[\]]+`)
)

// bareURL is u without its query, fragment and user info.
func bareURL(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	scheme, rest, _ := strings.Cut(u, "://")
	host, path, _ := strings.Cut(rest, "/")
	if i := strings.LastIndexByte(host, '@'); i >= 0 {
		host = host[i+1:]
	}
	if path != "" || strings.Contains(rest, "/") {
		return scheme + "://" + host + "/" + path
	}
	return scheme + "://" + host
}
