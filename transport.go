package httpguard

import "net/http"

// A Layer wraps a RoundTripper with one behaviour: retrying, rate limiting,
// budgeting, tracing. Layers compose with Chain.
//
// Wrap must not call next; it returns a RoundTripper that calls next when it
// runs. The returned RoundTripper must keep the net/http RoundTripper
// contract (see the package documentation).
type Layer interface {
	Wrap(next http.RoundTripper) http.RoundTripper
}

// LayerFunc adapts a plain middleware function, such as
// otelhttp.NewTransport, to a Layer.
type LayerFunc func(next http.RoundTripper) http.RoundTripper

// Wrap calls f(next).
func (f LayerFunc) Wrap(next http.RoundTripper) http.RoundTripper { return f(next) }

// Chain stacks layers onto base and returns the result. layers[0] is the
// outermost: it sees each request first and each response last. A nil base
// means http.DefaultTransport; nil layers are skipped.
//
// The recommended order is Budget, Retrier, Limiter:
//
//	httpguard.Chain(nil, budget, retrier, limiter)
func Chain(base http.RoundTripper, layers ...Layer) http.RoundTripper {
	rt := base
	if rt == nil {
		rt = http.DefaultTransport
	}
	for i := len(layers) - 1; i >= 0; i-- {
		if layers[i] != nil {
			rt = layers[i].Wrap(rt)
		}
	}
	return rt
}

// orDefault returns rt, or http.DefaultTransport when rt is nil.
func orDefault(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		return http.DefaultTransport
	}
	return rt
}
