package httpguard

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
)

// This file is the Fallback: a layer that sends a request to another
// provider, or another model, when the one it was addressed to gives up.

// TargetHeader is the response header in which a Fallback names the target
// that answered.
const TargetHeader = "X-Httpguard-Target"

// isCredential reports whether a header or URL query parameter named name
// may carry the caller's credentials, or name the account they are of,
// which are the primary's: a Fallback removes them from requests to other
// targets. Providers and the gateways in front of them name keys in many
// ways (Authorization, X-Api-Key, Ocp-Apim-Subscription-Key,
// Cf-Aig-Authorization, Helicone-Auth, ?key=, ?sig=, ?X-Amz-Credential=),
// so a name is matched by what it contains, in any case: auth, key, token,
// secret, password, signature, credential, organization or project, or it
// is cookie, code, sig, sec-websocket-protocol (OpenAI Realtime takes a key
// among a WebSocket's subprotocols) or referer (http.Client sets it to the
// URL a redirect came from, the primary's ?key= included). OpenAI refuses
// another organization's key sent with the primary's OpenAI-Organization
// or OpenAI-Project (which its SDKs send from OPENAI_ORG_ID and
// OPENAI_PROJECT_ID).
// Removing a harmless header such as Idempotency-Key from a request to
// another provider costs nothing.
func isCredential(name string) bool {
	name = strings.ToLower(name)
	switch name {
	case "cookie", "code", "sig", "sec-websocket-protocol", "referer":
		return true
	}
	for _, part := range [...]string{"auth", "key", "token", "secret", "password", "signature", "credential", "organization", "project"} {
		if strings.Contains(name, part) {
			return true
		}
	}
	return false
}

// isBodyCredential reports whether a top-level member named name of a JSON
// request body may carry the caller's credentials: LiteLLM takes
// "api_key" and a "user_config" whose model list holds keys (its
// clientside credentials), AWS keys and Azure AD tokens by their names,
// gateways "customer_credentials" or "vertex_credentials". A name is
// matched in any case and whatever separates its words (_, -, nothing):
// typed clients write the same members as apiKey, accessToken,
// awsSessionToken or x-api-key. Unlike a header's name, "token" inside a
// name is no sign (max_tokens is a count): only a name ending in it.
func isBodyCredential(name string) bool {
	name = strings.Map(foldWord, name)
	if name == "userconfig" || strings.HasSuffix(name, "token") {
		return true
	}
	for _, part := range [...]string{"apikey", "accesskey", "privatekey", "secret", "credential", "password"} {
		if strings.Contains(name, part) {
			return true
		}
	}
	return false
}

// foldWord is the strings.Map of isBodyCredential: a letter in lower
// case, a digit as it is, and nothing for every other rune (the
// separators of a name's words).
func foldWord(r rune) rune {
	if unicode.IsLetter(r) || unicode.IsDigit(r) {
		return unicode.ToLower(r)
	}
	return -1
}

// holdsCredentials reports whether body, when it is a JSON object, has a
// top-level member isBodyCredential names (see credentialScan).
// A leading byte order mark is skipped, as Python's json.loads skips it in
// a body given as bytes (FastAPI's servers read one so).
func holdsCredentials(body []byte) bool {
	var c credentialScan
	found, _ := c.feed(bytes.TrimPrefix(body, []byte(utf8BOM)))
	return found || c.pending
}

// readHoldsCredentials is holdsCredentials for a body read from r, which
// may be too long to hold in memory: it is read to its end, or to the first
// credential, a chunk at a time.
func readHoldsCredentials(r io.Reader) (bool, error) {
	var c credentialScan
	var head [len(utf8BOM)]byte
	n, err := io.ReadFull(r, head[:])
	first := head[:n]
	if string(first) == utf8BOM {
		first = nil
	}
	if found, done := c.feed(first); found || done {
		return found, nil
	}
	switch err {
	case nil:
	case io.EOF, io.ErrUnexpectedEOF:
		return c.pending, nil
	default:
		return false, err
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if found, done := c.feed(buf[:n]); found || done {
			return found, nil
		}
		if err == io.EOF {
			return c.pending, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// credentialScan reads a body, a chunk at a time, for a top-level member
// isBodyCredential names whose value may hold a credential (see
// holdsCredential).
type credentialScan struct {
	l       jsonLexer
	pending bool   // a credential's member is being read
	val     []byte // the first bytes of its value in earlier chunks, up to two
}

// holdsCredential reports whether v, a JSON value (its first two bytes
// are enough), may hold a credential: a string but "", an object or an
// array. null and "" hold none (clients that write every field of a typed
// request send "api_key": null), nor do true, false and numbers, which
// servers' own parameters named like credentials take: llama.cpp's
// timings_per_token, text-generation-webui's ban_eos_token and
// add_bos_token (SillyTavern sends both), LiteLLM's input_cost_per_token.
// A string's first byte alone holds none yet.
func holdsCredential(v []byte) bool {
	if len(v) > 1 && v[0] == '"' {
		return v[1] != '"'
	}
	return len(v) > 0 && (v[0] == '{' || v[0] == '[')
}

// feed reads the next chunk: found reports a credential, done that no
// later chunk can hold one (the body is no JSON object, or has ended). A
// credential's member the body breaks off in is taken for one that holds
// it (pending, after the last chunk); so is a key that spans chunks and
// outgrows what the lexer keeps of it.
func (c *credentialScan) feed(chunk []byte) (found, done bool) {
	l := &c.l
	l.objectOnly = true
	l.feed(chunk)
	for {
		switch l.next() {
		case evKey:
			name, escaped := l.key()
			if name == nil && l.keyLong {
				return true, true
			}
			if escaped {
				name = appendUnquoted(nil, name)
			}
			c.pending, c.val = isBodyCredential(string(name)), c.val[:0]
			l.muteMember = !c.pending
		case evMember:
			if !c.pending {
				break
			}
			start, _ := l.memberStart()
			if holdsCredential(append(c.val, chunk[start:min(l.pos, start+2)]...)) {
				return true, true
			}
			c.pending = false
		case evMore:
			if start, member := l.memberStart(); c.pending && member {
				c.val = append(c.val, chunk[start:min(len(chunk), start+2-len(c.val))]...)
				if holdsCredential(c.val) {
					return true, true
				}
			}
			return false, false
		case evError, evEnd:
			return c.pending, true
		}
	}
}

// withoutCredentialParams returns the raw query q without its credential
// parameters; every other parameter is kept as it was written. A pair is
// cut at ';' too, as some servers cut a query (Ruby's Rack, Go before
// 1.17): a key written after a ';' is a key to them, and is removed with
// its ';' (to a server that cuts at '&' only, "q=my;key=…" thus becomes
// "q=my": the value loses what looked like a key).
func withoutCredentialParams(q string) string {
	if q == "" {
		return ""
	}
	kept := make([]string, 0, strings.Count(q, "&")+1)
	for pair := range strings.SplitSeq(q, "&") {
		if strings.IndexByte(pair, ';') < 0 {
			if !isCredentialParam(pair) {
				kept = append(kept, pair)
			}
			continue
		}
		var parts []string
		for part := range strings.SplitSeq(pair, ";") {
			if !isCredentialParam(part) {
				parts = append(parts, part)
			}
		}
		if p := strings.Join(parts, ";"); p != "" {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, "&")
}

// isCredentialParam reports whether the raw query parameter pair names a
// credential (see isCredential), its name unescaped.
func isCredentialParam(pair string) bool {
	name, _, _ := strings.Cut(pair, "=")
	if n, err := url.QueryUnescape(name); err == nil {
		name = n
	}
	return isCredential(name)
}

// A Target is a provider a Fallback may send requests to, and how to
// address it. Targets must speak the same API as the primary: only the
// URL's base, the headers and the model change. BaseURL is required; the
// other fields' zero values are documented with them.
type Target struct {
	// Name names the target in TargetHeader, hooks and logs. Empty means
	// BaseURL's host. Names must differ.
	Name string
	// BaseURL is the target's API base, such as "https://api.openai.com/v1":
	// a request's path below the primary's BaseURL goes below this one.
	// Its query, if any, replaces the request's; otherwise the request's
	// query goes along, without the parameters that may carry a key (see
	// Header), parameters being cut at ';' as well as '&'.
	BaseURL string
	// Header is set on every request sent to the target, replacing the
	// request's values: its own key, as {"Authorization": {"Bearer sk-…"}}.
	// User info in BaseURL ("https://user:password@host/v1") is sent as
	// Basic authorization, as http.Client sends it, unless Header sets
	// Authorization.
	// The request's own credentials are the primary's and go to no other
	// target: every header whose name contains auth, key, token, secret,
	// password, signature, credential, organization or project (in any
	// case), Cookie, Sec-WebSocket-Protocol (OpenAI Realtime takes a key
	// there) and Referer (a redirect's, which may hold the primary's URL
	// and its ?key=), is removed first. A request whose body holds
	// credentials (a top-level api_key, user_config, *_credentials,
	// *secret*, *password*, *access_key*, *private_key*, token or *_token
	// member, in any case and whatever separates its words (apiKey,
	// accessToken, x-api-key) holding a string other than "", an object or
	// an array (not null, a flag or a number), or a form's field so
	// named other than "": LiteLLM's clientside credentials, AWS keys)
	// goes to no target but the primary (ErrBodyHoldsCredentials); a body
	// longer than FallbackConfig.MaxBufferedBody is read for them to its
	// end, a chunk at a time, before it goes to another target. A gzip body is read
	// decompressed; one that cannot be read for them, and a form that does
	// not parse, are taken to hold them (see ErrBodyHoldsCredentials).
	// The target's answer loses its Set-Cookie: the caller's client takes
	// it for the primary's, and would send the cookie there; and its
	// Location, which the client would follow with the caller's headers
	// (the primary's keys). Any target's answer has the caller's request
	// as its Request, not the one sent to the target with the key of its
	// Header. Header values are never logged.
	Header http.Header
	// Models maps the model a request body names to the one to ask this
	// target for, such as {"deepseek-v3.2": "gpt-4.1-mini"}. The body's
	// "model" value (in any case, wherever the body names it), or its
	// model field when it is a form (multipart/form-data, such as an
	// upload to /audio/transcriptions, or urlencoded), is rewritten and
	// every other byte is sent as it is, a multipart body's boundary and
	// other parts included; so is the model the URL names,
	// which runs the request whatever its body says: an Azure OpenAI
	// deployment or an engine in its path (/openai/deployments/{name}/...,
	// /engines/{name}/...), a model=… in its query string. A model not in
	// the map, and a body that names none, are sent unchanged; nil maps
	// none. A request whose model cannot be read goes to no target with
	// Models: a body longer than FallbackConfig.MaxBufferedBody
	// (ErrBodyTooLongToMap; most audio uploads are longer than its
	// default), one with a Content-Encoding (gzip), a body or query string
	// naming the model twice with different values, a body that is not one
	// JSON object but begins with one naming a model, or a form that
	// servers may read differently (ErrModelUnreadable). A body's leading
	// byte order mark, which Python's servers skip, is kept, and the model
	// after it mapped.
	// The request moves on past such a target, and is refused, unsent,
	// when the primary has Models.
	Models map[string]string
}

// FallbackConfig configures a Fallback; NewFallback copies it. The zero
// FallbackConfig is refused: Targets needs the primary and at least one
// other target. Every other field's zero value is documented with the
// field.
type FallbackConfig struct {
	// Targets are where requests may go, in order. Targets[0] is the
	// primary, the provider the caller's requests are addressed to: a
	// request whose URL is not below its BaseURL passes through untouched.
	// When the primary gives up, the request goes to Targets[1], and so
	// on. At least two are required.
	Targets []Target

	// MaxBufferedBody bounds how much of a request body without GetBody is
	// kept in memory to be sent again, how much of any body is read to
	// rewrite its model (Target.Models), and how many bytes a gzip body is
	// decompressed to for the credentials it may hold (see Target.Header).
	// A longer body without GetBody goes to the primary only; a longer
	// body with GetBody goes to no target with Models (see Target.Models).
	// 0 means DefaultMaxBufferedBody.
	MaxBufferedBody int64

	// OnSwitch, when set, is called each time a request moves to the next
	// target, from the goroutine that runs the request. It must be quick
	// and safe for concurrent use.
	OnSwitch func(FallbackEvent)
	// Logger, when set, receives an info record for each switch. Header
	// values and URL queries are never logged. nil means silent.
	Logger *slog.Logger
}

// FallbackEvent describes a request moving to the next target, for
// FallbackConfig.OnSwitch.
type FallbackEvent struct {
	Request    *http.Request // the caller's request; do not modify it
	From, To   string        // the targets' names
	StatusCode int           // the answer that made it move, 0 after an error
	Err        error         // the error that made it move, nil after an answer
}

// Fallback is a Layer that sends a request to the next of its targets when
// the one before gives up: its circuit is open (ErrCircuitOpen), its
// Limiter refuses it for what the server said (ErrRateLimited by a pause
// a 429 asked for, or at a rate 429s lowered: the 429s remembered), its
// last
// attempt failed in a way worth retrying (408, 429 — a billing stop
// included —, a 5xx failure as the Breaker counts them, a connection
// failure or timeout), the retries below having been spent, or its host
// name does not resolve (which the Retrier does not retry). The request
// sent to a target has the target's URL base, headers and model; the
// response carries TargetHeader, naming the target that answered. It
// never moves once a response has been returned: what the caller reads
// comes from one target.
//
// The caller gets the outcome of the last target tried, unless that
// target never received the request after an earlier one did (a layer
// refused it: its circuit open, no room in a Budget; or net/http wrote it
// on no connection: every dial refused or failed): then the caller gets the
// earlier outcome, such as a 429 and its Retry-After. An answer kept for
// that is read into memory before moving on: up to 64 KiB of body, within
// 250ms; the caller reads a longer or slower body up to the cut, then
// ErrKeptBodyCut.
//
// As the Retrier does before a retry, it calls GetBody for the next
// target only once the transport below is done with the bodies the target
// before was sent, its retries' too (a GetBody that is not
// http.NewRequest's may rewind the very reader net/http still writes
// after an early answer); a body still read 5s after, the caller gets that
// target's outcome.
//
// Place it outermost, above one Retrier (Fallback → Retrier → Breaker →
// Budget → Limiter), so that one retry budget, one spend cap and one
// circuit per target and model cover all targets; see the package
// documentation. Placed below a Budget, it sends no target a request
// whose model that target changes (by its Models, or the deployment its
// BaseURL names): the Budget priced the model the request names.
//
// Make a Fallback with NewFallback; the zero Fallback is not usable: its
// Wrap fails every request, unsent, naming the constructor. A Fallback is
// safe for concurrent use by multiple goroutines.
type Fallback struct {
	cfg     FallbackConfig
	targets []target
}

// target is a Target ready for use.
type target struct {
	name     string
	base     *url.URL // its Path without a trailing slash
	header   http.Header
	models   map[string][]byte // the model to ask for, as a JSON string
	names    map[string]string // the same, as it is
	rewrites bool              // it has headers or models to set
}

// NewFallback validates c and returns a Fallback, or an error (prefixed
// "httpguard: fallback:") naming the invalid field.
func NewFallback(c FallbackConfig) (*Fallback, error) {
	f := &Fallback{cfg: c}
	if err := f.configure(); err != nil {
		return nil, fmt.Errorf("httpguard: fallback: %w", err)
	}
	return f, nil
}

// configure validates f.cfg, fills in its defaults and prepares the
// targets.
func (f *Fallback) configure() error {
	c := &f.cfg
	switch {
	case len(c.Targets) < 2:
		return fmt.Errorf("Targets must name the primary and at least one other target, got %d", len(c.Targets))
	case c.MaxBufferedBody < 0:
		return fmt.Errorf("MaxBufferedBody must be >= 0, got %d", c.MaxBufferedBody)
	case c.MaxBufferedBody == 0:
		c.MaxBufferedBody = DefaultMaxBufferedBody
	}
	c.Targets = slices.Clone(c.Targets)
	names := make(map[string]bool)
	for i, t := range c.Targets {
		p, err := newTarget(t, i == 0)
		if err != nil {
			return fmt.Errorf("Targets[%d]: %w", i, err)
		}
		if names[p.name] {
			return fmt.Errorf("Targets[%d]: name %q is taken by an earlier target", i, p.name)
		}
		names[p.name] = true
		f.targets = append(f.targets, p)
	}
	return nil
}

// schemeAndHost describes u, no http or https URL with a host, for an
// error: its scheme when that reads as one ("ftp"), not as the start of a
// key pasted in place of the URL ("sk-proj-…:…" parses with the scheme
// "sk-proj-…"), and whether it has a host, not the host itself.
func schemeAndHost(u *url.URL) string {
	switch {
	case u.Scheme == "":
		return "no scheme"
	case len(u.Scheme) > len("https") || strings.ContainsFunc(u.Scheme, func(r rune) bool { return r < 'a' || r > 'z' }):
		return "a scheme that is no http or https"
	case u.Host == "":
		return fmt.Sprintf("scheme %q and no host", u.Scheme)
	}
	return fmt.Sprintf("scheme %q", u.Scheme)
}

// unquotedParseError is the text of err, an error of url.Parse, without
// the part of the URL it quotes: a password holding a /, ? or # unescaped
// ends the URL's authority there, and is quoted as its host's port
// ("invalid port \":s3cr3t\" after host").
func unquotedParseError(err error) string {
	s := err.Error()
	i, j := strings.IndexByte(s, '"'), strings.LastIndexByte(s, '"')
	if i < 0 || j <= i {
		return s
	}
	return s[:i] + "(not shown)" + s[j+1:] + " (a /, ?, # or % in a user name or password must be percent-escaped)"
}

// newTarget prepares t, the primary's when primary is set.
func newTarget(t Target, primary bool) (target, error) {
	u, err := url.Parse(t.BaseURL)
	var ue *url.Error
	switch {
	case errors.As(err, &ue):
		return target{}, fmt.Errorf("BaseURL: %s", unquotedParseError(ue.Err)) // not the URL itself, which may hold a key
	case err != nil:
		return target{}, fmt.Errorf("BaseURL: %w", err)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		// Its scheme and host alone: a key pasted in place of the URL
		// parses as a path, which errors, ending up in logs, must not repeat.
		return target{}, fmt.Errorf("BaseURL must be an http or https URL with a host, got %s", schemeAndHost(u))
	}
	u.Path, u.RawPath, u.Fragment = strings.TrimSuffix(u.Path, "/"), "", ""
	p := target{name: t.Name, base: u, header: make(http.Header, len(t.Header)), models: make(map[string][]byte, len(t.Models)),
		names: make(map[string]string, len(t.Models))}
	if p.name == "" {
		p.name = u.Host
	}
	for k, v := range t.Header {
		// net/http refuses to send such a header, on every request: the
		// target would never be reached, its callers getting the earlier
		// target's failure. Its value is never quoted: it is a key.
		if !validHeaderName(k) {
			return target{}, errors.New("Header: a name that is not a valid HTTP header name")
		}
		if slices.ContainsFunc(v, invalidHeaderValue) {
			return target{}, fmt.Errorf("Header: the value of %s is not a valid HTTP header value (a control character, such as a key's trailing newline)", k)
		}
		p.header[http.CanonicalHeaderKey(k)] = slices.Clone(v)
	}
	for from, to := range t.Models {
		if from == "" || to == "" {
			return target{}, fmt.Errorf("Models maps %q to %q: neither may be empty", from, to)
		}
		p.models[from], p.names[from] = quoteJSON(to), to
	}
	if u.User != nil {
		// http.Client sends a URL's user info as Basic authorization,
		// unless the request has an Authorization of its own; the
		// transport below it, where the Fallback sends the target's URL,
		// never reads it. The primary's is the caller's URL's, which the
		// caller's client has turned into a header already.
		if _, set := p.header["Authorization"]; !set && !primary {
			password, _ := u.User.Password()
			r := http.Request{Header: make(http.Header)}
			r.SetBasicAuth(u.User.Username(), password)
			p.header["Authorization"] = r.Header["Authorization"]
		}
		u.User = nil
	}
	p.rewrites = len(p.header) > 0 || len(p.models) > 0
	return p, nil
}

// validHeaderName reports whether name is a token, as net/http requires
// of a header's name.
func validHeaderName(name string) bool {
	return name != "" && !strings.ContainsFunc(name, func(c rune) bool {
		return c <= ' ' || c > '~' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, c)
	})
}

// invalidHeaderValue reports whether net/http refuses to send v as a
// header's value: it holds a control character other than a tab.
func invalidHeaderValue(v string) bool {
	return strings.ContainsFunc(v, func(c rune) bool { return c < ' ' && c != '\t' || c == 0x7f })
}

// Wrap returns a RoundTripper that sends each request through next (nil
// means http.DefaultTransport), to the next target while one gives up. It
// forwards CloseIdleConnections to next.
func (f *Fallback) Wrap(next http.RoundTripper) http.RoundTripper {
	if f == nil { // a layer left unconfigured: Chain skips it
		return orDefault(next)
	}
	if len(f.targets) == 0 {
		return zeroFallback
	}
	next = orDefault(next)
	bound := boundsResends(next)
	return &fallbackTransport{f: f, next: next, bound: bound}
}

type fallbackTransport struct {
	f    *Fallback
	next http.RoundTripper
	// bound is set over net/http's own transport, which would send a
	// target's request again on its own, at once and without end, to a
	// target resetting every HTTP/2 stream with PROTOCOL_ERROR, so that the
	// next target never had it: each goes down as a Retrier's attempt
	// (see sendBounded), and such a resend fails it.
	bound bool
}

// CloseIdleConnections closes the idle connections of the transport below.
func (t *fallbackTransport) CloseIdleConnections() { closeIdleConnections(t.next) }

func (t *fallbackTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	f := t.f
	if req.URL == nil {
		closeRequestBody(req)
		return nil, Refuse(fmt.Errorf("httpguard: fallback: %w", errNoURL))
	}
	rel, ok := f.targets[0].below(req.URL)
	if !ok {
		return noNilResponse(t.next.RoundTrip(req))
	}
	send, canMove, err := f.replayable(req)
	if err != nil {
		return nil, Refuse(err)
	}
	// A GetBody other than http.NewRequest's may rewind the very reader a
	// target's body reads, which net/http may go on writing after an early
	// answer: the next target's GetBody waits until that body, and every
	// copy a layer below took from GetBody (a Retrier's retries), is done,
	// as a Retrier's retry does (see sentBody).
	track := send.GetBody != nil && send.Body != nil && send.Body != http.NoBody && !freshGetBody(send.GetBody)
	var kept sentOutcome
	for i := 0; ; i++ {
		r, err := f.request(send, i, rel)
		if err != nil && (errors.Is(err, ErrBodyTooLongToMap) || errors.Is(err, ErrModelUnreadable) || errors.Is(err, ErrBodyHoldsCredentials) ||
			errors.Is(err, ErrRemappedBelowBudget)) &&
			i > 0 && i < len(f.targets)-1 {
			f.moved(req, i, nil, err) // sent nothing: the kept outcome stays
			continue
		}
		if err != nil {
			return f.finish(req, kept, i, false, nil, Refuse(err))
		}
		var w *wire
		if kept.held() { // only then does it matter whether this target received the request
			w = &wire{}
			r = r.WithContext(httptrace.WithClientTrace(r.Context(), w.trace()))
		}
		var sent *sentBodies
		if track && r.Body != nil {
			sent = &sentBodies{}
			r = sent.track(r)
		}
		resp, err := noNilResponse(sendDown(t.next, t.bound, r))
		received := w.received(r.Context(), err)
		if i == len(f.targets)-1 || !canMove || !gaveUp(req.Context(), resp, err) ||
			sent != nil && sent.wait(req.Context()) != nil {
			return f.finish(req, kept, i, received, resp, err)
		}
		discardedBelow(req.Context(), resp, err) // a Budget above sends no more on its reservation what may be billed
		kept = f.keep(kept, i, received, resp, err)
		f.moved(req, i, resp, err)
	}
}

// sentBodies are the bodies a target's request was sent with, tracked
// (see sentBody): its Body, and every copy a layer below took from its
// GetBody. A Retrier below sends its retries with GetBody copies and
// returns its last attempt's answer while net/http may still write that
// copy, the Body the Fallback passed down long closed by the first.
type sentBodies struct {
	mu     sync.Mutex
	bodies []*sentBody
}

// track returns a copy of r whose Body, and the bodies its GetBody hands
// out, are tracked by s.
func (s *sentBodies) track(r *http.Request) *http.Request {
	c := *r
	b := &sentBody{rc: r.Body}
	s.bodies = append(s.bodies, b)
	c.Body = b
	if getBody := r.GetBody; getBody != nil {
		c.GetBody = func() (io.ReadCloser, error) {
			rc, err := callGetBody(getBody)
			if err != nil {
				return nil, err
			}
			b := &sentBody{rc: rc}
			s.mu.Lock()
			s.bodies = append(s.bodies, b)
			s.mu.Unlock()
			return b, nil
		}
	}
	return &c
}

// wait returns nil once every body is done, as sentBody.wait does, within
// one maxBodyWait for them all.
func (s *sentBodies) wait(ctx context.Context) error {
	deadline := time.Now().Add(maxBodyWait)
	afterFunc := func(_ time.Duration, f func()) *time.Timer { return time.AfterFunc(time.Until(deadline), f) }
	for i := 0; ; i++ {
		s.mu.Lock()
		if i == len(s.bodies) {
			s.mu.Unlock()
			return nil
		}
		b := s.bodies[i]
		s.mu.Unlock()
		if err := b.wait(ctx, afterFunc); err != nil {
			return err
		}
	}
}

// wire is what net/http's trace saw of the exchanges a target's attempts
// began, to tell whether the target received the request.
type wire struct {
	conns, wrote atomic.Int32 // exchanges begun (connections asked for), headers written
}

func (w *wire) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GetConn:      func(string) { w.conns.Add(1) },
		WroteHeaders: func() { w.wrote.Add(1) },
	}
}

// received reports whether the target whose outcome is err may have
// received the request: unless a layer refused it before sending (err is a
// refusal), or net/http began exchanges and wrote no request's headers in
// any (every connection refused or failed before; a dial error). A
// transport that does not report what it did (w nil, or no exchange seen)
// is taken to have received it. A refusal inside ctx's cause is the
// caller's, not the target's (see refusedBelow).
func (w *wire) received(ctx context.Context, err error) bool {
	switch {
	case err == nil:
		return true
	case refusedBelow(ctx, err):
		return false
	case w == nil:
		return true
	}
	return w.conns.Load() == 0 || w.wrote.Load() > 0
}

// noNilResponse turns a transport's (nil, nil) into an error, as every
// layer does.
func noNilResponse(resp *http.Response, err error) (*http.Response, error) {
	if resp == nil && err == nil {
		return nil, fmt.Errorf("httpguard: fallback: %w", errNoResponse)
	}
	return resp, err
}

// below returns the path of u below the target's base, and whether u is
// below it.
func (t *target) below(u *url.URL) (string, bool) {
	b := t.base
	if !strings.EqualFold(u.Scheme, b.Scheme) || !strings.EqualFold(u.Host, b.Host) || !strings.HasPrefix(u.Path, b.Path) {
		return "", false
	}
	rel := u.Path[len(b.Path):]
	return rel, rel == "" || rel[0] == '/'
}

// replayable returns req, or a copy whose body can be sent again, and
// whether it can go to another target.
func (f *Fallback) replayable(req *http.Request) (*http.Request, bool, error) {
	if req.Body == nil || req.Body == http.NoBody || req.GetBody != nil {
		return req, true, nil
	}
	send, _, err := replayableCtx(req, f.cfg.MaxBufferedBody)
	switch err {
	case nil:
		return send, true, nil
	case errBodyTooLarge:
		return send, false, nil
	}
	return nil, false, fmt.Errorf("httpguard: fallback: reading the request body: %w", err)
}

// request returns the request to send to target i: req itself for a
// primary with nothing to set, otherwise a copy with the target's URL,
// headers and model.
func (f *Fallback) request(req *http.Request, i int, rel string) (*http.Request, error) {
	t := &f.targets[i]
	if i == 0 && !t.rewrites {
		return req, nil
	}
	r := req.Clone(req.Context())
	if r.Header == nil { // a request built by hand; http.Client gives it an empty one too
		r.Header = make(http.Header, len(t.header))
	}
	if i > 0 {
		u := *t.base
		u.Path += rel
		if req.URL.RawPath != "" { // keep the request's own escapes below the base
			if esc, prefix := req.URL.EscapedPath(), f.targets[0].base.EscapedPath(); strings.HasPrefix(esc, prefix) {
				u.RawPath = t.base.EscapedPath() + esc[len(prefix):] // used only if it encodes u.Path
			}
		}
		if u.RawQuery == "" {
			u.RawQuery = withoutCredentialParams(req.URL.RawQuery)
		}
		r.URL, r.Host = &u, u.Host
		for h := range r.Header {
			if isCredential(h) {
				delete(r.Header, h)
			}
		}
	}
	for k, v := range t.header {
		r.Header[k] = slices.Clone(v)
	}
	if len(t.names) > 0 { // r.URL is r's own: Clone copied it, or the target's
		if err := mapURLModel(r.URL, t.names); err != nil {
			return nil, fmt.Errorf("httpguard: fallback: %s: %w", t.name, err)
		}
	}
	if (i > 0 || len(t.names) > 0) && pricedAbove(req.Context()) && urlModel(r.URL) != urlModel(req.URL) {
		return nil, remappedBelowBudget(t)
	}
	if req.Body == nil || req.Body == http.NoBody || req.GetBody == nil { // no body, or one too long to send again
		return r, nil
	}
	if i == 0 {
		closeRequestBody(req) // replaced by the one below
	}
	if i == 0 && len(t.models) == 0 { // the primary's, as it is
		var err error
		if r.Body, err = callGetBody(req.GetBody); err != nil {
			return nil, bodyReadError(t, err)
		}
		return r, nil
	}
	if err := f.setBody(r, req, t, i > 0); err != nil {
		return nil, err
	}
	if pricedAbove(req.Context()) {
		gateBelowBudget(r, req)
	}
	return r, nil
}

// gateBelowBudget makes r's GetBody ask req's first. A Budget above the
// Fallback gave req a GetBody that fails once a write of the attempt got
// no answer, or got one that may be billed (see sendOnce), so that
// nothing below sends the attempt again on the Budget's one reservation:
// not a Retrier below the Fallback, nor net/http, which would otherwise
// send the copy of the body r carries past it.
func gateBelowBudget(r, req *http.Request) {
	own, gate := r.GetBody, req.GetBody
	r.GetBody = func() (io.ReadCloser, error) {
		rc, err := callGetBody(gate)
		if err != nil {
			return nil, err
		}
		rc.Close()
		return own()
	}
}

// setBody gives r, the request to send to target t, a copy of req's body
// from its GetBody: read for the credentials it may hold when check is
// set, its model mapped by the target's Models. A body longer than
// MaxBufferedBody is read for them to its end, a chunk at a time (the SDKs
// write extra_body's members after the messages), and sent from another
// copy; to a target with Models it goes unread.
func (f *Fallback) setBody(r, req *http.Request, t *target, check bool) error {
	limit, mapped := f.cfg.MaxBufferedBody, len(t.models) > 0
	if mapped && req.ContentLength > limit {
		// Sent as it is, it would ask the target for the model the
		// caller named, which its Models say it must not be asked for.
		return fmt.Errorf("httpguard: fallback: %s: %w (%d bytes)", t.name, ErrBodyTooLongToMap, limit)
	}
	body, long, err := readBody(req, limit)
	switch {
	case err == errBodyTooLarge && mapped:
		long.Close()
		return fmt.Errorf("httpguard: fallback: %s: %w (%d bytes)", t.name, ErrBodyTooLongToMap, limit)
	case err == errBodyTooLarge:
		found, err := readLongHoldsCredentials(long, req, f.cfg.MaxBufferedBody)
		long.Close()
		switch {
		case err != nil:
			return bodyReadError(t, err)
		case found:
			return fmt.Errorf("httpguard: fallback: %s: %w", t.name, ErrBodyHoldsCredentials)
		}
		if r.Body, err = callGetBody(req.GetBody); err != nil {
			return bodyReadError(t, err)
		}
		return nil
	case err != nil:
		return bodyReadError(t, err)
	case check && bytesHoldCredentials(body, req.Header, limit):
		return fmt.Errorf("httpguard: fallback: %s: %w", t.name, ErrBodyHoldsCredentials)
	}
	if mapped {
		sent := body
		if body, err = mapBodyModel(body, req.Header, t.models, t.names); err != nil {
			return fmt.Errorf("httpguard: fallback: %s: %w", t.name, err)
		}
		if !bytes.Equal(body, sent) && pricedAbove(req.Context()) {
			return remappedBelowBudget(t)
		}
	}
	setBody(r, body)
	return nil
}

// ErrRemappedBelowBudget is why a Fallback placed below a Budget (not the
// recommended order) sends a request to no target whose Models, or whose
// BaseURL, ask for another model (an Azure deployment the path names): the
// Budget above reserved the attempt at the prices of the model the
// request names, and would charge its answer at them, while the target
// bills the other model's. It is used as ErrBodyTooLongToMap is: the Err
// of the FallbackEvent of a request moving past such a target (nothing
// was sent to it), and, wrapped in a refusal, the error of a request
// refused for it.
var ErrRemappedBelowBudget = errors.New("a Budget above the Fallback priced the request at the model it names, and the target asks for another (its Models, or the deployment its BaseURL names): place the Fallback above the Budget (Chain(base, fallback, retrier, breaker, budget, limiter)), where the Budget prices each target's model")

// urlModel is the model u names, as a Budget reads it: the Azure
// deployment or the engine its path names, else the model its query
// names.
func urlModel(u *url.URL) string {
	if d := readPathForm(u.EscapedPath(), true).deployment; d != "" {
		return unescapedSegment(d)
	}
	m, _ := QueryModel(u.RawQuery)
	return m
}

// remappedBelowBudget returns ErrRemappedBelowBudget for target t.
func remappedBelowBudget(t *target) error {
	return fmt.Errorf("httpguard: fallback: %s: %w", t.name, ErrRemappedBelowBudget)
}

// readBody reads a copy of req's body from its GetBody: its bytes, when
// it is at most limit bytes long (an error when not as long as declared);
// else errBodyTooLarge and a reader of the whole copy, the bytes read
// first included, which the caller closes. A body declared longer than
// limit is not read.
func readBody(req *http.Request, limit int64) (body []byte, long io.ReadCloser, err error) {
	rc, err := callGetBody(req.GetBody)
	if err != nil {
		return nil, nil, err
	}
	if req.ContentLength > limit {
		return nil, rc, errBodyTooLarge
	}
	b, err := readAtMost(rc, sizedBuffer(req.ContentLength, limit), limit)
	if err == errBodyTooLarge {
		return nil, readThenRest(b, rc), err
	}
	rc.Close()
	if err == nil {
		err = checkLength(req.ContentLength, int64(len(b)))
	}
	return b, nil, err
}

// readLongHoldsCredentials reads the body r, a copy of req's, to its
// end: whether it holds credentials (see bodyHoldsCredentials), and
// net/http's error when its length is not the one req declares, which
// net/http would find only once the body was partly sent.
func readLongHoldsCredentials(r io.Reader, req *http.Request, limit int64) (bool, error) {
	src := &sourceReader{r: r}
	if found, err := bodyHoldsCredentials(src, req.Header, limit); found || err != nil {
		return found, err
	}
	io.Copy(io.Discard, src) // an error is src.err
	if src.err != nil {
		return false, src.err
	}
	return false, checkLength(req.ContentLength, src.n)
}

// bytesHoldCredentials is bodyHoldsCredentials for a body in memory.
func bytesHoldCredentials(body []byte, h http.Header, limit int64) bool {
	if form, _ := formOf(h); form == notForm && unencoded(contentEncoding(h)) {
		return holdsCredentials(body)
	}
	found, _ := bodyHoldsCredentials(&sourceReader{r: bytes.NewReader(body)}, h, limit)
	return found
}

// bodyHoldsCredentials reports whether the body src reads, sent with the
// header h, may hold the caller's credentials: a top-level member of a
// JSON object isBodyCredential names (see credentialScan), or a form's
// field it names (see formOf) whose value is not empty. A gzip body is
// read decompressed, up to limit decompressed bytes. A body that cannot
// be read so is taken to hold them: one compressed otherwise (br, zstd,
// deflate, or more than once), or longer than limit decompressed (a gzip
// bomb costs no more than that), or no gzip after all, and a form that
// does not parse. Only the errors of src's reader are returned.
func bodyHoldsCredentials(src *sourceReader, h http.Header, limit int64) (bool, error) {
	found, read := scanForCredentials(src, h, limit)
	if src.err != nil {
		return false, src.err
	}
	return found || !read, nil
}

// scanForCredentials is bodyHoldsCredentials without its errors: read
// reports whether the body could be read for credentials.
func scanForCredentials(r io.Reader, h http.Header, limit int64) (found, read bool) {
	switch enc := contentEncoding(h); {
	case gzipped(enc):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return false, false
		}
		r = &boundedReader{r: zr, n: limit}
	case !unencoded(enc):
		return false, false
	}
	var err error
	switch form, boundary := formOf(h); form {
	case notForm:
		found, err = readHoldsCredentials(r)
	case multipartForm:
		found, err = multipartHoldsCredentials(r, boundary)
	case urlencodedForm:
		found, err = urlencodedHoldsCredentials(r)
	default:
		return false, false
	}
	return found, err == nil
}

// A formKind is what the Content-Type of a request body says of it.
type formKind int8

const (
	notForm        formKind = iota // JSON, or anything else read as JSON
	multipartForm                  // multipart/form-data
	urlencodedForm                 // application/x-www-form-urlencoded
	unreadableForm                 // a form, in a type that does not parse
)

// formOf reads the Content-Type of a request sent with the header h (all
// its values, under any spelling of the name): whether its body is a form
// and, for a multipart one, its boundary. A form's fields are read as a
// JSON body's members: LiteLLM reads a body whose Content-Type holds
// "form" as a form (an upload to /audio/transcriptions), api_key and
// all. Such a type that does not parse, or comes with another, is an
// unreadableForm.
func formOf(h http.Header) (form formKind, boundary string) {
	var types []string
	for name, v := range h {
		if strings.EqualFold(name, "Content-Type") {
			types = append(types, v...)
		}
	}
	if !slices.ContainsFunc(types, func(t string) bool { return strings.Contains(strings.ToLower(t), "form") }) {
		return notForm, ""
	}
	if len(types) != 1 {
		return unreadableForm, ""
	}
	media, params, err := mime.ParseMediaType(types[0])
	switch {
	case err != nil:
		return unreadableForm, ""
	case media == "multipart/form-data" && params["boundary"] != "":
		return multipartForm, params["boundary"]
	case media == "multipart/form-data":
		return unreadableForm, ""
	case media == "application/x-www-form-urlencoded":
		return urlencodedForm, ""
	}
	return notForm, ""
}

// multipartHoldsCredentials reports whether the multipart/form-data body
// read from r, its parts cut at boundary, has a field isBodyCredential
// names whose value is not empty, or an error when it does not parse. A
// part's name is read from each of its Content-Disposition headers, whatever
// their type (Python's parsers do not ask for form-data). Parts are skipped
// as they are read, not held; a part's header is held, up to what
// mime/multipart allows.
func multipartHoldsCredentials(r io.Reader, boundary string) (bool, error) {
	mr := multipart.NewReader(r, boundary)
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		for _, d := range p.Header.Values("Content-Disposition") {
			_, params, err := mime.ParseMediaType(d)
			if err != nil {
				return false, err
			}
			if isBodyCredential(params["name"]) {
				var one [1]byte
				if n, _ := io.ReadFull(p, one[:]); n > 0 {
					return true, nil
				}
			}
		}
	}
}

// maxFormName is the longest field name of a urlencoded form read whole;
// a longer one is taken for a credential's.
const maxFormName = 256

// urlencodedHoldsCredentials reports whether the
// application/x-www-form-urlencoded body read from r has a field
// isBodyCredential names whose value is not empty. Fields are cut at '&'
// and ';', as python-multipart (Starlette's, so LiteLLM's) cuts them; a
// name is unescaped as url.QueryUnescape does.
func urlencodedHoldsCredentials(r io.Reader) (bool, error) {
	br := bufio.NewReader(r)
	var name []byte
	inName, long := true, false
	for {
		c, err := br.ReadByte()
		switch {
		case err == io.EOF:
			return false, nil
		case err != nil:
			return false, err
		case c == '&' || c == ';':
			name, inName, long = name[:0], true, false
		case !inName:
		case c == '=':
			inName = false
			if !long && !isFormCredential(name) {
				break
			}
			if next, err := br.Peek(1); len(next) > 0 && next[0] != '&' && next[0] != ';' {
				return true, nil
			} else if err != nil && err != io.EOF {
				return false, err
			}
		case len(name) < maxFormName:
			name = append(name, c)
		default:
			long = true
		}
	}
}

// isFormCredential reports whether the urlencoded field name, unescaped,
// is one isBodyCredential names.
func isFormCredential(name []byte) bool {
	n := string(name)
	if u, err := url.QueryUnescape(n); err == nil {
		n = u
	}
	return isBodyCredential(n)
}

// bodyReadError is the error of a request whose body could not be read
// for target t.
func bodyReadError(t *target, err error) error {
	return fmt.Errorf("httpguard: fallback: reading the request body for %s: %w", t.name, err)
}

// ErrBodyHoldsCredentials is why a Fallback sends a request to no target
// but the primary: its body holds the caller's credentials, which are the
// primary's (see Target.Header), or may hold them and cannot be read for
// them. A server that decompresses request bodies reads the credentials a
// compressed body holds, so a gzip body is read decompressed, up to
// FallbackConfig.MaxBufferedBody decompressed bytes: a few KiB of gzip
// can decompress to gigabytes, which the check must not cost. A body
// compressed otherwise (br, zstd, deflate, or more than once), one that
// decompresses to more than that bound, one that is not the gzip it says,
// and a form (multipart or urlencoded) that does not parse, go to the
// primary only: the caller sent them there, and sending them elsewhere
// unread could hand its key to another provider.
// It is used as ErrBodyTooLongToMap is: the request moves on past every
// other target, sending nothing, and the caller gets the primary's
// outcome.
var ErrBodyHoldsCredentials = errors.New("the request body holds credentials for the primary (api_key, user_config, a secret, a token), or cannot be read for them: it goes to no other target")

// ErrBodyTooLongToMap is why a Fallback sends a request to no target with
// Models: its body, longer than FallbackConfig.MaxBufferedBody, cannot be
// read for its model. It is the Err of the FallbackEvent of a request
// moving past such a target (nothing was sent to it), and, wrapped in a
// refusal, the error of a request refused for it (see Target.Models).
var ErrBodyTooLongToMap = errors.New("the request body is too long to read for its model, which the target's Models map: longer than MaxBufferedBody")

// gaveUp reports whether an outcome means the target gave up on the
// request, so that the next target may have it.
func gaveUp(ctx context.Context, resp *http.Response, err error) bool {
	switch {
	case ctx.Err() != nil:
		return false
	case errors.Is(err, ErrCircuitOpen) || limitedByServer(err):
		// Refused unsent, but for what the target said: failures that
		// opened its circuit, or 429s its Limiter remembers (a pause, a
		// lowered rate).
		return true
	case err != nil:
		if IsRefusal(err) {
			return false
		}
		// The Retrier asks no more for a name that is gone; another
		// target has its own.
		retry, _ := retryTransportError(context.Background(), err)
		return retry || hostNotFound(err)
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests:
		return true
	}
	return judgeStatus(resp.StatusCode) == outcomeFailure
}

// sentOutcome is the outcome of the last target that received the
// request, kept in case the targets after it do not.
type sentOutcome struct {
	resp   *http.Response
	err    error
	target int
}

func (o *sentOutcome) held() bool { return o.resp != nil || o.err != nil }

func (o *sentOutcome) drop() {
	if o.resp != nil && o.resp.Body != nil { // a transport may answer without a Body
		o.resp.Body.Close()
	}
}

// keep returns what to keep after target i's outcome: that outcome, when
// the target received the request, or what was kept before. An answer kept
// has its body read into memory (see keepBody), its connection let go.
func (f *Fallback) keep(kept sentOutcome, i int, received bool, resp *http.Response, err error) sentOutcome {
	if !received {
		return kept
	}
	kept.drop()
	if err != nil {
		return sentOutcome{err: err, target: i}
	}
	keepBody(resp, f.targets[i].name)
	return sentOutcome{resp: resp, target: i}
}

// maxKeptBody and maxKeptBodyTime bound how much of a target's error answer
// a Fallback keeps, and how long it waits for it to end, before moving on:
// an error body is a few hundred bytes sent with the headers, or a round
// trip behind them.
const (
	maxKeptBody     = 64 << 10
	maxKeptBodyTime = 250 * time.Millisecond
)

// ErrKeptBodyCut is the error a caller reads at the end of what a Fallback
// kept of an earlier target's error answer whose body was longer than
// 64 KiB, did not end within 250ms, or broke off: the answer's status and
// headers are whole, its body is what came before the cut.
var ErrKeptBodyCut = errors.New("httpguard: fallback: the body of an earlier target's answer was cut")

// keepBody replaces resp's body with its bytes in memory, read (and the
// body closed) within maxKeptBody and maxKeptBodyTime. A body cut by
// either, or by an error, keeps what came and then reads ErrKeptBodyCut.
func keepBody(resp *http.Response, target string) {
	if resp.Body == nil {
		return
	}
	// The timer closes this body, not resp.Body, which is replaced below,
	// maybe while the timer runs.
	rc := resp.Body
	var closed atomic.Bool
	closeOnce := func() {
		if closed.CompareAndSwap(false, true) {
			rc.Close()
		}
	}
	timer := time.AfterFunc(maxKeptBodyTime, closeOnce)
	body, err := readAtMost(rc, nil, maxKeptBody)
	stalled := !timer.Stop()
	closeOnce()
	switch {
	case err == nil:
		resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		return
	case err == errBodyTooLarge:
		body, err = body[:maxKeptBody], fmt.Errorf("%w after %d bytes: %s's answer is longer", ErrKeptBodyCut, maxKeptBody, target)
	case stalled:
		err = fmt.Errorf("%w after %d bytes: %s's answer did not end within %v", ErrKeptBodyCut, len(body), target, maxKeptBodyTime)
	default:
		err = fmt.Errorf("%w after %d bytes: %s's answer broke off: %w", ErrKeptBodyCut, len(body), target, err)
	}
	resp.Body, resp.ContentLength = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{err})), -1
}

// finish returns target i's outcome to the caller, who sent req, or the
// outcome kept from an earlier target when target i did not receive the
// request.
func (f *Fallback) finish(req *http.Request, kept sentOutcome, i int, received bool, resp *http.Response, err error) (*http.Response, error) {
	if !received && kept.held() {
		resp, err, i = kept.resp, kept.err, kept.target
	} else {
		kept.drop()
	}
	if resp == nil {
		return nil, err
	}
	if resp.Header == nil {
		resp.Header = make(http.Header)
	}
	if i > 0 {
		// The caller's client takes the answer for the primary's: it would
		// send the cookies another target set to the primary, and follow
		// its redirect with the caller's request, the primary's keys (an
		// X-Api-Key, which http.Client keeps across hosts) and a Referer
		// naming the primary's URL, to a URL no longer below the primary's
		// base, which the Fallback then passes on untouched.
		delete(resp.Header, "Set-Cookie")
		delete(resp.Header, "Location")
	}
	// Nor does the answer hand the caller the request sent to the target,
	// its URL and the key of the target's Header (http.Client quotes
	// resp.Request.URL in its errors): it is the caller's.
	resp.Request = req
	resp.Header.Set(TargetHeader, f.targets[i].name)
	return resp, nil
}

// moved tells the hook and the logger that a request leaves target i.
func (f *Fallback) moved(req *http.Request, i int, resp *http.Response, err error) {
	e := FallbackEvent{Request: req, From: f.targets[i].name, To: f.targets[i+1].name, StatusCode: statusOf(resp), Err: err}
	if f.cfg.OnSwitch != nil {
		f.cfg.OnSwitch(e)
	}
	l := f.cfg.Logger
	if l == nil || !l.Enabled(req.Context(), slog.LevelInfo) {
		return
	}
	attrs := []slog.Attr{slog.String("url", redactURL(req.URL)), slog.String("from", e.From), slog.String("to", e.To),
		slog.Int("status", e.StatusCode)}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	l.LogAttrs(req.Context(), slog.LevelInfo, "httpguard: fallback: moving to the next target", attrs...)
}
