package httpguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrBudgetExceeded is returned, wrapped, when a request's worst-case cost
// does not fit in what is left of a Budget: at once when the money already
// settled leaves no room, or after waiting in vain for requests in flight to
// settle (see BudgetConfig.MaxWait; a wait cut short by the request's
// context wraps the context's error too). Nothing of the request was sent.
// The error names the model and the amounts:
//
//	httpguard: budget: model "gpt-4.1": need $0.0012, remaining $0.0003: budget exceeded
//
// A Budget outside the Retrier (the recommended order) is not retried by
// it; http.Client wraps the error in a *url.Error and SDKs in their own
// types, so test for it with errors.Is.
var ErrBudgetExceeded = errors.New("budget exceeded")

// ErrUnknownModel is returned, wrapped, when a Budget cannot price a
// request: its model is not in the price table (and the table has no
// FallbackModel entry), or its body is not a JSON request naming a model
// (or is longer than BudgetConfig.MaxBufferedBody). Nothing of the request
// was sent: a budget fails closed. The error names the model, as in
// httpguard: budget: model "gpt-5" has no price: unknown model.
var ErrUnknownModel = errors.New("unknown model")

// DefaultMaxOutputTokens is the output a Budget reserves for a request that
// sets no max_tokens (or max_completion_tokens, max_output_tokens), unless
// BudgetConfig.DefaultMaxOutput says otherwise.
const DefaultMaxOutputTokens = 4096

// MaxBudgetLimit is the largest Limit a Budget accepts, $1 billion: it keeps
// every sum of settled and reserved money far from overflowing Money.
const MaxBudgetLimit = 1_000_000_000 * Dollar

// Period is a calendar period after which a Budget starts again from zero.
// The zero value is NoPeriod.
type Period int

const (
	// NoPeriod means the budget's window is BudgetConfig.Window.
	NoPeriod Period = iota
	// Daily budgets reset at midnight in BudgetConfig.Location.
	Daily
	// Monthly budgets reset at midnight on the first of each month in
	// BudgetConfig.Location.
	Monthly
)

// String returns the period's name, such as "Daily".
func (p Period) String() string {
	switch p {
	case NoPeriod:
		return "NoPeriod"
	case Daily:
		return "Daily"
	case Monthly:
		return "Monthly"
	}
	return fmt.Sprintf("Period(%d)", int(p))
}

// BudgetConfig configures a Budget; NewBudget copies it (and its Prices).
// Only Limit and Prices are required, so the zero BudgetConfig is invalid;
// every other field's zero value is a documented default.
type BudgetConfig struct {
	// Limit is the most the budget spends in one window. Required, in
	// ($0, MaxBudgetLimit].
	Limit Money

	// Window is the length of fixed windows after which spending starts
	// again from zero; windows are aligned to whole multiples of Window
	// since the zero time.Time (UTC), so an hour resets at the top of each
	// UTC hour. Zero, with Period NoPeriod, means one window for the life of
	// the process (or of the Store).
	Window time.Duration
	// Period selects a calendar window instead: Daily or Monthly, in
	// Location. Set Window or Period, not both.
	Period Period
	// Location is the time zone of Period's calendar; nil means UTC.
	Location *time.Location

	// Prices prices each model, per million tokens. Required. The budget
	// keeps a copy. See ExamplePrices and LoadPrices.
	Prices PriceTable

	// Store holds the totals. Nil means an in-memory store for this Budget
	// alone. A shared store (such as one on Redis) caps a fleet; requests
	// waiting for room (see MaxWait) check it again every 200ms, since other
	// processes settle there unseen.
	Store BudgetStore

	// DefaultMaxOutput is how many output tokens are reserved for a request
	// that does not limit them. Zero means DefaultMaxOutputTokens. An
	// answer that runs longer is still charged in full, so spending can then
	// pass Limit by the difference; set max_tokens in requests to make the
	// cap exact.
	DefaultMaxOutput int64

	// Alerts are fractions of Limit in (0, 1]; OnAlert is called once per
	// window when settled spending first reaches each of them. nil means no
	// alerts.
	Alerts []float64
	// OnAlert receives alerts; it is required when Alerts is set. It runs on
	// the goroutine that finished a response body (its Read or Close), so it
	// should return quickly and be safe for concurrent use.
	OnAlert func(BudgetAlert)

	// DisableStreamUsage stops the budget from adding
	// "stream_options":{"include_usage":true} to streaming OpenAI-style
	// requests (to paths ending in /completions) that lack it; false, the
	// zero value, adds it. Without usage in the stream, a streaming request
	// is charged its full reservation. When the budget adds the option, it
	// removes the usage-only chunk (the one with "choices":[]) from the
	// stream the caller reads, so callers that index Choices[0] keep working.
	DisableStreamUsage bool

	// MaxBufferedBody is how many bytes of a request body the budget reads
	// to price it (bodies without GetBody are kept in memory to be sent).
	// Zero means DefaultMaxBufferedBody. Larger bodies are refused: they
	// cannot be priced.
	MaxBufferedBody int64

	// MaxWait bounds how long a request waits for room that requests in
	// flight hold. When a request's reservation does not fit only because
	// of other requests' reservations (which usually settle far lower, as
	// answers rarely use all of max_tokens), it waits for them to settle
	// and tries again, instead of being refused; it is refused at once when
	// the money already settled leaves no room for it. A waiting request
	// holds nothing and gives up with ErrBudgetExceeded when MaxWait passes
	// or its context ends, without sending anything.
	//
	// Zero means 30 seconds: long enough for answers in flight to finish,
	// and a bound for when they never will (a caller that does not close
	// response bodies holds its reservations until the window ends, and
	// without a bound every later request would wait as long as its
	// context allows). A negative MaxWait never waits: a request that does
	// not fit is refused at once, as if the requests in flight would spend
	// their whole reservations.
	//
	// Waiting requests are woken by every settlement and are not queued:
	// whichever fits first goes first, so small requests may pass a large
	// one that waits.
	MaxWait time.Duration

	// Logger, when set, receives store errors. Nil means silent.
	Logger *slog.Logger
}

// defaultBudgetMaxWait is BudgetConfig.MaxWait's default.
const defaultBudgetMaxWait = 30 * time.Second

// budgetPollInterval is how often a request waiting for room checks a
// shared Store again: the Budget hears of its own settlements at once, but
// not of those other processes make.
const budgetPollInterval = 200 * time.Millisecond

// BudgetAlert tells that settled spending in a window reached a threshold,
// for BudgetConfig.OnAlert. It is a plain value, safe to keep.
type BudgetAlert struct {
	Threshold float64 // the fraction of Limit reached, from BudgetConfig.Alerts
	Spent     Money   // settled spending in the window
	Limit     Money   // BudgetConfig.Limit
	Window    string  // the window's key, such as "day:2026-11-25"
}

// BudgetStore keeps a budget's totals per window: settled (money actually
// spent) and reserved (money held by requests in flight). Implementations
// must be safe for concurrent use and make each method atomic; a Redis
// store would run each as a Lua script on two counters per window key.
// Windows are opaque strings such as "lifetime", "day:2026-11-25",
// "month:2026-11" or "window:1h0m0s:2026-11-25T10:00:00Z". A window the
// store has never seen has zero totals. An error from Reserve or Totals
// refuses the request (the Budget fails closed); an error from Settle is
// logged to BudgetConfig.Logger.
type BudgetStore interface {
	// Reserve adds amount to window's reserved total if settled + reserved
	// + amount stays within limit, and reports whether it did. remaining is
	// limit - settled - reserved after the call (not below zero).
	Reserve(ctx context.Context, window string, amount, limit Money) (ok bool, remaining Money, err error)
	// Settle ends a reservation: it subtracts reserved from window's
	// reserved total and adds actual to its settled total, returning the
	// new settled total.
	Settle(ctx context.Context, window string, reserved, actual Money) (settled Money, err error)
	// Totals returns window's settled and reserved totals.
	Totals(ctx context.Context, window string) (settled, reserved Money, err error)
}

// Budget is a Layer that caps spending on AI APIs. Before a request is
// sent it reserves the request's worst-case cost (its prompt bound at the
// input price plus its output bound at the output price) and refuses the
// request with ErrBudgetExceeded when that does not fit; nothing is sent.
// When it does not fit only because other requests in flight hold
// reservations, it first waits (up to BudgetConfig.MaxWait) for them to
// settle, since answers usually cost far less than their worst case: a cap
// is spent to within one request's reservation however many requests run
// at once.
// When the caller reads the response body to its end or closes it, the
// reservation is settled to the cost of the usage the answer reports, and
// the rest is released. Settled plus reserved money never exceeds Limit,
// except when an answer costs more than its reservation (an answer longer
// than BudgetConfig.DefaultMaxOutput when the request set no max_tokens, or
// inputs whose tokens do not come from the body's bytes: audio, and files
// referenced by id); that money was spent, so it is counted.
//
// Settlement rules:
//   - A 2xx answer with usage: its cost, rounded to the nearest nano-dollar.
//   - A 2xx answer without usable usage (no usage, a stream cut short, an
//     error inside the stream, malformed or lying usage, a body closed
//     early): the full reservation.
//   - Any other status (4xx, 5xx, redirects): nothing; providers do not
//     bill failed requests.
//   - A transport error before the request was written (dial, DNS, TLS):
//     nothing. After it was written (a timeout or reset while waiting for
//     the answer): the full reservation, since the provider may have run
//     and billed it.
//
// Requests without a body (GET /models) pass through unpriced. Callers must
// close response bodies, as net/http requires, or their reservations stay
// held until the window ends (and requests waiting for that money wait
// MaxWait in vain).
//
// The Budget hears of its own settlements at once. With a shared Store,
// where other processes settle too, waiting requests also check the store
// again every 200ms.
//
// Make a Budget with NewBudget; the zero Budget is not usable. Budget is
// safe for concurrent use by multiple goroutines, and one Budget may wrap
// several transports, which then share its cap.
type Budget struct {
	limit            Money
	window           time.Duration
	period           Period
	loc              *time.Location
	prices           PriceTable
	store            BudgetStore
	defaultMaxOutput int64
	alerts           []float64 // ascending
	alertAt          []Money   // the settled amount at which each alert fires
	onAlert          func(BudgetAlert)
	streamUsage      bool
	maxBody          int64
	logger           *slog.Logger
	now              func() time.Time // injected by tests
	maxWait          time.Duration    // < 0: never wait
	poll             time.Duration    // 0: no polling (the Budget's own store)
	onWait           func()           // called when a request starts waiting; for tests

	// settled is closed at the next settlement, to wake the requests
	// waiting for room; nil while nobody waits. waiting counts the requests
	// in reserve's slow path, so that settlements skip the mutex while
	// nobody waits.
	settledMu sync.Mutex
	settled   chan struct{}
	waiting   atomic.Int32

	span atomic.Pointer[windowSpan]

	alertMu     sync.Mutex
	alertWindow string
	alertsFired int // alerts[:alertsFired] fired in alertWindow
}

// windowSpan is the current window and its time range [start, end).
type windowSpan struct {
	key        string
	start, end time.Time
}

// NewBudget validates c and returns a Budget, or an error (prefixed
// "httpguard: budget:") saying which field of c is invalid.
func NewBudget(c BudgetConfig) (*Budget, error) {
	fail := func(format string, args ...any) (*Budget, error) {
		return nil, fmt.Errorf("httpguard: budget: "+format, args...)
	}
	switch {
	case c.Limit <= 0 || c.Limit > MaxBudgetLimit:
		return fail("Limit must be in ($0, %v], got %v", MaxBudgetLimit, c.Limit)
	case c.Window < 0:
		return fail("Window must be >= 0, got %v", c.Window)
	case c.Period < NoPeriod || c.Period > Monthly:
		return fail("Period must be NoPeriod, Daily or Monthly, got %v", c.Period)
	case c.Period != NoPeriod && c.Window != 0:
		return fail("set Window or Period, not both (Window %v, Period %v)", c.Window, c.Period)
	case c.Location != nil && c.Period == NoPeriod:
		return fail("Location applies to a Period; set Period Daily or Monthly")
	case len(c.Prices) == 0:
		return fail("Prices is empty: load your provider's prices with LoadPrices (ExamplePrices shows the format)")
	case c.DefaultMaxOutput < 0:
		return fail("DefaultMaxOutput must be >= 0, got %d", c.DefaultMaxOutput)
	case c.MaxBufferedBody < 0:
		return fail("MaxBufferedBody must be >= 0, got %d", c.MaxBufferedBody)
	case len(c.Alerts) > 0 && c.OnAlert == nil:
		return fail("Alerts need OnAlert")
	}
	if err := c.Prices.validate(); err != nil {
		return fail("Prices: %w", err)
	}
	for _, a := range c.Alerts {
		if !(a > 0 && a <= 1) {
			return fail("Alerts must be fractions of Limit in (0, 1], got %v", a)
		}
	}
	b := &Budget{
		limit:            c.Limit,
		window:           c.Window,
		period:           c.Period,
		loc:              c.Location,
		prices:           maps.Clone(c.Prices),
		store:            c.Store,
		defaultMaxOutput: c.DefaultMaxOutput,
		alerts:           slices.Compact(slices.Sorted(slices.Values(c.Alerts))),
		onAlert:          c.OnAlert,
		streamUsage:      !c.DisableStreamUsage,
		maxBody:          c.MaxBufferedBody,
		logger:           c.Logger,
		now:              time.Now,
		maxWait:          c.MaxWait,
	}
	if b.maxWait == 0 {
		b.maxWait = defaultBudgetMaxWait
	}
	if b.loc == nil {
		b.loc = time.UTC
	}
	if b.store == nil {
		b.store = newMemoryBudgetStore()
	} else {
		b.poll = budgetPollInterval
	}
	if b.defaultMaxOutput == 0 {
		b.defaultMaxOutput = DefaultMaxOutputTokens
	}
	if b.maxBody == 0 {
		b.maxBody = DefaultMaxBufferedBody
	}
	for _, a := range b.alerts {
		at := math.Ceil(a * float64(b.limit))
		b.alertAt = append(b.alertAt, Money(min(at, float64(b.limit))))
	}
	return b, nil
}

// Spent returns the money settled in the current window. It returns 0 when
// the store fails (and logs the error to the Logger).
func (b *Budget) Spent() Money {
	settled, _, _ := b.totals()
	return settled
}

// Remaining returns what is left in the current window: Limit minus the
// money settled and reserved, not below zero. It returns 0 when the store
// fails.
func (b *Budget) Remaining() Money {
	settled, reserved, ok := b.totals()
	if !ok {
		return 0
	}
	return max(0, b.limit-settled-reserved)
}

func (b *Budget) totals() (settled, reserved Money, ok bool) {
	key := b.currentSpan(b.now()).key
	settled, reserved, err := b.store.Totals(context.Background(), key)
	if err != nil {
		b.log("totals", key, err)
		return 0, 0, false
	}
	return settled, reserved, true
}

// Wrap returns a RoundTripper that applies the budget to requests before
// passing them to next (nil means http.DefaultTransport). The returned
// RoundTripper forwards CloseIdleConnections to next.
func (b *Budget) Wrap(next http.RoundTripper) http.RoundTripper {
	if b == nil { // a layer left unconfigured: Chain skips it
		return orDefault(next)
	}
	return &budgetTransport{b: b, next: orDefault(next)}
}

type budgetTransport struct {
	b    *Budget
	next http.RoundTripper
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport below.
func (t *budgetTransport) CloseIdleConnections() { closeIdleConnections(t.next) }

func (t *budgetTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return t.next.RoundTrip(req)
	}
	b := t.b
	q, err := b.price(req)
	if err != nil {
		closeRequestBody(req)
		return nil, Refuse(err)
	}

	ctx := req.Context()
	window, err := b.reserve(ctx, &q)
	if err != nil {
		closeRequestBody(q.r)
		return nil, Refuse(err)
	}

	// One allocation holds everything the request's hooks need: the trace
	// that tells whether the request was written, and the body reader that
	// settles the reservation.
	// The call is also the request's context, so that a Limiter below finds
	// the parsed body there instead of reading and parsing it again.
	call := &budgetCall{Context: ctx, b: b, window: window, reserve: q.reserve, price: q.price}
	call.parsed.chat = q.chat
	call.trace.WroteRequest = call.wroteRequest
	call.trace.GotFirstResponseByte = call.gotFirstResponseByte
	r := q.r.WithContext(httptrace.WithClientTrace(call, &call.trace))
	if q.streamBody != nil {
		closeRequestBody(q.r) // a GetBody request's Body was not read
		q.streamBody.apply(r)
	}
	call.parsed.sent = r

	resp, err := t.next.RoundTrip(r)
	if err != nil {
		// Whether the request reached the wire decides who pays for a
		// transport error: before, nobody; after, the provider may have run
		// (and billed) it. With a Retrier below there were several
		// attempts: only one written and never answered may have been
		// billed, since an answered one that was retried had an error
		// status. Counting, not a flag: a write may be reported after its
		// answer.
		if call.writes.Load() > call.answers.Load() {
			b.settle(window, q.reserve, q.reserve)
		} else {
			b.settle(window, q.reserve, 0)
		}
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b.settle(window, q.reserve, 0)
		return resp, nil
	}
	if resp.Body == nil {
		call.reportUsage(Usage{}, false)
	} else {
		call.usage.observe(resp, call)
	}
	if q.streamBody != nil && resp.Body != nil && isEventStream(resp.Header.Get("Content-Type")) {
		resp.Body = newUsageChunkStripper(resp.Body)
		// The hidden chunk shortens the body: its length is no longer known.
		resp.ContentLength = -1
		resp.Header.Del("Content-Length")
	}
	return resp, nil
}

// quote is a priced request, ready to be reserved.
type quote struct {
	r          *http.Request // the request to send: req, or a copy replaying its body
	streamBody *bodyEdit     // when not nil, the edit that adds include_usage to the body sent
	chat       chatRequest   // what the body says, for the layers below
	model      string
	price      Price
	reserve    Money
}

// bodyBuffers holds buffers for reading the bodies of requests with
// GetBody, which are only read to be priced: their bytes are not kept.
var bodyBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBody is the largest buffer kept in bodyBuffers, so that one huge
// request does not pin its memory.
const maxPooledBody = 64 << 10

// price reads req's body and prices it. It does not close req.Body; on
// success q.r is req or, for a body without GetBody, a copy that replays it.
func (b *Budget) price(req *http.Request) (quote, error) {
	var body []byte
	var err error
	q := quote{r: req}
	if req.GetBody != nil {
		buf := bodyBuffers.Get().(*[]byte)
		body, err = readGetBody(req, b.maxBody, *buf)
		defer func() {
			if cap(body) <= maxPooledBody {
				*buf = body[:0]
				bodyBuffers.Put(buf)
			}
		}()
	} else {
		q.r, body, err = replayable(req, b.maxBody)
	}
	if err != nil {
		if q.r != req {
			closeRequestBody(q.r) // what is left of an over-long body
		}
		if errors.Is(err, errBodyTooLarge) {
			return q, fmt.Errorf("httpguard: budget: request body over MaxBufferedBody (%d bytes) cannot be priced: %w", b.maxBody, ErrUnknownModel)
		}
		return q, fmt.Errorf("httpguard: budget: reading the request body: %w", err)
	}
	cr, err := parseChatRequest(body)
	if err != nil || cr.Model == "" {
		return q, fmt.Errorf("httpguard: budget: request body is not a JSON request naming a model: %w", ErrUnknownModel)
	}
	price, ok := b.prices.lookup(cr.Model)
	if !ok {
		return q, fmt.Errorf("httpguard: budget: model %q has no price: %w", cr.Model, ErrUnknownModel)
	}
	output := cr.MaxOutput
	if output == 0 {
		output = b.defaultMaxOutput
	}
	q.model, q.price, q.chat = cr.Model, price, cr
	outputs := int64(math.MaxInt64) // saturated: DefaultMaxOutput is unbounded
	if output <= math.MaxInt64/cr.Choices {
		outputs = output * cr.Choices
	}
	q.reserve = price.reserve(cr.PromptTokens, outputs)
	if b.streamUsage && acceptsStreamOptions(req) {
		if e, changed := withStreamUsage(body, cr); changed {
			q.streamBody = &e
		}
	}
	return q, nil
}

// reserve holds q.reserve in the current window and returns the window.
// When the money is held by requests in flight it waits for them to settle
// (see BudgetConfig.MaxWait), or for the window to end, which frees it too;
// when settled money alone leaves no room it refuses at once.
func (b *Budget) reserve(ctx context.Context, q *quote) (string, error) {
	span := b.currentSpan(b.now())
	ok, remaining, err := b.store.Reserve(ctx, span.key, q.reserve, b.limit)
	switch {
	case err != nil:
		return "", fmt.Errorf("httpguard: budget: store: %w", err)
	case ok:
		return span.key, nil
	case b.maxWait < 0:
		return "", b.refuse(q, remaining)
	}

	// The slow path: wait for settlements, checking the store again after
	// each. The waiter is counted and takes the wake-up channel before it
	// checks the store, so that a settlement between the check and the
	// wait is not missed: either the settlement sees the waiter and closes
	// the channel, or it happened before the check (the store orders them).
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	var timeout, poll <-chan time.Time
	var windowEnd *time.Timer // fires when span ends, if it ends before the wait does
	var windowEndKey string   // the window windowEnd is armed for
	defer func() {
		if windowEnd != nil {
			windowEnd.Stop()
		}
	}()
	for {
		settled := b.nextSettlement()
		ok, remaining, err = b.store.Reserve(ctx, span.key, q.reserve, b.limit)
		switch {
		case err != nil:
			return "", fmt.Errorf("httpguard: budget: store: %w", err)
		case ok:
			return span.key, nil
		}
		spent, _, err := b.store.Totals(ctx, span.key)
		if err != nil {
			return "", fmt.Errorf("httpguard: budget: store: %w", err)
		}
		if b.limit-spent < q.reserve {
			return "", b.refuse(q, remaining) // nothing in flight can make room
		}
		if timeout == nil {
			if ctx.Err() != nil {
				return "", b.refuseWaiting(q, remaining, ctx.Err())
			}
			t := time.NewTimer(b.maxWait)
			defer t.Stop()
			timeout = t.C
			if b.poll > 0 {
				tk := time.NewTicker(b.poll)
				defer tk.Stop()
				poll = tk.C
			}
			if b.onWait != nil {
				b.onWait()
			}
		}
		var ended <-chan time.Time
		if until := span.end.Sub(b.now()); until < b.maxWait {
			switch {
			case windowEnd == nil:
				windowEnd = time.NewTimer(max(until, 0))
			case windowEndKey != span.key:
				windowEnd.Reset(max(until, 0))
			}
			windowEndKey, ended = span.key, windowEnd.C
		}
		select {
		case <-settled:
		case <-poll:
		case <-ended:
			windowEndKey = "" // spent: re-arm for the next window
		case <-timeout:
			// One last look: a shared store may have made room since the
			// last poll.
			span = b.currentSpan(b.now())
			if ok, remaining, err = b.store.Reserve(ctx, span.key, q.reserve, b.limit); err == nil && ok {
				return span.key, nil
			}
			return "", b.refuseWaiting(q, remaining, nil)
		case <-ctx.Done():
			return "", b.refuseWaiting(q, remaining, ctx.Err())
		}
		span = b.currentSpan(b.now())
	}
}

// nextSettlement returns a channel closed at the next settlement.
func (b *Budget) nextSettlement() <-chan struct{} {
	b.settledMu.Lock()
	defer b.settledMu.Unlock()
	if b.settled == nil {
		b.settled = make(chan struct{})
	}
	return b.settled
}

// wakeWaiters tells the requests waiting for room that money was released.
func (b *Budget) wakeWaiters() {
	if b.waiting.Load() == 0 {
		return
	}
	b.settledMu.Lock()
	if b.settled != nil {
		close(b.settled)
		b.settled = nil
	}
	b.settledMu.Unlock()
}

func (b *Budget) refuse(q *quote, remaining Money) error {
	return fmt.Errorf("httpguard: budget: model %q: need %v, remaining %v: %w", q.model, q.reserve, remaining, ErrBudgetExceeded)
}

// refuseWaiting is the error of a request that waited for room in vain:
// until MaxWait passed, or until its context ended (ctxErr).
func (b *Budget) refuseWaiting(q *quote, remaining Money, ctxErr error) error {
	if ctxErr != nil {
		return fmt.Errorf("httpguard: budget: model %q: need %v, remaining %v while waiting for requests in flight (%w): %w", q.model, q.reserve, remaining, ctxErr, ErrBudgetExceeded)
	}
	return fmt.Errorf("httpguard: budget: model %q: need %v, remaining %v after waiting %v (MaxWait) for requests in flight: %w", q.model, q.reserve, remaining, b.maxWait, ErrBudgetExceeded)
}

// budgetCall is one priced request in flight: one allocation for what its
// hooks need.
type budgetCall struct {
	context.Context // the request's; Value adds the parsed body

	parsed  parsedRequest // the request sent down, and its parsed body
	b       *Budget
	window  string
	reserve Money
	price   Price
	writes  atomic.Int32 // attempts that wrote the whole request
	answers atomic.Int32 // attempts that got an answer
	trace   httptrace.ClientTrace
	usage   usageReader // the response body, when the answer is a 2xx
}

func (c *budgetCall) wroteRequest(info httptrace.WroteRequestInfo) {
	if info.Err == nil {
		c.writes.Add(1)
	}
}

func (c *budgetCall) gotFirstResponseByte() { c.answers.Add(1) }

// Value makes the parsed request body known to the layers below (see
// parsedChat), and defers every other key to the request's context.
func (c *budgetCall) Value(key any) any {
	if key == (parsedChatKey{}) {
		return &c.parsed
	}
	return c.Context.Value(key)
}

// reportUsage settles the reservation once the answer's usage is known (or
// known to be missing: then the reservation is the charge).
func (c *budgetCall) reportUsage(u Usage, ok bool) {
	actual := c.reserve
	if ok {
		actual = c.price.Cost(u)
	}
	c.b.settle(c.window, c.reserve, actual)
}

// acceptsStreamOptions reports whether a request goes to an OpenAI-style
// completions endpoint, where stream_options.include_usage is known. Other
// APIs (Anthropic messages, OpenAI responses) report usage in their streams
// anyway, and may reject a parameter they do not know.
func acceptsStreamOptions(req *http.Request) bool {
	return strings.HasSuffix(req.URL.Path, "/completions") && req.Header.Get("Anthropic-Version") == ""
}

func closeRequestBody(r *http.Request) {
	if r.Body != nil {
		r.Body.Close()
	}
}

// settle ends a reservation and fires the alerts it crosses.
func (b *Budget) settle(window string, reserved, actual Money) {
	settled, err := b.store.Settle(context.Background(), window, reserved, actual)
	b.wakeWaiters()
	if err != nil {
		b.log("settle", window, err)
		return
	}
	if len(b.alerts) == 0 {
		return
	}
	b.alertMu.Lock()
	if window != b.alertWindow {
		if window != b.currentSpan(b.now()).key {
			b.alertMu.Unlock()
			return // a late settlement in a window that has ended
		}
		b.alertWindow, b.alertsFired = window, 0
	}
	from := b.alertsFired
	for b.alertsFired < len(b.alerts) && settled >= b.alertAt[b.alertsFired] {
		b.alertsFired++
	}
	to := b.alertsFired
	b.alertMu.Unlock()
	for _, a := range b.alerts[from:to] {
		b.onAlert(BudgetAlert{Threshold: a, Spent: settled, Limit: b.limit, Window: window})
	}
}

func (b *Budget) log(op, window string, err error) {
	if b.logger != nil {
		b.logger.Error("httpguard: budget: store failed", "op", op, "window", window, "err", err)
	}
}

// currentSpan returns the window now falls in, cached until it ends.
func (b *Budget) currentSpan(now time.Time) *windowSpan {
	if s := b.span.Load(); s != nil && !now.Before(s.start) && now.Before(s.end) {
		return s
	}
	s := b.spanAt(now)
	b.span.Store(s)
	return s
}

func (b *Budget) spanAt(now time.Time) *windowSpan {
	switch {
	case b.period == Daily:
		t := now.In(b.loc)
		start := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, b.loc)
		return &windowSpan{"day:" + start.Format("2006-01-02"), start, start.AddDate(0, 0, 1)}
	case b.period == Monthly:
		t := now.In(b.loc)
		start := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, b.loc)
		return &windowSpan{"month:" + start.Format("2006-01"), start, start.AddDate(0, 1, 0)}
	case b.window > 0:
		start := now.Truncate(b.window)
		return &windowSpan{"window:" + b.window.String() + ":" + start.UTC().Format(time.RFC3339Nano), start, start.Add(b.window)}
	default:
		return &windowSpan{"lifetime", time.Time{}, time.Unix(1<<62, 0)}
	}
}

// memoryBudgetStore is the default BudgetStore: totals in a map under a
// mutex. Windows other than the newest are dropped once nothing is
// reserved in them.
type memoryBudgetStore struct {
	mu     sync.Mutex
	totals map[string]*budgetTotals
	newest string
}

type budgetTotals struct{ settled, reserved Money }

func newMemoryBudgetStore() *memoryBudgetStore {
	return &memoryBudgetStore{totals: make(map[string]*budgetTotals)}
}

func (s *memoryBudgetStore) Reserve(_ context.Context, window string, amount, limit Money) (bool, Money, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.totals[window]
	if t == nil {
		// A new window: forget the ended ones that nothing is reserved in.
		for w, old := range s.totals {
			if old.reserved == 0 {
				delete(s.totals, w)
			}
		}
		t = &budgetTotals{}
		s.totals[window] = t
		s.newest = window
	}
	left := limit - t.settled - t.reserved // settled is saturated, limit and reserved are at most MaxBudgetLimit
	if amount > left || amount < 0 {
		return false, max(0, left), nil
	}
	t.reserved += amount
	return true, left - amount, nil
}

func (s *memoryBudgetStore) Settle(_ context.Context, window string, reserved, actual Money) (Money, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.totals[window]
	if t == nil { // cannot happen with Budget: its reservation created it
		t = &budgetTotals{}
		s.totals[window] = t
	}
	t.reserved -= reserved
	t.settled = min(2*MaxBudgetLimit, t.settled+min(max(actual, 0), 2*MaxBudgetLimit)) // saturate far from overflow
	settled := t.settled
	if t.reserved == 0 && window != s.newest {
		delete(s.totals, window)
	}
	return settled, nil
}

func (s *memoryBudgetStore) Totals(_ context.Context, window string) (Money, Money, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.totals[window]; t != nil {
		return t.settled, t.reserved, nil
	}
	return 0, 0, nil
}
