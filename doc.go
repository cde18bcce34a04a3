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
// or, with a spend cap and rate limits, Chain(nil, retrier, budget, limiter)
// (the Breaker and the Fallback join when a provider may be down).
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
//     requests and model tokens, per host and model, kept in a LimitStore a
//     fleet can share. It follows the server's 429s and x-ratelimit-* /
//     anthropic-ratelimit-* headers, and when the provider allows less than
//     configured it finds the real rate, cutting on 429s from the rate the
//     provider was accepting and recovering along CUBIC's curve, as the AWS
//     SDK's adaptive mode does.
//   - Budget (NewBudget, BudgetConfig): a spend cap in exact integer Money.
//     It reserves each attempt's worst-case cost before sending, refuses
//     with ErrBudgetExceeded what does not fit, and charges what the
//     provider may bill for the attempt.
//   - Breaker (NewBreaker, BreakerConfig): stops sending to a host and model
//     that is down, and reports a chat stream cut short as an error.
//   - Fallback (NewFallback, FallbackConfig): sends what the primary gives
//     up on to the next target, with its key and model.
//
// Beyond Go: the command httpguard proxy
// (github.com/holysheep/httpguard/cmd/httpguard) serves the same stack to
// any language as a local gateway,
// SDKs changing only their base URL, with tenants holding virtual keys;
// package otelguard (a nested module) records the layers as OpenTelemetry
// metrics from their hooks.
//
// Budgets and Limiters keep their state behind a store interface
// (BudgetStore, LimitStore); the stores of package
// github.com/holysheep/httpguard/redisguard keep it in Redis, so that every
// process of a fleet shares one cap and one rate.
//
// Each layer is usable alone. Chain stacks them; LayerFunc adds any other
// func(http.RoundTripper) http.RoundTripper middleware to the stack.
//
// # The stack
//
// The recommended order, outermost first, built with
// Chain(base, fallback, retrier, breaker, budget, limiter); leave out what
// you do not need (Chain(base, retrier, budget, limiter) for one provider):
//
//	caller (SDK)
//	   │
//	   ▼
//	Fallback  sends what a target gave up on to the next target, with its URL, key and
//	   │        model; never once a response has reached the caller
//	   ▼
//	Retrier   repeats failed attempts with backoff, bounded by one retry budget shared
//	   │        by every target (each attempt below is a fresh copy of the request)
//	   ▼
//	Breaker   counts every attempt's outcome per host and model; while a circuit is open
//	   │        it refuses at once, unsent; a chat stream cut short is an error
//	   ▼
//	Budget    reserves each attempt's worst case at the model its body names, refuses
//	   │        what does not fit, charges what the provider may bill for that attempt
//	   ▼
//	Limiter   paces every attempt, retries included, at the provider's real rate
//	   │
//	   ▼
//	base      http.DefaultTransport or your own
//
// Why this order. A provider bills every attempt that reached its model,
// answered or not, so the Budget must see each attempt: inside the Retrier
// it reserves, sends and settles every attempt on its own, with no protocol
// between the two layers (the Retrier only learns, through IsRefusal, that
// a refused attempt was never sent). Outside a Retrier the Budget would see
// one call and could not charge the attempts the Retrier made and
// discarded. The Limiter sits innermost so that every attempt, retries
// included, takes its turn, and so that a Budget refusal costs no turn.
//
// The Breaker sits inside the Retrier so that every attempt counts, as
// the provider saw it (a call whose four attempts failed is four
// failures), and so that an open circuit ends a call's retries at once. It
// sits above the Budget so that a refusal costs nothing: a refused attempt
// is no attempt to the Retrier (no retry spent, none earned) and reserves
// nothing in the Budget (not even a round trip to a shared store, for
// every call of an outage). The Fallback sits outside the one Retrier so
// that one retry budget covers every target: in a full outage of two
// targets each sees about one request per call (1.04 and 1.02 over 300
// calls), where a gateway that gives each fallback its own retries
// multiplies them. Below it, the Budget reads each attempt's rewritten body
// and prices it at the model it was sent to, under one Limit; the Breaker
// keys the attempt by the target's host and model.
//
// What the Budget charges, per attempt:
//
//	refused by the Budget (ErrBudgetExceeded,     nothing was sent; nothing is held
//	  ErrUnknownModel)
//	refused by a layer below (ErrRateLimited)      released
//	connection failed before the request was       released
//	  written (dial, DNS, TLS), or the request's
//	  context ended before the Budget sent it
//	  on, or net/http refused it (no host, an
//	  unsupported scheme, an invalid method,
//	  header or trailer)
//	its context ended after, in a layer below      its whole reservation: no trace tells
//	  that does not mark it a refusal, before        the Budget the request was not
//	  net/http asked for a connection                written (the Limiter's queue marks
//	                                                 it: released)
//	written, then reset, timed out or cut          its whole reservation: the provider
//	  before an answer (a 1xx, such as a 103         may have run it
//	  Early Hints, is none); or being written
//	  when it ended (its headers sent, the end
//	  of its body not reported: HTTP/2 goes on
//	  writing a cancelled request's body)
//	answered with an error status (3xx, 4xx, 5xx)  released: providers do not bill them
//	answered 101 (Switching Protocols)             its whole reservation (an upgrade under
//	                                                 an Upgrade key in another case: its
//	                                                 connection closed, ErrUnknownModel)
//	answered 2xx                                   the usage the answer reports, when the
//	                                                 body is read to its end, or closed
//	                                                 once the whole answer was read,
//	                                                 even if the Retrier discards it; the
//	                                                 reservation when it is closed before
//	                                                 that, or usage is missing,
//	                                                 lying or unreadable (a body
//	                                                 compressed because the caller set
//	                                                 Accept-Encoding), or the answer
//	                                                 is cut or its stream ends in an
//	                                                 error, goes on past its end or
//	                                                 lacks its final usage (an
//	                                                 Anthropic or Responses event,
//	                                                 or a chunk with output, after
//	                                                 the last usage) (then the
//	                                                 usage it reported, if that
//	                                                 costs more)
//
// So across any mix of faults and retries the money the provider may have
// billed stays within what the Budget charged, which stays within its
// Limit, except by an attempt that costs more than its reservation, which
// is charged in full: an answer longer than BudgetConfig.OutputReserve when
// the request sets no max_tokens, or a prompt whose bytes do not bound its
// tokens (audio, a file referenced by id or URL, a PDF of nearly empty pages,
// each of which the provider also bills as an image, an image, whose
// allowance is reserved at the input price and not Price.ImageInput, the
// results of server tools beyond web_fetch's max_content_tokens or
// BudgetConfig.ToolResultReserve a call, the tool definitions an MCP
// server lists to the model, input the provider stored beyond
// BudgetConfig.StoredInputReserve), or server tools that make more calls
// than their reservation (or, from a stored prompt, any call), or an
// answer that says it ran at Priority to a request priced at standard
// prices (see PriorityTier), charged at Priority prices, or in a region
// its request did not name (Anthropic's usage.inference_geo, from a
// workspace's default geo), charged at that region's prices, or an answer
// that says another model served it (its "model": a relay's own fallback,
// a router such as openrouter/auto; the key in any letter case, the
// dearer where decoders read two, as where a stream's first and last
// chunks name two), charged at that model's prices when
// the price table lists it and they come to more. A background response
// (OpenAI's "background": true) is answered queued, without usage, and
// charged its reservation alone: what it costs beyond, such as its server
// tools' results past their reserve, is not charged. Nor is an Anthropic
// answer whose usage.iterations lists a step of the advisor tool (which
// runs another model, at its prices) beyond its reservation: set
// BudgetConfig.ToolPrices["advisor"], reserved per call, to the worst case
// of one such call. Nor is a container (Code Interpreter's, a hosted
// shell's) kept running past the one 20-minute session reserved for it,
// which OpenAI bills as more, nor the containers of the tools a stored
// prompt declares: its code_interpreter calls, and its hosted shell's (the
// shell_call_output items of the answer), are each charged as a 1 GB
// container.
// Server tools are the tools a provider runs on its side and bills per
// call besides the tokens: web search (about $10 per 1,000 searches at
// Anthropic and OpenAI), file search, code execution. A request that
// declares one reserves its calls (Anthropic's max_uses, else OpenAI's
// max_tool_calls, else BudgetConfig.ToolCallReserve) at the fees of
// BudgetConfig.ToolPrices, and is charged the calls its answer counts
// (Anthropic's usage.server_tool_use, the call items of an OpenAI
// Responses output: see ToolCalls) or, when it counts none (chat
// completions' web_search_options), its reservation. OpenAI's Code
// Interpreter and hosted shell bill a container per session rather than
// calls: a request reserves, and is charged, one container a response at
// the fee of the default 1 GB one scaled by its memory_limit. A request that
// declares a tool without a fee is refused with ErrUnpricedTool (and
// ErrUnknownModel). What such a tool returns to the model (search results,
// a fetched page, an MCP tool's answer, code output) the provider bills as
// input tokens, and again at each later sampling of the turn (Anthropic
// counts search results as input on every later iteration): a request
// reserves at its input price, for each call (web_fetch's and MCP's too,
// which have no fee, Anthropic's mcp_servers included), web_fetch's
// max_content_tokens, else BudgetConfig.ToolResultReserve tokens, once
// more for each later call, and the prompt and output that each sampling
// after a call reads again, and is charged the input its answer reports,
// which holds them. Tools the client runs (bash, computer use, a shell
// without a hosted environment) return their results in a later
// request's body, priced there.
// OpenRouter's plugins are priced as tools ("plugin_<id>" in ToolPrices);
// fees a relay asks for outside tools the body declares otherwise (xAI's
// search_parameters) are not seen: Price.Request can cover them. Audio
// tokens are priced at their own prices
// (Price.AudioInput and Price.AudioOutput: OpenAI bills gpt-4o-audio-preview's
// audio output at $80 per million against $10 for text), and a request
// that asks for audio output (modalities holding "audio", or an audio
// object, or any request to /audio/speech) reserves its output at the
// dearer of the two; a price table
// without audio prices prices audio as text. Image tokens that usage
// counts apart (image_tokens in its details) are likewise priced at
// Price.ImageInput and Price.ImageOutput (Gemini 2.5 Flash Image's images
// at $30 per million against $2.50 for its text), and a request that asks
// for image output (modalities holding "image"), or lists no outputs (no,
// null or empty modalities: the model's default ones), or goes to the
// Images API, reserves its output at the dearer of Output and ImageOutput;
// without image prices, images are priced as text. The Images API takes no
// max_tokens: each image reserves the output tokens its model, quality and
// size may be billed (OpenAI's table for gpt-image-1, gpt-image-1.5 and
// gpt-image-1-mini, the dearest entry for a quality or size left out or
// auto, 100 a partial image; for other models BudgetConfig.ImageReserve,
// by default 16,384 tokens or OutputReserve, the more), and its prompt, which holds an edit's images (a JSON body
// or a multipart form), at the dearer of Input and ImageInput. A transport that does not report
// through net/http/httptrace whether it wrote the request is assumed to
// have written it. Once an attempt was written and got no answer, nothing
// below the Budget may send it again on its reservation alone: net/http,
// which sends a request again on its own when its HTTP/2 stream is reset
// or its connection gets a GOAWAY (a POST too: a server retiring its
// connection turns away the streams in flight), or when a replayable one
// (a GET, one with an Idempotency-Key) loses its kept-alive connection,
// sends it again once on a second reservation the Budget holds for it,
// when the window has room (the lost write is charged its reservation in
// full: the server may say it did not process the stream and still have
// billed it). Otherwise, and after a second lost write, GetBody fails, and
// a Retrier above sends the request again under a reservation of its own
// (a Budget used without a Retrier above it returns that error). Nor
// may a Retrier placed below the Budget send again an attempt whose
// answer the provider may have billed: a 2xx it discards (its Classifier
// retries the 2xx, or its AttemptTimeout ended the attempt as the answer
// came in), or an error after the answer began; the Retrier returns what
// it has. The
// counting errs on the safe side once more: net/http reports a request
// written when it has filled the connection's buffer, so one whose flush
// fails on a kept-alive connection the server had closed is charged its
// reservation, and is not sent again on it, though the server never saw
// it. An informational response (a 103 Early Hints, a 100 Continue)
// answers nothing: a write followed only by one is unanswered (and, on the
// safe side, one answered after one), and since net/http then leaves the
// bounding of such responses to the Budget, an exchange that begins with
// more than 32 of them ends in an error, unless the caller's own trace
// takes them too.
//
// One bound holds only while processes live. A reservation in a
// BudgetStore carries a lease, renewed while its attempt is in flight, so
// that a process that dies does not hold its money forever: when the lease
// ends the money goes back to the window, as the store contract asks,
// though the provider may still bill the attempts the process had sent (a
// request keeps running after its client is gone). Across a crash the
// money billed may pass the Limit by at most the reservations the dead
// process held, each an attempt's worst case; keeping them charged
// instead would hold the budget for the rest of its window (for ever,
// without one) against attempts most often never billed in full.
//
// A request body is read exactly as a JSON decoder reads it (escaped keys
// decoded, the last of duplicate keys winning; a model, a count, a thinking
// budget or a reasoning_effort given twice is refused, as gjson and
// simdjson keep the first, and so is a key the Budget reads spelled in
// another case) and refused when Go and Python servers would read it
// differently, so a reservation is never below what some server would run;
// it covers the n, best_of and candidate_count candidates, of each prompt
// of a batched legacy completion, and the max_tokens LiteLLM adds to a
// thinking budget sent without one.
//
// A 2xx is never retried by DefaultClassifier, even when the server sends
// x-should-retry: true: the answer was produced and billed, and the caller
// gets it. A Classifier of your own that retries a 2xx still has the
// discarded answer charged.
//
// How the layers pass information to each other is listed, with who
// writes and who reads it, at the top of stack.go; each layer works alone,
// and a layer of your own marks its refusals with Refuse.
//
// # The retry budget
//
// Why it follows the success rate. A retry costs the provider one more
// request and pays off with the chance that it succeeds, close to the
// recent success rate s of attempts. gRPC's retry throttling, the previous
// design, charged each failure a token and refunded 0.1 per success, so it
// stopped retrying once failures passed about a tenth of outcomes whether
// or not retries succeeded: with 3 retries it served 79.8% of calls at 20%
// random faults, less than no budget at all. A provider is far more often
// degraded than down.
//
// So each request earns RetryBudget.MaxRatio·s retries (at least MinRatio),
// and each retry spends one; up to Burst are saved, and a fresh Retrier
// starts full. A request needs (1−s)/s retries on average; with MaxRatio 1
// it earns s, enough while s² ≥ 1−s, up to about 38% faults. Up to 20%
// faults the budget never refuses a retry (99.8% of calls served, exactly
// the requests go-retryablehttp sends). Beyond that, retries shrink with
// their chance of success: the retries that fail, MaxRatio·s·(1−s) per
// request, never exceed MaxRatio/4.
//
// In a full outage s falls by a tenth per failed attempt and nears 0 within
// a few dozen attempts: the onset costs at most Burst plus about 10 earned
// retries, and after that each call costs 1 + MinRatio requests (1.022 per
// call over 1,000 calls, against go-retryablehttp's 4.0). An outage that
// drops connections unanswered begins dearer, since a first attempt so
// lost counts neither way (it is most often a server's idle timeout
// closing a kept-alive connection): about Burst plus 25 retries (1.044
// requests per call over 1,000 calls, 1.012 over the last 500). Each
// success moves s a tenth of the way back to 1, so retries resume by
// themselves: the first within 4 successful calls, five within 11, the full
// Burst within 18. The state is two atomic words; a healthy request only
// loads them.
//
// # The RoundTripper contract
//
// Every layer keeps the contract of net/http.RoundTripper:
//
//   - "A RoundTripper must be safe for concurrent use by multiple
//     goroutines." Retrier, Budget, Limiter, Breaker and Fallback are, and
//     so are the RoundTrippers they return; share one of each per provider.
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
// error; every response a layer discards is drained and closed. A layer's
// wait (the Retrier's backoff, the Limiter's queue, the Budget's wait for
// room) ends with the request's context, and with its Cancel channel too
// (deprecated, still honoured by net/http), sending nothing more.
//
// # Errors
//
// Layers report their refusals as errors, wrapped with %w and context and
// marked with Refuse; net/http wraps them again in *url.Error and SDKs in
// their own types, so compare with errors.Is: ErrBudgetExceeded and
// ErrUnknownModel (Budget), ErrRateLimited (Limiter) and ErrCircuitOpen
// (Breaker) mean the attempt they refused was not sent, and a Retrier does
// not retry them; IsRefusal says so too. One ErrUnknownModel is no refusal:
// a 101 Switching Protocols that answered an upgrade asked under an Upgrade
// key in another case (the attempt was sent, its connection then closed),
// which a Retrier does not send again either. A retry can be refused
// after attempts went out, whose charges stand: RetryError.Attempts counts the attempts actually sent, and
// only 0, with IsRefusal true, means nothing was sent.
// ErrAttemptTimeout is an attempt that exceeded RetryPolicy.AttemptTimeout;
// it is retried, and when it ends the last attempt the Retrier returns it
// inside a *RetryError.
//
// # Working with SDKs that retry
//
// openai-go and anthropic-sdk-go retry by themselves (twice by default), on
// top of the transport. The Retrier marks every response it returns with
// X-Should-Retry: false, which they obey: they do not retry a status they
// would (408, 409, 429, 5xx), nor a 2xx whose body breaks off while
// anthropic-sdk-go reads it (billed once already), unless
// anthropic-sdk-go's own option.WithRequestTimeout ends its attempt, while
// it reads the body or while the Retrier is still at work (a retry the
// server holds): it then retries whatever the header says, and the
// Retrier's attempts run again, each billed and charged (openai-go returns
// the context's error instead). For transport errors and the layers'
// refusals they still retry, after a backoff of 0.4–1.5s that a caller's
// deadline may end first (the caller then gets context.DeadlineExceeded,
// not the refusal), so option.WithMaxRetries(0) is the surest way to keep
// one retry loop in charge.
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
