package httpguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrBudgetExceeded is returned, wrapped, when an attempt's worst-case cost
// does not fit in what is left of a Budget: at once when the money already
// settled leaves no room, or after waiting in vain for attempts in flight
// to settle (see BudgetConfig.MaxWait). Nothing of the request was sent.
// The error, a *BudgetError, says what was needed, what remains, why the
// need is what it is and when the window resets:
//
//	httpguard: budget: model "gpt-4.1" needs $0.0123 but $0.0045 remains until 2026-12-01T00:00:00Z: budget exceeded (a worst-case reservation: 1800 prompt tokens at most and 1 × 1000 output tokens from max_tokens; lower max_tokens to need less)
//
// It is a refusal (IsRefusal): the Retrier does not retry it. http.Client
// wraps it in a *url.Error and SDKs in their own types, so test for it with
// errors.Is, and read it with errors.As.
var ErrBudgetExceeded = errors.New("budget exceeded")

// ErrUnknownModel is returned, wrapped, when a Budget cannot price a
// request: its model (or its Azure deployment) is not in the price table
// (and the table has no FallbackModel entry), or its body is not a JSON
// request naming a model (or is ambiguous, or longer than
// BudgetConfig.MaxBufferedBody), or it declares a tool billed per call
// that BudgetConfig.ToolPrices does not price, or it asks for a tier
// billed above standard prices (a service_tier, a speed, an
// inference_geo) whose "model@<tier>" entry the table lacks (see
// PriorityTier), or it continues input the provider stored while
// BudgetConfig.StoredInputReserve is zero, or it names what a relay runs
// in place of the body's model and fields (a prompt_id, a user_config:
// LiteLLM's), or it spends where no answer
// reports it (an Assistants run, a fine-tuning job, a video, the Realtime
// API, a protocol upgrade, a background response without
// max_output_tokens, or with server tools whose calls neither
// max_tool_calls nor each tool's max_uses bounds). Nothing of the request
// was sent: a budget fails closed. It is a refusal (IsRefusal).
var ErrUnknownModel = errors.New("unknown model")

// ErrUnpricedTool is returned, wrapped with ErrUnknownModel, when a
// request declares a tool the provider runs and bills per call (web
// search, code execution) and BudgetConfig.ToolPrices has no fee for it.
// Nothing of the request was sent.
var ErrUnpricedTool = errors.New("unpriced tool")

// DefaultOutputReserve is the number of output tokens a Budget reserves for
// an attempt whose request sets no max_tokens (nor max_completion_tokens,
// max_output_tokens), unless BudgetConfig.OutputReserve says otherwise.
const DefaultOutputReserve = 4096

// DefaultToolCallReserve is the number of calls a Budget reserves for the
// server tools of a request that does not bound them (no max_uses, no
// max_tool_calls), unless BudgetConfig.ToolCallReserve says otherwise.
const DefaultToolCallReserve = 10

// DefaultToolResultReserve is the number of input tokens a Budget reserves
// for what each call of a server tool returns to the model (search
// results, a fetched page, an MCP tool's answer) when its tool does not
// bound it (web_fetch's max_content_tokens), unless
// BudgetConfig.ToolResultReserve says otherwise.
const DefaultToolResultReserve = 10_000

// maxToolPrice is the largest fee per call ToolPrices accepts.
const maxToolPrice = 1000 * Dollar

// DefaultLease is how long a reservation held in a shared BudgetStore lasts
// without renewal, unless BudgetConfig.Lease says otherwise.
const DefaultLease = time.Minute

// minLease is the shortest Lease a Budget accepts: a shorter one (Lease: 1,
// meant as a second, is a nanosecond) would end before its renewal could
// reach a store, letting others spend the money in flight, and would renew
// in a tight loop.
const minLease = 10 * time.Millisecond

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

	// Store holds the money. Nil means an in-memory store for this Budget
	// alone. A shared store (such as redisguard's) caps a fleet; requests
	// waiting for room (see MaxWait) then also check it again every 200ms,
	// since other processes settle there unseen. A store holds one cap:
	// Budgets with another Window, Period or Location must not share it, as
	// a store orders windows by their start and admits only into the
	// newest (NewBudget refuses a MemoryBudgetStore that such a Budget
	// uses).
	Store BudgetStore
	// Lease is how long a reservation stays held in Store if this process
	// stops renewing it: a process that dies gives its reservations back
	// when their leases end, while a live Budget renews the leases of its
	// attempts in flight (long streams included) every Lease/3. Zero means
	// DefaultLease with a Store, and no lease with the in-memory store;
	// otherwise it must be at least 10ms.
	Lease time.Duration

	// OutputReserve is the number of output tokens reserved for an attempt
	// whose request does not limit them (no max_tokens; an Images API
	// request reserves its images' tokens instead, see doc.go). Zero means
	// DefaultOutputReserve. An answer that runs longer is still charged in
	// full, so spending can then pass Limit by the difference; set
	// max_tokens in requests to make the cap exact.
	OutputReserve int64

	// ImageReserve is the number of output tokens reserved for each image
	// of an Images API request to a model whose images' tokens the Budget
	// has no table of (it has gpt-image-1's, gpt-image-1-mini's and
	// gpt-image-1.5's; see doc.go), partial images aside. Zero means
	// OutputReserve or 16,384, the more: above the dearest image priced by
	// late 2026, some 13,400 tokens, which a low-quality image of a later
	// model takes a fraction of. Set it to the most a model you use takes
	// for one image at the qualities and sizes you ask for, to reserve
	// less. An image that takes more is still charged in full, so spending
	// can then pass Limit by the difference.
	ImageReserve int64

	// ToolPrices prices the tools a provider runs on its side and bills per
	// call besides the tokens, by tool type without its version date:
	// "web_search" (Anthropic's web_search_20250305, OpenAI's web_search
	// and chat completions' web_search_options; about $0.01 a call at
	// both), "file_search" (OpenAI, $0.0025), "code_execution"
	// (Anthropic), "plugin_web" (each result of OpenRouter's web plugin,
	// or of a model slug ending in ":online", $0.004; its max_results, 5
	// by default, are its calls) and "plugin_<id>" (any other plugin in
	// OpenRouter's plugins). OpenAI's "code_interpreter" and "shell" with
	// a hosted environment ("container_auto", "container_reference") run
	// in a container that OpenAI bills per session by its memory_limit,
	// not per call: their fee is that of the default 1 GB container
	// ($0.03), scaled by the GB of the memory_limit the request sets ("4g"
	// is 4 times the fee, "64g" 64 times; any value but "1g", "4g", "16g"
	// and "64g" is refused), and by 64, the largest size, for an existing
	// container the request names by id, whose size it does not say;
	// "shell" takes the fee of "code_interpreter" when it has none of its
	// own. Gemini's built-in tools, as LiteLLM and Gemini's API take them
	// ({"googleSearch": {}}), are "google_search" ($35 per 1,000 grounded
	// prompts on Gemini 2.5, $14 per 1,000 queries on Gemini 3),
	// "google_search_retrieval", "enterprise_web_search" and
	// "google_maps"; their answers count no calls. A key with a date
	// prices that version only; "web_search" prices "web_search_preview"
	// unless it has its own. A request that declares a tool without a fee
	// here is refused with ErrUnpricedTool (and ErrUnknownModel), except
	// functions and the tools that cost tokens only: those the client runs
	// (OpenAI's local_shell, shell without a hosted environment,
	// apply_patch, namespace, computer and computer_use_preview,
	// Anthropic's bash, text_editor, computer and memory, LiteLLM's
	// computer_use), Anthropic's web_fetch and mcp_toolset, OpenAI's mcp,
	// and Gemini's url_context and code execution. A Budget reserves each
	// tool's calls (Anthropic's max_uses, else the request's
	// max_tool_calls, else ToolCallReserve) at its fee, and charges the
	// calls the answer counts (Anthropic's usage.server_tool_use, the call
	// items of an OpenAI Responses output: see ToolCalls) or, when it
	// counts none (OpenAI's chat completions, Gemini), the reservation; it
	// reserves and charges a container tool's container once, whatever
	// the calls (OpenAI makes one for a response even when the model
	// calls no tool, and runs every call of the response in it). What the
	// calls return to the model is input (see ToolResultReserve), a hosted
	// shell's too. Keys are read in any case. nil prices none.
	ToolPrices map[string]Money
	// ToolCallReserve is the number of calls reserved for the server tools
	// of a request that does not bound them. Zero means
	// DefaultToolCallReserve. More calls are still charged in full when
	// the answer counts them; set max_uses or max_tool_calls in requests to
	// make the cap exact.
	ToolCallReserve int64
	// ToolResultReserve is the number of input tokens reserved for what
	// one call of a server tool returns to the model, which the provider
	// bills as input at the model's price (search results, a fetched page,
	// an MCP tool's answer, code output; not what a client tool returns,
	// which comes in a later request's body), when the tool does not bound
	// it with max_content_tokens (Anthropic's web_fetch). Zero means
	// DefaultToolResultReserve. The calls are those reserved for their
	// fees, web_fetch's and MCP's included, and a result is reserved once
	// more for each later call: the provider samples the model again after
	// each call, billing the results so far again (Anthropic bills them so;
	// an OpenRouter plugin's results, read before the model runs, are
	// reserved once each), with the prompt and the output before it, which
	// are reserved once a call too. Larger results are still charged in
	// full; set max_content_tokens, and max_uses or max_tool_calls, to make
	// the cap exact.
	ToolResultReserve int64

	// StoredInputReserve is the number of input tokens reserved, besides
	// the prompt the body holds, for a request that continues input the
	// provider stored and bills as this request's input: an OpenAI
	// Responses request naming a previous_response_id or a conversation,
	// or a stored prompt template (a prompt object), or whose input
	// references a stored item (an item_reference, or a reasoning item by
	// its id without its encrypted_content); a request naming a Gemini
	// context cache ("cached_content", which LiteLLM passes on as the
	// request's cachedContent); a request that continues an Anthropic
	// message thread ("thread": {"type": "continue", …}), whose
	// conversation, system prompt and tools Anthropic holds (the server
	// tools a thread holds are charged the calls its answers count, but
	// not reserved). Zero refuses such
	// requests with ErrUnknownModel, as their bodies bound nothing of what
	// they cost. Set it to the longest context such a request runs on
	// (the model's context window bounds them all); usage beyond it is
	// still charged in full.
	StoredInputReserve int64

	// Exempt, when set, reports whether a request passes through without
	// being priced (nothing reserved, nothing charged): requests the Budget
	// is not meant to price, such as audio uploads or files. Requests
	// without a body (GET /models), GETs of a stored response
	// (/responses/{id}, which openai-go sends with a body to resume a
	// background stream) and requests to endpoints providers do not bill
	// (see FreeEndpoint) always pass, but for a protocol upgrade
	// (a WebSocket) and the Realtime API's paths, which spend where no
	// answer reports it and are refused unless exempt. nil means every other
	// request is priced, or refused with ErrUnknownModel when it cannot
	// be: a budget fails closed. It is called from the goroutines of
	// concurrent requests.
	Exempt func(req *http.Request) bool

	// Alerts are fractions of Limit in (0, 1]; OnAlert is called once per
	// window when settled spending first reaches each of them. nil means no
	// alerts.
	Alerts []float64
	// OnAlert receives alerts; it is required when Alerts is set.
	OnAlert func(BudgetAlert)
	// OnSettle, when set, is told what each attempt was charged.
	OnSettle func(Settlement)
	// The hooks run on the goroutine that ended an attempt (its body's last
	// Read or its Close, or the RoundTrip), so they should return quickly
	// and be safe for concurrent use.

	// DisableStreamUsage stops the budget from adding
	// "stream_options":{"include_usage":true} to streaming OpenAI-style
	// requests (to paths ending in /completions, but at an Azure
	// api-version older than the member) that lack it; false, the zero
	// value, adds it. Without usage in the stream, a streaming request
	// is charged its full reservation. When the budget adds the option, it
	// removes the usage-only chunk (the one with "choices":[]) from the
	// stream the caller reads, so callers that index Choices[0] keep working
	// (a stream the caller reads compressed, having set Accept-Encoding
	// itself, passes as it is: neither its usage nor that chunk can be read).
	DisableStreamUsage bool

	// MaxBufferedBody is how many bytes of a request body the budget reads
	// to price it (bodies without GetBody are kept in memory to be sent).
	// Zero means DefaultMaxBufferedBody. Larger bodies are refused: they
	// cannot be priced. A moderation is the exception: one with GetBody
	// (an image sent inline makes it long) has its model read as a
	// stream, and passes when it is free (see FreeEndpoint).
	MaxBufferedBody int64

	// MaxWait bounds how long an attempt waits for room that attempts in
	// flight hold: when its reservation does not fit only because of other
	// reservations (which usually settle far lower, as answers rarely use
	// all of max_tokens), it waits for them to settle instead of being
	// refused. It is refused at once when the money already settled leaves
	// no room. Zero means DefaultMaxWait; negative means never wait. The
	// request's context bounds the wait too: its deadline refuses the
	// attempt with ErrBudgetExceeded, as MaxWait does, and a cancellation
	// ends it with the context's error, as in the Limiter. Waiting attempts
	// hold nothing and are not queued: whichever fits first goes first.
	MaxWait time.Duration

	// Logger, when set, receives store errors. Nil means silent.
	Logger *slog.Logger
}

// budgetPollInterval is how often an attempt waiting for room checks a
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

// A Settlement is what a Budget charged for one attempt, for
// BudgetConfig.OnSettle. It is a plain value, but Request is the
// attempt's: keeping a Settlement keeps the request and its context.
type Settlement struct {
	Model string // the model the request named
	// PricedAs is the price table's entry that priced the attempt: Model,
	// or a dearer model the request names to serve it (a fallback in
	// OpenRouter's models, an Azure deployment), or FallbackModel ("*")
	// for a model the table does not list, with a
	// tier's suffix when the request asked for it, or its answer said it
	// ran at Priority and that entry priced it (see PriorityTier; an
	// answer charged three times the standard entry names that entry), or
	// the model the answer says served it, when the table lists it and its
	// prices came to more (a relay's own fallback, a router such as
	// openrouter/auto; of two models decoders read, the one charged).
	// Unlike Model, which the caller chooses, its values are bounded by
	// the table: label metrics with it.
	PricedAs string
	Window   string // the window charged
	// Request is the attempt's request as the Budget sent it on, so that a
	// hook can tie the charge to its caller through Request.Context(). Do
	// not modify it.
	Request *http.Request
	// Reserved is what the attempt held while in flight. Charged is what
	// it cost: its usage's cost, with the fees of its server tools' calls
	// (those the usage counts, or what was reserved for them when it counts
	// none; see BudgetConfig.ToolPrices), or the cost the usage reports
	// (OpenRouter's usage.cost) when that is more; its reservation when the provider may
	// have billed it without saying what (no usage, a stream cut short, an
	// answer lost after the request was written); zero when the provider
	// answered with an error status or never had the request.
	Reserved, Charged Money
	// Usage is the usage the answer reported; UsageKnown is false when
	// there was none to read, or the answer broke off (or its stream
	// ended in an error) after reporting Usage, which was then billed at
	// least: the attempt is charged its reservation, or Usage's cost when
	// that is more.
	Usage      Usage
	UsageKnown bool
	// Settled is the window's settled money after this charge, or zero
	// when the store failed to record it now (its error is logged to
	// BudgetConfig.Logger; a shared store keeps the charge to add later).
	Settled Money
}

// Budget is a Layer that caps spending on AI APIs. Before an attempt is
// sent it reserves the attempt's worst-case cost (its prompt bound at the
// input price plus its output bound at the output price) and refuses it
// with ErrBudgetExceeded when that does not fit; nothing is sent. It then
// charges what the provider may bill for that attempt: the usage the answer
// reports, when the caller reads the response body to its end or closes
// it; the whole reservation when the attempt was written and never
// answered, or answered without usable usage; nothing for an error status
// or an attempt that never reached the wire. Settled plus reserved money
// never exceeds Limit, except when an answer costs more than its
// reservation (see BudgetConfig.OutputReserve); that money was spent, so it
// is counted.
//
// Place it inside the Retrier (Retrier → Budget → Limiter) so that it sees
// every attempt: providers bill attempts, not calls. The package
// documentation lists what is charged when.
//
// Callers must close response bodies, as net/http requires: an open body
// keeps its reservation held until the window ends.
//
// Make a Budget with NewBudget; the zero Budget is not usable: its Wrap
// fails every request, unsent, naming the constructor. A Budget is safe for
// concurrent use by multiple goroutines, and one Budget may wrap several
// transports, which then share its cap.
type Budget struct {
	cfg     BudgetConfig // with defaults; Prices is the budget's own copy
	alerts  []float64    // ascending
	alertAt []Money      // the settled amount at which each alert fires
	store   BudgetStore
	poll    time.Duration // 0: no polling (the Budget's own store)

	// ids, the last reservation ID drawn, is written by every request: on
	// a cache line of its own, so that the fields every request reads
	// stay cached on every core (see padded).
	ids padded[atomic.Uint64]

	now    func() time.Time // injected by tests
	onWait func()           // called when an attempt starts waiting; for tests

	room      roomSignal
	looks     roomLooks // of the attempts waiting for room in a shared store
	spanCache atomic.Pointer[windowSpan]
	renewals  leaseRenewer
	// served indexes the price table's models by modelHash, for the
	// answers that say another model served them (see answerCharge).
	served map[modelHash][]string
	// entries are the price table's entries, sorted, for the attempts
	// priced at a model other than the one their body names (see
	// budgetAttempt.dearer).
	entries []string
	// pointers is cfg.Prices with each entry a pointer to a copy of its
	// price, which an attempt keeps (see PriceTable.pointers).
	pointers map[string]*Price
	prices   priceCache // of pointers, for pricing requests

	alertMu     sync.Mutex
	alertWindow string
	alertStart  time.Time // alertWindow's start
	alertsFired int       // alerts[:alertsFired] fired in alertWindow
}

// windowSpan is a window and its time range [start, end).
type windowSpan struct {
	key        string
	start, end time.Time
	forever    bool // the lifetime window: end is unused
}

// NewBudget validates c and returns a Budget, or an error (prefixed
// "httpguard: budget:") saying which field of c is invalid.
func NewBudget(c BudgetConfig) (*Budget, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("httpguard: budget: %w", err)
	}
	c = c.withDefaults()
	if s, ok := c.Store.(*MemoryBudgetStore); ok {
		if err := s.claim(c.calendar()); err != nil {
			return nil, fmt.Errorf("httpguard: budget: Store: %w", err)
		}
	}
	b := &Budget{
		cfg:    c,
		alerts: slices.Compact(slices.Sorted(slices.Values(c.Alerts))),
		store:  c.Store,
		now:    readClock,
	}
	b.ids.v.Store(rand.Uint64())
	if b.store == nil {
		b.store = newMemoryBudgetStore(func() time.Time { return b.now() })
	} else {
		b.poll = budgetPollInterval
	}
	b.renewals.b = b
	b.served = make(map[modelHash][]string, len(c.Prices))
	b.entries = slices.Sorted(maps.Keys(c.Prices))
	b.pointers = c.Prices.pointers()
	for name := range c.Prices {
		if name != FallbackModel {
			h := hashModel(name)
			b.served[h] = append(b.served[h], name)
		}
	}
	for _, a := range b.alerts {
		at := math.Ceil(a * float64(c.Limit))
		b.alertAt = append(b.alertAt, Money(min(at, float64(c.Limit))))
	}
	return b, nil
}

func (c *BudgetConfig) validate() error {
	switch {
	case c.Limit <= 0 || c.Limit > MaxBudgetLimit:
		return fmt.Errorf("Limit must be in ($0, %v], got %v", MaxBudgetLimit, c.Limit)
	case c.Window < 0:
		return fmt.Errorf("Window must be >= 0, got %v", c.Window)
	case c.Period < NoPeriod || c.Period > Monthly:
		return fmt.Errorf("Period must be NoPeriod, Daily or Monthly, got %v", c.Period)
	case c.Period != NoPeriod && c.Window != 0:
		return fmt.Errorf("set Window or Period, not both (Window %v, Period %v)", c.Window, c.Period)
	case c.Location != nil && c.Period == NoPeriod:
		return errors.New("Location applies to a Period; set Period Daily or Monthly")
	case len(c.Prices) == 0:
		return errors.New("Prices is empty: load your provider's prices with LoadPrices (ExamplePrices shows the format)")
	case c.Lease < 0 || c.Lease > 0 && c.Lease < minLease:
		return fmt.Errorf("Lease must be 0 or at least %v (leases are renewed every Lease/3), got %v", minLease, c.Lease)
	case c.OutputReserve < 0:
		return fmt.Errorf("OutputReserve must be >= 0, got %d", c.OutputReserve)
	case c.ImageReserve < 0:
		return fmt.Errorf("ImageReserve must be >= 0, got %d", c.ImageReserve)
	case c.ToolCallReserve < 0:
		return fmt.Errorf("ToolCallReserve must be >= 0, got %d", c.ToolCallReserve)
	case c.ToolResultReserve < 0:
		return fmt.Errorf("ToolResultReserve must be >= 0, got %d", c.ToolResultReserve)
	case c.StoredInputReserve < 0:
		return fmt.Errorf("StoredInputReserve must be >= 0, got %d", c.StoredInputReserve)
	case c.MaxBufferedBody < 0:
		return fmt.Errorf("MaxBufferedBody must be >= 0, got %d", c.MaxBufferedBody)
	case len(c.Alerts) > 0 && c.OnAlert == nil:
		return errors.New("Alerts need OnAlert")
	}
	if s, ok := c.Store.(*MemoryBudgetStore); ok && (s == nil || s.windows == nil) {
		// Its methods would panic in the caller's goroutine.
		return errors.New("Store: make a MemoryBudgetStore with NewMemoryBudgetStore; the zero value is not usable")
	}
	if err := c.Prices.validate(); err != nil {
		return fmt.Errorf("Prices: %w", err)
	}
	for _, tool := range slices.Sorted(maps.Keys(c.ToolPrices)) {
		if fee := c.ToolPrices[tool]; fee < 0 || fee > maxToolPrice || tool == "" {
			return fmt.Errorf("ToolPrices: tool %q: a fee per call must be in [$0, %v], got %v", tool, maxToolPrice, fee)
		}
	}
	for _, a := range c.Alerts {
		if !(a > 0 && a <= 1) {
			return fmt.Errorf("Alerts must be fractions of Limit in (0, 1], got %v", a)
		}
	}
	return nil
}

// calendar names the windows of a Budget with c, defaults applied: the
// Budgets sharing a MemoryBudgetStore must name the same.
func (c BudgetConfig) calendar() string {
	switch {
	case c.Period != NoPeriod:
		// A Location by its name and its offsets at two instants half a
		// year apart: zones made with time.FixedZone may share a name.
		loc := c.Location
		if loc == nil {
			loc = time.UTC
		}
		_, winter := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).In(loc).Zone()
		_, summer := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC).In(loc).Zone()
		return fmt.Sprintf("Period %v in %v (UTC%+d s, %+d s)", c.Period, loc, winter, summer)
	case c.Window > 0:
		return fmt.Sprintf("Window %v", c.Window)
	}
	return "no Window or Period"
}

func (c BudgetConfig) withDefaults() BudgetConfig {
	c.Prices = c.Prices.clone()
	c.Alerts = slices.Clone(c.Alerts)
	if c.Location == nil {
		c.Location = time.UTC
	}
	if c.OutputReserve == 0 {
		c.OutputReserve = DefaultOutputReserve
	}
	if c.ImageReserve == 0 {
		c.ImageReserve = max(c.OutputReserve, untabledImageTokens)
	}
	if c.ToolCallReserve == 0 {
		c.ToolCallReserve = DefaultToolCallReserve
	}
	if c.ToolResultReserve == 0 {
		c.ToolResultReserve = DefaultToolResultReserve
	}
	if c.ToolPrices != nil {
		fees := make(map[string]Money, len(c.ToolPrices))
		for tool, fee := range c.ToolPrices {
			fees[strings.ToLower(tool)] = max(fee, fees[strings.ToLower(tool)]) // two spellings: the dearer
		}
		c.ToolPrices = fees
	}
	if c.MaxBufferedBody == 0 {
		c.MaxBufferedBody = DefaultMaxBufferedBody
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.Lease == 0 && c.Store != nil {
		c.Lease = DefaultLease
	}
	return c
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
	settled, held, ok := b.totals()
	if !ok {
		return 0
	}
	return max(0, b.cfg.Limit-settled-held)
}

func (b *Budget) totals() (settled, held Money, ok bool) {
	settled, held, err := b.Totals(context.Background())
	return settled, held, err == nil
}

// Totals returns the money settled and the money held (reserved by
// attempts in flight) in the current window, or the store's error, which
// it also logs. Spent and Remaining read it and return 0 on an error;
// use Totals where a 0 would mislead, as in a gauge that alerts when the
// budget runs out. The zero Budget's Totals fail as its Wrap does.
func (b *Budget) Totals(ctx context.Context) (settled, held Money, err error) {
	if b.store == nil {
		return 0, 0, zeroBudget.err
	}
	key := b.currentSpan(b.now()).key
	settled, held, err = b.store.Totals(ctx, key)
	if err != nil {
		b.log("totals", key, err)
		return 0, 0, fmt.Errorf("httpguard: budget: store: %w", err)
	}
	return settled, held, nil
}

// Limit returns the Budget's Limit, what each window may spend.
func (b *Budget) Limit() Money { return b.cfg.Limit }

// Wrap returns a RoundTripper that applies the budget to each request
// before passing it to next (nil means http.DefaultTransport). The
// returned RoundTripper forwards CloseIdleConnections to next.
func (b *Budget) Wrap(next http.RoundTripper) http.RoundTripper {
	if b == nil { // a layer left unconfigured: Chain skips it
		return orDefault(next)
	}
	if b.store == nil {
		return zeroBudget
	}
	next = orDefault(next)
	bound := boundsResends(next)
	return &budgetTransport{b: b, next: next, bound: bound}
}

type budgetTransport struct {
	b    *Budget
	next http.RoundTripper
	// gatePass is set on the Budget a Retrier wraps (see Retrier.Wrap):
	// what it passes unpriced goes down behind a resendGate, as the
	// Retrier would have sent it.
	gatePass bool
	// bound is set over net/http's own transport: what it passes unpriced
	// goes down as a Retrier's attempt (see sendBounded), so that net/http
	// does not send it again on its own without end (a priced attempt is
	// bounded by sendOnce).
	bound bool
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport below.
func (t *budgetTransport) CloseIdleConnections() { closeIdleConnections(t.next) }

func (t *budgetTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	b := t.b
	if req.URL == nil {
		closeRequestBody(req)
		return nil, Refuse(fmt.Errorf("httpguard: budget: %w", errNoURL))
	}
	// A moderation is free by its model (see FreeEndpoint), which price reads.
	var own pathFacts
	path := readPath(req.URL, &own)
	free, moderation := path.free, path.moderation
	absent := absentKeys(req.Header)
	if spendsOutsideAnswers(req, path, absent) {
		if b.cfg.Exempt != nil && b.cfg.Exempt(req) {
			return t.pass(req, exempted)
		}
		closeRequestBody(req)
		return nil, Refuse(fmt.Errorf("httpguard: budget: %s %s opens a Realtime session or a protocol upgrade, which spends outside any answer a budget reads, so it cannot be priced; exempt such requests with BudgetConfig.Exempt: %w",
			req.Method, errorPath(req.URL), ErrUnknownModel))
	}
	if req.Body == nil || req.Body == http.NoBody || free && !moderation || retrievesResponse(req, path) {
		return t.pass(req, exemptUnasked)
	}
	if b.cfg.Exempt != nil && b.cfg.Exempt(req) {
		return t.pass(req, exempted)
	}
	if req.URL.RawQuery != "" && path.deployment == "" {
		m, err := QueryModel(req.URL.RawQuery)
		if err != nil {
			closeRequestBody(req)
			return nil, Refuse(fmt.Errorf("httpguard: budget: %s: %w", trimPrefix(err), ErrUnknownModel))
		}
		if m != "" {
			own = *path
			own.deployment, own.queried = m, true
			path = &own
		}
	}
	q := quote{absent: absent}
	if err := b.price(&q, req, moderation, path); err != nil {
		closeRequestBody(req)
		return nil, Refuse(err)
	}
	if q.free {
		return t.pass(q.r, notExempted)
	}
	ctx := req.Context()
	window, err := b.reserve(ctx, &q)
	if err != nil {
		q.dropKept()
		closeRequestBody(q.r)
		return nil, Refuse(err)
	}

	// One allocation holds what the attempt's hooks need: the counts of
	// what the trace saw (whether the request was written; the trace
	// itself is made only for a transport that asks for it), the body
	// reader that settles the reservation, and the request sent down. It
	// is also that request's context, so that a Limiter below finds the
	// parsed body there.
	a := &budgetAttempt{Context: ctx, b: b, window: window, price: q.price, reserve: q.reserve, id: q.id, named: q.model}
	if q.fallback {
		a.pricedBy = byFallback
	}
	a.parsed.chat, a.parsed.free, a.parsed.moderation = q.chat, free, moderation
	a.parsed.runs = q.chat.Model
	if path.deployment != "" {
		a.parsed.runs = path.deployment
	}
	if q.dearer != "" {
		a.dearer = b.entryIndex(q.dearer + q.chat.Tier.suffix())
	}
	// The request sent down lives in the attempt: WithContext's copy,
	// copied in, stays on the stack.
	a.sent = *q.r.WithContext(a.traced())
	r := &a.sent
	switch {
	case q.kept != nil:
		a.body.keep(r, q.kept) // r.Body was read whole into q.kept, to send
		if q.streamBody != nil {
			q.streamBody.applyKept(r) // the bytes priced, edited; it closes the kept body when done
		}
	case q.streamBody != nil:
		q.streamBody.apply(r) // it closes the Body it replaces when done
	case r.GetBody != nil:
		a.body.rewind(r) // the GetBody copy priced may have emptied r.Body
	}
	a.sendOnce(r)

	if ctx.Err() != nil {
		// Nothing is sent for an ended context, as net/http would send
		// nothing (before its trace could say so): released, not charged.
		// Not a refusal: when a Retrier's AttemptTimeout ended it, the
		// next attempt may go.
		a.settle(&Usage{}, false, 0)
		closeRequestBody(r)
		return nil, context.Cause(ctx)
	}
	resp, err := t.next.RoundTrip(r)
	switch {
	case err == nil && resp == nil:
		err = fmt.Errorf("httpguard: budget: %w", errNoResponse)
		fallthrough
	case err != nil:
		a.settleLost(err)
		return nil, err
	case resp.StatusCode > 299:
		a.settle(&Usage{}, false, a.unanswered(true)) // providers do not bill error statuses
		return resp, nil
	case resp.StatusCode < 200 || resp.Body == nil || resp.Body == http.NoBody:
		// No usage to read: a 2xx without a body, or a 101, which net/http
		// returns as a final answer and which is no error status (the
		// server read the request and took the connection). The
		// reservation is the charge.
		a.reportUsage(&noUsage, false)
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return nil, switchedProtocols(r, resp)
		}
		return resp, nil
	}
	a.usage.observe(resp, a, q.chat.Stream)
	if q.streamBody != nil && (a.usage.ev != nil || a.usage.sniff) && !isEncoded(resp) {
		resp.Body = newUsageChunkStripper(resp.Body)
		// The hidden chunk shortens the body: its length is no longer known.
		resp.ContentLength = -1
		resp.Header.Del("Content-Length")
	}
	return resp, nil
}

// pass sends req on unpriced. A protocol upgrade passes only when
// BudgetConfig.Exempt lets it: e says whether it was asked, and what it
// said.
func (t *budgetTransport) pass(req *http.Request, e exemption) (*http.Response, error) {
	var resp *http.Response
	var err error
	if t.gatePass {
		resp, err = t.next.RoundTrip(gated(req, req.Body))
	} else {
		resp, err = sendDown(t.next, t.bound, req)
	}
	switch {
	case resp == nil && err == nil:
		err = fmt.Errorf("httpguard: budget: %w", errNoResponse)
	case err == nil && resp.StatusCode == http.StatusSwitchingProtocols && e != exempted:
		if e == exemptUnasked && t.b.cfg.Exempt != nil && t.b.cfg.Exempt(req) {
			return resp, nil
		}
		return nil, switchedProtocols(req, resp)
	}
	return resp, err
}

// exemption is what BudgetConfig.Exempt said of a request that passes
// unpriced, if it was asked.
type exemption uint8

const (
	exemptUnasked exemption = iota
	exempted
	notExempted
)

// switchedProtocols closes the connection of resp, a 101 Switching
// Protocols that answered req, a protocol upgrade Exempt did not let
// through (asked for under an Upgrade key in another case than the
// canonical, which spendsOutsideAnswers does not read), before anything
// is sent over it, and returns the error for it: what a session over it
// spends no answer reports. The request was sent, so the error is no
// refusal: a Retrier counts it as an attempt, and does not send it again
// (finalError).
func switchedProtocols(req *http.Request, resp *http.Response) error {
	if resp.Body != nil {
		resp.Body.Close()
	}
	return &finalError{fmt.Errorf("httpguard: budget: %s %s was answered 101 Switching Protocols: a protocol upgrade spends outside any answer a budget reads, so its connection was closed before anything was sent over it; exempt such requests with BudgetConfig.Exempt: %w",
		req.Method, errorPath(req.URL), ErrUnknownModel)}
}

// reserve holds q.reserve in the current window and returns the window the
// store holds it in. When the money is held by attempts in flight it waits
// for room (see BudgetConfig.MaxWait); when settled money alone leaves no
// room it refuses at once.
func (b *Budget) reserve(ctx context.Context, q *quote) (string, error) {
	if own := b.ownStore(); own != nil {
		// Room in the current window: the reservation needs no more than
		// its money admitted, as tryReserve would admit it.
		if w, ok := own.admitNewest(b.span().start, q.reserve, b.cfg.Limit); ok {
			return w.key, nil
		}
	}
	res, span, err := b.tryReserve(ctx, q)
	switch {
	case err != nil:
		return "", err
	case res.OK:
		return res.Window, nil
	case b.cfg.MaxWait < 0 || b.cfg.Limit-res.Settled < q.reserve:
		return "", b.refuse(q, res, span, nil)
	}
	return b.waitForRoom(ctx, *q, res, span)
}

// waitForRoom is reserve's wait. It takes the quote by value, so that only
// a request that waits pays for a quote on the heap.
func (b *Budget) waitForRoom(ctx context.Context, q quote, res ReserveResult, span *windowSpan) (string, error) {
	ctx, stop := withCancelChannel(ctx, q.r.Cancel)
	defer stop()
	w := roomWait{b: b, q: &q}
	return w.wait(ctx, res, span)
}

// tryReserve makes one reservation attempt in the window of now.
func (b *Budget) tryReserve(ctx context.Context, q *quote) (ReserveResult, *windowSpan, error) {
	span := b.span()
	r := b.reservation(span, q.id, q.reserve)
	var res ReserveResult
	var err error
	if own := b.ownStore(); own != nil {
		res = own.reserveUnleased(r, b.cfg.Limit)
	} else {
		res, err = b.store.Reserve(ctx, r, b.cfg.Limit)
	}
	if err != nil {
		return res, span, fmt.Errorf("httpguard: budget: store: %w", err)
	}
	if res.Window == "" {
		res.Window = span.key
	}
	if res.OK {
		b.renewals.add(q.id, res.Window)
	}
	return res, span, nil
}

// reservation is a reservation of amount named id in span, under the
// Budget's lease.
func (b *Budget) reservation(span *windowSpan, id uint64, amount Money) Reservation {
	r := Reservation{ID: id, Window: span.key, Start: span.start, Amount: amount, Lease: b.cfg.Lease}
	if !span.forever {
		r.End = span.end
	}
	return r
}

// refuse is the error of an attempt that does not fit: at once, or after
// waiting (waitErr says why the wait ended), or when its context ended
// while it waited.
func (b *Budget) refuse(q *quote, res ReserveResult, span *windowSpan, waitErr error) error {
	e := &BudgetError{
		Model: q.chat.Model, Need: q.reserve, Remaining: max(0, b.cfg.Limit-res.Settled-res.Held),
		PromptTokens: q.chat.PromptTokens, Choices: q.chat.Choices, OutputTokens: q.output, MaxTokensSet: q.fromMax,
		RequestFees: mulSat(q.chat.Choices, q.price.Request), Err: waitErr,
		fromThinking: !q.fromMax && !q.fromImages && q.output > b.cfg.OutputReserve, fromImages: q.fromImages,
	}
	if !span.forever {
		e.Reset = b.resetOf(res.Window, span).In(b.cfg.Location)
	}
	if t := q.chat.Tools; t != nil {
		e.ToolReserve, e.ToolResultTokens = t.Reserve, t.ResultTokens
	}
	return e
}

// resetOf returns when window, in which the store refused, ends: most often
// span's, the window of this Budget's clock. A store moves only to newer
// windows, so it may have refused in a later one, opened by a clock ahead
// of this one (by a day, or by a year once), or before this one stepped
// back; and a shared store keeps the fleet in the window before span until
// span has started on its own clock, at about span's start. A key this
// Budget's calendar does not make gives span's end.
func (b *Budget) resetOf(window string, span *windowSpan) time.Time {
	if window == span.key {
		return span.end
	}
	if w, ok := b.spanOf(window); ok {
		return w.end
	}
	return span.end
}

// spanOf returns the window whose key is key (see spanAt), and whether this
// Budget's calendar makes that key.
func (b *Budget) spanOf(key string) (*windowSpan, bool) {
	var start time.Time
	var err error
	switch {
	case b.cfg.Period == Daily && strings.HasPrefix(key, "day:"):
		start, err = time.Parse("2006-01-02", key[len("day:"):])
	case b.cfg.Period == Monthly && strings.HasPrefix(key, "month:"):
		start, err = time.Parse("2006-01", key[len("month:"):])
	case b.cfg.Period == NoPeriod && b.cfg.Window > 0:
		prefix := "window:" + b.cfg.Window.String() + ":"
		if !strings.HasPrefix(key, prefix) {
			return nil, false
		}
		start, err = time.Parse(time.RFC3339Nano, key[len(prefix):])
	default:
		return nil, false
	}
	if err != nil {
		return nil, false
	}
	if b.cfg.Period != NoPeriod {
		// Noon of the date in the Budget's Location, which no clock
		// change moves to another day (its midnight may not exist).
		y, m, d := start.Date()
		start = time.Date(y, m, d, 12, 0, 0, 0, b.cfg.Location)
	}
	w := b.spanAt(start)
	return w, w.key == key
}

// A BudgetError is the error of an attempt a Budget refused because its
// worst-case cost did not fit in what was left: it wraps ErrBudgetExceeded
// (and Err, when the attempt waited), and errors.As finds it through a
// *RetryError and a *url.Error. Its fields say what was needed and why,
// for a caller that answers in the Budget's name (a gateway's 429, a
// user's message). Need is the sum of the parts below it: the prompt
// (with what the server tools return) and output tokens at the model's
// prices (long-context and tier prices included), the fees per request
// and the server tools' calls. A
// BudgetError is not modified after it is returned, and is safe to read
// from several goroutines.
type BudgetError struct {
	// Model is the model the request named.
	Model string
	// Need is the attempt's worst-case cost, which it would have reserved.
	Need Money
	// Remaining is what the window had left: the Limit less the money
	// settled and held by attempts in flight.
	Remaining Money
	// Reset is when the window that refused ends and its spend is
	// forgotten, in BudgetConfig.Location; zero when the Budget has no
	// window.
	Reset time.Time
	// PromptTokens is the bound on the prompt's tokens; Choices, how many
	// answers the request asks for (n, best_of); OutputTokens, the bound on
	// each answer's tokens.
	PromptTokens, Choices, OutputTokens int64
	// MaxTokensSet is true when OutputTokens is the request's max_tokens
	// (or its API's spelling of it), false when the request set none and
	// OutputTokens is BudgetConfig.OutputReserve.
	MaxTokensSet bool
	// RequestFees is the model's fee per request (Price.Request) for each
	// choice; ToolReserve, the fees of the server tools' calls reserved
	// (max_uses or max_tool_calls, else BudgetConfig.ToolCallReserve).
	RequestFees, ToolReserve Money
	// ToolResultTokens is the bound on the input tokens that what those
	// calls return adds (max_content_tokens, else
	// BudgetConfig.ToolResultReserve, a call, counted again at each later
	// call), with the prompt and the output that the sampling after each
	// call reads again, priced at the input price with the prompt.
	ToolResultTokens int64
	// Err is why the attempt stopped waiting for room, when it waited: its
	// context's deadline, or MaxWait; nil when it was refused at once.
	Err error
	// fromThinking is true when OutputTokens is the request's thinking
	// budget (stated, or LiteLLM's for its reasoning_effort) plus
	// liteLLMDefaultMaxTokens, above OutputReserve.
	fromThinking bool
	// fromImages is true when OutputTokens is an Images API request's
	// bound on each image (see imageOutputTokens).
	fromImages bool
}

// Error says what the attempt needed, what remained, when the window
// resets and why the need is what it is, with what to change to need less.
func (e *BudgetError) Error() string {
	until := "; the budget has no window and never resets"
	if !e.Reset.IsZero() {
		until = " until " + e.Reset.Format(time.RFC3339)
	}
	source := "from max_tokens; lower max_tokens to need less"
	switch {
	case e.fromImages:
		source = "for each image, from its model, quality and size (quality or size absent, auto or unknown reserve the dearest, a model without a table of its images' tokens ImageReserve) and 100 for each partial image; set quality and size, or ImageReserve, to need less"
	case e.fromThinking:
		source = "from the thinking budget (thinking.budget_tokens, or LiteLLM's for reasoning_effort) plus the 4096 LiteLLM adds, as the request sets no max_tokens; set max_tokens to need less"
	case !e.MaxTokensSet:
		source = "from OutputReserve, as the request sets no max_tokens; set max_tokens to need less"
	}
	why := fmt.Sprintf("a worst-case reservation: %d prompt tokens at most and %d × %d output tokens %s",
		e.PromptTokens, e.Choices, e.OutputTokens, source)
	if e.RequestFees > 0 {
		why += fmt.Sprintf(", and %v in the model's fee per request", e.RequestFees)
	}
	if e.ToolReserve > 0 {
		why += fmt.Sprintf(", and %v for the calls of server tools (max_uses or max_tool_calls, else ToolCallReserve; lower them to need less)", e.ToolReserve)
	}
	if e.ToolResultTokens > 0 {
		why += fmt.Sprintf(", and %d input tokens for what the calls of server tools return to the model, each result counted again at each later call, with the prompt and the output read again after each (max_content_tokens, else ToolResultReserve, a call; lower max_uses / max_content_tokens / max_tool_calls to need less)", e.ToolResultTokens)
	}
	waited := ""
	if e.Err != nil {
		waited = ", " + e.Err.Error()
	}
	return fmt.Sprintf("httpguard: budget: model %q needs %v but %v remains%s%s: %v (%s)",
		e.Model, e.Need, e.Remaining, until, waited, ErrBudgetExceeded, why)
}

// Unwrap returns ErrBudgetExceeded, and Err when the attempt waited.
func (e *BudgetError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrBudgetExceeded}
	}
	return []error{ErrBudgetExceeded, e.Err}
}

// isEncoded reports whether resp's body comes as the server encoded it
// (the caller set Accept-Encoding itself): a compressed stream's
// usage-only chunk cannot be found, and holding its bytes back to look for
// one would hold the whole stream.
func isEncoded(resp *http.Response) bool {
	ce := strings.TrimSpace(resp.Header.Get("Content-Encoding"))
	return ce != "" && !strings.EqualFold(ce, "identity")
}

// settle ends an attempt's reservation and fires the hooks it concerns.
func (b *Budget) settle(a *budgetAttempt, charge Money, u *Usage, known bool) {
	b.renewals.remove(a.id)
	var settled Money
	var err error
	held := a.held()
	if own := b.ownStore(); own != nil {
		settled = own.settleUnleased(a.window, held, charge)
	} else {
		settled, err = b.store.Settle(context.Background(), a.window, a.id, charge)
		if a.flags.Load()&attemptHeldAgain != 0 { // read after held, which waits for a hold under way
			// The second hold's money is in charge, which counts the
			// write lost: release it.
			b.renewals.remove(a.id ^ heldAgainID)
			if _, err := b.store.Settle(context.Background(), a.window, a.id^heldAgainID, 0); err != nil {
				b.log("settle", a.window, err)
			}
		}
	}
	b.room.signal()
	if err != nil {
		// The attempt was charged all the same (a shared store keeps what
		// it could not record, to add it later): the hook hears of it.
		b.log("settle", a.window, err)
		settled = 0
	}
	if b.cfg.OnSettle != nil {
		told := *u
		told.servedBy, told.servedFolded, told.servedFirst = 0, 0, 0 // told by PricedAs
		b.cfg.OnSettle(Settlement{Model: a.parsed.chat.Model, PricedAs: a.pricedAs(u), Window: a.window, Request: &a.sent, Reserved: held,
			Charged: charge, Usage: told, UsageKnown: known, Settled: settled})
	}
	if err == nil {
		b.alert(a.window, settled)
	}
}

// alert fires the alerts that settled money in window crossed.
func (b *Budget) alert(window string, settled Money) {
	if len(b.alerts) > 0 {
		b.fireAlerts(window, settled)
	}
}

// fireAlerts is alert for a Budget with alerts: a call of its own, so that
// alert's common case, none, is inlined.
func (b *Budget) fireAlerts(window string, settled Money) {
	b.alertMu.Lock()
	if window != b.alertWindow {
		// Alerts move only to a newer window: a wall clock stepped back
		// reads an older window as current again, where a late
		// settlement must not fire its alerts a second time.
		s := b.currentSpan(b.now())
		if window != s.key || b.alertWindow != "" && !s.start.After(b.alertStart) {
			b.alertMu.Unlock()
			return // a late settlement in a window that has ended
		}
		b.alertWindow, b.alertStart, b.alertsFired = window, s.start, 0
	}
	from := b.alertsFired
	for b.alertsFired < len(b.alerts) && settled >= b.alertAt[b.alertsFired] {
		b.alertsFired++
	}
	to := b.alertsFired
	b.alertMu.Unlock()
	for _, a := range b.alerts[from:to] {
		b.cfg.OnAlert(BudgetAlert{Threshold: a, Spent: settled, Limit: b.cfg.Limit, Window: window})
	}
}

func (b *Budget) log(op, window string, err error) {
	if b.cfg.Logger != nil {
		b.cfg.Logger.Error("httpguard: budget: store failed", "op", op, "window", window, "err", err)
	}
}

// ownStore returns b's store when it is in memory and its reservations
// have no lease: then the Budget settles each reservation once, naming
// what it holds, and the store keeps no record of it. nil otherwise.
func (b *Budget) ownStore() *MemoryBudgetStore {
	if s, ok := b.store.(*MemoryBudgetStore); ok && b.cfg.Lease == 0 {
		return s
	}
	return nil
}

// span returns the current window, reading the clock unless the budget
// has one window for its whole life.
func (b *Budget) span() *windowSpan {
	if s := b.spanCache.Load(); s != nil && s.forever {
		return s
	}
	return b.currentSpan(b.now())
}

// currentSpan returns the window now falls in, cached until it ends.
func (b *Budget) currentSpan(now time.Time) *windowSpan {
	if s := b.spanCache.Load(); s != nil && (s.forever || !now.Before(s.start) && now.Before(s.end)) {
		return s
	}
	s := b.spanAt(now)
	b.spanCache.Store(s)
	return s
}

func (b *Budget) spanAt(now time.Time) *windowSpan {
	loc := b.cfg.Location
	switch {
	case b.cfg.Period == Daily:
		t := now.In(loc)
		y, m, d := t.Date()
		return &windowSpan{key: "day:" + t.Format("2006-01-02"), start: dayStart(y, m, d, loc), end: dayStart(y, m, d+1, loc)}
	case b.cfg.Period == Monthly:
		t := now.In(loc)
		y, m, _ := t.Date()
		return &windowSpan{key: "month:" + t.Format("2006-01"), start: dayStart(y, m, 1, loc), end: dayStart(y, m+1, 1, loc)}
	case b.cfg.Window > 0:
		start := now.Truncate(b.cfg.Window)
		return &windowSpan{key: "window:" + b.cfg.Window.String() + ":" + start.UTC().Format(time.RFC3339Nano), start: start, end: start.Add(b.cfg.Window)}
	default:
		return &windowSpan{key: "lifetime", forever: true}
	}
}

// dayStart returns when day y-m-d (normalised, as time.Date does) starts
// in loc: its midnight, or, where the clocks jump over midnight (daylight
// saving starts at 00:00 in Santiago, Havana, Asunción), the moment they
// land; time.Date would give 23:00 of the day before. Where the clocks go
// back to midnight, so that it occurs twice, the day starts at the first;
// time.Date gives the second east of UTC (Amman and Gaza turned 01:00
// back to 00:00 until 2021).
func dayStart(y int, m time.Month, d int, loc *time.Location) time.Time {
	t := time.Date(y, m, d, 0, 0, 0, 0, loc)
	noon := time.Date(y, m, d, 12, 0, 0, 0, loc)
	if t.Day() != noon.Day() {
		t, _ = noon.ZoneBounds() // the start of the zone in force at noon: the jump
	} else if zone, _ := t.ZoneBounds(); t.Equal(zone) {
		if before := t.Add(-1); before.Day() == t.Day() { // the clocks went back to t
			h, mi, s := before.Clock()
			t = before.Add(-(time.Duration(h)*time.Hour + time.Duration(mi)*time.Minute +
				time.Duration(s)*time.Second + time.Duration(before.Nanosecond())))
		}
	}
	return t
}
