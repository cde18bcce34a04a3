package proxy

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/otelguard"
	"go.opentelemetry.io/otel/attribute"
)

// ServeHTTP answers /healthz, /readyz and, without tenants, /metrics, and
// forwards every other request to the upstream whose prefix matches its
// path. With tenants, /metrics is not found here: it names every tenant
// and upstream and what each budget has left, which one tenant must not
// read of the others; serve Metrics on a listener of the operator's.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The body is read within BodyReadTimeout, also when the request is
	// answered without reading it: net/http then reads what is left of it
	// (up to 256 KiB) before it writes the answer. forward lifts the
	// deadline once the body is read, so that it never cuts a stream.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(p.cfg.BodyReadTimeout))
	// net/http keeps a write deadline from the connection's last request:
	// statusWriter sets one for each write.
	if rc.SetWriteDeadline(time.Time{}) != nil {
		rc = nil // a writer without deadlines (httptest's)
	}
	closing := len(r.TransferEncoding) > 0 || !r.ProtoAtLeast(1, 1)
	if closing {
		// net/http drops a Content-Length sent with Transfer-Encoding
		// before the handler sees it; RFC 9112 (6.1) has the server close
		// the connection after such a request, so that nothing a front
		// proxy that framed it by its Content-Length sent after it is
		// read as a request. The SDKs send their JSON with a length.
		// From an HTTP/1.0 request net/http drops the Transfer-Encoding
		// itself and reads the body by its Content-Length, if any: RFC
		// 9112 has such a message's framing taken as faulty, and its
		// connection closed too, so that what a front proxy sent as its
		// chunks is not read as a next request. The handler cannot tell
		// whether one came, so every HTTP/1.0 connection closes.
		// statusWriter sets it again on the answer: ReverseProxy clears
		// the headers after an upstream's 1xx.
		w.Header().Set("Connection", "close")
	}
	switch r.URL.Path {
	case "/healthz":
		io.WriteString(w, "ok\n")
		return
	case "/readyz":
		p.ready(w, r)
		return
	case "/metrics":
		if p.keyed {
			http.NotFound(w, r)
			return
		}
		p.scrape.ServeHTTP(w, r)
		return
	}
	rec := &record{start: time.Now(), method: r.Method, path: r.URL.Path}
	sw := &statusWriter{ResponseWriter: w, redact: p.redact, keyed: p.keyed, closing: closing, http10: !r.ProtoAtLeast(1, 1), rc: rc, stall: p.cfg.WriteStallTimeout}
	defer p.logRequest(r.Context(), rec, sw)
	p.forward(sw, r, rec)
	sw.finish()
}

// Metrics serves the proxy's metrics in Prometheus's text format, for a
// listener only the operator's scraper reaches.
func (p *Proxy) Metrics() http.Handler { return p.scrape }

// ready answers 200 while the proxy takes requests: not shutting down, and
// Redis answering when budgets live there. Limiters alone fail open (each
// proxy paces its share of the rate) and serve on without Redis: a fleet
// taken out of service for it would be down for an outage it rides out.
func (p *Proxy) ready(w http.ResponseWriter, r *http.Request) {
	if p.draining.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	budgeted := p.budget != nil || slices.ContainsFunc(p.tenants, func(t *tenant) bool { return t.budget != nil })
	if p.cfg.Redis != nil && budgeted {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if err := p.cfg.Redis.Ping(ctx).Err(); err != nil {
			// Whoever reaches the proxy reaches /readyz: the error, which
			// names Redis's address, is for the operator's log.
			p.log.WarnContext(ctx, "readyz: redis does not answer", "error", err.Error())
			http.Error(w, "redis does not answer", http.StatusServiceUnavailable)
			return
		}
	}
	io.WriteString(w, "ready\n")
}

func (p *Proxy) forward(w *statusWriter, r *http.Request, rec *record) {
	// Only origin-form requests: an absolute URL (a client taking this for
	// a forward proxy) or CONNECT must not send its key to our upstream.
	if r.Method == http.MethodConnect || !strings.HasPrefix(r.RequestURI, "/") {
		rec.refusal = "not_a_forward_proxy"
		writeError(w, OpenAI, badRequest("this is not a forward proxy: send requests to its own URL, such as http://HOST/v1/chat/completions"))
		return
	}
	if p.loopsBack(r.Header) {
		rec.refusal = "proxy_loop"
		writeError(w, OpenAI, apiError{status: http.StatusLoopDetected, typ: "server_error", anthropicType: "api_error", code: "proxy_loop", header: noRetry,
			msg: "this request came back to the proxy that sent it on (its Via header names this proxy): an upstream URL leads back here; point it at the provider"})
		return
	}
	if up := r.Header.Get("Upgrade"); up != "" {
		if !strings.EqualFold(up, "h2c") {
			// A tunnel (OpenAI's Realtime API is a WebSocket) carries no
			// body to check the model in or price, and is never metered.
			rec.refusal = "upgrade"
			writeError(w, OpenAI, badRequest("this proxy does not tunnel protocol upgrades such as WebSocket: their traffic could be neither checked nor metered"))
			return
		}
		r.Header.Del("Upgrade") // curl --http2 asks for h2c: the answer comes in HTTP/1.1
		r.Header.Del("Http2-Settings")
	}
	if !cleanPath(r.URL.Path) {
		rec.refusal = "unclean_path"
		writeError(w, OpenAI, badRequest("the path must not hold empty, . or .. segments, backslashes, control characters, or an escaped ? or #"))
		return
	}
	if foldedEndpoint(r.URL.Path) {
		rec.refusal = "path_case"
		writeError(w, OpenAI, badRequest("paths are case-sensitive: spell the endpoint as the API documents it, such as /v1/chat/completions"))
		return
	}
	rt := p.route(r.URL.Path)
	if rt == nil {
		rec.refusal = "no_upstream"
		writeError(w, OpenAI, apiError{status: http.StatusNotFound, typ: "invalid_request_error", anthropicType: "not_found_error",
			code: "unknown_path", msg: fmt.Sprintf("no upstream serves %s", r.URL.Path)})
		return
	}
	rec.upstream = rt.Prefix
	if p.keyed && queryHoldsKey(r.URL.RawQuery) {
		// The real key replaces the keys a client sends in headers; one in
		// the query string (Gemini's ?key=, Azure's ?api-key=) would reach
		// the upstream beside it, a virtual key landing in its logs.
		rec.refusal = "key_in_query"
		writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", anthropicType: "invalid_request_error",
			code: "key_in_query", msg: "this proxy takes a virtual key in a header (Authorization: Bearer, x-api-key or api-key), never in the query string, " +
				"which it sends on to the upstream: send the key in a header and leave it out of the URL"})
		return
	}
	t := p.tenantOf(r)
	if t == nil {
		rec.refusal = "unknown_key"
		writeError(w, rt.API, apiError{status: http.StatusUnauthorized, typ: "invalid_request_error", anthropicType: "authentication_error",
			code: "invalid_api_key", msg: "unknown or missing API key: use the virtual key this proxy gave you"})
		return
	}
	rec.tenant, rec.charger = t.Name, t.charger
	if p.keyed && hasSegment(r.URL.Path, "realtime") {
		// OpenAI's Realtime API runs on a WebSocket, which this proxy does
		// not tunnel, with a key minted by POST .../realtime/sessions (or
		// client_secrets) that spends on the real account outside the
		// proxy: a tenant may have neither.
		rec.refusal = "realtime"
		writeError(w, rt.API, badRequest("this proxy does not serve the Realtime API to virtual keys: its sessions and their keys could be neither checked nor metered"))
		return
	}
	if t.charger != "" && !readOnly(r.Method) && !metered(r) && !httpguard.FreeEndpoint(r) {
		// A job, a batch, an image or a run bills on the provider's side
		// by what its answer does not report, which no budget can price.
		rec.refusal = "endpoint_not_metered"
		writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", anthropicType: "invalid_request_error",
			code: "endpoint_not_metered", msg: fmt.Sprintf("a budget applies to this key, and it cannot meter %s %s: its answer does not report the usage "+
				"a budget charges, so only chat completions, completions, responses, messages and embeddings are served "+
				"(and the free token counts and moderations)", r.Method, r.URL.EscapedPath())})
		return
	}
	body, err := p.readBody(w, r)
	if err != nil {
		rec.refusal = "body"
		writeError(w, rt.API, bodyError(err))
		return
	}
	if len(body) > 0 && !httpguard.FreeEndpoint(r) && (len(t.Models) > 0 || t.charger != "") && !isJSONType(r.Header.Values("Content-Type")) {
		// The model check and the budget read the body as JSON; a body that
		// is also a form (x-www-form-urlencoded) could name another model to
		// an upstream that reads forms, or that takes the last of two
		// Content-Types.
		rec.refusal = "json_required"
		writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", anthropicType: "invalid_request_error",
			code: "json_required", msg: "this key's requests are checked as JSON: send them with Content-Type: application/json"})
		return
	}
	facts, err := readRequest(body)
	model := facts.model
	if err != nil {
		rec.refusal = "ambiguous_model"
		writeError(w, rt.API, badRequest(err.Error()))
		return
	}
	pm := readPathModel(rt.URL.Path + rest(r.URL.Path, rt.Prefix))
	checked := len(t.Models) > 0 || t.charger != ""
	if checked && !readOnly(r.Method) && pm != readPathModel(rt.URL.EscapedPath()+rest(r.URL.EscapedPath(), rt.Prefix)) {
		// The Budget reads a deployment in the path as sent, the upstream
		// in its decoded form: escapes would price one and run another.
		// A read runs no model, and an unchecked tenant's path model is
		// not read: a client that escapes a Gemini method's colon (%3A)
		// is not refused for what nothing reads.
		rec.refusal = "path_model_escaped"
		writeError(w, rt.API, badRequest("spell the model in the path without escapes (%XX), as /openai/deployments/NAME/chat/completions"))
		return
	}
	// LiteLLM runs the model a query string names (?model=), whatever the
	// body's; a deployment in the path comes first, and a read runs no
	// model.
	var qm string
	if pm.name == "" && !readOnly(r.Method) {
		if qm, err = httpguard.QueryModel(r.URL.RawQuery); err != nil {
			rec.refusal = "ambiguous_model"
			writeError(w, rt.API, badRequest(strings.TrimPrefix(err.Error(), "httpguard: ")))
			return
		}
	}
	if model == "" && len(body) > 0 {
		// A form upload (an audio transcription) names its model in a
		// field, by which the Breaker keys its circuit: for the log, and
		// for when that circuit reopens.
		rec.model = formModel(body, r.Header.Get("Content-Type"))
	}
	// A deployment or engine in the path runs the request, whatever the
	// body's model: its circuit is the deployment's.
	rec.runs = cmp.Or(pm.name, qm, model, rec.model)
	if readOnly(r.Method) {
		pm = pathModel{} // a read runs no model
	}
	if msg := pm.unchecked(model, len(t.Models) > 0, t.charger != ""); msg != "" {
		rec.refusal = "path_model"
		writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "path_model_not_checked", msg: msg})
		return
	}
	rec.model = cmp.Or(model, rec.model) // the body's
	if model == "" {
		model = cmp.Or(pm.name, qm) // the model that runs it
	}
	if model == "" && len(body) > 0 && len(t.Models) > 0 && !httpguard.FreeEndpoint(r) {
		// A body whose model cannot be read (not JSON, or JSON some servers
		// extend, such as NaN; a form upload) could name any model: a
		// tenant limited to some must name one the proxy can read.
		rec.refusal = "model_required"
		writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", anthropicType: "invalid_request_error",
			code: "model_required", param: "model", msg: `this key may use only some models: send a JSON body naming one in "model"`})
		return
	}
	if model != "" && len(t.Models) > 0 && !slices.Contains(t.Models, model) {
		rec.refusal = "model_not_allowed"
		writeError(w, rt.API, apiError{status: http.StatusForbidden, typ: "invalid_request_error", anthropicType: "permission_error",
			code: "model_not_allowed", param: "model", msg: fmt.Sprintf("model %q is not allowed for this key", model)})
		return
	}
	if pm.name != "" && pm.name != model && len(t.Models) > 0 && !slices.Contains(t.Models, pm.name) {
		rec.refusal = "model_not_allowed"
		writeError(w, rt.API, apiError{status: http.StatusForbidden, typ: "invalid_request_error", anthropicType: "permission_error",
			code: "model_not_allowed", msg: fmt.Sprintf("model %q, which the path names and which runs the request whatever its body names, is not allowed for this key", pm.name)})
		return
	}
	if qm != "" && qm != model && len(t.Models) > 0 && !slices.Contains(t.Models, qm) {
		rec.refusal = "model_not_allowed"
		writeError(w, rt.API, apiError{status: http.StatusForbidden, typ: "invalid_request_error", anthropicType: "permission_error",
			code: "model_not_allowed", msg: fmt.Sprintf("model %q, which the query string names and which a relay (LiteLLM) runs whatever the body names, is not allowed for this key", qm)})
		return
	}
	for _, m := range facts.fallbacks {
		if len(t.Models) > 0 && !slices.Contains(t.Models, m) {
			rec.refusal = "model_not_allowed"
			writeError(w, rt.API, apiError{status: http.StatusForbidden, typ: "invalid_request_error", anthropicType: "permission_error",
				code: "model_not_allowed", param: "models", msg: fmt.Sprintf("model %q, named to serve the request if %q cannot, is not allowed for this key", m, model)})
			return
		}
	}
	if msg := toolNotAllowed(&facts, t.Models); msg != "" {
		rec.refusal = "model_not_allowed"
		writeError(w, rt.API, apiError{status: http.StatusForbidden, typ: "invalid_request_error", anthropicType: "permission_error",
			code: "model_not_allowed", param: "tools", msg: msg})
		return
	}
	if key := facts.unreadFallbacks; key != "" && (len(t.Models) > 0 || t.charger != "") {
		// A relay runs them when the model fails (LiteLLM on any error,
		// or a prompt past its context window): no check would see them.
		rec.refusal = "fallbacks_not_checked"
		writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "fallbacks_not_checked", param: key,
			msg: fmt.Sprintf(`this key's requests are checked by the models they may run, and %q names models to run instead in a form this proxy does not read (by model group, {"<model>": ["<fallback>"]}): name them as a list of model names in "fallbacks"`, key)})
		return
	}
	if key := facts.extraBody; key != "" && (len(t.Models) > 0 || t.charger != "") {
		// LiteLLM merges it into what it sends, over the fields checked:
		// {"extra_body": {"model": …}} runs that model.
		rec.refusal = "extra_body"
		writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "extra_body_not_checked", param: key,
			msg: fmt.Sprintf(`this key's requests are checked by the model they run and what they spend, and a relay merges %q over the fields checked: send its fields at the top level of the body`, key)})
		return
	}
	if key := facts.userConfig; key != "" && (len(t.Models) > 0 || t.charger != "") {
		// LiteLLM runs the request on a router the body defines: its
		// model_list maps the model named to any other, run with the
		// relay's credentials, and its num_retries and fallbacks try
		// again, each try billed.
		rec.refusal = "user_config"
		writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "user_config_not_checked", param: key,
			msg: fmt.Sprintf(`this key's requests are checked by the model they run and what they spend, and a relay runs a request holding %q on the models, retries and fallbacks it defines, which no check reads: leave it out`, key)})
		return
	}
	destination := cmp.Or(facts.destination, facts.userConfig)
	// Without tenants each client's own key goes, but where the upstream's
	// headers hold the operator's credential (a relay's key) it goes too.
	guarded := p.keyed || rt.credentialed
	if ct := r.Header.Get("Content-Type"); destination == "" && guarded && len(body) > 0 && isForm(ct) {
		destination = formDestination(body, ct)
	}
	if destination == "" && guarded && facts.invalid {
		// Python's json module, to which LiteLLM falls back when orjson
		// refuses a body, reads NaN and ±Infinity as numbers: to it such
		// a body is JSON, and its api_base a destination.
		if destination, err = pythonDestination(body); err != nil {
			rec.refusal = "ambiguous_model"
			writeError(w, rt.API, badRequest(err.Error()))
			return
		}
	}
	if key := destination; key != "" && guarded {
		// A relay (LiteLLM, where client-side credentials are allowed, and
		// with any api_key beside them in its releases before it refused
		// them) sends the request to the api_base or base_url a body names,
		// or a user_config's model names, with the credentials it holds:
		// the real key's account, at a host of the tenant's choosing, as
		// the x-portkey-custom-host that dropKeys drops would.
		rec.refusal = "destination"
		writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "destination_not_allowed", param: key,
			msg: fmt.Sprintf(`this proxy decides where its requests go, and a relay sends a request naming %q there with the proxy's credentials: leave it out`, key)})
		return
	}
	if key := facts.promptID; key != "" && (len(t.Models) > 0 || t.charger != "") {
		// LiteLLM's prompt management runs the request on the prompt it
		// stores under that id: its messages are added, billed as input
		// the body does not hold, and its model and parameters (max_tokens)
		// replace the body's.
		rec.refusal = "prompt_id"
		writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "prompt_id_not_checked", param: key,
			msg: fmt.Sprintf(`this key's requests are checked by the model they run and what they spend, and a relay runs a request naming %q on a prompt it stores, whose messages, model and max_tokens no check reads: send the prompt's messages in the body instead`, key)})
		return
	}
	if t.charger != "" {
		// Without tenants no key is dropped (see dropKeys), but a budget
		// applies: the relay's own retries must still not run.
		for _, h := range relayRetryHeaders {
			r.Header.Del(h)
		}
		if !p.keyed { // with tenants, dropKeys dropped them as gateway headers
			for k := range r.Header {
				if passedOn(k) { // anthropic-beta: context-1m-… bills above what a budget prices
					delete(r.Header, k)
				}
			}
		}
	}
	if key := facts.relayRetries; key != "" && t.charger != "" {
		// LiteLLM sends each try to the provider, which bills it, and
		// answers an error once it gives up: a budget releases an error
		// status, so the tries would be charged nothing.
		rec.refusal = "relay_retries"
		writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "relay_retries_not_checked", param: key,
			msg: fmt.Sprintf(`this key's requests are checked by what they spend, and a relay reads %q to send the request again on its own or stop waiting for it, billed for each try while it answers an error: leave it out (the proxy retries, and charges each try)`, key)})
		return
	}
	// The body's model, and the deployment in the path or the model in
	// the query string, which run the request whatever the body names:
	// the budgets price the dearer.
	for _, m := range []string{model, pm.name, qm} {
		if m != "" && t.charger != "" && !p.priced(m) && !httpguard.FreeEndpoint(r) {
			// A free endpoint may pass the budgets unpriced: the library judges a
			// moderation by its model, and refuses one of an unpriced billed model.
			rec.refusal = "model_not_priced"
			writeError(w, rt.API, unpriced(m))
			return
		}
	}
	if model != "" && t.charger != "" && facts.background {
		// A background response is answered at once, queued and without
		// usage; the model then runs and bills on the provider's side,
		// where no budget sees what it spends.
		rec.refusal = "background"
		writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "background_not_metered", param: "background",
			msg: `a budget applies to this key, and a background run ("background": true) spends on the provider's side, where no budget sees it: send the request without it`})
		return
	}
	for _, m := range []string{model, pm.name, qm} { // as their prices, above
		if m != "" && t.charger != "" && facts.fast && !p.pricedAt(m, httpguard.FastTier) && !httpguard.FreeEndpoint(r) {
			// Anthropic's fast mode bills the model at a multiple of its
			// standard prices (6 times on Opus 4.6), which only a
			// "model@fast" price holds.
			rec.refusal = "speed"
			writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "speed_not_metered", param: "speed",
				msg: fmt.Sprintf(`a budget applies to this key, and a "speed" other than "standard" (fast mode) bills a multiple of the model's prices, which this proxy's prices do not hold (no %q entry): send the request without it`, m+httpguard.FastTier)})
			return
		}
	}
	if field := facts.storedContext(isResponses(r)); field != "" && t.charger != "" && !httpguard.FreeEndpoint(r) {
		// The Responses API runs such a request on context stored on the
		// provider's side, billed as its input: its bytes bound nothing, so
		// concurrent requests could each pass the budget by a stored
		// conversation's tokens.
		rec.refusal = "stored_context"
		writeError(w, rt.API, apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "stored_context_not_metered", param: field,
			msg: fmt.Sprintf(`a budget applies to this key, and %q %s, billed as input besides the request's own but out of this proxy's sight, so no budget can bound it before it is sent: %s`,
				field, storedWhat[field], storedInstead[field])})
		return
	}
	ctx := context.WithValue(r.Context(), recordKey{}, rec)
	if p.keyed {
		ctx = otelguard.ContextWithAttributes(ctx, attribute.String("tenant", t.Name))
	}
	out := r.WithContext(ctx)
	// The body goes whole with its length, without the client's trailers,
	// which could carry its key.
	out.TransferEncoding, out.Trailer = nil, nil
	if body != nil {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		out.ContentLength = int64(len(body))
	} else {
		out.Body, out.ContentLength = http.NoBody, 0
	}
	// The body is read: no deadline on the connection from here, so that
	// net/http's read watching for the client to go away never times out.
	http.NewResponseController(w).SetReadDeadline(time.Time{})
	rec.stackStart = time.Now()
	t.proxies[rt.index].ServeHTTP(w, out)
}

// route returns the upstream with the longest prefix matching path.
func (p *Proxy) route(path string) *route {
	for _, r := range p.routes {
		if matches(path, r.Prefix) {
			return r
		}
	}
	return nil
}

// A pathModel is the model a path sent upstream names, which the server
// runs whatever the body names: an Azure deployment
// (openai/deployments/{name}/..., the words in any case, as the Budget
// reads it), an engine (engines/{name}/..., OpenAI's legacy API), or a
// model as Gemini's API names one (models/{name}:{method}, and Vertex
// AI's .../publishers/google/models/{name}:{method}), which relays serve
// beside OpenAI's. LiteLLM serves the first two with a name that may span
// segments.
type pathModel struct {
	name   string
	engine bool   // an engine, which no Budget prices
	gemini bool   // a Gemini model, which no Budget prices
	tail   string // the path after the name: the endpoint (a Gemini model's method)
}

func readPathModel(path string) pathModel {
	segs := strings.Split(path, "/")
	for i := 1; i+1 < len(segs); i++ {
		deployment := strings.EqualFold(segs[i-1], "openai") && strings.EqualFold(segs[i], "deployments")
		if deployment || strings.EqualFold(segs[i], "engines") {
			return pathModel{name: segs[i+1], engine: !deployment, tail: strings.Join(segs[i+2:], "/")}
		}
		if strings.EqualFold(segs[i], "models") || strings.EqualFold(segs[i], "tunedModels") {
			// The name runs to the method's colon, which a relay routing
			// models/*path may find segments later.
			if name, method, ok := strings.Cut(strings.Join(segs[i+1:], "/"), ":"); ok && geminiMethod(method) {
				return pathModel{name: name, gemini: true, tail: method}
			}
		}
	}
	return pathModel{}
}

// geminiMethod reports whether s, what follows the colon after a model in
// a path, begins with a method as Gemini's API names them
// (generateContent, countTokens), letters up to a slash or the end: a
// fine-tuned model's name (OpenAI's ft:gpt-4o-mini:org::id, Mistral's)
// holds colons too.
func geminiMethod(s string) bool {
	method, _, _ := strings.Cut(s, "/")
	return method != "" && !strings.ContainsFunc(method, func(c rune) bool { return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') })
}

// pathModelTails are the endpoints a model named in the path serves.
var pathModelTails = []string{"chat/completions", "completions", "embeddings", "audio/speech", "audio/transcriptions",
	"audio/translations", "images/generations", "images/edits"}

// unchecked says why a request whose body names model names a model in
// its path that a model list (models) or a budget (budget) could not
// check: one spanning segments (read as its first), or an engine other
// than the body's model, which a budget would not price; "" when none.
func (pm pathModel) unchecked(model string, models, budget bool) string {
	switch {
	case pm.name == "" || !models && !budget:
	case pm.gemini && budget && pm.name != model:
		return fmt.Sprintf("a budget applies to this key and prices the body's model (%q), while the model the path names (%q) runs the request: name the same model in both", model, pm.name)
	case pm.gemini:
	case !slices.Contains(pathModelTails, pm.tail):
		return fmt.Sprintf("this key's requests are checked by the model they run, and this path names one as %q followed by %q, not an endpoint: name the model as one segment, as /openai/deployments/NAME/chat/completions", pm.name, pm.tail)
	case pm.engine && budget && pm.name != model:
		return fmt.Sprintf("a budget applies to this key and prices the body's model (%q), while the engine the path names (%q) runs the request: name the same model in both, or send the request to /chat/completions", model, pm.name)
	}
	return ""
}

// tenantOf returns the tenant whose key the request carries, or nil. Every
// tenant's hash is compared, in constant time, whichever matches.
func (p *Proxy) tenantOf(r *http.Request) *tenant {
	if !p.keyed {
		return p.tenants[0]
	}
	key := clientKey(r.Header)
	if key == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(key))
	var found *tenant
	for _, t := range p.tenants {
		if subtle.ConstantTimeCompare(sum[:], t.KeySHA256[:]) == 1 {
			found = t
		}
	}
	return found
}

// queryKeys are the query parameters in which APIs take a key: Google's
// key (Gemini) and its system parameter $key, Azure's api-key, OAuth's
// access_token (and Google's oauth_token), and their spellings.
var queryKeys = []string{"key", "$key", "api-key", "api_key", "apikey", "x-api-key", "x-goog-api-key", "access_token", "oauth_token", "token",
	"auth", "authorization", "subscription-key"}

// queryHoldsKey reports whether the raw query holds a parameter named as
// queryKeys are, in any case, escaped or not, also after a ; (where some
// servers split a query too).
func queryHoldsKey(raw string) bool {
	for raw != "" {
		var part string
		if i := strings.IndexAny(raw, "&;"); i >= 0 {
			part, raw = raw[:i], raw[i+1:]
		} else {
			part, raw = raw, ""
		}
		name, _, _ := strings.Cut(part, "=")
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
		if slices.ContainsFunc(queryKeys, func(k string) bool { return strings.EqualFold(k, strings.TrimSpace(name)) }) {
			return true
		}
	}
	return false
}

// clientKey is the key a client sends: OpenAI SDKs as a bearer token,
// Anthropic's as x-api-key, Azure-style clients as api-key.
func clientKey(h http.Header) string {
	if a := h.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	if k := h.Get("X-Api-Key"); k != "" {
		return k
	}
	return h.Get("Api-Key")
}

// endpointWords are the path segments the stack and the handler know
// endpoints by, in the case the APIs spell them: the Budget asks only
// /completions streams for their usage, the Breaker checks chat streams
// by their path, the handler refuses Realtime and frees count_tokens and
// moderations by theirs.
var endpointWords = []string{"completions", "messages", "responses", "realtime", "count_tokens", "moderations"}

// foldedEndpoint reports whether path has a segment that is one of
// endpointWords in another case: an upstream whose routing ignores case
// (Express's and Fiber's defaults) would run the endpoint unseen.
func foldedEndpoint(path string) bool {
	for seg := range strings.SplitSeq(path, "/") {
		for _, w := range endpointWords {
			if len(seg) == len(w) && seg != w && strings.EqualFold(seg, w) {
				return true
			}
		}
	}
	return false
}

// readOnly reports the methods that start nothing on the provider's side.
func readOnly(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

// metered reports the endpoints whose answer reports the usage a budget
// charges: chat completions and legacy completions, responses,
// Anthropic's messages, and embeddings. As free's, the path is taken as
// sent.
func metered(r *http.Request) bool {
	p := r.URL.EscapedPath()
	for _, end := range []string{"/completions", "/responses", "/messages", "/embeddings"} {
		if strings.HasSuffix(p, end) {
			return true
		}
	}
	return false
}

// isResponses reports whether r goes to OpenAI's Responses API, by its
// path as sent, as metered reads it.
func isResponses(r *http.Request) bool {
	return strings.HasSuffix(r.URL.EscapedPath(), "/responses")
}

// What the fields storedContext names bring into a request, and what to
// send instead.
var (
	storedWhat = map[string]string{
		"previous_response_id": "continues a response stored on the provider's side: the whole conversation before it",
		"conversation":         "continues a conversation stored on the provider's side: all of its items",
		"prompt":               "uses a prompt template stored on the provider's side: its text and the tools it declares",
		"input":                "references an item stored on the provider's side (an item_reference): its content",
		"cached_content":       "reads a context cache stored on Gemini's side (LiteLLM sends it as cachedContent): all of its tokens",
		"thread":               "continues an Anthropic message thread: the conversation, system prompt and tools it holds",
	}
	storedInstead = map[string]string{
		"previous_response_id": `send the conversation's items in "input" instead`,
		"conversation":         `send the conversation's items in "input" instead`,
		"prompt":               `send the prompt's text in "instructions" or "input" instead`,
		"input":                `send the item itself in "input" instead`,
		"cached_content":       `send the cached content in "messages" instead`,
		"thread":               `send the conversation in "messages" instead, without "thread" or with {"type": "create"}`,
	}
)

// hasSegment reports whether path has a segment that is seg.
func hasSegment(path, seg string) bool {
	for part := range strings.SplitSeq(path, "/") {
		if part == seg {
			return true
		}
	}
	return false
}

// isJSONType reports whether a request's Content-Type is JSON, or absent.
// Two are not: servers differ on which one they read.
func isJSONType(cts []string) bool {
	switch {
	case len(cts) > 1:
		return false
	case len(cts) == 0 || cts[0] == "":
		return true
	}
	mt, _, err := mime.ParseMediaType(cts[0])
	return err == nil && (mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// dropKeys removes every header a client may carry a key in, those that
// choose which organization or project of the real key's account is
// billed, and those in which an AI gateway upstream (Portkey's, Helicone's)
// takes where to send the request with the key it carries, and with which
// provider or config: the proxy's key and config decide that, not its
// clients (x-portkey-custom-host or Helicone-Target-Url would send the
// real key to a host of the client's choosing).
func dropKeys(h http.Header) {
	for k := range h {
		if gatewayHeader(k) {
			delete(h, k)
		}
	}
	for _, k := range []string{"Authorization", "X-Api-Key", "Api-Key", "X-Goog-Api-Key", "Cookie", "Openai-Organization", "Openai-Project"} {
		h.Del(k)
	}
}

// dropGatewayRouting removes, from a request without tenants to an
// upstream whose headers hold the operator's credentials for an AI gateway
// (x-portkey-api-key, a virtual key, Helicone-Auth), Portkey's and
// Helicone's headers but those that only label the request for their logs
// (gatewayLabel). The others choose where the gateway sends the request
// with those credentials or the provider key they stand for
// (x-portkey-custom-host, a custom_host in x-portkey-config,
// x-portkey-azure-resource-name, Helicone-Target-Url,
// Helicone-OpenAI-Api-Base, ...), and the gateways add more: a client that
// does not hold them must not choose.
func dropGatewayRouting(h http.Header) {
	for k := range h {
		if (hasPrefixFold(k, "X-Portkey-") || hasPrefixFold(k, "Helicone-")) && !gatewayLabel(k) {
			delete(h, k)
		}
	}
}

// gatewayLabel reports whether the header named name only labels a request
// in a gateway's logs: Portkey's trace, spans and metadata, Helicone's
// properties, user and session.
func gatewayLabel(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "X-Portkey-Trace-Id", "X-Portkey-Span-Id", "X-Portkey-Parent-Span-Id", "X-Portkey-Span-Name", "X-Portkey-Metadata",
		"Helicone-User-Id", "Helicone-Session-Id", "Helicone-Session-Path", "Helicone-Session-Name":
		return true
	}
	return hasPrefixFold(name, "Helicone-Property-")
}

// relayRetryHeaders are the headers with which a relay retries a request
// on its own, or stops waiting for it (LiteLLM's, Cloudflare AI
// Gateway's, Portkey's timeout, Helicone's retries; Portkey's retries are
// in x-portkey-config, which a budget cannot read): each try is billed, and the relay may answer an error a
// budget does not charge. The proxy drops them from requests a budget
// applies to (and dropKeys every x-litellm-* and cf-aig-* header).
var relayRetryHeaders = [...]string{"X-Litellm-Num-Retries", "X-Litellm-Timeout", "X-Litellm-Stream-Timeout",
	"Cf-Aig-Max-Attempts", "Cf-Aig-Request-Timeout", "Cf-Aig-Retry-Delay", "Cf-Aig-Backoff",
	"X-Portkey-Request-Timeout", "Helicone-Retry-Enabled", "Helicone-Retry-Num", "Helicone-Retry-Factor",
	"Helicone-Retry-Min-Timeout", "Helicone-Retry-Max-Timeout"}

// gatewayHeader reports whether the header named name is one an AI
// gateway reads its routing, config, keys, retries or timeouts from:
// Portkey's, Helicone's, LiteLLM's (x-litellm-num-retries,
// x-litellm-timeout) and Cloudflare AI Gateway's (cf-aig-max-attempts,
// cf-aig-request-timeout). A gateway that retries on its own bills each
// try, and may answer an error a budget does not charge.
func gatewayHeader(name string) bool {
	return hasPrefixFold(name, "X-Portkey-") || hasPrefixFold(name, "Helicone-") || hasPrefixFold(name, "X-Litellm-") || hasPrefixFold(name, "Cf-Aig-") ||
		passedOn(name)
}

// passedOn reports whether the header named name is one LiteLLM sends on
// to the provider under the name after its x-pass- prefix, whatever its
// settings: x-pass-anthropic-beta as anthropic-beta, which a budget reads
// to price a request, x-pass-openai-organization as the organization
// billed, which dropKeys drops.
func passedOn(name string) bool { return hasPrefixFold(name, "X-Pass-") }

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// pricedAt reports whether the prices hold model's price at the tier
// whose key suffix is suffix, as a budget looks it up: the model's entry
// for the tier, or the fallback's for a model the prices do not list.
func (p *Proxy) pricedAt(model, suffix string) bool {
	if _, ok := p.cfg.Prices[model+suffix]; ok {
		return true
	}
	if _, listed := p.cfg.Prices[model]; listed {
		return false
	}
	_, ok := p.cfg.Prices[httpguard.FallbackModel+suffix]
	return ok
}

func (p *Proxy) priced(model string) bool {
	_, ok := p.cfg.Prices[model]
	if !ok {
		_, ok = p.cfg.Prices[httpguard.FallbackModel]
	}
	return ok
}

// maxBodyAhead bounds the room readBody makes for a body before its bytes
// come.
const maxBodyAhead = 64 << 10

// errBodyTooLarge reports a body over MaxRequestBytes.
var errBodyTooLarge = errors.New("request body too large")

// readBody reads the whole request body, within MaxRequestBytes (and
// BodyReadTimeout, the deadline ServeHTTP set): the stack prices it and
// may send it more than once. It returns nil for a request without a body.
func (p *Proxy) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > p.cfg.MaxRequestBytes {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d allowed", errBodyTooLarge, r.ContentLength, p.cfg.MaxRequestBytes)
	}
	var buf bytes.Buffer // within the read deadline ServeHTTP set
	if r.ContentLength > 0 {
		// Room to see EOF without growing, for the bodies most requests
		// send; a longer one grows as its bytes come: a Content-Length is
		// the client's word, and one declaring MaxRequestBytes and
		// sending nothing would hold them for BodyReadTimeout.
		buf.Grow(int(min(r.ContentLength, maxBodyAhead)) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, p.cfg.MaxRequestBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, fmt.Errorf("%w: more than the %d bytes allowed", errBodyTooLarge, p.cfg.MaxRequestBytes)
	case err != nil:
		return nil, fmt.Errorf("reading the request body: %w", err)
	case buf.Len() == 0:
		return nil, nil
	}
	return buf.Bytes(), nil
}

// formModel is the model field of body, a form sent with the Content-Type
// ct (multipart or urlencoded), or "": the first, unchecked, as the log
// and a circuit's reopening need it, never a check (the checks read JSON).
func formModel(body []byte, ct string) string {
	mt, params, err := mime.ParseMediaType(ct)
	switch {
	case err != nil:
	case mt == "application/x-www-form-urlencoded":
		q, _ := url.ParseQuery(string(body))
		return q.Get("model")
	case mt == "multipart/form-data" && params["boundary"] != "":
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for {
			part, err := mr.NextPart()
			if err != nil {
				return ""
			}
			if part.FormName() == "model" {
				b, _ := io.ReadAll(io.LimitReader(part, 256))
				return string(b)
			}
		}
	}
	return ""
}

// formDestination is the name (as written) of the first field of body, a
// form sent with the Content-Type ct (multipart or urlencoded), that
// names where a relay sends the request (see isDestination), or "". A
// relay reads a form's fields as a JSON body's members: LiteLLM's audio
// and image endpoints take them so.
func formDestination(body []byte, ct string) string {
	mt, params, err := mime.ParseMediaType(ct)
	boundaries := []string{params["boundary"]}
	if err != nil {
		// A Content-Type mime refuses (two boundaries) is read by
		// Starlette's parser (LiteLLM's) all the same, with its last
		// boundary: read the body with each.
		mt, boundaries = lenientFormType(ct)
	}
	boundaries = append(boundaries, emailParams(ct, "boundary")...)
	switch {
	case mt == "application/x-www-form-urlencoded":
		// A field ends at a ; too: python-multipart (Starlette's form
		// parser, and so LiteLLM's) splits there, where net/url drops the
		// whole pair.
		for pair := range strings.FieldsFuncSeq(string(body), func(c rune) bool { return c == '&' || c == ';' }) {
			name, value, _ := strings.Cut(pair, "=")
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
			if isDestination(name) && value != "" {
				return name
			}
		}
	case mt == "multipart/form-data":
		// Each boundary once, and the body's lines once whatever the
		// boundaries mime/multipart gives up on: a Content-Type naming
		// thousands of boundaries must not have a body read as many
		// times.
		gaveUp := false
		for i, boundary := range boundaries {
			if boundary == "" || slices.Contains(boundaries[:i], boundary) {
				continue
			}
			name, failed := partDestination(body, boundary)
			if name != "" {
				return name
			}
			gaveUp = gaveUp || failed
		}
		if gaveUp {
			// A body mime/multipart gives up on (a part with more than
			// its 10,000 headers) python-multipart, Starlette's parser,
			// may read to its end: every Content-Disposition line in it
			// counts.
			return lineDestination(body)
		}
	}
	return ""
}

// partDestination is formDestination of a multipart body delimited by
// boundary; gaveUp reports a body mime/multipart gave up on before its
// end.
func partDestination(body []byte, boundary string) (name string, gaveUp bool) {
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		part, err := mr.NextPart()
		switch {
		case err == io.EOF:
			return "", false
		case err != nil:
			return "", true
		}
		// Every Content-Disposition the part has: FormName reads the
		// first, Starlette's parser (LiteLLM's) keeps the last.
		for _, cd := range part.Header["Content-Disposition"] {
			if name := destinationParam(cd); name != "" {
				return name, false
			}
		}
	}
}

// lineDestination is the first destination (see isDestination) that a
// Content-Disposition line of body names, wherever in body the line is.
func lineDestination(body []byte) string {
	const header = "Content-Disposition:"
	for line := range bytes.Lines(body) {
		if len(line) > len(header) && hasPrefixFold(string(line[:len(header)]), header) {
			if name := destinationParam(strings.TrimSpace(string(line[len(header):]))); name != "" {
				return name
			}
		}
	}
	return ""
}

// lenientFormType reads ct, a Content-Type mime refuses, as a form's: its
// media type, lower-cased, and the first and the last boundary it gives,
// which a parser taking the first or the last of a repeated parameter
// reads (Starlette's, the last). Those between are no parser's: reading
// the body with each of thousands would cost seconds of CPU a request.
func lenientFormType(ct string) (mt string, boundaries []string) {
	mt, rest, _ := strings.Cut(ct, ";")
	for param := range strings.SplitSeq(rest, ";") {
		if k, v, _ := strings.Cut(param, "="); strings.EqualFold(strings.TrimSpace(k), "boundary") {
			if len(boundaries) == 2 {
				boundaries = boundaries[:1]
			}
			boundaries = append(boundaries, strings.Trim(strings.TrimSpace(v), `"`))
		}
	}
	return strings.ToLower(strings.TrimSpace(mt)), boundaries
}

// destinationParam is the name parameter of cd, a part's
// Content-Disposition, when it names a destination (see isDestination),
// or "": whatever its disposition type, as mime reads it and, leniently,
// each name= in it, quoted or not (mime refuses a value naming the part
// twice, which python-multipart reads).
func destinationParam(cd string) string {
	if _, params, err := mime.ParseMediaType(cd); err == nil && isDestination(params["name"]) {
		return params["name"]
	}
	for param := range strings.SplitSeq(cd, ";") {
		k, v, _ := strings.Cut(param, "=")
		if v = strings.Trim(strings.TrimSpace(v), `"`); strings.EqualFold(strings.TrimSpace(k), "name") && isDestination(v) {
			return v
		}
	}
	for _, name := range emailParams(cd, "name") {
		if isDestination(name) {
			return name
		}
	}
	return ""
}

// emailParams returns the values that the parameter key (lower case) of h,
// a header with parameters (a Content-Type, a Content-Disposition), takes
// in python-multipart from 0.0.7 to 0.0.29 (Starlette's parser, and so
// LiteLLM's), which reads them with Python's email package where mime
// reads them otherwise or not at all: a value in <>, and one in RFC 2231's
// extended syntax (key*=, key*0=, key*1*=), which overrides the plain
// key's, with any charset or none, its pieces joined in the order of their
// numbers. Where Python's versions part (a key* beside a key*0), each
// reading is returned.
func emailParams(h, key string) []string {
	type piece struct {
		whole bool   // key*=, numbered by none
		num   string // its decimal number, without leading zeros
		v     string
		enc   bool // percent-encoded (a key ending in *)
	}
	var vals []string
	var pieces []piece
	for _, param := range splitParams(h)[1:] {
		k, v, _ := strings.Cut(param, "=") // a bare key* counts, as encoded
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		switch { // email.utils.unquote
		case len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"':
			v = strings.ReplaceAll(strings.ReplaceAll(v[1:len(v)-1], `\\`, `\`), `\"`, `"`)
		case len(v) > 1 && v[0] == '<' && v[len(v)-1] == '>':
			v = v[1 : len(v)-1]
		}
		rest, named := strings.CutPrefix(k, key)
		num := strings.TrimSuffix(strings.TrimPrefix(rest, "*"), "*")
		switch {
		case !named:
		case rest == "":
			// Of a repeated parameter, Python's email package reads the
			// first (get_param), a parser that gathers them in a dict
			// the last: those between are no parser's (see
			// lenientFormType).
			if len(vals) == 2 {
				vals = vals[:1]
			}
			vals = append(vals, v)
		case rest == "*" || rest[0] == '*' && num != "" && strings.Trim(num, "0123456789") == "":
			pieces = append(pieces, piece{rest == "*", strings.TrimLeft(num, "0"), v, strings.HasSuffix(rest, "*")})
		}
	}
	// Python sorts the pieces as (number, value, encoded) tuples.
	slices.SortFunc(pieces, func(a, b piece) int {
		if a.whole != b.whole { // key*= first
			if a.whole {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(len(a.num), len(b.num)), cmp.Compare(a.num, b.num), cmp.Compare(a.v, b.v), boolCompare(a.enc, b.enc))
	})
	join := func(keep func(piece) bool) {
		var b strings.Builder
		extended := false
		for _, p := range pieces {
			if !keep(p) {
				continue
			}
			if u, err := url.PathUnescape(p.v); p.enc && err == nil {
				p.v = u // an escape Python leaves as it is leaves a %, which names no destination
			}
			b.WriteString(p.v)
			extended = extended || p.enc
		}
		s := b.String()
		if parts := strings.SplitN(s, "'", 3); extended && len(parts) == 3 {
			s = parts[2] // charset'language'value
		}
		vals = append(vals, s)
	}
	if len(pieces) > 0 {
		join(func(piece) bool { return true })
	}
	if slices.ContainsFunc(pieces, func(p piece) bool { return p.whole }) && slices.ContainsFunc(pieces, func(p piece) bool { return !p.whole }) {
		join(func(p piece) bool { return p.whole })
		join(func(p piece) bool { return !p.whole })
	}
	return vals
}

// boolCompare orders false before true, as Python does.
func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// splitParams splits h at each ; outside a quoted string, as Python's
// email package does: a " opens or closes one unless a \ is before it. One
// pass, whatever the ;s inside quotes (h may be a line of a request body).
func splitParams(h string) []string {
	var params []string
	quoted, start := false, 0
	for i := 0; i < len(h); i++ {
		switch {
		case h[i] == '"' && (i == 0 || h[i-1] != '\\'):
			quoted = !quoted
		case h[i] == ';' && !quoted:
			params, start = append(params, h[start:i]), i+1
		}
	}
	return append(params, h[start:])
}

// isForm reports whether ct, a Content-Type, may be a form's (multipart or
// urlencoded), without parsing it: most requests are JSON.
func isForm(ct string) bool {
	ct = strings.TrimSpace(ct)
	return hasPrefixFold(ct, "multipart/") || hasPrefixFold(ct, "application/x-www-form-urlencoded")
}

// isDestination reports whether a field named name, in any case, names
// where a relay sends a request with the credentials it holds: LiteLLM's
// api_base and base_url, and a user_config whose models may name one.
func isDestination(name string) bool {
	return strings.EqualFold(name, "api_base") || strings.EqualFold(name, "base_url") || strings.EqualFold(name, "user_config")
}

// errAmbiguousModel reports a body whose model servers would read differently.
var errAmbiguousModel = errors.New(`the body names "model" more than once, or in another case: name it once, as "model"`)

// requestFacts is what the proxy reads of a request body's top level.
type requestFacts struct {
	model string
	// fallbacks are the models a relay may serve the request with when
	// model cannot, at their own prices: OpenRouter's "models" and, on
	// its Anthropic-format endpoint, "fallbacks" ([{"model": …}]), the
	// keys in any case.
	fallbacks []string
	// toolModels are the models the request's tools name (a tool that
	// runs a model of its own: OpenAI's image_generation tool, "model":
	// "gpt-image-1"), the keys in any case; unnamedTool is the type of a
	// tool that runs a model it does not name, the provider's default.
	toolModels  []string
	unnamedTool string
	// unreadFallbacks is the key (as written) of fallback models named in
	// a form the proxy does not read: LiteLLM's by model group
	// ([{"deepseek-v3.2": ["gpt-4.1"]}], in "models" or "fallbacks", and
	// all of context_window_fallbacks and content_policy_fallbacks, any
	// case).
	unreadFallbacks string
	// extraBody is the key (as written) of a non-null "extra_body", any
	// case, which LiteLLM merges into what it sends, over the rest.
	extraBody string
	// userConfig is the key (as written) of a non-null "user_config", any
	// case: LiteLLM runs the request on a router it defines (client-side
	// credentials), whose model_list maps the model named to another.
	userConfig string
	// destination is the key (as written) of a non-null "api_base" or
	// "base_url", any case: LiteLLM sends the request there, with the
	// credentials it holds, where client-side credentials are allowed.
	destination string
	// promptID is the key (as written) of a non-null "prompt_id", any
	// case: LiteLLM runs the request on the prompt its prompt management
	// stores under that id, with the prompt's model and parameters.
	promptID string
	// relayRetries is the key (as written) of a non-null field with which
	// LiteLLM retries a request on its own or gives up waiting for it
	// (num_retries, max_retries, timeout, request_timeout,
	// stream_timeout, any case).
	relayRetries string
	// background is set by "background": true (OpenAI's Responses API), the
	// key in any case.
	background bool
	// fast is set by a "speed" that is neither "standard" nor null
	// (Anthropic's fast mode, "speed": "fast"), or by OpenRouter's
	// "service_tier": "fast", the keys in any case.
	fast bool
	// previousResponse and conversation are set by a non-null
	// "previous_response_id" and "conversation" (OpenAI's Responses API),
	// the keys in any case.
	previousResponse, conversation bool
	// prompt is the first byte of a non-null "prompt", the key in any
	// case: '{' for a stored prompt template (the Responses API), '"' or
	// '[' for a legacy completion's text; 0 when there is none.
	prompt byte
	// itemReference is set by an "input" array (the key in any case)
	// holding a reference to an item stored on the provider's side
	// (OpenAI's Responses API; see referencesItems).
	itemReference bool
	// cachedContent is set by a "cached_content" other than null and ""
	// (a Gemini context cache, which LiteLLM passes on as cachedContent),
	// the key in any case.
	cachedContent bool
	// thread is set by a "thread" other than null and {"type": "create"}
	// (an Anthropic message thread it continues), the key in any case.
	thread bool
	// invalid is set by a body that begins as a JSON object but is not
	// valid JSON, of which nothing above is read.
	invalid bool
}

// storedContext names the field that makes a request run on context
// stored on the provider's side, or returns "": a previous response, a
// conversation, a stored prompt template, which is an object in any
// request, and any prompt in one to the Responses API (responses), a
// stored input item, a Gemini context cache, or an Anthropic message
// thread the request continues.
func (f requestFacts) storedContext(responses bool) string {
	switch {
	case f.previousResponse:
		return "previous_response_id"
	case f.conversation:
		return "conversation"
	case f.prompt == '{' || f.prompt != 0 && responses:
		return "prompt"
	case f.itemReference:
		return "input"
	case f.cachedContent:
		return "cached_content"
	case f.thread:
		return "thread"
	}
	return ""
}

// continuesThread reports whether the value at body[i], in valid JSON,
// continues an Anthropic message thread: {"type": "continue",
// "previous_message_id": …} sends only the turn's new messages, and the
// thread's conversation, system prompt and tools are billed as input. Only
// null and {"type": "create"}, a thread the request starts with its whole
// prompt, do not; any other value, which a server may read as continuing,
// does.
func continuesThread(body []byte, i int) bool {
	if body[i] == 'n' {
		return false
	}
	if body[i] != '{' {
		return true
	}
	create := false
	for key, v := range members(body, i) {
		if key != "type" || body[v] != '"' || stringValue(body[v:stringEnd(body, v)]) != "create" {
			return true
		}
		create = true
	}
	return !create
}

// referencesItems reports whether the value at body[i], in valid JSON, is
// an array holding a reference to a stored item: {"type":
// "item_reference", "id": …}, whose type may be left out. An element is
// one when any case of "type" says so, or when it has an "id" (in any
// case) but neither a non-null "type" nor a "role" as written (every
// other item names one; inputs that are not items, such as Jina's
// multimodal embeddings, have no id).
func referencesItems(body []byte, i int) bool {
	if body[i] != '[' {
		return false
	}
	for j := skipSpace(body, i+1); body[j] != ']'; {
		if body[j] == '{' {
			typed, role, id := false, false, false
			for key, v := range members(body, j) {
				switch {
				case strings.EqualFold(key, "type"):
					if body[v] == '"' && strings.EqualFold(stringValue(body[v:stringEnd(body, v)]), "item_reference") {
						return true
					}
					typed = typed || key == "type" && body[v] != 'n'
				case key == "role":
					role = role || body[v] != 'n'
				case strings.EqualFold(key, "id"):
					id = true
				}
			}
			if id && !typed && !role {
				return true
			}
		}
		if j = skipSpace(body, valueEnd(body, j)); body[j] == ',' {
			j = skipSpace(body, j+1)
		}
	}
	return false
}

// readRequest reads a JSON object body's top level in one walk, after
// checking it with json.Valid; it decodes nothing it skips. A body that is
// not valid JSON or not an object says nothing (zero facts, no error). The
// model is "" when the body names none. A body naming "model" twice, or
// with a key that differs from it only in case, is an error: servers would
// read it differently than the budget and the model check.
func readRequest(body []byte) (requestFacts, error) {
	var f requestFacts
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '{' {
		return f, nil
	}
	if !json.Valid(body) {
		f.invalid = true
		return f, nil
	}
	seen := false
	for key, v := range members(body, i) {
		switch {
		case strings.EqualFold(key, "model"):
			if seen || key != "model" {
				return requestFacts{}, errAmbiguousModel
			}
			seen = true
			switch body[v] {
			case '"':
				f.model = stringValue(body[v:stringEnd(body, v)])
			case 'n': // null
			default:
				return requestFacts{}, errors.New(`"model" must be a string`)
			}
		case strings.EqualFold(key, "models"), strings.EqualFold(key, "fallbacks"):
			names, unread, err := fallbackNames(body[v:valueEnd(body, v)])
			if err != nil {
				return requestFacts{}, err
			}
			f.fallbacks = append(f.fallbacks, names...)
			if unread {
				f.unreadFallbacks = key
			}
		case strings.EqualFold(key, "extra_body"):
			if body[v] != 'n' {
				f.extraBody = key
			}
		case strings.EqualFold(key, "user_config"):
			if body[v] != 'n' {
				f.userConfig = key
			}
		case strings.EqualFold(key, "api_base"), strings.EqualFold(key, "base_url"):
			if body[v] != 'n' {
				f.destination = key
			}
		case strings.EqualFold(key, "prompt_id"):
			if body[v] != 'n' {
				f.promptID = key
			}
		case strings.EqualFold(key, "num_retries"), strings.EqualFold(key, "max_retries"), strings.EqualFold(key, "timeout"),
			strings.EqualFold(key, "request_timeout"), strings.EqualFold(key, "stream_timeout"):
			if body[v] != 'n' {
				f.relayRetries = key
			}
		case strings.EqualFold(key, "context_window_fallbacks"), strings.EqualFold(key, "content_policy_fallbacks"):
			if body[v] != 'n' {
				f.unreadFallbacks = key
			}
		case strings.EqualFold(key, "tools"):
			f.readTools(body[v:valueEnd(body, v)])
		case strings.EqualFold(key, "background"):
			f.background = f.background || bytes.HasPrefix(body[v:], []byte("true"))
		case strings.EqualFold(key, "speed"):
			standard := body[v] == 'n' || body[v] == '"' && stringValue(body[v:stringEnd(body, v)]) == "standard"
			f.fast = f.fast || !standard
		// Decoders differ on a null after a value (encoding/json keeps
		// the value in a string field, others take the null) and on keys
		// in another case (encoding/json takes them, others do not): any
		// non-null value, under any case of the key, counts.
		case strings.EqualFold(key, "previous_response_id"):
			f.previousResponse = f.previousResponse || body[v] != 'n'
		case strings.EqualFold(key, "conversation"):
			f.conversation = f.conversation || body[v] != 'n'
		case strings.EqualFold(key, "prompt"):
			if f.prompt == 0 || body[v] == '{' {
				f.prompt = nonNull(body[v])
			}
		case strings.EqualFold(key, "input"):
			f.itemReference = f.itemReference || referencesItems(body, v)
		case strings.EqualFold(key, "cached_content"):
			f.cachedContent = f.cachedContent || body[v] != 'n' && !bytes.HasPrefix(body[v:], []byte(`""`))
		case strings.EqualFold(key, "thread"):
			f.thread = f.thread || continuesThread(body, v)
		case strings.EqualFold(key, "service_tier"):
			// OpenRouter serves fast mode as a service tier too.
			f.fast = f.fast || body[v] == '"' && stringValue(body[v:stringEnd(body, v)]) == "fast"
		}
	}
	return f, nil
}

// pythonDestination is the destination (see requestFacts.destination and
// userConfig) of body, a JSON object but for the numbers Python's json
// module reads beside JSON's (NaN, Infinity, -Infinity), as that module
// reads it; "" when it names none or is not JSON even so. The error is
// readRequest's.
func pythonDestination(body []byte) (string, error) {
	lenient, found := pythonNumbers(body)
	if !found || !json.Valid(lenient) {
		return "", nil
	}
	f, err := readRequest(lenient)
	return cmp.Or(f.destination, f.userConfig), err
}

// pythonNumbers returns body with each NaN, Infinity and -Infinity outside
// its strings written as 0, and whether it held one.
func pythonNumbers(body []byte) ([]byte, bool) {
	out := make([]byte, 0, len(body))
	found, inString := false, false
	for i := 0; i < len(body); i++ {
		if !inString {
			if n := pythonNumber(body[i:]); n > 0 {
				out, found = append(out, '0'), true
				i += n - 1
				continue
			}
		}
		c := body[i]
		switch {
		case inString && c == '\\' && i+1 < len(body):
			out = append(out, c)
			i++
			c = body[i]
		case c == '"':
			inString = !inString
		}
		out = append(out, c)
	}
	return out, found
}

// pythonNumber is the length of the number that b begins with when it is
// one Python's json module reads beside JSON's, or 0.
func pythonNumber(b []byte) int {
	for _, word := range [...]string{"-Infinity", "Infinity", "NaN"} {
		if bytes.HasPrefix(b, []byte(word)) {
			return len(word)
		}
	}
	return 0
}

// fallbackNames reads a models or fallbacks value: null, or a list of
// model names or of objects naming one in "model" (the key in any case).
// An object naming none is unread: LiteLLM's fallbacks by model group. A
// value of another shape could name models no check sees: an error.
func fallbackNames(v []byte) (names []string, unread bool, err error) {
	var list []any
	if err := json.Unmarshal(v, &list); err != nil {
		return nil, false, errors.New(`"models" and "fallbacks" must be lists of model names, or of {"model": name} objects`)
	}
	for _, e := range list {
		switch e := e.(type) {
		case string:
			names = append(names, e)
		case map[string]any:
			named := false
			for k, m := range e {
				if !strings.EqualFold(k, "model") {
					continue
				}
				name, ok := m.(string)
				if !ok {
					return nil, false, errors.New(`a fallback's "model" must be a string`)
				}
				names, named = append(names, name), true
			}
			unread = unread || !named
		default:
			return nil, false, errors.New(`"models" and "fallbacks" must be lists of model names, or of {"model": name} objects`)
		}
	}
	return names, unread, nil
}

// toolNotAllowed says why a tenant limited to models may not run the
// request's tools: one runs a model not among them, or the provider's
// default model, unnamed; "" when it may.
func toolNotAllowed(f *requestFacts, models []string) string {
	if len(models) == 0 {
		return ""
	}
	for _, m := range f.toolModels {
		if !slices.Contains(models, m) {
			return fmt.Sprintf("model %q, run by a tool, is not allowed for this key", m)
		}
	}
	if f.unnamedTool != "" {
		return fmt.Sprintf("the %q tool runs a model of its own: name one this key may use in the tool's \"model\"", f.unnamedTool)
	}
	return ""
}

// readTools reads a tools value for the models its tools run: the string
// values of their keys spelled "model" in any case, at any depth, but in a
// function's or custom tool's definition, or a tool's without a type
// (Anthropic's client tools): its parameters are the caller's schema, not
// a model; and whether an image generation tool runs the
// provider's default model, naming none.
func (f *requestFacts) readTools(v []byte) {
	var tools []any
	if json.Unmarshal(v, &tools) != nil {
		return // not a list: the provider refuses it, no model runs
	}
	for _, tool := range tools {
		t, ok := tool.(map[string]any)
		if !ok {
			continue
		}
		typ, _ := t["type"].(string)
		if typ == "" || typ == "function" || typ == "custom" { // Anthropic's client tools name no type
			continue
		}
		n := len(f.toolModels)
		f.toolModels = appendModels(f.toolModels, t)
		if len(f.toolModels) == n && strings.Contains(strings.ToLower(typ), "image_generation") {
			f.unnamedTool = typ
		}
	}
}

// appendModels appends to names the string values of v's keys spelled
// "model" in any case, at any depth.
func appendModels(names []string, v any) []string {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if name, ok := e.(string); ok && strings.EqualFold(k, "model") {
				names = append(names, name)
				continue
			}
			names = appendModels(names, e)
		}
	case []any:
		for _, e := range v {
			names = appendModels(names, e)
		}
	}
	return names
}

// nonNull is c, the first byte of a JSON value, or 0 for null.
func nonNull(c byte) byte {
	if c == 'n' {
		return 0
	}
	return c
}

// members yields the key of each member of the JSON object at body[i], in
// valid JSON, with the index of its value.
func members(body []byte, i int) iter.Seq2[string, int] {
	return func(yield func(string, int) bool) {
		for j := skipSpace(body, i+1); body[j] != '}'; {
			end := stringEnd(body, j)
			key := stringValue(body[j:end])
			j = skipSpace(body, skipSpace(body, end)+1) // past the colon
			if !yield(key, j) {
				return
			}
			j = skipSpace(body, valueEnd(body, j))
			if body[j] == ',' {
				j = skipSpace(body, j+1)
			}
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at b[i].
func stringEnd(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// valueEnd returns the index just past the value that starts at b[i], in
// valid JSON.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	}
	for i < len(b) && !strings.ContainsRune(",}] \t\n\r", rune(b[i])) {
		i++
	}
	return i
}

// stringValue decodes a valid JSON string literal, quotes included.
func stringValue(lit []byte) string {
	if !bytes.ContainsRune(lit, '\\') && utf8.Valid(lit) {
		return string(lit[1 : len(lit)-1])
	}
	var s string
	json.Unmarshal(lit, &s) // valid: checked by json.Valid
	return s
}
