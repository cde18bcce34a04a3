// Package otelguard records what httpguard's layers do as OpenTelemetry
// metrics: attempts sent, retries by reason, refusals by the layer that
// refused, the Limiter's waits, the money the Budget charges by model, what
// remains of each Budget, the Breaker's state changes and the Fallback's
// switches. It is built on the layers' hooks
// (RetryPolicy.OnRetry, LimitConfig.OnThrottle, BudgetConfig.OnSettle,
// BreakerConfig.OnStateChange, FallbackConfig.OnSwitch) and on two Layers of
// its own, so it needs no change to the stack:
//
//	m, err := otelguard.New(meterProvider) // nil: the global MeterProvider
//	policy.OnRetry = m.OnRetry()
//	limits.OnThrottle = m.OnThrottle()
//	budgetConfig.OnSettle = m.OnSettle()
//	breakerConfig.OnStateChange = m.OnStateChange()
//	fallbackConfig.OnSwitch = m.OnSwitch()
//	budget, err := httpguard.NewBudget(budgetConfig)
//	stop := m.ObserveBudget(budget, attribute.String("budget", "daily"))
//	defer stop()
//	client := &http.Client{Transport: httpguard.Chain(nil,
//		m.Requests(), fallback, retrier, breaker, budget, limiter, m.Attempts())}
//
// Every hook and Layer takes attributes added to all it records. Attributes
// that vary by request, such as the tenant a gateway serves, go in the
// request's context with ContextWithAttributes: the hooks and Layers that
// see the request (every one but OnThrottle and OnStateChange) add them too.
//
// The instruments, with their attributes besides the caller's:
//
//	httpguard.requests              counter    requests that left the stack; outcome
//	                                           (answered, refused, error), http.response.status_code
//	                                           when answered, error.type (as for attempts) on an error
//	httpguard.attempts              counter    attempts sent to the server;
//	                                           http.response.status_code or error.type
//	                                           (timeout, canceled by the caller, connection)
//	httpguard.retries               counter    retries decided; httpguard.reason
//	                                           (status_429, status_503, ..., timeout, connection, server_said_retry)
//	httpguard.refusals              counter    requests a layer refused: unsent, or a retry
//	                                           after attempts the provider may have billed;
//	                                           httpguard.layer (budget, limiter, breaker, other),
//	                                           httpguard.reason
//	httpguard.limiter.wait          histogram  seconds of each wait (or of the wait refused) for a turn;
//	                                           httpguard.reason (requests, tokens, paused), httpguard.rejected.
//	                                           A request may wait more than once: on a store a fleet
//	                                           shares, another process may take the turn it waited
//	                                           for, and a server's pause moves it; each wait is a
//	                                           point, so the count is of waits, not of requests
//	httpguard.limiter.server_signals counter   server pauses and rate decreases; httpguard.reason
//	httpguard.spend                 counter    US dollars charged; gen_ai.request.model (the price
//	                                           table's entry: the model, or "*" for one it does not list)
//	httpguard.tokens                counter    tokens charged; gen_ai.request.model, gen_ai.token.type
//	httpguard.budget.remaining      gauge      US dollars left in the current window
//	httpguard.breaker.state_changes counter    circuits changing state; httpguard.circuit (the key,
//	                                           host and model by default; "_other" past the first 64
//	                                           keys, as callers choose models; bytes that are not
//	                                           UTF-8 as U+FFFD), httpguard.from,
//	                                           httpguard.to (closed, open, half-open)
//	httpguard.fallback.switches     counter    requests moved to the next target; httpguard.from,
//	                                           httpguard.to (target names), httpguard.reason
//	                                           (circuit_open, rate_limited, status_503, ...,
//	                                           timeout, connection, body_too_long: a body
//	                                           too long to read for its model skipped a
//	                                           target with Models, sent nothing;
//	                                           model_unreadable: likewise, a body whose
//	                                           model cannot be read, compressed or naming two;
//	                                           body_credentials: a body holding the caller's
//	                                           credentials, or one that cannot be read
//	                                           for them, sent to no target but the primary;
//	                                           remapped_below_budget: a Fallback placed below a
//	                                           Budget sent nothing to a target that would run
//	                                           another model than the one the Budget priced)
//
// A status no registry lists (net/http's StatusText), other than those
// providers send besides (499, 520 to 527, 529, 530), is recorded as
// http.response.status_code 0 and the reason status_invalid: an HTTP/1.1
// server may send any three digits, an HTTP/2 server any integer, and
// statuses a server makes up add no series.
//
// Money is exact inside the Budget; these instruments carry it as float64
// dollars, exact to the nano-dollar up to about $9 million.
package otelguard
