package httpguard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
)

// This file is one attempt through the Budget, from its reservation to
// its settlement: what its trace saw written and answered, net/http's
// resends, and what it is charged (its usage, at the price of the model
// that served it, or its reservation when it was lost).

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
// Retrier discarded count too, the safe side. A write that a second
// reservation was held for (see holdAgain) is one, even when the answer
// came to the resend before its write was reported whole (a 503 after its
// first bytes): the write the answer goes with is then not counted yet.
func (a *budgetAttempt) unanswered(gotResponse bool) int64 {
	n := int64(a.writes.Load())
	if gotResponse {
		n--
	}
	if n < 1 && a.flags.Load()&attemptHeldAgain != 0 {
		return 1
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
		return a.resendBody(r, getBody)
	}
}

// resendBody returns getBody's copy of r's body, for sendOnce to hand
// net/http, read whole into memory once an exchange of r began (a
// connection was asked for): the copy of a send again. net/http may go on
// writing a body after its answer came (a 503 after the first bytes of an
// upload), and a Retrier above that sends the attempt again calls GetBody
// once the body it sent down is closed, which net/http did before it
// asked for this copy, even when it wrote nothing (an HTTP/2 connection
// that got a GOAWAY while the request waited for a stream): a GetBody that
// rewinds the very reader its copies read (openai-go's and
// anthropic-sdk-go's, for a *bytes.Reader body) would have two writes read
// one reader. A copy in memory is read by net/http alone. Before any
// exchange (a layer below reading a copy), and from a GetBody that hands
// out new readers (see freshGetBody), the copy is getBody's own. A copy
// over MaxBufferedBody (and what withStreamUsage adds) fails: it is not
// sent again; so does one still read when the request's context ends.
func (a *budgetAttempt) resendBody(r *http.Request, getBody func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	rc, err := callGetBody(getBody)
	if err != nil || a.flags.Load()&(sendsMask|attemptConnAsked) == 0 || freshGetBody(getBody) {
		return rc, err
	}
	// The body priced came within MaxBufferedBody; the one sent may be
	// longer by what withStreamUsage adds.
	limit := a.b.cfg.MaxBufferedBody + maxStreamUsageInsert
	type read struct {
		b   []byte
		err error
	}
	// Under the request's context: a copy that stalls must not hold the
	// resend past it, as net/http writing it would not. Once the context
	// ends, nothing reads the copy: a Retrier above whose attempt ended may
	// rewind the caller's reader for its next attempt.
	got, err := underContext(r.Context(), rc, true, func() read {
		b, err := readAtMost(rc, sizedBuffer(r.ContentLength, limit), limit)
		return read{b, err}
	})
	if err == nil { // else underContext closed it
		rc.Close()
		err = got.err
	}
	if err == nil {
		err = checkLength(r.ContentLength, int64(len(got.b)))
	}
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(got.b)), nil
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
