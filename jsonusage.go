package httpguard

import (
	"encoding/binary"
	"strconv"
)

// jsonUsageScanner follows a JSON answer as the caller reads it, with the
// package's one lexer (jsonscan.go): the answer must be one valid JSON
// object, and the value of each top-level "usage" key is handed to a
// usageValue, which decodes it as its bytes pass. Each byte of the answer
// is lexed once (an answer whole in its first read is read a member at a
// time by readWhole, and a usage value whole in one read is checked and
// read in one pass by usageReadings.readWhole, instead), and nothing is
// copied but a count (or details object), a "service_tier" value (see
// tierReading) or a "model" value (see modelHash) split across reads, so
// a typical answer costs no allocation. The value of an OpenAI Responses answer's "output" is
// handed to an outputValue, which counts the server tool calls it lists.
// The zero value is ready.
//
// The answer's lexer and the usage value's share one capture (the usage
// value's): a top-level member's value is either handed off to the usage
// value or captured, never both at once; this keeps a scanner (which comes
// from jsonScanners, for one answer) within its size class.
type jsonUsageScanner struct {
	lex   jsonLexer
	value usageValue
	usage usageReadings
	// tierKey is how the service_tier key whose value is captured
	// matched, or modelCaptured and how the model key matched when it is
	// a model value.
	tierKey nameMatch
	tier    tierReading
	model   modelReading
	output  *outputValue // nil until an "output" key
}

// modelCaptured is set in a scanner's tierKey, with how the key matched,
// while it captures a model value.
const modelCaptured nameMatch = 0x80

// answerKeys are the top-level keys of an answer a jsonUsageScanner reads
// (and of a Responses stream's response object).
var answerKeys = []string{keyUsage: "usage", keyOutput: "output", keyServiceTier: "service_tier", keyModel: "model"}

// The indexes of answerKeys.
const (
	keyUsage = iota
	keyOutput
	keyServiceTier
	keyModel
)

func (s *jsonUsageScanner) write(p []byte) {
	if len(p) == 0 { // the read that returns EOF: nothing to read
		return
	}
	s.lex.objectOnly = true
	if !s.lex.started() && s.readWhole(p) {
		return
	}
	s.value.lexed = true // (the value's flag: a scanner has no byte to spare)
	readText(&s.lex, &s.value.capture, p, s)
}

// reset makes s the zero value, for the next answer. An answer that no
// lexer read (value.lexed false: read whole by readWhole, its usage by
// usageReadings.readWhole) left the lexers as they were but for lex's
// state and objectOnly, so only the rest is cleared: a lexer is most of a
// scanner.
func (s *jsonUsageScanner) reset() {
	if s.value.lexed {
		*s = jsonUsageScanner{}
		return
	}
	s.lex.state, s.lex.objectOnly = lexValue, false
	v := &s.value
	v.capture, v.into, v.size, v.key, v.first = valueCapture{}, nil, 0, 0, 0
	s.usage, s.tierKey, s.tier, s.model, s.output = usageReadings{}, 0, tierReading{}, modelReading{}, nil
}

// readWhole reads p, the scanner's first chunk, when it holds the whole
// answer object (and whitespace around it), in one pass without the
// lexer's events: its members in order, each key as readKey reads it, and
// each value by what reads it now (s.value, s.output, readCaptured) or
// skipped with skipValue. It leaves s as the
// lexer would, done, and reports true; or, when p is not such an object
// (or holds what skipValue does not take, or a value its reader refuses),
// leaves s as it was and reports false: the lexer then reads p. (A
// scanner whose lexer has not started holds nothing else: there is no need
// to copy it to put it back.)
func (s *jsonUsageScanner) readWhole(p []byte) bool {
	i := skipSpace(p, 0)
	if i == len(p) || p[i] != '{' {
		return false
	}
	if s.readObject(p, i, true) {
		s.lex.state = lexDone
		return true
	}
	*s = jsonUsageScanner{lex: s.lex}
	return false
}

// readObject is readWhole's pass over the object that opens at p[i]; with
// head, its first members are tried as writtenHead reads them (tests
// read without, to compare).
func (s *jsonUsageScanner) readObject(p []byte, i int, head bool) bool {
	i, c := nextByte(p, i+1) // c is 0 at the end of p
	switch {
	case c == '}':
		return skipSpace(p, i+1) == len(p)
	case c == '"' && head:
		next, ok := s.writtenHead(p, i)
		if next < 0 {
			return ok
		}
		i, c = nextByte(p, next)
	}
	for {
		if c != '"' {
			return false
		}
		k, m, keyEnd := commonAnswerKey(p, i+1)
		if keyEnd < 0 {
			escaped := false
			if keyEnd = shortQuoteEnd(p, i+1); keyEnd < 0 {
				if keyEnd, escaped = quoteEnd(p, i+1); keyEnd < 0 {
					return false
				}
			}
			k, m = answerKey(p[i+1:keyEnd], escaped)
		}
		handOff := k >= 0 && s.startMember(k, m) // most keys are none of answerKeys
		if i, c = nextByte(p, keyEnd+1); c != ':' {
			return false
		}
		start, first := nextByte(p, i+1)
		if start == len(p) {
			return false
		}
		var end int
		switch {
		case handOff:
			n, ok := s.handed().read(p[start:])
			if !ok || n < 0 {
				return false
			}
			end = start + n
		case first == '"': // most values ("id", "object"; "model", captured): one closingQuote
			if end = closingQuote(p, start+1) + 1; end <= 0 {
				return false
			}
		default:
			if end = skipValue(p, start); end < 0 {
				return false
			}
		}
		if vc := &s.value.capture; vc.on {
			vc.on = false
			s.readCaptured(p[start:end], end-start <= int(vc.limit))
		}
		switch i, c = nextByte(p, end); c {
		case ',':
			i, c = nextByte(p, i+1)
		case '}':
			return skipSpace(p, i+1) == len(p)
		default:
			return false
		}
	}
}

// writtenHead reads, for readObject, the members a chat answer begins
// with when written as OpenAI-compatible providers write them, each with
// a ',' straight after it: {"id":"…","object":"chat.completion",
// "created":…,"model":"…","choices":…, with "created" left out or not,
// and a usage after them (see writtenUsage). Their keys are compared with
// headPieces in place, not read and looked up. It reads them as readObject
// does (the model as startMember and readCaptured read it; the others are
// none of answerKeys) and returns where readObject goes on: past the last
// ',' read, or i, the first key's quote, when it read none; or -1 and
// what readObject returns, when the object ended, or broke, in a member it
// read.
func (s *jsonUsageScanner) writtenHead(p []byte, i int) (next int, ok bool) {
	h := &headPieces
	if len(p)-i <= 6 { // "id":" and a byte after it
		return i, true
	}
	if q := p[i : i+6 : i+6]; binary.LittleEndian.Uint32(q) != h.id || binary.LittleEndian.Uint16(q[4:]) != h.idEnd {
		return i, true
	}
	j := memberEnd(p, closingQuote(p, i+6)+1)
	if j < 0 {
		return i, true
	}
	if i = j; !h.object.at(p, i, 1) {
		return i, true
	}
	if i += len(h.object.s); h.created.at(p, i, 1) {
		if j = memberEnd(p, wholeInt(p, i+len(h.created.s))); j < 0 {
			return i, true
		}
		i = j
	}
	if !h.model.at(p, i, 1) {
		return i, true
	}
	start := i + len(h.model.s) // the value's content
	end, escaped := quoteEnd(p, start)
	if j = memberEnd(p, end+1); j < 0 {
		return i, true
	}
	s.tierKey = modelCaptured | exactMatch // as startMember and readCaptured leave it
	s.value.capture.start(maxModelValue)
	s.value.capture.on = false
	var name modelHash // as readModel reads the value: 0 when longer than maxModelValue
	switch {
	case end+1-(start-1) > maxModelValue:
	case escaped:
		name = hashEscapedModel(p[start-1 : end+1])
	default:
		name = hashModel(p[start:end])
	}
	s.model.read(name, exactMatch) // the answer's first model key
	if i = j; !h.choices.at(p, i, 1) {
		return i, true
	}
	if j = memberEnd(p, skipValue(p, i+len(h.choices.s))); j < 0 {
		return i, true
	}
	return s.writtenUsage(p, j)
}

// writtenUsage is writtenHead's reading of a usage at p[i], written
// "usage":{: as readObject reads it, with what follows it.
func (s *jsonUsageScanner) writtenUsage(p []byte, i int) (next int, ok bool) {
	if !headPieces.usage.at(p, i, 1) {
		return i, true
	}
	start := i + len(headPieces.usage.s) - 1 // the value's brace
	s.value.start(&s.usage, exactMatch)      // as startMember starts it: no output is read yet
	n, ok := s.value.read(p[start:])
	if !ok || n < 0 {
		return -1, false
	}
	switch j, c := nextByte(p, start+n); c {
	case ',':
		return j + 1, true
	case '}':
		return -1, skipSpace(p, j+1) == len(p)
	}
	return -1, false
}

// headPieces are the constant pieces writtenHead compares: "id":" in two
// words, the others as writtenPieces.
var headPieces = struct {
	id                                     uint32 // "id"
	idEnd                                  uint16 // :"
	object, created, model, choices, usage writtenPiece
}{
	binary.LittleEndian.Uint32([]byte(`"id"`)), binary.LittleEndian.Uint16([]byte(`:"`)),
	newWrittenPiece(`"object":"chat.completion",`), newWrittenPiece(`"created":`), newWrittenPiece(`"model":"`), newWrittenPiece(`"choices":`),
	newWrittenPiece(`"usage":{`),
}

// writtenPiece is a piece of JSON of 8 to 32 bytes as providers write it
// (a key quoted with its colon, for writtenKey; writtenHead's pieces),
// compared with input a word at a time.
type writtenPiece struct {
	first, mid, mid2, last uint64 // its bytes 0-7, 8-15 and 16-23 (as far as they go), and its last eight
	s                      string
}

func newWrittenPiece(s string) writtenPiece {
	if len(s) < 8 || len(s) > 32 {
		panic("httpguard: a written piece of " + strconv.Itoa(len(s)) + " bytes")
	}
	w := writtenPiece{first: binary.LittleEndian.Uint64([]byte(s)), last: binary.LittleEndian.Uint64([]byte(s[len(s)-8:])), s: s}
	if len(s) >= 16 {
		w.mid = binary.LittleEndian.Uint64([]byte(s[8:]))
	}
	if len(s) >= 24 {
		w.mid2 = binary.LittleEndian.Uint64([]byte(s[16:]))
	}
	return w
}

// at reports whether w is at p[i], with at least after bytes after it
// (writtenHead's pieces want one: the value its readers read there).
func (w *writtenPiece) at(p []byte, i, after int) bool {
	n := len(w.s)
	if len(p)-i < n+after {
		return false
	}
	m := p[i:][:n:n]
	return binary.LittleEndian.Uint64(m) == w.first && binary.LittleEndian.Uint64(m[n-8:]) == w.last &&
		(n <= 16 || binary.LittleEndian.Uint64(m[8:]) == w.mid && (n <= 24 || binary.LittleEndian.Uint64(m[16:]) == w.mid2))
}

// memberEnd returns, for writtenHead, where the next member starts when a
// ',' is at p[end], where the value before it ended; -1 when it is not
// (or end is 0 or less: the value was not whole and valid).
func memberEnd(p []byte, end int) int {
	if end > 0 && end < len(p) && p[end] == ',' {
		return end + 1
	}
	return -1
}

// commonAnswerKey reads the top-level key whose content starts at p[i]
// when it is one of commonAnswerNames written plainly: it returns what
// answerKey returns for it and the index of its closing quote; keyEnd is
// -1 for any other key, which readObject then scans and looks up. Its
// first eight bytes are compared with those of the one name its first two
// may begin.
func commonAnswerKey(p []byte, i int) (k int, m nameMatch, keyEnd int) {
	if i+8 > len(p) {
		return -1, noMatch, -1
	}
	w := binary.LittleEndian.Uint64(p[i : i+8 : i+8])
	if c := &commonAnswerWords[answerWordSlot(w)]; w&c.mask == c.word {
		return int(c.k), nameMatch(b2u(c.k >= 0)), i + int(c.n)
	}
	return -1, noMatch, -1
}

// commonAnswerNames are the top-level keys answers write most (OpenAI's,
// Anthropic's), which commonAnswerKey reads: each with its closing quote
// in eight bytes, and no two beginning alike in answerWordSlot.
var commonAnswerNames = []string{"id", "object", "created", "model", "choices", "usage", "type", "role", "content"}

// answerWord is a name of commonAnswerNames, for commonAnswerKey.
type answerWord struct {
	word, mask uint64 // its first eight bytes (with its closing quote) as loaded, the bytes after the quote left out
	n          uint8  // its length
	k          int8   // its index in answerKeys, -1 for none
}

// commonAnswerWords holds commonAnswerNames by answerWordSlot; the slots
// of none match no word.
var commonAnswerWords = func() (words [64]answerWord) {
	for i := range words {
		words[i].word = 1 // not under a mask of 0
	}
	for _, name := range commonAnswerNames {
		var b [8]byte
		copy(b[:], name+`"`)
		w := binary.LittleEndian.Uint64(b[:])
		k, _ := lookupName([]byte(name), false, answerKeys)
		words[answerWordSlot(w)] = answerWord{word: w, mask: ^uint64(0) >> (64 - 8*(len(name)+1)), n: uint8(len(name)), k: int8(k)}
	}
	return words
}()

// answerWordSlot is where a key whose first eight bytes are w may be in
// commonAnswerWords, by its first two.
func answerWordSlot(w uint64) uint64 { return (w & 0xffff) * 0x9e3779b97f4a7c15 >> 58 }

// readKey hands the value of a "usage" key to s.value; as in a decoder, a
// later usage key replaces (or merges into) an earlier one. A usage key in
// another case is read as encoding/json reads it, and other decoders skip
// it (see usageReadings). The value of an "output" key goes to s.output;
// in another case, no output counts. The value of a "service_tier" key, in
// any case, is captured for s.tier; that of a "model" key, in any case,
// for s.model.
func (s *jsonUsageScanner) readKey() {
	s.lex.handOff = s.startMember(answerKey(s.lex.key()))
}

// startMember starts reading the value of a top-level key that matched
// answerKeys[k] as m (k is -1 for none), as readKey describes: it reports
// whether the value is handed off (to s.handed()); otherwise it is
// captured (s.value.capture.on) or skipped.
func (s *jsonUsageScanner) startMember(k int, m nameMatch) (handOff bool) {
	switch {
	case k == keyUsage:
		s.value.start(&s.usage, m)
		if s.output != nil {
			s.output.handed = false
		}
		return true
	case k == keyServiceTier:
		s.tierKey = m
		s.value.capture.start(maxTierValue)
	case k == keyModel:
		s.tierKey = modelCaptured | m
		s.value.capture.start(maxModelValue)
	case k == keyOutput:
		if s.output == nil {
			s.output = new(outputValue)
		}
		if m != exactMatch {
			s.output.calls.add(ToolCalls{}, 0, false)
			return false
		}
		s.output.start()
		return true
	}
	return false
}

// answerKey is lookupName(raw, escaped, answerKeys), quicker for the keys
// answers write: most are none of answerKeys.
func answerKey(raw []byte, escaped bool) (int, nameMatch) {
	if !escaped {
		switch string(raw) {
		case "usage":
			return keyUsage, exactMatch
		case "model":
			return keyModel, exactMatch
		case "id", "object", "created", "choices", "system_fingerprint", "type", "role", "content", "stop_reason", "stop_sequence":
			return -1, noMatch
		}
	}
	return lookupName(raw, escaped, answerKeys)
}

func (s *jsonUsageScanner) readValue(p []byte) { readHanded(&s.lex, s.handed(), p) }

// handed returns the reader of the value handed off: the output's, or
// the usage value's.
func (s *jsonUsageScanner) handed() handedValue {
	if s.output != nil && s.output.handed {
		return s.output
	}
	return &s.value
}

// readMember reads the value of a service_tier or model key.
func (s *jsonUsageScanner) readMember(p []byte) {
	if s.value.capture.on {
		s.readCaptured(s.value.capture.end(p, &s.lex))
	}
}

// readCaptured reads v, the captured value of a service_tier or model
// key, whole when within its limit.
func (s *jsonUsageScanner) readCaptured(v []byte, whole bool) {
	if s.tierKey&modelCaptured != 0 {
		s.model.read(readModel(v, whole), s.tierKey&^modelCaptured)
	} else {
		s.tier.add(s.tierKey, v, whole)
	}
}

func (s *jsonUsageScanner) readString() {}

// result returns the usage read, ok when the answer was read whole; an
// answer cut short is not ok, but the usage it reported before it broke
// off was billed at least (see observeUsage). The tier the answer says it
// ran at, and where, are returned either way.
func (s *jsonUsageScanner) result() (u Usage, ok bool) {
	ok = s.readResult(&u)
	return u, ok
}

// readResult is result into u, which must be zero, in place.
func (s *jsonUsageScanner) readResult(u *Usage) (ok bool) {
	w, ok := s.usage.get() // no usage key reads as an empty usage, which is no usage
	read := ok
	if !ok {
		var d wireUsage
		if d, read = s.usage.dearest(); read { // not ok, but charged when it costs more than the reservation
			w = &d
		}
	}
	if read {
		read = w.readUsage(u)
	}
	if read && !ok {
		s.usage.coverReadings(u)
	}
	// A usage of zeros is a relay's default, no count of an answer the
	// provider billed: as on a stream (see sseScanner.endObject), the
	// reservation is the charge.
	ok = ok && read && (u.InputTokens|u.OutputTokens != 0 || !w.countsNothing()) && !w.readsAmiss()
	if read && s.output != nil {
		s.output.calls.addTo(u)
	}
	u.ranAtPriority, u.ranIn = s.tier.priority(), w.geo()
	s.model.setIn(u)
	return ok && s.lex.end()
}

// outputValue reads the output of an OpenAI Responses answer as it
// passes, handed off by a scanner's lexer (which does not read it), with
// a lexer of its own, and counts the server tool calls it lists. It keeps
// the value's bytes, up to maxResponseValue, to count them at its end; a
// longer output counts nothing. Of repeated outputs (decoders keep the
// last, or merge them), each kind keeps its largest count.
type outputValue struct {
	lex   jsonLexer
	buf   []byte
	long  bool      // the value outgrew maxResponseValue
	calls callCount // what the outputs read list
	// handed is set while the value handed off is an output, not usage.
	handed bool
}

func (o *outputValue) start() {
	o.lex, o.buf, o.long, o.handed = jsonLexer{member1: true}, o.buf[:0], false, true
}

// read follows p, the next bytes of the value, and returns where the
// value ends in p, or -1 when it goes on; ok is false when p is not JSON.
func (o *outputValue) read(p []byte) (end int, ok bool) {
	end = readMembers(&o.lex, nil, p, noMembers{})
	if o.lex.state == lexError {
		o.calls.add(ToolCalls{}, 0, false)
		return 0, false
	}
	part := p
	if end >= 0 {
		part = p[:end]
	}
	switch {
	case end >= 0 && len(o.buf) == 0 && !o.long: // the value is whole in p
	case o.long || len(o.buf)+len(part) > maxResponseValue:
		o.long, o.buf = true, o.buf[:0]
	default:
		o.buf = append(o.buf, part...)
		part = o.buf
	}
	if end < 0 {
		return -1, true
	}
	calls, items, ok := countOutputCalls(part)
	o.calls.add(calls, items, ok && !o.long)
	return end, true
}

// noMembers is a memberReader that reads no member.
type noMembers struct{}

func (noMembers) readKey()          {}
func (noMembers) readMember([]byte) {}
func (noMembers) readString()       {}
func (noMembers) readValue([]byte)  {}

// memberReader is a scanner that reads some of the top-level members of
// a JSON value as it passes: jsonUsageScanner, sseLine, usageValue,
// responseValue.
type memberReader interface {
	readKey()            // the lexer reported evKey
	readMember(p []byte) // the lexer reported evMember in chunk p
	readString()         // the lexer reported evString (only with wantStrings)
	readValue(p []byte)  // the lexer reported evValue in chunk p (only after handOff)
}

// readMembers feeds chunk p to l and hands r each top-level key and member
// that ends in it; when p ends inside a member value c wants (c may be
// nil: none), c keeps its part. It returns where the top-level value ended
// in p, and reads no further; -1 when p ends first, or is not JSON.
func readMembers(l *jsonLexer, c *valueCapture, p []byte, r memberReader) (end int) {
	if l.state == lexError {
		return -1
	}
	l.feed(p)
	for {
		switch l.next() {
		case evKey:
			r.readKey()
			l.muteMember = c == nil || !c.on
		case evMember:
			r.readMember(p)
		case evString:
			r.readString()
		case evValue:
			r.readValue(p)
		case evEnd:
			return l.pos
		case evMore:
			if c != nil {
				c.keep(p, l)
			}
			return -1
		case evError:
			return -1
		}
	}
}

// readText is readMembers for a JSON text, which is the value and
// whitespace around it: it reads on after the value. An empty chunk, or
// the empty rest of one, changes nothing and is not read.
func readText(l *jsonLexer, c *valueCapture, p []byte, r memberReader) {
	if len(p) == 0 {
		return
	}
	if end := readMembers(l, c, p, r); end >= 0 && end < len(p) {
		readMembers(l, nil, p[end:], r)
	}
}

// handedValue reads a value a lexer handed off (see jsonLexer.handOff):
// usageValue, outputValue.
type handedValue interface {
	// read follows p, the next bytes of the value, and returns where the
	// value ends in p, or -1 when it goes on; ok is false when p is not
	// JSON.
	read(p []byte) (end int, ok bool)
}

// readHanded has v read on the value l handed off, in p from l.pos, and
// gives l back the rest of p if the value ends in it; it reports whether
// the value ended.
func readHanded(l *jsonLexer, v handedValue, p []byte) bool {
	start := l.pos
	end, ok := v.read(p[start:])
	switch {
	case !ok:
		l.fail(start)
	case end < 0:
		l.pos = len(p)
	default:
		l.resume(start + end)
		return true
	}
	return false
}

// valueCapture keeps the value of a top-level member that a scanner wants,
// while it spans reads, up to a limit. The zero value wants nothing.
type valueCapture struct {
	on    bool   // the member being read is wanted
	long  bool   // its value outgrew limit
	limit int32  // bytes kept at most (int32: a scanner stays in its size class)
	buf   []byte // the start of the value, when it spans reads
}

// start wants the value of the member whose key was just read.
func (c *valueCapture) start(limit int) {
	c.on, c.long, c.limit, c.buf = true, false, int32(limit), c.buf[:0]
}

// keep saves the part of the wanted value in p, a chunk l has read to its
// end. A value l handed off is its reader's to keep, not l's.
func (c *valueCapture) keep(p []byte, l *jsonLexer) {
	if start, reading := l.memberStart(); c.on && reading && l.state != lexHandedOff {
		c.add(p[start:])
	}
}

func (c *valueCapture) add(part []byte) {
	if c.long || len(c.buf)+len(part) > int(c.limit) {
		c.long, c.buf = true, c.buf[:0]
		return
	}
	if c.buf == nil {
		c.buf = make([]byte, 0, 512) // room for a usage object at once
	}
	c.buf = append(c.buf, part...)
}

// end returns the wanted value, which l reported ended in p, and whether
// it is whole (within the limit).
func (c *valueCapture) end(p []byte, l *jsonLexer) ([]byte, bool) {
	c.on = false
	tail := p[l.valStart:l.pos]
	if len(c.buf) == 0 && !c.long {
		return tail, len(tail) <= int(c.limit)
	}
	c.add(tail)
	return c.buf, !c.long
}
