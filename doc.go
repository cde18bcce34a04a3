// Package httpguard makes calls to OpenAI-compatible AI APIs (HolySheep AI,
// OpenAI, Anthropic, DeepSeek, …) survive transient faults, stay under
// provider rate limits and within a spend budget, whatever SDK makes them.
//
// Each behaviour is an http.RoundTripper layer. Stack the layers onto any
// *http.Client and hand the client to the SDK you already use (openai-go's
// option.WithHTTPClient, go-openai's ClientConfig.HTTPClient,
// anthropic-sdk-go's option.WithHTTPClient, or your own code):
//
//	retrier, err := httpguard.NewRetrier(httpguard.DefaultRetryPolicy())
//	if err != nil { … }
//	client := &http.Client{Transport: httpguard.Chain(nil, retrier)}
//
// # The layers
//
//   - Retrier (NewRetrier, RetryPolicy): retries failed attempts with
//     exponential backoff and jitter (backoff strategies, or any
//     go-retryablehttp Backoff), waits what the server asks for
//     (Retry-After, retry-after-ms, rate-limit resets), decides what is worth
//     retrying with a Classifier (DefaultClassifier, or any go-retryablehttp
//     CheckRetry), and bounds retries across all requests with a RetryBudget
//     so that an outage does not multiply the load on the provider.
//   - Limiter (NewLimiter, LimitConfig): client-side token buckets for
//     requests and model tokens, per host and model, that also follow the
//     server's 429s and x-ratelimit-* / anthropic-ratelimit-* headers.
//   - Budget (NewBudget, BudgetConfig): a spend cap in exact integer Money.
//     It reserves each request's worst-case cost before sending, refuses
//     with ErrBudgetExceeded what does not fit, and settles to the usage the
//     answer reports.
//
// Each layer is usable alone. Chain stacks them; LayerFunc adds any other
// func(http.RoundTripper) http.RoundTripper middleware to the stack.
//
// # The stack
//
// The recommended order, outermost first, built with
// Chain(base, budget, retrier, limiter):
//
//	caller (SDK)
//	   │
//	   ▼
//	Budget    reserves the worst-case cost once per call, settles to the real usage
//	   │
//	   ▼
//	Retrier   repeats failed attempts with backoff, bounded by a shared retry budget
//	   │
//	   ▼
//	Limiter   paces every attempt, retries included, under the provider's limits
//	   │
//	   ▼
//	base      http.DefaultTransport or your own
//
// The Budget sits outside the Retrier so that a call is charged once,
// however many attempts it takes. The Limiter sits inside so that retries
// are paced like any other request.
//
// # The RoundTripper contract
//
// Every layer keeps the contract of net/http.RoundTripper:
//
//   - "A RoundTripper must be safe for concurrent use by multiple
//     goroutines." Retrier, Limiter and Budget are, and so are the
//     RoundTrippers they return; share one of each per provider.
//   - "RoundTrip should not modify the request, except for consuming and
//     closing the Request's Body." A layer that changes a request sends a
//     copy.
//   - "RoundTrip must always close the body, including on errors, but
//     depending on the implementation may do so in a separate goroutine
//     even after RoundTrip returns."
//   - "RoundTrip must return err == nil if it obtained a response,
//     regardless of the response's HTTP status code." A Retrier that gives
//     up after a 503 returns that 503, not an error.
//
// The contract also says RoundTrip "should not attempt to interpret the
// response". The layers do read responses, on purpose: that is their job
// (a status to retry, a rate-limit header, the usage to bill). A caller
// still receives either a response whose body is whole and readable, or an
// error; every response a layer discards is drained and closed.
//
// # Errors
//
// Layers report their refusals as errors, wrapped with %w and context;
// net/http wraps them again in *url.Error and SDKs in their own types, so
// compare with errors.Is: ErrBudgetExceeded and ErrUnknownModel (Budget)
// and ErrRateLimited (Limiter) mean nothing was sent, and a Retrier does
// not retry them. ErrAttemptTimeout is an attempt that exceeded
// RetryPolicy.AttemptTimeout; it is retried, and when it ends the last
// attempt the Retrier returns it inside a *RetryError.
//
// # Working with SDKs that retry
//
// openai-go and anthropic-sdk-go retry by themselves (twice by default), on
// top of the transport. The Retrier marks every response it returns with a
// status those SDKs would retry (408, 409, 429, 5xx) with
// X-Should-Retry: false, which they obey; for transport errors they still
// retry, so option.WithMaxRetries(0) is the surest way to keep one retry
// loop in charge.
//
// # Testing
//
// Package httpguardtest is an OpenAI- and Anthropic-compatible server on
// the loopback interface, in the style of net/http/httptest, that injects
// faults (error statuses with provider headers, connection resets, slow
// headers, streams cut short, outages, a provider rate limit): point a
// guarded client at it to see how it behaves. The command
// github.com/holysheep/httpguard/cmd/httpguard runs a demo on it.
package httpguard
