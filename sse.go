package httpguard

import "bytes"

// sseScanner follows a server-sent event stream as the caller reads it. It
// splits lines on \n, and reads each data line's JSON with the package's
// one lexer as its bytes pass: a line is never copied, whatever its length.
// From each JSON data line it takes the top-level keys that matter —
// "usage", "error", "type" (error, message_stop), Anthropic's "message"
// (message_start's usage) and "choices" — decoded with their escapes. It
// gathers the stream's usage (the last value of each count wins: Anthropic's
// deltas are cumulative), whether the stream ended properly (terminated),
// and, for the stripper in streamusage.go, where the events that ended in
// the last write end and which were OpenAI's usage-only chunk.
//
// The stream's usage is not ok when the stream did not end with [DONE] or
// message_stop, when an error arrived (an "error" key, or type "error"),
// when a data line is neither JSON nor [DONE], when a usage value is
// malformed, lies (see wireUsage.usage) or is read differently by different
// decoders, or when an Anthropic message object outgrows maxUsageValue.
// JSON split over several data lines of one event is not joined; no
// provider sends it, and it reads as malformed (ok false). The zero value
// is ready.
type sseScanner struct {
	at      sseState
	nameLen uint8 // bytes of the field name read
	isData  bool  // they are a prefix of "data"

	line    sseLine   // the data line being read
	event   sseEvent  // the event being read
	lastEnd int       // where the last event that ended in the last write ends in it, or -1
	cuts    []sseSpan // the usage-only events that ended in the last write
	cutBuf  [2]sseSpan
	usage   wireUsage // what the stream reported
	found   bool      // usage was reported
	// terminated is true once [DONE] or message_stop arrived: the stream
	// ended as it should; what follows is not read.
	terminated bool
	failed     bool // an error, or malformed usage: the usage is not ok
}

// sseState is where the scanner is in a line.
type sseState uint8

const (
	sseLineStart  sseState = iota
	sseCR                  // after a \r that starts a line
	sseField               // in a field name
	sseValueSpace          // after "data:": an optional space
	sseData                // in a data line's value
	sseSkip                // in a line that does not matter
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
)

var sseKeyNames = [...]string{sseOther: "", sseUsage: "usage", sseError: "error", sseType: "type", sseMessage: "message", sseChoices: "choices"}

// sseLine is what a data line said so far.
type sseLine struct {
	lex       jsonLexer
	done      int8 // progress matching [DONE]: see matchDone
	key       sseKey
	capture   valueCapture
	usage     usageReadings
	usageSeen bool // a "usage" key (or message.usage) was read
	usageNull bool // the last top-level "usage" was null
	choices   bool // the last "choices" was an empty array
	failed    bool // an error, or a key of interest in another case
	stop      bool // type message_stop
	lost      bool // a message object too long to read
}

// sseEvent is what the event being read holds.
type sseEvent struct {
	dataLines int
	usageOnly bool // its data line is a usage-only chunk
}

// sseSpan is where an event lies in the bytes of a write: [start, end),
// start -1 when it began in an earlier write.
type sseSpan struct{ start, end int }

// write follows p, the next bytes of the stream.
func (s *sseScanner) write(p []byte) {
	s.cuts, s.lastEnd = s.cutBuf[:0], -1
	for i := 0; i < len(p); {
		switch s.at {
		case sseLineStart:
			i = s.stepLineStart(p, i)
		case sseCR:
			i = s.stepCR(p, i)
		case sseField:
			i = s.stepField(p, i)
		case sseValueSpace:
			i = s.stepValueSpace(p, i)
		case sseData:
			i = s.stepData(p, i)
		default:
			i = s.stepSkip(p, i)
		}
	}
}

func (s *sseScanner) stepLineStart(p []byte, i int) int {
	switch p[i] {
	case '\n':
		s.endEvent(i + 1)
		return i + 1
	case '\r':
		s.at = sseCR
		return i + 1
	case ':': // a comment
		s.at = sseSkip
		return i + 1
	}
	s.at, s.nameLen, s.isData = sseField, 0, true
	return i
}

func (s *sseScanner) stepCR(p []byte, i int) int {
	if p[i] == '\n' {
		s.at = sseLineStart
		s.endEvent(i + 1)
		return i + 1
	}
	s.at = sseSkip
	return i
}

func (s *sseScanner) stepField(p []byte, i int) int {
	for ; i < len(p); i++ {
		switch c := p[i]; c {
		case ':':
			s.at = sseSkip
			if s.isData && s.nameLen == 4 {
				s.at = sseValueSpace
			}
			return i + 1
		case '\n': // a field without a value
			s.at = sseLineStart
			return i + 1
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
	s.at = sseData
	if s.terminated {
		s.at = sseSkip // nothing after the end counts
		return i
	}
	s.line.reset()
	return i
}

func (s *sseScanner) stepData(p []byte, i int) int {
	j := bytes.IndexByte(p[i:], '\n')
	if j < 0 {
		s.line.write(p[i:])
		return len(p)
	}
	s.line.write(p[i : i+j])
	s.endData()
	s.at = sseLineStart
	return i + j + 1
}

func (s *sseScanner) stepSkip(p []byte, i int) int {
	j := bytes.IndexByte(p[i:], '\n')
	if j < 0 {
		return len(p)
	}
	s.at = sseLineStart
	return i + j + 1
}

// endEvent follows the blank line that ends an event, at p[:end].
func (s *sseScanner) endEvent(end int) {
	if s.event.dataLines == 1 && s.event.usageOnly {
		s.cuts = append(s.cuts, sseSpan{s.lastEnd, end})
	}
	s.lastEnd = end
	s.event = sseEvent{}
}

// endData follows the end of a data line.
func (s *sseScanner) endData() {
	l := &s.line
	switch {
	case l.done == int8(len("[DONE]")):
		s.terminated = true
	case l.lex.end():
		s.endObject()
	case l.lex.started():
		s.failed = true // neither JSON nor [DONE]: SDKs fail on it
	}
}

// endObject takes what a JSON data line said.
func (s *sseScanner) endObject() {
	l := &s.line
	s.failed = s.failed || l.failed
	s.terminated = l.stop
	s.failed = s.failed || l.lost
	s.event.usageOnly = l.usageSeen && !l.usageNull && l.choices && !l.failed
	if !l.usageSeen {
		return
	}
	w, ok := l.usage.get()
	switch {
	case !ok || !w.inRange():
		s.failed = true // a lying chunk spoils the stream, even if a later one looks fine
	case w != (wireUsage{}):
		s.usage.merge(&w)
		s.found = true
	}
}

func (s *sseScanner) result(eof bool) (Usage, bool) {
	if eof && s.at == sseData {
		s.endData() // a last line without a newline
		s.at = sseLineStart
	}
	if !s.terminated || s.failed || !s.found {
		return Usage{}, false
	}
	return s.usage.usage()
}

func (l *sseLine) reset() {
	ends := l.capture.buf
	*l = sseLine{}
	l.lex.objectOnly = true
	l.capture.buf = ends[:0] // keep the buffer: no allocation per line
}

// write reads the next bytes of the line's value.
func (l *sseLine) write(p []byte) {
	l.matchDone(p)
	readMembers(&l.lex, &l.capture, p, l)
}

func (l *sseLine) readKey() {
	raw, escaped := l.lex.key()
	k, m := lookupName(raw, escaped, sseKeyNames[:])
	l.key = sseOther
	switch {
	case m == exactMatch:
		l.key = sseKey(k)
		limit := 64
		if l.key == sseUsage || l.key == sseMessage {
			limit = maxUsageValue
		}
		l.capture.start(limit)
	case m == foldMatch && sseKey(k) == sseChoices:
		l.choices = false
	case m == foldMatch: // encoding/json would read it; other decoders would not
		l.failed = true
	}
}

func (l *sseLine) readMember(p []byte) {
	if !l.capture.on {
		return
	}
	v, whole := l.capture.end(p, &l.lex)
	switch l.key {
	case sseUsage:
		l.usageSeen = true
		l.usageNull = whole && isJSONNull(v)
		if !whole {
			l.usage.bad = true
			return
		}
		l.usage.add(v)
	case sseError:
		if !whole || !isJSONNull(v) {
			l.failed = true
		}
	case sseType:
		switch typ, _ := jsonString(v); {
		case !whole:
		case typ == "error":
			l.failed = true
		case typ == "message_stop":
			l.stop = true
		}
	case sseMessage:
		if !whole {
			l.lost = true
			return
		}
		l.readMessage(v)
	case sseChoices:
		l.choices = whole && isEmptyArray(v)
	}
}

// readMessage reads the usage in an Anthropic message object.
func (l *sseLine) readMessage(v []byte) {
	if len(v) == 0 || v[0] != '{' {
		return
	}
	err := jsonMembers(v, func(key []byte, escaped bool, value []byte) error {
		switch matchName(key, escaped, "usage") {
		case exactMatch:
			l.usageSeen = true
			l.usage.add(value)
		case foldMatch:
			l.failed = true
		}
		return nil
	})
	if err != nil {
		l.failed = true
	}
}

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
		switch {
		case l.done == doneFailed:
			return
		case c == ' ' || c == '\t' || c == '\r':
			if l.done != 0 && l.done != int8(len("[DONE]")) {
				l.done = doneFailed
			}
		case l.done < int8(len("[DONE]")) && c == "[DONE]"[l.done]:
			l.done++
		default:
			l.done = doneFailed
		}
	}
}
