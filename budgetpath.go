package httpguard

import (
	"encoding/json"
	"net/http"
	"net/textproto"
	"net/url"
	pathpkg "path"
	"slices"
	"strings"
	"unicode/utf8"
)

// This file reads what a request's path and headers say about its
// pricing, for the Budget: the endpoints providers do not bill, the model
// a path names (Azure deployments, Vertex), the routes gateways
// rewrite, and the headers under which a gateway may run another model.

// FreeEndpoint reports whether req goes to an endpoint that providers do
// not bill, which a Budget lets pass unpriced: counting tokens
// (Anthropic's messages/count_tokens, OpenAI's responses/input_tokens),
// and moderations. Of moderations, only OpenAI's are free: a Budget lets
// one pass unpriced when its body names no model or one of OpenAI's
// moderation models (omni-moderation-*, text-moderation-*), and prices
// the others as any request (Mistral bills its moderation models).
// FreeEndpoint reads only the URL, so it reports true for every
// moderation; the Budget reads the model from the body. The path is read
// as sent: an escaped slash (messages%2Fcount_tokens) is not a free
// endpoint's, and a URL's Opaque, when set, is the path sent.
func FreeEndpoint(req *http.Request) bool {
	free, _ := freeEndpoint(req)
	return free
}

// freeEndpoint is FreeEndpoint, and whether the endpoint is moderations,
// which are free by their model (see freeModeration).
func freeEndpoint(req *http.Request) (free, moderation bool) {
	if req.URL == nil {
		return false, false
	}
	return endpointOf(sentPath(req.URL))
}

// endpointOf is freeEndpoint for the path sent, p.
func endpointOf(p string) (free, moderation bool) {
	if strings.HasSuffix(p, "/moderations") {
		return true, true
	}
	return strings.HasSuffix(p, "/count_tokens") || strings.HasSuffix(p, "/responses/input_tokens"), false
}

// spendsOutsideAnswers reports whether req, whose path says path,
// opens what spends where no answer reports it: a protocol upgrade (a
// WebSocket, such as OpenAI's Realtime API or the Responses API's
// WebSocket mode), or a request to a path with a realtime segment, in any
// case (the Realtime API's sessions and client secrets mint keys that
// spend from a browser). An Upgrade header is read under its canonical
// key, as Header.Set writes it, in all its values (net/http writes them
// all): asking the map for it costs far less than ranging over a
// request's dozen headers for another spelling. An upgrade asked for
// under a key written in another case is refused when its 101 comes
// back, before anything is sent over it (see switchedProtocols).
func spendsOutsideAnswers(req *http.Request, path *pathFacts, absent headerKeys) bool {
	return path.realtime || absent&keyUpgrade == 0 && slices.ContainsFunc(req.Header["Upgrade"], notBlank)
}

// headerKeys is a set of the keys the Budget looks up in every priced
// request's header, under their canonical keys: Upgrade, the gateways'
// headers, Vertex's priority.
type headerKeys uint8

const (
	keyUpgrade headerKeys = 1 << iota
	keyPortkeyConfig
	keyPortkeyProvider
	keyHeliconeFallbacks
	keyVertexPriority
	everyKey headerKeys = 1<<iota - 1
)

// absentKeys returns the Budget's header keys that h certainly does not
// hold; a key not in the set is looked up where it is read. A header of
// a few keys (go-openai sends three, a hand-written client two) is ranged
// over once, which costs less than looking up the five keys (~0.45k
// instructions less a request with one key), as mayReportSpentWindow
// ranges over a small response header; for a larger one (openai-go and
// anthropic-sdk-go send a dozen) it is the empty set, and each key is
// looked up. The range stops at the last key (see mayReportSpentWindow).
func absentKeys(h http.Header) headerKeys {
	if len(h) > 4 {
		return 0 // in line: a larger header pays no call
	}
	return absentOfFew(h)
}

// absentOfFew is absentKeys of a header of a few keys. A header of one
// or two keys that are only a plain client's (Content-Type, and
// Authorization) holds none of the Budget's: asking the map for them
// costs less than starting a range, whose random start alone costs ~0.27k
// instructions (~0.19k less a request with Content-Type alone, ~0.13k
// with both). Any other key is found by the range.
func absentOfFew(h http.Header) headerKeys {
	if len(h) <= 2 && holdsOnlyPlainKeys(h) {
		return everyKey
	}
	left, absent := len(h), everyKey
	for k := range h {
		switch k {
		case "Upgrade":
			absent &^= keyUpgrade
		case "X-Portkey-Config":
			absent &^= keyPortkeyConfig
		case "X-Portkey-Provider":
			absent &^= keyPortkeyProvider
		case "Helicone-Fallbacks":
			absent &^= keyHeliconeFallbacks
		case vertexPriorityKey:
			absent &^= keyVertexPriority
		}
		if left--; left == 0 {
			break
		}
	}
	return absent
}

// holdsOnlyPlainKeys reports whether every key of h, a header of two
// keys at most, is Content-Type or Authorization.
func holdsOnlyPlainKeys(h http.Header) bool {
	n := 0
	if _, ok := h["Content-Type"]; ok {
		n++
	}
	if n < len(h) {
		if _, ok := h["Authorization"]; ok {
			n++
		}
	}
	return n == len(h)
}

// retrievesResponse reports whether req is a GET of a response the
// provider stored (…/responses/{id}, or its …/input_items), which is not
// billed: what it returns was charged to the request that made it.
// openai-go sends one with a body, {"stream":true}, to resume a background
// response's stream (Responses.GetStreaming); a body that names no model.
// Only a plain one is: a path with a . or .. segment, an escape or a
// backslash, which a gateway may resolve to another endpoint, a path that
// names a deployment (see pathFacts), or a request carrying a header that
// asks a server to run another method or path (see overrideHeaders), is
// priced as any request.
func retrievesResponse(req *http.Request, path *pathFacts) bool {
	if req.Method != "" && req.Method != http.MethodGet || path.deployment != "" {
		return false
	}
	p := sentPath(req.URL)
	i := strings.LastIndex(p, "/responses/")
	if i < 0 {
		return false
	}
	id, items := p[i+len("/responses/"):], ""
	if j := strings.IndexByte(id, '/'); j >= 0 {
		id, items = id[:j], id[j:]
	}
	if id == "" || items != "" && items != "/input_items" || !unambiguousPath(p) {
		return false
	}
	for _, h := range overrideHeaders {
		if len(req.Header[h]) > 0 {
			return false
		}
	}
	return true
}

// overrideHeaders are the headers, under their canonical keys, in which a
// client may ask a server to run a request as another method (Google's
// frontends, Express's method-override) or at another path (IIS's URL
// Rewrite, Symfony).
var overrideHeaders = [...]string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override", "X-Original-Url", "X-Rewrite-Url"}

// unambiguousPath reports whether the path sent, p, reads the same to
// every server: no . or .. segment, no escape (%2e%2e is .. to one that
// decodes), no backslash (a separator to some).
func unambiguousPath(p string) bool {
	if strings.ContainsAny(p, `%\`) {
		return false
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// notBlank reports whether net/http writes the header value v as more than
// blanks.
func notBlank(v string) bool { return textproto.TrimString(v) != "" }

// pathFacts is what a request's path says of what runs it, read in one
// pass over each form of the path: the one net/http sends and its decoded
// form (when they differ).
type pathFacts struct {
	realtime bool // a segment is realtime, in any case (see spendsOutsideAnswers)
	videos   bool // a segment is videos or video, in any case: a video job
	// free and moderation are freeEndpoint's answer, speech says the path
	// ends with /audio/speech, and images with an Images API endpoint
	// (/images/generations, /images/edits, /images/variations), in the
	// path sent (see readSent).
	free, moderation, speech, images bool
	// deployment is the model the path sent names, which runs the
	// request whatever model its body names: an Azure OpenAI deployment
	// (/openai/deployments/{name}/...) or an engine (/engines/{name}/...,
	// OpenAI's legacy API, which LiteLLM serves), the words in any case;
	// "" for other paths.
	deployment string
	// queried says that deployment is the model the query string names
	// (see QueryModel), not the path.
	queried bool
	// spanned, when not "", is the name the path gives when read as
	// LiteLLM reads it, spanning segments (see pathModelName): the model
	// that runs the request is one or the other, and the Budget refuses it.
	spanned string
}

// readPath returns the facts of u's path: those sentPaths keeps, which
// must not be changed, or those read into *own.
func readPath(u *url.URL, own *pathFacts) *pathFacts {
	sent := sentPath(u)
	if u.Path == sent { // most paths: sent as they are
		return sentPaths.get(sent, sent, readSent, own)
	}
	*own = readSent(sent)
	// Servers that route on the decoded path run the deployment it names
	// (/openai/deployments%2Fx/... is x's): a deployment only it names is
	// the request's, and one it names otherwise than the path sent makes
	// the request refused, as spanning segments does (see pathFacts).
	own.merge(readPathForm(u.Path, true))
	return own
}

// merge adds to f the facts of another form of its path, d, as a server
// that routes on that form reads it: a deployment only d names is the
// request's, and one d names otherwise than f makes the request refused,
// as spanning segments does (see pathFacts).
func (f *pathFacts) merge(d pathFacts) {
	f.realtime, f.videos = f.realtime || d.realtime, f.videos || d.videos
	switch {
	case d.deployment == "" || d.deployment == f.deployment:
	case f.deployment == "":
		f.deployment, f.spanned = d.deployment, d.spanned
	case f.spanned == "":
		f.spanned = d.deployment
	}
}

// readSent reads the path sent: readPathForm, and the endpoint it names.
// A deployment, and an endpoint whose output is priced above text
// (speech, images), are read as lenient servers route the path too (see
// routedAs, servedAs); a free endpoint only as spelled exactly.
func readSent(path string) pathFacts {
	f := readPathForm(path, true)
	f.free, f.moderation = endpointOf(path)
	f.speech, f.images = speechPath(path), imagesPath(path)
	lenient := routedOtherwise(path)
	if !lenient && (f.speech || f.images) {
		return f
	}
	routed := routedAs(path)
	// Lenient servers run the deployment the path names as they route it
	// (/openai\deployments\x/..., /openai/deployments;v=1/x/... are x's).
	if lenient {
		f.merge(readPathForm(routed, true))
	}
	if !f.speech && !f.images {
		served := strings.ToLower(routed) // servedAs
		f.speech, f.images = speechPath(served), imagesPath(served)
	}
	return f
}

func speechPath(p string) bool { return strings.HasSuffix(p, "/audio/speech") }

func imagesPath(p string) bool {
	return strings.HasSuffix(p, "/images/generations") || strings.HasSuffix(p, "/images/edits") || strings.HasSuffix(p, "/images/variations")
}

// servedAs is the path sent, p, as the most lenient servers route it:
// routedAs, in lower case (Express, ASP.NET).
func servedAs(p string) string { return strings.ToLower(routedAs(p)) }

// routedOtherwise reports whether routedAs may read p's segments
// otherwise than they are sent: most paths hold none of what it changes.
func routedOtherwise(p string) bool {
	return strings.ContainsAny(p, `\;%`) || strings.Contains(p, "//") || strings.Contains(p, "/.")
}

// routedAs is the path sent, p, as lenient servers route it: decoded
// (Starlette, which LiteLLM's proxy runs on, routes /v1%2Fx as /v1/x),
// backslashes read as slashes (IIS), ;parameters dropped (Java's servers),
// dot segments resolved (gateways that normalize paths), empty segments
// and a trailing slash dropped.
func routedAs(p string) string {
	if d, err := url.PathUnescape(p); err == nil {
		p = d
	}
	p = strings.ReplaceAll(p, `\`, "/")
	if strings.IndexByte(p, ';') >= 0 {
		segs := strings.Split(p, "/")
		for i, seg := range segs {
			segs[i], _, _ = strings.Cut(seg, ";")
		}
		p = strings.Join(segs, "/")
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return pathpkg.Clean(p)
}

// sentPaths holds the facts of the paths read before, so that a request
// to a path seen before costs no reading: a process sends to a few
// endpoints, over and over. A path's facts never change (see firstSlots).
var sentPaths firstSlots[string, pathFacts]

// readPathForm reads one form of a path; the deployment only when sent.
func readPathForm(path string, sent bool) pathFacts {
	if plainPath(path) { // most paths: one scan of their bytes, no call per segment
		return pathFacts{}
	}
	return readSegments(path, sent)
}

// readSegments is readPathForm, a segment at a time.
func readSegments(path string, sent bool) pathFacts {
	var f pathFacts
	prev, deployment := noPathWord, false
	for path != "" || deployment {
		var part string
		part, path = nextSegment(path)
		if deployment && f.deployment == "" {
			f.deployment = part
			if name := pathModelName(part, path); name != part {
				f.spanned = name
			}
		}
		w := noPathWord
		if len(part) >= minPathWord {
			w = readPathWord(part)
		}
		f.realtime = f.realtime || w == wordRealtime
		f.videos = f.videos || w == wordVideos || w == wordVideo
		deployment = sent && f.deployment == "" && (prev == wordOpenAI && w == wordDeployments || w == wordEngines)
		prev = w
	}
	return f
}

// pathWord is a path segment readPathForm looks for: an index in
// pathWords, or noPathWord.
type pathWord int8

const (
	noPathWord pathWord = iota - 1
	wordRealtime
	wordVideos
	wordVideo // new-api's and other relays' /v1/video/generations
	wordOpenAI
	wordDeployments
	wordEngines
)

var pathWords = [...]string{wordRealtime: "realtime", wordVideos: "videos", wordVideo: "video", wordOpenAI: "openai", wordDeployments: "deployments", wordEngines: "engines"}

// minPathWord is the length of the shortest of pathWords: a shorter
// segment is none of them.
const minPathWord = len("video")

// plainPath reports whether no segment of path can be one of pathWords,
// which readPathWord tells by its length and first byte: then
// readSegments reads nothing in it.
func plainPath(path string) bool {
	start := 0
	for i := 0; i < len(path); i++ {
		if path[i] == '/' {
			if i-start >= minPathWord && pathWordFirst[path[start]] {
				return false
			}
			start = i + 1
		}
	}
	return len(path)-start < minPathWord || !pathWordFirst[path[start]]
}

// pathWordFirst flags the bytes a segment readPathWord may find a word in
// begins with: a word's first letter, in either case, or a byte above
// 0x7f (a rune that may fold to it).
var pathWordFirst = func() (t [256]bool) {
	for _, word := range pathWords {
		t[word[0]], t[word[0]&^0x20] = true, true
	}
	for c := utf8.RuneSelf; c < len(t); c++ {
		t[c] = true
	}
	return t
}()

// readPathWord returns the word of pathWords that seg is, in any case.
func readPathWord(seg string) pathWord {
	if len(seg) < minPathWord {
		return noPathWord
	}
	// A segment that begins with an ASCII byte can be only a word that
	// begins with it, in either case: most segments are none, and are
	// told so without a call to EqualFold.
	c := seg[0] | 0x20
	for w, word := range pathWords {
		if (c == word[0] || seg[0] >= utf8.RuneSelf) && isWordFold(seg, word) {
			return pathWord(w)
		}
	}
	return noPathWord
}

// pathModelTails are the endpoints that follow a model a path names.
var pathModelTails = [...]string{"chat/completions", "completions", "embeddings", "responses", "messages",
	"audio/speech", "audio/transcriptions", "audio/translations", "images/generations", "images/edits"}

// pathModelName returns the model a path names from its segment first
// on, rest being the path after it: the segments up to the endpoint that
// ends the path, when one of pathModelTails does (LiteLLM reads a name
// that spans segments, as openai/gpt-4o), or first alone (an Azure
// deployment's name is one segment).
func pathModelName(first, rest string) string {
	for _, tail := range pathModelTails {
		if rest == tail {
			return first
		}
		if m, ok := strings.CutSuffix(rest, "/"+tail); ok {
			return first + "/" + m
		}
	}
	return first
}

// isWordFold reports whether s is word, an ASCII word, in any case.
func isWordFold(s, word string) bool {
	// Each rune of a string that folds to word folds to one ASCII letter,
	// in 3 bytes at most (K, the Kelvin sign, is k).
	return len(s) >= len(word) && len(s) <= 3*len(word) && strings.EqualFold(s, word)
}

// nextSegment splits path at its first slash: the segment before it, and
// the rest after it ("" when there is none). strings.SplitSeq costs ten
// times more, on every request.
func nextSegment(path string) (seg, rest string) {
	if i := strings.IndexByte(path, '/'); i >= 0 {
		return path[:i], path[i+1:]
	}
	return path, ""
}

// errorPath is sentPath for an error's message: an opaque URL's authority
// ("//user:key@host/…") without its user info, and the opaque URL without
// a query written into it ("/v1/…?key=…"), where a key may be.
func errorPath(u *url.URL) string {
	p := sentPath(u)
	if u.Opaque == "" {
		return p
	}
	p, _, _ = strings.Cut(p, "?")
	if !strings.HasPrefix(p, "//") {
		return p
	}
	auth, rest, slash := strings.Cut(p[len("//"):], "/")
	if i := strings.LastIndexByte(auth, '@'); i >= 0 {
		auth = auth[i+1:]
	}
	if slash {
		return "//" + auth + "/" + rest
	}
	return "//" + auth
}

// sentPath is the path net/http sends for u, escaped: Opaque in its place
// when set (url.URL.RequestURI), up to a '?' written in it, where the
// server's path ends and its query begins. Without a RawPath, it is Path: escaping
// keeps the bytes the package looks for in a path and writes none of them
// (its hex digits are upper case), so Path ends with such a suffix
// exactly when its escaped form does, and escaping costs a scan of the
// path, twice a request.
func sentPath(u *url.URL) string {
	switch {
	case u.Opaque != "":
		p, _, _ := strings.Cut(u.Opaque, "?")
		return p
	case u.RawPath == "":
		return u.Path
	}
	return u.EscapedPath()
}

// freeModeration reports whether a moderation request for model is one
// OpenAI serves free.
func freeModeration(model string) bool {
	return model == "" || strings.HasPrefix(model, "omni-moderation") || strings.HasPrefix(model, "text-moderation")
}

// oneModelServes reports whether the fallbacks of a request to u are a
// relay's, of which one model serves and is billed (OpenRouter's models,
// LiteLLM's fallbacks): its path ends with /completions or /responses,
// as sent and decoded. Any other path may be served as a Messages API's,
// whose server-side fallbacks bill every model they try: servers route
// /v1/Messages, /v1/messages/, /v1/messages/., /v1/messages;v=1 and
// /v1%2Fmessages there, by their case, slashes, dot segments, path
// parameters or escapes.
func oneModelServes(u *url.URL) bool {
	sent := sentPath(u)
	return relayEndpoint(sent) && (u.Path == sent || relayEndpoint(u.Path))
}

func relayEndpoint(p string) bool {
	return strings.HasSuffix(p, "/completions") || strings.HasSuffix(p, "/responses")
}

// anthropicContext is the prompt size, in input tokens, past which
// Anthropic bills a request that asks for its long context (see
// longContextBeta) at long-context prices.
const anthropicContext = 200_000

// longContextBeta returns the anthropic-beta flag of h that asks for
// Anthropic's 1M-token context ("context-1m-2025-08-07"), under which a
// prompt past anthropicContext tokens is billed at long-context prices
// (twice the input price, 1.5 times the output's, for Claude Sonnet 4 and
// 4.5), or "" when none does. Flags are comma-separated, in any case.
// Gateways forward the flags of their own headers as anthropic-beta
// (see anthropicBetaKeys).
func longContextBeta(h http.Header) string {
	beta := ""
	for _, key := range anthropicBetaKeys {
		if anyHeaderValue(h, key, func(v string) bool {
			for flag := range strings.SplitSeq(v, ",") {
				if flag = strings.TrimSpace(flag); len(flag) >= len("context-1m") && strings.EqualFold(flag[:len("context-1m")], "context-1m") {
					beta = flag
					return true
				}
			}
			return false
		}) {
			break
		}
	}
	return beta
}

// anthropicBetaKeys are the headers, under their canonical keys, whose
// flags reach Anthropic as anthropic-beta: its own, LiteLLM's x-pass-
// form (forwarded with the prefix stripped, whatever the proxy's
// settings) and Portkey's.
var anthropicBetaKeys = [...]string{"Anthropic-Beta", "X-Pass-Anthropic-Beta", "X-Portkey-Anthropic-Beta"}

// portkeyOverrides reports whether h carries a Portkey config
// (x-portkey-config) under which Portkey's gateway may run the request
// otherwise than its body says: one that is not a JSON object (a config's
// id, "pc-…", held on Portkey's side), or one that sets override_params
// (overrideParams, as Portkey also reads it; any case) at any depth, which
// Portkey merges into the body (a model, max_tokens, n), in the config or
// in a target of a fallback or a load balance. The header is read under
// its canonical key, as Header.Set and the SDKs' header options write it
// (and as a server reads any spelling); as for vertexPriority, ranging
// over every request's headers for another spelling would cost a real
// SDK's request (a dozen headers) about as much as pricing its body.
func portkeyOverrides(h http.Header) bool {
	for _, v := range h["X-Portkey-Config"] {
		if v = textproto.TrimString(v); v == "" {
			continue
		}
		var cfg map[string]any
		if json.Unmarshal([]byte(v), &cfg) != nil || overridesParams(cfg) {
			return true
		}
	}
	return false
}

// overridesParams reports whether v, a decoded JSON value, holds a member
// override_params or overrideParams, or deployment_id or deploymentId (the
// Azure OpenAI deployment that runs the request, whatever model its body
// names), in any case, at any depth.
func overridesParams(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if strings.EqualFold(k, "override_params") || strings.EqualFold(k, "overrideParams") ||
				strings.EqualFold(k, "deployment_id") || strings.EqualFold(k, "deploymentId") || overridesParams(e) {
				return true
			}
		}
	case []any:
		return slices.ContainsFunc(v, overridesParams)
	}
	return false
}

// portkeyDeployment reports whether h asks Portkey's gateway to run the
// request on an Azure OpenAI deployment it names in a header
// (x-portkey-azure-deployment-id), which Portkey reads when the provider
// it names (x-portkey-provider) is azure-openai: the deployment runs the
// request whatever model its body names. The provider is looked up first,
// a header that Portkey requests alone carry; both are read under their
// canonical keys, as portkeyOverrides reads its header.
func portkeyDeployment(h http.Header) bool {
	for _, v := range h["X-Portkey-Provider"] {
		if strings.EqualFold(textproto.TrimString(v), "azure-openai") {
			return slices.ContainsFunc(h["X-Portkey-Azure-Deployment-Id"], notBlank)
		}
	}
	return false
}

// heliconeOverrides reports whether h carries a Helicone-Fallbacks header
// under which Helicone's gateway may run the request otherwise than its
// body says: one that is not a JSON array of objects, or one in which a
// fallback sets bodyKeyOverride (in any case), whose members Helicone
// writes into the body (a model, max_tokens, n) for that fallback and
// those after it. The header is read under its canonical key.
func heliconeOverrides(h http.Header) bool {
	for _, v := range h["Helicone-Fallbacks"] {
		if v = textproto.TrimString(v); v == "" {
			continue
		}
		var fallbacks []map[string]any
		if json.Unmarshal([]byte(v), &fallbacks) != nil {
			return true
		}
		for _, f := range fallbacks {
			for k, e := range f {
				if strings.EqualFold(k, "bodyKeyOverride") && e != nil {
					return true
				}
			}
		}
	}
	return false
}

// anyHeaderValue reports whether ok holds for a value of h under key, a
// canonical key, or under another spelling of it: net/http writes a key
// set in the map directly as it is ("anthropic-beta"), and servers read
// header names in any case.
func anyHeaderValue(h http.Header, key string, ok func(string) bool) bool {
	for _, v := range h[key] { // canonical: Values would canonicalize it again
		if ok(v) {
			return true
		}
	}
	for k, vs := range h {
		if k == key || len(k) != len(key) || !strings.EqualFold(k, key) {
			continue
		}
		for _, v := range vs {
			if ok(v) {
				return true
			}
		}
	}
	return false
}

// vertexPriorityHeader asks Vertex AI to run a request at Priority PayGo,
// billed above standard prices; the body does not say so, nor does the
// answer in OpenAI's format. LiteLLM forwards it.
const vertexPriorityHeader = "X-Vertex-AI-LLM-Shared-Request-Type"

// vertexPriorityKey is vertexPriorityHeader as http.Header keys it
// (http.CanonicalHeaderKey), a constant for absentOfFew's switch.
const vertexPriorityKey = "X-Vertex-Ai-Llm-Shared-Request-Type"

// vertexPriority reports whether h asks Vertex AI for Priority PayGo: the
// request is then priced as one whose service_tier is "priority". The
// header is read under its canonical key, as Header.Set writes it: a key
// written into the map in another case, which net/http sends as written,
// is not read (ranging over every request's headers for it would cost
// several times the lookup, for a header the callers who send it set with
// Set).
func vertexPriority(h http.Header) bool {
	return slices.ContainsFunc(h[vertexPriorityKey], func(v string) bool { return strings.EqualFold(strings.TrimSpace(v), "priority") })
}
