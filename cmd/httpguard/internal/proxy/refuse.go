package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/holysheep/httpguard"
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
	h := w.Header()
	for k, v := range e.header {
		h[k] = v
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(e.status)
	w.Write(b)
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

// errorHandler answers a request the stack returned an error for: a
// refusal in the provider's format, or the upstream's failure.
func (p *Proxy) errorHandler(api API) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		rec := recordOf(r.Context())
		if rec != nil {
			rec.answeredAt.Store(time.Now().UnixNano())
		}
		e := stackError(r.Context(), rec, err)
		if rec != nil {
			rec.refusal = e.code
		}
		writeError(w, api, e)
	}
}

// stackError is the answer for an error of the stack.
func stackError(ctx context.Context, rec *record, err error) apiError {
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
		return apiError{status: http.StatusTooManyRequests, typ: "insufficient_quota", code: "budget_exceeded:" + name, header: noRetry,
			msg: fmt.Sprintf("the %q budget of this proxy has no room for this request: %s", name, detail(err))}
	case errors.Is(err, httpguard.ErrUnknownModel):
		if rec != nil && rec.model != "" {
			return unpriced(rec.model)
		}
		return apiError{status: http.StatusBadRequest, typ: "invalid_request_error", code: "request_not_priced", header: noRetry,
			msg: "a budget applies and this request cannot be priced: its body must be a JSON object naming a priced model, within the size a budget reads"}
	case errors.Is(err, httpguard.ErrRateLimited):
		return rateLimited(err)
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

// rateLimited is a Limiter's refusal: a 429 with Retry-After, which SDKs
// wait for before they retry.
func rateLimited(err error) apiError {
	wait := time.Second
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		wait = max(ra.RetryAfter(), time.Millisecond)
	}
	h := http.Header{
		"Retry-After":    {strconv.Itoa(int(math.Ceil(wait.Seconds())))},
		"Retry-After-Ms": {strconv.FormatInt(wait.Milliseconds(), 10)},
	}
	return apiError{status: http.StatusTooManyRequests, typ: "requests", anthropicType: "rate_limit_error", code: "rate_limit_exceeded",
		header: h, msg: "rate limited by this proxy: " + detail(err)}
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
