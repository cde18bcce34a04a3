package httpguard

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"math"
	"math/bits"
	"net/http"
	"slices"
)

// sseScanner follows a server-sent event stream as the caller reads it. It
// ends lines as the SSE spec does, at \r\n, \n or \r (a \r that ends one
// write and a \n that starts the next are one line end), as openai-python
// and browsers do: the Go SDKs end them at \n alone, but a stream they can
// read frames the same either way. It reads each data line's JSON with the
// package's one lexer. A line that spans writes is held until it is whole, up to
// maxTemplateLine; a longer one is lexed as its bytes pass, never copied.
// From each JSON data line it takes the top-level keys that matter —
// "usage", "error", "type" (error, message_stop, response.completed,
// response.incomplete, response.failed, an Images API stream's
// image_generation.completed and image_edit.completed), Anthropic's "message"
// (message_start's usage), OpenAI Responses' "response" (its usage,
// service tier and error), "choices" and "service_tier" — decoded
// with their escapes (an error, up to maxUsageValue, for its code and
// type: see errorFault). It gathers the stream's usage (cumulative, as Anthropic's
// deltas are: see wireUsage.merge), whether a data line said it ran at
// Priority (see tierReading; one that did is enough), whether the stream
// ended (terminated, or at an error that is its last data line: see
// errorEnd), whose fault the response.failed that ended it, or the last
// error before its end, says its failure was (fault), and, for the
// stripper in streamusage.go, where the events that ended in the
// last write end and which were OpenAI's usage-only chunk.
//
// The stream's usage is not ok (result then returns what it reported
// before, a part of what was billed, the usage of a line it was cut in
// included) when the stream did not end with [DONE],
// message_stop, response.completed, response.incomplete or an Images
// API stream's *.completed, when a data line
// that is neither blank nor [DONE] follows that end, when an error arrived (an "error"
// key, or type "error" or "response.failed"), when a data line is neither
// JSON nor [DONE], when a usage value is malformed, lies (see
// wireUsage.usage) or is read differently by different decoders, when
// an Anthropic message object outgrows maxUsageValue, or when the last
// usage is not the final one (see usageStale). A Responses
// response object is read as it passes, whatever its length (see
// responseValue).
// JSON split over several data lines of one event is not joined; no
// provider sends it, and it reads as malformed (ok false). The zero value
// is ready.
//
// Most lines of a stream change nothing and repeat the one before but for
// the text they carry: such a line is recognised at memory speed by
// comparing it with the last such line lexed (see lineTemplate), and not
// lexed. The scanner allocates nothing per line.
type sseScanner struct {
	at       sseState
	nameLen  uint8 // bytes of the field name read
	isData   bool  // they are a prefix of "data"
	lineOpen bool  // line has bytes written (it is reset when first written)
	lexAll   bool  // tests: lex every line, never use the template
	bom      uint8 // bytes of a byte order mark that begins the stream read, up to bomRead (see skipBOM)

	line     sseLine // the data line being lexed
	held     []byte  // the start of a data line that spans writes, when short enough to hold
	heldBuf  [inlineLine]byte
	template lineTemplate // the last inert data line lexed whole

	event sseEvent // the event being read
	// lastEnd is where the last span the stripper may pass on ends in the
	// last write, or -1 when none ended there: an event, a byte order mark,
	// or comment lines that begin an event (see stepComment).
	lastEnd int
	// cuts are the usage-only events that ended in the last write, less
	// the comment lines that begin them.
	cuts     []sseSpan
	cutBuf   [2]sseSpan
	calls    callCount    // the server tool calls the stream's outputs list
	usage    wireUsage    // what the stream reported
	model    modelReading // the model the last data line that named one says served it
	first    modelHash    // the model the first data line that named one says served it
	priority bool         // a data line said the stream ran at Priority
	// terminated is true once [DONE], message_stop or a terminal Responses
	// event (see sseLine.stop) arrived: the stream ended as it should; a
	// data line after it but a blank one or [DONE] spoils the usage (see
	// endObject).
	terminated bool
	// fault is whose fault the stream says its failure was, when it
	// ended (see responseFault): a response.failed that ended it says so,
	// and for any other end the last error before it (errorFault).
	fault responseFault
	// errorFault is whose fault the last data line with an error said
	// its failure was (see sseLine.errorFault), until the stream's end.
	errorFault responseFault
	failed     bool // an error, or malformed usage: the usage is not ok
	// errorEnd is true while the last data line of a stream that had not
	// ended was an error: a provider ends a stream that fails mid-answer
	// with its error and nothing after it (Anthropic's error event, no
	// message_stop; OpenAI's chat error chunk, no [DONE]; the Responses
	// API's error event for a rate limit or a context too long), and the
	// stream ended there, whole (see ended); a data line after it but a
	// blank one, a [DONE], message_stop or response.failed that ends it
	// included, says it went on.
	errorEnd bool
	// usageStale is true when a line that carries no usage came after the
	// last usage (or none did) and says the usage before it is not the
	// final one: an event of Anthropic's or the Responses API (a line with
	// a type) but message_stop and pings, whose final usage comes after
	// the content (message_delta) or in the terminal Responses event
	// itself; or a chat or completions chunk that carries output (see
	// choicesCarryOutput), whose final usage comes with or after the last
	// of it. A usage followed by content, or by a terminal Responses event
	// without one, is a part (message_start's placeholder output, a usage
	// in response.in_progress, a relay's usage on the first chat chunk),
	// and the usage is not ok. Chunks without output may follow the usage:
	// Azure's asynchronous filter sends an annotation chunk after it. A
	// usage of zeros (a relay's default usage object on a chat chunk, its
	// message_delta of zeros) is no final usage: it does not clear it.
	usageStale bool
	// itemsDone counts the Responses output items the stream said were
	// done: a terminal response whose output lists fewer (some relays
	// send "output":[]) does not list every call, and its count of calls
	// is not trusted (see result).
	itemsDone int32
}

// sseState is where the scanner is in a line.
type sseState uint8

const (
	sseLineStart  sseState = iota
	sseCR                  // after a \r that ended a line, and the last write: a \n next is part of its end
	sseEventCR             // sseCR, for a \r that ended an event or a comment that moved lastEnd
	sseField               // in a field name
	sseValueSpace          // after "data:": an optional space
	sseData                // in a data line's value
	sseSkip                // in a line that does not matter
	sseComment             // in a comment line (see stepComment)
)

// sseKey is a top-level key of a data line that the scanner reads.
type sseKey uint8

const (
	sseOther sseKey = iota
	sseUsage
	sseError
	sseType
	sseMessage
	sseChoices
	sseResponse
	sseServiceTier
	sseModel
	sseCode
)

var sseKeyNames = [...]string{sseOther: "", sseUsage: "usage", sseError: "error", sseType: "type", sseMessage: "message", sseChoices: "choices",
	sseResponse: "response", sseServiceTier: "service_tier", sseModel: "model", sseCode: "code"}

// maxResponseValue bounds the output of an OpenAI Responses answer kept
// to count its server tool calls (see outputValue): a longer output counts
// none, and the calls are charged their reservation.
const maxResponseValue = 256 << 10

// sseLine is what a data line said so far.
type sseLine struct {
	lex       jsonLexer
	done      int8 // progress matching [DONE]: see matchDone
	key       sseKey
	tierKey   nameMatch    // how the service_tier (or model) key being read matched
	tier      tierReading  // what the line's service_tier said
	ranAt     bool         // a response object in the line said it ran at Priority
	model     modelReading // the model the line says served it (its message's or response's)
	capture   valueCapture // the value of error, type, message, choices or service_tier
	value     usageValue   // the value of usage, handed off by lex
	usage     usageReadings
	usageSeen bool      // a top-level "usage" key was read
	usageNull bool      // the last top-level "usage" was null
	choices   bool      // no choice: no "choices", or the last was an empty array or null
	failed    bool      // an error, or a key of interest in another case
	stop      bool      // type message_stop, response.failed, or final
	final     bool      // type response.completed, response.incomplete or an Images API stream's *.completed, whose usage is the stream's final one
	ping      bool      // type ping: Anthropic's keep-alive, which says nothing
	typed     bool      // a top-level type was read: an Anthropic or Responses event, not a chat chunk
	itemDone  bool      // type response.output_item.done: an item of the Responses output
	output    bool      // a chat or completions chunk that carries output: see choicesCarryOutput
	lost      bool      // a message object too long to read
	calls     callCount // the server tool calls of a response object's output
	// response reads a Responses response object handed off by lex, as it
	// passes: made on first use, kept for the stream's next lines.
	response *responseValue
	// nested is the usage of the message (Anthropic's message_start) or
	// response object (OpenAI Responses) the line holds: SDKs read it or
	// the top-level usage by the event's type, so neither replaces the
	// other (see sseScanner.endObject).
	nested     usageReadings
	nestedSeen bool

	// responseFailed is set by type response.failed.
	responseFailed bool
	// responseError is whose fault the error of a response object in the
	// line says its failure was (see errorFault; of repeated errors, the
	// last), faultNone when it has none.
	responseError responseFault
	// errorFault is whose fault the line's error says its failure was
	// (see errorFault; of repeated errors, the last), or, for an error
	// event without one, its code (see endObject); faultNone when it has
	// neither.
	errorFault responseFault
	// errorEvent is set by type error: Anthropic's error event, the
	// Responses API's, whose code may be the line's own (see code).
	errorEvent bool
	// code is what the line's top-level code said (of repeated codes, the
	// last), for an error event whose error's members are its own.
	code errorReading

	// The free strings of a line lexed whole (lex.wantStrings), for
	// lineTemplate: the first maxFreeStrings string values in members that
	// nothing reads.
	free  [maxFreeStrings]freeString
	nfree uint8 // a byte: the scanner is at the top of its size class
}

// sseEvent is what the event being read holds.
type sseEvent struct {
	dataLines int
	usageOnly bool // its data line is a usage-only chunk
	fields    bool // a line began that is neither data nor a comment
}

// begun reports whether the event has a line that is not a comment.
func (e *sseEvent) begun() bool { return e.dataLines > 0 || e.fields }

// sseSpan is where an event lies in the bytes of a write: [start, end),
// start -1 when it began in an earlier write.
type sseSpan struct{ start, end int }

// write follows p, the next bytes of the stream.
func (s *sseScanner) write(p []byte) {
	s.cuts, s.lastEnd = s.cutBuf[:0], -1
	i := 0
	if s.bom < bomRead {
		i = s.skipBOM(p)
	}
	for i < len(p) {
		switch s.at {
		case sseLineStart:
			if s.terminated || s.lexAll {
				i = s.stepLineStart(p, i)
			} else {
				i = s.stepLines(p, i)
			}
		case sseCR, sseEventCR:
			i = s.stepCR(p, i)
		case sseField:
			i = s.stepField(p, i)
		case sseValueSpace:
			i = s.stepValueSpace(p, i)
		case sseData:
			i = s.stepData(p, i)
		case sseComment:
			i = s.stepComment(p, i)
		default:
			i = s.stepSkip(p, i)
		}
	}
}

// skipBOM reads the part of a byte order mark that begins the stream in
// p, and returns where the stream's lines go on: the SSE specification has
// readers ignore one (a PHP relay whose source files carry one writes it
// before its output), and a stream whose first line is its end (an image
// stream without partial images, sent as data lines alone) would otherwise
// end unread. A whole mark ends a span of its own for the stripper
// (lastEnd), which keeps it; a part of one that turns out to be no mark
// begins a line that is no field, skipped as stepLineStart skips it.
func (s *sseScanner) skipBOM(p []byte) int {
	i := 0
	for ; s.bom < bomRead && i < len(p); i++ {
		if p[i] != utf8BOM[s.bom] {
			if s.bom > 0 {
				s.at, s.event.fields = sseSkip, true
			}
			s.bom = bomRead
			return i
		}
		if s.bom++; s.bom == bomRead {
			s.lastEnd = i + 1
		}
	}
	return i
}

func (s *sseScanner) stepLineStart(p []byte, i int) int {
	switch p[i] {
	case '\n', '\r':
		return s.endBlankLine(p, i)
	case ':': // a comment
		s.at = sseComment
		return i + 1
	case 'd': // most lines: what stepField would read, at once
		if len(p)-i >= len("data:") && string(p[i:i+len("data:")]) == "data:" {
			s.at = sseValueSpace
			return i + len("data:")
		}
	default: // a field that is not data (event:, id:, retry:): nothing to read
		s.at, s.event.fields = sseSkip, true
		return i
	}
	s.at, s.nameLen, s.isData, s.event.fields = sseField, 0, true, true
	return i
}

// stepLines reads the lines that start at p[i] a line at a time, where
// the steps would go byte by byte: most streams are data lines that match
// the template, blank lines and lines that do not matter. It does what
// the steps would do, and leaves the rest to them: a line that ends the
// stream or one cut by the end of p. The stream must not have ended (see
// stepValueSpace), and the template must be in use.
func (s *sseScanner) stepLines(p []byte, i int) int {
	for i < len(p) {
		switch p[i] {
		case '\n': // endBlankLine, inline for the most common blank line
			s.endEvent(i + 1)
			i++
		case '\r':
			i = s.endBlankLine(p, i)
		case 'd':
			if len(p)-i <= len("data:") || string(p[i:i+len("data:")]) != "data:" {
				return s.stepLineStart(p, i)
			}
			if i = s.stepValueSpace(p, i+len("data:")); i == len(p) {
				return i
			}
			if n := s.template.match(p[i:]); n >= 0 { // stepData, as matchTemplate
				s.matched()
				i = s.passLineEnd(p, i+n)
				continue
			}
			if i = s.readData(p, i); s.at != sseLineStart || s.terminated {
				return i
			}
		case ':':
			s.at = sseComment
			i = s.stepComment(p, i+1)
		default: // a field that is not data
			s.event.fields = true
			i = s.skipLine(p, i)
		}
	}
	return i
}

// stepCR passes a \n that ends the line a \r ended at the end of the last
// write; when that line ended an event, the event ends after it.
func (s *sseScanner) stepCR(p []byte, i int) int {
	event := s.at == sseEventCR
	s.at = sseLineStart
	if p[i] != '\n' {
		return i
	}
	if event {
		s.lastEnd = i + 1
	}
	return i + 1
}

// passLineEnd passes the line end at p[i], \r\n, \n or \r, and returns
// where the next line starts; after a \r that ends p, the scanner is in
// sseCR, to pass a \n that starts the next write.
func (s *sseScanner) passLineEnd(p []byte, i int) int {
	s.at = sseLineStart
	switch {
	case p[i] == '\n':
	case i+1 == len(p):
		s.at = sseCR
	case p[i+1] == '\n':
		return i + 2
	}
	return i + 1
}

// endBlankLine follows the blank line at p[i], which ends the event.
func (s *sseScanner) endBlankLine(p []byte, i int) int {
	i = s.passLineEnd(p, i)
	s.endEvent(i)
	if s.at == sseCR {
		s.at = sseEventCR
	}
	return i
}

// lineEnd returns the index of the first \r or \n in p, or -1. The lines
// it looks in are short (event: lines) or long (data lines the template
// does not match): it looks at the first 32 bytes a word at a time, for a
// byte below 0x0e (\r and \n are, and a tab; a borrow sets bits only above
// such a byte, so the lowest bit set marks the first), then with two
// IndexByte scans, which outrun a loop that looks for either byte.
func lineEnd(p []byte) int {
	i := 0
	for i+8 <= len(p) && i < 32 {
		x := binary.LittleEndian.Uint64(p[i:])
		m := (x - 0x0e*lows) &^ x & highs
		if m == 0 {
			i += 8
			continue
		}
		if i += bits.TrailingZeros64(m) / 8; isLineEnd(p[i]) {
			return i
		}
		i++ // a tab, or another control byte
	}
	n := bytes.IndexByte(p[i:], '\n')
	if n < 0 {
		n = len(p) - i
	}
	if r := bytes.IndexByte(p[i:i+n], '\r'); r >= 0 {
		return i + r
	}
	if i+n == len(p) {
		return -1
	}
	return i + n
}

// isLineEnd reports whether c ends a line.
func isLineEnd(c byte) bool { return c == '\n' || c == '\r' }

func (s *sseScanner) stepField(p []byte, i int) int {
	for ; i < len(p); i++ {
		switch c := p[i]; c {
		case ':':
			s.at = sseSkip
			if s.isData && s.nameLen == 4 {
				s.at = sseValueSpace
			}
			return i + 1
		case '\n', '\r': // a field without a value
			return s.passLineEnd(p, i)
		default:
			s.isData = s.isData && s.nameLen < 4 && c == "data"[s.nameLen]
			s.nameLen = min(s.nameLen+1, 5)
		}
	}
	return i
}

func (s *sseScanner) stepValueSpace(p []byte, i int) int {
	if p[i] == ' ' {
		i++
	}
	s.event.dataLines++
	s.at, s.lineOpen = sseData, false
	return i
}

func (s *sseScanner) stepData(p []byte, i int) int {
	if !s.lineOpen && len(s.held) == 0 { // the line starts here
		if n := s.matchTemplate(p[i:]); n >= 0 {
			return s.passLineEnd(p, i+n)
		}
	}
	return s.readData(p, i)
}

// readData is stepData for a line that is not the template, or that
// started in an earlier write.
func (s *sseScanner) readData(p []byte, i int) int {
	j := lineEnd(p[i:])
	if j < 0 {
		s.holdLine(p[i:])
		return len(p)
	}
	s.endLine(p[i : i+j])
	return s.passLineEnd(p, i+j)
}

// holdLine follows part of a data line that goes on in the next write: it
// is held, so that the line is read whole, unless the line outgrows
// maxTemplateLine; then it is lexed as it passes.
func (s *sseScanner) holdLine(part []byte) {
	if !s.lineOpen && len(s.held)+len(part) <= maxTemplateLine {
		if s.held == nil {
			s.held = s.heldBuf[:0]
		}
		s.held = append(s.held, part...)
		return
	}
	l := s.openLine()
	l.write(s.held)
	s.held = s.held[:0]
	l.write(part)
}

// endLine follows the end of a data line, whose last part is v.
func (s *sseScanner) endLine(v []byte) {
	switch {
	case s.lineOpen:
		s.line.write(v)
		s.endData()
	case len(s.held) > 0:
		s.held = append(append(s.held, v...), '\n')
		if s.matchTemplate(s.held) < 0 {
			s.lexLine(s.held[:len(s.held)-1])
		}
		s.held = s.held[:0]
	default:
		s.lexLine(v)
	}
}

// openLine returns the data line being read, reset if nothing of it was
// written yet.
func (s *sseScanner) openLine() *sseLine {
	if !s.lineOpen {
		s.line.reset()
		s.lineOpen = true
	}
	return &s.line
}

// matchTemplate follows a data line that rest starts with, if it matches
// the template: the line is inert. It returns the length of the line's
// value, which a line end in rest ends, or -1 when it does not match.
func (s *sseScanner) matchTemplate(rest []byte) int {
	if s.lexAll || s.terminated { // a line after the end is never inert
		return -1
	}
	n := s.template.match(rest)
	if n >= 0 {
		s.matched()
	}
	return n
}

// matched follows a data line that matched the template: it does what
// endObject does for an inert line.
func (s *sseScanner) matched() {
	s.event.usageOnly = false
	s.mergeModel(s.template.model)
	s.usageStale = s.usageStale || s.template.stales
	if s.template.itemDone {
		s.itemsDone = min(s.itemsDone+1, math.MaxInt32-1) // saturated: more than any output lists
	}
}

// lexLine reads v, the value of a data line that did not match the
// template, with the lexer, noting its free strings; an inert line becomes
// the template.
func (s *sseScanner) lexLine(v []byte) {
	l := s.openLine()
	l.lex.wantStrings = len(v) <= maxTemplateLine // note the free strings
	l.write(v)
	s.endData()
	if l.inert() {
		s.template.keep(v, l)
	}
}

// skipLine skips the line p[i:] is in, as sseSkip does.
func (s *sseScanner) skipLine(p []byte, i int) int {
	s.at = sseSkip
	return s.stepSkip(p, i)
}

func (s *sseScanner) stepSkip(p []byte, i int) int {
	j := lineEnd(p[i:])
	if j < 0 {
		return len(p)
	}
	return s.passLineEnd(p, i+j)
}

// stepComment is stepSkip for a comment line. Comment lines that begin an
// event (none but comments before them in it) end a span of their own
// (lastEnd), which the stripper passes on at once rather than hold back
// with the event they begin: servers send them alone (": keep-alive") to
// keep a connection that waits on the model from timing out. Were the
// event a usage-only chunk, they would still be no part of it.
func (s *sseScanner) stepComment(p []byte, i int) int {
	if i = s.stepSkip(p, i); s.at == sseComment || s.event.begun() {
		return i
	}
	s.lastEnd = i
	if s.at == sseCR {
		s.at = sseEventCR // a \n next ends the span too
	}
	return i
}

// endEvent follows the blank line that ends an event, at p[:end].
func (s *sseScanner) endEvent(end int) {
	if s.event.dataLines == 1 && s.event.usageOnly {
		s.cuts = append(s.cuts, sseSpan{s.lastEnd, end})
	}
	s.lastEnd = end
	s.event = sseEvent{}
}

// endData follows the end of a data line that was lexed.
func (s *sseScanner) endData() {
	l := &s.line
	switch {
	case l.done == int8(len("[DONE]")):
		if !s.terminated {
			s.fault = s.errorFault
		}
		s.terminated = true
	case l.lex.end():
		s.endObject()
	case l.lex.started():
		// Neither JSON nor [DONE] (SDKs fail on it), or cut short: not ok,
		// but a usage it said was billed at least.
		s.failed, s.errorEnd = true, false // the stream went on after an error
		s.mergeUsage(l.usageSeen, &l.usage)
		s.mergeUsage(l.nestedSeen, &l.nested)
	}
}

// endObject takes what a JSON data line said.
//
// A JSON line after the stream's end spoils it (an SDK that reads on, as
// anthropic-sdk-go does to EOF, may take usage from it), so that the
// attempt is charged its reservation, or the usage the line reports (a
// relay's usage after [DONE] or message_stop) when that costs more. A
// blank data line, or [DONE] (relays that serve Anthropic's API end its
// streams as OpenAI's too), carries nothing.
func (s *sseScanner) endObject() {
	l := &s.line
	s.failed = s.failed || l.failed || s.terminated
	if l.errorEvent && l.errorFault == faultNone {
		// The Responses API's documented error event: the event is its
		// error, whose code is beside its type (which is the event's).
		l.errorFault = l.code.fault()
	}
	if l.errorFault != faultNone && !s.terminated {
		s.errorFault = l.errorFault
	}
	if l.stop && !s.terminated {
		s.fault = l.fault(s.errorFault)
	}
	s.terminated = s.terminated || l.stop
	if s.errorEnd = l.errorFault != faultNone && !s.terminated; s.errorEnd {
		s.fault = s.errorFault
		// Every line after it is lexed, to find whether the stream went on.
		s.template.line = s.template.line[:0]
	}
	s.failed = s.failed || l.lost
	s.event.usageOnly = l.usageOnly()
	s.calls.merge(l.calls)
	s.priority = s.priority || l.tier.priority() || l.ranAt
	s.mergeModel(l.model)
	s.mergeUsage(l.usageSeen, &l.usage)
	s.mergeUsage(l.nestedSeen, &l.nested)
	if l.itemDone {
		s.itemsDone = min(s.itemsDone+1, math.MaxInt32-1) // saturated: more than any output lists
	}
	switch {
	case l.reportsUsage() && !l.countsNothing():
		s.usageStale = false
	case l.stales():
		s.usageStale = true
	}
}

// ended reports whether the stream ended: its terminal event came, or its
// last data line was an error (see errorEnd).
func (s *sseScanner) ended() bool { return s.terminated || s.errorEnd }

// mergeModel takes the model a data line names, m: the stream's model is
// the last named, as a reader of each chunk takes it, and the first, as
// openai-python's stream accumulator keeps it. An empty name is not a
// first: Azure OpenAI's first chunk, its prompt_filter_results, says
// "model":"".
func (s *sseScanner) mergeModel(m modelReading) {
	if s.first == 0 {
		if f := cmp.Or(m.exact, m.folded); f != emptyModel {
			s.first = f
		}
	}
	s.model.merge(m)
}

// emptyModel is the modelHash of "".
var emptyModel = hashModel("")

// responseFault is whose fault a stream that ended says its failure was:
// a Responses stream's response.failed by its response's error, any
// other end by the last error the stream sent before it (a chat stream's
// error chunk before its [DONE], Anthropic's error event before its
// message_stop, or the error that ended the stream: see errorEnd). It is
// what the Breaker counts the stream as (see answeredOutcome).
type responseFault uint8

const (
	faultNone     responseFault = iota // no error, and no response.failed
	faultProvider                      // the provider failed mid-generation (see errorFault)
	faultOther                         // anyone else's fault: a rate limit's, the caller's, or none read
)

// fault is whose fault the line, a terminal event, says the stream's
// failure was, when the last error before it said before.
func (l *sseLine) fault(before responseFault) responseFault {
	if !l.responseFailed {
		return before
	}
	return cmp.Or(l.responseError, faultOther) // without an error, anyone's
}

// stales reports whether the line, which carries no usage, makes the
// usage before it stale (see sseScanner.usageStale): an event of
// Anthropic's or the Responses API's but message_stop and pings, a
// terminal Responses event, or a chunk that carries output.
func (l *sseLine) stales() bool { return l.final || l.output || l.typed && !l.stop && !l.ping }

// reportsUsage reports whether the line, ended, carries a usage with a
// count (or one read amiss), at its top level or in its message or
// response object; a usage null or empty carries none.
func (l *sseLine) reportsUsage() bool {
	if w, ok := l.usage.get(); l.usageSeen && (!ok || *w != wireUsage{}) {
		return true
	}
	n, ok := l.nested.get()
	return l.nestedSeen && (!ok || *n != wireUsage{})
}

// countsNothing reports whether every count of the line's usages, top-level
// and nested, is zero: on a chat chunk, such a usage is not the final one
// of output before it (a relay that fills every chunk's usage with zeros
// reports nothing), nor, on an event with a type, the final one of the
// content before it (a relay's message_delta of zeros, jedarden/CLASP#16).
func (l *sseLine) countsNothing() bool {
	w, _ := l.usage.get()
	n, _ := l.nested.get()
	return w.countsNothing() && n.countsNothing()
}

// mergeUsage takes a usage a line said, when seen.
func (s *sseScanner) mergeUsage(seen bool, r *usageReadings) {
	if !seen {
		return
	}
	switch w, ok := r.get(); {
	case !ok: // read differently by different decoders, or malformed: the stream is spoilt
		s.failed = true
		if d, dok := r.dearest(); dok && d.inRange() {
			s.usage.merge(&d)
		}
	case !w.inRange():
		s.failed = true // a lying chunk spoils the stream, even if a later one looks fine
	default:
		v := *w
		v.foldTotal() // its output as read alone, before it is mixed with the counts of other lines
		s.usage.merge(&v)
	}
}

func (s *sseScanner) result(eof bool) (Usage, bool) {
	switch {
	case s.at == sseData:
		// A last line without a line end, or one the stream broke off in
		// (or was closed in): what arrived of it is read, and a usage it
		// holds counts, as a cut JSON answer's does (the usage chunk may
		// be cut after its usage, before "obfuscation" or a Responses
		// object's last members).
		s.endLine(nil)
		s.at = sseLineStart
		s.failed = s.failed || !eof
	}
	u, ok := s.usage.usage() // none reported reads as an empty usage, which is no usage
	if s.itemsDone > s.calls.items {
		s.calls.bad = true // items done that no output listed: their calls are unknown
	}
	if ok {
		s.calls.addTo(&u)
	}
	u.ranAtPriority, u.ranIn = s.priority, s.usage.geo()
	s.model.setIn(&u)
	if s.first != u.servedBy && s.first != u.servedFolded {
		u.servedFirst = s.first // the stream's chunks disagree: both are priced, the dearer side
	}
	// A stream cut short or spoilt is not ok, but what it reported before
	// (Anthropic's cumulative usage, a usage chunk before a missing [DONE]
	// or an error) was billed at least: the caller charges its
	// reservation, or that if it is more.
	// A usage of zeros is a relay's default, no count of an answer the
	// provider billed (its prompt, at least), as in a JSON answer (see
	// jsonUsageScanner.result): the reservation is the charge.
	ok = ok && (u.InputTokens|u.OutputTokens != 0 || !s.usage.countsNothing())
	return u, ok && s.terminated && !s.failed && !s.usageStale && !s.usage.readsAmiss()
}

// usageOnly reports whether the line, a JSON object, is OpenAI's
// usage-only chunk: a usage and no choice. Its choices are [] as OpenAI
// sends them, or null (Cloudflare Workers AI, ModelScope: a Go server's
// nil slice) or missing (Fireworks), which SDKs decode as none: a chunk
// on which the usual Choices[0] panics. An event with a type is
// Anthropic's or the Responses API's, not a chunk.
func (l *sseLine) usageOnly() bool {
	return l.usageSeen && !l.usageNull && l.choices && !l.failed && !l.typed
}

// inert reports whether the line, ended, is a JSON object that changes
// nothing the scanner gathers (see endObject): no error, no stop, no usage
// but null or empty, not usage-only.
func (l *sseLine) inert() bool {
	if !l.lex.end() || l.failed || l.lost || l.stop || l.usageOnly() {
		return false
	}
	w, ok := l.usage.get()
	n, nok := l.nested.get()
	return ok && nok && *w == wireUsage{} && *n == wireUsage{}
}

func (l *sseLine) reset() {
	ends, counts, response := l.capture.buf, l.value.capture.buf, l.response
	*l = sseLine{choices: true}
	l.lex.objectOnly = true
	l.capture.buf, l.value.capture.buf = ends[:0], counts[:0] // keep the buffers: no allocation per line
	l.response = response
}

// write reads the next bytes of the line's value.
func (l *sseLine) write(p []byte) {
	l.matchDone(p)
	readText(&l.lex, &l.capture, p, l)
}

func (l *sseLine) readKey() {
	raw, escaped := l.lex.key()
	k, m := lookupName(raw, escaped, sseKeyNames[:])
	l.key = sseOther
	switch {
	case sseKey(k) == sseUsage: // in any case: see usageReadings
		l.key, l.usageSeen = sseUsage, true
		l.lex.handOff = true
		l.value.start(&l.usage, m)
	case m == exactMatch && sseKey(k) == sseResponse:
		l.key = sseResponse
		l.lex.handOff = true
		if l.response == nil {
			l.response = new(responseValue)
		}
		l.response.start(l)
	case sseKey(k) == sseServiceTier: // in any case: see tierReading
		l.key, l.tierKey = sseServiceTier, m
		l.capture.start(maxTierValue)
	case sseKey(k) == sseModel: // in any case: see modelReading
		l.key, l.tierKey = sseModel, m
		l.capture.start(maxModelValue)
	case m == exactMatch:
		l.key = sseKey(k)
		limit := 64
		if l.key == sseMessage || l.key == sseChoices || l.key == sseError {
			limit = maxUsageValue
		}
		l.capture.start(limit)
	case sseKey(k) == sseCode: // in another case: no error event's code, and no key of interest
	case m == foldMatch && sseKey(k) == sseChoices: // not usage-only, and its output unknown
		l.choices, l.output = false, true
	case m == foldMatch: // encoding/json would read it; other decoders would not
		l.failed = true
	}
}

// readString notes a free string, for lineTemplate: a string value (at
// any depth) in a member whose key is none that readKey reads, or exactly
// "choices" (which a string in it makes non-empty, whatever the string).
func (l *sseLine) readString() {
	free := l.key == sseOther || l.key == sseChoices
	if !free || l.lex.state != lexValueEnd || l.lex.strStart < 0 || int(l.nfree) == len(l.free) {
		return
	}
	l.free[l.nfree] = freeString{uint16(l.lex.strStart + 1), uint16(l.lex.pos - 1)}
	l.nfree++
}

func (l *sseLine) readValue(p []byte) {
	if l.key == sseResponse {
		if readHanded(&l.lex, l.response, p) {
			l.response.end()
		}
		return
	}
	if readHanded(&l.lex, &l.value, p) {
		l.usageNull = l.value.null()
	}
}

// responseValue reads an OpenAI Responses response object, handed off by
// an SSE line's lexer, as it passes, whatever its size (response.completed
// carries the whole answer beside its usage): its usage into the line's
// readings, as a JSON answer's is read (see jsonUsageScanner), the server
// tool calls its output lists into the line's count, the tier it says it
// ran at into the line's, and whose fault its error says the failure was
// (see errorFault; an error longer than maxUsageValue, whatever its code,
// is no provider's).
type responseValue struct {
	lex    jsonLexer
	line   *sseLine
	value  usageValue
	output outputValue
	// inOutput is set while the member handed off is the output.
	inOutput bool
	calls    callCount    // what the object's outputs list
	capture  valueCapture // the value of a service_tier, model or error key
	tierKey  nameMatch    // how a service_tier key matched, or modelCaptured and how a model key did
	errorKey bool         // the value captured is the error's
	tier     tierReading
	model    modelReading
}

func (r *responseValue) start(l *sseLine) {
	r.lex, r.line, r.inOutput, r.calls = jsonLexer{member1: true, objectOnly: true}, l, false, callCount{}
	r.capture.on, r.errorKey, r.tier, r.model = false, false, tierReading{}, modelReading{}
}

// read implements handedValue.
func (r *responseValue) read(p []byte) (end int, ok bool) {
	end = readMembers(&r.lex, &r.capture, p, r)
	if r.lex.state == lexError {
		return 0, false
	}
	return end, true
}

func (r *responseValue) readKey() {
	raw, escaped := r.lex.key()
	r.inOutput, r.errorKey = false, false
	switch k, m := lookupName(raw, escaped, responseKeys); {
	case k == keyUsage: // in any case: see usageReadings
		r.line.nestedSeen = true
		r.lex.handOff = true
		r.value.start(&r.line.nested, m)
	case k == keyOutput && m == exactMatch:
		r.lex.handOff, r.inOutput = true, true
		r.output.start()
	case k == keyOutput:
		r.calls.add(ToolCalls{}, 0, false)
	case k == keyServiceTier:
		r.tierKey = m
		r.capture.start(maxTierValue)
	case k == keyModel:
		r.tierKey = modelCaptured | m
		r.capture.start(maxModelValue)
	case k == keyError && m == exactMatch:
		r.errorKey = true
		r.capture.start(maxUsageValue)
	}
}

func (r *responseValue) readValue(p []byte) {
	if !r.inOutput {
		readHanded(&r.lex, &r.value, p)
		return
	}
	if readHanded(&r.lex, &r.output, p) {
		r.calls.merge(r.output.calls)
		r.output.calls = callCount{}
		if cap(r.output.buf) > maxUsageValue {
			r.output.buf = nil // a long output's: not kept for the stream's life
		}
	}
}

// readMember reads the value of a service_tier or model key.
func (r *responseValue) readMember(p []byte) {
	if !r.capture.on {
		return
	}
	v, whole := r.capture.end(p, &r.lex)
	switch {
	case r.errorKey: // of repeated errors, the last
		r.line.responseError = faultOther
		if whole {
			r.line.responseError = errorFault(v)
		}
	case r.tierKey&modelCaptured != 0:
		r.model.read(readModel(v, whole), r.tierKey&^modelCaptured)
	default:
		r.tier.add(r.tierKey, v, whole)
	}
}

// responseKeys are the keys of a response object that a responseValue
// reads: answerKeys, and its error (see errorFault).
var responseKeys = []string{keyUsage: "usage", keyOutput: "output", keyServiceTier: "service_tier", keyModel: "model", keyError: "error"}

// keyError is the index of "error" in responseKeys.
const keyError = keyModel + 1

// The keys of an error object that errorFault reads.
const (
	errorCode = iota
	errorType
)

var errorKeys = [...]string{errorCode: "code", errorType: "type"}

// errorFault is whose fault v, the whole and valid value of a data line's
// error, says the stream's failure was: a chat stream's error chunk (vLLM
// and other OpenAI-compatible servers send one mid-stream, then [DONE]),
// Anthropic's error event, the error of a Responses stream's response
// object (OpenAI's response.failed says server_error when the model failed
// mid-answer; its other codes are the caller's errors, invalid_prompt and
// the image codes, or a rate limit; vector_store_timeout, a file_search
// tool's store timing out, its reference lists without saying whose fault
// it is). It is the provider's (faultProvider) when its code is a number,
// or a string of its digits, that would be a failure as an answer's
// status (see judgeStatus: 5xx, 529 included, but 501 and 505), or its
// code or type is one of providerErrorTypes, unless its code or type says
// it was a rate limit (429, or one of rateLimitErrors), the Limiter's
// signal. Any other error (BadRequestError, invalid_request_error, one
// without a code or type, or no object) is anyone else's (faultOther), as
// a caller's 4xx is. Keys and names match exactly, escapes decoded; of
// repeated codes or types, the last.
func errorFault(v []byte) responseFault {
	var e errorReading
	for key, value := range validMembers(v) {
		if k, m := lookupName(key, bytes.IndexByte(key, '\\') >= 0, errorKeys[:]); k >= 0 && m == exactMatch {
			e.read(k, value)
		}
	}
	return e.fault()
}

// errorReading is what the code and type of an error said of whose fault
// it was (see errorFault), by key. The zero value read none.
type errorReading struct{ provider, limit [len(errorKeys)]bool }

// read takes value, the valid value of the error's key k, errorCode or
// errorType.
func (e *errorReading) read(k int, value []byte) {
	var buf [64]byte
	name, ok := unquote(buf[:0], value)
	if !ok {
		name = value // a number
	}
	e.limit[k] = slices.Contains(rateLimitErrors[:], string(name))
	e.provider[k] = slices.Contains(providerErrorTypes[:], string(name))
	if k == errorCode && len(name) == 3 && isDigits(name) {
		status := int(name[0]-'0')*100 + int(name[1]-'0')*10 + int(name[2]-'0')
		e.provider[k], e.limit[k] = judgeStatus(status) == outcomeFailure, status == http.StatusTooManyRequests
	}
}

// fault is whose fault the error's code and type say it was.
func (e *errorReading) fault() responseFault {
	if (e.provider[errorCode] || e.provider[errorType]) && !e.limit[errorCode] && !e.limit[errorType] {
		return faultProvider
	}
	return faultOther
}

// providerErrorTypes are the types of error that say the provider failed:
// OpenAI's and OpenAI-compatible servers' server_error and internal_error,
// vLLM's InternalServerError, Anthropic's api_error and overloaded_error
// (its 529).
var providerErrorTypes = [...]string{"server_error", "internal_error", "InternalServerError", "api_error", "overloaded_error"}

// rateLimitErrors are the codes and types of error that say it was a rate
// limit: OpenAI's rate_limit_exceeded, Anthropic's rate_limit_error,
// vLLM's RateLimitError.
var rateLimitErrors = [...]string{"rate_limit_exceeded", "rate_limit_error", "RateLimitError"}

// isDigits reports whether b is ASCII digits only.
func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (r *responseValue) readString() {}

// end follows the end of the object: its calls are the line's, and so is
// its tier when Priority (of repeated response objects, whichever says
// so: the dearer reading).
func (r *responseValue) end() {
	r.line.calls.merge(r.calls)
	r.line.ranAt = r.line.ranAt || r.tier.priority()
	r.line.model.merge(r.model)
}

func (l *sseLine) readMember(p []byte) {
	if !l.capture.on {
		return
	}
	v, whole := l.capture.end(p, &l.lex)
	switch l.key {
	case sseError:
		switch { // of repeated errors, the last
		case !whole: // too long to read
			l.failed, l.errorFault = true, faultOther
		case !isJSONNull(v):
			l.failed, l.errorFault = true, errorFault(v)
		}
	case sseType:
		var buf [64]byte
		l.typed = whole
		switch typ, _ := unquote(buf[:0], v); {
		case !whole:
		case string(typ) == "error":
			l.failed, l.errorEvent = true, true
		case string(typ) == "response.failed": // ends the stream, as response.completed does
			l.failed, l.stop, l.responseFailed = true, true, true
		case string(typ) == "message_stop":
			l.stop = true
		case string(typ) == "response.completed", string(typ) == "response.incomplete",
			string(typ) == "image_generation.completed", string(typ) == "image_edit.completed":
			l.stop, l.final = true, true
		case string(typ) == "ping":
			l.ping = true
		case string(typ) == "response.output_item.done":
			l.itemDone = true
		}
	case sseMessage:
		if !whole {
			l.lost = true
			return
		}
		l.readMessage(v)
	case sseChoices:
		l.choices = whole && (isEmptyArray(v) || isJSONNull(v))
		l.output = l.output || !whole || choicesCarryOutput(v) // of repeated choices, any
	case sseServiceTier:
		l.tier.add(l.tierKey, v, whole)
	case sseModel:
		l.model.read(readModel(v, whole), l.tierKey)
	case sseCode:
		l.code = errorReading{}
		if whole {
			l.code.read(errorCode, v)
		}
	}
}

// readMessage reads the usage in an Anthropic message object, v, which
// the line's lexer has checked: its members are found by validMembers,
// not lexed a second time.
func (l *sseLine) readMessage(v []byte) {
	for key, value := range validMembers(v) {
		switch k, m := lookupName(key, bytes.IndexByte(key, '\\') >= 0, answerKeys); {
		case k == keyUsage: // in any case: see usageReadings
			l.nestedSeen = true
			l.nested.folded = m == foldMatch
			l.nested.add(value)
		case k == keyModel:
			l.model.read(readModel(value, true), m)
		}
	}
}

// choicesCarryOutput reports whether v, the valid choices array of a chat
// or completions chunk, carries output: a choice's delta with a member
// but its role that is not null (content, tool calls, reasoning; an empty
// string too, so that a line matching the template of one says the same
// whatever its text), or a completions choice's text. Azure's annotation
// chunks (content filter results and offsets) and a finish chunk's empty
// delta carry none.
func choicesCarryOutput(v []byte) bool {
	if len(v) == 0 || v[0] != '[' {
		return false
	}
	for i := skipSpace(v, 1); i < len(v) && v[i] != ']'; {
		end := -1
		for key, value := range objectMembers(v[i:], &end) {
			switch k, _ := lookupName(key, bytes.IndexByte(key, '\\') >= 0, choiceKeys[:]); k {
			case choiceDelta:
				for key, value := range validMembers(value) {
					if k, _ := lookupName(key, bytes.IndexByte(key, '\\') >= 0, choiceKeys[:]); k != choiceRole && !isJSONNull(value) {
						return true
					}
				}
			case choiceText:
				if !isJSONNull(value) {
					return true
				}
			}
		}
		if end < 0 { // not an object
			end = validEnd(v, i) - i
		}
		i = nextValid(v, i+end)
	}
	return false
}

// The keys of a choice that choicesCarryOutput reads, matched as
// encoding/json matches a field's name.
const (
	choiceDelta = iota
	choiceText
	choiceRole
)

var choiceKeys = [...]string{choiceDelta: "delta", choiceText: "text", choiceRole: "role"}

func isEmptyArray(v []byte) bool {
	return len(v) >= 2 && v[0] == '[' && len(bytes.TrimLeft(v[1:], " \t\r\n")) == 1
}

// doneFailed is matchDone's progress once the value is not [DONE].
const doneFailed = -1

// matchDone follows whether the line's value is "[DONE]", with whitespace
// around it: done counts the bytes of "[DONE]" read, or is doneFailed; a
// JSON line fails at its first byte.
func (l *sseLine) matchDone(p []byte) {
	for _, c := range p {
		if l.done == doneFailed {
			return
		}
		l.done = matchDoneByte(l.done, c)
	}
}

// matchDoneByte returns the progress matching [DONE] (see matchDone) after
// byte c, from done.
func matchDoneByte(done int8, c byte) int8 {
	switch {
	case done == doneFailed:
		return doneFailed
	case c == ' ' || c == '\t' || c == '\r':
		if done != 0 && done != int8(len("[DONE]")) {
			return doneFailed
		}
		return done
	case done < int8(len("[DONE]")) && c == "[DONE]"[done]:
		return done + 1
	}
	return doneFailed
}

// maxFreeStrings is how many free strings a template notes; strings after
// them must repeat exactly.
const maxFreeStrings = 16

// maxTemplateLine bounds the line a template keeps (and the start of a
// line held while it spans writes). Positions in it fit a uint16.
const maxTemplateLine = 8 << 10

// inlineLine is the room for a line that the scanner holds in itself, for
// the line held and the template: most streams then allocate nothing for
// either. (A scanner is not copied once used: the slices point into it.)
const inlineLine = 432

// freeString is where the content of a free string lies in a line:
// [start, end), the closing quote at end.
type freeString struct{ start, end uint16 }

// lineTemplate is the last inert data line lexed whole, and where its
// free strings lie (see sseLine.readString): string values that readKey
// and readMember do not read, whose contents cannot change what the line
// says. A line that is the template but for the contents of free strings,
// each still content the lexer accepts, lexes to the same events but for
// those contents, so it is inert too; match proves it with word and SIMD
// compares, at memory speed. The zero value matches nothing.
type lineTemplate struct {
	line    []byte
	lineBuf [inlineLine]byte
	free    [maxFreeStrings]freeString
	nfree   int
	// varies marks the free strings (bit f for free[f]) seen to differ
	// from the template: match first tries the others as fixed bytes.
	varies uint16
	// model is the model the line names, read again for each line that
	// matches: a line between them may have named another.
	model modelReading
	// stales and itemDone are the line's (see sseLine.stales; its type
	// is no free string).
	stales, itemDone bool
}

// keep makes l, lexed whole from v and inert, the template.
func (t *lineTemplate) keep(v []byte, l *sseLine) {
	if len(v) > maxTemplateLine {
		return
	}
	if t.line == nil {
		t.line = t.lineBuf[:0]
	}
	t.line = append(t.line[:0], v...)
	t.free, t.nfree, t.varies, t.model, t.stales, t.itemDone = l.free, int(l.nfree), 0, l.model, l.stales(), l.itemDone
}

// match reports whether rest starts with a line that is the template but
// for the contents of free strings, then a line end; it returns the length
// of that line, or -1. It first compares rest with the template as if only
// the free strings that varied before could differ, each run between them
// in one SIMD compare; where that fails, matchFrom decides.
func (t *lineTemplate) match(rest []byte) int {
	line := t.line
	if len(line) == 0 {
		return -1
	}
	i, j := 0, 0 // line[:i] and rest[:j] match, up to a closing quote
	for v := t.varies; v != 0; v &= v - 1 {
		f := bits.TrailingZeros16(v)
		start := int(t.free[f].start)
		if n := start - i; n > len(rest)-j || !bytes.Equal(line[i:start], rest[j:j+n]) {
			return t.matchFrom(rest, i, j)
		}
		if j = closingQuote(rest, j+start-i); j < 0 {
			return -1
		}
		i = int(t.free[f].end)
	}
	if n := len(line) - i; n < len(rest)-j && bytes.Equal(line[i:], rest[j:j+n]) && isLineEnd(rest[j+n]) {
		return j + n
	}
	return t.matchFrom(rest, i, j)
}

// matchFrom is match from line[i] and rest[j], which follow matching
// prefixes and are not inside free strings: where rest first differs, the
// template must be inside a free string; rest's string is read to its
// closing quote (from where both started) and the comparison goes on from
// the two closing quotes. closingQuote stops at a \r or \n (a control
// character), and the template, a line, holds neither: a match never runs
// past the line.
func (t *lineTemplate) matchFrom(rest []byte, i, j int) int {
	line, f := t.line, 0 // f: the first free string that may hold line[i]
	for {
		n := commonPrefix(line[i:], rest[j:])
		if i, j = i+n, j+n; i == len(line) {
			if j < len(rest) && isLineEnd(rest[j]) {
				return j
			}
			return -1
		}
		for f < t.nfree && int(t.free[f].end) < i {
			f++
		}
		if f == t.nfree || int(t.free[f].start) > i {
			return -1 // a difference outside free strings
		}
		if j = closingQuote(rest, j-(i-int(t.free[f].start))); j < 0 {
			return -1
		}
		i = int(t.free[f].end)
		t.varies |= 1 << f
		f++
	}
}

// commonPrefix returns the length of the longest common prefix of a and
// b, 32 bytes at a time, then eight.
func commonPrefix(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for ; i+32 <= n; i += 32 {
		x, y := a[i:i+32:i+32], b[i:i+32:i+32]
		d0 := binary.LittleEndian.Uint64(x) ^ binary.LittleEndian.Uint64(y)
		d1 := binary.LittleEndian.Uint64(x[8:]) ^ binary.LittleEndian.Uint64(y[8:])
		d2 := binary.LittleEndian.Uint64(x[16:]) ^ binary.LittleEndian.Uint64(y[16:])
		d3 := binary.LittleEndian.Uint64(x[24:]) ^ binary.LittleEndian.Uint64(y[24:])
		if d0|d1|d2|d3 != 0 {
			break
		}
	}
	for ; i+8 <= n; i += 8 {
		if x := binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:]); x != 0 {
			return i + bits.TrailingZeros64(x)/8
		}
	}
	for ; i < n && a[i] == b[i]; i++ {
	}
	return i
}
