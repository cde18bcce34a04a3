package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/holysheep/httpguard"
	"github.com/holysheep/httpguard/otelguard"
	"go.opentelemetry.io/otel/attribute"
)

// ServeHTTP answers /healthz, /readyz and /metrics, and forwards every
// other request to the upstream whose prefix matches its path.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		io.WriteString(w, "ok\n")
		return
	case "/readyz":
		p.ready(w, r)
		return
	case "/metrics":
		p.scrape.ServeHTTP(w, r)
		return
	}
	p.inflight.Add(1)
	defer p.inflight.Done()
	rec := &record{start: time.Now(), method: r.Method, path: r.URL.Path}
	sw := &statusWriter{ResponseWriter: w}
	defer p.logRequest(r.Context(), rec, sw)
	p.forward(sw, r, rec)
}

// ready answers 200 while the proxy takes requests: not shutting down, and
// Redis answering when the budgets live there.
func (p *Proxy) ready(w http.ResponseWriter, r *http.Request) {
	if p.draining.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if p.cfg.Redis != nil {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if err := p.cfg.Redis.Ping(ctx).Err(); err != nil {
			http.Error(w, "redis: "+err.Error(), http.StatusServiceUnavailable)
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
	if !cleanPath(r.URL.Path) {
		rec.refusal = "unclean_path"
		writeError(w, OpenAI, badRequest("the path must not hold empty, . or .. segments"))
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
	t := p.tenantOf(r)
	if t == nil {
		rec.refusal = "unknown_key"
		writeError(w, rt.API, apiError{status: http.StatusUnauthorized, typ: "invalid_request_error", anthropicType: "authentication_error",
			code: "invalid_api_key", msg: "unknown or missing API key: use the virtual key this proxy gave you"})
		return
	}
	rec.tenant, rec.charger = t.Name, t.charger
	body, err := p.readBody(w, r)
	if err != nil {
		rec.refusal = "body"
		writeError(w, rt.API, bodyError(err))
		return
	}
	model, err := requestModel(body)
	if err != nil {
		rec.refusal = "ambiguous_model"
		writeError(w, rt.API, badRequest(err.Error()))
		return
	}
	rec.model = model
	if model != "" && len(t.Models) > 0 && !slices.Contains(t.Models, model) {
		rec.refusal = "model_not_allowed"
		writeError(w, rt.API, apiError{status: http.StatusForbidden, typ: "invalid_request_error", anthropicType: "permission_error",
			code: "model_not_allowed", param: "model", msg: fmt.Sprintf("model %q is not allowed for this key", model)})
		return
	}
	if model != "" && t.charger != "" && !p.priced(model) {
		rec.refusal = "model_not_priced"
		writeError(w, rt.API, unpriced(model))
		return
	}

	ctx := context.WithValue(r.Context(), recordKey{}, rec)
	if p.keyed {
		ctx = otelguard.ContextWithAttributes(ctx, attribute.String("tenant", t.Name))
	}
	out := r.WithContext(ctx)
	if body != nil {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		out.ContentLength = int64(len(body))
	}
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

// dropKeys removes every header a client may carry a key in.
func dropKeys(h http.Header) {
	for _, k := range []string{"Authorization", "X-Api-Key", "Api-Key", "Cookie"} {
		h.Del(k)
	}
}

func (p *Proxy) priced(model string) bool {
	_, ok := p.cfg.Prices[model]
	if !ok {
		_, ok = p.cfg.Prices[httpguard.FallbackModel]
	}
	return ok
}

// errBodyTooLarge reports a body over MaxRequestBytes.
var errBodyTooLarge = errors.New("request body too large")

// readBody reads the whole request body, within MaxRequestBytes and
// BodyReadTimeout: the stack prices it and may send it more than once.
// It returns nil for a request without a body.
func (p *Proxy) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > p.cfg.MaxRequestBytes {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d allowed", errBodyTooLarge, r.ContentLength, p.cfg.MaxRequestBytes)
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(p.cfg.BodyReadTimeout))
	defer rc.SetReadDeadline(time.Time{})
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
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

// requestModel returns the "model" of a JSON object body, "" when the body
// is not one or names none. A body naming it twice, or with a key that
// differs from "model" only in case, is an error: servers would read it
// differently than the budget and the model check.
func requestModel(body []byte) (string, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return "", nil
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if _, err := dec.Token(); err != nil {
		return "", nil
	}
	model, seen := "", false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", nil // not JSON: the upstream answers it
		}
		key, _ := tok.(string)
		if !strings.EqualFold(key, "model") {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return "", nil
			}
			continue
		}
		if seen || key != "model" {
			return "", errors.New(`the body names "model" more than once, or in another case: name it once, as "model"`)
		}
		seen = true
		var typeErr *json.UnmarshalTypeError
		if err := dec.Decode(&model); errors.As(err, &typeErr) {
			return "", errors.New(`"model" must be a string`)
		} else if err != nil {
			return "", nil
		}
	}
	return model, nil
}
