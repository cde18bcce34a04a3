package proxy

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/redisguard"
)

// An apiError is an error answer, written in the upstream's format so that
// its SDKs parse it: OpenAI's {"error":{"message","type","param","code"}}
// or Anthropic's {"type":"error","error":{"type","message"}} (with the code
// too).
type apiError struct {
	status        int
	typ           string // OpenAI's error type
	anthropicType string // Anthropic's; empty means typ
	code, param   string
	msg           string
	header        http.Header
}

func writeError(w http.ResponseWriter, api API, e apiError) {
	b := errorBody(api, e)
	h := w.Header()
	for k, v := range e.header {
		// A copy: e.header may be shared by every answer (noRetry), and
		// what writes the answer's headers may change them in place.
		h[k] = slices.Clone(v)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(e.status)
	w.Write(b)
}

// errorBody is e's JSON body in api's format.
func errorBody(api API, e apiError) []byte {
	var body any
	if api == Anthropic {
		typ := e.anthropicType
		if typ == "" {
			typ = e.typ
		}
		inner := map[string]any{"type": typ, "message": e.msg}
		if e.code != "" {
			inner["code"] = e.code
		}
		body = map[string]any{"type": "error", "error": inner}
	} else {
		body = map[string]any{"error": map[string]any{"message": e.msg, "type": e.typ, "param": orNull(e.param), "code": orNull(e.code)}}
	}
	b, _ := json.Marshal(body) // maps of strings always marshal
	return b
}

func orNull(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func badRequest(msg string) apiError {
	return apiError{status: http.StatusBadRequest, typ: "invalid_request_error", msg: msg}
}

func bodyError(err error) apiError {
	if errors.Is(err, errBodyTooLarge) {
		return apiError{status: http.StatusRequestEntityTooLarge, typ: "invalid_request_error", anthropicType: "request_too_large",
			code: "request_too_large", msg: err.Error()}
	}
	return badRequest(err.Error())
}

func unpriced(model string) apiError {
	return apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "model_not_priced", param: "model",
		msg: fmt.Sprintf("model %q has no price in this proxy's price table, so its budget cannot admit it", model)}
}

// noRetry tells Stainless SDKs (openai, anthropic) not to retry an answer:
// the proxy retried already, or retrying cannot help.
var noRetry = http.Header{"X-Should-Retry": {"false"}}

// errorHandler answers a request to route rt the stack returned an error
// for: a refusal in the provider's format, or the upstream's failure.
func (p *Proxy) errorHandler(rt *route) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		rec := recordOf(r.Context())
		if rec != nil {
			rec.answeredAt.Store(time.Now().UnixNano())
		}
		e := p.stackError(r.Context(), rt, rec, err)
		if rec != nil {
			rec.refusal, rec.err = e.code, operatorDetail(err)
		}
		writeError(w, rt.API, e)
	}
}

// stackError is the answer for an error of the stack, for a request to
// route rt.
func (p *Proxy) stackError(ctx context.Context, rt *route, rec *record, err error) apiError {
	var re *httpguard.RetryError
	attempts := 0
	if errors.As(err, &re) {
		attempts = re.Attempts
	}
	switch {
	case errors.Is(err, httpguard.ErrBudgetExceeded):
		name := globalBudget
		if rec != nil && rec.refusingBudget.Load() != nil {
			name = *rec.refusingBudget.Load()
		}
		return budgetExceeded(name, err)
	case errors.Is(err, httpguard.ErrUnpricedTool):
		// A tool the provider bills per call, which tool_prices does not
		// price: the budget's error names it.
		tool, _, _ := strings.Cut(detail(err), ", and ToolPrices")
		return apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "server_tool_not_metered", param: "tools", header: noRetry,
			msg: "a budget applies to this key, and " + tool + ", with no fee in this proxy's tool_prices, so no budget can price its calls: send the request without it"}
	case errors.Is(err, httpguard.ErrUnknownModel):
		if rec != nil && rec.model != "" && !p.priced(rec.model) {
			return unpriced(rec.model)
		}
		// The model has a price (the handler checked): what the budget
		// cannot price is the body, and its error says why.
		why := strings.TrimSuffix(detail(err), ": "+httpguard.ErrUnknownModel.Error())
		why, _, _ = strings.Cut(why, "; exempt such requests") // advice to a library user, not to this client
		return apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "request_not_priced", header: noRetry,
			msg: "a budget applies and this request cannot be priced (" + why + "): its body must be a JSON object naming a priced model, within the size a budget reads"}
	case errors.Is(err, redisguard.ErrUnavailable):
		// The budgets' or limits' Redis, failing closed: nothing was sent,
		// and the upstream is not at fault.
		return apiError{status: http.StatusServiceUnavailable, typ: "server_error", anthropicType: "api_error", code: "store_unavailable",
			header: retryAfter(time.Second), msg: "this proxy cannot reach the store holding its budgets and limits, so it sends nothing: retry shortly"}
	case errors.Is(err, httpguard.ErrRateLimited):
		shared := true
		if rec != nil && rec.refusingLimits.Load() != nil {
			shared = *rec.refusingLimits.Load() == globalBudget
		}
		return rateLimited(err, shared)
	case errors.Is(err, httpguard.ErrCircuitOpen) && ctx.Err() == nil:
		model := ""
		if rec != nil {
			model = rec.runs
		}
		return circuitOpen(rt.reopensIn(model, time.Now()), len(rt.Fallbacks) > 0)
	case errors.Is(err, errUnaskedUpgrade):
		return apiError{status: http.StatusBadGateway, typ: "server_error", anthropicType: "api_error", code: "upstream_bad_answer", header: noRetry,
			msg: "the upstream answered 101 Switching Protocols to a request that asked for no upgrade"}
	case errors.Is(err, errUnaskedEncoding):
		return apiError{status: http.StatusBadGateway, typ: "server_error", anthropicType: "api_error", code: "upstream_bad_answer", header: noRetry,
			msg: "the upstream answered in a content encoding this proxy did not ask for (it asks for gzip), which it cannot check"}
	case errors.Is(err, errBadStatus):
		return apiError{status: http.StatusBadGateway, typ: "server_error", anthropicType: "api_error", code: "upstream_bad_answer", header: noRetry,
			msg: "the upstream answered a status that is not an HTTP status (not from 100 to 999)"}
	case ctx.Err() != nil:
		// The client went away: nobody reads this.
		return apiError{status: 499, typ: "client_closed_request", code: "client_closed_request", msg: "the client closed the request"}
	case isTimeout(err):
		return apiError{status: http.StatusGatewayTimeout, typ: "server_error", anthropicType: "api_error", code: "upstream_timeout", header: noRetry,
			msg: fmt.Sprintf("the upstream did not answer in time, after %d attempt(s)", attempts)}
	}
	return apiError{status: http.StatusBadGateway, typ: "server_error", anthropicType: "api_error", code: "upstream_unreachable", header: noRetry,
		msg: fmt.Sprintf("the upstream could not be reached, after %d attempt(s)", attempts)}
}

// budgetExceeded is budget name's refusal: a 429 that tells SDKs not to
// retry. A tenant's own budget is the tenant's to know, and its refusal
// says what it needs, what remains and when the window resets; the
// proxy-wide budget is the operator's, shared by every client, and its
// refusal says only what the client can change: the worst case its
// request reserves. The operator's log has the whole message.
func budgetExceeded(name string, err error) apiError {
	e := apiError{status: http.StatusTooManyRequests, typ: "insufficient_quota", code: "budget_exceeded:" + name, header: noRetry}
	var be *httpguard.BudgetError
	if name != globalBudget {
		e.msg = fmt.Sprintf("the %q budget of this proxy has no room for this request", name)
		if errors.As(err, &be) {
			until := "; the budget never resets"
			if !be.Reset.IsZero() {
				until = " until " + be.Reset.Format(time.RFC3339)
			}
			e.msg += fmt.Sprintf(": model %q needs %v but %v remains%s (a worst-case reservation: %s)", be.Model, be.Need, be.Remaining, until, worstCase(be))
		}
		return e
	}
	e.msg = "the budget this proxy shares among its clients has no room for this request now"
	if errors.As(err, &be) {
		e.msg += ": a request reserves its worst case before it is sent, here " + worstCase(be)
	}
	return e
}

// worstCase says what a refused request reserves, in the terms a client of
// the proxy knows, and what it can change to need less.
func worstCase(be *httpguard.BudgetError) string {
	source := "from max_tokens; lower max_tokens to need less"
	if !be.MaxTokensSet {
		source = "from this proxy's default, as the request sets no max_tokens; set max_tokens to need less"
	}
	s := fmt.Sprintf("%d prompt tokens at most and %d × %d output tokens %s", be.PromptTokens, be.Choices, be.OutputTokens, source)
	if be.RequestFees > 0 {
		s += fmt.Sprintf(", and %v in the model's fee per request", be.RequestFees)
	}
	if be.ToolReserve > 0 {
		s += fmt.Sprintf(", and %v for the calls of server tools (max_uses or max_tool_calls, else this proxy's default; lower them to need less)", be.ToolReserve)
	}
	if be.ToolResultTokens > 0 {
		s += fmt.Sprintf(", and %d input tokens for what the calls of server tools return to the model, each result counted again at each later call, with the prompt and the output read again after each (max_content_tokens, else this proxy's default, a call; lower max_uses / max_content_tokens / max_tool_calls to need less)", be.ToolResultTokens)
	}
	return s
}

// rateLimited is a Limiter's refusal: a 429 with Retry-After, which SDKs
// wait for before they retry. shared says whose limits refused it: the
// proxy's, shared by its clients (the upstream's limits on the real key),
// or the tenant's own. The message says how long to wait and, when the
// tokens a request is estimated at are what it waits for, that a lower
// max_tokens needs fewer; never the bucket's key, which names the
// upstream's host.
func rateLimited(err error, shared bool) apiError {
	wait := time.Second // a deadline that passed while the request waited
	var le *httpguard.LimitError
	if errors.As(err, &le) {
		wait = le.Wait
	}
	h := retryAfter(wait)
	whose := "this key's rate limits"
	if shared {
		whose = "the rate limits this proxy shares among its clients"
	}
	after := "retry after " + h.Get("Retry-After") + "s"
	msg := "rate limited: " + whose + " allow no request now: " + after
	switch {
	case le == nil:
	case le.Reason == httpguard.ThrottlePaused:
		msg = "rate limited: the upstream asked this proxy to pause, for all its clients: " + after
	case le.Reason == httpguard.ThrottleTokens:
		msg = fmt.Sprintf("rate limited: %s have no room yet for this request's tokens, estimated at %d (its prompt and max_tokens): %s, or lower max_tokens to need fewer",
			whose, le.Tokens, after)
	}
	return apiError{status: http.StatusTooManyRequests, typ: "requests", anthropicType: "rate_limit_error", code: "rate_limit_exceeded",
		header: h, msg: msg}
}

// circuitOpen is the answer when every target of a request refused it
// with an open circuit: a 503 that tells SDKs not to retry, and when the
// first circuit lets a request through again.
func circuitOpen(wait time.Duration, fallbacks bool) apiError {
	h := retryAfter(wait)
	h.Set("X-Should-Retry", "false")
	who := "the upstream failed too often, and this proxy stopped sending requests to it (its circuit breaker is open)"
	if fallbacks {
		who = "the upstream and its fallbacks failed too often, and this proxy stopped sending requests to them (their circuit breakers are open)"
	}
	return apiError{status: http.StatusServiceUnavailable, typ: "server_error", anthropicType: "api_error", code: "circuit_open", header: h,
		msg: who + " for " + h.Get("Retry-After") + "s: retry after that"}
}

// maxUpstreamError bounds what accountError reads of an upstream's error.
const maxUpstreamError = 64 << 10

// accountError replaces the body of an upstream's 401, 403 or 429 passing
// through to a tenant: the provider's message speaks of the real key's
// account, which every tenant shares (OpenAI's 429 names its organization
// and its limit's figures: "Rate limit reached for gpt-4o in organization
// org-… on tokens per min (TPM): Limit 30000, Used 29957, …"; its 401
// shows the key's last characters, its 403 the project's ID). The tenant
// reads what the account lacks, and for a 429 how long to wait; the
// status, the error's type and code stay, so SDKs raise the same error,
// and so do the headers. It returns the provider's message, for the
// operator's log, the real keys masked by redact before it is cut to
// length: a key cut in two is no longer found by the log's mask.
func accountError(resp *http.Response, api API, redact redactor) string {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamError))
	resp.Body.Close()
	var up struct {
		Error struct {
			Type, Message string
			Code          any
		}
	}
	json.Unmarshal(body, &up) // a body not in an error's shape keeps the defaults
	code, _ := up.Error.Code.(string)
	e := apiError{status: resp.StatusCode, typ: up.Error.Type, anthropicType: up.Error.Type, code: code}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		e.typ, e.anthropicType = cmp.Or(e.typ, "invalid_request_error"), cmp.Or(e.anthropicType, "authentication_error")
		e.msg = "the upstream refused the key this proxy sends with: this is for the proxy's operator to fix"
	case http.StatusForbidden:
		e.typ, e.anthropicType = cmp.Or(e.typ, "invalid_request_error"), cmp.Or(e.anthropicType, "permission_error")
		e.msg = "the upstream does not let the account this proxy sends with make this request (its model, endpoint or region): this is for the proxy's operator to fix"
	default: // 429
		e.typ, e.anthropicType = cmp.Or(e.typ, "requests"), cmp.Or(e.anthropicType, "rate_limit_error")
		if api == OpenAI {
			e.code = cmp.Or(code, "rate_limit_exceeded")
		}
		wait := "retry later"
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 {
			wait = "retry after " + strconv.Itoa(secs) + "s"
		}
		e.msg = "the upstream is rate limiting the account this proxy sends with, which its clients share: " + wait
		if up.Error.Type == "insufficient_quota" || code == "insufficient_quota" {
			e.msg = "the account this proxy sends with has no quota left at the upstream: this is for the proxy's operator to fix"
		}
	}
	b := errorBody(api, e)
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	// The body is the proxy's, plain: an encoding the transport did not
	// undo (brotli sent unasked) was the provider's body's.
	resp.Header.Del("Content-Encoding")
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	msg := cmp.Or(redact.text(up.Error.Message), "(no error message)")
	if len(msg) > 500 {
		msg = msg[:500] + "…"
	}
	return "the upstream answered " + strconv.Itoa(resp.StatusCode) + ": " + msg
}

// retryAfter says to wait d (at least a millisecond) in whole seconds and
// in whole milliseconds, both rounded up: a client that waits as told
// never comes back early.
func retryAfter(d time.Duration) http.Header {
	d = max(d, time.Millisecond)
	return http.Header{
		"Retry-After":    {strconv.Itoa(int(math.Ceil(d.Seconds())))},
		"Retry-After-Ms": {strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10)},
	}
}

// reopensIn is how long until the first of the circuits a request run by
// model through route r goes to lets a probe through (the Breaker's key
// is the host and the model that runs the request). A circuit half-open with its
// probes out says nothing of when they come back: a second, then.
func (r *route) reopensIn(model string, now time.Time) time.Duration {
	keys := []string{r.URL.Host + " " + model}
	for _, f := range r.Fallbacks {
		m := model
		if to, ok := f.Models[model]; ok {
			m = to
		}
		keys = append(keys, f.URL.Host+" "+m)
	}
	var first time.Time
	for _, k := range keys {
		// One lookup a key: Stats would list every circuit, as many as
		// model names failed, on every refusal.
		if s, ok := r.breaker.StatsOf(k); ok && s.State == httpguard.CircuitOpen && (first.IsZero() || s.OpenUntil.Before(first)) {
			first = s.OpenUntil
		}
	}
	if first.IsZero() {
		return time.Second
	}
	return first.Sub(now)
}

// operatorDetail is err's message for the operator's log: the library's
// message without its prefixes, with the URL of a transport error cut to
// its scheme, host and path (a query string or user info may hold a
// client's key).
func operatorDetail(err error) string {
	msg := detail(err)
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr != nil {
			msg = strings.ReplaceAll(msg, ue.URL, "(an unparsable URL)")
		} else if u.RawQuery != "" || u.User != nil || u.Fragment != "" {
			u.RawQuery, u.ForceQuery, u.User, u.Fragment, u.RawFragment = "", false, nil, "", ""
			msg = strings.ReplaceAll(msg, ue.URL, u.String())
		}
	}
	return msg
}

// detail is the library's message without its prefixes.
func detail(err error) string {
	msg := err.Error()
	for _, p := range []string{"httpguard: retry: nothing sent: ", "httpguard: retry: ", "httpguard: ", "budget: ", "limiter: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
