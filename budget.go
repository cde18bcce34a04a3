package httpguard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	pathpkg "path"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
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

// FreeEndpoint reports whether req goes to an endpoint that providers do
// not bill, which a Budget lets pass unpriced: counting tokens
// (Anthropic's messages/count_tokens, OpenAI's responses/input_tokens),
// and moderations. Of moderations, only OpenAI's are free: a Budget lets
// one pass unpriced when its body names no model or one of OpenAI's
// moderation models (omni-moderation-*, text-moderation-*), and prices
// the others as any request (Mistral bills its moderation models).
// FreeEndpoint reads only the URL, so it reports true for every
// moderation; the Budget reads the model from the body. The path is read
// as sent: an escaped slash (messages%2Fcount_tokens) is not a free
// endpoint's, and a URL's Opaque, when set, is the path sent.
func FreeEndpoint(req *http.Request) bool {
	free, _ := freeEndpoint(req)
	return free
}

// freeEndpoint is FreeEndpoint, and whether the endpoint is moderations,
// which are free by their model (see freeModeration).
func freeEndpoint(req *http.Request) (free, moderation bool) {
	if req.URL == nil {
		return false, false
	}
	return endpointOf(sentPath(req.URL))
}

// endpointOf is freeEndpoint for the path sent, p.
func endpointOf(p string) (free, moderation bool) {
	if strings.HasSuffix(p, "/moderations") {
		return true, true
	}
	return strings.HasSuffix(p, "/count_tokens") || strings.HasSuffix(p, "/responses/input_tokens"), false
}

// spendsOutsideAnswers reports whether req, whose path says path,
// opens what spends where no answer reports it: a protocol upgrade (a
// WebSocket, such as OpenAI's Realtime API or the Responses API's
// WebSocket mode), or a request to a path with a realtime segment, in any
// case (the Realtime API's sessions and client secrets mint keys that
// spend from a browser). An Upgrade header is read under its canonical
// key, as Header.Set writes it, in all its values (net/http writes them
// all): asking the map for it costs far less than ranging over a
// request's dozen headers for another spelling. An upgrade asked for
// under a key written in another case is refused when its 101 comes
// back, before anything is sent over it (see switchedProtocols).
func spendsOutsideAnswers(req *http.Request, path *pathFacts, absent headerKeys) bool {
	return path.realtime || absent&keyUpgrade == 0 && slices.ContainsFunc(req.Header["Upgrade"], notBlank)
}

// headerKeys is a set of the keys the Budget looks up in every priced
// request's header, under their canonical keys: Upgrade, the gateways'
// headers, Vertex's priority.
type headerKeys uint8

const (
	keyUpgrade headerKeys = 1 << iota
	keyPortkeyConfig
	keyPortkeyProvider
	keyHeliconeFallbacks
	keyVertexPriority
	everyKey headerKeys = 1<<iota - 1
)

// absentKeys returns the Budget's header keys that h certainly does not
// hold; a key not in the set is looked up where it is read. A header of
// a few keys (go-openai sends three, a hand-written client two) is ranged
// over once, which costs less than looking up the five keys (~0.45k
// instructions less a request with one key), as mayReportSpentWindow
// ranges over a small response header; for a larger one (openai-go and
// anthropic-sdk-go send a dozen) it is the empty set, and each key is
// looked up. The range stops at the last key (see mayReportSpentWindow).
func absentKeys(h http.Header) headerKeys {
	if len(h) > 4 {
		return 0 // in line: a larger header pays no call
	}
	return absentOfFew(h)
}

// absentOfFew is absentKeys of a header of a few keys. A header of one
// or two keys that are only a plain client's (Content-Type, and
// Authorization) holds none of the Budget's: asking the map for them
// costs less than starting a range, whose random start alone costs ~0.27k
// instructions (~0.19k less a request with Content-Type alone, ~0.13k
// with both). Any other key is found by the range.
func absentOfFew(h http.Header) headerKeys {
	if len(h) <= 2 && holdsOnlyPlainKeys(h) {
		return everyKey
	}
	left, absent := len(h), everyKey
	for k := range h {
		switch k {
		case "Upgrade":
			absent &^= keyUpgrade
		case "X-Portkey-Config":
			absent &^= keyPortkeyConfig
		case "X-Portkey-Provider":
			absent &^= keyPortkeyProvider
		case "Helicone-Fallbacks":
			absent &^= keyHeliconeFallbacks
		case vertexPriorityKey:
			absent &^= keyVertexPriority
		}
		if left--; left == 0 {
			break
		}
	}
	return absent
}

// holdsOnlyPlainKeys reports whether every key of h, a header of two
// keys at most, is Content-Type or Authorization.
func holdsOnlyPlainKeys(h http.Header) bool {
	n := 0
	if _, ok := h["Content-Type"]; ok {
		n++
	}
	if n < len(h) {
		if _, ok := h["Authorization"]; ok {
			n++
		}
	}
	return n == len(h)
}

// retrievesResponse reports whether req is a GET of a response the
// provider stored (…/responses/{id}, or its …/input_items), which is not
// billed: what it returns was charged to the request that made it.
// openai-go sends one with a body, {"stream":true}, to resume a background
// response's stream (Responses.GetStreaming); a body that names no model.
// Only a plain one is: a path with a . or .. segment, an escape or a
// backslash, which a gateway may resolve to another endpoint, a path that
// names a deployment (see pathFacts), or a request carrying a header that
// asks a server to run another method or path (see overrideHeaders), is
// priced as any request.
func retrievesResponse(req *http.Request, path *pathFacts) bool {
	if req.Method != "" && req.Method != http.MethodGet || path.deployment != "" {
		return false
	}
	p := sentPath(req.URL)
	i := strings.LastIndex(p, "/responses/")
	if i < 0 {
		return false
	}
	id, items := p[i+len("/responses/"):], ""
	if j := strings.IndexByte(id, '/'); j >= 0 {
		id, items = id[:j], id[j:]
	}
	if id == "" || items != "" && items != "/input_items" || !unambiguousPath(p) {
		return false
	}
	for _, h := range overrideHeaders {
		if len(req.Header[h]) > 0 {
			return false
		}
	}
	return true
}

// overrideHeaders are the headers, under their canonical keys, in which a
// client may ask a server to run a request as another method (Google's
// frontends, Express's method-override) or at another path (IIS's URL
// Rewrite, Symfony).
var overrideHeaders = [...]string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override", "X-Original-Url", "X-Rewrite-Url"}

// unambiguousPath reports whether the path sent, p, reads the same to
// every server: no . or .. segment, no escape (%2e%2e is .. to one that
// decodes), no backslash (a separator to some).
func unambiguousPath(p string) bool {
	if strings.ContainsAny(p, `%\`) {
		return false
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// notBlank reports whether net/http writes the header value v as more than
// blanks.
func notBlank(v string) bool { return textproto.TrimString(v) != "" }

// pathFacts is what a request's path says of what runs it, read in one
// pass over each form of the path: the one net/http sends and its decoded
// form (when they differ).
type pathFacts struct {
	realtime bool // a segment is realtime, in any case (see spendsOutsideAnswers)
	videos   bool // a segment is videos or video, in any case: a video job
	// free and moderation are freeEndpoint's answer, speech says the path
	// ends with /audio/speech, and images with an Images API endpoint
	// (/images/generations, /images/edits, /images/variations), in the
	// path sent (see readSent).
	free, moderation, speech, images bool
	// deployment is the model the path sent names, which runs the
	// request whatever model its body names: an Azure OpenAI deployment
	// (/openai/deployments/{name}/...) or an engine (/engines/{name}/...,
	// OpenAI's legacy API, which LiteLLM serves), the words in any case;
	// "" for other paths.
	deployment string
	// queried says that deployment is the model the query string names
	// (see QueryModel), not the path.
	queried bool
	// spanned, when not "", is the name the path gives when read as
	// LiteLLM reads it, spanning segments (see pathModelName): the model
	// that runs the request is one or the other, and the Budget refuses it.
	spanned string
}

// readPath returns the facts of u's path: those sentPaths keeps, which
// must not be changed, or those read into *own.
func readPath(u *url.URL, own *pathFacts) *pathFacts {
	sent := sentPath(u)
	if u.Path == sent { // most paths: sent as they are
		return sentPaths.get(sent, sent, readSent, own)
	}
	*own = readSent(sent)
	// Servers that route on the decoded path run the deployment it names
	// (/openai/deployments%2Fx/... is x's): a deployment only it names is
	// the request's, and one it names otherwise than the path sent makes
	// the request refused, as spanning segments does (see pathFacts).
	own.merge(readPathForm(u.Path, true))
	return own
}

// merge adds to f the facts of another form of its path, d, as a server
// that routes on that form reads it: a deployment only d names is the
// request's, and one d names otherwise than f makes the request refused,
// as spanning segments does (see pathFacts).
func (f *pathFacts) merge(d pathFacts) {
	f.realtime, f.videos = f.realtime || d.realtime, f.videos || d.videos
	switch {
	case d.deployment == "" || d.deployment == f.deployment:
	case f.deployment == "":
		f.deployment, f.spanned = d.deployment, d.spanned
	case f.spanned == "":
		f.spanned = d.deployment
	}
}

// readSent reads the path sent: readPathForm, and the endpoint it names.
// A deployment, and an endpoint whose output is priced above text
// (speech, images), are read as lenient servers route the path too (see
// routedAs, servedAs); a free endpoint only as spelled exactly.
func readSent(path string) pathFacts {
	f := readPathForm(path, true)
	f.free, f.moderation = endpointOf(path)
	f.speech, f.images = speechPath(path), imagesPath(path)
	lenient := routedOtherwise(path)
	if !lenient && (f.speech || f.images) {
		return f
	}
	routed := routedAs(path)
	// Lenient servers run the deployment the path names as they route it
	// (/openai\deployments\x/..., /openai/deployments;v=1/x/... are x's).
	if lenient {
		f.merge(readPathForm(routed, true))
	}
	if !f.speech && !f.images {
		served := strings.ToLower(routed) // servedAs
		f.speech, f.images = speechPath(served), imagesPath(served)
	}
	return f
}

func speechPath(p string) bool { return strings.HasSuffix(p, "/audio/speech") }

func imagesPath(p string) bool {
	return strings.HasSuffix(p, "/images/generations") || strings.HasSuffix(p, "/images/edits") || strings.HasSuffix(p, "/images/variations")
}

// servedAs is the path sent, p, as the most lenient servers route it:
// routedAs, in lower case (Express, ASP.NET).
func servedAs(p string) string { return strings.ToLower(routedAs(p)) }

// routedOtherwise reports whether routedAs may read p's segments
// otherwise than they are sent: most paths hold none of what it changes.
func routedOtherwise(p string) bool {
	return strings.ContainsAny(p, `\;%`) || strings.Contains(p, "//") || strings.Contains(p, "/.")
}

// routedAs is the path sent, p, as lenient servers route it: decoded
// (Starlette, which LiteLLM's proxy runs on, routes /v1%2Fx as /v1/x),
// backslashes read as slashes (IIS), ;parameters dropped (Java's servers),
// dot segments resolved (gateways that normalize paths), empty segments
// and a trailing slash dropped.
func routedAs(p string) string {
	if d, err := url.PathUnescape(p); err == nil {
		p = d
	}
	p = strings.ReplaceAll(p, `\`, "/")
	if strings.IndexByte(p, ';') >= 0 {
		segs := strings.Split(p, "/")
		for i, seg := range segs {
			segs[i], _, _ = strings.Cut(seg, ";")
		}
		p = strings.Join(segs, "/")
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return pathpkg.Clean(p)
}

// sentPaths holds the facts of the paths read before, so that a request
// to a path seen before costs no reading: a process sends to a few
// endpoints, over and over. A path's facts never change (see firstSlots).
var sentPaths firstSlots[string, pathFacts]

// readPathForm reads one form of a path; the deployment only when sent.
func readPathForm(path string, sent bool) pathFacts {
	if plainPath(path) { // most paths: one scan of their bytes, no call per segment
		return pathFacts{}
	}
	return readSegments(path, sent)
}

// readSegments is readPathForm, a segment at a time.
func readSegments(path string, sent bool) pathFacts {
	var f pathFacts
	prev, deployment := noPathWord, false
	for path != "" || deployment {
		var part string
		part, path = nextSegment(path)
		if deployment && f.deployment == "" {
			f.deployment = part
			if name := pathModelName(part, path); name != part {
				f.spanned = name
			}
		}
		w := noPathWord
		if len(part) >= minPathWord {
			w = readPathWord(part)
		}
		f.realtime = f.realtime || w == wordRealtime
		f.videos = f.videos || w == wordVideos || w == wordVideo
		deployment = sent && f.deployment == "" && (prev == wordOpenAI && w == wordDeployments || w == wordEngines)
		prev = w
	}
	return f
}

// pathWord is a path segment readPathForm looks for: an index in
// pathWords, or noPathWord.
type pathWord int8

const (
	noPathWord pathWord = iota - 1
	wordRealtime
	wordVideos
	wordVideo // new-api's and other relays' /v1/video/generations
	wordOpenAI
	wordDeployments
	wordEngines
)

var pathWords = [...]string{wordRealtime: "realtime", wordVideos: "videos", wordVideo: "video", wordOpenAI: "openai", wordDeployments: "deployments", wordEngines: "engines"}

// minPathWord is the length of the shortest of pathWords: a shorter
// segment is none of them.
const minPathWord = len("video")

// plainPath reports whether no segment of path can be one of pathWords,
// which readPathWord tells by its length and first byte: then
// readSegments reads nothing in it.
func plainPath(path string) bool {
	start := 0
	for i := 0; i < len(path); i++ {
		if path[i] == '/' {
			if i-start >= minPathWord && pathWordFirst[path[start]] {
				return false
			}
			start = i + 1
		}
	}
	return len(path)-start < minPathWord || !pathWordFirst[path[start]]
}

// pathWordFirst flags the bytes a segment readPathWord may find a word in
// begins with: a word's first letter, in either case, or a byte above
// 0x7f (a rune that may fold to it).
var pathWordFirst = func() (t [256]bool) {
	for _, word := range pathWords {
		t[word[0]], t[word[0]&^0x20] = true, true
	}
	for c := utf8.RuneSelf; c < len(t); c++ {
		t[c] = true
	}
	return t
}()

// readPathWord returns the word of pathWords that seg is, in any case.
func readPathWord(seg string) pathWord {
	if len(seg) < minPathWord {
		return noPathWord
	}
	// A segment that begins with an ASCII byte can be only a word that
	// begins with it, in either case: most segments are none, and are
	// told so without a call to EqualFold.
	c := seg[0] | 0x20
	for w, word := range pathWords {
		if (c == word[0] || seg[0] >= utf8.RuneSelf) && isWordFold(seg, word) {
			return pathWord(w)
		}
	}
	return noPathWord
}

// pathModelTails are the endpoints that follow a model a path names.
var pathModelTails = [...]string{"chat/completions", "completions", "embeddings", "responses", "messages",
	"audio/speech", "audio/transcriptions", "audio/translations", "images/generations", "images/edits"}

// pathModelName returns the model a path names from its segment first
// on, rest being the path after it: the segments up to the endpoint that
// ends the path, when one of pathModelTails does (LiteLLM reads a name
// that spans segments, as openai/gpt-4o), or first alone (an Azure
// deployment's name is one segment).
func pathModelName(first, rest string) string {
	for _, tail := range pathModelTails {
		if rest == tail {
			return first
		}
		if m, ok := strings.CutSuffix(rest, "/"+tail); ok {
			return first + "/" + m
		}
	}
	return first
}

// isWordFold reports whether s is word, an ASCII word, in any case.
func isWordFold(s, word string) bool {
	// Each rune of a string that folds to word folds to one ASCII letter,
	// in 3 bytes at most (K, the Kelvin sign, is k).
	return len(s) >= len(word) && len(s) <= 3*len(word) && strings.EqualFold(s, word)
}

// nextSegment splits path at its first slash: the segment before it, and
// the rest after it ("" when there is none). strings.SplitSeq costs ten
// times more, on every request.
func nextSegment(path string) (seg, rest string) {
	if i := strings.IndexByte(path, '/'); i >= 0 {
		return path[:i], path[i+1:]
	}
	return path, ""
}

// errorPath is sentPath for an error's message: an opaque URL's authority
// ("//user:key@host/…") without its user info, and the opaque URL without
// a query written into it ("/v1/…?key=…"), where a key may be.
func errorPath(u *url.URL) string {
	p := sentPath(u)
	if u.Opaque == "" {
		return p
	}
	p, _, _ = strings.Cut(p, "?")
	if !strings.HasPrefix(p, "//") {
		return p
	}
	auth, rest, slash := strings.Cut(p[len("//"):], "/")
	if i := strings.LastIndexByte(auth, '@'); i >= 0 {
		auth = auth[i+1:]
	}
	if slash {
		return "//" + auth + "/" + rest
	}
	return "//" + auth
}

// sentPath is the path net/http sends for u, escaped: Opaque in its place
// when set (url.URL.RequestURI), up to a '?' written in it, where the
// server's path ends and its query begins. Without a RawPath, it is Path: escaping
// keeps the bytes the package looks for in a path and writes none of them
// (its hex digits are upper case), so Path ends with such a suffix
// exactly when its escaped form does, and escaping costs a scan of the
// path, twice a request.
func sentPath(u *url.URL) string {
	switch {
	case u.Opaque != "":
		p, _, _ := strings.Cut(u.Opaque, "?")
		return p
	case u.RawPath == "":
		return u.Path
	}
	return u.EscapedPath()
}

// freeModeration reports whether a moderation request for model is one
// OpenAI serves free.
func freeModeration(model string) bool {
	return model == "" || strings.HasPrefix(model, "omni-moderation") || strings.HasPrefix(model, "text-moderation")
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

// quote is a priced attempt, ready to be reserved.
type quote struct {
	r          *http.Request   // the request to send: req, or a copy replaying its body
	kept       *keptBody       // when not nil, r's body, read whole from r.Body, to send (see keptBody)
	streamBody *bodyEdit       // when not nil, the edit that adds include_usage to the body sent
	chat       chatRequest     // what the body says, for the layers below
	at         streamOptionsAt // where include_usage goes in the body
	price      *Price          // the Budget's copy of the table's (Budget.pointers): not to be changed
	fallback   bool            // the table's FallbackModel entry gave price
	model      modelHash       // chat.Model's hash, or 0 when another listed name hashes alike (see foundPrice)
	// dearer, when set, is the model other than the body's whose own
	// entry gave price: a fallback model the request names, an Azure
	// deployment.
	dearer  string
	output  int64 // output tokens reserved per choice
	fromMax bool  // output came from the request's max_tokens
	// fromImages: output came from an Images API request's model, quality
	// and size (see imageOutputTokens).
	fromImages bool
	reserve    Money
	id         uint64     // the reservation's ID
	free       bool       // a moderation OpenAI serves free: q.r passes unpriced
	absent     headerKeys // the Budget's header keys the request certainly does not hold (see absentKeys)
}

// price reads req, whose path says path, and its body, and prices it
// into q, a zero quote (written in place: a quote is long to copy). It
// does not close req.Body, unless it reads it whole into q.kept; on
// success q.r is req or, for a body without GetBody, a copy that replays
// it, and q.kept, when set, is req's body to send.
// A moderation request (to a path ending in /moderations) for a model
// OpenAI serves free is not priced: q.free.
func (b *Budget) price(q *quote, req *http.Request, moderation bool, path *pathFacts) error {
	if req.GetBody == nil {
		r, body, err := replayableCtx(req, b.cfg.MaxBufferedBody)
		q.r = r
		return b.priceBody(q, req, body, err, moderation, path)
	}
	if req.ContentLength > 0 && req.ContentLength <= min(maxPooledBody, b.cfg.MaxBufferedBody) && freshGetBody(req.GetBody) {
		// A body http.NewRequest made replayable: its own Body is read
		// into q.kept, which the attempt sends (see keptBody), rather than
		// a GetBody copy thrown away once priced.
		k := getKeptBody()
		body, err := k.read(req, b.cfg.MaxBufferedBody)
		q.r, q.kept = req, k
		err = b.priceBody(q, req, body, err, moderation, path)
		if err != nil || q.free {
			err = q.unkeep(req, err)
		}
		return err
	}
	// The buffer goes back once the body is priced; not with a defer,
	// which priceBody's many returns would make cost a call of its own.
	buf := getBodyBuffer()
	body, err := readGetBody(req, b.cfg.MaxBufferedBody, *buf)
	q.r = req
	err = b.priceBody(q, req, body, err, moderation, path)
	putBodyBuffer(buf, body)
	return err
}

// unkeep gives q.kept back, for a request priced with err that sends no
// attempt: refused, or sent on unpriced (q.free), from req, with a copy
// of the bytes read and no GetBody. Not req's GetBody: req.Body was read,
// and a Retrier's resendGate above (with a Breaker between) fails its
// GetBody from then on, as if net/http were sending the request again; so
// would a Limiter below, reading a copy.
func (q *quote) unkeep(req *http.Request, err error) error {
	if err == nil && q.free {
		r := *req
		r.Body, r.GetBody = io.NopCloser(bytes.NewReader(bytes.Clone(q.kept.b))), nil
		q.r = &r
	}
	q.dropKept()
	return err
}

// dropKept gives q.kept back, for a request that will not send it.
func (q *quote) dropKept() {
	if q.kept != nil {
		q.kept.Close()
		q.kept = nil
	}
}

// priceBody is price into q, whose r is the request to send (req, or its
// replayable copy), given what reading req's body gave: body and err.
func (b *Budget) priceBody(q *quote, req *http.Request, body []byte, err error, moderation bool, path *pathFacts) error {
	if err != nil {
		if q.r != req {
			closeRequestBody(q.r) // what is left of an over-long body
		}
		if errors.Is(err, errBodyTooLarge) && moderation && req.GetBody != nil {
			// An image sent inline makes a moderation long: its model
			// alone says whether it is free.
			if model, ok := moderationModel(req); ok && freeModeration(model) {
				q.free = true
				return nil
			}
		}
		if errors.Is(err, errBodyTooLarge) {
			return fmt.Errorf("httpguard: budget: request body over MaxBufferedBody (%d bytes) cannot be priced: raise BudgetConfig.MaxBufferedBody, or exempt such requests with BudgetConfig.Exempt: %w", b.cfg.MaxBufferedBody, ErrUnknownModel)
		}
		return fmt.Errorf("httpguard: budget: reading the request body: %w", err)
	}
	cr := &q.chat // parsed in place: a chatRequest is long to copy
	var fallbacks []fallbackModel
	var images imageRequest
	if path.images {
		fallbacks, images, err = parseImagesRequest(req, body, cr, &q.at)
	} else {
		fallbacks, err = parseChatRequestFallbacks(body, cr, &q.at)
	}
	deployment := path.deployment
	if cr.Model == "" {
		cr.Model = deployment // the model that runs it
	}
	switch {
	case err != nil && errors.Is(err, errAmbiguousRequest): // not a call for most bodies
		return fmt.Errorf("httpguard: budget: %s (servers would read this body differently; spell the field as the API documents): %w", trimPrefix(err), ErrUnknownModel)
	case err != nil && errors.Is(err, errJSONSyntax):
		// Most often an upload (multipart/form-data: audio, files): say what
		// the body is, by its media type (the boundary after it is noise).
		mt, _, _ := strings.Cut(req.Header.Get("Content-Type"), ";")
		return fmt.Errorf("httpguard: budget: request body (Content-Type %q) cannot be priced (%v); exempt such requests with BudgetConfig.Exempt: %w", strings.TrimSpace(mt), trimPrefix(err), ErrUnknownModel)
	case err != nil:
		return fmt.Errorf("httpguard: budget: request body cannot be priced (%v); exempt such requests with BudgetConfig.Exempt: %w", trimPrefix(err), ErrUnknownModel)
	case moderation && freeModeration(cr.Model):
		q.free = true
		return nil
	case cr.Model == "":
		return fmt.Errorf("httpguard: budget: request body names no model; exempt such requests with BudgetConfig.Exempt: %w", ErrUnknownModel)
	case cr.Job == reqPromptID || cr.Job == reqUserConfig:
		return fmt.Errorf("httpguard: budget: request names a %s, on which a relay (LiteLLM) runs a model, max_tokens or messages it holds in place of the body's, so it cannot be priced: send them in the body, or exempt such requests with BudgetConfig.Exempt: %w", requestFieldNames[cr.Job], ErrUnknownModel)
	case q.absent&keyPortkeyConfig == 0 && portkeyOverrides(req.Header):
		return fmt.Errorf("httpguard: budget: request carries an x-portkey-config that may run it otherwise than its body says (override_params or an Azure deployment_id, in the config or a target, or a config's id, held on Portkey's side), so it cannot be priced: send the model and max_tokens in the body, or exempt such requests with BudgetConfig.Exempt: %w", ErrUnknownModel)
	case q.absent&keyPortkeyProvider == 0 && portkeyDeployment(req.Header):
		return fmt.Errorf("httpguard: budget: request names an Azure deployment in x-portkey-azure-deployment-id, on which Portkey's gateway runs it whatever model its body names, so it cannot be priced: send it to Azure at the deployment's path (/openai/deployments/{name}/...), which the Budget prices, or exempt such requests with BudgetConfig.Exempt: %w", ErrUnknownModel)
	case q.absent&keyHeliconeFallbacks == 0 && heliconeOverrides(req.Header):
		return fmt.Errorf("httpguard: budget: request carries a helicone-fallbacks header that may run it otherwise than its body says (a fallback's bodyKeyOverride, which Helicone merges into the body: a model, max_tokens, n), so it cannot be priced: send the model and max_tokens in the body, or exempt such requests with BudgetConfig.Exempt: %w", ErrUnknownModel)
	case cr.Job != reqModel:
		return fmt.Errorf("httpguard: budget: request starts a job (%s: an Assistants run, a fine-tuning job or a batch) that the provider answers without usage and bills by what the body does not hold, so it cannot be priced; exempt such requests with BudgetConfig.Exempt: %w", requestFieldNames[cr.Job], ErrUnknownModel)
	case path.spanned != "":
		return fmt.Errorf("httpguard: budget: the path names the model that runs the request as %q, which LiteLLM, or a server that routes the path leniently, reads as %q: name the model in one segment, or send the request to an endpoint without one: %w", deployment, path.spanned, ErrUnknownModel)
	case path.videos:
		return fmt.Errorf("httpguard: budget: request starts a video job (%s), which the provider answers queued, without usage, and bills by the second, so it cannot be priced; exempt such requests with BudgetConfig.Exempt: %w", errorPath(req.URL), ErrUnknownModel)
	case cr.Background && cr.MaxOutput <= 0:
		return fmt.Errorf("httpguard: budget: request runs in the background (\"background\": true): it is answered queued, without usage, and charged its reservation alone, which bounds its output only with max_output_tokens: set max_output_tokens: %w", ErrUnknownModel)
	case cr.StoredInput && b.cfg.StoredInputReserve == 0:
		return fmt.Errorf("httpguard: budget: request continues input the provider stored (previous_response_id, conversation, a stored prompt, an input item_reference, a reasoning item by its id alone, a Gemini context cache, cached_content, or an Anthropic message thread, thread), which it bills as input but the body does not hold: send that input in the body, or set BudgetConfig.StoredInputReserve to the tokens such input may hold: %w", ErrUnknownModel)
	case cr.StoredInput:
		cr.PromptTokens += min(b.cfg.StoredInputReserve, maxUsageTokens) // as usage counts are bounded
	}
	// Speech answers with audio alone: its output is audio, and the
	// reservation is its charge.
	if path.speech {
		cr.Outputs |= audioOutput
	}
	// So does the Images API with images: its output is priced as image
	// output, and reserved so.
	if path.images {
		cr.Outputs |= imageOutput | imagesAlone
	}
	if cr.Tier == tierStandard && q.absent&keyVertexPriority == 0 && vertexPriority(req.Header) {
		cr.Tier = tierPriority
	}
	var miss foundPrice
	found := b.prices.lookup(b.pointers, b.served, cr.Model, cr.Tier, &miss)
	switch {
	case !found.ok && cr.Tier != tierStandard:
		what := cr.tierWhat()
		if cr.Tier == tierPriority && vertexPriority(req.Header) {
			what = vertexPriorityHeader + ": priority"
		}
		return fmt.Errorf("httpguard: budget: model %q asks for %v, billed above standard prices, and has no price for it: add a %q entry to the price table (%q prices every unlisted model's): %w",
			cr.Model, what, cr.Model+cr.Tier.suffix(), FallbackModel+cr.Tier.suffix(), ErrUnknownModel)
	case !found.ok:
		return fmt.Errorf("httpguard: budget: model %q has no price: add it to the price table, or a %q entry to price every unlisted model: %w", cr.Model, FallbackModel, ErrUnknownModel)
	case listsModels(found, cr.Model):
		return fmt.Errorf("httpguard: budget: model %q names several models, which LiteLLM runs each, billed each, for one request (a batch): name one model, or add a %q entry to the price table that prices them all: %w", cr.Model, cr.Model, ErrUnknownModel)
	}
	q.price, q.fallback, q.model = found.price, found.fallback, found.model
	if cr.MaxOutput <= 0 && namesClaude(deployment) {
		// LiteLLM runs the engine the path names, Claude, with the thinking
		// budget of a reasoning_effort, whatever model the body names.
		cr.MaxOutput = -max(-cr.MaxOutput, claudeEffortMaxTokens(body))
	}
	q.fromMax = cr.MaxOutput > 0
	if path.images {
		// The Images API takes no max_tokens: an image's output is bounded
		// by its model, quality and size, for each model that may run it.
		cr.MaxOutput = b.imagesOutput(images, cr, deployment, fallbacks)
		q.fromMax, q.fromImages = false, true
	}
	var outputs int64
	q.output, outputs = b.outputBound(cr)
	if cr.Tools != nil { // before tokenReserve, which prices these tokens as input
		cr.Tools.ResultTokens = toolResultTokens(cr.Tools, addTokens(cr.PromptTokens, q.output), b.cfg.ToolResultReserve, b.cfg.ToolCallReserve, cr.Choices)
	}
	q.reserve = tokenReserve(found.price, cr, outputs)
	// A relay may serve the request with a fallback model instead, billed
	// at its own price: the request is priced at the dearest. Anthropic's
	// server-side fallbacks bill every model they try, the ones that
	// refused too: a request to any path that may be its Messages API
	// reserves them all (see oneModelServes).
	// An entry of Anthropic's may set its own max_tokens: its output is
	// reserved at them.
	every := q.reserve
	for _, f := range fallbacks {
		if f.fast && !strings.HasPrefix(string(cr.Tier), string(tierFast)) {
			// Its model is billed at fast prices, which the request's
			// tier settles no model at.
			return fmt.Errorf("httpguard: budget: the fallback to %q sets a \"speed\" other than \"standard\" (fast mode), billed at that model's fast prices, but the request runs at standard speed, whose prices settle every model it names: set \"speed\": \"fast\" on the request too (with %q prices), or leave the fallback's speed out: %w",
				f.name, f.name+FastTier, ErrUnknownModel)
		}
		m, hop, hopOutputs := f.name, f.at(cr), outputs
		if hop != cr {
			var perChoice int64
			perChoice, hopOutputs = b.outputBound(hop)
			q.output = max(q.output, perChoice)
		}
		r, ok := b.priceAtDearer(q, hop, hopOutputs, m)
		every = addSat(every, r)
		if !ok {
			return fmt.Errorf("httpguard: budget: model %q, which the request names (in models or fallbacks) to serve it if %q cannot, has no price: add a %q entry to the price table (%q prices every unlisted model's): %w",
				m, cr.Model, m+cr.Tier.suffix(), FallbackModel+cr.Tier.suffix(), ErrUnknownModel)
		}
	}
	tried := 1 // the models billed for the request, at most
	if len(fallbacks) > 0 && !oneModelServes(req.URL) {
		q.reserve = min(every, MaxBudgetLimit+1)
		tried += len(fallbacks)
	}
	// Azure runs the request on its deployment, LiteLLM on the engine the
	// path names, whatever the body names.
	priced := true
	if deployment != "" && deployment != cr.Model {
		_, priced = b.priceAtDearer(q, cr, outputs, deployment)
	}
	if !priced {
		what := "the deployment or engine %q the path names"
		if path.queried {
			what = "the model %q the query string names (LiteLLM's ?model=)"
		}
		return fmt.Errorf("httpguard: budget: "+what+", which runs the request whatever model its body names (%q), has no price: add a %q entry to the price table (%q prices every unlisted model's): %w",
			deployment, cr.Model, deployment+cr.Tier.suffix(), FallbackModel+cr.Tier.suffix(), ErrUnknownModel)
	}
	if lc := q.price.LongContext; lc == nil || lc.Above > anthropicContext {
		input := cr.PromptTokens // as tokenReserve bounds the input: with what server tools return
		if cr.Tools != nil {
			input += cr.Tools.ResultTokens
		}
		// Most prompts are far below: the header is then not read.
		if input > anthropicContext {
			if beta := longContextBeta(req.Header); beta != "" {
				fix := fmt.Sprintf(`add "long_context" to its entry ({"above": %d, "input": …, "output": …})`, anthropicContext)
				if lc != nil {
					fix = fmt.Sprintf(`lower its "long_context" "above" to %d`, anthropicContext)
				}
				return fmt.Errorf("httpguard: budget: the request asks for Anthropic's long context (anthropic-beta: %s), billed at long-context prices past %d input tokens, which its input may pass, and the price of model %q has none from there: %s: %w",
					beta, anthropicContext, cr.Model, fix, ErrUnknownModel)
			}
		}
	}
	if cr.Tools != nil {
		if cr.Tools.Reserve, cr.Tools.Containers, err = toolReserve(b.cfg.ToolPrices, cr.Tools, b.cfg.ToolCallReserve, cr.Choices); err != nil {
			return fmt.Errorf("httpguard: budget: %v: add its fee per call (or per 1 GB container) to BudgetConfig.ToolPrices (0 if it has none); exempt such requests with BudgetConfig.Exempt: %w: %w", err, ErrUnpricedTool, ErrUnknownModel)
		}
		if cr.Background && !cr.Tools.callsBounded(b.cfg.ToolPrices) {
			return fmt.Errorf("httpguard: budget: request runs in the background (\"background\": true) with server tools, billed per call or for what they return to the model: it is answered queued, without the calls it makes, and charged its reservation alone, which bounds them only with max_tool_calls: set max_tool_calls: %w", ErrUnknownModel)
		}
		// Each model tried may call the tools, up to their bounds.
		q.reserve = addSat(q.reserve, mulSat(int64(tried), cr.Tools.Reserve))
	}
	if cr.Stream && !cr.IncludeUsage && !b.cfg.DisableStreamUsage && acceptsStreamOptions(req) {
		if e, changed := withStreamUsage(body, cr, &q.at); changed {
			q.streamBody = &e // holds no reference to body, which may go back to bodyBuffers
		}
	}
	if b.ownStore() == nil {
		// The Budget's own store without a lease names no reservation
		// (see reserveUnleased): an ID, a write every core shares, only
		// for the stores that keep one.
		q.id = b.ids.v.Add(1)
	}
	return nil
}

// entryIndex returns one plus the index of entry in b.entries, or 0 when
// it is not there or past what budgetAttempt.dearer holds.
func (b *Budget) entryIndex(entry string) uint16 {
	i, ok := slices.BinarySearch(b.entries, entry)
	if !ok || i >= math.MaxUint16 {
		return 0
	}
	return uint16(i + 1)
}

// priceAtDearer prices q at model's price when it reserves more for cr,
// with outputs output tokens, and returns what model's price reserves;
// false when model has no price.
func (b *Budget) priceAtDearer(q *quote, cr *chatRequest, outputs int64, model string) (Money, bool) {
	var miss foundPrice
	f := b.prices.lookup(b.pointers, b.served, model, cr.Tier, &miss)
	if !f.ok || listsModels(f, model) {
		return 0, false
	}
	r := tokenReserve(f.price, cr, outputs)
	if r > q.reserve {
		q.price, q.fallback, q.reserve, q.dearer = f.price, f.fallback, r, ""
		if !f.fallback {
			q.dearer = model
		}
	}
	return r, true
}

// oneModelServes reports whether the fallbacks of a request to u are a
// relay's, of which one model serves and is billed (OpenRouter's models,
// LiteLLM's fallbacks): its path ends with /completions or /responses,
// as sent and decoded. Any other path may be served as a Messages API's,
// whose server-side fallbacks bill every model they try: servers route
// /v1/Messages, /v1/messages/, /v1/messages/., /v1/messages;v=1 and
// /v1%2Fmessages there, by their case, slashes, dot segments, path
// parameters or escapes.
func oneModelServes(u *url.URL) bool {
	sent := sentPath(u)
	return relayEndpoint(sent) && (u.Path == sent || relayEndpoint(u.Path))
}

func relayEndpoint(p string) bool {
	return strings.HasSuffix(p, "/completions") || strings.HasSuffix(p, "/responses")
}

// anthropicContext is the prompt size, in input tokens, past which
// Anthropic bills a request that asks for its long context (see
// longContextBeta) at long-context prices.
const anthropicContext = 200_000

// longContextBeta returns the anthropic-beta flag of h that asks for
// Anthropic's 1M-token context ("context-1m-2025-08-07"), under which a
// prompt past anthropicContext tokens is billed at long-context prices
// (twice the input price, 1.5 times the output's, for Claude Sonnet 4 and
// 4.5), or "" when none does. Flags are comma-separated, in any case.
// Gateways forward the flags of their own headers as anthropic-beta
// (see anthropicBetaKeys).
func longContextBeta(h http.Header) string {
	beta := ""
	for _, key := range anthropicBetaKeys {
		if anyHeaderValue(h, key, func(v string) bool {
			for flag := range strings.SplitSeq(v, ",") {
				if flag = strings.TrimSpace(flag); len(flag) >= len("context-1m") && strings.EqualFold(flag[:len("context-1m")], "context-1m") {
					beta = flag
					return true
				}
			}
			return false
		}) {
			break
		}
	}
	return beta
}

// anthropicBetaKeys are the headers, under their canonical keys, whose
// flags reach Anthropic as anthropic-beta: its own, LiteLLM's x-pass-
// form (forwarded with the prefix stripped, whatever the proxy's
// settings) and Portkey's.
var anthropicBetaKeys = [...]string{"Anthropic-Beta", "X-Pass-Anthropic-Beta", "X-Portkey-Anthropic-Beta"}

// portkeyOverrides reports whether h carries a Portkey config
// (x-portkey-config) under which Portkey's gateway may run the request
// otherwise than its body says: one that is not a JSON object (a config's
// id, "pc-…", held on Portkey's side), or one that sets override_params
// (overrideParams, as Portkey also reads it; any case) at any depth, which
// Portkey merges into the body (a model, max_tokens, n), in the config or
// in a target of a fallback or a load balance. The header is read under
// its canonical key, as Header.Set and the SDKs' header options write it
// (and as a server reads any spelling); as for vertexPriority, ranging
// over every request's headers for another spelling would cost a real
// SDK's request (a dozen headers) about as much as pricing its body.
func portkeyOverrides(h http.Header) bool {
	for _, v := range h["X-Portkey-Config"] {
		if v = textproto.TrimString(v); v == "" {
			continue
		}
		var cfg map[string]any
		if json.Unmarshal([]byte(v), &cfg) != nil || overridesParams(cfg) {
			return true
		}
	}
	return false
}

// overridesParams reports whether v, a decoded JSON value, holds a member
// override_params or overrideParams, or deployment_id or deploymentId (the
// Azure OpenAI deployment that runs the request, whatever model its body
// names), in any case, at any depth.
func overridesParams(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if strings.EqualFold(k, "override_params") || strings.EqualFold(k, "overrideParams") ||
				strings.EqualFold(k, "deployment_id") || strings.EqualFold(k, "deploymentId") || overridesParams(e) {
				return true
			}
		}
	case []any:
		return slices.ContainsFunc(v, overridesParams)
	}
	return false
}

// portkeyDeployment reports whether h asks Portkey's gateway to run the
// request on an Azure OpenAI deployment it names in a header
// (x-portkey-azure-deployment-id), which Portkey reads when the provider
// it names (x-portkey-provider) is azure-openai: the deployment runs the
// request whatever model its body names. The provider is looked up first,
// a header that Portkey requests alone carry; both are read under their
// canonical keys, as portkeyOverrides reads its header.
func portkeyDeployment(h http.Header) bool {
	for _, v := range h["X-Portkey-Provider"] {
		if strings.EqualFold(textproto.TrimString(v), "azure-openai") {
			return slices.ContainsFunc(h["X-Portkey-Azure-Deployment-Id"], notBlank)
		}
	}
	return false
}

// heliconeOverrides reports whether h carries a Helicone-Fallbacks header
// under which Helicone's gateway may run the request otherwise than its
// body says: one that is not a JSON array of objects, or one in which a
// fallback sets bodyKeyOverride (in any case), whose members Helicone
// writes into the body (a model, max_tokens, n) for that fallback and
// those after it. The header is read under its canonical key.
func heliconeOverrides(h http.Header) bool {
	for _, v := range h["Helicone-Fallbacks"] {
		if v = textproto.TrimString(v); v == "" {
			continue
		}
		var fallbacks []map[string]any
		if json.Unmarshal([]byte(v), &fallbacks) != nil {
			return true
		}
		for _, f := range fallbacks {
			for k, e := range f {
				if strings.EqualFold(k, "bodyKeyOverride") && e != nil {
					return true
				}
			}
		}
	}
	return false
}

// anyHeaderValue reports whether ok holds for a value of h under key, a
// canonical key, or under another spelling of it: net/http writes a key
// set in the map directly as it is ("anthropic-beta"), and servers read
// header names in any case.
func anyHeaderValue(h http.Header, key string, ok func(string) bool) bool {
	for _, v := range h[key] { // canonical: Values would canonicalize it again
		if ok(v) {
			return true
		}
	}
	for k, vs := range h {
		if k == key || len(k) != len(key) || !strings.EqualFold(k, key) {
			continue
		}
		for _, v := range vs {
			if ok(v) {
				return true
			}
		}
	}
	return false
}

// vertexPriorityHeader asks Vertex AI to run a request at Priority PayGo,
// billed above standard prices; the body does not say so, nor does the
// answer in OpenAI's format. LiteLLM forwards it.
const vertexPriorityHeader = "X-Vertex-AI-LLM-Shared-Request-Type"

// vertexPriorityKey is vertexPriorityHeader as http.Header keys it
// (http.CanonicalHeaderKey), a constant for absentOfFew's switch.
const vertexPriorityKey = "X-Vertex-Ai-Llm-Shared-Request-Type"

// vertexPriority reports whether h asks Vertex AI for Priority PayGo: the
// request is then priced as one whose service_tier is "priority". The
// header is read under its canonical key, as Header.Set writes it: a key
// written into the map in another case, which net/http sends as written,
// is not read (ranging over every request's headers for it would cost
// several times the lookup, for a header the callers who send it set with
// Set).
func vertexPriority(h http.Header) bool {
	return slices.ContainsFunc(h[vertexPriorityKey], func(v string) bool { return strings.EqualFold(strings.TrimSpace(v), "priority") })
}

// listsModels reports whether model, found as f, is a list of models
// ("a,b") that only FallbackModel prices: LiteLLM runs each model of such
// a list (route_request's batch), and one entry's price is one run's.
func listsModels(f *foundPrice, model string) bool {
	return f.fallback && strings.IndexByte(model, ',') >= 0
}

// outputBound returns the output tokens reserved for a request: for each
// choice (its max_tokens, else OutputReserve, or a thinking budget plus
// liteLLMDefaultMaxTokens when that is more), and for all its choices,
// saturated (OutputReserve is unbounded).
func (b *Budget) outputBound(cr *chatRequest) (perChoice, all int64) {
	perChoice = cr.MaxOutput
	if perChoice <= 0 {
		// Or, for a request that enables thinking, the max_tokens
		// LiteLLM runs it with, when that is more.
		perChoice = max(b.cfg.OutputReserve, -perChoice)
	}
	all = math.MaxInt64
	if perChoice <= math.MaxInt64/cr.Choices {
		all = perChoice * cr.Choices
	}
	return perChoice, all
}

// imagesOutput is the bound on each image's output tokens of cr, a
// request to the Images API whose body asks for r: the dearest for the models
// that may run it (the body's, the deployment the path names, its
// fallbacks).
func (b *Budget) imagesOutput(r imageRequest, cr *chatRequest, deployment string, fallbacks []fallbackModel) int64 {
	n := imageOutputTokens(cr.Model, r, b.cfg.OutputReserve, b.cfg.ImageReserve)
	if deployment != "" {
		n = max(n, imageOutputTokens(deployment, r, b.cfg.OutputReserve, b.cfg.ImageReserve))
	}
	for _, f := range fallbacks {
		n = max(n, imageOutputTokens(f.name, r, b.cfg.OutputReserve, b.cfg.ImageReserve))
	}
	return n
}

// parseImagesRequest is parseChatRequestFallbacks for req, a request to
// the Images API whose body is body, with what it asks of its images: an
// edit or a variation the SDKs send as multipart/form-data is read as a
// form (see parseImageForm).
func parseImagesRequest(req *http.Request, body []byte, cr *chatRequest, at *streamOptionsAt) ([]fallbackModel, imageRequest, error) {
	if form, boundary := formOf(req.Header); form == multipartForm {
		images, err := parseImageForm(body, boundary, cr)
		return nil, images, err
	}
	fallbacks, err := parseChatRequestFallbacks(body, cr, at)
	if err != nil {
		return nil, imageRequest{}, err
	}
	images := readImageRequest(body)
	cr.Choices = max(cr.Choices, min(images.choices, maxUsageTokens))
	return fallbacks, images, nil
}

// moderationModel reads the model a moderation body names from a fresh
// copy of it (req.GetBody), a read at a time, for a body too long to
// buffer. ok is false when the body is not a JSON object, or names its
// model in a way servers would read differently (a key in another case, a
// null after a value, a value not a string).
func moderationModel(req *http.Request) (model string, ok bool) {
	rc, err := callGetBody(req.GetBody)
	if err != nil {
		return "", false
	}
	defer rc.Close()
	r := modelReader{lex: jsonLexer{objectOnly: true}}
	p := make([]byte, 32<<10) // a rare path: bodies over MaxBufferedBody
	for {
		n, err := rc.Read(p)
		readText(&r.lex, &r.capture, p[:n], &r)
		if err == io.EOF {
			break
		}
		if err != nil || r.bad || r.lex.state == lexError {
			return "", false
		}
	}
	return r.model, !r.bad && r.lex.end()
}

// modelReader reads the top-level "model" members of a JSON object as
// they pass: the last string one is the model. A key in another case, a
// null after a string, or a value not a string or null is bad.
type modelReader struct {
	lex     jsonLexer
	capture valueCapture
	model   string
	named   bool
	bad     bool
}

// maxModelValue bounds a model name's JSON string.
const maxModelValue = 1 << 10

var modelKey = []string{"model"}

func (r *modelReader) readKey() {
	raw, escaped := r.lex.key()
	switch _, m := lookupName(raw, escaped, modelKey); m {
	case exactMatch:
		r.capture.start(maxModelValue)
	case foldMatch:
		r.bad = true
	}
}

func (r *modelReader) readMember(p []byte) {
	if !r.capture.on {
		return
	}
	v, whole := r.capture.end(p, &r.lex)
	switch s, isString := jsonString(v); {
	case !whole:
		r.bad = true
	case isString:
		r.model, r.named = s, true
	case !isJSONNull(v) || r.named:
		r.bad = true
	}
}

func (r *modelReader) readString()      {}
func (r *modelReader) readValue([]byte) {}

// trimPrefix drops the package prefix of an inner error, so that a message
// carries it once.
func trimPrefix(err error) string {
	return strings.TrimPrefix(err.Error(), "httpguard: ")
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
// windows, so it may have refused in the next one, opened by a clock ahead
// of this one, or before this one stepped back; and a shared store keeps
// the fleet in the window before span until span has started on its own
// clock, at about span's start.
func (b *Budget) resetOf(window string, span *windowSpan) time.Time {
	if window == span.key {
		return span.end
	}
	if next := b.spanAt(span.end); window == next.key {
		return next.end
	}
	if window == b.spanAt(span.start.Add(-1)).key {
		return span.start
	}
	return span.end
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

// budgetAttempt is one priced attempt in flight: one allocation for what
// its hooks need.
type budgetAttempt struct {
	context.Context // the request's; Value adds the parsed body

	parsed  parsedRequest // what the Budget parsed of sent's body
	sent    http.Request  // the request sent down, which parsed describes
	b       *Budget
	window  string
	price   *Price // the model's, the table's: not to be changed
	reserve Money
	id      uint64 // the reservation's
	// What the trace saw, as counts: with a Retrier inside (not the
	// recommended order) one RoundTrip holds several exchanges.
	writes atomic.Int32  // requests written whole
	heard  atomic.Int32  // responses begun (first bytes read)
	flags  atomic.Uint32 // attemptSettled, traceHooking, traceHooked, attemptConnAsked
	// pricedBy says which of the table's entries gave price, for
	// Settlement.PricedAs (see pricedAs): its FallbackModel entry, its
	// PriorityTier entry for an answer that ran at Priority (see
	// repriceAtPriority), its "@us" entry for an answer that ran in the US
	// (see repriceInGeo).
	pricedBy pricedBy
	// servedAs, when not 0, is the entry the answer's model was priced at
	// (see answerCharge): one plus its index among the Budget's names of
	// the answer's modelHash, the one of Usage.servedModels at servedModel.
	servedAs    uint8
	servedModel uint8
	// dearer, when not 0, is the entry of the model other than the body's
	// that priced the request (quote.dearer): one plus its index in the
	// Budget's entries.
	dearer uint16
	named  modelHash              // the hash of parsed.chat.Model, the model the request names, or 0 (see servedAsNamed, foundPrice)
	trace  *httptrace.ClientTrace // made once asked for: see hookedTrace
	usage  usageReader            // the response body, when the answer is a 2xx
	body   rewindingBody          // the request body sent, when it has GetBody
}

// pricedAs is the price table's entry that priced the attempt, whose
// answer was u: its model's, the fallback's, or that of the model the
// answer says served it, for its tier. Kept as flags rather than a string,
// so that the attempt stays in its allocation size class.
func (a *budgetAttempt) pricedAs(u *Usage) string {
	name := a.model()
	switch {
	case a.servedAs > 0:
		name = a.b.served[u.servedModels()[a.servedModel]][a.servedAs-1]
	case a.pricedBy&byFallback != 0:
		name = FallbackModel
	}
	switch {
	case a.pricedBy&byPriority != 0:
		return name + PriorityTier
	case a.pricedBy&byUS != 0:
		return name + a.parsed.chat.Tier.suffix() + geoUS.suffix()
	}
	return name + a.parsed.chat.Tier.suffix()
}

// model is the model whose entry priced the request: the one its body
// names, or a dearer one (see quote.dearer).
func (a *budgetAttempt) model() string {
	if a.dearer == 0 {
		return a.parsed.chat.Model
	}
	return strings.TrimSuffix(a.b.entries[a.dearer-1], a.parsed.chat.Tier.suffix())
}

// pricedBy is a set of flags saying which of the price table's entries
// gave an attempt its price (see budgetAttempt.pricedBy).
type pricedBy uint8

const (
	byFallback pricedBy = 1 << iota
	byPriority
	byUS
)

// The flags of budgetAttempt.flags, one word so that the attempt stays in
// its allocation size class.
const (
	attemptSettled       uint32 = 1 << iota
	traceHooking                // hookedTrace is setting the trace's hooks
	traceHooked                 // the trace's hooks are set
	attemptConnAsked            // an exchange began (a connection was asked for)
	attemptHeardLast            // the last response begun was counted in heard (see got1xxResponse)
	attemptWriting              // a write began (its headers went out) whose end is not reported yet (see wroteHeaders)
	attemptAnsweredBelow        // a layer below discarded an answer that may be billed, to send the attempt again (see discardedBelow)
	attemptLostBelow            // a layer below discarded an error after a write that no answer had begun, to send the attempt again (see discardedBelow)

	// The informational responses of the exchange under way, counted in
	// the flags' upper bits (see got1xxResponse).
	informationalShift = 8
	informationalMask  = 0xff << informationalShift

	// The writes begun (see wroteHeaders), up to maxOwnSends, counted in
	// the next bits.
	sendsShift = 16
	sendsMask  = 0xff << sendsShift

	// A second reservation is held, for a write lost before net/http sent
	// the attempt again; or is being reserved (see holdAgain).
	attemptHeldAgain    uint32 = 1 << 24
	attemptHoldingAgain uint32 = 1 << 25
)

// maxInformational is how many informational (1xx) responses an exchange
// may begin with. net/http bounds them by their header bytes only when no
// trace takes them: once the Budget's Got1xxResponse does, their bounding
// is the Budget's. Servers send a 100 Continue and a 103 Early Hints or
// two; net/http once allowed five; 32 rejects no real server and keeps a
// server that sends them without end from holding the request.
const maxInformational = 32

// errTooManyInformational ends an exchange that began with more than
// maxInformational informational responses.
var errTooManyInformational = fmt.Errorf("httpguard: budget: the server sent more than %d informational (1xx) responses before its answer", maxInformational)

// getConn marks an exchange begun, whose answer has not begun (see
// discardedBelow).
func (a *budgetAttempt) getConn(string) {
	if a.flags.Or(attemptConnAsked)&attemptHeardLast != 0 {
		a.flags.And(^attemptHeardLast)
	}
}

// gotFirstResponseByte counts a response begun: one for each exchange,
// final or informational (see got1xxResponse, sendOnce).
func (a *budgetAttempt) gotFirstResponseByte() {
	a.heard.Add(1)
	a.flags.And(^uint32(informationalMask))
	a.flags.Or(attemptHeardLast)
}

// got1xxResponse uncounts the response begun when it was informational (a
// 103 Early Hints, a 100 Continue), which answers nothing: the server may
// still run the request, bill it, and then reset its stream or cut its
// connection, after which net/http would send it again. net/http reports
// the first byte of an exchange once, before its first 1xx; so the first
// 1xx of an exchange uncounts it, and so does nothing that follows it in
// that exchange, not even its final answer, which is the safe side: a
// write that was answered after a 1xx is taken as unanswered. Once this
// hook is set, net/http no longer bounds the 1xx responses: an exchange
// that begins with more than maxInformational of them ends in an error
// (unless the caller's own trace takes them too: net/http then gets its
// hook's result, as it would without the Budget).
func (a *budgetAttempt) got1xxResponse(int, textproto.MIMEHeader) error {
	if a.flags.And(^attemptHeardLast)&attemptHeardLast != 0 {
		a.heard.Add(-1)
	}
	// Counted no further than past the bound: a caller's trace that takes
	// 1xx responses makes net/http ignore this hook's error, and a count
	// carried out of its bits would change the others (one exchange's 1xx
	// hooks run one after another).
	if a.flags.Load()&informationalMask > maxInformational<<informationalShift ||
		a.flags.Add(1<<informationalShift)&informationalMask > maxInformational<<informationalShift {
		return errTooManyInformational
	}
	return nil
}

// wroteHeaders marks a write begun: the request's headers went out, and
// its body may follow. Until wroteRequest reports how the write ended, the
// attempt may reach the provider whole, even after its RoundTrip returned:
// when a request's context ends, net/http's HTTP/2 transport returns at
// once without waiting for the body's writer, which, past its last check,
// still writes the body (its DATA frame waits for the connection's write
// lock, held by another stream's write); settleLost then charges it.
// It also counts the writes begun, up to maxOwnSends (see sendOnce).
func (a *budgetAttempt) wroteHeaders() {
	if a.flags.Or(attemptWriting)&sendsMask < maxOwnSends<<sendsShift {
		a.flags.Add(1 << sendsShift) // the writes of one request come one after another
	}
}

// wroteRequest counts a write that ended whole, then ends the write begun
// (in that order: see settleLost).
func (a *budgetAttempt) wroteRequest(info httptrace.WroteRequestInfo) {
	if info.Err == nil {
		a.writes.Add(1)
	}
	a.flags.And(^attemptWriting)
}

// Value makes the parsed request body known to the layers below (see
// parsedChat), and the attempt's trace to net/http when the request's
// context has none (see traced); it defers every other key to the
// request's context.
func (a *budgetAttempt) Value(key any) any {
	if _, ok := key.(parsedChatKey); ok { // a type check: the key has no value to compare
		return a
	}
	if key == clientTraceKey && key != nil {
		if t, _ := a.Context.Value(key).(*httptrace.ClientTrace); t != nil {
			return t // traced composed the attempt's trace with it
		}
		return a.hookedTrace()
	}
	return a.Context.Value(key)
}

// hookedTrace returns the attempt's trace with its hooks set. They are set
// when a transport first asks for the trace, not with the attempt: each is
// a method value, an allocation, and a transport that is not net/http's
// (a test's, an in-memory one) never asks. A second caller meanwhile waits
// the few instructions it takes.
func (a *budgetAttempt) hookedTrace() *httptrace.ClientTrace {
	for {
		f := a.flags.Load()
		switch {
		case f&traceHooked != 0:
			return a.trace
		case f&traceHooking == 0 && a.flags.CompareAndSwap(f, f|traceHooking):
			a.trace = &httptrace.ClientTrace{GetConn: a.getConn, WroteHeaders: a.wroteHeaders, WroteRequest: a.wroteRequest,
				GotFirstResponseByte: a.gotFirstResponseByte, Got1xxResponse: a.got1xxResponse}
			a.flags.Or(traceHooked)
			return a.trace
		}
		runtime.Gosched()
	}
}

// traced returns the context of the request the attempt sends: the
// attempt itself, whose Value gives net/http its trace, which spares
// httptrace.WithClientTrace's context (an allocation and a longer chain
// of lookups); or, when the request's context has a trace already (the
// caller's, a Retrier's), WithClientTrace's, which composes the two.
func (a *budgetAttempt) traced() context.Context {
	if clientTraceKey == nil || httptrace.ContextClientTrace(a.Context) != nil {
		return httptrace.WithClientTrace(a, a.hookedTrace())
	}
	return a
}

// clientTraceKey is the context key httptrace keeps a request's
// ClientTrace under, learnt from the key httptrace.ContextClientTrace asks
// a context for; nil if it asks none.
var clientTraceKey = func() any {
	var k keyProbe
	httptrace.ContextClientTrace(&k)
	return k.key
}()

// keyProbe is a context that records the key it is asked for.
type keyProbe struct {
	context.Context
	key any
}

func (k *keyProbe) Value(key any) any {
	k.key = key
	return nil
}

// unanswered is how many writes of the request got no response, given
// whether the RoundTrip got one. Inside a Retrier (the recommended order) a
// RoundTrip is one exchange; outside, the writes of the attempts the
// Retrier discarded count too, the safe side.
func (a *budgetAttempt) unanswered(gotResponse bool) int64 {
	n := int64(a.writes.Load())
	if gotResponse {
		n--
	}
	return max(n, 0)
}

// errWrittenOnce is what GetBody gives net/http for an attempt already
// written (see sendOnce).
var errWrittenOnce = errors.New("httpguard: budget: the attempt was written and lost before an answer (its connection broke or its stream was reset); it is not sent again on the same reservation")

// errAnsweredBelow is what GetBody gives a layer below that would send
// the attempt again after discarding an answer the provider may have
// billed (see discardedBelow).
var errAnsweredBelow = errors.New("httpguard: budget: the attempt was answered, and a layer below discarded the answer, which the provider may have billed; it is not sent again on the same reservation")

// discardedBelow is told by a layer below that sends the attempt again (a
// Retrier or a Fallback placed below the Budget, not the recommended
// order) that it discards the outcome of the attempt's last exchange,
// resp or err. When the provider may have billed that outcome, GetBody
// then fails (see sendOnce), and the layer below returns what it has: a
// 2xx (a Classifier that retries it, an AttemptTimeout that ended the
// attempt as the answer came in), or an error after the exchange's answer
// began, whose status no one read (net/http returns the error of a
// context that ended as the answer's headers came in, rather than the
// answer), unless a refusal below, which sent nothing. An error status
// accounts for the answer heard: a later error without a new exchange (a
// Retrier's retry refused below, which it returns) is not one begun.
func (a *budgetAttempt) discardedBelow(resp *http.Response, err error) {
	switch {
	case resp != nil && resp.StatusCode >= 200 && resp.StatusCode <= 299:
		a.flags.Or(attemptAnsweredBelow)
	case resp != nil:
		a.flags.And(^attemptHeardLast) // not billed
	case a.flags.Load()&attemptHeardLast != 0 && !refusedBelow(a.Context, err):
		a.flags.Or(attemptAnsweredBelow)
	case a.flags.Load()&attemptWriting != 0 || a.writes.Load() > a.heard.Load():
		// A write unanswered, or whose end is not reported yet: GetBody
		// would refuse it, unless its answer's first byte is reported
		// before then, as net/http's HTTP/2 transport may report it after
		// RoundTrip returned (its read loop takes the HEADERS of a stream
		// whose context ended until the stream is cleaned up). The
		// outcome discarded is this error: the write stays unanswered.
		a.flags.Or(attemptLostBelow)
	}
}

// errResentOften is what GetBody gives net/http for an attempt it would
// send a third time, nothing answered (see sendOnce).
var errResentOften = errors.New("httpguard: budget: the attempt's streams were reset or its connections broke before an answer, twice; it is not sent a third time on the same reservation")

// sendOnce keeps r from being written again on the attempt's one
// reservation once a write of it got no answer: the provider may have
// billed that write, so the reservation is spent. net/http sends a request
// again from GetBody when it deems it replayable (a GET, or one with an
// Idempotency-Key) and its kept-alive connection breaks after it was
// written, and any request, a POST without a key too, whose HTTP/2 stream
// the server resets with PROTOCOL_ERROR or REFUSED_STREAM after it was
// written whole (up to seven writes, golang/go#47635); a layer below the
// Budget (a Retrier or a Fallback placed there, not the recommended order)
// sends it again too (or the streams in flight when its connection gets
// a GOAWAY). Once a write is unanswered, GetBody serves one more send on a
// second reservation (see holdAgain), charged for that write whatever the
// next one brings; after a second lost write, or without room for the
// second reservation, GetBody fails: the attempt ends, charged for its
// lost writes, and a Retrier above sends it again under a reservation of
// its own. A write that was answered (an error
// status, even one that came before the body was written whole) may be
// sent again: the provider does not bill error statuses; but not one a
// layer below discards whose answer may be billed (see discardedBelow). An informational
// response (a 103 Early Hints, a 100 Continue) answers nothing, so a write
// followed only by one is unanswered, and, on the safe side, so is one
// answered after one (see got1xxResponse). A request that
// expects a 100 Continue is sent once whatever came back: its first
// response byte may be the 100. And while nothing answered, GetBody serves
// no third send (see maxOwnSends): net/http sends a request again on a new connection, at
// once and without end, when its HTTP/2 stream is reset with
// PROTOCOL_ERROR, even before its body was written whole (a server
// rejecting one of its headers resets it so); such writes were never read
// whole, and are released, but thousands a second went out until the
// caller's deadline.
//
// Not inlined: a closure inlined into its callers is a new func at each,
// and gatedGetBody knows this one by its code (see sendOnceCode).
//
//go:noinline
func (a *budgetAttempt) sendOnce(r *http.Request) {
	if r.GetBody == nil {
		return // net/http cannot send its body again
	}
	getBody := r.GetBody
	r.GetBody = func() (io.ReadCloser, error) {
		// The Expect header is read here, where net/http asks to send r
		// again, rather than on every request's way down.
		w, heard := a.writes.Load(), a.heard.Load()
		if w > 0 && expectsContinue(r.Header) {
			return nil, errWrittenOnce
		}
		if a.flags.Load()&attemptAnsweredBelow != 0 {
			return nil, errAnsweredBelow
		}
		if a.flags.Load()&attemptLostBelow != 0 {
			return nil, errWrittenOnce
		}
		if a.flags.Load()&sendsMask >= maxOwnSends<<sendsShift && heard == 0 {
			return nil, errResentOften
		}
		if w > heard && (w-heard > 1 || a.flags.Load()&attemptSettled != 0 || !a.holdAgain()) {
			return nil, errWrittenOnce
		}
		return callGetBody(getBody)
	}
}

// holdAgain holds a second reservation for the attempt, once, so that
// net/http may send it again after a write that got no answer (see
// sendOnce): most often an HTTP/2 stream a server turned away as it
// retired its connection (a GOAWAY past the stream, as nginx sends after
// keepalive_requests; REFUSED_STREAM), which net/http sends again at once.
// The server says it did not process such a stream, but one that lies
// may have billed it: each write keeps a reservation of its own within
// the Limit, and the lost one is charged in full when the attempt settles
// (see charge). It holds once: sendOnce refuses a second lost write.
// Refusing the resend instead ended the attempt in an error, which a
// Breaker counted as the provider's failure (one connection retired under
// 8 calls in flight opened a circuit) and a Retrier sent again after its
// backoff. holdAgain reports false when the window has no room for it or
// has ended, or the store fails.
func (a *budgetAttempt) holdAgain() bool {
	for {
		f := a.flags.Load()
		switch {
		case f&attemptHeldAgain != 0:
			// Held for this lost write already: net/http asks for the
			// body again when the connection it first chose for the
			// resend is gone. A second lost write ends the attempt (see
			// sendOnce).
			return true
		case f&attemptHoldingAgain == 0 && a.flags.CompareAndSwap(f, f|attemptHoldingAgain):
			held := a.flags.Load()&attemptSettled == 0 && a.reserveAgain()
			if held {
				a.flags.Or(attemptHeldAgain)
			}
			a.flags.And(^attemptHoldingAgain)
			return held
		}
		runtime.Gosched() // another caller is holding it: its outcome is this one's
	}
}

// reserveAgain reserves the attempt's second hold (see holdAgain).
func (a *budgetAttempt) reserveAgain() bool {
	b := a.b
	held := false
	if own := b.ownStore(); own != nil {
		held = own.holdMore(a.window, a.reserve, b.cfg.Limit)
	} else if span := b.span(); span.key == a.window {
		r := b.reservation(span, a.id^heldAgainID, a.reserve)
		res, err := b.store.Reserve(a.Context, r, b.cfg.Limit)
		switch {
		case err != nil || !res.OK:
		case res.Window != "" && res.Window != a.window: // the store moved on to a newer window
			if _, err := b.store.Settle(context.Background(), res.Window, r.ID, 0); err != nil {
				b.log("settle", res.Window, err)
			}
		default:
			b.renewals.add(r.ID, a.window)
			held = true
		}
	}
	return held
}

// heldAgainID marks the ID of an attempt's second reservation (see
// holdAgain): its own ID with the top bit flipped, which no other
// reservation has (a Budget counts its IDs up from a random base).
const heldAgainID = 1 << 63

// held is the money the settled attempt holds: its reservation, twice
// when it held one again (see holdAgain). A second hold under way when it
// settled ends first: it sees the attempt settled and holds nothing, or
// it holds, and is counted here.
func (a *budgetAttempt) held() Money {
	for a.flags.Load()&attemptHoldingAgain != 0 {
		runtime.Gosched()
	}
	if a.flags.Load()&attemptHeldAgain != 0 {
		return 2 * a.reserve // a reserve is at most MaxBudgetLimit
	}
	return a.reserve
}

// sendOnceCode is the code of the GetBody sendOnce sets (see gatedGetBody).
func sendOnceCode() uintptr {
	r := &http.Request{GetBody: func() (io.ReadCloser, error) { return http.NoBody, nil }}
	(&budgetAttempt{}).sendOnce(r)
	return reflect.ValueOf(r.GetBody).Pointer()
}

// expectsContinue reports whether h may ask for a 100 Continue: any Expect
// value naming it, in any case (net/http reads the first value's tokens).
func expectsContinue(h http.Header) bool {
	for _, v := range h["Expect"] {
		if strings.Contains(strings.ToLower(v), "100-continue") {
			return true
		}
	}
	return false
}

// settleLost settles an attempt that got no response. The provider may
// have billed it if it was written, even if an answer had begun: then it
// is charged its reservation. It is released only when it certainly never
// reached the provider: a layer below refused it, net/http refused it
// before asking for a connection (unsendable: it says so in words of its
// own, its trace in none), or the transport (net/http, whose trace shows
// what it did) failed before writing it, or while writing it, having said
// so. A write begun whose end the transport
// has not reported (see wroteHeaders) may still end whole: it is charged.
// The flags are read before the writes: wroteRequest counts a write before
// it ends it, so a write ended is a write counted.
func (a *budgetAttempt) settleLost(err error) {
	f := a.flags.Load()
	lost := a.unanswered(false)
	switch {
	case lost > 0:
		if f&attemptWriting != 0 {
			// net/http's resend on a second reservation (see holdAgain)
			// was being written when the attempt ended: it may reach
			// the provider whole too. The flags are read before the
			// writes, so a write that ended meanwhile is counted twice,
			// the safe side.
			lost++
		}
	case f&attemptWriting != 0:
		lost = 1
	case f&attemptConnAsked == 0 && !refusedBelow(a.Context, err) && !unsendableBelow(a.Context, err):
		lost = 1 // a transport that does not report what it did: assume the worst
	}
	a.settle(&Usage{}, false, lost)
}

// reportUsage settles the attempt once its answer's usage is known (or
// known to be missing: then the reservation is the charge, or what an
// answer cut short reported, when that costs more). It implements
// usageReporter.
func (a *budgetAttempt) reportUsage(u *Usage, ok bool) {
	lost := a.unanswered(true)
	if !ok {
		lost++
	}
	// The Images API answers with images alone, and its usage need not
	// say so (an image stream's never does): an output it counts no image
	// tokens of is all images.
	if a.parsed.chat.Outputs&imagesAlone != 0 && u.ImageOutputTokens == 0 {
		u.ImageOutputTokens = u.OutputTokens
	}
	a.settle(u, ok, lost)
	if a.parsed.usageTo != nil {
		a.parsed.usageTo.reportUsage(u, ok)
	}
}

// settle charges the attempt u's cost (when known) plus its reservation
// for each write the provider may have billed without answering. When u
// is not known but not zero either (what an answer cut short reported, a
// part of what it was billed), the first such write is charged u's cost
// if it is more than the reservation. An answer that says it ran at
// Priority, to a request priced at standard prices, is charged at
// Priority prices (see repriceAtPriority), and so is its reservation; one
// that says it ran in a region the request did not ask for, at that
// region's prices (see repriceInGeo); one that says another model served
// it, at that model's prices when they come to more (see answerCharge);
// of an answer decoders read two models of (see modelReading), the
// dearer is charged.
func (a *budgetAttempt) settle(u *Usage, known bool, lost int64) {
	if a.flags.Or(attemptSettled)&attemptSettled != 0 {
		return
	}
	if !a.ranAtPriority(u) && !a.ranElsewhere(u) && a.servedAsNamed(u) {
		// Most answers: charged at the price the request was priced at,
		// whose entry pricedBy names already.
		var charge Money
		if known && lost == 0 && a.parsed.chat.Tools == nil && u.ToolCalls.none() {
			// Most of those: written once, its usage known, no tool
			// declared or called: what charge gives, without its call.
			charge = max(min(costAt(a.price, u), 2*MaxBudgetLimit), u.billed)
		} else {
			charge = a.charge(a.price, a.reserve, u, known, lost)
		}
		a.b.settle(a, charge, u, known)
		return
	}
	a.settleRepriced(u, known, lost)
}

// settleRepriced is settle for an answer that may reprice the attempt.
func (a *budgetAttempt) settleRepriced(u *Usage, known bool, lost int64) {
	pr := pricing{price: *a.price, fallback: a.pricedBy&byFallback != 0}
	a.reprice(a.model(), &pr, u)
	reserve := a.reserve
	if pr.repriced {
		reserve = a.reserveAt(pr.price)
	}
	charge := a.charge(&pr.price, reserve, u, known, lost)
	for i, model := range u.servedModels() {
		if names := a.servedByOther(model); names != nil {
			if c, served, ok := a.answerCharge(names, u, known, lost); ok && c > charge {
				charge, pr, a.servedAs, a.servedModel = c, served.pricing, served.index, uint8(i)
			}
		}
	}
	a.pricedBy = pr.by()
	a.b.settle(a, charge, u, known)
}

// charge is what the attempt costs at price, which reserves reserve: u's
// cost (when known, or when a write was lost after u was reported), plus
// reserve for each write the provider may have billed without answering.
// The Usage is passed by pointer here and below, as settle's callees are
// many and it is 14 words.
func (a *budgetAttempt) charge(price *Price, reserve Money, u *Usage, known bool, lost int64) Money {
	var charge Money
	if known || lost > 0 && !u.noTokens() {
		charge = min(costAt(price, u), 2*MaxBudgetLimit)
		charge += toolCharge(a.b.cfg.ToolPrices, a.parsed.chat.Tools, u) // at most MaxBudgetLimit+1
		// What the answer says it was billed, all in (at most $1,000).
		charge = max(charge, u.billed)
	}
	if !known && charge > 0 {
		charge, lost = max(charge, reserve), lost-1
	}
	// Saturating: a reserve is at most MaxBudgetLimit, so no sum overflows.
	for ; lost > 0 && charge < 2*MaxBudgetLimit; lost-- {
		charge = min(charge+reserve, 2*MaxBudgetLimit)
	}
	return charge
}

// answerCharge is what the attempt costs at the prices of the model its
// answer says served it (its top-level "model", as one decoder reads it:
// see modelReading), when that is not the model its request named but
// one the price table lists: a relay's own fallback, or a router such as
// openrouter/auto, runs a request on another model and bills that
// model's prices. The model is priced at
// the request's tier (or, when the table has no entry for that tier, at
// its standard prices times unpricedTierFactor), repriced as the answer
// says it ran (see reprice). names are the price table's models the
// answer names (see servedByOther); ok is false when none is priced.
func (a *budgetAttempt) answerCharge(names []string, u *Usage, known bool, lost int64) (charge Money, served servedPricing, ok bool) {
	cr := &a.parsed.chat
	for i, name := range names { // one name, unless two hash alike: the dearer is charged
		p, _, found := a.b.cfg.Prices.lookup(name, cr.Tier)
		if !found {
			if p, found = a.b.cfg.Prices[name]; !found {
				continue
			}
			p = p.times(cr.unpricedTierFactor())
		}
		pr := pricing{price: p}
		a.reprice(name, &pr, u)
		if c := a.charge(&pr.price, a.reserveAt(pr.price), u, known, lost); !ok || c > charge {
			charge, served, ok = c, servedPricing{pr, uint8(min(i+1, math.MaxUint8))}, true
		}
	}
	return charge, served, ok
}

// servedByOther returns the price table's models whose name hashes as
// model, which the attempt's answer says served it (see answerCharge),
// when that is not the model its request named; nil when there are none.
func (a *budgetAttempt) servedByOther(model modelHash) []string {
	if model == 0 || model == a.named {
		return nil
	}
	return a.b.served[model]
}

// servedAsNamed reports whether answer u names no model, or the model the
// attempt's request named, as every decoder reads it (see modelReading):
// not when a listed model of another name hashes alike (a.named is then
// 0), which servedByOther prices too.
func (a *budgetAttempt) servedAsNamed(u *Usage) bool {
	return (u.servedBy == 0 || u.servedBy == a.named) && u.servedFolded == 0 && u.servedFirst == 0
}

// pricing is a price an attempt is charged at, and the table entry that
// gave it (see pricedAs).
type pricing struct {
	price                      Price
	fallback, atPriority, inUS bool
	repriced                   bool // not the price the request was priced at
}

// by returns the entries that gave pr, as flags.
func (pr pricing) by() (f pricedBy) {
	if pr.fallback {
		f |= byFallback
	}
	if pr.atPriority {
		f |= byPriority
	}
	if pr.inUS {
		f |= byUS
	}
	return f
}

// servedPricing is the pricing of the model an answer says served it,
// and its index among the Budget's names of its hash, plus one.
type servedPricing struct {
	pricing
	index uint8
}

// reprice reprices pr, the price of model for the attempt, in place, as its
// answer u says it ran: at Priority to a request priced at standard prices
// (see repriceAtPriority), in a region its request did not ask for (see
// repriceInGeo).
func (a *budgetAttempt) reprice(model string, pr *pricing, u *Usage) {
	if a.ranAtPriority(u) {
		*pr = a.repriceAtPriority(model, *pr)
	}
	if a.ranElsewhere(u) {
		*pr = a.repriceInGeo(model, u.ranIn, *pr)
	}
}

// ranAtPriority reports whether answer u says it ran at Priority, the
// attempt's request being priced at standard prices.
func (a *budgetAttempt) ranAtPriority(u *Usage) bool {
	return u.ranAtPriority && a.parsed.chat.Tier == tierStandard
}

// ranElsewhere reports whether answer u says it ran in a region the
// attempt's request did not ask for.
func (a *budgetAttempt) ranElsewhere(u *Usage) bool {
	return u.ranIn != geoGlobal && !a.parsed.chat.GeoTier
}

// repriceAtPriority returns the pricing of model, priced at pr, for an
// attempt whose answer says it ran at Priority: the model's Priority
// price, found as for a request asking for Priority, or, when the table
// has none, pr's price times unpricedPriorityFactor. The answer was sent:
// it cannot be refused.
func (a *budgetAttempt) repriceAtPriority(model string, pr pricing) pricing {
	if p, fallback, ok := a.b.cfg.Prices.lookup(model, tierPriority); ok {
		return pricing{price: p, fallback: fallback, atPriority: true, repriced: true}
	}
	pr.price, pr.repriced = pr.price.times(unpricedPriorityFactor), true
	return pr
}

// repriceInGeo returns the pricing of model, priced at pr, for an attempt
// whose answer says it ran in region g, which its request did not ask for
// (a workspace's default inference geo): the model's entry for the
// region, found as for a request asking for it at the attempt's tier, or,
// when the table has none, pr's price times unpricedGeoFactor. The answer
// was sent: it cannot be refused.
func (a *budgetAttempt) repriceInGeo(model string, g inferenceGeo, pr pricing) pricing {
	if g == geoUS {
		if p, fallback, ok := a.b.cfg.Prices.lookup(model, a.parsed.chat.Tier+tier(g.suffix())); ok {
			return pricing{price: p, fallback: fallback, atPriority: pr.atPriority, inUS: true, repriced: true}
		}
	}
	pr.price, pr.repriced = pr.price.times(unpricedGeoFactor), true
	return pr
}

// tokenReserve is what request cr reserves at price p for its prompt, with
// what its server tools return to the model, and outputs tokens of output
// (fees per request included, server tools' fees not). A reserve above
// MaxBudgetLimit fits no Limit: kept just above it, so that no store
// adding it to what it holds can overflow.
func tokenReserve(p *Price, cr *chatRequest, outputs int64) Money {
	input := cr.PromptTokens
	if cr.Tools != nil {
		input += cr.Tools.ResultTokens // both far below 2^62
	}
	if cr.Outputs&imagesAlone != 0 {
		return imagesTokenReserve(p, cr, input, outputs)
	}
	return min(p.reserve(input, outputs, cr.Outputs, cr.Choices), MaxBudgetLimit+1)
}

// imagesTokenReserve is tokenReserve for a request to the Images API, of
// input prompt tokens: its prompt is priced at the dearer of the input
// and image input prices, for it holds an edit's images, billed as image
// input tokens.
func imagesTokenReserve(p *Price, cr *chatRequest, input, outputs int64) Money {
	at := *p
	at.Input = max(at.Input, at.ImageInput)
	if lc := at.LongContext; lc != nil {
		long := *lc
		long.Input = max(long.Input, long.ImageInput)
		at.LongContext = &long
	}
	return min(at.reserve(input, outputs, cr.Outputs, cr.Choices), MaxBudgetLimit+1)
}

// reserveAt is what the attempt would have reserved at price p.
func (a *budgetAttempt) reserveAt(p Price) Money {
	cr := &a.parsed.chat
	_, outputs := a.b.outputBound(cr)
	reserve := tokenReserve(&p, cr, outputs)
	if cr.Tools != nil {
		reserve = addSat(reserve, cr.Tools.Reserve)
	}
	return reserve
}

// acceptsStreamOptions reports whether a request goes to an OpenAI-style
// completions endpoint, where stream_options.include_usage is known: its
// path ends with /completions, as sent and decoded, whatever members its
// body has, and its query names no Azure api-version older than the
// member (see beforeStreamOptions). Other APIs (Anthropic messages, OpenAI
// responses) report usage in their streams anyway, and may reject a
// parameter they do not know.
func acceptsStreamOptions(req *http.Request) bool {
	return strings.HasSuffix(req.URL.Path, "/completions") && strings.HasSuffix(sentPath(req.URL), "/completions") &&
		req.Header.Get("Anthropic-Version") == "" && !beforeStreamOptions(req.URL.RawQuery)
}

// streamOptionsSince is the first Azure OpenAI api-version known to take
// stream_options, 2024-08-01-preview, by its date: an earlier one that
// takes it too is only not asked for usage, and charged its reservation.
const streamOptionsSince = "2024-08-01"

// beforeStreamOptions reports whether the raw query q names an Azure
// api-version (the key in any case, as Azure reads it) dated before
// streamOptionsSince: Azure refuses a stream_options member there with a
// 400 ("Unrecognized request argument supplied"), the GA 2024-02-01 and
// 2024-06-01 included. A value that is no date ("preview", "latest")
// is taken as a later version.
func beforeStreamOptions(q string) bool {
	for value := range queryValues(q, func(key string) bool { return strings.EqualFold(key, "api-version") }) {
		if v, err := url.QueryUnescape(value); err == nil {
			value = v
		}
		if isDate(value) && value[:len("2006-01-02")] < streamOptionsSince {
			return true
		}
	}
	return false
}

// isDate reports whether v begins with a date written YYYY-MM-DD.
func isDate(v string) bool {
	if len(v) < len("2006-01-02") {
		return false
	}
	for i, c := range []byte(v[:len("2006-01-02")]) {
		if i == 4 || i == 7 {
			if c != '-' {
				return false
			}
		} else if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// isEncoded reports whether resp's body comes as the server encoded it
// (the caller set Accept-Encoding itself): a compressed stream's
// usage-only chunk cannot be found, and holding its bytes back to look for
// one would hold the whole stream.
func isEncoded(resp *http.Response) bool {
	ce := strings.TrimSpace(resp.Header.Get("Content-Encoding"))
	return ce != "" && !strings.EqualFold(ce, "identity")
}

func closeRequestBody(r *http.Request) {
	if r.Body != nil {
		r.Body.Close()
	}
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
