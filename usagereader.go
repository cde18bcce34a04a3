package httpguard

import (
	"io"
	"net/http"
	"strings"
	"sync"
)

// This file is the body wrapper that feeds an answer to its scanner as
// the caller reads it (jsonusage.go for JSON, sse.go for event streams),
// and reports the usage found, once, to the Budget or the Limiter.

// observeUsage wraps resp.Body so that report is called exactly once, when
// the caller reads the body to its end or closes it, with the usage found in
// the bytes the caller read (ok false when none was found, the stream was cut
// short, or the usage was malformed; u is then zero, or, for an answer cut
// short or a stream spoilt, the usage it reported before, which was billed
// at least, and for a usage decoders read differently, the dearer reading:
// see usageReadings.dearest). What the caller reads is unchanged and
// not buffered twice. JSON answers and SSE streams (OpenAI chunks, Anthropic
// events) are both understood, told apart by Content-Type (for a layer that
// knows the request asked to stream, see readsAsEventStream).
//
// Report is called from the goroutine that sees the end: a Read returning
// io.EOF or another error, or Close. An error or a Close before the end
// still reports ok when what was read is complete: a JSON value that has
// ended (as when the caller used json.Decoder), or a stream that sent
// [DONE] or message_stop. Close does not read on to look for usage.
//
// A JSON answer must be one valid JSON object; its top-level "usage" is
// decoded as its bytes pass (see usageValue). See sse.go for streams.
func observeUsage(resp *http.Response, report func(u Usage, ok bool)) {
	if resp.Body == nil {
		report(Usage{}, false)
		return
	}
	r := &usageReader{}
	r.observe(resp, reportFunc(report), false)
}

// usageReporter receives the usage a usageReader finds. An interface rather
// than a func lets a layer embed the usageReader in its per-request state
// and report to it without allocating a method value. u is the scanner's
// own, lent for the call: a reporter reads it, and neither changes nor
// keeps it (a Usage is 14 words, copied at each layer it passed through).
type usageReporter interface {
	reportUsage(u *Usage, ok bool)
}

// noUsage is what a reporter is lent for an answer without a body: never
// changed, as reporters do not change what they are lent, and shared, as a
// Usage lent through an interface would otherwise be allocated.
var noUsage Usage

// reportFunc adapts a func to usageReporter.
type reportFunc func(Usage, bool)

func (f reportFunc) reportUsage(u *Usage, ok bool) { f(*u, ok) }

// observe is observeUsage into r, which must be a zero usageReader; resp.Body
// must not be nil; stream says whether the request asked to stream (see
// readsAsEventStream). An SSE scanner is allocated only for streams.
func (r *usageReader) observe(resp *http.Response, report usageReporter, stream bool) {
	r.body, r.report = resp.Body, report
	if readsAsEventStream(contentType(resp.Header), stream) {
		r.ev = &streamScanner{}
	} else {
		r.js, r.sniff = jsonScanners.Get().(*jsonScanner), stream
	}
	resp.Body = r
}

// utf8BOM is the UTF-8 byte order mark.
const utf8BOM = "\xef\xbb\xbf"

// bomRead is usageReader.bom once the start of the answer is read: a
// whole byte order mark, or bytes that are none.
const bomRead = uint8(len(utf8BOM))

// skipBOM returns p, the next bytes of a JSON answer, without the part of
// a byte order mark that starts the answer: RFC 8259 lets a parser ignore
// one, and Python's json.loads and the Fetch API's json() do (a PHP relay
// whose source files carry one writes it before its output). The bytes of
// a part that turns out to be no mark are written to the scanner, which
// refuses them.
func (r *usageReader) skipBOM(p []byte) []byte {
	for ; r.bom < bomRead && len(p) > 0; p = p[1:] {
		if p[0] != utf8BOM[r.bom] {
			if r.bom > 0 {
				r.js.write([]byte(utf8BOM[:r.bom]))
			}
			r.bom = bomRead
			return p
		}
		r.bom++
	}
	return p
}

// sniffStream reads the first bytes of the answer to a streaming request
// labelled JSON, p, which SDKs that asked for a stream decode as events
// whatever its Content-Type (openai-go's ssestream, openai-python's
// Stream): a JSON value (the answer of a relay that does not stream) is
// read as JSON; anything else, as events. Whitespace before it says
// neither, and is read as both read it. r.mu is held.
func (r *usageReader) sniffStream(p []byte) {
	i := skipSpace(p, 0)
	if i == len(p) {
		return
	}
	r.sniff = false
	if strings.IndexByte(`{["-0123456789tfn`, p[i]) >= 0 {
		return
	}
	js := r.js
	r.js, r.ev = nil, &streamScanner{}
	js.reset()
	jsonScanners.Put(js)
}

// jsonScanners holds the scanners of JSON answers read to their end (or
// closed), zeroed, for the next answers: a scanner held in the attempt
// would be nearly half the Budget's state per attempt, which is kept as
// long as the request's context is, while a scanner is needed only until
// its answer ends.
var jsonScanners = sync.Pool{New: func() any { return new(jsonScanner) }}

// jsonScanner is a JSON answer's scanner and the usage it read, which the
// reporters are lent (see usageReporter) until the scanner goes back to
// jsonScanners.
type jsonScanner struct {
	jsonUsageScanner
	usage Usage
}

// streamScanner is an event stream's scanner and the usage it read, lent
// to the reporters as jsonScanner's is.
type streamScanner struct {
	sseScanner
	usage Usage
}

// readsAsEventStream reports whether an answer of Content-Type ct is read
// as an event stream: ct says so, or the request asked to stream and ct
// is not JSON (a relay that sends none, or text/plain). SDKs (openai-go,
// anthropic-sdk-go) decode a stream's events whatever its Content-Type:
// read as JSON, its usage was lost, and the usage-only chunk not hidden.
// The answer to a streaming request labelled JSON is read as its first
// byte says (see sniffStream).
func readsAsEventStream(ct string, stream bool) bool {
	// Inlined: most answers were not asked to stream and say
	// application/json, shorter than text/event-stream.
	return (stream || len(ct) >= len("text/event-stream")) && typedOrAskedStream(ct, stream)
}

// typedOrAskedStream is readsAsEventStream past its quick test.
func typedOrAskedStream(ct string, stream bool) bool {
	return isEventStream(ct) || stream && !strings.Contains(strings.ToLower(ct), "json")
}

// contentType is h.Get("Content-Type") without canonicalizing a key that is
// canonical already: observe runs for every answer.
func contentType(h http.Header) string {
	if v := h["Content-Type"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// isEventStream reports whether a Content-Type is text/event-stream,
// whatever its parameters and case.
func isEventStream(ct string) bool {
	if len(ct) < len("text/event-stream") { // application/json, most often
		return false
	}
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

// usageReader is the body observeUsage installs; with strip set (see
// newUsageChunkStripper) it also hides the usage-only chunk of a stream.
// Read and Close may run on different goroutines (net/http allows Close to
// abort a Read), so the scanners' state is guarded by mu; report runs
// outside it.
type usageReader struct {
	body   io.ReadCloser
	report usageReporter // nil: nobody to tell

	mu       sync.Mutex
	reported bool
	read     bool           // Read was called (kept outside mu: Read alone sets it)
	sniff    bool           // a streaming request's answer labelled JSON: its first byte says which it is (see sniffStream)
	bom      uint8          // bytes of a JSON answer's byte order mark read, up to bomRead (see skipBOM)
	js       *jsonScanner   // for JSON answers, until reported: see jsonScanners
	ev       *streamScanner // nil for JSON answers

	strip *stripState // not nil when hiding the usage-only chunk; only Read uses it
}

func (r *usageReader) Read(p []byte) (int, error) {
	if r.strip != nil {
		return r.readStripped(p)
	}
	n, err := r.body.Read(p)
	r.read = true
	r.scan(p[:n], err)
	return n, err
}

// scan follows p, just read from the body with err, and reports at the end.
func (r *usageReader) scan(p []byte, err error) {
	r.mu.Lock()
	if r.reported && (r.strip == nil || r.ev == nil) { // a JSON answer's scanner went back once reported
		r.mu.Unlock()
		return
	}
	q := p
	if r.bom < bomRead && r.ev == nil {
		q = r.skipBOM(p)
	}
	if r.sniff {
		r.sniffStream(q)
	}
	if r.ev != nil {
		r.ev.write(p) // whole: the stripper's positions are in p, and the SSE scanner reads a mark itself
	} else {
		r.js.write(q)
	}
	if err == nil || r.reported {
		r.mu.Unlock()
		return
	}
	r.reported = true
	// Another error ends the body as a Close would: what was read counts
	// when it is complete (a stream past its end event, a whole JSON
	// object), as a connection that broke after it took nothing from it.
	r.report1(err)
}

func (r *usageReader) Close() error {
	err := r.body.Close()
	if a, ok := r.report.(*budgetAttempt); ok && a.flags.Load()&attemptSettled != 0 {
		// The Budget's answer, settled: by report1 (nothing else settles
		// an attempt whose answer is read), which set reported first.
		// Most bodies are closed so, after their end: no lock to take.
		return err
	}
	r.mu.Lock()
	if r.reported {
		r.mu.Unlock()
		return err
	}
	r.reported = true
	r.report1(nil)
	return err
}

// report1 reads the usage, once, with r.mu held, which it unlocks, and
// tells r.report of it in the scanner's own Usage (not copied at each
// layer: see usageReporter). A JSON answer's scanner then goes back to
// jsonScanners. err is what ended the body (nil for Close): only a stream
// asks whether it is io.EOF, which compares two interfaces.
func (r *usageReader) report1(err error) {
	if ev := r.ev; ev != nil {
		var ok bool
		ev.usage, ok = ev.result(err == io.EOF)
		r.mu.Unlock()
		r.tell(&ev.usage, ok)
		return
	}
	js := r.js
	r.js = nil // reported: Read and Close no longer touch it
	ok := js.readResult(&js.usage)
	r.mu.Unlock()
	r.tell(&js.usage, ok)
	js.reset()
	js.usage = Usage{}
	jsonScanners.Put(js)
}

func (r *usageReader) tell(u *Usage, ok bool) {
	if r.report != nil {
		r.report.reportUsage(u, ok)
	}
}
