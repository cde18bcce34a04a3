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
// # The stack
//
// The recommended order, outermost first:
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
// Every layer keeps the contract of net/http.RoundTripper: "RoundTrip must
// always close the body, including on errors, but depending on the
// implementation may do so in a separate goroutine even after RoundTrip
// returns." "RoundTrip should not modify the request, except for consuming
// and closing the Request's Body." "A RoundTripper must be safe for
// concurrent use by multiple goroutines." And RoundTrip returns err == nil
// whenever it obtained a response. The layers do read responses (that is
// their job), but a caller always receives either a response whose body is
// whole and readable, or an error.
//
// # Working with SDKs that retry
//
// openai-go and anthropic-sdk-go retry by themselves (twice by default), on
// top of the transport. The Retrier marks every response it returns with a
// status those SDKs would retry with X-Should-Retry: false, which they
// obey; for transport errors they still retry, so option.WithMaxRetries(0)
// is the surest way to keep one retry loop in charge.
package httpguard
