// Package integration runs httpguard inside the SDKs its users hand an
// *http.Client to — github.com/openai/openai-go/v3,
// github.com/anthropics/anthropic-sdk-go/v2 and
// github.com/sashabaranov/go-openai — against OpenAI- and
// Anthropic-compatible loopback servers the tests start themselves. It is a
// nested module so that the SDKs never become dependencies of httpguard.
//
// What the tests pin down, SDK by SDK:
//
//   - openai-go and anthropic-sdk-go retry by themselves (MaxRetries 2). For
//     a retryable status the Retrier marks its final response
//     X-Should-Retry: false, which both obey, so a server sees the Retrier's
//     MaxRetries+1 attempts and not three times as many. The SDK then
//     returns its own *Error with the status. Unless anthropic-sdk-go's
//     option.WithRequestTimeout ends its attempt while the Retrier is
//     still at work: it retries whatever the answers said, and the
//     Retrier's attempts run again (openai-go returns the context's
//     error).
//   - For a transport error (no response) both SDKs retry whatever the
//     transport says: a server sees (SDK MaxRetries+1)·(Retrier
//     MaxRetries+1) attempts, unless the Retrier's retry budget runs out
//     first. The error comes back as the SDK got it from http.Client.Do, a
//     *url.Error around the *httpguard.RetryError, so errors.Is and
//     errors.As reach the cause (httpguard.ErrAttemptTimeout for an
//     attempt that timed out) — unless the caller's own context is done:
//     then both SDKs return ctx.Err() alone and the *httpguard.RetryError
//     is lost (errors.Is(err, context.DeadlineExceeded) still holds).
//   - go-openai has no retry loop: the Retrier's outcome is what the caller
//     gets, a *openai.APIError for a status, the *url.Error chain for a
//     transport error. It builds request bodies from a bytes.Buffer, so
//     GetBody is set and every attempt sends the same bytes.
//   - go-openai reads a chat stream line by line and takes a chunk for an
//     error only when "error" is its first member. OpenRouter's mid-stream
//     error, a chunk whose error object follows its id and sits beside a
//     choice with finish_reason "error", reaches the caller as a chunk,
//     then io.EOF: the provider's message is lost, though the Breaker
//     counts the stream by that error and the Budget charges its
//     reservation. A chunk that begins with "error": null fails Recv with
//     "unexpected end of JSON input", no *openai.APIError, at the first
//     such chunk of a whole stream.
//   - go-openai's DefaultAzureConfig asks for api-version 2023-05-15, which
//     refuses stream_options: the Budget does not ask such a stream for
//     its usage and charges its reservation. Set ClientConfig.APIVersion
//     to 2024-08-01 or later for streams charged their usage. The Budget
//     prices an Azure request at the dearer of its deployment (from
//     AzureModelMapperFunc, the body's model by default) and its body's
//     model.
//   - The Budget's and the Limiter's refusals (ErrBudgetExceeded,
//     ErrRateLimited) are errors without a response: errors.Is finds them
//     through every SDK, and nothing is sent. The Retrier does not retry
//     them, but openai-go retries them as it retries connection errors: the
//     layer is asked 3 times per call, and with the SDK's default waits the
//     caller gets the error after 1.1–1.5s. A caller's deadline that
//     passes during those waits ends the call with context.DeadlineExceeded
//     alone: errors.Is finds no refusal, and the caller waited its whole
//     deadline.
//   - A chat stream that ends without its terminal event (no data: [DONE],
//     no message_stop, no response.completed in the Responses API) ends
//     silently in all three SDKs: openai-go's and anthropic-sdk-go's
//     Stream.Err() is nil, go-openai's Recv returns io.EOF, as for a whole
//     answer. Under a Breaker each reports an error wrapping
//     io.ErrUnexpectedEOF instead. One that ends at its error (Anthropic's
//     error event, a chat chunk's error object, a Responses error event)
//     is whole: it reaches the SDK as sent (anthropic-sdk-go and openai-go
//     return the provider's error), and the Breaker counts it by that
//     error (a rate limit neither way, overloaded_error or server_error a
//     failure), whether the SDK read the stream's end or closed it at the
//     error. With a Fallback above the Retrier, openai-go gets the next
//     target's answer when the primary is down, and httpguard.TargetHeader
//     names it.
//
// The package has no API; everything is in its tests.
package integration
